package serverkeys_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/cirrus-matrix/cirrus/shared/config"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/keys"
	"github.com/cirrus-matrix/cirrus/shared/protocol"
	"github.com/cirrus-matrix/cirrus/shared/serverkeys"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// notary is a Keys serving the notary API over TLS on loopback, named by
// its address.
type notary struct {
	Name string
	Keys *serverkeys.Keys
	Key  keys.Key
	// Last is what the last request cost in the table.
	Last atomic.Pointer[store.Usage]
}

func startNotary(t *testing.T, st *store.Store, c *clock) *notary {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	n := &notary{Name: srv.Listener.Addr().String()}
	n.Keys, n.Key = newKeys(t, st, c, n.Name)
	rt := httpapi.NewRouter()
	n.Keys.Register(rt)
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, meter := store.WithMeter(r.Context())
		rt.ServeHTTP(w, r.WithContext(ctx))
		u := meter.Usage()
		n.Last.Store(&u)
	})
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return n
}

// call sends a request to a loopback TLS server and decodes its JSON object.
func call(t *testing.T, method, url string, body string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: %d %s: not a JSON object", method, url, res.StatusCode, raw)
	}
	return res.StatusCode, out
}

// serverKeys returns the documents of a key query answer, each checked to
// be signed by both its server (with want, when given) and the notary.
func serverKeys(t *testing.T, n *notary, body map[string]any, want ...keys.Key) [][]byte {
	t.Helper()
	list, ok := body["server_keys"].([]any)
	if !ok {
		t.Fatalf("no server_keys array in %v", body)
	}
	var docs [][]byte
	for i, d := range list {
		doc, _ := json.Marshal(d)
		var sk gomatrixserverlib.ServerKeys
		if err := json.Unmarshal(doc, &sk); err != nil {
			t.Fatal(err)
		}
		if err := protocol.VerifyJSON(n.Name, n.Key.ID, n.Key.Public(), doc); err != nil {
			t.Errorf("server_keys[%d]: the notary's signature: %v", i, err)
		}
		if i < len(want) {
			if err := protocol.VerifyJSON(string(sk.ServerName), want[i].ID, want[i].Public(), doc); err != nil {
				t.Errorf("server_keys[%d]: the signature of %s: %v", i, sk.ServerName, err)
			}
		}
		docs = append(docs, doc)
	}
	return docs
}

func TestNotary_Query(t *testing.T) {
	c := newClock()
	st := openStore(t)
	rm := newRemote(t, c)
	n := startNotary(t, st, c)
	base := "https://" + n.Name + "/_matrix/key/v2/query"

	status, body := call(t, "POST", base, fmt.Sprintf(`{"server_keys": {%q: {}}}`, rm.Name))
	if status != http.StatusOK {
		t.Fatalf("query: %d %v", status, body)
	}
	if docs := serverKeys(t, n, body, rm.Key); len(docs) != 1 {
		t.Fatalf("query: %d documents, want 1", len(docs))
	}
	t.Logf("query fetching the keys: %+v", *n.Last.Load())
	// Asked again, by key ID and through GET, the table answers.
	status, body = call(t, "POST", base, fmt.Sprintf(`{"server_keys": {%q: {%q: {"minimum_valid_until_ts": %d}}}}`,
		rm.Name, rm.Key.ID, c.Now().Add(30*time.Minute).UnixMilli()))
	if docs := serverKeys(t, n, body, rm.Key); status != http.StatusOK || len(docs) != 1 {
		t.Fatalf("query by key ID: %d %v", status, body)
	}
	if u := *n.Last.Load(); u.Calls != 1 || u.WriteUnits != 0 {
		t.Errorf("a query answered from the table cost %+v, want one Query and no writes", u)
	} else {
		t.Logf("query answered from the table: %+v", u)
	}
	status, body = call(t, "GET", base+"/"+rm.Name, "")
	if docs := serverKeys(t, n, body, rm.Key); status != http.StatusOK || len(docs) != 1 {
		t.Fatalf("GET query: %d %v", status, body)
	}
	if got := rm.Fetches.Load(); got != 1 {
		t.Fatalf("three queries: the remote was asked %d times, want 1", got)
	}
	// Keys wanted for longer than the cached ones last are fetched again,
	// but not within a minute of the last fetch: the cached ones answer.
	later := fmt.Sprintf("%s/%s?minimum_valid_until_ts=%d", base, rm.Name, c.Now().Add(2*time.Hour).UnixMilli())
	for _, tc := range []struct {
		advance time.Duration
		fetches int64
	}{{0, 1}, {serverkeys.MinRefetch - time.Second, 1}, {2 * time.Second, 2}} {
		c.Advance(tc.advance)
		status, body = call(t, "GET", later, "")
		if docs := serverKeys(t, n, body, rm.Key); status != http.StatusOK || len(docs) != 1 {
			t.Fatalf("GET query with a later minimum: %d %v", status, body)
		}
		if got := rm.Fetches.Load(); got != tc.fetches {
			t.Fatalf("a later minimum_valid_until_ts, %v later: the remote was asked %d times, want %d", tc.advance, got, tc.fetches)
		}
	}

	// gomatrixserverlib's own notary client believes the answer: the
	// notary's signature with the key it is configured with, the origin's
	// with its own.
	pf := &gomatrixserverlib.PerspectiveKeyFetcher{
		PerspectiveServerName: spec.ServerName(n.Name),
		PerspectiveServerKeys: notaryKeys(n.Key),
		Client:                fclient.NewClient(fclient.WithSkipVerify(true)),
	}
	req := gomatrixserverlib.PublicKeyLookupRequest{ServerName: spec.ServerName(rm.Name), KeyID: gomatrixserverlib.KeyID(rm.Key.ID)}
	res, err := pf.FetchKeys(context.Background(), map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{req: spec.AsTimestamp(c.Now())})
	if err != nil {
		t.Fatalf("gomatrixserverlib's notary client: %v", err)
	}
	if got := res[req].Key; !bytes.Equal(got, rm.Key.Public()) {
		t.Fatalf("gomatrixserverlib's notary client got key %x, want %x", []byte(got), []byte(rm.Key.Public()))
	}
	// A notary with another key is refused by it.
	pf.PerspectiveServerKeys = notaryKeys(keys.Key{ID: n.Key.ID, Private: mustKey(t).Private})
	if _, err := pf.FetchKeys(context.Background(), map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{req: spec.AsTimestamp(c.Now())}); err == nil {
		t.Fatal("a notary answer checked with another key was believed")
	}
}

// notaryKeys is how a PerspectiveKeyFetcher is told a notary's key.
func notaryKeys(k keys.Key) map[gomatrixserverlib.KeyID]ed25519.PublicKey {
	return map[gomatrixserverlib.KeyID]ed25519.PublicKey{gomatrixserverlib.KeyID(k.ID): k.Public()}
}

func TestNotary_OwnAndUnknownServers(t *testing.T) {
	c := newClock()
	st := openStore(t)
	n := startNotary(t, st, c)
	base := "https://" + n.Name + "/_matrix/key/v2/query"

	// Its own keys, signed by itself.
	status, body := call(t, "GET", base+"/"+n.Name, "")
	docs := serverKeys(t, n, body, n.Key)
	if status != http.StatusOK || len(docs) != 1 {
		t.Fatalf("own keys: %d %v", status, body)
	}
	var own gomatrixserverlib.ServerKeys
	json.Unmarshal(docs[0], &own)
	if own.ServerName != spec.ServerName(n.Name) || !bytes.Equal(own.VerifyKeys[gomatrixserverlib.KeyID(n.Key.ID)].Key, n.Key.Public()) {
		t.Fatalf("own keys: %s", docs[0])
	}

	// A server that does not answer and was never cached: nothing, in
	// order with the others, and no error.
	gone := httptest.NewTLSServer(http.NotFoundHandler())
	goneName := gone.Listener.Addr().String()
	gone.Close()
	status, body = call(t, "POST", base, fmt.Sprintf(`{"server_keys": {%q: {}, %q: {}, "not a server name": {}}}`, goneName, n.Name))
	if docs := serverKeys(t, n, body, n.Key); status != http.StatusOK || len(docs) != 1 {
		t.Fatalf("an unreachable server and this one: %d %v", status, body)
	}
	status, body = call(t, "POST", base, `{"server_keys": {}}`)
	if docs := serverKeys(t, n, body); status != http.StatusOK || len(docs) != 0 {
		t.Fatalf("no servers: %d %v", status, body)
	}
}

func TestNotary_BadRequests(t *testing.T) {
	c := newClock()
	st := openStore(t)
	n := startNotary(t, st, c)
	base := "https://" + n.Name + "/_matrix/key/v2/query"
	many := map[string]any{}
	for i := range serverkeys.MaxQueryServers + 1 {
		many[fmt.Sprintf("s%d.example", i)] = map[string]any{}
	}
	tooMany, _ := json.Marshal(map[string]any{"server_keys": many})
	for _, tc := range []struct {
		method, path, body string
		status             int
		errcode            string
	}{
		{"POST", "", `not json`, 400, "M_NOT_JSON"},
		{"POST", "", `{}`, 400, "M_MISSING_PARAM"},
		{"POST", "", `{"server_keys": []}`, 400, "M_BAD_JSON"},
		{"POST", "", `{"server_keys": {"a.example": {"ed25519:x": {"minimum_valid_until_ts": "soon"}}}}`, 400, "M_BAD_JSON"},
		{"POST", "", string(tooMany), 400, "M_INVALID_PARAM"},
		{"GET", "/a.example?minimum_valid_until_ts=soon", "", 400, "M_INVALID_PARAM"},
		{"GET", "", "", 405, "M_UNRECOGNIZED"},
	} {
		status, body := call(t, tc.method, base+tc.path, tc.body)
		if status != tc.status || body["errcode"] != tc.errcode {
			t.Errorf("%s %s %.40s: %d %v, want %d %s", tc.method, tc.path, tc.body, status, body, tc.status, tc.errcode)
		}
	}
}

// TestNotary_Trusted: a server with a trusted notary verifies a signature of
// a server that no longer answers, through the keys the notary cached.
func TestNotary_Trusted(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	rm := newRemote(t, c)
	n := startNotary(t, openStore(t), c)
	status, body := call(t, "GET", "https://"+n.Name+"/_matrix/key/v2/query/"+rm.Name, "")
	if docs := serverKeys(t, n, body, rm.Key); status != http.StatusOK || len(docs) != 1 {
		t.Fatalf("notary query: %d %v", status, body)
	}
	rm.srv.Close()

	msg := signed(t, rm.Name, rm.Key, `{"via":"notary"}`)
	alone, _ := newKeys(t, openStore(t), c, "example.org")
	if err := alone.VerifyJSON(ctx, rm.Name, c.Now(), msg); err == nil {
		t.Fatal("without a notary, the keys of a server that does not answer were found")
	}
	trusted := config.TrustedKeyServer{ServerName: n.Name, VerifyKeys: map[string]string{n.Key.ID: b64(n.Key)}}
	k, _ := newKeys(t, openStore(t), c, "example.org", trusted)
	if err := k.VerifyJSON(ctx, rm.Name, c.Now(), msg); err != nil {
		t.Fatalf("through the trusted notary: %v", err)
	}
	// A notary trusted with another key is not believed.
	wrong := config.TrustedKeyServer{ServerName: n.Name, VerifyKeys: map[string]string{n.Key.ID: b64(mustKey(t))}}
	k, _ = newKeys(t, openStore(t), c, "example.org", wrong)
	if err := k.VerifyJSON(ctx, rm.Name, c.Now(), msg); err == nil {
		t.Fatal("a notary's answer signed by a key other than the trusted one was believed")
	}
}

// TestNotary_SeveralServers: the servers of one query are fetched together
// and answered in the order of their names, each document signed by its
// server.
func TestNotary_SeveralServers(t *testing.T) {
	c := newClock()
	st := openStore(t)
	a, b := newRemote(t, c), newRemote(t, c)
	if a.Name > b.Name {
		a, b = b, a
	}
	n := startNotary(t, st, c)
	status, body := call(t, "POST", "https://"+n.Name+"/_matrix/key/v2/query",
		fmt.Sprintf(`{"server_keys": {%q: {}, %q: {%q: {}}}}`, b.Name, a.Name, a.Key.ID))
	docs := serverKeys(t, n, body, a.Key, b.Key)
	if status != http.StatusOK || len(docs) != 2 {
		t.Fatalf("two servers: %d %v", status, body)
	}
	for i, rm := range []*remote{a, b} {
		if !bytes.Contains(docs[i], []byte(`"server_name":"`+rm.Name+`"`)) {
			t.Errorf("server_keys[%d] is %s, want the document of %s", i, docs[i], rm.Name)
		}
		if got := rm.Fetches.Load(); got != 1 {
			t.Errorf("%s was asked %d times, want 1", rm.Name, got)
		}
	}
	u := *n.Last.Load()
	t.Logf("query of two servers, both fetched: %+v", u)
}
