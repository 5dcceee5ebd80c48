package servertest

import (
	"bytes"
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
)

// FederationEnv is the configuration a Stack needs to verify requests of a
// Remote: its outbound client may reach loopback and accepts the Remote's
// self-signed certificate.
var FederationEnv = []string{"CIRRUS_FEDERATION_VERIFY_CERTIFICATES=false", "CIRRUS_IP_RANGE_WHITELIST=127.0.0.1/32"}

// StartFederation is Start with FederationEnv, the remotes' names mapped
// to their listeners (federation_hosts), and env.
func StartFederation(t testing.TB, remotes []*Remote, env ...string) *Stack {
	t.Helper()
	var hosts []string
	for _, rm := range remotes {
		if rm.Name != rm.addr {
			hosts = append(hosts, rm.Name+"="+rm.addr)
		}
	}
	all := append([]string{}, FederationEnv...)
	if len(hosts) > 0 {
		all = append(all, "CIRRUS_FEDERATION_HOSTS="+strings.Join(hosts, ","))
	}
	return Start(t, append(all, env...)...)
}

// FederationURL serves the stack's federation tree (server.FederationHandler)
// over HTTP until the test ends and returns its base URL. Its requests are
// logged with the client tree's, so Requests and CheckCost see them.
func (s *Stack) FederationURL(t testing.TB) string {
	t.Helper()
	hs := httptest.NewServer(s.Server.FederationHandler())
	t.Cleanup(hs.Close)
	return hs.URL
}

// Remote is another homeserver as far as a Stack's federation API sees it:
// a TLS listener on loopback that publishes its signing key at
// /_matrix/key/v2/server, and requests signed with that key.
type Remote struct {
	Name string
	Key  keys.Key
	addr string
}

// NewRemote starts a Remote until the test ends, named name, or, when name
// is "", its listener's address (an IP literal with a port that differs
// from run to run). A named Remote is reached through StartFederation's
// federation_hosts.
func NewRemote(t testing.TB, name string) *Remote {
	t.Helper()
	k, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	rm := &Remote{Key: k, Name: name}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_matrix/key/v2/server" {
			http.NotFound(w, r)
			return
		}
		doc, err := keys.ServerKeys(rm.Name, rm.Key, time.Now())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(doc)
	}))
	t.Cleanup(srv.Close)
	rm.addr = srv.Listener.Addr().String()
	if rm.Name == "" {
		rm.Name = rm.addr
	}
	return rm
}

// UserID is the ID of the Remote's user localpart.
func (rm *Remote) UserID(localpart string) string { return "@" + localpart + ":" + rm.Name }

// Do sends a request signed by the Remote to the stack's federation tree at
// base: uri is the path and query as they go on the wire; body, when not
// nil, is sent as JSON.
func (rm *Remote) Do(t testing.TB, base, method, uri string, body any) Reply {
	t.Helper()
	fr := fclient.NewFederationRequest(method, spec.ServerName(rm.Name), ServerName, uri)
	if body != nil {
		if err := fr.SetContent(body); err != nil {
			t.Fatal(err)
		}
	}
	if err := fr.Sign(spec.ServerName(rm.Name), gomatrixserverlib.KeyID(rm.Key.ID), rm.Key.Private); err != nil {
		t.Fatal(err)
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(fr.Content())
	}
	req, err := http.NewRequest(method, base+uri, rd)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := fr.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", signed.Header.Get("Authorization"))
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := Reply{Status: res.StatusCode, Header: res.Header, Raw: raw}
	if err := json.Unmarshal(raw, &r.Body); err != nil {
		t.Fatalf("%s %s: body is not a JSON object: %q", method, uri, raw)
	}
	return r
}
