package serverkeys_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/keys"
	"github.com/cirrus-matrix/cirrus/shared/serverkeys"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestDendrite: a real homeserver signs its requests to this one. Dendrite
// asks for a profile on a Cirrus test listener; RequireServer fetches
// Dendrite's key from its /_matrix/key/v2/server, verifies the X-Matrix
// signature over the escaped query Dendrite sent and lets the request
// through with Dendrite as the origin. The notary API then hands on
// Dendrite's key document with both signatures.
func TestDendrite(t *testing.T) {
	c := newClock()
	st := openStore(t)

	srv := httptest.NewUnstartedServer(nil)
	ourName := srv.Listener.Addr().String()
	k, ourKey := newKeys(t, st, c, ourName)
	var origin atomic.Value
	rt := httpapi.NewRouter()
	k.Register(rt)
	rt.HandleFunc("GET /_matrix/key/v2/server", func(w http.ResponseWriter, r *http.Request) {
		doc, _ := keys.ServerKeys(ourName, ourKey, time.Now())
		w.Header().Set("Content-Type", "application/json")
		w.Write(doc)
	})
	rt.Handle("GET /_matrix/federation/v1/query/profile", k.RequireServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin.Store(serverkeys.Origin(r.Context()))
		httpapi.WriteJSON(w, http.StatusOK, map[string]string{"displayname": "Alice of Cirrus (" + r.URL.Query().Get("user_id") + ")"})
	})))
	srv.Config.Handler = rt
	srv.StartTLS()
	t.Cleanup(srv.Close)

	d := servertest.StartDendrite(t, nil)
	token := d.Register(t, "bob", "correct horse battery staple")
	alice := "@alice:" + ourName
	res, body := d.Do(t, "GET", "/_matrix/client/v3/profile/"+url.PathEscape(alice), token, nil)
	if res != http.StatusOK || !strings.Contains(body, "Alice of Cirrus ("+alice+")") {
		t.Fatalf("Dendrite's profile lookup on Cirrus: %d %s\n%s", res, body, d.LogTail())
	}
	if got, _ := origin.Load().(string); got != d.Name {
		t.Fatalf("origin in the handler: %q, want %q", got, d.Name)
	}

	n := &notary{Name: ourName, Key: ourKey}
	status, doc := call(t, "GET", "https://"+ourName+"/_matrix/key/v2/query/"+d.Name, "")
	docs := serverKeys(t, n, doc, d.Key(t))
	if status != http.StatusOK || len(docs) != 1 || !bytes.Contains(docs[0], []byte(d.Name)) {
		t.Fatalf("Dendrite's keys through the notary API: %d %v", status, doc)
	}
}

// TestDendrite_CirrusAsNotary: Dendrite, with Cirrus as its notary
// (key_perspectives), believes a request signed by a server that no
// longer answers, through the keys Cirrus cached and signed for it; and
// refuses one signed by a key that server never had.
func TestDendrite_CirrusAsNotary(t *testing.T) {
	c := newClock()
	rm := newRemote(t, c)
	n := startNotary(t, openStore(t), c)
	if status, body := call(t, "GET", "https://"+n.Name+"/_matrix/key/v2/query/"+rm.Name, ""); status != http.StatusOK || len(serverKeys(t, n, body, rm.Key)) != 1 {
		t.Fatalf("the notary's first query: %d %v", status, body)
	}
	rm.srv.Close()

	d := servertest.StartDendrite(t, map[string]any{
		"federation_api.key_perspectives": []any{map[string]any{
			"server_name": n.Name,
			"keys":        []any{map[string]any{"key_id": n.Key.ID, "public_key": b64(n.Key)}},
		}},
	})
	d.Register(t, "bob", "correct horse battery staple")
	uri := "/_matrix/federation/v1/query/profile?user_id=" + url.QueryEscape("@bob:"+d.Name)
	status, body := sign(t, rm.Name, d.Name, rm.Key, "GET", uri, nil).send(t, "https://"+d.Name)
	if status != http.StatusOK {
		t.Fatalf("a request signed by %s, its keys from the Cirrus notary: %d %v\n%s", rm.Name, status, body, d.LogTail())
	}
	forged := keys.Key{ID: rm.Key.ID, Private: mustKey(t).Private}
	if status, body := sign(t, rm.Name, d.Name, forged, "GET", uri, nil).send(t, "https://"+d.Name); status != http.StatusUnauthorized {
		t.Fatalf("a forged request: %d %v, want 401", status, body)
	}
}
