package serverkeys_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestFederationHandler_KeyQuery asks the real federation tree, with its
// outbound client, for its own keys and a remote server's.
func TestFederationHandler_KeyQuery(t *testing.T) {
	rm := newRemote(t, newClock())
	// A test deployment on one machine: loopback allowed, the fake's
	// self-signed certificate accepted.
	st := servertest.Start(t, "CIRRUS_FEDERATION_VERIFY_CERTIFICATES=false", "CIRRUS_IP_RANGE_WHITELIST=127.0.0.1/32")
	fed := httptest.NewServer(st.Server.FederationHandler())
	t.Cleanup(fed.Close)
	n := &notary{Name: servertest.ServerName, Key: st.Server.Key}

	status, body := call(t, "POST", fed.URL+"/_matrix/key/v2/query",
		fmt.Sprintf(`{"server_keys": {%q: {}, %q: {}}}`, servertest.ServerName, rm.Name))
	// Sorted by server name: 127.0.0.1:port first.
	if docs := serverKeys(t, n, body, rm.Key, st.Server.Key); status != http.StatusOK || len(docs) != 2 {
		t.Fatalf("query through the federation tree: %d %v", status, body)
	}
	status, body = call(t, "GET", fed.URL+"/_matrix/key/v2/query/"+rm.Name, "")
	if docs := serverKeys(t, n, body, rm.Key); status != http.StatusOK || len(docs) != 1 {
		t.Fatalf("GET query through the federation tree: %d %v", status, body)
	}
	if got := rm.Fetches.Load(); got != 1 {
		t.Errorf("the remote was asked %d times, want 1", got)
	}

	// A signed request from the remote passes RequireServer of the real
	// server, which fetched the key through its outbound client.
	base := protected(t, st.Server.ServerKeys)
	fr := sign(t, rm.Name, servertest.ServerName, rm.Key, "GET", "/_matrix/federation/v1/query/directory?room_alias=%23a%3Aexample.org", nil)
	if status, body := fr.send(t, base); status != http.StatusOK || body["origin"] != rm.Name {
		t.Errorf("signed request: %d %v, want 200 from %s", status, body, rm.Name)
	}
}

// TestFederationHandler_KeyQueryRefusesLoopback: by default the outbound
// client connects to no private or loopback address, so the unauthenticated
// notary API cannot be made to reach inside the network.
func TestFederationHandler_KeyQueryRefusesLoopback(t *testing.T) {
	rm := newRemote(t, newClock())
	st := servertest.Start(t, "CIRRUS_FEDERATION_VERIFY_CERTIFICATES=false")
	fed := httptest.NewServer(st.Server.FederationHandler())
	t.Cleanup(fed.Close)
	status, body := call(t, "GET", fed.URL+"/_matrix/key/v2/query/"+rm.Name, "")
	if docs, _ := body["server_keys"].([]any); status != http.StatusOK || docs == nil || len(docs) != 0 {
		t.Fatalf("a loopback server: %d %v, want 200 and no keys", status, body)
	}
	if got := rm.Fetches.Load(); got != 0 {
		t.Errorf("the loopback remote was asked %d times, want 0", got)
	}
}
