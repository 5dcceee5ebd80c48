package federation_test

import (
	"fmt"
	"net/url"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestDendrite_RemoteReads: a Cirrus user reads what a Dendrite 0.13.8
// holds through Cirrus's federation client: Dendrite's public rooms (GET,
// and POST with a search term), an event of Dendrite's room from before
// she joined it (/event, backfilled down to) and the events around an
// older one (/context), and Dendrite's space in the hierarchy of her own
// space (Dendrite's /hierarchy).
func TestDendrite_RemoteReads(t *testing.T) {
	st, d := withDendrite(t)
	alice := st.Member(t, "alice")
	_, dendrite := dendriteUser(t, d, "bob")
	created := dendrite("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "visibility": "public",
		"name": "Dendrite's garden", "room_version": "10"})
	room, _ := created["room_id"].(string)
	var ids []id.EventID
	for i := range 12 {
		sent := dendrite("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/t%d", url.PathEscape(room), i),
			map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("msg %d", i)})
		ids = append(ids, id.EventID(sent["event_id"].(string)))
	}

	list, err := alice.PublicRooms(background, &mautrix.ReqPublicRooms{Server: d.Name})
	if err != nil {
		t.Fatalf("Dendrite's public rooms: %v\n%s", err, d.LogTail())
	}
	if len(list.Chunk) != 1 || string(list.Chunk[0].RoomID) != room || list.Chunk[0].Name != "Dendrite's garden" {
		t.Fatalf("Dendrite's public rooms on Cirrus: %+v", list.Chunk)
	}
	found := st.Do(t, "POST", "/_matrix/client/v3/publicRooms?server="+url.QueryEscape(d.Name), alice.User.AccessToken,
		map[string]any{"filter": map[string]any{"generic_search_term": "garden"}})
	chunk, _ := found.Body["chunk"].([]any)
	if found.Status != 200 || len(chunk) != 1 {
		t.Fatalf("Dendrite's public rooms searched: %d %s", found.Status, found.Raw)
	}

	if _, err := alice.JoinRoom(background, room, &mautrix.ReqJoinRoom{Via: []string{d.Name}}); err != nil {
		t.Fatalf("alice joins Dendrite's room: %v\n%s", err, d.LogTail())
	}
	ev, err := alice.GetEvent(background, id.RoomID(room), ids[9])
	if err != nil {
		t.Fatalf("/event of msg 9, held by Dendrite: %v\n%s", err, d.LogTail())
	}
	if ev.ID != ids[9] || ev.Content.Raw["body"] != "msg 9" {
		t.Fatalf("/event of msg 9: %s %v", ev.ID, ev.Content.Raw)
	}
	// That backfilled ten events, down to msg 2: msg 0 is fetched on its
	// own.
	if _, err := st.Server.Rooms.Event(background, room, string(ids[0])); err == nil {
		t.Fatal("Cirrus holds msg 0 before the /context")
	}
	c, err := alice.Context(background, id.RoomID(room), ids[0], nil, 2)
	if err != nil {
		t.Fatalf("/context of msg 0: %v\n%s", err, d.LogTail())
	}
	body := func(e *event.Event) string { s, _ := e.Content.Raw["body"].(string); return s }
	// Before it, the room's state events, held since the join at their
	// own positions, not below: none.
	if c.Event == nil || c.Event.ID != ids[0] || len(c.EventsBefore) != 0 ||
		len(c.EventsAfter) != 1 || body(c.EventsAfter[0]) != "msg 1" {
		t.Fatalf("/context of msg 0: %+v", c)
	}

	space := dendrite("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "name": "Dendrite's space",
		"room_version": "10", "creation_content": map[string]any{"type": "m.space"}})
	spaceID, _ := space["room_id"].(string)
	dendrite("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(spaceID)+"/state/m.space.child/"+url.PathEscape(room),
		map[string]any{"via": []string{d.Name}})
	mine, err := alice.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Alice's space",
		CreationContent: map[string]any{"type": "m.space"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendStateEvent(background, mine.RoomID, event.StateSpaceChild, spaceID, map[string]any{"via": []string{d.Name}}); err != nil {
		t.Fatal(err)
	}
	h, err := alice.Hierarchy(background, mine.RoomID, &mautrix.ReqHierarchy{})
	if err != nil {
		t.Fatalf("hierarchy: %v\n%s", err, d.LogTail())
	}
	var got []id.RoomID
	for _, r := range h.Rooms {
		got = append(got, r.RoomID)
	}
	if want := []id.RoomID{mine.RoomID, id.RoomID(spaceID), id.RoomID(room)}; !slices.Equal(got, want) {
		t.Fatalf("alice's hierarchy with Dendrite's space: %v, want %v\n%s", got, want, d.LogTail())
	}
}
