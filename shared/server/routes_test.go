package server_test

import (
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

const (
	r0 = "/_matrix/client/r0"
	v3 = "/_matrix/client/v3"
)

// TestClientHandler_R0 drives the real client tree through the legacy r0
// paths older clients such as Hydrogen call: each answers as its v3 path
// does, and an r0 path with no v3 route is 404 M_UNRECOGNIZED.
func TestClientHandler_R0(t *testing.T) {
	s := servertest.Start(t)
	alice := s.Register(t, "alice")

	flows := s.Do(t, "GET", r0+"/login", "", nil)
	if want := s.Do(t, "GET", v3+"/login", "", nil); flows.Status != 200 || !reflect.DeepEqual(flows.Body, want.Body) {
		t.Fatalf("GET r0/login: %d %s; v3 answers %d %s", flows.Status, flows.Raw, want.Status, want.Raw)
	}

	login := s.Do(t, "POST", r0+"/login", "", map[string]any{
		"type":       "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": "alice"},
		"password":   "correct horse battery staple",
	})
	token, _ := login.Body["access_token"].(string)
	if login.Status != 200 || token == "" || login.Body["user_id"] != alice.ID {
		t.Fatalf("POST r0/login: %d %s", login.Status, login.Raw)
	}

	sync := s.Do(t, "GET", r0+"/sync?timeout=0", token, nil)
	if sync.Status != 200 || sync.Body["next_batch"] == nil {
		t.Fatalf("GET r0/sync: %d %s", sync.Status, sync.Raw)
	}
	if got := s.LastRequest(t); got.Route != "GET "+v3+"/sync" || got.Path != r0+"/sync" {
		t.Fatalf("log line of r0/sync: %+v, want the v3 route and the r0 path", got)
	}

	created := s.Do(t, "POST", r0+"/createRoom", token, map[string]any{})
	roomID, _ := created.Body["room_id"].(string)
	if created.Status != 200 || roomID == "" {
		t.Fatalf("POST r0/createRoom: %d %s", created.Status, created.Raw)
	}
	room := "/rooms/" + url.PathEscape(roomID)
	sent := s.Do(t, "PUT", r0+room+"/send/m.room.message/t1", token, map[string]any{"msgtype": "m.text", "body": "hello"})
	eventID, _ := sent.Body["event_id"].(string)
	if sent.Status != 200 || eventID == "" {
		t.Fatalf("PUT r0 send: %d %s", sent.Status, sent.Raw)
	}
	// The same transaction through v3 is the same request.
	if again := s.Do(t, "PUT", v3+room+"/send/m.room.message/t1", token, map[string]any{"msgtype": "m.text", "body": "hello"}); again.Body["event_id"] != eventID {
		t.Fatalf("PUT v3 send of the r0 transaction: %d %s, want event %s", again.Status, again.Raw, eventID)
	}

	msgs := s.Do(t, "GET", r0+room+"/messages?dir=b&limit=5", token, nil)
	want := s.Do(t, "GET", v3+room+"/messages?dir=b&limit=5", token, nil)
	if msgs.Status != 200 || !reflect.DeepEqual(withoutAge(msgs.Body), withoutAge(want.Body)) {
		t.Fatalf("GET r0 messages: %d %s; v3 answers %d %s", msgs.Status, msgs.Raw, want.Status, want.Raw)
	}
	if chunk, _ := msgs.Body["chunk"].([]any); len(chunk) == 0 || chunk[0].(map[string]any)["event_id"] != eventID {
		t.Fatalf("GET r0 messages: chunk does not begin with %s: %s", eventID, msgs.Raw)
	}

	for _, tc := range []struct{ name, method, path string }{
		{"unknown", "GET", r0 + "/nonexistent"},
		// Relations began under v1 and never had an r0 path.
		{"v1 endpoint", "GET", r0 + room + "/relations/" + url.PathEscape(eventID)},
		{"versions", "GET", r0 + "/versions"},
	} {
		r := s.Do(t, tc.method, tc.path, token, nil)
		if r.Status != 404 || r.Body["errcode"] != "M_UNRECOGNIZED" {
			t.Errorf("%s: %s %s: %d %s, want 404 M_UNRECOGNIZED", tc.name, tc.method, tc.path, r.Status, r.Raw)
		}
	}
}

// withoutAge returns a /messages answer with the events' unsigned ages
// removed, which differ from one request to the next.
func withoutAge(body map[string]any) map[string]any {
	chunk, _ := body["chunk"].([]any)
	for _, ev := range chunk {
		if unsigned, ok := ev.(map[string]any)["unsigned"].(map[string]any); ok {
			delete(unsigned, "age")
		}
	}
	return body
}

// TestHandlers_WrongMethod checks that a known path asked with a method it
// does not serve is 405 M_UNRECOGNIZED with Allow on every tree: client
// (v3 and r0), federation, key and media; media has no r0 routes, so those
// paths are 404 M_UNRECOGNIZED, in JSON too.
func TestHandlers_WrongMethod(t *testing.T) {
	s := servertest.Start(t)
	fed := httptest.NewServer(s.Server.FederationHandler())
	t.Cleanup(fed.Close)

	for _, tc := range []struct {
		name, base, method, path string
		status                   int
		allow                    string
	}{
		{"client", s.URL, "POST", "/_matrix/client/versions", 405, "GET, HEAD"},
		{"client v3", s.URL, "DELETE", v3 + "/login", 405, "GET, HEAD, POST"},
		{"client r0", s.URL, "POST", r0 + "/sync", 405, "GET, HEAD"},
		{"client unknown", s.URL, "GET", v3 + "/nonexistent", 404, ""},
		{"media", s.URL, "DELETE", "/_matrix/media/v3/config", 405, "GET, HEAD"},
		{"media r0", s.URL, "DELETE", "/_matrix/media/r0/config", 405, "GET, HEAD"},
		{"federation", fed.URL, "POST", "/_matrix/federation/v1/version", 405, "GET, HEAD"},
		{"federation unknown", fed.URL, "GET", "/_matrix/federation/v1/nonexistent", 404, ""},
		{"key", fed.URL, "PUT", "/_matrix/key/v2/server", 405, "GET, HEAD"},
		{"key with key ID", fed.URL, "POST", "/_matrix/key/v2/server/ed25519:a", 405, "GET, HEAD"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body any
			if tc.method != "GET" && tc.method != "DELETE" {
				body = map[string]any{}
			}
			r := servertest.Call(t, tc.method, tc.base+tc.path, "", body)
			if r.Status != tc.status || r.Body["errcode"] != "M_UNRECOGNIZED" {
				t.Fatalf("%s %s: %d %s, want %d M_UNRECOGNIZED", tc.method, tc.path, r.Status, r.Raw, tc.status)
			}
			if got := r.Header.Get("Allow"); got != tc.allow {
				t.Fatalf("%s %s: Allow %q, want %q", tc.method, tc.path, got, tc.allow)
			}
			if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Fatalf("%s %s: Content-Type %q", tc.method, tc.path, ct)
			}
		})
	}
}
