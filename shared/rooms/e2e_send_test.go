package rooms_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestSend_Transactions: a retried transaction gives back the first event
// and sends nothing; transaction IDs are scoped to the room and device.
func TestSend_Transactions(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	room := create(t, alice, &mautrix.ReqCreateRoom{})
	other := create(t, alice, &mautrix.ReqCreateRoom{})
	text := &event.MessageEventContent{MsgType: event.MsgText, Body: "once"}

	first := must[*mautrix.RespSendEvent](t, "send")(alice.SendMessageEvent(bg, room, event.EventMessage, text, mautrix.ReqSendEvent{TransactionID: "txn1"}))
	again := must[*mautrix.RespSendEvent](t, "retry")(alice.SendMessageEvent(bg, room, event.EventMessage, text, mautrix.ReqSendEvent{TransactionID: "txn1"}))
	wantEqual(t, "event of the retried transaction", again.EventID, first.EventID)
	elsewhere := must[*mautrix.RespSendEvent](t, "send in another room")(alice.SendMessageEvent(bg, other, event.EventMessage, text, mautrix.ReqSendEvent{TransactionID: "txn1"}))
	if elsewhere.EventID == first.EventID {
		t.Fatal("the same transaction ID in another room gave the same event")
	}
	// Another device of the same user has its own transaction IDs.
	phone := must[*mautrix.Client](t, "client")(mautrix.NewClient(st.URL, "", ""))
	must[*mautrix.RespLogin](t, "login")(phone.Login(bg, &mautrix.ReqLogin{
		Type: mautrix.AuthTypePassword, Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"},
		Password: "correct horse battery staple", StoreCredentials: true,
	}))
	fromPhone := must[*mautrix.RespSendEvent](t, "send from another device")(phone.SendMessageEvent(bg, room, event.EventMessage, text, mautrix.ReqSendEvent{TransactionID: "txn1"}))
	if fromPhone.EventID == first.EventID {
		t.Fatal("the same transaction ID from another device gave the same event")
	}
	msgs := must[*mautrix.RespMessages](t, "messages")(alice.Messages(bg, room, "", "", mautrix.DirectionBackward, nil, 50))
	wantEqual(t, "messages", bodies(msgs.Chunk), []string{"once", "once"})
	// Only the sending device sees its transaction ID in unsigned.
	wantEqual(t, "transaction ID for the sender", must[*event.Event](t, "event")(alice.GetEvent(bg, room, first.EventID)).Unsigned.TransactionID, "txn1")
	onPhone := must[*event.Event](t, "event")(phone.GetEvent(bg, room, first.EventID))
	wantEqual(t, "transaction ID on another device", onPhone.Unsigned.TransactionID, "")

	red := must[*mautrix.RespSendEvent](t, "redact")(alice.RedactEvent(bg, room, first.EventID, mautrix.ReqRedact{TxnID: "r1"}))
	redAgain := must[*mautrix.RespSendEvent](t, "redact retry")(alice.RedactEvent(bg, room, first.EventID, mautrix.ReqRedact{TxnID: "r1"}))
	wantEqual(t, "event of the retried redaction", redAgain.EventID, red.EventID)
	msgs = must[*mautrix.RespMessages](t, "messages")(alice.Messages(bg, room, "", "", mautrix.DirectionBackward, nil, 3))
	wantEqual(t, "last events", types(msgs.Chunk), []string{"m.room.redaction", "m.room.message", "m.room.message"})
}

// TestSend_State covers state PUTs and GETs, with empty, plain and
// slash-holding state keys.
func TestSend_State(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	bob := st.Member(t, "bob")
	room := create(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	must[*mautrix.RespJoinRoom](t, "bob joins")(bob.JoinRoomByID(bg, room))

	for _, key := range []string{"", "k", "a/b", "@alice:example.org"} {
		content := map[string]any{"key was": key}
		resp := must[*mautrix.RespSendEvent](t, "state PUT")(alice.SendStateEvent(bg, room, event.NewEventType("com.example.state"), key, content))
		wantEqual(t, "state with key "+key, stateOf(t, bob, room, "com.example.state", key), content)
		ev := must[*event.Event](t, "full state event")(bob.FullStateEvent(bg, room, event.NewEventType("com.example.state"), key))
		wantEqual(t, "event of key "+key, []any{ev.ID, ev.Sender, ev.GetStateKey()}, []any{resp.EventID, alice.UserID, key})
	}
	must[*mautrix.RespSendEvent](t, "topic")(alice.SendStateEvent(bg, room, event.StateTopic, "", map[string]any{"topic": "new topic"}))
	wantEqual(t, "topic", stateOf(t, bob, room, "m.room.topic", ""), map[string]any{"topic": "new topic"})

	_, err := bob.SendStateEvent(bg, room, event.StateTopic, "", map[string]any{"topic": "bob's topic"})
	wantErr(t, "state PUT below state_default", err, "M_FORBIDDEN", http.StatusForbidden)
	wantEqual(t, "topic after refusal", stateOf(t, bob, room, "m.room.topic", ""), map[string]any{"topic": "new topic"})
	_, err = alice.SendStateEvent(bg, room, event.StateCreate, "", map[string]any{"room_version": "12"})
	// Version 12: Synapse's 400 M_INVALID_PARAM (TestV12_CreateAndCreatorsRefused).
	wantErr(t, "second create event", err, "M_INVALID_PARAM", http.StatusBadRequest)
	var c map[string]any
	err = bob.StateEvent(bg, room, event.NewEventType("com.example.unset"), "", &c)
	wantErr(t, "unset state", err, "M_NOT_FOUND", http.StatusNotFound)
	// A state event's content must be an object.
	err = rawBytes(alice, http.MethodPut, []byte(`["x"]`), "v3", "rooms", room, "state", "com.example.state", "k")
	wantErr(t, "array content", err, "M_BAD_JSON", http.StatusBadRequest)
}

// TestSend_Redaction: a redacted event loses its content everywhere it is
// served and carries the redaction in unsigned.redacted_because.
func TestSend_Redaction(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	bob := st.Member(t, "bob")
	room := create(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	must[*mautrix.RespJoinRoom](t, "bob joins")(bob.JoinRoomByID(bg, room))
	secret := say(t, alice, room, "secret")
	say(t, bob, room, "after")

	_, err := bob.RedactEvent(bg, room, secret)
	wantErr(t, "redact another's event below the redact level", err, "M_FORBIDDEN", http.StatusForbidden)
	red := must[*mautrix.RespSendEvent](t, "redact")(alice.RedactEvent(bg, room, secret, mautrix.ReqRedact{Reason: "oops"}))

	check := func(where string, ev *event.Event) {
		t.Helper()
		if ev.ID != secret || ev.Type != event.EventMessage || len(ev.Content.Raw) != 0 {
			t.Fatalf("%s: redacted event %s %s content %v", where, ev.ID, ev.Type.Type, ev.Content.Raw)
		}
		because := ev.Unsigned.RedactedBecause
		if because == nil || because.ID != red.EventID || because.Sender != alice.UserID || because.Content.Raw["reason"] != "oops" || because.Content.Raw["redacts"] != secret.String() {
			t.Fatalf("%s: redacted_because %+v", where, because)
		}
	}
	check("/event", must[*event.Event](t, "event")(bob.GetEvent(bg, room, secret)))
	msgs := must[*mautrix.RespMessages](t, "messages")(bob.Messages(bg, room, "", "", mautrix.DirectionBackward, nil, 3))
	wantEqual(t, "timeline", types(msgs.Chunk), []string{"m.room.redaction", "m.room.message", "m.room.message"})
	wantEqual(t, "redaction target", msgs.Chunk[0].Redacts, secret)
	wantEqual(t, "unredacted neighbour", msgs.Chunk[1].Content.Raw["body"], "after")
	check("/messages", msgs.Chunk[2])
	ctx := must[*mautrix.RespContext](t, "context")(bob.Context(bg, room, secret, nil, 2))
	check("/context", ctx.Event)

	_, err = alice.RedactEvent(bg, room, "$nosuchevent")
	wantErr(t, "redact an unknown event", err, "M_NOT_FOUND", http.StatusNotFound)
	// Redacting twice is allowed; the first redaction stays the reason.
	must[*mautrix.RespSendEvent](t, "redact again")(alice.RedactEvent(bg, room, secret, mautrix.ReqRedact{Reason: "twice"}))
	check("/event after a second redaction", must[*event.Event](t, "event")(bob.GetEvent(bg, room, secret)))

	// A state event keeps the keys the redaction algorithm preserves.
	must[*mautrix.RespSendEvent](t, "join rules")(alice.SendStateEvent(bg, room, event.StateJoinRules, "", map[string]any{"join_rule": "public", "extra": "x"}))
	jr := must[*event.Event](t, "join rules event")(alice.FullStateEvent(bg, room, event.StateJoinRules, ""))
	must[*mautrix.RespSendEvent](t, "redact join rules")(alice.RedactEvent(bg, room, jr.ID))
	ev := must[*event.Event](t, "redacted join rules")(alice.GetEvent(bg, room, jr.ID))
	wantEqual(t, "redacted join rules content", ev.Content.Raw, map[string]any{"join_rule": "public"})
}

// TestSend_RedactionThroughSend: m.room.redaction sent with /send works in
// every room version, with the same permission as /redact; before version
// 11 the target moves from the content to the top level.
func TestSend_RedactionThroughSend(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	bob := st.Member(t, "bob")
	for _, v := range []string{"10", "12"} {
		t.Run("v"+v, func(t *testing.T) {
			room := create(t, alice, &mautrix.ReqCreateRoom{RoomVersion: id.RoomVersion(v), Preset: "public_chat"})
			must[*mautrix.RespJoinRoom](t, "bob joins")(bob.JoinRoomByID(bg, room))
			target := say(t, alice, room, "doomed")
			_, err := bob.SendMessageEvent(bg, room, event.EventRedaction, map[string]any{"redacts": target})
			wantErr(t, "redaction of another's event below the redact level", err, "M_FORBIDDEN", http.StatusForbidden)
			_, err = alice.SendMessageEvent(bg, room, event.EventRedaction, map[string]any{"reason": "no target"})
			wantErr(t, "redaction without redacts", err, "M_BAD_JSON", http.StatusBadRequest)
			_, err = alice.SendMessageEvent(bg, room, event.EventRedaction, map[string]any{"redacts": "$nosuchevent"})
			wantErr(t, "redaction of an unknown event", err, "M_NOT_FOUND", http.StatusNotFound)

			red := must[*mautrix.RespSendEvent](t, "redaction")(alice.SendMessageEvent(bg, room, event.EventRedaction, map[string]any{"redacts": target, "reason": "by send"}))
			ev := must[*event.Event](t, "redacted event")(bob.GetEvent(bg, room, target))
			if len(ev.Content.Raw) != 0 || ev.Unsigned.RedactedBecause == nil || ev.Unsigned.RedactedBecause.ID != red.EventID {
				t.Fatalf("event after a redaction through /send: %+v", ev)
			}
			pdu, err := st.Server.Rooms.Event(bg, string(room), red.EventID.String())
			if err != nil {
				t.Fatal(err)
			}
			var content map[string]any
			if err := json.Unmarshal(pdu.PDU.Content(), &content); err != nil {
				t.Fatal(err)
			}
			wantContent := map[string]any{"reason": "by send"}
			if v == "12" {
				wantContent["redacts"] = target.String()
			}
			wantEqual(t, "stored redaction content", content, wantContent)
			wantEqual(t, "redaction target", pdu.PDU.Redacts(), target.String())
		})
	}
}

// TestSend_RedactedState: a redacted state event is served redacted as
// current state too; a redacted topic removes the topic (the spec's note
// under Redactions).
func TestSend_RedactedState(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	room := create(t, alice, &mautrix.ReqCreateRoom{Visibility: "public", Topic: "secret topic"})
	ev := must[*event.Event](t, "topic")(alice.FullStateEvent(bg, room, event.StateTopic, ""))
	must[*mautrix.RespSendEvent](t, "redact")(alice.RedactEvent(bg, room, ev.ID))
	wantEqual(t, "topic after redaction", stateOf(t, alice, room, "m.room.topic", ""), map[string]any{})
	full := must[mautrix.RoomStateMap](t, "state")(alice.State(bg, room))
	wantEqual(t, "topic in /state", full[event.StateTopic][""].Content.Raw, map[string]any{})
	list := must[*mautrix.RespPublicRooms](t, "publicRooms")(alice.PublicRooms(bg, &mautrix.ReqPublicRooms{}))
	wantEqual(t, "topic in the directory", list.Chunk[0].Topic, "")
}
