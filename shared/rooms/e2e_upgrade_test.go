package rooms_test

import (
	"net/http"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// upgrade calls POST /rooms/{roomId}/upgrade, which mautrix has no method
// for.
func upgrade(u mxUser, room id.RoomID, body map[string]any) (id.RoomID, error) {
	var out struct {
		ReplacementRoom id.RoomID `json:"replacement_room"`
	}
	err := raw(u, http.MethodPost, body, &out, "v3", "rooms", room, "upgrade")
	return out.ReplacementRoom, err
}

// TestUpgrade: the old room gets a tombstone and raised power levels, the
// new one the old one's state, a predecessor and its aliases.
func TestUpgrade(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	bob := st.Member(t, "bob")
	carol := st.Member(t, "carol")
	old := create(t, alice, &mautrix.ReqCreateRoom{
		RoomVersion: "10", Preset: "public_chat", Name: "Old name", Topic: "Old topic", RoomAliasName: "up",
		PowerLevelOverride: &event.PowerLevelsEventContent{Users: map[id.UserID]int{alice.UserID: 100, bob.UserID: 50}},
	})
	must[*mautrix.RespAliasCreate](t, "second alias")(alice.CreateAlias(bg, "#up2:example.org", old))
	must[*mautrix.RespJoinRoom](t, "bob joins")(bob.JoinRoomByID(bg, old))
	must[*mautrix.RespJoinRoom](t, "carol joins")(carol.JoinRoomByID(bg, old))
	say(t, carol, old, "last words")

	_, err := upgrade(bob, old, map[string]any{"new_version": "12"})
	wantErr(t, "upgrade below the tombstone level", err, "M_FORBIDDEN", http.StatusForbidden)
	_, err = upgrade(alice, old, map[string]any{"new_version": "99"})
	wantErr(t, "upgrade to an unknown version", err, "M_UNSUPPORTED_ROOM_VERSION", http.StatusBadRequest)
	_, err = upgrade(alice, old, map[string]any{})
	wantErr(t, "upgrade without a version", err, "M_MISSING_PARAM", http.StatusBadRequest)
	_, err = upgrade(alice, "!nosuchroom:example.org", map[string]any{"new_version": "12"})
	wantErr(t, "upgrade an unknown room", err, "M_FORBIDDEN", http.StatusForbidden)

	repl, err := upgrade(alice, old, map[string]any{"new_version": "12"})
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	if repl == "" || strings.Contains(repl.String(), ":") {
		t.Fatalf("replacement room %q is not a version 12 room ID", repl)
	}

	// The old room.
	tomb := must[*event.Event](t, "tombstone")(carol.FullStateEvent(bg, old, event.StateTombstone, ""))
	wantEqual(t, "tombstone", []any{tomb.Sender, tomb.Content.Raw["replacement_room"]}, []any{alice.UserID, repl.String()})
	if body, _ := tomb.Content.Raw["body"].(string); body == "" {
		t.Fatalf("tombstone without body: %v", tomb.Content.Raw)
	}
	pl := stateOf(t, carol, old, "m.room.power_levels", "")
	wantEqual(t, "old room's levels", []any{pl["events_default"], pl["invite"], pl["users"]}, []any{50.0, 50.0, map[string]any{alice.ID: 100.0, bob.ID: 50.0}})
	_, err = carol.SendText(bg, old, "still here?")
	wantErr(t, "talking in the old room", err, "M_FORBIDDEN", http.StatusForbidden)
	say(t, bob, old, "moderators still can")
	list := must[*mautrix.RespAliasList](t, "old aliases")(alice.GetAliases(bg, old))
	wantEqual(t, "old room's aliases", list.Aliases, []id.RoomAlias{})

	// The new room.
	// A version 12 room names no predecessor event (MSC4291), as Synapse.
	cc := stateOf(t, alice, repl, "m.room.create", "")
	wantEqual(t, "new create content", cc, map[string]any{
		"room_version": "12", "predecessor": map[string]any{"room_id": old.String()},
	})
	wantEqual(t, "name", stateOf(t, alice, repl, "m.room.name", ""), map[string]any{"name": "Old name"})
	wantEqual(t, "topic", stateOf(t, alice, repl, "m.room.topic", "")["topic"], "Old topic")
	wantEqual(t, "join rules", stateOf(t, alice, repl, "m.room.join_rules", ""), map[string]any{"join_rule": "public"})
	wantEqual(t, "history visibility", stateOf(t, alice, repl, "m.room.history_visibility", ""), map[string]any{"history_visibility": "shared"})
	wantEqual(t, "guest access", stateOf(t, alice, repl, "m.room.guest_access", ""), map[string]any{"guest_access": "forbidden"})
	wantEqual(t, "canonical alias", stateOf(t, alice, repl, "m.room.canonical_alias", ""), map[string]any{"alias": "#up:example.org"})
	newPL := stateOf(t, alice, repl, "m.room.power_levels", "")
	// Version 12: the upgrader is the creator, with no entry in users.
	wantEqual(t, "new room's users", newPL["users"], map[string]any{bob.ID: 50.0})
	wantEqual(t, "new room's events_default", newPL["events_default"], 0.0)
	for _, a := range []id.RoomAlias{"#up:example.org", "#up2:example.org"} {
		res := must[*mautrix.RespAliasResolve](t, "resolve")(carol.ResolveAlias(bg, a))
		wantEqual(t, "target of "+a.String(), res.RoomID, repl)
	}
	wantEqual(t, "members of the new room", joinedIDs(t, alice, repl), []string{alice.ID})
	must[*mautrix.RespJoinRoom](t, "carol follows")(carol.JoinRoom(bg, "#up:example.org", nil))
	say(t, carol, repl, "new home")
	info, err := st.Server.Rooms.Info(bg, string(old))
	if err != nil || info.Tombstoned != repl.String() {
		t.Fatalf("old room's info: %+v %v", info, err)
	}
}

// TestUpgrade_TypeAndCreators: a space stays a space, and additional
// creators are set from the request, not copied.
func TestUpgrade_TypeAndCreators(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	bob := st.Member(t, "bob")
	space := create(t, alice, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", Invite: []id.UserID{bob.UserID}, CreationContent: map[string]any{"type": "m.space"}})
	wantEqual(t, "old creators", stateOf(t, alice, space, "m.room.create", "")["additional_creators"], []any{bob.ID})
	must[*mautrix.RespJoinRoom](t, "bob joins")(bob.JoinRoomByID(bg, space))
	// Bob is a creator too: infinite power, so he may upgrade.
	repl, err := upgrade(bob, space, map[string]any{"new_version": "12"})
	if err != nil {
		t.Fatalf("upgrade by an additional creator: %v", err)
	}
	cc := stateOf(t, bob, repl, "m.room.create", "")
	if cc["type"] != "m.space" || cc["additional_creators"] != nil {
		t.Fatalf("new create content: %v", cc)
	}
	again, err := upgrade(bob, repl, map[string]any{"new_version": "12", "additional_creators": []string{alice.ID}})
	if err != nil {
		t.Fatalf("upgrade with additional_creators: %v", err)
	}
	cc = stateOf(t, bob, again, "m.room.create", "")
	wantEqual(t, "additional creators from the request", cc["additional_creators"], []any{alice.ID})
	wantEqual(t, "type", cc["type"], "m.space")
	// In a version 10 room additional_creators mean nothing.
	v10, err := upgrade(bob, again, map[string]any{"new_version": "10", "additional_creators": []string{alice.ID}})
	if err != nil {
		t.Fatalf("upgrade to version 10: %v", err)
	}
	cc = stateOf(t, bob, v10, "m.room.create", "")
	if cc["creator"] != bob.ID || cc["additional_creators"] != nil || cc["room_version"] != "10" {
		t.Fatalf("version 10 create content: %v", cc)
	}
	wantEqual(t, "bob's level in the version 10 room", stateOf(t, bob, v10, "m.room.power_levels", "")["users"], map[string]any{bob.ID: 100.0})
}
