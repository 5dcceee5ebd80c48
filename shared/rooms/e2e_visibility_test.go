package rooms_test

import (
	"net/http"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// visibilityRoom makes a public room of alice's with the given history
// visibility.
func visibilityRoom(t *testing.T, alice mxUser, vis string) id.RoomID {
	t.Helper()
	return create(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{
		{Type: event.StateHistoryVisibility, StateKey: new(""), Content: event.Content{Raw: map[string]any{"history_visibility": vis}}},
	}})
}

// timeline is the whole room as u may read it, oldest first, as
// "type|state key|body" strings.
func timeline(t *testing.T, u mxUser, room id.RoomID) []string {
	t.Helper()
	resp := msgs(t, u, room, "", "", mautrix.DirectionForward, nil, 100)
	out := []string{}
	for _, ev := range resp.Chunk {
		b, _ := ev.Content.Raw["body"].(string)
		out = append(out, ev.Type.Type+"|"+ev.GetStateKey()+"|"+b)
	}
	return out
}

// afterSetup is what u reads of the room after its initial events. Those
// up to the history visibility event are under the default, "shared", so
// anyone who joins later reads them; which come after it depends on the
// order createRoom sends them in.
func afterSetup(t *testing.T, u, creator mxUser, room id.RoomID) []string {
	t.Helper()
	all := timeline(t, u, room)
	setup := map[string]bool{
		"m.room.create||": true, "m.room.member|" + creator.ID + "|": true, "m.room.power_levels||": true,
		"m.room.join_rules||": true, "m.room.guest_access||": true, "m.room.history_visibility||": true,
	}
	n := 0
	for n < len(all) && setup[all[n]] {
		n++
	}
	if n < 5 || all[0] != "m.room.create||" || !slices.Contains(all[:n], "m.room.history_visibility||") {
		t.Fatalf("initial events %s reads: %v", u.ID, all[:n])
	}
	return all[n:]
}

// TestVisibility_Joined: in a room with history visibility "joined", a user
// who was never in the room reads nothing, and one who joins later reads
// from their join on.
func TestVisibility_Joined(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	carol := st.Member(t, "carol")
	room := visibilityRoom(t, alice, "joined")
	before := say(t, alice, room, "before")

	_, err := carol.Messages(bg, room, "", "", mautrix.DirectionBackward, nil, 10)
	wantErr(t, "messages of a stranger", err, "M_FORBIDDEN", http.StatusForbidden)
	_, err = carol.GetEvent(bg, room, before)
	wantErr(t, "event for a stranger", err, "M_NOT_FOUND", http.StatusNotFound)
	_, err = carol.Context(bg, room, before, nil, 2)
	wantErr(t, "context for a stranger", err, "M_FORBIDDEN", http.StatusForbidden)
	_, err = carol.State(bg, room)
	wantErr(t, "state for a stranger", err, "M_FORBIDDEN", http.StatusForbidden)
	_, err = carol.Members(bg, room)
	wantErr(t, "members for a stranger", err, "M_FORBIDDEN", http.StatusForbidden)
	_, err = carol.GetRelations(bg, room, before, &mautrix.ReqGetRelations{})
	wantErr(t, "relations for a stranger", err, "M_FORBIDDEN", http.StatusForbidden)

	must[*mautrix.RespJoinRoom](t, "carol joins")(carol.JoinRoomByID(bg, room))
	say(t, alice, room, "after")
	wantEqual(t, "carol's timeline", afterSetup(t, carol, alice, room), []string{"m.room.member|" + carol.ID + "|", "m.room.message||after"})
	back := msgs(t, carol, room, "", "", mautrix.DirectionBackward, nil, 100)
	wantEqual(t, "carol's timeline backwards", bodies(back.Chunk), []string{"after"})
	wantEqual(t, "end of what carol may see", back.End, "")
	_, err = carol.GetEvent(bg, room, before)
	wantErr(t, "event from before the join", err, "M_NOT_FOUND", http.StatusNotFound)
	_, err = carol.Context(bg, room, before, nil, 2)
	wantErr(t, "context from before the join", err, "M_NOT_FOUND", http.StatusNotFound)
	// Alice saw it all.
	wantEqual(t, "alice's messages", bodies(msgs(t, alice, room, "", "", mautrix.DirectionBackward, nil, 100).Chunk), []string{"after", "before"})

	// Having left, carol keeps what she saw, her own leave event included,
	// and nothing after it.
	must[*mautrix.RespLeaveRoom](t, "carol leaves")(carol.LeaveRoom(bg, room))
	gone := say(t, alice, room, "gone")
	wantEqual(t, "carol's timeline after leaving", afterSetup(t, carol, alice, room), []string{
		"m.room.member|" + carol.ID + "|", "m.room.message||after", "m.room.member|" + carol.ID + "|",
	})
	_, err = carol.GetEvent(bg, room, gone)
	wantErr(t, "event after leaving", err, "M_NOT_FOUND", http.StatusNotFound)
}

// TestVisibility_Shared: a user who joins later reads the history from
// before; after leaving they read nothing new.
func TestVisibility_Shared(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	bob := st.Member(t, "bob")
	carol := st.Member(t, "carol")
	room := visibilityRoom(t, alice, "shared")
	say(t, alice, room, "before")
	_, err := carol.Messages(bg, room, "", "", mautrix.DirectionBackward, nil, 10)
	wantErr(t, "messages of a stranger", err, "M_FORBIDDEN", http.StatusForbidden)
	must[*mautrix.RespJoinRoom](t, "carol joins")(carol.JoinRoomByID(bg, room))
	must[*mautrix.RespJoinRoom](t, "bob joins")(bob.JoinRoomByID(bg, room))
	say(t, bob, room, "hello")
	all := timeline(t, carol, room)
	wantEqual(t, "carol reads from the create event", all[0], "m.room.create||")
	wantEqual(t, "carol's messages", bodies(msgs(t, carol, room, "", "", mautrix.DirectionBackward, nil, 100).Chunk), []string{"hello", "before"})

	must[*mautrix.RespLeaveRoom](t, "bob leaves")(bob.LeaveRoom(bg, room))
	after := say(t, alice, room, "after bob")
	must[*mautrix.RespSendEvent](t, "topic")(alice.SendStateEvent(bg, room, event.StateTopic, "", map[string]any{"topic": "later"}))
	back := msgs(t, bob, room, "", "", mautrix.DirectionBackward, nil, 100)
	wantEqual(t, "bob's newest event is his leave", []any{back.Chunk[0].Type.Type, back.Chunk[0].GetStateKey(), back.Chunk[0].Content.Raw["membership"]}, []any{"m.room.member", bob.ID, "leave"})
	wantEqual(t, "bob's messages", bodies(back.Chunk), []string{"hello", "before"})
	bobsTimeline := timeline(t, bob, room)
	wantEqual(t, "bob's timeline forwards", bobsTimeline[len(bobsTimeline)-2:], []string{"m.room.message||hello", "m.room.member|" + bob.ID + "|"})
	_, err = bob.GetEvent(bg, room, after)
	wantErr(t, "event after leaving", err, "M_NOT_FOUND", http.StatusNotFound)
	// The state bob sees is the state when he left.
	state := must[mautrix.RoomStateMap](t, "bob's state")(bob.State(bg, room))
	if _, ok := state[event.StateTopic]; ok {
		t.Fatalf("bob sees the topic set after he left: %v", state[event.StateTopic])
	}
	wantEqual(t, "bob's membership in his state", string(state[event.StateMember][bob.ID].Content.AsMember().Membership), "leave")
	wantEqual(t, "the current topic", stateOf(t, carol, room, "m.room.topic", ""), map[string]any{"topic": "later"})
	var topic map[string]any
	err = bob.StateEvent(bg, room, event.StateTopic, "", &topic)
	wantErr(t, "topic set after bob left", err, "M_NOT_FOUND", http.StatusNotFound)
}

// TestVisibility_InvitedAndChanges covers "invited", "world_readable" and a
// room whose setting changes over time.
func TestVisibility_InvitedAndChanges(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	carol := st.Member(t, "carol")
	stranger := st.Member(t, "stranger")

	t.Run("invited", func(t *testing.T) {
		room := visibilityRoom(t, alice, "invited")
		say(t, alice, room, "pre")
		must[*mautrix.RespInviteUser](t, "invite")(alice.InviteUser(bg, room, &mautrix.ReqInviteUser{UserID: carol.UserID}))
		say(t, alice, room, "invited")
		must[*mautrix.RespJoinRoom](t, "join")(carol.JoinRoomByID(bg, room))
		say(t, alice, room, "joined")
		wantEqual(t, "carol's timeline", afterSetup(t, carol, alice, room), []string{
			"m.room.member|" + carol.ID + "|", "m.room.message||invited", "m.room.member|" + carol.ID + "|", "m.room.message||joined",
		})
	})

	t.Run("world_readable", func(t *testing.T) {
		room := visibilityRoom(t, alice, "world_readable")
		ev := say(t, alice, room, "for all")
		wantEqual(t, "a stranger's messages", bodies(msgs(t, stranger, room, "", "", mautrix.DirectionBackward, nil, 100).Chunk), []string{"for all"})
		wantEqual(t, "a stranger's event", must[*event.Event](t, "event")(stranger.GetEvent(bg, room, ev)).Content.Raw["body"], "for all")
		wantEqual(t, "a stranger's state read", stateOf(t, stranger, room, "m.room.history_visibility", ""), map[string]any{"history_visibility": "world_readable"})
		_, err := stranger.JoinedMembers(bg, room)
		wantErr(t, "joined_members for a stranger", err, "M_FORBIDDEN", http.StatusForbidden)
		// Closing the room hides what comes after from strangers.
		must[*mautrix.RespSendEvent](t, "close")(alice.SendStateEvent(bg, room, event.StateHistoryVisibility, "", map[string]any{"history_visibility": "joined"}))
		say(t, alice, room, "members only")
		_, err = stranger.Messages(bg, room, "", "", mautrix.DirectionBackward, nil, 100)
		wantErr(t, "messages once closed", err, "M_FORBIDDEN", http.StatusForbidden)
	})

	t.Run("setting changes", func(t *testing.T) {
		room := visibilityRoom(t, alice, "shared")
		say(t, alice, room, "shared era")
		must[*mautrix.RespSendEvent](t, "restrict")(alice.SendStateEvent(bg, room, event.StateHistoryVisibility, "", map[string]any{"history_visibility": "joined"}))
		say(t, alice, room, "joined era")
		must[*mautrix.RespJoinRoom](t, "carol joins")(carol.JoinRoomByID(bg, room))
		say(t, alice, room, "welcome")
		back := msgs(t, carol, room, "", "", mautrix.DirectionBackward, nil, 100)
		wantEqual(t, "carol's messages", bodies(back.Chunk), []string{"welcome", "shared era"})
		// The change itself is seen under the more open of its two settings.
		var changes int
		for _, ev := range back.Chunk {
			if ev.Type.Type == event.StateHistoryVisibility.Type {
				changes++
			}
		}
		wantEqual(t, "history visibility events carol sees", changes, 2)
	})
}
