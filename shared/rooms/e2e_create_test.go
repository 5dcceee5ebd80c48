package rooms_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestCreateRoom_Presets checks the state each preset sets and the default
// power levels that go with it, in the default room version and in 10.
func TestCreateRoom_Presets(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	bob := st.Member(t, "bob")
	for _, tc := range []struct {
		name, preset, version    string
		joinRule, guests, invite string
		inviteLevel              float64
	}{
		{"private_chat", "private_chat", "", "invite", "can_join", "", 0},
		{"public_chat", "public_chat", "", "public", "forbidden", "", 50},
		{"trusted_private_chat", "trusted_private_chat", "", "invite", "can_join", bob.ID, 0},
		{"trusted_private_chat v10", "trusted_private_chat", "10", "invite", "can_join", bob.ID, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := &mautrix.ReqCreateRoom{Preset: tc.preset, RoomVersion: id.RoomVersion(tc.version)}
			if tc.invite != "" {
				req.Invite = []id.UserID{id.UserID(tc.invite)}
			}
			room := create(t, alice, req)
			wantEqual(t, "join_rules", stateOf(t, alice, room, "m.room.join_rules", ""), map[string]any{"join_rule": tc.joinRule})
			wantEqual(t, "history_visibility", stateOf(t, alice, room, "m.room.history_visibility", ""), map[string]any{"history_visibility": "shared"})
			wantEqual(t, "guest_access", stateOf(t, alice, room, "m.room.guest_access", ""), map[string]any{"guest_access": tc.guests})

			pl := stateOf(t, alice, room, "m.room.power_levels", "")
			users := map[string]any{}
			tombstone := 150.0
			if tc.version == "10" {
				tombstone = 100
				users[alice.ID] = 100.0
				if tc.invite != "" {
					users[tc.invite] = 100.0 // trusted: invitees get the creator's level
				}
			}
			wantEqual(t, "power levels", pl, map[string]any{
				"users": users, "users_default": 0.0, "events_default": 0.0, "state_default": 50.0,
				"ban": 50.0, "kick": 50.0, "redact": 50.0, "invite": tc.inviteLevel,
				"events": map[string]any{
					"m.room.name": 50.0, "m.room.power_levels": 100.0, "m.room.history_visibility": 100.0,
					"m.room.canonical_alias": 50.0, "m.room.avatar": 50.0, "m.room.tombstone": tombstone,
					"m.room.server_acl": 100.0, "m.room.encryption": 100.0,
				},
				"notifications": map[string]any{"room": 50.0},
			})

			cc := stateOf(t, alice, room, "m.room.create", "")
			if tc.version == "" && tc.invite != "" {
				// Version 12: invitees of a trusted chat become additional creators.
				wantEqual(t, "additional_creators", cc["additional_creators"], []any{tc.invite})
			} else if _, ok := cc["additional_creators"]; ok {
				t.Fatalf("additional_creators set: %v", cc)
			}
		})
	}
}

// TestCreateRoom_Options covers the other fields of createRoom.
func TestCreateRoom_Options(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	bob := st.Member(t, "bob")

	t.Run("visibility public lists the room", func(t *testing.T) {
		room := create(t, alice, &mautrix.ReqCreateRoom{Visibility: "public", Name: "Lobby"})
		// Without a preset, public visibility means public_chat.
		wantEqual(t, "join_rules", stateOf(t, alice, room, "m.room.join_rules", ""), map[string]any{"join_rule": "public"})
		list := must[*mautrix.RespPublicRooms](t, "publicRooms")(alice.PublicRooms(bg, &mautrix.ReqPublicRooms{}))
		if len(list.Chunk) != 1 || list.Chunk[0].RoomID != room || list.Chunk[0].Name != "Lobby" || list.Chunk[0].NumJoinedMembers != 1 || list.Chunk[0].JoinRule != "public" {
			t.Fatalf("publicRooms: %+v", list.Chunk)
		}
		private := create(t, alice, &mautrix.ReqCreateRoom{Name: "Hidden"})
		wantEqual(t, "join_rules", stateOf(t, alice, private, "m.room.join_rules", ""), map[string]any{"join_rule": "invite"})
		list = must[*mautrix.RespPublicRooms](t, "publicRooms")(alice.PublicRooms(bg, &mautrix.ReqPublicRooms{}))
		wantEqual(t, "listed rooms", len(list.Chunk), 1)
	})

	t.Run("room_alias_name", func(t *testing.T) {
		room := create(t, alice, &mautrix.ReqCreateRoom{RoomAliasName: "pub"})
		res := must[*mautrix.RespAliasResolve](t, "resolve")(bob.ResolveAlias(bg, "#pub:example.org"))
		wantEqual(t, "alias target", res.RoomID, room)
		wantEqual(t, "alias servers", res.Servers, []string{"example.org"})
		wantEqual(t, "canonical alias", stateOf(t, alice, room, "m.room.canonical_alias", ""), map[string]any{"alias": "#pub:example.org"})
		_, err := bob.CreateRoom(bg, &mautrix.ReqCreateRoom{RoomAliasName: "pub"})
		wantErr(t, "taken alias", err, "M_ROOM_IN_USE", http.StatusBadRequest)
		// The failed attempt left the alias where it was.
		res = must[*mautrix.RespAliasResolve](t, "resolve")(bob.ResolveAlias(bg, "#pub:example.org"))
		wantEqual(t, "alias target after clash", res.RoomID, room)
		_, err = alice.CreateRoom(bg, &mautrix.ReqCreateRoom{RoomAliasName: "bad:name"})
		wantErr(t, "alias localpart with ':'", err, "M_INVALID_PARAM", http.StatusBadRequest)
	})

	t.Run("name topic invite is_direct", func(t *testing.T) {
		room := create(t, alice, &mautrix.ReqCreateRoom{
			Name: "Chat", Topic: "About things", Invite: []id.UserID{bob.UserID}, IsDirect: true, Preset: "trusted_private_chat",
		})
		wantEqual(t, "name", stateOf(t, alice, room, "m.room.name", ""), map[string]any{"name": "Chat"})
		wantEqual(t, "topic", stateOf(t, alice, room, "m.room.topic", ""), map[string]any{
			"topic": "About things", "m.topic": map[string]any{"m.text": []any{map[string]any{"body": "About things", "mimetype": "text/plain"}}},
		})
		member := stateOf(t, alice, room, "m.room.member", bob.ID)
		wantEqual(t, "bob's member event", member, map[string]any{"membership": "invite", "is_direct": true})
		m, err := st.Server.Rooms.Membership(bg, bob.ID, string(room))
		if err != nil || m != "invite" {
			t.Fatalf("bob's membership: %q %v", m, err)
		}
		// The invitee can accept: the room is invite-only.
		must[*mautrix.RespJoinRoom](t, "bob joins")(bob.JoinRoomByID(bg, room))
		joined := must[*mautrix.RespJoinedRooms](t, "joined_rooms")(bob.JoinedRooms(bg))
		wantEqual(t, "bob's rooms", joined.JoinedRooms, []id.RoomID{room})
	})

	t.Run("initial_state power_level_content_override creation_content", func(t *testing.T) {
		room := create(t, alice, &mautrix.ReqCreateRoom{
			Name: "From name",
			InitialState: []*event.Event{
				{Type: event.StateHistoryVisibility, StateKey: new(""), Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}}},
				{Type: event.NewEventType("com.example.setting"), StateKey: new("k"), Content: event.Content{Raw: map[string]any{"on": true}}},
				{Type: event.StateRoomName, StateKey: new(""), Content: event.Content{Raw: map[string]any{"name": "From initial_state"}}},
			},
			PowerLevelOverride: &event.PowerLevelsEventContent{EventsDefault: 10, Users: map[id.UserID]int{bob.UserID: 42}},
			CreationContent:    map[string]any{"m.federate": false, "type": "com.example.kind", "creator": "@mallory:example.org"},
		})
		wantEqual(t, "history_visibility", stateOf(t, alice, room, "m.room.history_visibility", ""), map[string]any{"history_visibility": "joined"})
		wantEqual(t, "custom state", stateOf(t, alice, room, "com.example.setting", "k"), map[string]any{"on": true})
		wantEqual(t, "name", stateOf(t, alice, room, "m.room.name", ""), map[string]any{"name": "From name"})
		pl := stateOf(t, alice, room, "m.room.power_levels", "")
		wantEqual(t, "events_default", pl["events_default"], 10.0)
		wantEqual(t, "users", pl["users"], map[string]any{bob.ID: 42.0})
		wantEqual(t, "state_default kept", pl["state_default"], 50.0)
		cc := stateOf(t, alice, room, "m.room.create", "")
		wantEqual(t, "create content", cc, map[string]any{"m.federate": false, "type": "com.example.kind", "room_version": "12"})
		// One event for each piece of state: an initial_state event
		// replaces the preset's, and name replaces initial_state's.
		msgs := must[*mautrix.RespMessages](t, "messages")(alice.Messages(bg, room, "", "", mautrix.DirectionForward, nil, 20))
		got := types(msgs.Chunk)
		if len(got) < 3 {
			t.Fatalf("initial events: %v", got)
		}
		wantEqual(t, "first initial events", got[:3], []string{"m.room.create", "m.room.member", "m.room.power_levels"})
		rest := slices.Clone(got[3:])
		slices.Sort(rest)
		wantEqual(t, "other initial events", rest, []string{
			"com.example.setting", "m.room.guest_access", "m.room.history_visibility", "m.room.join_rules", "m.room.name",
		})
		wantEqual(t, "last initial event", got[len(got)-1], "m.room.name")
	})

	t.Run("initial_state with a bad event", func(t *testing.T) {
		_, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{InitialState: []*event.Event{
			{Type: event.StateJoinRules, StateKey: new(""), Content: event.Content{Raw: map[string]any{"join_rule": "bogus"}}},
		}})
		wantErr(t, "bogus join rule", err, "M_BAD_JSON", http.StatusBadRequest)
	})
}

// TestCreateRoom_Versions creates rooms of versions 12 (the default), 10 and
// 1, and sends and reads in each.
func TestCreateRoom_Versions(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	bob := st.Member(t, "bob")
	for _, tc := range []struct{ ask, want string }{{"", "12"}, {"10", "10"}, {"1", "1"}} {
		t.Run("v"+tc.want, func(t *testing.T) {
			room := create(t, alice, &mautrix.ReqCreateRoom{RoomVersion: id.RoomVersion(tc.ask), Preset: "public_chat"})
			cc := stateOf(t, alice, room, "m.room.create", "")
			wantEqual(t, "room_version", cc["room_version"], tc.want)
			creator, hasCreator := cc["creator"]
			if tc.want == "12" {
				if strings.Contains(string(room), ":") || hasCreator {
					t.Fatalf("version 12 room %s has a server part or a creator: %v", room, cc)
				}
			} else {
				if !strings.HasSuffix(string(room), ":example.org") || creator != alice.ID {
					t.Fatalf("version %s room %s: create content %v", tc.want, room, cc)
				}
			}
			must[*mautrix.RespJoinRoom](t, "bob joins")(bob.JoinRoomByID(bg, room))
			first := say(t, alice, room, "hello "+tc.want)
			second := say(t, bob, room, "hi "+tc.want)
			if tc.want == "1" && (!strings.HasSuffix(string(first), ":example.org") || !strings.HasSuffix(string(second), ":example.org")) {
				t.Fatalf("version 1 event IDs %s %s lack the server", first, second)
			}
			ev := must[*event.Event](t, "get event")(bob.GetEvent(bg, room, first))
			wantEqual(t, "event", []any{ev.ID, ev.Sender, ev.Content.Raw["body"], ev.RoomID}, []any{first, alice.UserID, "hello " + tc.want, room})
			msgs := must[*mautrix.RespMessages](t, "messages")(bob.Messages(bg, room, "", "", mautrix.DirectionBackward, nil, 2))
			wantEqual(t, "latest", bodies(msgs.Chunk), []string{"hi " + tc.want, "hello " + tc.want})
			red := must[*mautrix.RespSendEvent](t, "redact")(alice.RedactEvent(bg, room, second, mautrix.ReqRedact{Reason: "spam"}))
			ev = must[*event.Event](t, "get redacted")(alice.GetEvent(bg, room, second))
			if len(ev.Content.Raw) != 0 || ev.Unsigned.RedactedBecause == nil || ev.Unsigned.RedactedBecause.ID != red.EventID {
				t.Fatalf("redacted event in v%s: %+v", tc.want, ev)
			}
		})
	}
	t.Run("unsupported", func(t *testing.T) {
		_, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{RoomVersion: "99"})
		wantErr(t, "version 99", err, "M_UNSUPPORTED_ROOM_VERSION", http.StatusBadRequest)
	})
	t.Run("invalid initial state", func(t *testing.T) {
		// In version 10 the creator's level comes from the power levels:
		// set below state_default, the preset's events cannot be sent.
		_, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{RoomVersion: "10", PowerLevelOverride: &event.PowerLevelsEventContent{Users: map[id.UserID]int{alice.UserID: 10}}})
		wantErr(t, "creator below state_default", err, "M_INVALID_ROOM_STATE", http.StatusBadRequest)
		joined := must[*mautrix.RespJoinedRooms](t, "joined_rooms")(alice.JoinedRooms(bg))
		wantEqual(t, "alice's rooms", len(joined.JoinedRooms), 3)
	})
}
