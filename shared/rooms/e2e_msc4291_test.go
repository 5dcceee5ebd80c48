package rooms_test

import (
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestV12_CreateAndCreatorsRefused: in a version 12 room (MSC4291, MSC4289)
// a client cannot send another m.room.create, which would name another
// room (400 M_INVALID_PARAM, as Synapse), nor power levels that list a
// creator in users (400 M_BAD_JSON: creators have unlimited power); in a
// version 11 room the create event stays 403 and creators may be listed.
func TestV12_CreateAndCreatorsRefused(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	bob := st.Member(t, "bob")
	v12 := create(t, alice, &mautrix.ReqCreateRoom{RoomVersion: "12", Preset: "public_chat",
		CreationContent: map[string]any{"additional_creators": []string{bob.ID}}})
	v11 := create(t, alice, &mautrix.ReqCreateRoom{RoomVersion: "11", Preset: "public_chat"})
	must[*mautrix.RespJoinRoom](t, "bob joins")(bob.JoinRoomByID(bg, v12))

	_, err := alice.SendStateEvent(bg, v12, event.StateCreate, "", map[string]any{"room_version": "12"})
	wantErr(t, "a second create event in a version 12 room", err, "M_INVALID_PARAM", http.StatusBadRequest)
	_, err = alice.SendStateEvent(bg, v11, event.StateCreate, "", map[string]any{"room_version": "11"})
	wantErr(t, "a second create event in a version 11 room", err, "M_FORBIDDEN", http.StatusForbidden)

	before := stateOf(t, alice, v12, "m.room.power_levels", "")
	for _, creator := range []string{alice.ID, bob.ID} {
		_, err := alice.SendStateEvent(bg, v12, event.StatePowerLevels, "", map[string]any{"users": map[string]any{creator: 100}})
		wantErr(t, "power levels naming creator "+creator, err, "M_BAD_JSON", http.StatusBadRequest)
	}
	wantEqual(t, "power levels after the refusals", stateOf(t, alice, v12, "m.room.power_levels", ""), before)
	// Others may be listed.
	carol := st.Member(t, "carol")
	must[*mautrix.RespSendEvent](t, "power levels naming carol")(alice.SendStateEvent(bg, v12, event.StatePowerLevels, "", map[string]any{"users": map[string]any{carol.ID: 50}}))
	// Before version 12 the creator is an ordinary entry.
	must[*mautrix.RespSendEvent](t, "version 11 power levels naming the creator")(alice.SendStateEvent(bg, v11, event.StatePowerLevels, "", map[string]any{"users": map[string]any{alice.ID: 100, carol.ID: 50}}))
	for _, r := range st.Requests(t) {
		if r.Status >= 500 {
			t.Errorf("%s %s: %d", r.Method, r.Path, r.Status)
		}
	}
}

// TestV12_UpgradeNamesNoPredecessorEvent: an upgrade to version 12 writes
// predecessor.room_id but no predecessor.event_id (MSC4291 drops it, as
// Synapse does); an upgrade to an earlier version still names the old
// room's last event.
func TestV12_UpgradeNamesNoPredecessorEvent(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	old := create(t, alice, &mautrix.ReqCreateRoom{RoomVersion: "12", Preset: "private_chat"})
	say(t, alice, old, "before the upgrade")
	repl := must[id.RoomID](t, "upgrade 12 to 12")(upgrade(alice, old, map[string]any{"new_version": "12"}))
	st.CheckCost(t, "upgrade of a version 12 room", "/_matrix/client/v3/rooms/{roomId}/upgrade", servertest.Want(21, 17, 103)) // no read of the old head, which only predecessor.event_id needed; presence's Query of the new room's members at its first local join (presence.MembersChanged) is one call and one RCU
	wantEqual(t, "new create content", stateOf(t, alice, repl, "m.room.create", ""), map[string]any{
		"room_version": "12", "predecessor": map[string]any{"room_id": old.String()},
	})

	old11 := create(t, alice, &mautrix.ReqCreateRoom{RoomVersion: "11", Preset: "private_chat"})
	last := say(t, alice, old11, "last words")
	repl11 := must[id.RoomID](t, "upgrade 11 to 11")(upgrade(alice, old11, map[string]any{"new_version": "11"}))
	cc := stateOf(t, alice, repl11, "m.room.create", "")
	wantEqual(t, "version 11 predecessor", cc["predecessor"], map[string]any{"room_id": old11.String(), "event_id": last.String()})
}

// TestStrippedCreateCarriesTimestamp: the create event in an invitee's
// invite_state and a knocker's knock_state carries its origin_server_ts
// (MSC4311); the other stripped events keep only the four stripped keys.
func TestStrippedCreateCarriesTimestamp(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	bob := st.Member(t, "bob")
	carol := st.Member(t, "carol")
	room := create(t, alice, &mautrix.ReqCreateRoom{RoomVersion: "12", Preset: "private_chat", Name: "Knock here",
		InitialState: []*event.Event{{Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{"join_rule": "knock"}}}}})
	var full []map[string]any
	if err := raw(alice, "GET", nil, &full, "v3", "rooms", room, "state"); err != nil {
		t.Fatal(err)
	}
	var createTS float64
	for _, ev := range full {
		if ev["type"] == "m.room.create" {
			createTS, _ = ev["origin_server_ts"].(float64)
		}
	}
	if createTS == 0 {
		t.Fatalf("no create event timestamp in %v", full)
	}
	must[*mautrix.RespInviteUser](t, "invite bob")(alice.InviteUser(bg, room, &mautrix.ReqInviteUser{UserID: id.UserID(bob.ID)}))
	must[*mautrix.RespKnockRoom](t, "carol knocks")(carol.KnockRoom(bg, room.String(), &mautrix.ReqKnockRoom{}))

	check := func(who mxUser, section string) {
		t.Helper()
		r := st.Do(t, "GET", "/_matrix/client/v3/sync", who.User.AccessToken, nil)
		rooms, _ := r.Body["rooms"].(map[string]any)
		sec, _ := rooms[section].(map[string]any)
		entry, _ := sec[room.String()].(map[string]any)
		list, _ := entry[section+"_state"].(map[string]any)
		evs, _ := list["events"].([]any)
		seen := false
		for _, e := range evs {
			ev := e.(map[string]any)
			if ev["type"] == "m.room.create" {
				seen = true
				if ev["origin_server_ts"] != createTS {
					t.Errorf("%s: create event in %s_state has origin_server_ts %v, want %v", who.ID, section, ev["origin_server_ts"], createTS)
				}
				continue
			}
			if _, ok := ev["origin_server_ts"]; ok || len(ev) != 4 {
				t.Errorf("%s: stripped %v has other keys than type, state_key, sender, content", who.ID, ev)
			}
		}
		if !seen || len(evs) < 3 {
			t.Fatalf("%s: %s_state %v lacks the create event or the name", who.ID, section, evs)
		}
	}
	check(bob, "invite")
	check(carol, "knock")
}
