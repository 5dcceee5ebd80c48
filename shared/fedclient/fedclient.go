// Package fedclient makes this server's outbound federation requests: it
// finds where a server name's federation API is (the spec's server
// discovery), signs each request with X-Matrix, and refuses what a remote
// server must not make it do: connect to private or loopback addresses,
// talk to domains outside a whitelist, or send an endless response.
//
// It is built on gomatrixserverlib's fclient: Client.Federation returns an
// fclient.FederationClient (make_join, send_join, /send, get_missing_events
// ...) whose requests go through this package's transport, and Client.Do
// serves any other endpoint.
package fedclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/cirrus-matrix/cirrus/shared/config"
	"github.com/cirrus-matrix/cirrus/shared/keys"
)

// DefaultTimeout bounds a request from dial to the end of its response:
// Synapse's federation request timeout.
const DefaultTimeout = 60 * time.Second

// DefaultMaxResponseSize bounds a response body: Synapse's limit for
// federation responses (100 MiB).
const DefaultMaxResponseSize = 100 << 20

// Options are the outbound federation settings; the zero value is safe:
// certificates verified, Synapse's default ip_range_blacklist, every domain.
type Options struct {
	// SkipVerify accepts any certificate (federation_verify_certificates: false).
	SkipVerify bool
	// CustomCAFiles are PEM files of CAs trusted in addition to the
	// system's (federation_custom_ca_list).
	CustomCAFiles []string
	// IPRangeBlacklist are ranges not to connect to; nil means
	// DefaultIPRangeBlacklist. 0.0.0.0 and :: are always refused.
	IPRangeBlacklist []string
	// IPRangeWhitelist are exceptions to the blacklist.
	IPRangeWhitelist []string
	// DomainWhitelist are the only server names requests may go to; nil
	// means all (federation_domain_whitelist).
	DomainWhitelist []string
	// Hosts maps server names to the host:port to use instead of discovery
	// (federation_hosts, for test deployments).
	Hosts map[string]string
	// Timeout bounds each request; DefaultTimeout when 0.
	Timeout time.Duration
	// MaxResponseSize bounds each response body; DefaultMaxResponseSize when 0.
	MaxResponseSize int64
	// DNS answers SRV and address lookups; net.DefaultResolver when nil.
	DNS DNS
	// Now is the clock of the well-known cache; time.Now when nil.
	Now func() time.Time
	// UserAgent is sent with every request when set.
	UserAgent string
}

// FromConfig takes the outbound federation settings of c.
func FromConfig(c *config.Config) Options {
	return Options{
		SkipVerify:       !c.FederationVerifyCertificates,
		CustomCAFiles:    c.FederationCustomCAList,
		IPRangeBlacklist: c.IPRangeBlacklist,
		IPRangeWhitelist: c.IPRangeWhitelist,
		DomainWhitelist:  c.FederationDomainWhitelist,
		Hosts:            c.FederationHosts,
	}
}

// Client sends signed federation requests as one server.
type Client struct {
	origin    spec.ServerName
	key       keys.Key
	http      *http.Client
	fed       fclient.FederationClient
	transport *transport
	userAgent string
}

// New makes the client of server serverName signing with key.
func New(serverName string, key keys.Key, opts Options) (*Client, error) {
	if _, _, ok := splitServerName(serverName); !ok {
		return nil, fmt.Errorf("fedclient: %q is not a valid server name", serverName)
	}
	filter, err := newIPFilter(opts.IPRangeBlacklist, opts.IPRangeWhitelist)
	if err != nil {
		return nil, fmt.Errorf("fedclient: %w", err)
	}
	tlsConfig, err := tlsConfig(opts)
	if err != nil {
		return nil, fmt.Errorf("fedclient: %w", err)
	}
	if opts.DNS == nil {
		opts.DNS = net.DefaultResolver
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.MaxResponseSize <= 0 {
		opts.MaxResponseSize = DefaultMaxResponseSize
	}
	d := newDialer(opts.DNS, filter)
	t := &transport{dialer: d, tls: tlsConfig, maxBody: opts.MaxResponseSize, byTLSName: map[string]*http.Transport{}}
	if opts.DomainWhitelist != nil {
		t.domains = map[string]bool{}
		for _, name := range opts.DomainWhitelist {
			t.domains[name] = true
		}
	}
	t.resolver = &Resolver{
		dns:   opts.DNS,
		hosts: opts.Hosts,
		now:   opts.Now,
		cache: map[string]wellKnownEntry{},
		// The well-known request is outbound federation traffic like any
		// other: same address filter, same trust, same time limit.
		wellKnown: &http.Client{
			Transport:     &http.Transport{DialContext: d.DialContext, TLSClientConfig: tlsConfig.Clone(), ForceAttemptHTTP2: true},
			Timeout:       opts.Timeout,
			CheckRedirect: httpsRedirects,
		},
		wellKnownURL: func(host string) string { return "https://" + host + "/.well-known/matrix/server" },
	}
	c := &Client{
		origin:    spec.ServerName(serverName),
		key:       key,
		http:      &http.Client{Transport: t, Timeout: opts.Timeout},
		transport: t,
		userAgent: opts.UserAgent,
	}
	identity := &fclient.SigningIdentity{ServerName: c.origin, KeyID: gomatrixserverlib.KeyID(key.ID), PrivateKey: key.Private}
	c.fed = fclient.NewFederationClient([]*fclient.SigningIdentity{identity},
		fclient.WithTransport(t), fclient.WithTimeout(opts.Timeout), fclient.WithUserAgent(opts.UserAgent))
	return c, nil
}

// httpsRedirects follows at most 10 redirects, as http.Client does (so a
// loop ends), and only to https: the well-known is fetched over TLS.
func httpsRedirects(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("well-known: stopped after 10 redirects")
	}
	if req.URL.Scheme != "https" {
		return fmt.Errorf("well-known: redirect to %s: not https", req.URL.Scheme)
	}
	return nil
}

// tlsConfig is the trust of outbound connections: the system's CAs plus
// the custom ones, or none checked at all when verification is off.
func tlsConfig(opts Options) (*tls.Config, error) {
	cfg := &tls.Config{InsecureSkipVerify: opts.SkipVerify} // #nosec G402 -- the operator's choice
	if len(opts.CustomCAFiles) == 0 {
		return cfg, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	for _, path := range opts.CustomCAFiles {
		pem, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("federation_custom_ca_list: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("federation_custom_ca_list: %s holds no PEM certificate", path)
		}
	}
	cfg.RootCAs = pool
	return cfg, nil
}

// Federation returns gomatrixserverlib's typed federation client, sending
// through this client's discovery, filters and limits. Its calls take this
// server's name as origin; AsError reads its errors for non-2xx answers.
func (c *Client) Federation() fclient.FederationClient { return c.fed }

// Resolver returns the discovery this client uses.
func (c *Client) Resolver() *Resolver { return c.transport.resolver }

// Allowed reports whether federation_domain_whitelist lets this server
// talk to serverName.
func (c *Client) Allowed(serverName string) bool { return c.transport.allowed(serverName) }

// CloseIdleConnections closes the connections kept open for reuse.
func (c *Client) CloseIdleConnections() { c.transport.closeIdle() }

// Get sends a signed GET to destination. path is the request URI as it
// goes on the wire (escaped, with its query string), since the signature
// covers it exactly. A 2xx JSON answer is decoded into out unless out is nil.
func (c *Client) Get(ctx context.Context, destination, path string, out any) error {
	return c.Do(ctx, http.MethodGet, destination, path, nil, out)
}

// Post sends a signed POST with body as JSON; see Get.
func (c *Client) Post(ctx context.Context, destination, path string, body, out any) error {
	return c.Do(ctx, http.MethodPost, destination, path, body, out)
}

// Put sends a signed PUT with body as JSON; see Get.
func (c *Client) Put(ctx context.Context, destination, path string, body, out any) error {
	return c.Do(ctx, http.MethodPut, destination, path, body, out)
}

// Do sends a signed request with body (nil for none) as JSON content. An
// answer other than 2xx is returned as *Error; a request over the time
// limit fails with an error that is context.DeadlineExceeded (errors.Is).
func (c *Client) Do(ctx context.Context, method, destination, path string, body, out any) error {
	req, err := c.NewRequest(method, destination, path, body)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("fedclient: %s %s: %w", method, destination, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("fedclient: %s %s: read response: %w", method, destination, err)
	}
	if resp.StatusCode/100 != 2 {
		return newError(destination, resp.StatusCode, data)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("fedclient: %s %s: decode response: %w", method, destination, err)
	}
	return nil
}

// NewRequest builds a signed request to send with a client of this
// package: its URL is matrix://<destination><path>.
func (c *Client) NewRequest(method, destination, path string, body any) (*http.Request, error) {
	fr := fclient.NewFederationRequest(method, c.origin, spec.ServerName(destination), path)
	if body != nil {
		if err := fr.SetContent(body); err != nil {
			return nil, fmt.Errorf("fedclient: encode request: %w", err)
		}
	}
	if err := fr.Sign(c.origin, gomatrixserverlib.KeyID(c.key.ID), c.key.Private); err != nil {
		return nil, fmt.Errorf("fedclient: sign request: %w", err)
	}
	req, err := fr.HTTPRequest()
	if err != nil {
		return nil, fmt.Errorf("fedclient: %w", err)
	}
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}
	return req, nil
}

// Error is a remote server's answer other than 2xx.
type Error struct {
	Destination string
	Status      int
	// Code is the Matrix errcode, such as M_FORBIDDEN; "" when the body was
	// not a Matrix error.
	Code    string
	Message string
	// RetryAfter is retry_after_ms of a 429, if given.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("fedclient: %s answered %d", e.Destination, e.Status)
	}
	return fmt.Sprintf("fedclient: %s answered %d %s: %s", e.Destination, e.Status, e.Code, e.Message)
}

// AsError finds the remote server's error answer in err: an *Error from
// Do, or the gomatrix.HTTPError of a call of Federation().
func AsError(err error) (*Error, bool) {
	var e *Error
	if errors.As(err, &e) {
		return e, true
	}
	var he gomatrix.HTTPError
	if errors.As(err, &he) {
		return newError("", he.Code, he.Contents), true
	}
	return nil, false
}

func newError(destination string, status int, body []byte) *Error {
	var doc struct {
		Code         string `json:"errcode"`
		Message      string `json:"error"`
		RetryAfterMS int64  `json:"retry_after_ms"`
	}
	_ = json.Unmarshal(body, &doc) // a body that is not JSON leaves Code empty
	return &Error{Destination: destination, Status: status, Code: doc.Code, Message: doc.Message,
		RetryAfter: time.Duration(doc.RetryAfterMS) * time.Millisecond}
}
