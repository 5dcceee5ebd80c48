package serverkeys_test

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/cirrus-matrix/cirrus/shared/keys"
	"github.com/cirrus-matrix/cirrus/shared/serverkeys"
)

const thisServer = "dest.example"

// federationRequest is a request as gomatrixserverlib signs it, to send to
// a test listener.
type federationRequest struct {
	method, uri, auth string
	body              []byte
}

// sign makes a request from origin to destination signed with key by
// gomatrixserverlib's own request signing.
func sign(t *testing.T, origin, destination string, key keys.Key, method, uri string, content any) federationRequest {
	t.Helper()
	fr := fclient.NewFederationRequest(method, spec.ServerName(origin), spec.ServerName(destination), uri)
	if content != nil {
		if err := fr.SetContent(content); err != nil {
			t.Fatal(err)
		}
	}
	if err := fr.Sign(spec.ServerName(origin), gomatrixserverlib.KeyID(key.ID), key.Private); err != nil {
		t.Fatal(err)
	}
	hr, err := fr.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	return federationRequest{method: method, uri: uri, auth: hr.Header.Get("Authorization"), body: fr.Content()}
}

type echo struct {
	Origin string `json:"origin"`
	Body   string `json:"body"`
	URI    string `json:"uri"`
}

// send sends fr to the listener at base and returns the status and body.
func (fr federationRequest) send(t *testing.T, base string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if fr.body != nil {
		rd = strings.NewReader(string(fr.body))
	}
	req, err := http.NewRequest(fr.method, base+fr.uri, rd)
	if err != nil {
		t.Fatal(err)
	}
	if fr.auth != "" {
		req.Header.Set("Authorization", fr.auth)
	}
	if fr.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	// A federation listener's certificate in these tests is self-signed.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(res.Body)
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: %d %q is not JSON", fr.method, fr.uri, res.StatusCode, raw)
	}
	return res.StatusCode, out
}

// protected runs a handler behind RequireServer that echoes the verified
// origin, the body and the URI it got.
func protected(t *testing.T, k *serverkeys.Keys) string {
	t.Helper()
	srv := httptest.NewServer(k.RequireServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		json.NewEncoder(w).Encode(echo{Origin: serverkeys.Origin(r.Context()), Body: string(body), URI: r.RequestURI})
	})))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestRequireServer(t *testing.T) {
	c := newClock()
	rm := newRemote(t, c)
	k, _ := newKeys(t, openStore(t), c, thisServer)
	base := protected(t, k)

	const profile = "/_matrix/federation/v1/query/profile?user_id=%40alice%3Aa.example&field=displayname"
	const state = "/_matrix/federation/v1/state/%21room%2Fx%3Aa.example?event_id=%24ev%2B1"
	content := map[string]any{"pdus": []any{}, "edus": []any{map[string]any{"edu_type": "m.typing"}}}
	signedPut := sign(t, rm.Name, thisServer, rm.Key, "PUT", "/_matrix/federation/v1/send/txn1", content)

	pass := map[string]federationRequest{
		"GET with a query string":   sign(t, rm.Name, thisServer, rm.Key, "GET", profile, nil),
		"raw path with escapes":     sign(t, rm.Name, thisServer, rm.Key, "GET", state, nil),
		"PUT with a body":           signedPut,
		"no destination (pre-v1.3)": withAuth(sign(t, rm.Name, thisServer, rm.Key, "GET", profile, nil), dropDestination),
		"header spelled otherwise":  withAuth(sign(t, rm.Name, thisServer, rm.Key, "GET", profile, nil), respell),
	}
	for name, fr := range pass {
		status, body := fr.send(t, base)
		if status != http.StatusOK || body["origin"] != rm.Name || body["uri"] != fr.uri || body["body"] != string(fr.body) {
			t.Errorf("%s: %d %v, want 200 from %s with the URI and body as sent", name, status, body, rm.Name)
		}
	}

	forger := keys.Key{ID: rm.Key.ID, Private: mustKey(t).Private}
	unknown := mustKey(t)
	tamperedBody := signedPut
	tamperedBody.body = []byte(`{"pdus":[],"edus":[]}`)
	tamperedQuery := sign(t, rm.Name, thisServer, rm.Key, "GET", profile, nil)
	tamperedQuery.uri = strings.Replace(profile, "displayname", "avatar_url", 1)
	tamperedMethod := sign(t, rm.Name, thisServer, rm.Key, "GET", profile, nil)
	tamperedMethod.method = "DELETE"
	otherOrigin := sign(t, rm.Name, thisServer, rm.Key, "GET", profile, nil)
	otherOrigin.auth = strings.Replace(otherOrigin.auth, rm.Name, "other.example", 1)
	for _, tc := range []struct {
		name string
		fr   federationRequest
		want string
	}{
		{"unsigned", federationRequest{method: "GET", uri: profile}, "missing Authorization: X-Matrix"},
		{"bearer token", withAuth(federationRequest{method: "GET", uri: profile}, func(string) string { return "Bearer abc" }), "missing Authorization: X-Matrix"},
		{"forged signature", sign(t, rm.Name, thisServer, forger, "GET", profile, nil), "does not verify"},
		{"unknown key", sign(t, rm.Name, thisServer, unknown, "GET", profile, nil), "does not verify"},
		{"another destination", sign(t, rm.Name, "other.example", rm.Key, "GET", profile, nil), `destination "other.example" is not this server`},
		{"destination left out, signed for another", withAuth(sign(t, rm.Name, "other.example", rm.Key, "GET", profile, nil), dropDestination), "does not verify"},
		{"tampered query string", tamperedQuery, "does not verify"},
		{"tampered body", tamperedBody, "does not verify"},
		{"tampered method", tamperedMethod, "does not verify"},
		{"another origin", otherOrigin, "does not verify"},
		{"no sig", withAuth(signedPut, func(h string) string { return h[:strings.Index(h, ",sig=")] }), "needs origin, key and sig"},
		{"unclosed quote", withAuth(signedPut, func(h string) string { return `X-Matrix origin="` + rm.Name }), "malformed"},
	} {
		status, body := tc.fr.send(t, base)
		msg, _ := body["error"].(string)
		if status != http.StatusUnauthorized || body["errcode"] != "M_UNAUTHORIZED" || !strings.Contains(msg, tc.want) {
			t.Errorf("%s: %d %v, want 401 M_UNAUTHORIZED saying %q", tc.name, status, body, tc.want)
		}
	}

	notJSON := signedPut
	notJSON.body = []byte("not json")
	if status, body := notJSON.send(t, base); status != http.StatusBadRequest || body["errcode"] != "M_NOT_JSON" {
		t.Errorf("a body that is not JSON: %d %v, want 400 M_NOT_JSON", status, body)
	}
}

// TestRequireServer_ExpiredKey: once a server has replaced its key, a
// request signed with the old one is refused, and one with the new passes.
func TestRequireServer_ExpiredKey(t *testing.T) {
	c := newClock()
	rm := newRemote(t, c)
	k, _ := newKeys(t, openStore(t), c, thisServer)
	base := protected(t, k)
	old := rm.Key
	if status, body := sign(t, rm.Name, thisServer, old, "GET", "/_matrix/federation/v1/version", nil).send(t, base); status != http.StatusOK {
		t.Fatalf("before the rotation: %d %v", status, body)
	}
	rm.Rotate(t)
	c.Advance(2 * time.Hour) // past the cached valid_until_ts
	status, body := sign(t, rm.Name, thisServer, old, "GET", "/_matrix/federation/v1/version", nil).send(t, base)
	if status != http.StatusUnauthorized || body["errcode"] != "M_UNAUTHORIZED" {
		t.Errorf("signed with the expired key: %d %v, want 401 M_UNAUTHORIZED", status, body)
	}
	if status, body := sign(t, rm.Name, thisServer, rm.Key, "GET", "/_matrix/federation/v1/version", nil).send(t, base); status != http.StatusOK || body["origin"] != rm.Name {
		t.Errorf("signed with the new key: %d %v, want 200", status, body)
	}
	if got := rm.Fetches.Load(); got != 2 {
		t.Errorf("the remote was asked %d times, want 2 (first use, then past valid_until_ts)", got)
	}
}

func withAuth(fr federationRequest, f func(string) string) federationRequest {
	fr.auth = f(fr.auth)
	return fr
}

// dropDestination removes the destination parameter, as servers before
// spec v1.3 send the header.
func dropDestination(h string) string {
	p := authParams(h)
	return `X-Matrix origin="` + p["origin"] + `",key="` + p["key"] + `",sig="` + p["sig"] + `"`
}

// authParams splits a header as gomatrixserverlib writes it.
func authParams(h string) map[string]string {
	p := map[string]string{}
	for _, kv := range strings.Split(strings.TrimPrefix(h, "X-Matrix "), ",") {
		name, value, _ := strings.Cut(kv, "=")
		p[name] = strings.Trim(value, `"`)
	}
	return p
}

// respell writes the same parameters in another order, with upper-case
// names, spaces around commas and an unquoted origin holding a colon, as
// RFC 9110 and the spec allow.
func respell(h string) string {
	p := authParams(h)
	return `x-matrix  Sig="` + p["sig"] + `" ,  KEY="` + p["key"] + `",Destination=` + p["destination"] + `,	origin=` + p["origin"]
}

// TestRequireServer_UnknownKeys: requests naming keys their origin does not
// publish make this server ask that origin at most once a minute, however
// many come, so that nobody can aim this server at another.
func TestRequireServer_UnknownKeys(t *testing.T) {
	c := newClock()
	rm := newRemote(t, c)
	k, _ := newKeys(t, openStore(t), c, thisServer)
	base := protected(t, k)
	for i := range 5 {
		status, body := sign(t, rm.Name, thisServer, mustKey(t), "GET", "/_matrix/federation/v1/version", nil).send(t, base)
		if status != http.StatusUnauthorized || body["errcode"] != "M_UNAUTHORIZED" {
			t.Fatalf("request %d with an unknown key: %d %v, want 401 M_UNAUTHORIZED", i, status, body)
		}
	}
	if got := rm.Fetches.Load(); got != 1 {
		t.Fatalf("five unknown keys: the remote was asked %d times, want 1", got)
	}
	// The remote starts using a new key: believed once the minute is over.
	rm.Rotate(t)
	fr := sign(t, rm.Name, thisServer, rm.Key, "GET", "/_matrix/federation/v1/version", nil)
	if status, _ := fr.send(t, base); status != http.StatusUnauthorized {
		t.Fatalf("a new key within the minute: %d, want 401 until the next fetch", status)
	}
	c.Advance(serverkeys.MinRefetch)
	if status, body := fr.send(t, base); status != http.StatusOK || body["origin"] != rm.Name {
		t.Fatalf("a new key after the minute: %d %v, want 200", status, body)
	}
	if got := rm.Fetches.Load(); got != 2 {
		t.Fatalf("the remote was asked %d times, want 2", got)
	}
}
