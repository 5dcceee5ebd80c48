package rooms_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestLimits_Size: events over the spec's size limits are M_TOO_LARGE and
// are not stored.
func TestLimits_Size(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	room := create(t, alice, &mautrix.ReqCreateRoom{})
	head := func() id.EventID {
		t.Helper()
		return msgs(t, alice, room, "", "", mautrix.DirectionBackward, nil, 1).Chunk[0].ID
	}
	before := head()

	for _, tc := range []struct {
		name string
		send func() error
	}{
		{"message over 65536 bytes", func() error {
			_, err := alice.SendText(bg, room, strings.Repeat("a", 70_000))
			return err
		}},
		{"message whose content fits but whose event does not", func() error {
			_, err := alice.SendText(bg, room, strings.Repeat("a", 65_400))
			return err
		}},
		{"state event over 65536 bytes", func() error {
			_, err := alice.SendStateEvent(bg, room, event.NewEventType("com.example.big"), "", map[string]any{"v": strings.Repeat("b", 70_000)})
			return err
		}},
		{"state key over 255 bytes", func() error {
			_, err := alice.SendStateEvent(bg, room, event.NewEventType("com.example.key"), strings.Repeat("k", 256), map[string]any{})
			return err
		}},
		{"type over 255 bytes", func() error {
			_, err := alice.SendMessageEvent(bg, room, event.NewEventType(strings.Repeat("t", 256)), map[string]any{})
			return err
		}},
		{"request body over 1 MiB", func() error {
			_, err := alice.SendText(bg, room, strings.Repeat("c", 1<<20+1))
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, tc.name, tc.send(), "M_TOO_LARGE", http.StatusRequestEntityTooLarge)
		})
	}
	wantEqual(t, "last event after the refusals", head(), before)
	// Just under the limit is fine.
	ok := must[*mautrix.RespSendEvent](t, "big message")(alice.SendText(bg, room, strings.Repeat("a", 64_000)))
	wantEqual(t, "last event", head(), ok.EventID)
	must[*mautrix.RespSendEvent](t, "255-byte state key")(alice.SendStateEvent(bg, room, event.NewEventType("com.example.key"), strings.Repeat("k", 255), map[string]any{}))
}

// TestLimits_BadInput covers malformed IDs in paths, unknown rooms and
// events, malformed content and bodies.
func TestLimits_BadInput(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	room := create(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	msg := say(t, alice, room, "hello")
	text := map[string]any{"msgtype": "m.text", "body": "x"}

	t.Run("invalid room IDs", func(t *testing.T) {
		for _, bad := range []id.RoomID{"notaroom", "!", "!has space:example.org", "!abc:bad server"} {
			_, err := alice.SendMessageEvent(bg, bad, event.EventMessage, text)
			wantErr(t, "send to "+bad.String(), err, "M_INVALID_PARAM", http.StatusBadRequest)
			_, err = alice.Messages(bg, bad, "", "", mautrix.DirectionBackward, nil, 1)
			wantErr(t, "messages of "+bad.String(), err, "M_INVALID_PARAM", http.StatusBadRequest)
			_, err = alice.SendStateEvent(bg, bad, event.StateTopic, "", map[string]any{"topic": "x"})
			wantErr(t, "state PUT to "+bad.String(), err, "M_INVALID_PARAM", http.StatusBadRequest)
			_, err = alice.JoinRoomByID(bg, bad)
			wantErr(t, "join "+bad.String(), err, "M_INVALID_PARAM", http.StatusBadRequest)
			_, err = alice.GetEvent(bg, bad, msg)
			wantErr(t, "event of "+bad.String(), err, "M_INVALID_PARAM", http.StatusBadRequest)
		}
	})

	t.Run("invalid event IDs", func(t *testing.T) {
		for _, bad := range []id.EventID{"notanevent", "$", "$a b"} {
			_, err := alice.GetEvent(bg, room, bad)
			wantErr(t, "event "+bad.String(), err, "M_INVALID_PARAM", http.StatusBadRequest)
			_, err = alice.Context(bg, room, bad, nil, 2)
			wantErr(t, "context of "+bad.String(), err, "M_INVALID_PARAM", http.StatusBadRequest)
			_, err = alice.RedactEvent(bg, room, bad)
			wantErr(t, "redact "+bad.String(), err, "M_INVALID_PARAM", http.StatusBadRequest)
			_, err = alice.GetRelations(bg, room, bad, &mautrix.ReqGetRelations{})
			wantErr(t, "relations of "+bad.String(), err, "M_INVALID_PARAM", http.StatusBadRequest)
		}
	})

	t.Run("unknown rooms", func(t *testing.T) {
		unknown := id.RoomID("!nosuchroom:example.org")
		_, err := alice.SendMessageEvent(bg, unknown, event.EventMessage, text)
		wantErr(t, "send to an unknown room", err, "M_FORBIDDEN", http.StatusForbidden)
		_, err = alice.SendStateEvent(bg, unknown, event.StateTopic, "", map[string]any{"topic": "x"})
		wantErr(t, "state PUT to an unknown room", err, "M_FORBIDDEN", http.StatusForbidden)
		_, err = alice.RedactEvent(bg, unknown, msg)
		wantErr(t, "redact in an unknown room", err, "M_FORBIDDEN", http.StatusForbidden)
		_, err = alice.JoinRoomByID(bg, unknown)
		wantErr(t, "join an unknown room", err, "M_NOT_FOUND", http.StatusNotFound)
		_, err = alice.Messages(bg, unknown, "", "", mautrix.DirectionBackward, nil, 1)
		wantErr(t, "messages of an unknown room", err, "M_FORBIDDEN", http.StatusForbidden)
		_, err = alice.GetEvent(bg, unknown, msg)
		wantErr(t, "event of an unknown room", err, "M_NOT_FOUND", http.StatusNotFound)
		_, err = alice.InviteUser(bg, unknown, &mautrix.ReqInviteUser{UserID: "@bob:example.org"})
		wantErr(t, "invite into an unknown room", err, "M_FORBIDDEN", http.StatusForbidden)
		_, err = alice.LeaveRoom(bg, unknown)
		wantErr(t, "leave an unknown room", err, "M_FORBIDDEN", http.StatusForbidden)
	})

	t.Run("malformed state content", func(t *testing.T) {
		for _, tc := range []struct {
			typ     event.Type
			key     string
			content map[string]any
		}{
			{event.StatePowerLevels, "", map[string]any{"ban": "x"}},
			{event.StatePowerLevels, "", map[string]any{"users": map[string]any{"notauser": 10}}},
			{event.StatePowerLevels, "", map[string]any{"events": map[string]any{"m.room.name": 1.5}}},
			{event.StateJoinRules, "", map[string]any{"join_rule": "bogus"}},
			{event.StateJoinRules, "", map[string]any{}},
			{event.StateHistoryVisibility, "", map[string]any{"history_visibility": "sometimes"}},
			{event.StateMember, alice.ID, map[string]any{"membership": "hovering"}},
			{event.StateEncryption, "", map[string]any{}},
		} {
			_, err := alice.SendStateEvent(bg, room, tc.typ, tc.key, tc.content)
			wantErr(t, tc.typ.Type+" "+asString(tc.content), err, "M_BAD_JSON", http.StatusBadRequest)
		}
		pl := stateOf(t, alice, room, "m.room.power_levels", "")
		wantEqual(t, "ban level after refusals", pl["ban"], 50.0)
		wantEqual(t, "join rules after refusals", stateOf(t, alice, room, "m.room.join_rules", ""), map[string]any{"join_rule": "public"})
		wantEqual(t, "history visibility after refusals", stateOf(t, alice, room, "m.room.history_visibility", ""), map[string]any{"history_visibility": "shared"})
		var enc map[string]any
		err := alice.StateEvent(bg, room, event.StateEncryption, "", &enc)
		wantErr(t, "encryption after refusal", err, "M_NOT_FOUND", http.StatusNotFound)
		// The timeline ends with the message sent before: nothing was stored.
		wantEqual(t, "last event", msgs(t, alice, room, "", "", mautrix.DirectionBackward, nil, 1).Chunk[0].ID, msg)
	})

	t.Run("bodies that are not JSON objects", func(t *testing.T) {
		for _, tc := range []struct {
			name, body string
			code       string
		}{
			{"array", `[1,2]`, "M_BAD_JSON"},
			{"string", `"text"`, "M_BAD_JSON"},
			{"not JSON", `{"msgtype":`, "M_NOT_JSON"},
			{"invalid UTF-8", "{\"body\":\"\xff\"}", "M_NOT_JSON"},
		} {
			err := rawBytes(alice, http.MethodPut, []byte(tc.body), "v3", "rooms", room, "send", "m.room.message", "txn-"+tc.name)
			wantErr(t, "send "+tc.name, err, tc.code, http.StatusBadRequest)
			err = rawBytes(alice, http.MethodPost, []byte(tc.body), "v3", "createRoom")
			wantErr(t, "createRoom "+tc.name, err, tc.code, http.StatusBadRequest)
			err = rawBytes(alice, http.MethodPost, []byte(tc.body), "v3", "rooms", room, "invite")
			wantErr(t, "invite "+tc.name, err, tc.code, http.StatusBadRequest)
		}
		err := raw(alice, http.MethodPost, map[string]any{"name": 5}, nil, "v3", "createRoom")
		wantErr(t, "createRoom with a number for a name", err, "M_BAD_JSON", http.StatusBadRequest)
		err = raw(alice, http.MethodPost, map[string]any{"user_id": 5}, nil, "v3", "rooms", room, "invite")
		wantErr(t, "invite with a number for a user", err, "M_BAD_JSON", http.StatusBadRequest)
		err = raw(alice, http.MethodPost, map[string]any{}, nil, "v3", "rooms", room, "invite")
		wantErr(t, "invite without a user", err, "M_MISSING_PARAM", http.StatusBadRequest)
		err = raw(alice, http.MethodPost, map[string]any{"power_level_content_override": map[string]any{"ban": "x"}}, nil, "v3", "createRoom")
		wantErr(t, "createRoom with malformed power levels", err, "M_BAD_JSON", http.StatusBadRequest)
		// Numbers a signed event cannot hold, as the client wrote them: not
		// read as 100 and 2 and signed so.
		for _, body := range []string{`{"power_level_content_override":{"ban":1e2}}`, `{"creation_content":{"m.federate":true,"x":2.0}}`} {
			err = rawBytes(alice, http.MethodPost, []byte(body), "v3", "createRoom")
			wantErr(t, "createRoom "+body, err, "M_BAD_JSON", http.StatusBadRequest)
		}
		err = raw(alice, http.MethodPost, map[string]any{"initial_state": []any{map[string]any{"type": "m.room.join_rules", "content": map[string]any{"join_rule": "bogus"}}}}, nil, "v3", "createRoom")
		wantErr(t, "createRoom with a malformed join rule", err, "M_BAD_JSON", http.StatusBadRequest)
		wantEqual(t, "alice's rooms after refused creations", must[*mautrix.RespJoinedRooms](t, "joined_rooms")(alice.JoinedRooms(bg)).JoinedRooms, []id.RoomID{room})
		err = raw(alice, http.MethodPost, map[string]any{"preset": "party"}, nil, "v3", "createRoom")
		wantErr(t, "createRoom with an unknown preset", err, "M_INVALID_PARAM", http.StatusBadRequest)
		err = raw(alice, http.MethodPost, map[string]any{"invite": []string{"bob"}}, nil, "v3", "createRoom")
		wantErr(t, "createRoom inviting an invalid user ID", err, "M_INVALID_PARAM", http.StatusBadRequest)
	})

	t.Run("no access token", func(t *testing.T) {
		anon := mxUser{Client: must[*mautrix.Client](t, "client")(mautrix.NewClient(st.URL, "", ""))}
		_, err := anon.SendMessageEvent(bg, room, event.EventMessage, text)
		wantErr(t, "send without a token", err, "M_MISSING_TOKEN", http.StatusUnauthorized)
		_, err = anon.CreateRoom(bg, &mautrix.ReqCreateRoom{})
		wantErr(t, "createRoom without a token", err, "M_MISSING_TOKEN", http.StatusUnauthorized)
	})
}

// asString is v as JSON, for messages.
func asString(v any) string {
	doc, _ := json.Marshal(v)
	return string(doc)
}
