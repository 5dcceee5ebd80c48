package fedclient

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/cirrus-matrix/cirrus/shared/config"
	"github.com/cirrus-matrix/cirrus/shared/keys"
)

// remote is a fake remote server on loopback: a TLS listener with a
// certificate for 127.0.0.1 and remote.test from its CA, recording requests.
type remote struct {
	*httptest.Server
	ca   *testCA
	name string // its server name: the IP literal with the port
	mu   sync.Mutex
	reqs []*http.Request
	body [][]byte
}

func newRemote(t *testing.T, h http.HandlerFunc) *remote {
	t.Helper()
	r := &remote{ca: newTestCA(t)}
	r.Server = startTLS(t, r.ca, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.reqs, r.body = append(r.reqs, req), append(r.body, b)
		r.mu.Unlock()
		req.Body = io.NopCloser(bytes.NewReader(b))
		if h != nil {
			h(w, req)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"server":{"name":"fake","version":"1"}}`))
	}), "127.0.0.1", "remote.test", "hs1.test", "multi.test")
	r.name = r.Listener.Addr().String()
	return r
}

func (r *remote) requests() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.reqs) }

// loopbackOK are the options of a test deployment: loopback allowed, the
// remote's CA trusted.
func (r *remote) loopbackOK() Options {
	return Options{IPRangeWhitelist: []string{"127.0.0.0/8"}, CustomCAFiles: []string{r.ca.pemFile}}
}

const versionPath = "/_matrix/federation/v1/version"

// TestClient_IPRange: loopback is refused by default, at the connection,
// whether named by an IP literal, a DNS name or the static map, and
// allowed by ip_range_whitelist 127.0.0.0/8.
func TestClient_IPRange(t *testing.T) {
	rm := newRemote(t, nil)
	_, port, _ := net.SplitHostPort(rm.name)
	dns := &fakeDNS{addrs: map[string][]string{"rebind.test": {"127.0.0.1"}}}
	for _, dest := range []string{rm.name, "rebind.test:" + port, "mapped.test"} {
		opts := rm.loopbackOK()
		opts.IPRangeWhitelist, opts.DNS, opts.Hosts = nil, dns, map[string]string{"mapped.test": rm.name}
		err := mustNew(t, opts).Get(context.Background(), dest, versionPath, nil)
		if !errors.Is(err, ErrAddressRefused) {
			t.Errorf("GET %s with the default blacklist: err = %v, want ErrAddressRefused", dest, err)
		}
	}
	if n := rm.requests(); n != 0 {
		t.Fatalf("the remote got %d requests, want none", n)
	}
	opts := rm.loopbackOK()
	opts.Hosts = map[string]string{"remote.test": rm.name}
	c := mustNew(t, opts)
	var out struct{ Server struct{ Name string } }
	for _, dest := range []string{rm.name, "remote.test"} {
		if err := c.Get(context.Background(), dest, versionPath, &out); err != nil || out.Server.Name != "fake" {
			t.Fatalf("GET %s with 127.0.0.0/8 whitelisted: %+v, %v", dest, out, err)
		}
	}
	// An explicit blacklist replaces the default one.
	opts = rm.loopbackOK()
	opts.IPRangeWhitelist, opts.IPRangeBlacklist = nil, []string{"10.0.0.0/8"}
	if err := mustNew(t, opts).Get(context.Background(), rm.name, versionPath, nil); err != nil {
		t.Fatalf("GET with ip_range_blacklist 10.0.0.0/8 only: %v", err)
	}
}

func TestIPFilter_Allowed(t *testing.T) {
	def, err := newIPFilter(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	empty, _ := newIPFilter([]string{}, nil)
	except, _ := newIPFilter(nil, []string{"192.168.1.1", "fd00::/8"})
	for _, tc := range []struct {
		f    ipFilter
		ip   string
		want bool
	}{
		{def, "8.8.8.8", true},
		{def, "2606:4700::1111", true},
		{def, "127.0.0.1", false},
		{def, "127.5.6.7", false},
		{def, "10.1.2.3", false},
		{def, "172.31.255.255", false},
		{def, "172.32.0.1", true},
		{def, "192.168.0.1", false},
		{def, "169.254.169.254", false}, // cloud metadata
		{def, "100.64.0.1", false},
		{def, "224.0.0.1", false},
		{def, "::1", false},
		{def, "fe80::1", false},
		{def, "fd12::1", false},
		{def, "::ffff:127.0.0.1", false}, // an IPv4-mapped address is its IPv4 one
		{def, "0.0.0.0", false},
		{empty, "127.0.0.1", true},
		{empty, "0.0.0.0", false}, // always refused
		{empty, "::", false},
		{except, "192.168.1.1", true},
		{except, "192.168.1.2", false},
		{except, "fd00::5", true},
	} {
		if got := tc.f.allowed(netip.MustParseAddr(tc.ip)); got != tc.want {
			t.Errorf("allowed(%s) = %v, want %v (filter %v)", tc.ip, got, tc.want, tc.f)
		}
	}
	if _, err := newIPFilter([]string{"10.0.0.0/33"}, nil); err == nil {
		t.Error("a bad range was accepted")
	}
}

// TestClient_DomainWhitelist: a server outside federation_domain_whitelist
// is never contacted, through Do or the typed client.
func TestClient_DomainWhitelist(t *testing.T) {
	rm := newRemote(t, nil)
	opts := rm.loopbackOK()
	opts.DomainWhitelist = []string{"friend.test"}
	c := mustNew(t, opts)
	if err := c.Get(context.Background(), rm.name, versionPath, nil); !errors.Is(err, ErrDomainNotAllowed) {
		t.Errorf("Get: err = %v, want ErrDomainNotAllowed", err)
	}
	if _, err := c.Federation().GetServerKeys(context.Background(), spec.ServerName(rm.name)); !errors.Is(err, ErrDomainNotAllowed) {
		t.Errorf("GetServerKeys: err = %v, want ErrDomainNotAllowed", err)
	}
	if c.Allowed(rm.name) || !c.Allowed("friend.test") {
		t.Error("Allowed disagrees with the whitelist")
	}
	if n := rm.requests(); n != 0 {
		t.Fatalf("the remote got %d requests, want none", n)
	}
	opts.DomainWhitelist = []string{"friend.test", rm.name}
	if err := mustNew(t, opts).Get(context.Background(), rm.name, versionPath, nil); err != nil {
		t.Fatalf("Get to a whitelisted server: %v", err)
	}
	if !mustNew(t, rm.loopbackOK()).Allowed("anyone.test") {
		t.Error("no whitelist: a server is not allowed")
	}
}

// TestClient_TLS: the remote's CA is trusted through
// federation_custom_ca_list, an unknown CA is refused unless verification
// is off, and the certificate must be for the server name.
func TestClient_TLS(t *testing.T) {
	rm := newRemote(t, nil)
	base := Options{IPRangeWhitelist: []string{"127.0.0.0/8"}, Hosts: map[string]string{"other.test": rm.name}}
	err := mustNew(t, base).Get(context.Background(), rm.name, versionPath, nil)
	if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Errorf("unknown CA: err = %v, want certificate signed by unknown authority", err)
	}
	trusted := base
	trusted.CustomCAFiles = []string{rm.ca.pemFile}
	if err := mustNew(t, trusted).Get(context.Background(), rm.name, versionPath, nil); err != nil {
		t.Errorf("custom CA: %v", err)
	}
	err = mustNew(t, trusted).Get(context.Background(), "other.test", versionPath, nil)
	if err == nil || !strings.Contains(err.Error(), "other.test") {
		t.Errorf("certificate not for other.test: err = %v, want a name mismatch", err)
	}
	skip := base
	skip.SkipVerify = true
	if err := mustNew(t, skip).Get(context.Background(), rm.name, versionPath, nil); err != nil {
		t.Errorf("verification off: %v", err)
	}
	other := newTestCA(t)
	wrong := base
	wrong.CustomCAFiles = []string{other.pemFile}
	if err := mustNew(t, wrong).Get(context.Background(), rm.name, versionPath, nil); err == nil {
		t.Error("a CA that did not sign the certificate was accepted")
	}
	bad := base
	bad.CustomCAFiles = []string{rm.ca.pemFile + ".missing"}
	if _, err := New("origin.test", mustKey(t), bad); err == nil {
		t.Error("a missing CA file was accepted")
	}
}

// TestClient_ResponseSize: a body over the limit is an error, whether its
// length is announced or not; one at the limit is read whole.
func TestClient_ResponseSize(t *testing.T) {
	const limit = 1024
	doc := func(n int) []byte { return []byte(`{"x":"` + strings.Repeat("a", n-8) + `"}`) }
	rm := newRemote(t, func(w http.ResponseWriter, r *http.Request) {
		size, ok := map[string]int{"/big": limit + 1, "/fits": limit, "/chunked": 4 * limit}[r.URL.Path]
		if !ok {
			size = 100
		}
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/chunked" {
			w.(http.Flusher).Flush() // no Content-Length
		}
		w.Write(doc(size))
	})
	opts := rm.loopbackOK()
	opts.MaxResponseSize = limit
	c := mustNew(t, opts)
	for _, path := range []string{"/big", "/chunked"} {
		if err := c.Get(context.Background(), rm.name, path, nil); !errors.Is(err, ErrResponseTooLarge) {
			t.Errorf("GET %s: err = %v, want ErrResponseTooLarge", path, err)
		}
	}
	var out struct{ X string }
	if err := c.Get(context.Background(), rm.name, "/fits", &out); err != nil || len(out.X) != limit-8 {
		t.Errorf("GET /fits: %d bytes, %v", len(out.X), err)
	}
	if _, err := c.Federation().GetServerKeys(context.Background(), spec.ServerName(rm.name)); err != nil {
		t.Errorf("typed call under the limit: %v", err)
	}
}

// TestClient_Timeout: a server that never answers ends in an error once
// the time limit passes.
func TestClient_Timeout(t *testing.T) {
	rm := newRemote(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	opts := rm.loopbackOK()
	opts.Timeout = 300 * time.Millisecond
	err := mustNew(t, opts).Get(context.Background(), rm.name, versionPath, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
}

// keyVerifier is a gomatrixserverlib.JSONVerifier that knows one server's key.
type keyVerifier struct {
	server string
	key    keys.Key
}

func (v keyVerifier) VerifyJSONs(_ context.Context, reqs []gomatrixserverlib.VerifyJSONRequest) ([]gomatrixserverlib.VerifyJSONResult, error) {
	out := make([]gomatrixserverlib.VerifyJSONResult, len(reqs))
	for i, r := range reqs {
		if string(r.ServerName) != v.server {
			out[i].Error = fmt.Errorf("unknown server %s", r.ServerName)
			continue
		}
		out[i].Error = gomatrixserverlib.VerifyJSON(v.server, gomatrixserverlib.KeyID(v.key.ID), ed25519.PublicKey(v.key.Public()), r.Message)
	}
	return out, nil
}

// TestClient_Signature: the remote verifies the X-Matrix header of a
// request from Do and from the typed client with VerifyHTTPRequest and our
// public key; the same header on a changed request fails.
func TestClient_Signature(t *testing.T) {
	key := mustKey(t)
	var dest string
	verify := func(r *http.Request, k keys.Key) int {
		_, res := fclient.VerifyHTTPRequest(r, time.Now(), spec.ServerName(dest), nil, keyVerifier{"origin.test", k})
		return res.Code
	}
	rm := newRemote(t, func(w http.ResponseWriter, r *http.Request) {
		if code := verify(r, key); code != http.StatusOK {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"errcode":"M_UNAUTHORIZED","error":"bad signature"}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{}`))
	})
	dest = rm.name
	c, err := New("origin.test", key, rm.loopbackOK())
	if err != nil {
		t.Fatal(err)
	}
	path := "/_matrix/federation/v1/send/txn%2F1?x=%20y"
	if err := c.Put(context.Background(), dest, path, map[string]any{"pdus": []any{}, "edus": []any{}}, nil); err != nil {
		t.Fatalf("signed PUT: %v", err)
	}
	if _, err := c.Federation().LookupProfile(context.Background(), "origin.test", spec.ServerName(dest), "@u:"+dest, "displayname"); err != nil {
		t.Fatalf("typed LookupProfile: %v", err)
	}
	if _, err := c.Federation().SendTransaction(context.Background(), gomatrixserverlib.Transaction{
		TransactionID: "t2", Origin: "origin.test", Destination: spec.ServerName(dest), PDUs: []json.RawMessage{},
	}); err != nil {
		t.Fatalf("typed SendTransaction: %v", err)
	}

	rm.mu.Lock()
	first, firstBody := rm.reqs[0], rm.body[0]
	rm.mu.Unlock()
	auth := first.Header.Get("Authorization")
	if !strings.HasPrefix(auth, "X-Matrix ") || !strings.Contains(auth, `destination="`+dest+`"`) || !strings.Contains(auth, `origin="origin.test"`) {
		t.Fatalf("Authorization = %q, want X-Matrix with origin and destination", auth)
	}
	if first.URL.RequestURI() != path || first.Host != dest {
		t.Fatalf("request URI %q Host %q, want %q and %q as signed", first.URL.RequestURI(), first.Host, path, dest)
	}
	replay := func(method, uri string, body []byte) int {
		r := httptest.NewRequest(method, uri, bytes.NewReader(body))
		r.Header.Set("Authorization", auth)
		r.Header.Set("Content-Type", "application/json")
		return verify(r, key)
	}
	if code := replay("PUT", path, firstBody); code != http.StatusOK {
		t.Fatalf("the request as sent: %d, want 200", code)
	}
	for name, code := range map[string]int{
		"body":   replay("PUT", path, []byte(`{"pdus":[{}],"edus":[]}`)),
		"path":   replay("PUT", "/_matrix/federation/v1/send/txn%2F2?x=%20y", firstBody),
		"query":  replay("PUT", "/_matrix/federation/v1/send/txn%2F1?x=y", firstBody),
		"method": replay("POST", path, firstBody),
	} {
		if code != http.StatusUnauthorized {
			t.Errorf("changed %s: %d, want 401", name, code)
		}
	}
	if code := verify(func() *http.Request {
		r := httptest.NewRequest("PUT", path, bytes.NewReader(firstBody))
		r.Header.Set("Authorization", auth)
		r.Header.Set("Content-Type", "application/json")
		return r
	}(), mustKey(t)); code != http.StatusUnauthorized {
		t.Errorf("another key: %d, want 401", code)
	}
}

// TestClient_Errors: a remote's Matrix error comes back typed, from Do and
// from the typed client, and never as a decoded success.
func TestClient_Errors(t *testing.T) {
	rm := newRemote(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/limited":
			w.WriteHeader(http.StatusTooManyRequests)
			w.Write([]byte(`{"errcode":"M_LIMIT_EXCEEDED","error":"slow down","retry_after_ms":1500}`))
		case "/html":
			w.WriteHeader(http.StatusBadGateway)
			w.Write([]byte(`<html>bad gateway</html>`))
		case "/notjson":
			w.Write([]byte(`not json`))
		default:
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte(`{"errcode":"M_FORBIDDEN","error":"not in room"}`))
		}
	})
	c := mustNew(t, rm.loopbackOK())
	for _, tc := range []struct {
		path   string
		status int
		code   string
		retry  time.Duration
	}{
		{"/_matrix/federation/v1/make_join/!r:x/@u:origin.test", 403, "M_FORBIDDEN", 0},
		{"/limited", 429, "M_LIMIT_EXCEEDED", 1500 * time.Millisecond},
		{"/html", 502, "", 0},
	} {
		err := c.Get(context.Background(), rm.name, tc.path, nil)
		e, ok := AsError(err)
		if !ok || e.Status != tc.status || e.Code != tc.code || e.RetryAfter != tc.retry || e.Destination != rm.name {
			t.Errorf("GET %s: %v (%+v), want %d %q retry %v", tc.path, err, e, tc.status, tc.code, tc.retry)
		}
	}
	var out map[string]any
	if err := c.Get(context.Background(), rm.name, "/notjson", &out); err == nil {
		t.Error("a 200 that is not JSON decoded without error")
	}
	_, err := c.Federation().MakeJoin(context.Background(), "origin.test", spec.ServerName(rm.name), "!r:x", "@u:origin.test")
	if e, ok := AsError(err); !ok || e.Status != 403 || e.Code != "M_FORBIDDEN" || e.Message != "not in room" {
		t.Errorf("typed MakeJoin: %v (%+v), want 403 M_FORBIDDEN", err, e)
	}
	if _, ok := AsError(errors.New("other")); ok {
		t.Error("AsError found a remote error in a plain one")
	}
}

// TestFromConfig: the config's keys reach the client's options, and a
// config with loopback whitelisted talks to a loopback remote.
func TestFromConfig(t *testing.T) {
	rm := newRemote(t, nil)
	c, err := config.Load("", func(k string) (string, bool) {
		v, ok := map[string]string{
			"CIRRUS_IP_RANGE_WHITELIST":          "127.0.0.0/8, ::1/128",
			"CIRRUS_FEDERATION_CUSTOM_CA_LIST":   rm.ca.pemFile,
			"CIRRUS_FEDERATION_HOSTS":            "hs1.test=" + rm.name,
			"CIRRUS_FEDERATION_DOMAIN_WHITELIST": "hs1.test",
		}[k]
		return v, ok
	})
	if err != nil {
		t.Fatal(err)
	}
	opts := FromConfig(c)
	if opts.SkipVerify || opts.IPRangeBlacklist != nil || len(opts.IPRangeWhitelist) != 2 || opts.Hosts["hs1.test"] != rm.name {
		t.Fatalf("options %+v", opts)
	}
	fc := mustNew(t, opts)
	if err := fc.Get(context.Background(), "hs1.test", versionPath, nil); err != nil {
		t.Fatalf("GET hs1.test: %v", err)
	}
	if err := fc.Get(context.Background(), rm.name, versionPath, nil); !errors.Is(err, ErrDomainNotAllowed) {
		t.Fatalf("GET outside the whitelist: %v", err)
	}
}

// TestClient_NextTarget: when the first SRV target cannot be reached, the
// request, body included, goes to the next one, with the server name as
// Host and certificate name.
func TestClient_NextTarget(t *testing.T) {
	rm := newRemote(t, nil)
	_, port, _ := net.SplitHostPort(rm.name)
	p, _ := strconv.Atoi(port)
	dead, _ := strconv.Atoi(closedPort(t))
	dns := &fakeDNS{
		addrs: map[string][]string{"dead.test": {"127.0.0.1"}, "live.test": {"127.0.0.1"}},
		srv: map[string][]*net.SRV{"_matrix-fed._tcp.multi.test": {
			{Target: "dead.test.", Port: uint16(dead)}, {Target: "live.test.", Port: uint16(p)},
		}},
	}
	opts := rm.loopbackOK()
	opts.DNS = dns
	c := mustNew(t, opts)
	body := map[string]string{"hello": "world"}
	if err := c.Put(context.Background(), "multi.test", "/_matrix/federation/v1/send/1", body, nil); err != nil {
		t.Fatalf("PUT multi.test: %v", err)
	}
	rm.mu.Lock()
	defer rm.mu.Unlock()
	if len(rm.reqs) != 1 {
		t.Fatalf("the live target got %d requests, want 1", len(rm.reqs))
	}
	if rm.reqs[0].Host != "multi.test" || string(rm.body[0]) != `{"hello":"world"}` {
		t.Fatalf("the live target got Host %q, body %s; want multi.test and the body", rm.reqs[0].Host, rm.body[0])
	}
}
