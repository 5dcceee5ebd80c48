package roomsapi_test

import (
	"go/build"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

const module = "github.com/cirrus-matrix/cirrus/"

// TestEngineKnowsNoHTTP: the room engine imports neither net/http nor,
// through any package of this module, httpapi or accounts (the HTTP
// caller). Only the client API does.
func TestEngineKnowsNoHTTP(t *testing.T) {
	forbidden := map[string]bool{module + "shared/httpapi": true, module + "shared/accounts": true}
	seen := map[string]bool{}
	var walk func(path string, via []string)
	walk = func(path string, via []string) {
		if seen[path] {
			return
		}
		seen[path] = true
		pkg, err := build.ImportDir(filepath.Join("..", "..", strings.TrimPrefix(path, module)), 0)
		if err != nil {
			t.Fatalf("read %s: %v", path, err)
		}
		for _, imp := range pkg.Imports {
			chain := append(via[:len(via):len(via)], imp)
			if forbidden[imp] || (imp == "net/http" && path == module+"shared/rooms") {
				t.Errorf("the engine reaches %s: %s", imp, strings.Join(chain, " -> "))
			}
			if strings.HasPrefix(imp, module) {
				walk(imp, chain)
			}
		}
	}
	walk(module+"shared/rooms", []string{module + "shared/rooms"})
	if !seen[module+"shared/events"] {
		t.Fatalf("walked %v, not the engine's imports", seen)
	}
}

// TestBadRequests: what the client API reads from a request is checked
// before the engine is asked, and answered with the error the spec names;
// the engine's refusals come out with their Matrix errors; nothing refused
// reaches the timeline.
func TestBadRequests(t *testing.T) {
	st := servertest.Start(t)
	alice, bob := st.Register(t, "alice"), st.Register(t, "bob")
	r := st.Do(t, "POST", "/_matrix/client/v3/createRoom", alice.AccessToken, map[string]any{"room_alias_name": "taken"})
	room, _ := r.Body["room_id"].(string)
	if r.Status != http.StatusOK || room == "" {
		t.Fatalf("createRoom: %d %s", r.Status, r.Raw)
	}
	rooms := "/_matrix/client/v3/rooms/" + url.PathEscape(room)
	long := strings.Repeat("x", 300)
	msg := map[string]any{"msgtype": "m.text", "body": "refused"}
	unknown := "!nosuchroom:" + st.Name()
	for _, c := range []struct {
		name, method, path string
		token              string
		body               any
		status             int
		code               string
	}{
		{"room ID without sigil", "PUT", "/_matrix/client/v3/rooms/notaroom/send/m.room.message/t1", alice.AccessToken, msg, 400, "M_INVALID_PARAM"},
		{"event type over 255 bytes", "PUT", rooms + "/send/" + long + "/t2", alice.AccessToken, msg, 413, "M_TOO_LARGE"},
		{"txnId over 255 bytes", "PUT", rooms + "/send/m.room.message/" + long, alice.AccessToken, msg, 400, "M_INVALID_PARAM"},
		{"content not an object", "PUT", rooms + "/send/m.room.message/t3", alice.AccessToken, "[1]", 400, "M_BAD_JSON"},
		{"sender not in the room", "PUT", rooms + "/send/m.room.message/t4", bob.AccessToken, msg, 403, "M_FORBIDDEN"},
		{"redact a bad event ID", "PUT", rooms + "/redact/notanevent/t5", alice.AccessToken, map[string]any{}, 400, "M_INVALID_PARAM"},
		{"kick without user_id", "POST", rooms + "/kick", alice.AccessToken, map[string]any{"reason": "x"}, 400, "M_MISSING_PARAM"},
		{"upgrade without new_version", "POST", rooms + "/upgrade", alice.AccessToken, map[string]any{}, 400, "M_MISSING_PARAM"},
		{"upgrade to an unknown version", "POST", rooms + "/upgrade", alice.AccessToken, map[string]any{"new_version": "99"}, 400, "M_UNSUPPORTED_ROOM_VERSION"},
		{"messages dir x", "GET", rooms + "/messages?dir=x", alice.AccessToken, nil, 400, "M_INVALID_PARAM"},
		{"messages negative limit", "GET", rooms + "/messages?limit=-1", alice.AccessToken, nil, 400, "M_INVALID_PARAM"},
		{"messages filter not JSON", "GET", rooms + "/messages?filter=%7Bnope", alice.AccessToken, nil, 400, "M_INVALID_PARAM"},
		{"threads limit 0", "GET", "/_matrix/client/v1/rooms/" + url.PathEscape(room) + "/threads?limit=0", alice.AccessToken, nil, 400, "M_INVALID_PARAM"},
		{"threads include mine", "GET", "/_matrix/client/v1/rooms/" + url.PathEscape(room) + "/threads?include=mine", alice.AccessToken, nil, 400, "M_INVALID_PARAM"},
		{"members membership joined", "GET", rooms + "/members?membership=joined", alice.AccessToken, nil, 400, "M_INVALID_PARAM"},
		{"state never set", "GET", rooms + "/state/m.room.topic", alice.AccessToken, nil, 404, "M_NOT_FOUND"},
		{"event ID without sigil", "GET", rooms + "/event/notanevent", alice.AccessToken, nil, 400, "M_INVALID_PARAM"},
		{"listing visibility secret", "PUT", "/_matrix/client/v3/directory/list/room/" + url.PathEscape(room), alice.AccessToken, map[string]any{"visibility": "secret"}, 400, "M_INVALID_PARAM"},
		{"listing of an unknown room", "GET", "/_matrix/client/v3/directory/list/room/" + url.PathEscape(unknown), "", nil, 404, "M_NOT_FOUND"},
		{"listing set by a non-member", "PUT", "/_matrix/client/v3/directory/list/room/" + url.PathEscape(room), bob.AccessToken, map[string]any{"visibility": "public"}, 403, "M_FORBIDDEN"},
		{"join an unknown local alias", "POST", "/_matrix/client/v3/join/" + url.PathEscape("#nowhere:"+st.Name()), bob.AccessToken, map[string]any{}, 404, "M_NOT_FOUND"},
		{"join neither ID nor alias", "POST", "/_matrix/client/v3/join/nothing", bob.AccessToken, map[string]any{}, 400, "M_INVALID_PARAM"},
		{"createRoom with invite_3pid", "POST", "/_matrix/client/v3/createRoom", alice.AccessToken, map[string]any{"invite_3pid": []any{map[string]any{}}}, 400, "M_UNRECOGNIZED"},
		{"createRoom with a taken alias", "POST", "/_matrix/client/v3/createRoom", alice.AccessToken, map[string]any{"room_alias_name": "taken"}, 400, "M_ROOM_IN_USE"},
		{"directory alias taken", "PUT", "/_matrix/client/v3/directory/room/" + url.PathEscape("#taken:"+st.Name()), alice.AccessToken, map[string]any{"room_id": room}, 409, "M_ROOM_IN_USE"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := st.Do(t, c.method, c.path, c.token, c.body)
			if r.Status != c.status || r.Body["errcode"] != c.code {
				t.Fatalf("%s %s: %d %s, want %d %s", c.method, c.path, r.Status, r.Raw, c.status, c.code)
			}
		})
	}
	r = st.Do(t, "GET", rooms+"/messages?dir=b&limit=50", alice.AccessToken, nil)
	chunk, _ := r.Body["chunk"].([]any)
	if r.Status != http.StatusOK || len(chunk) == 0 {
		t.Fatalf("messages: %d %s", r.Status, r.Raw)
	}
	for _, ev := range chunk {
		if typ := ev.(map[string]any)["type"]; typ == "m.room.message" || typ == "m.room.tombstone" {
			t.Fatalf("a refused request reached the timeline: %v", ev)
		}
	}
}
