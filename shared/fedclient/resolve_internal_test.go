package fedclient

import (
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// wellKnownServer answers /.well-known/matrix/server per host name, over
// TLS on loopback, and counts the requests each host got.
type wellKnownServer struct {
	port string
	mu   sync.Mutex
	hits map[string]int
}

func (s *wellKnownServer) count(host string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[host]
}

// newResolverFixture starts the well-known server and a client whose
// discovery uses it and the fake DNS.
func newResolverFixture(t *testing.T, now *clock) (*Client, *wellKnownServer, *fakeDNS) {
	t.Helper()
	ca := newTestCA(t)
	wk := &wellKnownServer{hits: map[string]int{}}
	answers := map[string]func(w http.ResponseWriter){
		"wk-ip.test":     body(`{"m.server": "10.0.0.5:9000"}`),
		"wk-ip6.test":    body(`{"m.server": "[2001:db8::7]"}`),
		"wk-port.test":   body(`{"m.server": "deleg.test:4430"}`),
		"wk-srv.test":    body(`{"m.server": "deleg-srv.test"}`),
		"wk-oldsrv.test": body(`{"m.server": "deleg-old.test"}`),
		"wk-nosrv.test":  body(`{"m.server": "deleg-none.test"}`),
		"badjson.test":   body(`{"m.server": `),
		"badname.test":   body(`{"m.server": "bad name:x"}`),
		"noserver.test":  body(`{"other": "x"}`),
		"redirect.test": func(w http.ResponseWriter) {
			w.Header().Set("Location", "https://wk-port.test:"+wk.port+"/.well-known/matrix/server")
			w.WriteHeader(http.StatusFound)
		},
		"loop.test": func(w http.ResponseWriter) {
			w.Header().Set("Location", "https://loop.test:"+wk.port+"/.well-known/matrix/server")
			w.WriteHeader(http.StatusFound)
		},
		"plainhttp.test": func(w http.ResponseWriter) {
			w.Header().Set("Location", "http://wk-port.test:"+wk.port+"/.well-known/matrix/server")
			w.WriteHeader(http.StatusFound)
		},
		"huge.test":    body(`{"m.server": "a.test:1", "pad": "` + strings.Repeat("x", wellKnownMaxSize) + `"}`),
		"maxage.test":  body(`{"m.server": "a.test:1"}`, "Cache-Control", "public, max-age=3600"),
		"default.test": body(`{"m.server": "a.test:1"}`),
		"long.test":    body(`{"m.server": "a.test:1"}`, "Cache-Control", "max-age=999999"),
		"short.test":   body(`{"m.server": "a.test:1"}`, "Cache-Control", "max-age=10"),
		"nostore.test": body(`{"m.server": "a.test:1"}`, "Cache-Control", "no-store"),
		"expires.test": body(`{"m.server": "a.test:1"}`, "Expires", time.Date(2030, 1, 1, 3, 0, 0, 0, time.UTC).Format(http.TimeFormat)),
		"failing.test": func(w http.ResponseWriter) { w.WriteHeader(http.StatusServiceUnavailable) },
	}
	srv := startTLS(t, ca, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.Host)
		wk.mu.Lock()
		wk.hits[host]++
		wk.mu.Unlock()
		if r.URL.Path != "/.well-known/matrix/server" {
			http.NotFound(w, r)
			return
		}
		if answer, ok := answers[host]; ok {
			answer(w)
			return
		}
		http.NotFound(w, r)
	}), "*.test")
	_, wk.port, _ = net.SplitHostPort(srv.Listener.Addr().String())

	dns := &fakeDNS{addrs: map[string][]string{}, srv: map[string][]*net.SRV{
		"_matrix-fed._tcp.deleg-srv.test": {{Target: "fed.host.test.", Port: 8443}},
		"_matrix._tcp.deleg-old.test":     {{Target: "old.host.test.", Port: 8444}},
		"_matrix-fed._tcp.srv.test":       {{Target: "a.host.test.", Port: 1001}, {Target: "b.host.test.", Port: 1002}},
		"_matrix-fed._tcp.both.test":      {{Target: "new.host.test.", Port: 2001}},
		"_matrix._tcp.both.test":          {{Target: "old.host.test.", Port: 2002}},
		"_matrix-fed._tcp.nosvc.test":     {{Target: ".", Port: 0}},
	}}
	for host := range answers {
		dns.addrs[host] = []string{"127.0.0.1"}
	}
	for _, host := range []string{"plain.test", "srv.test", "both.test", "nosvc.test", "down.test"} {
		dns.addrs[host] = []string{"127.0.0.1"}
	}
	down := closedPort(t)
	c := mustNew(t, Options{
		DNS:              dns,
		IPRangeWhitelist: []string{"127.0.0.0/8"},
		CustomCAFiles:    []string{ca.pemFile},
		Hosts:            map[string]string{"mapped.test": "127.0.0.1:5555", "[::1]:7": "127.0.0.1:5556"},
		Now:              now.Now,
	})
	c.Resolver().wellKnownURL = func(host string) string {
		port := wk.port
		if host == "down.test" {
			port = down
		}
		return "https://" + net.JoinHostPort(host, port) + "/.well-known/matrix/server"
	}
	return c, wk, dns
}

func body(text string, header ...string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(text))
	}
}

// TestResolver_Resolve follows each step of the spec's "Resolving server
// names" (v1.19) and checks address, Host header and certificate name.
func TestResolver_Resolve(t *testing.T) {
	c, wk, _ := newResolverFixture(t, &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)})
	for _, tc := range []struct {
		name string
		want []Target
	}{
		// 1. IP literals: the address, 8448 without a port, Host the server name.
		{"1.2.3.4", []Target{{"1.2.3.4:8448", "1.2.3.4", "1.2.3.4"}}},
		{"1.2.3.4:8000", []Target{{"1.2.3.4:8000", "1.2.3.4:8000", "1.2.3.4"}}},
		{"[2001:db8::1]", []Target{{"[2001:db8::1]:8448", "[2001:db8::1]", "2001:db8::1"}}},
		{"[2001:db8::1]:99", []Target{{"[2001:db8::1]:99", "[2001:db8::1]:99", "2001:db8::1"}}},
		// 2. An explicit port: no well-known, no SRV.
		{"named.test:1234", []Target{{"named.test:1234", "named.test:1234", "named.test"}}},
		// 3.1 Delegated to an IP literal: Host is the delegated name.
		{"wk-ip.test", []Target{{"10.0.0.5:9000", "10.0.0.5:9000", "10.0.0.5"}}},
		{"wk-ip6.test", []Target{{"[2001:db8::7]:8448", "[2001:db8::7]", "2001:db8::7"}}},
		// 3.2 Delegated with a port.
		{"wk-port.test", []Target{{"deleg.test:4430", "deleg.test:4430", "deleg.test"}}},
		// A redirect is followed.
		{"redirect.test", []Target{{"deleg.test:4430", "deleg.test:4430", "deleg.test"}}},
		// 3.3 Delegated without a port: _matrix-fed._tcp of the delegated name.
		{"wk-srv.test", []Target{{"fed.host.test:8443", "deleg-srv.test", "deleg-srv.test"}}},
		// 3.4 The deprecated _matrix._tcp of the delegated name.
		{"wk-oldsrv.test", []Target{{"old.host.test:8444", "deleg-old.test", "deleg-old.test"}}},
		// 3.5 No SRV: the delegated name on 8448.
		{"wk-nosrv.test", []Target{{"deleg-none.test:8448", "deleg-none.test", "deleg-none.test"}}},
		// 4. No well-known: _matrix-fed._tcp of the server name, each record in order.
		{"srv.test", []Target{{"a.host.test:1001", "srv.test", "srv.test"}, {"b.host.test:1002", "srv.test", "srv.test"}}},
		// 4 before 5: _matrix-fed wins over _matrix.
		{"both.test", []Target{{"new.host.test:2001", "both.test", "both.test"}}},
		// 6. Nothing: the name on 8448.
		{"plain.test", []Target{{"plain.test:8448", "plain.test", "plain.test"}}},
		// Invalid well-known answers count as none.
		{"badjson.test", []Target{{"badjson.test:8448", "badjson.test", "badjson.test"}}},
		{"badname.test", []Target{{"badname.test:8448", "badname.test", "badname.test"}}},
		{"noserver.test", []Target{{"noserver.test:8448", "noserver.test", "noserver.test"}}},
		{"loop.test", []Target{{"loop.test:8448", "loop.test", "loop.test"}}},
		{"plainhttp.test", []Target{{"plainhttp.test:8448", "plainhttp.test", "plainhttp.test"}}}, // no redirect off TLS
		{"huge.test", []Target{{"huge.test:8448", "huge.test", "huge.test"}}},                     // over 50 KiB
		// The static map of test hosts skips discovery.
		{"mapped.test", []Target{{"127.0.0.1:5555", "mapped.test", "mapped.test"}}},
		{"[::1]:7", []Target{{"127.0.0.1:5556", "[::1]:7", "::1"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.Resolver().Resolve(context.Background(), tc.name)
			if err != nil {
				t.Fatalf("Resolve(%q): %v", tc.name, err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Resolve(%q) = %+v, want %+v", tc.name, got, tc.want)
			}
		})
	}
	for _, name := range []string{"named.test", "mapped.test", "1.2.3.4"} {
		if n := wk.count(name); n != 0 {
			t.Errorf("%s: %d well-known requests, want none (explicit port, IP literal or static map)", name, n)
		}
	}
	if _, err := c.Resolver().Resolve(context.Background(), "nosvc.test"); !errors.Is(err, ErrNoService) {
		t.Errorf("SRV target \".\": err = %v, want ErrNoService", err)
	}
	for _, bad := range []string{"", "a b", "host:port", "host:99999", "[::1"} {
		if got, err := c.Resolver().Resolve(context.Background(), bad); err == nil {
			t.Errorf("Resolve(%q) = %+v, want an error", bad, got)
		}
	}
}

// TestResolver_WellKnownCache checks the cache periods: the response's
// max-age or Expires within [5 min, 48 h], 24 h by default, an hour for an
// invalid answer, and a growing back-off for an unreachable server.
func TestResolver_WellKnownCache(t *testing.T) {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		host         string
		cachedUntil  time.Duration // still one request at this age
		refetchAfter time.Duration // a second request at this age
	}{
		{"maxage.test", 59 * time.Minute, 61 * time.Minute},
		{"default.test", 23 * time.Hour, 25 * time.Hour},
		{"long.test", 47 * time.Hour, 49 * time.Hour},
		{"short.test", 4 * time.Minute, 6 * time.Minute},
		{"nostore.test", 4 * time.Minute, 6 * time.Minute},
		{"expires.test", 2*time.Hour + 59*time.Minute, 3*time.Hour + time.Minute},
		{"plain.test", 59 * time.Minute, 61 * time.Minute},   // 404
		{"badjson.test", 59 * time.Minute, 61 * time.Minute}, // invalid JSON
		{"failing.test", 1 * time.Minute, 3 * time.Minute},   // 503: the server may be back soon
	} {
		t.Run(tc.host, func(t *testing.T) {
			now := &clock{t: start}
			c, wk, _ := newResolverFixture(t, now)
			resolve := func() {
				t.Helper()
				if _, err := c.Resolver().Resolve(context.Background(), tc.host); err != nil {
					t.Fatal(err)
				}
			}
			resolve()
			resolve()
			now.Add(tc.cachedUntil)
			resolve()
			if n := wk.count(tc.host); n != 1 {
				t.Fatalf("after %v: %d well-known requests, want 1 (cached)", tc.cachedUntil, n)
			}
			now.Add(tc.refetchAfter - tc.cachedUntil)
			resolve()
			if n := wk.count(tc.host); n != 2 {
				t.Fatalf("after %v: %d well-known requests, want 2 (expired)", tc.refetchAfter, n)
			}
		})
	}
}

// TestResolver_WellKnownBackoff: an unreachable well-known is tried again
// after 2 minutes, then 4, then 8: exponential back-off.
func TestResolver_WellKnownBackoff(t *testing.T) {
	now := &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	c, _, _ := newResolverFixture(t, now)
	r := c.Resolver()
	var ttls []time.Duration
	for range 4 {
		got, err := r.Resolve(context.Background(), "down.test")
		if err != nil || len(got) != 1 || got[0].Addr != "down.test:8448" {
			t.Fatalf("Resolve(down.test) = %+v, %v; want down.test:8448", got, err)
		}
		r.mu.Lock()
		e := r.cache["down.test"]
		r.mu.Unlock()
		ttls = append(ttls, e.expires.Sub(now.Now()))
		now.Add(e.expires.Sub(now.Now()))
	}
	want := []time.Duration{2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 16 * time.Minute}
	if !slices.Equal(ttls, want) {
		t.Fatalf("cache periods of successive failures = %v, want %v", ttls, want)
	}
}

// TestResolver_WellKnownFiltered: the well-known request goes through the
// address filter like any other, so a name pointing at loopback gets no
// answer from there unless loopback is whitelisted.
func TestResolver_WellKnownFiltered(t *testing.T) {
	now := &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	allowed, wk, dns := newResolverFixture(t, now)
	blocked := mustNew(t, Options{DNS: dns, Now: now.Now, CustomCAFiles: nil})
	blocked.Resolver().wellKnownURL = allowed.Resolver().wellKnownURL
	got, err := blocked.Resolver().Resolve(context.Background(), "wk-port.test")
	if err != nil || !strings.HasPrefix(got[0].Addr, "wk-port.test:8448") {
		t.Fatalf("Resolve(wk-port.test) with loopback refused = %+v, %v; want wk-port.test:8448 (no well-known)", got, err)
	}
	if n := wk.count("wk-port.test"); n != 0 {
		t.Fatalf("the well-known server got %d requests from a client that refuses loopback", n)
	}
}
