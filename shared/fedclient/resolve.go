package fedclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// Well-known caching, as the spec recommends and Synapse does: a response's
// own Cache-Control or Expires within [5 min, 48 h], 24 h when it gives
// none; an invalid answer (not 200, bad JSON, no valid m.server) for an
// hour; a server that cannot be reached for 2 minutes, doubling on each
// further failure up to an hour.
const (
	wellKnownDefaultTTL   = 24 * time.Hour
	wellKnownMinTTL       = 5 * time.Minute
	wellKnownMaxTTL       = 48 * time.Hour
	wellKnownInvalidTTL   = time.Hour
	wellKnownDownTTL      = 2 * time.Minute
	wellKnownMaxSize      = 50 << 10
	defaultFederationPort = "8448"
	// maxCachedHosts is when expired entries are swept from the cache.
	maxCachedHosts = 10000
)

// ErrNoService is returned for a server whose SRV record says it offers no
// federation (a target of ".").
var ErrNoService = errors.New("the SRV record says the server has no federation service")

// Target is one place a request to a server name goes: the address to dial,
// the Host header to send, and the name the server's certificate must be for.
type Target struct {
	Addr    string // host:port; a host name is resolved when dialling
	Host    string
	TLSName string
}

// Resolver finds where a server name's federation API is, by the spec's
// "Resolving server names" (server-server API, Server discovery): IP
// literal, explicit port, /.well-known/matrix/server, SRV _matrix-fed._tcp
// then _matrix._tcp, then port 8448. Names in a static map of test hosts
// skip all that.
//
// fclient.ResolveServer follows the same steps but cannot be used as is:
// it asks net.DefaultResolver (no fake DNS in tests), fetches the
// well-known with a plain http.Client (no address filter, no custom CA),
// caches nothing itself (its transport keeps results until a failure), and
// takes an SRV target of "." for a host.
type Resolver struct {
	dns       DNS
	hosts     map[string]string
	wellKnown *http.Client
	now       func() time.Time
	// wellKnownURL makes the well-known address of a host name; tests point
	// it at a port other than 443.
	wellKnownURL func(host string) string

	mu    sync.Mutex
	cache map[string]wellKnownEntry
}

// wellKnownEntry is a cached well-known answer: server is "" when the
// lookup failed, failures counts consecutive unreachable answers.
type wellKnownEntry struct {
	server   string
	expires  time.Time
	failures int
}

// Resolve returns the targets to try in order for serverName.
func (r *Resolver) Resolve(ctx context.Context, serverName string) ([]Target, error) {
	if addr, ok := r.hosts[serverName]; ok {
		host, _, _ := spec.ParseAndValidateServerName(spec.ServerName(serverName))
		return []Target{{Addr: addr, Host: serverName, TLSName: unbracket(host)}}, nil
	}
	host, port, ok := splitServerName(serverName)
	if !ok {
		return nil, fmt.Errorf("resolve %q: not a valid server name", serverName)
	}
	if isIP(host) || port != "" {
		return []Target{direct(host, port, serverName)}, nil
	}
	if delegated := r.lookupWellKnown(ctx, host); delegated != "" {
		dhost, dport, _ := splitServerName(delegated)
		if isIP(dhost) || dport != "" {
			return []Target{direct(dhost, dport, delegated)}, nil
		}
		return r.srv(ctx, dhost)
	}
	return r.srv(ctx, host)
}

// direct is the target of a name that is an IP literal or carries a port
// (steps 1, 2, 3.1 and 3.2): the address itself, 8448 when no port is given.
func direct(host, port, hostHeader string) Target {
	if port == "" {
		port = defaultFederationPort
	}
	return Target{Addr: net.JoinHostPort(unbracket(host), port), Host: hostHeader, TLSName: unbracket(host)}
}

// srv looks up _matrix-fed._tcp then the deprecated _matrix._tcp records of
// host (steps 3.3 to 3.5, 4 to 6); without any, host:8448. The certificate
// and Host header are host's whatever the records point to.
func (r *Resolver) srv(ctx context.Context, host string) ([]Target, error) {
	for _, service := range []string{"matrix-fed", "matrix"} {
		_, records, err := r.dns.LookupSRV(ctx, service, "tcp", host)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("resolve %s: %w", host, ctx.Err())
		}
		if err != nil || len(records) == 0 {
			continue
		}
		if len(records) == 1 && records[0].Target == "." {
			return nil, fmt.Errorf("resolve %s: %w", host, ErrNoService)
		}
		var targets []Target
		for _, rec := range records {
			name := strings.TrimSuffix(rec.Target, ".")
			if name == "" {
				continue
			}
			targets = append(targets, Target{Addr: net.JoinHostPort(name, strconv.Itoa(int(rec.Port))), Host: host, TLSName: host})
		}
		if len(targets) > 0 {
			return targets, nil
		}
	}
	return []Target{{Addr: net.JoinHostPort(host, defaultFederationPort), Host: host, TLSName: host}}, nil
}

// lookupWellKnown returns the m.server of host's well-known document, or ""
// when it has none usable; answers are cached per host.
func (r *Resolver) lookupWellKnown(ctx context.Context, host string) string {
	now := r.now()
	r.mu.Lock()
	prev, ok := r.cache[host]
	r.mu.Unlock()
	if ok && now.Before(prev.expires) {
		return prev.server
	}
	server, ttl, reachable := r.fetchWellKnown(ctx, host)
	if ctx.Err() != nil {
		return "" // the caller gave up: that says nothing about host
	}
	entry := wellKnownEntry{server: server}
	if !reachable {
		entry.failures = prev.failures + 1
		ttl = wellKnownDownTTL << min(entry.failures-1, 5)
		ttl = min(ttl, wellKnownInvalidTTL)
	}
	entry.expires = now.Add(ttl)
	r.mu.Lock()
	if len(r.cache) >= maxCachedHosts {
		for h, e := range r.cache {
			if !now.Before(e.expires) {
				delete(r.cache, h)
			}
		}
	}
	r.cache[host] = entry
	r.mu.Unlock()
	return server
}

// fetchWellKnown asks https://<host>/.well-known/matrix/server. reachable
// is false when no answer came or the server failed (5xx): a state that may
// pass soon, unlike a wrong answer.
func (r *Resolver) fetchWellKnown(ctx context.Context, host string) (server string, ttl time.Duration, reachable bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.wellKnownURL(host), nil)
	if err != nil {
		return "", wellKnownInvalidTTL, true
	}
	resp, err := r.wellKnown.Do(req) // follows redirects, at most 10: no loops
	if err != nil {
		return "", 0, false
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 500 {
		return "", 0, false
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, wellKnownMaxSize+1))
	if err != nil {
		return "", 0, false
	}
	var doc struct {
		Server string `json:"m.server"`
	}
	if resp.StatusCode != http.StatusOK || len(body) > wellKnownMaxSize || json.Unmarshal(body, &doc) != nil {
		return "", wellKnownInvalidTTL, true
	}
	if _, _, ok := splitServerName(doc.Server); !ok {
		return "", wellKnownInvalidTTL, true
	}
	return doc.Server, cacheTTL(resp.Header, r.now()), true
}

// cacheTTL reads how long a response may be kept: Cache-Control max-age
// (no-store being none), else Expires, within the well-known bounds.
func cacheTTL(h http.Header, now time.Time) time.Duration {
	ttl, given := time.Duration(0), false
	for _, directive := range strings.Split(h.Get("Cache-Control"), ",") {
		name, value, _ := strings.Cut(strings.TrimSpace(directive), "=")
		switch strings.ToLower(name) {
		case "no-store":
			ttl, given = 0, true
		case "max-age":
			if n, err := strconv.ParseInt(strings.Trim(value, `"`), 10, 64); err == nil && !given {
				ttl, given = time.Duration(n)*time.Second, true
			}
		}
	}
	if !given && h.Get("Expires") != "" {
		ttl, given = 0, true // an invalid date means already expired (RFC 9111)
		if t, err := http.ParseTime(h.Get("Expires")); err == nil {
			ttl = t.Sub(now)
		}
	}
	if !given {
		return wellKnownDefaultTTL
	}
	return min(max(ttl, wellKnownMinTTL), wellKnownMaxTTL)
}

// splitServerName splits a server name into host (IPv6 with its brackets)
// and port ("" when none), checking the spec's grammar.
func splitServerName(name string) (host, port string, ok bool) {
	h, p, valid := spec.ParseAndValidateServerName(spec.ServerName(name))
	if !valid {
		return "", "", false
	}
	if p >= 0 {
		port = strconv.Itoa(p)
	}
	return h, port, true
}

func unbracket(host string) string { return strings.TrimSuffix(strings.TrimPrefix(host, "["), "]") }

func isIP(host string) bool { return net.ParseIP(unbracket(host)) != nil }
