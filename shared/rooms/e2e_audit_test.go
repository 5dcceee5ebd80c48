package rooms_test

import (
	"net/http"
	"sort"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// The tests of this file come from an audit of the room endpoints against
// the spec's text, and against Synapse where the spec leaves the choice to
// servers.

// TestAudit_StatePutIsIdempotent: PUT /state cannot carry a transaction ID,
// so a client's retry of the same state sends the same content again.
// Synapse answers it with the current event instead of a duplicate
// (deduplicate_state_event); bridges that set the same name or avatar on
// every start rely on it.
func TestAudit_StatePutIsIdempotent(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	bob := st.Member(t, "bob")
	room := create(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	must[*mautrix.RespJoinRoom](t, "bob joins")(bob.JoinRoomByID(bg, room))
	topic := map[string]any{"topic": "same", "extra": map[string]any{"b": 1, "a": 2}}
	first := must[*mautrix.RespSendEvent](t, "topic")(alice.SendStateEvent(bg, room, event.StateTopic, "", topic))
	// The same content, its keys in another order.
	again := must[*mautrix.RespSendEvent](t, "same topic")(alice.SendStateEvent(bg, room, event.StateTopic, "", map[string]any{"extra": map[string]any{"a": 2, "b": 1}, "topic": "same"}))
	wantEqual(t, "event of a repeated state PUT", again.EventID, first.EventID)
	// Another sender of the same content is a new event, as in Synapse.
	pl := stateOf(t, alice, room, "m.room.power_levels", "")
	pl["events"].(map[string]any)["m.room.topic"] = 0
	must[*mautrix.RespSendEvent](t, "levels")(alice.SendStateEvent(bg, room, event.StatePowerLevels, "", pl))
	byBob := must[*mautrix.RespSendEvent](t, "bob's topic")(bob.SendStateEvent(bg, room, event.StateTopic, "", topic))
	if byBob.EventID == first.EventID {
		t.Fatalf("bob's topic is alice's event %s", first.EventID)
	}
	// Having left, bob meets the auth rules, not his old event.
	must[*mautrix.RespLeaveRoom](t, "bob leaves")(bob.LeaveRoom(bg, room))
	_, err := bob.SendStateEvent(bg, room, event.StateTopic, "", topic)
	wantErr(t, "same state from a user who left", err, "M_FORBIDDEN", http.StatusForbidden)
	changed := must[*mautrix.RespSendEvent](t, "new topic")(alice.SendStateEvent(bg, room, event.StateTopic, "", map[string]any{"topic": "other"}))
	if changed.EventID == byBob.EventID {
		t.Fatalf("a changed topic gave back the old event")
	}
	all := msgs(t, alice, room, "", "", mautrix.DirectionForward, &mautrix.FilterPart{Types: []event.Type{event.StateTopic}}, 50)
	wantEqual(t, "topic events", len(all.Chunk), 3)
}

// TestAudit_MembersMembershipOrNotMembership: rooms.yaml says membership
// and not_membership together "create an 'or' condition: either the
// membership is the same as membership or is not the same as
// not_membership".
func TestAudit_MembersMembershipOrNotMembership(t *testing.T) {
	c := newChat(t)
	carol := c.st.Member(t, "carol")
	dave := c.st.Member(t, "dave")
	must[*mautrix.RespJoinRoom](t, "dave joins")(dave.JoinRoomByID(bg, c.room))
	must[*mautrix.RespLeaveRoom](t, "dave leaves")(dave.LeaveRoom(bg, c.room))
	must[*mautrix.RespInviteUser](t, "invite carol")(c.alice.InviteUser(bg, c.room, &mautrix.ReqInviteUser{UserID: carol.UserID}))
	resp := must[*mautrix.RespMembers](t, "members")(c.bob.Members(bg, c.room, mautrix.ReqMembers{Membership: event.MembershipInvite, NotMembership: event.MembershipJoin}))
	var got []string
	for _, ev := range resp.Chunk {
		got = append(got, ev.GetStateKey())
	}
	sort.Strings(got)
	wantEqual(t, "invited or not joined", got, []string{carol.ID, dave.ID})
}

// TestAudit_RedactCreateAndACL: Synapse refuses redactions of the create
// event and of m.room.server_acl (403): before version 11, a redacted
// create event loses room_version, and clients then read the room as
// version 1.
func TestAudit_RedactCreateAndACL(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	room := create(t, alice, &mautrix.ReqCreateRoom{RoomVersion: "10"})
	createEv := must[*event.Event](t, "create event")(alice.FullStateEvent(bg, room, event.StateCreate, ""))
	_, err := alice.RedactEvent(bg, room, createEv.ID)
	wantErr(t, "redact the create event", err, "M_FORBIDDEN", http.StatusForbidden)
	acl := must[*mautrix.RespSendEvent](t, "acl")(alice.SendStateEvent(bg, room, event.StateServerACL, "", map[string]any{"allow": []string{"*"}, "deny": []string{"evil.example"}}))
	_, err = alice.RedactEvent(bg, room, acl.EventID)
	wantErr(t, "redact the server ACL", err, "M_FORBIDDEN", http.StatusForbidden)
	_, err = alice.SendMessageEvent(bg, room, event.EventRedaction, map[string]any{"redacts": createEv.ID.String()})
	wantErr(t, "redact the create event through /send", err, "M_FORBIDDEN", http.StatusForbidden)
	wantEqual(t, "room version after the refusals", stateOf(t, alice, room, "m.room.create", "")["room_version"], "10")
}

// TestAudit_Version3EventIDs: room version 3 event IDs are "$" and the
// reference hash in standard base64, which has "/" in about every second
// ID; such events must be as reachable as others, by /event, /context and
// /redact (the client escapes the "/" as %2F).
func TestAudit_Version3EventIDs(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	room := create(t, alice, &mautrix.ReqCreateRoom{RoomVersion: "3"})
	var slashed id.EventID
	for i := 0; i < 40 && slashed == ""; i++ {
		if ev := say(t, alice, room, "hello"); strings.Contains(ev.String(), "/") {
			slashed = ev
		}
	}
	if slashed == "" {
		t.Fatal("no event ID with a slash in 40 messages")
	}
	ev := must[*event.Event](t, "event")(alice.GetEvent(bg, room, slashed))
	wantEqual(t, "event ID", ev.ID, slashed)
	must[*mautrix.RespContext](t, "context")(alice.Context(bg, room, slashed, nil, 2))
	must[*mautrix.RespSendEvent](t, "redact")(alice.RedactEvent(bg, room, slashed))
}

// TestAudit_Upgrade covers what Synapse carries over in an upgrade and the
// spec leaves to servers: bans, a space's children and m.federate; and the
// old room's levels, which are only ever raised.
func TestAudit_Upgrade(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	bob := st.Member(t, "bob")
	mallory := st.Member(t, "mallory")

	t.Run("bans follow the room", func(t *testing.T) {
		old := create(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		must[*mautrix.RespJoinRoom](t, "mallory joins")(mallory.JoinRoomByID(bg, old))
		must[*mautrix.RespBanUser](t, "ban")(alice.BanUser(bg, old, &mautrix.ReqBanUser{UserID: mallory.UserID, Reason: "spam"}))
		repl, err := upgrade(alice, old, map[string]any{"new_version": "12"})
		if err != nil {
			t.Fatalf("upgrade: %v", err)
		}
		_, err = mallory.JoinRoomByID(bg, repl)
		wantErr(t, "banned user joins the new room", err, "M_FORBIDDEN", http.StatusForbidden)
		wantEqual(t, "ban in the new room", stateOf(t, alice, repl, "m.room.member", mallory.ID), map[string]any{"membership": "ban", "reason": "spam"})
	})

	t.Run("space children and m.federate", func(t *testing.T) {
		child := create(t, alice, &mautrix.ReqCreateRoom{})
		gone := create(t, alice, &mautrix.ReqCreateRoom{})
		space := create(t, alice, &mautrix.ReqCreateRoom{CreationContent: map[string]any{"type": "m.space", "m.federate": false}})
		must[*mautrix.RespSendEvent](t, "child")(alice.SendStateEvent(bg, space, event.StateSpaceChild, child.String(), map[string]any{"via": []string{"example.org"}}))
		must[*mautrix.RespSendEvent](t, "removed child")(alice.SendStateEvent(bg, space, event.StateSpaceChild, gone.String(), map[string]any{}))
		repl, err := upgrade(alice, space, map[string]any{"new_version": "12"})
		if err != nil {
			t.Fatalf("upgrade: %v", err)
		}
		wantEqual(t, "child of the new space", stateOf(t, alice, repl, "m.space.child", child.String()), map[string]any{"via": []any{"example.org"}})
		full := must[mautrix.RoomStateMap](t, "state")(alice.State(bg, repl))
		if _, ok := full[event.StateSpaceChild][gone.String()]; ok {
			t.Fatalf("a removed child was copied")
		}
		cc := stateOf(t, alice, repl, "m.room.create", "")
		wantEqual(t, "m.federate of the new room", cc["m.federate"], false)
	})

	t.Run("old room levels only raised", func(t *testing.T) {
		old := create(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", PowerLevelOverride: &event.PowerLevelsEventContent{
			InvitePtr: new(100), EventsDefault: 75,
		}})
		if _, err := upgrade(alice, old, map[string]any{"new_version": "12"}); err != nil {
			t.Fatalf("upgrade: %v", err)
		}
		pl := stateOf(t, alice, old, "m.room.power_levels", "")
		wantEqual(t, "old room's invite and events_default", []any{pl["invite"], pl["events_default"]}, []any{100.0, 75.0})
	})

	t.Run("upgrader without the power to change levels", func(t *testing.T) {
		// Bob may send the tombstone but not power levels: the upgrade
		// still happens, the old room's levels stay as they were.
		old := create(t, alice, &mautrix.ReqCreateRoom{RoomVersion: "11", Preset: "public_chat", PowerLevelOverride: &event.PowerLevelsEventContent{
			Users:  map[id.UserID]int{alice.UserID: 100, bob.UserID: 60},
			Events: map[string]int{"m.room.tombstone": 60, "m.room.power_levels": 100},
		}})
		must[*mautrix.RespJoinRoom](t, "bob joins")(bob.JoinRoomByID(bg, old))
		repl, err := upgrade(bob, old, map[string]any{"new_version": "12"})
		if err != nil {
			t.Fatalf("upgrade by bob: %v", err)
		}
		tomb := stateOf(t, alice, old, "m.room.tombstone", "")
		wantEqual(t, "tombstone", tomb["replacement_room"], repl.String())
		wantEqual(t, "old room's events_default", stateOf(t, alice, old, "m.room.power_levels", "")["events_default"], 0.0)
	})
}

// TestAudit_UpgradeKeepsUpgraderLevel: before version 12, the upgrader is
// raised to 100 to make the new room, and Synapse then gives them back
// their old level; an upgrade promotes nobody, and demotes nobody above 100.
func TestAudit_UpgradeKeepsUpgraderLevel(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	bob := st.Member(t, "bob")
	old := create(t, alice, &mautrix.ReqCreateRoom{RoomVersion: "10", Preset: "public_chat", PowerLevelOverride: &event.PowerLevelsEventContent{
		Users:  map[id.UserID]int{alice.UserID: 150, bob.UserID: 60},
		Events: map[string]int{"m.room.tombstone": 60, "m.room.power_levels": 100},
	}})
	must[*mautrix.RespJoinRoom](t, "bob joins")(bob.JoinRoomByID(bg, old))
	repl, err := upgrade(bob, old, map[string]any{"new_version": "11"})
	if err != nil {
		t.Fatalf("upgrade by bob: %v", err)
	}
	wantEqual(t, "levels in the new room", stateOf(t, bob, repl, "m.room.power_levels", "")["users"], map[string]any{alice.ID: 150.0, bob.ID: 60.0})
	must[*mautrix.RespJoinRoom](t, "alice joins")(alice.JoinRoomByID(bg, repl))
	again, err := upgrade(alice, repl, map[string]any{"new_version": "11"})
	if err != nil {
		t.Fatalf("upgrade by alice: %v", err)
	}
	wantEqual(t, "levels after alice's upgrade", stateOf(t, alice, again, "m.room.power_levels", "")["users"], map[string]any{alice.ID: 150.0, bob.ID: 60.0})
}
