package federation_test

import (
	"net/url"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// TestDendrite_OutboundJoin: a Cirrus user joins a Dendrite 0.13.8 room
// of version 10 through server_name (make_join and send_join to
// Dendrite); messages go both ways and both /messages list the same
// events in the same order. Then Dendrite's user invites her to a
// private room (Dendrite's /v2/invite) and she accepts it by its ID
// alone: the inviter's server is asked.
func TestDendrite_OutboundJoin(t *testing.T) {
	st, d := withDendrite(t)
	alice := st.Member(t, "alice")
	_, dendrite := dendriteUser(t, d, "bob")
	created := dendrite("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "name": "Dendrite's lobby", "room_version": "10"})
	room, _ := created["room_id"].(string)
	if _, err := alice.JoinRoom(background, room, &mautrix.ReqJoinRoom{Via: []string{d.Name}}); err != nil {
		t.Fatalf("alice joins Dendrite's room: %v\n%s", err, d.LogTail())
	}
	if m, err := st.Server.Rooms.Membership(background, string(alice.UserID), room); err != nil || m != "join" {
		t.Fatalf("alice's membership on Cirrus: %q %v", m, err)
	}
	dendrite("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/send/m.room.message/t1", map[string]any{"msgtype": "m.text", "body": "hello from dendrite"})
	waitFor(t, "bob's message on Cirrus", func() ([]string, bool) {
		b := bodies(t, alice.Client, id.RoomID(room))
		return b, slices.Contains(b, "hello from dendrite")
	}, d.LogTail)
	if _, err := alice.SendText(background, id.RoomID(room), "hello from cirrus"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice's message on Dendrite", func() ([]string, bool) {
		out := dendrite("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?dir=b&limit=100", nil)
		var b []string
		chunk, _ := out["chunk"].([]any)
		for _, e := range chunk {
			ev, _ := e.(map[string]any)
			c, _ := ev["content"].(map[string]any)
			if s, ok := c["body"].(string); ok {
				b = append(b, s)
			}
		}
		return b, slices.Contains(b, "hello from cirrus")
	}, d.LogTail)
	out := dendrite("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?dir=b&limit=100", nil)
	var theirs []string
	chunk, _ := out["chunk"].([]any)
	for i := len(chunk) - 1; i >= 0; i-- {
		ev, _ := chunk[i].(map[string]any)
		theirs = append(theirs, ev["event_id"].(string))
	}
	if ours := messageIDs(t, alice.Client, id.RoomID(room)); !slices.Equal(ours, theirs) {
		t.Errorf("/messages differ:\nCirrus:   %v\nDendrite: %v", ours, theirs)
	}

	// A remote invite, accepted by the room ID alone.
	private := dendrite("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat", "name": "Dendrite's den"})
	den, _ := private["room_id"].(string)
	dendrite("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(den)+"/invite", map[string]any{"user_id": alice.User.ID})
	if m, err := st.Server.Rooms.Membership(background, string(alice.UserID), den); err != nil || m != "invite" {
		t.Fatalf("alice's membership of the den: %q %v", m, err)
	}
	if _, err := alice.JoinRoomByID(background, id.RoomID(den)); err != nil {
		t.Fatalf("alice accepts Dendrite's invite: %v\n%s", err, d.LogTail())
	}
	if m, err := st.Server.Rooms.Membership(background, string(alice.UserID), den); err != nil || m != "join" {
		t.Fatalf("alice's membership of the den after the join: %q %v", m, err)
	}
	resp, err := alice.SyncRequest(background, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := resp.Rooms.Join[id.RoomID(den)]; !ok {
		t.Errorf("the den is not among alice's joined rooms in /sync")
	}
	if _, ok := resp.Rooms.Invite[id.RoomID(den)]; ok {
		t.Errorf("the den is still among alice's invites in /sync")
	}
	members := dendrite("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(den)+"/joined_members", nil)
	if joined, _ := members["joined"].(map[string]any); joined[alice.User.ID] == nil {
		t.Errorf("Dendrite's joined members of the den: %v", members)
	}
}
