package server_test

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// step is one request of a client's walk-through: what it sends, the
// statuses the spec allows for it here, and what its answer must hold.
type step struct {
	name   string
	method string
	path   string
	body   any
	// allowed lists the statuses the spec calls for besides 200: a 404
	// for account data never written, say. Anything else fails.
	allowed []int
	check   func(r servertest.Reply) error
}

// TestElementFirstRun walks the calls Element Web makes on its first run
// against a new server, in its order: discovery, versions, login flows,
// login, capabilities, push rules, filter upload, initial sync, the calls
// made beside it, the room directory, a space's hierarchy, the user
// directory, search and threads. Each must answer 200 unless the spec calls
// for another status, and answer what Element reads of it.
func TestElementFirstRun(t *testing.T) {
	s := servertest.Start(t)
	alice := s.Register(t, "alice")
	bob := s.Register(t, "bob")
	space, room := firstRunRooms(t, s, alice, bob)

	var token, userID, filterID, since string
	steps := []step{
		{name: "well-known", method: "GET", path: "/.well-known/matrix/client", check: func(r servertest.Reply) error {
			return want(r, `m.homeserver`, "base_url")
		}},
		{name: "versions", method: "GET", path: "/_matrix/client/versions", check: func(r servertest.Reply) error {
			return want(r, "versions", "v1.11")
		}},
		{name: "login flows", method: "GET", path: v3 + "/login", check: func(r servertest.Reply) error {
			return want(r, "flows", "m.login.password")
		}},
		{name: "login", method: "POST", path: v3 + "/login", body: map[string]any{
			"type":                        "m.login.password",
			"identifier":                  map[string]any{"type": "m.id.user", "user": "bob"},
			"password":                    "correct horse battery staple",
			"initial_device_display_name": "app.element.io: Firefox on Linux",
		}, check: func(r servertest.Reply) error {
			token, _ = r.Body["access_token"].(string)
			userID, _ = r.Body["user_id"].(string)
			if token == "" || userID != bob.ID {
				return fmt.Errorf("no access token for %s", bob.ID)
			}
			return nil
		}},
		{name: "whoami", method: "GET", path: v3 + "/account/whoami"},
		{name: "capabilities", method: "GET", path: v3 + "/capabilities", check: func(r servertest.Reply) error {
			return want(r, "capabilities", "m.room_versions")
		}},
		{name: "push rules", method: "GET", path: v3 + "/pushrules/", check: func(r servertest.Reply) error {
			return want(r, "global", ".m.rule.master")
		}},
		{name: "filter upload", method: "POST", path: v3 + "/user/{me}/filter", body: map[string]any{
			"room": map[string]any{"state": map[string]any{"lazy_load_members": true}, "timeline": map[string]any{"limit": 20}},
		}, check: func(r servertest.Reply) error {
			filterID, _ = r.Body["filter_id"].(string)
			if filterID == "" {
				return fmt.Errorf("no filter_id")
			}
			return nil
		}},
		{name: "initial sync", method: "GET", path: v3 + "/sync?timeout=0&filter={filter}", check: func(r servertest.Reply) error {
			since, _ = r.Body["next_batch"].(string)
			if since == "" {
				return fmt.Errorf("no next_batch")
			}
			return want(r, "rooms", room, space)
		}},
		{name: "profile", method: "GET", path: v3 + "/profile/{me}"},
		{name: "turn server", method: "GET", path: v3 + "/voip/turnServer"},
		{name: "third-party protocols", method: "GET", path: v3 + "/thirdparty/protocols"},
		{name: "pushers", method: "GET", path: v3 + "/pushers", check: func(r servertest.Reply) error {
			return want(r, "pushers")
		}},
		{name: "devices", method: "GET", path: v3 + "/devices", check: func(r servertest.Reply) error {
			return want(r, "devices", "app.element.io")
		}},
		{name: "presence", method: "GET", path: v3 + "/presence/{me}/status", check: func(r servertest.Reply) error {
			return want(r, "presence")
		}},
		{name: "notifications", method: "GET", path: v3 + "/notifications?limit=20", check: func(r servertest.Reply) error {
			return want(r, "notifications")
		}},
		{name: "analytics setting", method: "GET", path: v3 + "/user/{me}/account_data/im.vector.analytics", allowed: []int{404}},
		{name: "key backup", method: "GET", path: v3 + "/room_keys/version", allowed: []int{404}},
		{name: "secret storage key", method: "GET", path: v3 + "/user/{me}/account_data/m.secret_storage.default_key", allowed: []int{404}},
		{name: "keys query", method: "POST", path: v3 + "/keys/query", body: map[string]any{
			"device_keys": map[string]any{bob.ID: []string{}},
		}, check: func(r servertest.Reply) error {
			return want(r, "device_keys")
		}},
		{name: "incremental sync", method: "GET", path: v3 + "/sync?timeout=0&filter={filter}&since={since}"},
		{name: "room directory", method: "POST", path: v3 + "/publicRooms", body: map[string]any{"limit": 20}, check: func(r servertest.Reply) error {
			return want(r, "chunk", room)
		}},
		{name: "space hierarchy", method: "GET", path: "/_matrix/client/v1/rooms/" + url.PathEscape(space) + "/hierarchy?limit=20", check: func(r servertest.Reply) error {
			return want(r, "rooms", space, room)
		}},
		{name: "room summary", method: "GET", path: "/_matrix/client/v1/room_summary/" + url.PathEscape(room), check: func(r servertest.Reply) error {
			return want(r, "room_id", "Lounge")
		}},
		{name: "user directory", method: "POST", path: v3 + "/user_directory/search", body: map[string]any{"search_term": "ali", "limit": 50}, check: func(r servertest.Reply) error {
			return want(r, "results", alice.ID)
		}},
		{name: "search", method: "POST", path: v3 + "/search", body: map[string]any{
			"search_categories": map[string]any{"room_events": map[string]any{
				"search_term": "welcome", "filter": map[string]any{"limit": 10}, "order_by": "recent",
				"event_context": map[string]any{"before_limit": 1, "after_limit": 1, "include_profile": true},
			}},
		}, check: func(r servertest.Reply) error {
			return want(r, "search_categories", "welcome to the lounge")
		}},
		{name: "threads", method: "GET", path: "/_matrix/client/v1/rooms/" + url.PathEscape(room) + "/threads?limit=10&include=all", check: func(r servertest.Reply) error {
			return want(r, "chunk", "a thread to follow")
		}},
	}
	for _, st := range steps {
		path := strings.NewReplacer("{me}", url.PathEscape(userID), "{filter}", url.QueryEscape(filterID),
			"{since}", url.QueryEscape(since)).Replace(st.path)
		r := s.Do(t, st.method, path, token, st.body)
		if r.Status != 200 && !slices.Contains(st.allowed, r.Status) {
			t.Fatalf("%s: %s %s: %d %s", st.name, st.method, path, r.Status, r.Raw)
		}
		if r.Status == 200 && st.check != nil {
			if err := st.check(r); err != nil {
				t.Fatalf("%s: %s %s: %v in %s", st.name, st.method, path, err, r.Raw)
			}
		}
	}
}

// firstRunRooms makes what a new user of a server finds: alice's public
// space with a public room in it, bob joined to both, a message with a
// thread under it.
func firstRunRooms(t *testing.T, s *servertest.Stack, alice, bob servertest.User) (space, room string) {
	t.Helper()
	mustOK := func(r servertest.Reply) servertest.Reply {
		t.Helper()
		if r.Status != 200 {
			t.Fatalf("setup: %d %s", r.Status, r.Raw)
		}
		return r
	}
	space, _ = mustOK(s.Do(t, "POST", v3+"/createRoom", alice.AccessToken, map[string]any{
		"preset": "public_chat", "name": "Home", "visibility": "public",
		"creation_content": map[string]any{"type": "m.space"},
	})).Body["room_id"].(string)
	room, _ = mustOK(s.Do(t, "POST", v3+"/createRoom", alice.AccessToken, map[string]any{
		"preset": "public_chat", "name": "Lounge", "visibility": "public",
	})).Body["room_id"].(string)
	mustOK(s.Do(t, "PUT", v3+"/rooms/"+url.PathEscape(space)+"/state/m.space.child/"+url.PathEscape(room), alice.AccessToken,
		map[string]any{"via": []string{servertest.ServerName}, "suggested": true}))
	for _, id := range []string{space, room} {
		mustOK(s.Do(t, "POST", v3+"/join/"+url.PathEscape(id), bob.AccessToken, map[string]any{}))
	}
	root, _ := mustOK(s.Do(t, "PUT", v3+"/rooms/"+url.PathEscape(room)+"/send/m.room.message/1", alice.AccessToken,
		map[string]any{"msgtype": "m.text", "body": "welcome to the lounge"})).Body["event_id"].(string)
	mustOK(s.Do(t, "PUT", v3+"/rooms/"+url.PathEscape(room)+"/send/m.room.message/2", alice.AccessToken, map[string]any{
		"msgtype": "m.text", "body": "a thread to follow",
		"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root},
	}))
	return space, room
}

// want checks that the answer has the top-level field and that its text
// holds each of the strings.
func want(r servertest.Reply, field string, texts ...string) error {
	if _, ok := r.Body[field]; !ok {
		return fmt.Errorf("no %q", field)
	}
	for _, s := range texts {
		if !strings.Contains(string(r.Raw), s) {
			return fmt.Errorf("%q not found", s)
		}
	}
	return nil
}
