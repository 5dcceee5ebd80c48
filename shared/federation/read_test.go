package federation_test

import (
	"context"
	"net/http"
	"net/url"
	"reflect"
	"sort"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// The read endpoints other servers call, over the real federation tree:
// requests signed by a fake remote server (servertest.Remote) whose key the
// stack fetches from it, as it would any server's.

var background = context.Background()

// fed is a stack, its federation tree and the remote servers asking it:
// remote.test, stranger.test, and one named by its IP address and port.
type fed struct {
	st                 *servertest.Stack
	url                string
	rm, stranger, byIP *servertest.Remote
}

func start(t *testing.T) fed {
	t.Helper()
	f := fed{rm: servertest.NewRemote(t, "remote.test"), stranger: servertest.NewRemote(t, "stranger.test"), byIP: servertest.NewRemote(t, "")}
	f.st = servertest.StartFederation(t, []*servertest.Remote{f.rm, f.stranger, f.byIP})
	f.url = f.st.FederationURL(t)
	// The stack fetches the remote's key on its first request and reads
	// it from the table after: costs below are of requests after that.
	wantOK(t, "first request", f.get(t, v1+"/publicRooms"))
	return f
}

// get sends a GET signed by the remote.
func (f fed) get(t *testing.T, uri string) servertest.Reply {
	t.Helper()
	return f.rm.Do(t, f.url, "GET", uri, nil)
}

func (f fed) post(t *testing.T, uri string, body any) servertest.Reply {
	t.Helper()
	return f.rm.Do(t, f.url, "POST", uri, body)
}

func wantError(t *testing.T, what string, r servertest.Reply, status int, code string) {
	t.Helper()
	if r.Status != status || r.Body["errcode"] != code {
		t.Errorf("%s: got %d %s, want %d %s", what, r.Status, r.Raw, status, code)
	}
}

func wantEqual(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got %v\nwant %v", what, got, want)
	}
}

func wantOK(t *testing.T, what string, r servertest.Reply) {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("%s: %d %s", what, r.Status, r.Raw)
	}
}

const v1 = "/_matrix/federation/v1"

// TestAuthentication: an unsigned request is 401 before anything else; a
// known path with the wrong method is 405.
func TestAuthentication(t *testing.T) {
	f := start(t)
	for _, uri := range []string{v1 + "/event/$x", v1 + "/query/profile?user_id=%40a%3Aexample.org", v1 + "/publicRooms", v1 + "/state_ids/%21r%3Aexample.org?event_id=%24x"} {
		r := servertest.Call(t, "GET", f.url+uri, "", nil)
		wantError(t, "unsigned GET "+uri, r, http.StatusUnauthorized, "M_UNAUTHORIZED")
	}
	r := servertest.Call(t, "POST", f.url+v1+"/user/keys/query", "", map[string]any{"device_keys": map[string]any{}})
	wantError(t, "unsigned POST /user/keys/query", r, http.StatusUnauthorized, "M_UNAUTHORIZED")
	wantError(t, "PUT /event", f.rm.Do(t, f.url, "PUT", v1+"/event/$x", map[string]any{}), http.StatusMethodNotAllowed, "M_UNRECOGNIZED")
	wantError(t, "GET /get_missing_events", f.get(t, v1+"/get_missing_events/%21r%3Aexample.org"), http.StatusMethodNotAllowed, "M_UNRECOGNIZED")
	wantError(t, "DELETE /publicRooms", f.rm.Do(t, f.url, "DELETE", v1+"/publicRooms", nil), http.StatusMethodNotAllowed, "M_UNRECOGNIZED")
}

func TestQueryProfile(t *testing.T) {
	f := start(t)
	alice := f.st.Member(t, "alice")
	if err := alice.SetDisplayName(background, "Alice"); err != nil {
		t.Fatal(err)
	}
	q := func(params string) servertest.Reply {
		return f.get(t, v1+"/query/profile?"+params)
	}
	r := q("user_id=%40alice%3Aexample.org")
	wantOK(t, "profile", r)
	wantEqual(t, "profile", r.Body, map[string]any{"displayname": "Alice"})
	f.st.CheckCost(t, "query profile", "/query/profile", servertest.Want(2, 2, 0))
	r = q("user_id=%40alice%3Aexample.org&field=displayname")
	wantEqual(t, "displayname", r.Body, map[string]any{"displayname": "Alice"})
	r = q("user_id=%40alice%3Aexample.org&field=avatar_url")
	if r.Status != http.StatusOK || len(r.Body) != 0 {
		t.Errorf("unset avatar_url: %d %s, want 200 {}", r.Status, r.Raw)
	}
	wantError(t, "unknown user", q("user_id=%40nobody%3Aexample.org"), http.StatusNotFound, "M_NOT_FOUND")
	wantError(t, "unknown field", q("user_id=%40alice%3Aexample.org&field=m.tz"), http.StatusNotFound, "M_NOT_FOUND")
	wantError(t, "user of another server", q("user_id=%40alice%3Aother.org"), http.StatusBadRequest, "M_INVALID_PARAM")
	wantError(t, "no user_id", q("field=displayname"), http.StatusBadRequest, "M_MISSING_PARAM")
}

func TestQueryDirectory(t *testing.T) {
	f := start(t)
	alice := f.st.Member(t, "alice")
	room, err := alice.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "lobby"})
	if err != nil {
		t.Fatal(err)
	}
	r := f.get(t, v1+"/query/directory?room_alias="+url.QueryEscape("#lobby:example.org"))
	wantOK(t, "directory", r)
	wantEqual(t, "directory", r.Body, map[string]any{"room_id": string(room.RoomID), "servers": []any{"example.org"}})
	f.st.CheckCost(t, "query directory", "/query/directory", servertest.Want(3, 3, 0))
	wantError(t, "unknown alias", f.get(t, v1+"/query/directory?room_alias="+url.QueryEscape("#none:example.org")), http.StatusNotFound, "M_NOT_FOUND")
	wantError(t, "alias of another server", f.get(t, v1+"/query/directory?room_alias="+url.QueryEscape("#lobby:other.org")), http.StatusBadRequest, "M_INVALID_PARAM")
	wantError(t, "not an alias", f.get(t, v1+"/query/directory?room_alias=lobby"), http.StatusBadRequest, "M_INVALID_PARAM")
	wantError(t, "no alias", f.get(t, v1+"/query/directory"), http.StatusBadRequest, "M_MISSING_PARAM")
}

func TestPublicRooms(t *testing.T) {
	f := start(t)
	alice := f.st.Member(t, "alice")
	lobby, err := alice.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", Name: "Lobby", Topic: "say hello"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Hidden"}); err != nil {
		t.Fatal(err)
	}
	want := []any{map[string]any{"room_id": string(lobby.RoomID), "name": "Lobby", "topic": "say hello",
		"num_joined_members": float64(1), "world_readable": false, "guest_can_join": false, "join_rule": "public"}}
	r := f.get(t, v1+"/publicRooms")
	wantOK(t, "GET publicRooms", r)
	wantEqual(t, "GET publicRooms", r.Body["chunk"], want)
	f.st.CheckCost(t, "GET publicRooms", "/publicRooms", servertest.Want(2, 1.5, 0))
	r = f.post(t, v1+"/publicRooms", map[string]any{"limit": 10, "filter": map[string]any{"generic_search_term": "LOBB"}})
	wantOK(t, "POST publicRooms", r)
	wantEqual(t, "POST publicRooms, a term that matches", r.Body["chunk"], want)
	r = f.post(t, v1+"/publicRooms", map[string]any{"filter": map[string]any{"generic_search_term": "nothing like it"}})
	wantEqual(t, "POST publicRooms, a term that matches nothing", r.Body["chunk"], []any{})
	r = f.post(t, v1+"/publicRooms", map[string]any{"third_party_instance_id": "irc"})
	wantEqual(t, "a third-party network", r.Body["chunk"], []any{})
	wantError(t, "bad limit", f.get(t, v1+"/publicRooms?limit=many"), http.StatusBadRequest, "M_INVALID_PARAM")
	wantError(t, "a body not JSON", f.post(t, v1+"/publicRooms", []any{}), http.StatusBadRequest, "M_BAD_JSON")
}

// TestUserKeys: another server reads a local user's devices and keys and
// claims one-time keys, each handed out once, then the fallback key.
func TestUserKeys(t *testing.T) {
	f := start(t)
	u := f.st.Register(t, "alice")
	deviceKeys := map[string]any{
		"user_id": u.ID, "device_id": u.DeviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"curve25519:" + u.DeviceID: "curvekey", "ed25519:" + u.DeviceID: "edkey"},
		"signatures": map[string]any{u.ID: map[string]string{"ed25519:" + u.DeviceID: "sig"}},
	}
	otk := func(k string) map[string]any {
		return map[string]any{"key": k, "signatures": map[string]any{u.ID: map[string]string{"ed25519:" + u.DeviceID: "sig"}}}
	}
	up := f.st.Do(t, "POST", "/_matrix/client/v3/keys/upload", u.AccessToken, map[string]any{
		"device_keys":   deviceKeys,
		"one_time_keys": map[string]any{"signed_curve25519:AAAA": otk("one"), "signed_curve25519:AAAB": otk("two")},
		"fallback_keys": map[string]any{"signed_curve25519:FFFF": map[string]any{"key": "fallback", "fallback": true, "signatures": map[string]any{}}},
	})
	wantOK(t, "upload", up)

	r := f.get(t, v1+"/user/devices/"+url.PathEscape(u.ID))
	wantOK(t, "user devices", r)
	devices, _ := r.Body["devices"].([]any)
	if r.Body["user_id"] != u.ID || r.Body["stream_id"] != float64(0) || len(devices) != 1 {
		t.Fatalf("user devices: %s", r.Raw)
	}
	dev := devices[0].(map[string]any)
	keys, _ := dev["keys"].(map[string]any)
	if dev["device_id"] != u.DeviceID || keys["device_id"] != u.DeviceID || keys["user_id"] != u.ID {
		t.Errorf("user devices: device %v", dev)
	}
	f.st.CheckCost(t, "user devices", "/user/devices", servertest.Want(4, 4, 0))
	wantError(t, "devices of another server's user", f.get(t, v1+"/user/devices/"+url.PathEscape("@bob:other.org")), http.StatusBadRequest, "M_INVALID_PARAM")
	r = f.get(t, v1+"/user/devices/"+url.PathEscape("@nobody:example.org"))
	if devices, _ := r.Body["devices"].([]any); r.Status != http.StatusOK || devices == nil || len(devices) != 0 {
		t.Errorf("devices of an unknown user: %d %s, want 200 and none", r.Status, r.Raw)
	}

	r = f.post(t, v1+"/user/keys/query", map[string]any{"device_keys": map[string]any{u.ID: []string{}, "@bob:other.org": []string{}}})
	wantOK(t, "keys query", r)
	byUser, _ := r.Body["device_keys"].(map[string]any)
	got, _ := byUser[u.ID].(map[string]any)
	doc, _ := got[u.DeviceID].(map[string]any)
	if len(byUser) != 1 || doc["user_id"] != u.ID || doc["device_id"] != u.DeviceID {
		t.Errorf("keys query: %s", r.Raw)
	}
	f.st.CheckCost(t, "keys query", "/user/keys/query", servertest.Want(3, 3, 0))
	wantError(t, "keys query without device_keys", f.post(t, v1+"/user/keys/query", map[string]any{}), http.StatusBadRequest, "M_BAD_JSON")

	claim := func() map[string]any {
		r := f.post(t, v1+"/user/keys/claim", map[string]any{"one_time_keys": map[string]any{u.ID: map[string]string{u.DeviceID: "signed_curve25519"}}})
		wantOK(t, "claim", r)
		byUser, _ := r.Body["one_time_keys"].(map[string]any)
		byDevice, _ := byUser[u.ID].(map[string]any)
		k, _ := byDevice[u.DeviceID].(map[string]any)
		return k
	}
	var names []string
	for range 2 {
		for name := range claim() {
			names = append(names, name)
		}
	}
	f.st.CheckCost(t, "claim of one key", "/user/keys/claim", servertest.Want(4, 2, 2))
	sort.Strings(names)
	wantEqual(t, "one-time keys claimed", names, []string{"signed_curve25519:AAAA", "signed_curve25519:AAAB"})
	if k := claim(); k["signed_curve25519:FFFF"] == nil {
		t.Errorf("third claim: %v, want the fallback key", k)
	}
	wantError(t, "claim without one_time_keys", f.post(t, v1+"/user/keys/claim", map[string]any{}), http.StatusBadRequest, "M_BAD_JSON")
}

// TestHierarchy: the space and its direct children, those the remote may
// not join listed as inaccessible; a space the remote may not see is 404.
func TestHierarchy(t *testing.T) {
	f := start(t)
	alice := f.st.Member(t, "alice")
	create := func(req *mautrix.ReqCreateRoom) id.RoomID {
		t.Helper()
		resp, err := alice.CreateRoom(background, req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.RoomID
	}
	space := map[string]any{"type": "m.space"}
	root := create(&mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Space", CreationContent: space})
	open := create(&mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Open"})
	closed := create(&mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Closed"})
	secret := create(&mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Secret", CreationContent: space})
	for _, c := range []struct {
		child     id.RoomID
		suggested bool
	}{{open, true}, {closed, false}, {"!elsewhere:other.org", false}} {
		content := map[string]any{"via": []string{"example.org"}, "suggested": c.suggested}
		if _, err := alice.SendStateEvent(background, root, event.StateSpaceChild, string(c.child), content); err != nil {
			t.Fatal(err)
		}
	}
	r := f.get(t, v1+"/hierarchy/"+url.PathEscape(string(root)))
	wantOK(t, "hierarchy", r)
	room, _ := r.Body["room"].(map[string]any)
	children, _ := r.Body["children"].([]any)
	state, _ := room["children_state"].([]any)
	if room["room_id"] != string(root) || room["room_type"] != "m.space" || len(state) != 3 {
		t.Errorf("hierarchy room: %v", room)
	}
	if len(children) != 1 || children[0].(map[string]any)["room_id"] != string(open) || children[0].(map[string]any)["name"] != "Open" {
		t.Errorf("hierarchy children: %v, want %s alone", children, open)
	}
	wantEqual(t, "inaccessible children", r.Body["inaccessible_children"], []any{string(closed)})
	f.st.CheckCost(t, "hierarchy", "/hierarchy", servertest.Want(5, 15, 0))

	r = f.get(t, v1+"/hierarchy/"+url.PathEscape(string(root))+"?suggested_only=true")
	state = r.Body["room"].(map[string]any)["children_state"].([]any)
	children, _ = r.Body["children"].([]any)
	if len(state) != 1 || len(children) != 1 || len(r.Body["inaccessible_children"].([]any)) != 0 {
		t.Errorf("suggested only: %s", r.Raw)
	}
	wantError(t, "a space the remote may not join", f.get(t, v1+"/hierarchy/"+url.PathEscape(string(secret))), http.StatusNotFound, "M_NOT_FOUND")
	wantError(t, "an unknown room", f.get(t, v1+"/hierarchy/"+url.PathEscape("!nope:example.org")), http.StatusNotFound, "M_NOT_FOUND")
	wantError(t, "bad suggested_only", f.get(t, v1+"/hierarchy/"+url.PathEscape(string(root))+"?suggested_only=yes"), http.StatusBadRequest, "M_INVALID_PARAM")
}
