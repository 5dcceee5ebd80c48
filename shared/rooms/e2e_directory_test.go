package rooms_test

import (
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestDirectory_Aliases covers PUT, GET and DELETE /directory/room/{alias},
// /rooms/{roomId}/aliases and the canonical alias checks.
func TestDirectory_Aliases(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	bob := st.Member(t, "bob")
	carol := st.Member(t, "carol")
	room := create(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	private := create(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})

	must[*mautrix.RespAliasCreate](t, "create alias")(alice.CreateAlias(bg, "#one:example.org", room))
	must[*mautrix.RespAliasCreate](t, "create alias")(alice.CreateAlias(bg, "#two:example.org", room))
	res := must[*mautrix.RespAliasResolve](t, "resolve")(bob.ResolveAlias(bg, "#one:example.org"))
	wantEqual(t, "resolved", []any{res.RoomID, res.Servers}, []any{room, []string{"example.org"}})
	_, err := alice.CreateAlias(bg, "#one:example.org", private)
	wantErr(t, "taken alias", err, "M_ROOM_IN_USE", http.StatusConflict)
	_, err = alice.CreateAlias(bg, "notanalias", room)
	wantErr(t, "invalid alias", err, "M_INVALID_PARAM", http.StatusBadRequest)
	_, err = alice.CreateAlias(bg, "#x:elsewhere.org", room)
	wantErr(t, "alias of another server", err, "M_INVALID_PARAM", http.StatusBadRequest)
	_, err = bob.CreateAlias(bg, "#bobs:example.org", private)
	wantErr(t, "alias for a room the user is not in", err, "M_FORBIDDEN", http.StatusForbidden)
	_, err = alice.CreateAlias(bg, "#ghost:example.org", "!nosuchroom:example.org")
	wantErr(t, "alias for an unknown room", err, "M_NOT_FOUND", http.StatusNotFound)
	_, err = bob.ResolveAlias(bg, "#nosuch:example.org")
	wantErr(t, "resolve an unknown alias", err, "M_NOT_FOUND", http.StatusNotFound)
	_, err = bob.ResolveAlias(bg, "notanalias")
	wantErr(t, "resolve an invalid alias", err, "M_INVALID_PARAM", http.StatusBadRequest)

	list := must[*mautrix.RespAliasList](t, "aliases")(alice.GetAliases(bg, room))
	wantEqual(t, "aliases", list.Aliases, []id.RoomAlias{"#one:example.org", "#two:example.org"})
	_, err = bob.GetAliases(bg, room)
	wantErr(t, "aliases for a user not in the room", err, "M_FORBIDDEN", http.StatusForbidden)
	list = must[*mautrix.RespAliasList](t, "aliases")(alice.GetAliases(bg, private))
	wantEqual(t, "aliases of a room without any", list.Aliases, []id.RoomAlias{})

	// Deleting: the creator may, a moderator may, others may not.
	must[*mautrix.RespJoinRoom](t, "bob joins")(bob.JoinRoomByID(bg, room))
	must[*mautrix.RespJoinRoom](t, "carol joins")(carol.JoinRoomByID(bg, room))
	must[*mautrix.RespAliasCreate](t, "bob's alias")(bob.CreateAlias(bg, "#bobs:example.org", room))
	_, err = carol.DeleteAlias(bg, "#two:example.org")
	wantErr(t, "delete by an ordinary member", err, "M_FORBIDDEN", http.StatusForbidden)
	must[*mautrix.RespAliasDelete](t, "delete by its creator")(alice.DeleteAlias(bg, "#two:example.org"))
	must[*mautrix.RespAliasDelete](t, "delete by a moderator")(alice.DeleteAlias(bg, "#bobs:example.org"))
	_, err = alice.DeleteAlias(bg, "#two:example.org")
	wantErr(t, "delete twice", err, "M_NOT_FOUND", http.StatusNotFound)
	_, err = bob.ResolveAlias(bg, "#two:example.org")
	wantErr(t, "resolve a deleted alias", err, "M_NOT_FOUND", http.StatusNotFound)
	list = must[*mautrix.RespAliasList](t, "aliases")(bob.GetAliases(bg, room))
	wantEqual(t, "aliases after deletes", list.Aliases, []id.RoomAlias{"#one:example.org"})

	// The canonical alias may only name aliases of this room.
	must[*mautrix.RespAliasCreate](t, "alias of the private room")(alice.CreateAlias(bg, "#private:example.org", private))
	must[*mautrix.RespAliasCreate](t, "alt alias")(alice.CreateAlias(bg, "#alt:example.org", room))
	ca := event.StateCanonicalAlias
	must[*mautrix.RespSendEvent](t, "canonical alias")(alice.SendStateEvent(bg, room, ca, "", map[string]any{"alias": "#one:example.org", "alt_aliases": []string{"#alt:example.org"}}))
	for _, bad := range []map[string]any{
		{"alias": "#private:example.org"},
		{"alias": "#nosuch:example.org"},
		{"alias": "#one:example.org", "alt_aliases": []string{"#alt:example.org", "#private:example.org"}},
	} {
		_, err = alice.SendStateEvent(bg, room, ca, "", bad)
		wantErr(t, "canonical alias of another room", err, "M_BAD_ALIAS", http.StatusBadRequest)
	}
	_, err = alice.SendStateEvent(bg, room, ca, "", map[string]any{"alias": "not an alias"})
	wantErr(t, "canonical alias with bad syntax", err, "M_INVALID_PARAM", http.StatusBadRequest)
	wantEqual(t, "canonical alias after refusals", stateOf(t, bob, room, "m.room.canonical_alias", ""),
		map[string]any{"alias": "#one:example.org", "alt_aliases": []any{"#alt:example.org"}})
	// Aliases already in the event are not checked again, even once they
	// no longer point here: the spec checks only new ones.
	must[*mautrix.RespAliasDelete](t, "delete the alt alias")(alice.DeleteAlias(bg, "#alt:example.org"))
	must[*mautrix.RespSendEvent](t, "canonical alias keeping a stale alias")(alice.SendStateEvent(bg, room, ca, "",
		map[string]any{"alias": "#one:example.org", "alt_aliases": []string{"#alt:example.org"}, "note": "kept"}))
	must[*mautrix.RespSendEvent](t, "canonical alias removing it")(alice.SendStateEvent(bg, room, ca, "", map[string]any{"alias": "#one:example.org"}))
}

// TestDirectory_PublicRooms covers GET and POST /publicRooms with limits,
// paging, search terms and room types, and /directory/list/room.
func TestDirectory_PublicRooms(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	bob := st.Member(t, "bob")
	alpha := create(t, alice, &mautrix.ReqCreateRoom{Visibility: "public", Name: "Alpha room", Topic: "the first", RoomAliasName: "alpha"})
	beta := create(t, alice, &mautrix.ReqCreateRoom{Visibility: "public", Name: "Beta room"})
	gamma := create(t, alice, &mautrix.ReqCreateRoom{Visibility: "public", Name: "Gamma hall", CreationContent: map[string]any{"type": "m.space"}})
	hidden := create(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Hidden room"})
	must[*mautrix.RespJoinRoom](t, "bob joins beta")(bob.JoinRoomByID(bg, beta))

	all := must[*mautrix.RespPublicRooms](t, "publicRooms")(bob.PublicRooms(bg, &mautrix.ReqPublicRooms{}))
	if len(all.Chunk) != 3 || all.Chunk[0].RoomID != beta || all.Chunk[0].NumJoinedMembers != 2 {
		t.Fatalf("public rooms, most members first: %+v", all.Chunk)
	}
	byID := map[id.RoomID]*mautrix.PublicRoomInfo{}
	for _, r := range all.Chunk {
		byID[r.RoomID] = r
	}
	a := byID[alpha]
	if a == nil || a.Name != "Alpha room" || a.Topic != "the first" || a.CanonicalAlias != "#alpha:example.org" || a.NumJoinedMembers != 1 || a.JoinRule != "public" || a.GuestCanJoin || a.WorldReadable {
		t.Fatalf("alpha's entry: %+v", a)
	}
	if g := byID[gamma]; g == nil || g.RoomType != "m.space" {
		t.Fatalf("gamma's entry: %+v", g)
	}

	// Paging with limit and since gives each room once.
	p1 := must[*mautrix.RespPublicRooms](t, "page 1")(bob.PublicRooms(bg, &mautrix.ReqPublicRooms{Limit: 2}))
	if len(p1.Chunk) != 2 || p1.NextBatch == "" {
		t.Fatalf("first page: %d rooms, next_batch %q", len(p1.Chunk), p1.NextBatch)
	}
	p2 := must[*mautrix.RespPublicRooms](t, "page 2")(bob.PublicRooms(bg, &mautrix.ReqPublicRooms{Limit: 2, Since: p1.NextBatch}))
	if len(p2.Chunk) != 1 || p2.NextBatch != "" {
		t.Fatalf("second page: %d rooms, next_batch %q", len(p2.Chunk), p2.NextBatch)
	}
	wantEqual(t, "paged rooms", []id.RoomID{p1.Chunk[0].RoomID, p1.Chunk[1].RoomID, p2.Chunk[0].RoomID}, []id.RoomID{all.Chunk[0].RoomID, all.Chunk[1].RoomID, all.Chunk[2].RoomID})
	// Without a token, GET /publicRooms needs no access token.
	anon := mxUser{Client: must[*mautrix.Client](t, "client")(mautrix.NewClient(st.URL, "", ""))}
	wantEqual(t, "rooms listed without a token", len(must[*mautrix.RespPublicRooms](t, "anonymous")(anon.PublicRooms(bg, nil)).Chunk), 3)

	post := func(body map[string]any) *mautrix.RespPublicRooms {
		t.Helper()
		var out mautrix.RespPublicRooms
		if err := raw(bob, http.MethodPost, body, &out, "v3", "publicRooms"); err != nil {
			t.Fatalf("POST publicRooms %v: %v", body, err)
		}
		return &out
	}
	roomIDs := func(r *mautrix.RespPublicRooms) []id.RoomID {
		out := []id.RoomID{}
		for _, c := range r.Chunk {
			out = append(out, c.RoomID)
		}
		return out
	}
	wantEqual(t, "search for hall", roomIDs(post(map[string]any{"filter": map[string]any{"generic_search_term": "HALL"}})), []id.RoomID{gamma})
	wantEqual(t, "search in topics", roomIDs(post(map[string]any{"filter": map[string]any{"generic_search_term": "first"}})), []id.RoomID{alpha})
	wantEqual(t, "search in aliases", roomIDs(post(map[string]any{"filter": map[string]any{"generic_search_term": "#alpha"}})), []id.RoomID{alpha})
	wantEqual(t, "search for nothing known", roomIDs(post(map[string]any{"filter": map[string]any{"generic_search_term": "zebra"}})), []id.RoomID{})
	wantEqual(t, "spaces only", roomIDs(post(map[string]any{"filter": map[string]any{"room_types": []any{"m.space"}}})), []id.RoomID{gamma})
	rooms := post(map[string]any{"filter": map[string]any{"generic_search_term": "room", "room_types": []any{nil}}})
	wantEqual(t, "rooms without a type", roomIDs(rooms), []id.RoomID{beta, alpha})
	first := post(map[string]any{"limit": 1, "filter": map[string]any{"generic_search_term": "room"}})
	wantEqual(t, "first match", roomIDs(first), []id.RoomID{beta})
	if first.NextBatch == "" {
		t.Fatal("no next_batch after the first match")
	}
	second := post(map[string]any{"limit": 1, "since": first.NextBatch, "filter": map[string]any{"generic_search_term": "room"}})
	wantEqual(t, "second match", roomIDs(second), []id.RoomID{alpha})

	// /directory/list/room reads and changes whether a room is listed.
	visibility := func(room id.RoomID) string {
		t.Helper()
		var out struct {
			Visibility string `json:"visibility"`
		}
		if err := raw(anon, http.MethodGet, nil, &out, "v3", "directory", "list", "room", room); err != nil {
			t.Fatalf("directory visibility of %s: %v", room, err)
		}
		return out.Visibility
	}
	setVisibility := func(u mxUser, room id.RoomID, body any) error {
		return raw(u, http.MethodPut, body, nil, "v3", "directory", "list", "room", room)
	}
	wantEqual(t, "alpha's visibility", visibility(alpha), "public")
	wantEqual(t, "hidden's visibility", visibility(hidden), "private")
	wantErr(t, "publish by a non-moderator", setVisibility(bob, hidden, map[string]any{"visibility": "public"}), "M_FORBIDDEN", http.StatusForbidden)
	wantErr(t, "bad visibility", setVisibility(alice, hidden, map[string]any{"visibility": "everyone"}), "M_INVALID_PARAM", http.StatusBadRequest)
	wantErr(t, "visibility of an unknown room", setVisibility(alice, "!nosuchroom:example.org", map[string]any{"visibility": "public"}), "M_NOT_FOUND", http.StatusNotFound)
	wantErr(t, "visibility of an unknown room", raw(anon, http.MethodGet, nil, nil, "v3", "directory", "list", "room", "!nosuchroom:example.org"), "M_NOT_FOUND", http.StatusNotFound)
	if err := setVisibility(alice, hidden, map[string]any{}); err != nil {
		t.Fatalf("publish with the default visibility: %v", err)
	}
	wantEqual(t, "hidden's visibility once published", visibility(hidden), "public")
	if err := setVisibility(alice, alpha, map[string]any{"visibility": "private"}); err != nil {
		t.Fatalf("unpublish: %v", err)
	}
	wantEqual(t, "alpha's visibility once unpublished", visibility(alpha), "private")
	wantEqual(t, "listed after the changes", roomIDs(post(map[string]any{"filter": map[string]any{"generic_search_term": "room"}})), []id.RoomID{beta, hidden})

	// Entries follow the room's state.
	must[*mautrix.RespSendEvent](t, "rename")(alice.SendStateEvent(bg, beta, event.StateRoomName, "", map[string]any{"name": "Beta lounge"}))
	must[*mautrix.RespSendEvent](t, "open history")(alice.SendStateEvent(bg, beta, event.StateHistoryVisibility, "", map[string]any{"history_visibility": "world_readable"}))
	must[*mautrix.RespSendEvent](t, "let guests in")(alice.SendStateEvent(bg, beta, event.StateGuestAccess, "", map[string]any{"guest_access": "can_join"}))
	must[*mautrix.RespLeaveRoom](t, "bob leaves beta")(bob.LeaveRoom(bg, beta))
	found := post(map[string]any{"filter": map[string]any{"generic_search_term": "lounge"}})
	if len(found.Chunk) != 1 {
		t.Fatalf("search for the new name: %+v", found.Chunk)
	}
	b := found.Chunk[0]
	wantEqual(t, "beta's entry", []any{b.RoomID, b.Name, b.NumJoinedMembers, b.WorldReadable, b.GuestCanJoin}, []any{beta, "Beta lounge", 1, true, true})
	wantEqual(t, "search for the old name", roomIDs(post(map[string]any{"filter": map[string]any{"generic_search_term": "beta room"}})), []id.RoomID{})
}
