package spaces_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

var bg = context.Background()

// tree is the space the hierarchy tests walk, made by alice:
//
//	space (public space, #space:example.org)
//	├── a         order "a", suggested, public room
//	├── sub       order "b", public space
//	│   ├── subsub  order "1", public space
//	│   │   ├── deep    order "a", public room (depth 3)
//	│   │   └── space   order "b": a loop back to the root
//	│   └── b       order "2", suggested, public room
//	├── private   order "c", suggested, invite-only: bob may not see it
//	├── restricted order "d", restricted to members of space
//	├── !remote:elsewhere.org  order "e": held by another server
//	└── gone      a child event without via: no child at all
type tree struct {
	space, a, sub, subsub, deep, b, private, restricted, gone id.RoomID
}

const remote = id.RoomID("!remote:elsewhere.org")

func makeTree(t *testing.T, alice servertest.Member) tree {
	t.Helper()
	space := map[string]any{"type": "m.space"}
	tr := tree{
		space:   create(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Space", Topic: "the root", CreationContent: space, RoomAliasName: "space"}),
		a:       create(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "A"}),
		sub:     create(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Sub", CreationContent: space}),
		subsub:  create(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "SubSub", CreationContent: space}),
		deep:    create(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Deep"}),
		b:       create(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "B"}),
		private: create(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Private"}),
		gone:    create(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Gone"}),
	}
	tr.restricted = create(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Restricted",
		InitialState: []*event.Event{{Type: event.StateJoinRules, StateKey: ptr(""), Content: event.Content{Raw: map[string]any{
			"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": tr.space}},
		}}}}})
	link := func(parent, child id.RoomID, content map[string]any) {
		t.Helper()
		if _, err := alice.SendStateEvent(bg, parent, event.StateSpaceChild, string(child), content); err != nil {
			t.Fatalf("link %s to %s: %v", child, parent, err)
		}
	}
	via := []string{"example.org"}
	link(tr.space, tr.a, map[string]any{"via": via, "order": "a", "suggested": true})
	link(tr.space, tr.sub, map[string]any{"via": via, "order": "b"})
	link(tr.space, tr.private, map[string]any{"via": via, "order": "c", "suggested": true})
	link(tr.space, tr.restricted, map[string]any{"via": via, "order": "d"})
	link(tr.space, remote, map[string]any{"via": []string{"elsewhere.org"}, "order": "e"})
	link(tr.space, tr.gone, map[string]any{})
	link(tr.sub, tr.subsub, map[string]any{"via": via, "order": "1"})
	link(tr.sub, tr.b, map[string]any{"via": via, "order": "2", "suggested": true})
	link(tr.subsub, tr.deep, map[string]any{"via": via, "order": "a"})
	link(tr.subsub, tr.space, map[string]any{"via": via, "order": "b"})
	return tr
}

func ptr(s string) *string { return &s }

func create(t *testing.T, u servertest.Member, req *mautrix.ReqCreateRoom) id.RoomID {
	t.Helper()
	resp, err := u.CreateRoom(bg, req)
	if err != nil {
		t.Fatalf("createRoom by %s: %v", u.ID, err)
	}
	return resp.RoomID
}

// hierarchyRoom is a room of a hierarchy page, decoded from the wire.
type hierarchyRoom struct {
	RoomID         string   `json:"room_id"`
	Name           string   `json:"name"`
	Topic          string   `json:"topic"`
	CanonicalAlias string   `json:"canonical_alias"`
	Joined         int      `json:"num_joined_members"`
	JoinRule       string   `json:"join_rule"`
	WorldReadable  bool     `json:"world_readable"`
	GuestCanJoin   bool     `json:"guest_can_join"`
	RoomType       string   `json:"room_type"`
	Encryption     string   `json:"encryption"`
	RoomVersion    string   `json:"room_version"`
	AllowedRoomIDs []string `json:"allowed_room_ids"`
	Membership     string   `json:"membership"`
	ChildrenState  []struct {
		Type           string         `json:"type"`
		StateKey       string         `json:"state_key"`
		Sender         string         `json:"sender"`
		OriginServerTS int64          `json:"origin_server_ts"`
		Content        map[string]any `json:"content"`
	} `json:"children_state"`
}

type hierarchyPage struct {
	Rooms     []hierarchyRoom `json:"rooms"`
	NextBatch string          `json:"next_batch"`
}

func hierarchy(t *testing.T, st *servertest.Stack, u servertest.User, room id.RoomID, query url.Values) (hierarchyPage, servertest.Reply) {
	t.Helper()
	path := "/_matrix/client/v1/rooms/" + url.PathEscape(string(room)) + "/hierarchy"
	if len(query) > 0 {
		path += "?" + query.Encode()
	}
	r := st.Do(t, "GET", path, u.AccessToken, nil)
	var page hierarchyPage
	if r.Status == http.StatusOK {
		if err := json.Unmarshal(r.Raw, &page); err != nil {
			t.Fatalf("hierarchy page: %v: %s", err, r.Raw)
		}
	}
	return page, r
}

func ids(rooms []hierarchyRoom) []string {
	out := []string{}
	for _, r := range rooms {
		out = append(out, r.RoomID)
	}
	return out
}

func strs(rs ...id.RoomID) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, string(r))
	}
	return out
}

func wantEqual(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got %v\nwant %v", what, got, want)
	}
}

func wantError(t *testing.T, what string, r servertest.Reply, status int, code string) {
	t.Helper()
	if r.Status != status || r.Body["errcode"] != code {
		t.Fatalf("%s: got %d %s, want %d %s", what, r.Status, r.Raw, status, code)
	}
}

// TestHierarchy walks a space three deep: depth first, children in their
// order, each room once, rooms the user may not see left out with their
// child events kept, a restricted room shown once the user is in the room
// it allows.
func TestHierarchy(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	bob := st.Member(t, "bob")
	tr := makeTree(t, alice)

	// Bob is in no room: the restricted room is hidden from him.
	page, r := hierarchy(t, st, bob.User, tr.space, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("hierarchy: %d %s", r.Status, r.Raw)
	}
	wantEqual(t, "rooms before bob joins", ids(page.Rooms), strs(tr.space, tr.a, tr.sub, tr.subsub, tr.deep, tr.b))
	wantEqual(t, "next_batch of a whole walk", page.NextBatch, "")

	if _, err := bob.JoinRoomByID(bg, tr.space); err != nil {
		t.Fatal(err)
	}
	page, _ = hierarchy(t, st, bob.User, tr.space, nil)
	wantEqual(t, "rooms", ids(page.Rooms), strs(tr.space, tr.a, tr.sub, tr.subsub, tr.deep, tr.b, tr.restricted))

	root := page.Rooms[0]
	var children []string
	for _, c := range root.ChildrenState {
		children = append(children, c.StateKey)
		if c.Type != "m.space.child" || c.Sender != alice.ID || c.OriginServerTS <= 0 || c.Content["via"] == nil {
			t.Errorf("child event %+v: want an m.space.child from %s with origin_server_ts and via", c, alice.ID)
		}
	}
	// The private and the remote room keep their child events; the one
	// without via is none.
	wantEqual(t, "children of the root", children, strs(tr.a, tr.sub, tr.private, tr.restricted, remote))
	wantEqual(t, "the root's fields", []any{root.Name, root.Topic, root.CanonicalAlias, root.Joined, root.JoinRule, root.WorldReadable, root.GuestCanJoin, root.RoomType, root.RoomVersion},
		[]any{"Space", "the root", "#space:example.org", 2, "public", false, false, "m.space", "12"})
	if page.Rooms[1].ChildrenState == nil || len(page.Rooms[1].ChildrenState) != 0 {
		t.Errorf("children_state of a room that is no space: %v, want []", page.Rooms[1].ChildrenState)
	}
	last := page.Rooms[len(page.Rooms)-1]
	wantEqual(t, "the restricted room", []any{last.JoinRule, last.AllowedRoomIDs}, []any{"restricted", strs(tr.space)})

	// Through mautrix, the client library.
	resp, err := bob.Hierarchy(bg, tr.space, &mautrix.ReqHierarchy{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range resp.Rooms {
		got = append(got, string(c.RoomID))
	}
	wantEqual(t, "rooms through mautrix", got, strs(tr.space, tr.a, tr.sub, tr.subsub, tr.deep, tr.b, tr.restricted))

	// Alice, a member of every room, sees the private room too.
	page, _ = hierarchy(t, st, alice.User, tr.space, nil)
	wantEqual(t, "alice's rooms", ids(page.Rooms), strs(tr.space, tr.a, tr.sub, tr.subsub, tr.deep, tr.b, tr.private, tr.restricted))

	for _, tc := range []struct {
		name  string
		query url.Values
		want  []string
	}{
		{"max_depth 0", url.Values{"max_depth": {"0"}}, strs(tr.space)},
		{"max_depth 1", url.Values{"max_depth": {"1"}}, strs(tr.space, tr.a, tr.sub, tr.restricted)},
		{"max_depth 2", url.Values{"max_depth": {"2"}}, strs(tr.space, tr.a, tr.sub, tr.subsub, tr.b, tr.restricted)},
		// sub is not suggested, so b below it is not reached.
		{"suggested_only", url.Values{"suggested_only": {"true"}}, strs(tr.space, tr.a)},
		{"suggested_only false", url.Values{"suggested_only": {"false"}}, strs(tr.space, tr.a, tr.sub, tr.subsub, tr.deep, tr.b, tr.restricted)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			page, r := hierarchy(t, st, bob.User, tr.space, tc.query)
			if r.Status != http.StatusOK {
				t.Fatalf("%d %s", r.Status, r.Raw)
			}
			wantEqual(t, "rooms", ids(page.Rooms), tc.want)
		})
	}
	page, _ = hierarchy(t, st, bob.User, tr.space, url.Values{"suggested_only": {"true"}})
	children = nil
	for _, c := range page.Rooms[0].ChildrenState {
		children = append(children, c.StateKey)
	}
	wantEqual(t, "suggested children of the root", children, strs(tr.a, tr.private))
	page, _ = hierarchy(t, st, bob.User, tr.space, url.Values{"max_depth": {"1"}})
	children = nil
	for _, c := range page.Rooms[2].ChildrenState {
		children = append(children, c.StateKey)
	}
	wantEqual(t, "children of sub at the depth limit", children, strs(tr.subsub, tr.b))

	// A subspace is a root of its own.
	page, _ = hierarchy(t, st, bob.User, tr.subsub, nil)
	wantEqual(t, "rooms below subsub", ids(page.Rooms), strs(tr.subsub, tr.deep, tr.space, tr.a, tr.sub, tr.b, tr.restricted))
}

// TestHierarchy_Pages pages through the walk with every limit: each room
// once, in the order of the whole walk, and the last page without
// next_batch.
func TestHierarchy_Pages(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	bob := st.Member(t, "bob")
	tr := makeTree(t, alice)
	if _, err := bob.JoinRoomByID(bg, tr.space); err != nil {
		t.Fatal(err)
	}
	whole := strs(tr.space, tr.a, tr.sub, tr.subsub, tr.deep, tr.b, tr.restricted)
	for limit := 1; limit <= len(whole); limit++ {
		var got []string
		from := ""
		for pages := 0; ; pages++ {
			if pages > len(whole) {
				t.Fatalf("limit %d: more pages than rooms", limit)
			}
			resp, err := bob.Hierarchy(bg, tr.space, &mautrix.ReqHierarchy{Limit: limit, From: from})
			if err != nil {
				t.Fatalf("limit %d, page %d: %v", limit, pages, err)
			}
			if len(resp.Rooms) > limit {
				t.Fatalf("limit %d: a page of %d rooms", limit, len(resp.Rooms))
			}
			for _, c := range resp.Rooms {
				got = append(got, string(c.RoomID))
			}
			if resp.NextBatch == "" {
				break
			}
			from = resp.NextBatch
		}
		wantEqual(t, "rooms of every page", got, whole)
	}

	// A token is for the walk it came from.
	first, _ := hierarchy(t, st, bob.User, tr.space, url.Values{"limit": {"2"}, "max_depth": {"2"}})
	if first.NextBatch == "" {
		t.Fatal("no next_batch after a page of 2")
	}
	again, _ := hierarchy(t, st, bob.User, tr.space, url.Values{"limit": {"2"}, "max_depth": {"2"}, "from": {first.NextBatch}})
	wantEqual(t, "second page", ids(again.Rooms), strs(tr.sub, tr.subsub))
	// Asked again, the same token gives the same page.
	again, _ = hierarchy(t, st, bob.User, tr.space, url.Values{"limit": {"2"}, "max_depth": {"2"}, "from": {first.NextBatch}})
	wantEqual(t, "second page asked again", ids(again.Rooms), strs(tr.sub, tr.subsub))
	for _, tc := range []struct {
		name  string
		user  servertest.User
		room  id.RoomID
		query url.Values
	}{
		{"unknown token", bob.User, tr.space, url.Values{"from": {"AAAAAAAAAAAAAAAAAAAAAA"}}},
		{"malformed token", bob.User, tr.space, url.Values{"from": {"not a token"}}},
		{"max_depth changed", bob.User, tr.space, url.Values{"max_depth": {"3"}, "from": {first.NextBatch}}},
		{"max_depth dropped", bob.User, tr.space, url.Values{"from": {first.NextBatch}}},
		{"suggested_only changed", bob.User, tr.space, url.Values{"max_depth": {"2"}, "suggested_only": {"true"}, "from": {first.NextBatch}}},
		{"another root", bob.User, tr.sub, url.Values{"max_depth": {"2"}, "from": {first.NextBatch}}},
		{"another user", alice.User, tr.space, url.Values{"max_depth": {"2"}, "from": {first.NextBatch}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, r := hierarchy(t, st, tc.user, tc.room, tc.query)
			wantError(t, tc.name, r, http.StatusBadRequest, "M_INVALID_PARAM")
		})
	}
}

// TestHierarchy_Errors: a root the user may not see, or that does not
// exist, is 403 as the spec says; bad parameters are 400.
func TestHierarchy_Errors(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	bob := st.Member(t, "bob")
	tr := makeTree(t, alice)
	_, r := hierarchy(t, st, bob.User, tr.private, nil)
	wantError(t, "private root", r, http.StatusForbidden, "M_FORBIDDEN")
	_, r = hierarchy(t, st, bob.User, tr.restricted, nil)
	wantError(t, "restricted root of a room bob is not in", r, http.StatusForbidden, "M_FORBIDDEN")
	_, r = hierarchy(t, st, bob.User, "!nosuchroom:example.org", nil)
	wantError(t, "unknown root", r, http.StatusForbidden, "M_FORBIDDEN")
	_, err := bob.Hierarchy(bg, tr.private, &mautrix.ReqHierarchy{})
	if !errors.Is(err, mautrix.MForbidden) {
		t.Errorf("private root through mautrix: %v, want M_FORBIDDEN", err)
	}
	_, r = hierarchy(t, st, bob.User, "notaroom", nil)
	wantError(t, "invalid room ID", r, http.StatusBadRequest, "M_INVALID_PARAM")
	for _, q := range []url.Values{
		{"limit": {"0"}}, {"limit": {"-1"}}, {"limit": {"x"}},
		{"max_depth": {"-1"}}, {"max_depth": {"1.5"}},
		{"suggested_only": {"yes"}},
	} {
		_, r = hierarchy(t, st, bob.User, tr.space, q)
		wantError(t, "query "+q.Encode(), r, http.StatusBadRequest, "M_INVALID_PARAM")
	}
	r = st.Do(t, "GET", "/_matrix/client/v1/rooms/"+url.PathEscape(string(tr.space))+"/hierarchy", "", nil)
	wantError(t, "without a token", r, http.StatusUnauthorized, "M_MISSING_TOKEN")
}

// TestHierarchy_Order checks the spec's ordering of children: valid order
// keys first, by code point; then by origin_server_ts; then by room ID.
// The rooms' clock sets each child event's origin_server_ts.
func TestHierarchy_Order(t *testing.T) {
	st := servertest.Start(t)
	base := time.Now().Add(time.Hour).Truncate(time.Second)
	var offset atomic.Int64
	st.Server.Rooms.Now = func() time.Time { return base.Add(time.Duration(offset.Load()) * time.Millisecond) }
	alice := st.Member(t, "alice")
	space := create(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", CreationContent: map[string]any{"type": "m.space"}})
	var r []id.RoomID
	for range 7 {
		r = append(r, create(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"}))
	}
	lower, higher := r[5], r[6]
	if higher < lower {
		lower, higher = higher, lower
	}
	link := func(child id.RoomID, at int64, content map[string]any) {
		t.Helper()
		offset.Store(at)
		content["via"] = []string{"example.org"}
		if _, err := alice.SendStateEvent(bg, space, event.StateSpaceChild, string(child), content); err != nil {
			t.Fatal(err)
		}
	}
	// The spec's example, then children without a valid order.
	link(r[0], 800, map[string]any{"order": "first"})
	link(r[1], 100, map[string]any{"order": "aaaa"})
	link(r[2], 300, map[string]any{"order": " "})
	link(r[3], 50, map[string]any{"order": "\x7finvalid"})
	link(r[4], 5, map[string]any{"order": 7})
	link(higher, 10, map[string]any{})
	link(lower, 10, map[string]any{})
	page, reply := hierarchy(t, st, alice.User, space, url.Values{"max_depth": {"0"}})
	if reply.Status != http.StatusOK {
		t.Fatalf("%d %s", reply.Status, reply.Raw)
	}
	var got []string
	for _, c := range page.Rooms[0].ChildrenState {
		got = append(got, c.StateKey)
	}
	wantEqual(t, "order of children", got, strs(r[2], r[1], r[0], r[4], lower, higher, r[3]))
	wantEqual(t, "origin_server_ts of the first child", page.Rooms[0].ChildrenState[0].OriginServerTS, base.Add(300*time.Millisecond).UnixMilli())
}
