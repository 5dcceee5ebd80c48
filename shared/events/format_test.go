package events

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
)

// fixtureMillis is the origin_server_ts of fixture events; fixtureNow is
// 1234 ms later, so every client event has age 1234.
const fixtureMillis = 1_700_000_000_000

func fixtureNow() time.Time { return time.UnixMilli(fixtureMillis + 1234) }

// fixtureEvent builds and signs a real event of room version v as the
// server example.org would.
func fixtureEvent(t testing.TB, v string, pe gomatrixserverlib.ProtoEvent) gomatrixserverlib.PDU {
	t.Helper()
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	if pe.PrevEvents == nil {
		pe.PrevEvents = []string{}
	}
	if pe.AuthEvents == nil {
		pe.AuthEvents = []string{}
	}
	if pe.Depth == 0 {
		pe.Depth = 2
	}
	b := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersion(v)).NewEventBuilderFromProtoEvent(&pe)
	ev, err := b.Build(time.UnixMilli(fixtureMillis), "example.org", "ed25519:a", key)
	if err != nil {
		t.Fatalf("build %s event of room version %s: %v", pe.Type, v, err)
	}
	return ev
}

func ptr[T any](v T) *T { return &v }

// fixtureCreateV12 is a version 12 create event, whose room ID is its hash.
func fixtureCreateV12(t testing.TB) gomatrixserverlib.PDU {
	return fixtureEvent(t, "12", gomatrixserverlib.ProtoEvent{
		SenderID: "@alice:example.org", Type: "m.room.create", StateKey: ptr(""),
		Content: []byte(`{"room_version":"12"}`), Depth: 1,
	})
}

// decodeObject decodes serialized JSON, failing the test if it is not an
// object.
func decodeObject(t *testing.T, raw []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("output is not a JSON object: %v\n%s", err, raw)
	}
	return m
}

// equalJSON compares raw with want, a JSON text, as decoded values.
func equalJSON(t *testing.T, raw []byte, want string) {
	t.Helper()
	var got, exp any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, raw)
	}
	if err := json.Unmarshal([]byte(want), &exp); err != nil {
		t.Fatalf("bad want %s: %v", want, err)
	}
	if !reflect.DeepEqual(got, exp) {
		t.Errorf("got  %s\nwant %s", raw, want)
	}
}

func mustClientEvent(t *testing.T, pdu gomatrixserverlib.PDU, format Format, opts ...Option) json.RawMessage {
	t.Helper()
	out, err := ClientEvent(pdu, format, fixtureNow(), opts...)
	if err != nil {
		t.Fatalf("ClientEvent(%s, %q): %v", pdu.EventID(), format, err)
	}
	if !json.Valid(out) {
		t.Fatalf("ClientEvent(%s, %q) is not valid JSON: %s", pdu.EventID(), format, out)
	}
	return out
}

func TestFormatClientEvent_V1Message(t *testing.T) {
	pdu := fixtureEvent(t, "1", gomatrixserverlib.ProtoEvent{
		SenderID: "@alice:example.org", RoomID: "!room:example.org", Type: "m.room.message",
		Content: []byte(`{"body":"hi","msgtype":"m.text"}`),
	})
	if !strings.HasSuffix(pdu.EventID(), ":example.org") {
		t.Fatalf("v1 event ID %q has no server part", pdu.EventID())
	}
	got := mustClientEvent(t, pdu, FormatClient)
	// Byte for byte: the keys come sorted and no state_key for a message.
	want := fmt.Sprintf(`{"content":{"body":"hi","msgtype":"m.text"},"event_id":%q,"origin_server_ts":1700000000000,`+
		`"room_id":"!room:example.org","sender":"@alice:example.org","type":"m.room.message","unsigned":{"age":1234}}`,
		pdu.EventID())
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestFormatClientEvent_V11StateWithUnsigned(t *testing.T) {
	pdu := fixtureEvent(t, "11", gomatrixserverlib.ProtoEvent{
		SenderID: "@alice:example.org", RoomID: "!room:example.org", Type: "m.room.name", StateKey: ptr(""),
		Content: []byte(`{"name":"Pub"}`),
		// As a careless store might keep it: only the kept keys reach clients.
		Unsigned: []byte(`{"age_ts":5,"prev_content":{"name":"Old"},"transaction_id":"m1","membership":"join","internal":"x"}`),
	})
	got := mustClientEvent(t, pdu, FormatClient)
	equalJSON(t, got, fmt.Sprintf(`{"content":{"name":"Pub"},"event_id":%q,"origin_server_ts":1700000000000,
		"room_id":"!room:example.org","sender":"@alice:example.org","state_key":"","type":"m.room.name",
		"unsigned":{"age":1234,"prev_content":{"name":"Old"}}}`, pdu.EventID()))
}

func TestFormatClientEvent_Options(t *testing.T) {
	pdu := fixtureEvent(t, "11", gomatrixserverlib.ProtoEvent{
		SenderID: "@alice:example.org", RoomID: "!room:example.org", Type: "m.room.topic", StateKey: ptr(""),
		Content:  []byte(`{"topic":"new"}`),
		Unsigned: []byte(`{"prev_content":{"topic":"stored"}}`),
	})
	got := mustClientEvent(t, pdu, FormatClient,
		WithoutRoomID(),
		WithTransactionID("m1700000000000.0"),
		WithMembership("join"),
		WithPrevContent(json.RawMessage(`{"topic":"old"}`)),
		WithRelations(json.RawMessage(`{"m.thread":{"count":2}}`)),
	)
	equalJSON(t, got, fmt.Sprintf(`{"content":{"topic":"new"},"event_id":%q,"origin_server_ts":1700000000000,
		"sender":"@alice:example.org","state_key":"","type":"m.room.topic",
		"unsigned":{"age":1234,"m.relations":{"m.thread":{"count":2}},"membership":"join","prev_content":{"topic":"old"},
		"transaction_id":"m1700000000000.0"}}`, pdu.EventID()))

	if _, err := ClientEvent(pdu, FormatClient, fixtureNow(), WithPrevContent(json.RawMessage(`{"topic"`))); err == nil {
		t.Error("ClientEvent with invalid prev_content: got no error")
	}
	if _, err := ClientEvent(pdu, "raw", fixtureNow()); err == nil {
		t.Error(`ClientEvent with format "raw": got no error`)
	}
}

func TestFormatClientEvent_InviteRoomState(t *testing.T) {
	create := fixtureCreateV12(t)
	name := fixtureEvent(t, "12", gomatrixserverlib.ProtoEvent{
		SenderID: "@alice:example.org", RoomID: create.RoomID().String(), Type: "m.room.name", StateKey: ptr(""),
		Content: []byte(`{"name":"Pub"}`),
	})
	// As an invite over federation brings it: the create event as a full
	// PDU, the rest stripped.
	nameStripped, _ := StrippedState(name)
	// A timestamp on any other event, or one that is no integer, is dropped.
	topic := json.RawMessage(`{"content":{"topic":"t"},"sender":"@alice:example.org","state_key":"","type":"m.room.topic","origin_server_ts":5}`)
	roomState, _ := json.Marshal([]any{json.RawMessage(create.JSON()), nameStripped, topic})
	invite := fixtureEvent(t, "12", gomatrixserverlib.ProtoEvent{
		SenderID: "@alice:example.org", RoomID: create.RoomID().String(), Type: "m.room.member",
		StateKey: ptr("@bob:example.org"), Content: []byte(`{"membership":"invite"}`),
		Unsigned: []byte(`{"invite_room_state":` + string(roomState) + `}`),
	})
	got := decodeObject(t, mustClientEvent(t, invite, FormatClient))
	state, _ := json.Marshal(got["unsigned"].(map[string]any)["invite_room_state"])
	// The create event keeps its origin_server_ts (MSC4311).
	equalJSON(t, state, `[
		{"content":{"room_version":"12"},"origin_server_ts":1700000000000,"sender":"@alice:example.org","state_key":"","type":"m.room.create"},
		{"content":{"name":"Pub"},"sender":"@alice:example.org","state_key":"","type":"m.room.name"},
		{"content":{"topic":"t"},"sender":"@alice:example.org","state_key":"","type":"m.room.topic"}]`)
}

func TestFormatClientEvent_V12Create(t *testing.T) {
	create := fixtureCreateV12(t)
	wantRoom := "!" + strings.TrimPrefix(create.EventID(), "$")
	if got := create.RoomID().String(); got != wantRoom {
		t.Fatalf("gomatrixserverlib RoomID() of a v12 create event = %q, want %q", got, wantRoom)
	}
	if bytes.Contains(create.JSON(), []byte(`"room_id"`)) {
		t.Fatalf("v12 create PDU has a room_id: %s", create.JSON())
	}
	got := mustClientEvent(t, create, FormatClient)
	equalJSON(t, got, fmt.Sprintf(`{"content":{"room_version":"12"},"event_id":%q,"origin_server_ts":1700000000000,
		"room_id":%q,"sender":"@alice:example.org","state_key":"","type":"m.room.create","unsigned":{"age":1234}}`,
		create.EventID(), wantRoom))

	msg := fixtureEvent(t, "12", gomatrixserverlib.ProtoEvent{
		SenderID: "@alice:example.org", RoomID: wantRoom, Type: "m.room.message",
		Content: []byte(`{"body":"first"}`),
	})
	if room := decodeObject(t, mustClientEvent(t, msg, FormatClient))["room_id"]; room != wantRoom {
		t.Errorf("room_id of a message in the v12 room = %v, want %q", room, wantRoom)
	}
}

func TestFormatClientEvent_Federation(t *testing.T) {
	create := fixtureCreateV12(t)
	got := decodeObject(t, mustClientEvent(t, create, FormatFederation, WithoutRoomID()))
	if got["event_id"] != create.EventID() {
		t.Errorf("event_id = %v, want %q", got["event_id"], create.EventID())
	}
	for _, key := range []string{"hashes", "signatures", "auth_events", "prev_events", "depth", "origin_server_ts"} {
		if _, ok := got[key]; !ok {
			t.Errorf("federation format lacks %s: %v", key, got)
		}
	}
	if _, ok := got["room_id"]; ok {
		t.Errorf("federation format of a v12 create event has a room_id: %v", got)
	}
	if want := map[string]any{"age": 1234.0}; !reflect.DeepEqual(got["unsigned"], want) {
		t.Errorf("unsigned = %v, want %v", got["unsigned"], want)
	}
}

func TestFormatClientEvent_Redaction(t *testing.T) {
	const target = "$target"
	tests := []struct {
		name    string
		version string
		pe      gomatrixserverlib.ProtoEvent
		content string
	}{{
		name:    "V10TopLevel",
		version: "10",
		pe:      gomatrixserverlib.ProtoEvent{Redacts: target, Content: []byte(`{"reason":"spam"}`)},
		content: `{"reason":"spam","redacts":"$target"}`,
	}, {
		name:    "V1TopLevelWinsOverContent",
		version: "1",
		pe:      gomatrixserverlib.ProtoEvent{Redacts: target, Content: []byte(`{"redacts":"$other"}`)},
		content: `{"redacts":"$target"}`,
	}, {
		name:    "V11Content",
		version: "11",
		pe:      gomatrixserverlib.ProtoEvent{Content: []byte(`{"reason":"spam","redacts":"$target"}`)},
		content: `{"reason":"spam","redacts":"$target"}`,
	}, {
		name:    "V12ContentWinsOverTopLevel",
		version: "12",
		pe:      gomatrixserverlib.ProtoEvent{Redacts: "$other", Content: []byte(`{"redacts":"$target"}`)},
		content: `{"redacts":"$target"}`,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pe := tc.pe
			pe.SenderID, pe.Type = "@mod:example.org", "m.room.redaction"
			pe.RoomID = "!room:example.org"
			if tc.version == "12" {
				pe.RoomID = "!" + strings.TrimPrefix(fixtureCreateV12(t).EventID(), "$")
			}
			pdu := fixtureEvent(t, tc.version, pe)
			if pdu.Redacts() != pe.Redacts {
				t.Fatalf("top-level redacts of the PDU = %q, want %q", pdu.Redacts(), pe.Redacts)
			}
			got := decodeObject(t, mustClientEvent(t, pdu, FormatClient))
			if got["redacts"] != target {
				t.Errorf("redacts = %v, want %q", got["redacts"], target)
			}
			content, _ := json.Marshal(got["content"])
			equalJSON(t, content, tc.content)
		})
	}
}

func TestFormatClientEvent_Redacted(t *testing.T) {
	pdu := fixtureEvent(t, "11", gomatrixserverlib.ProtoEvent{
		SenderID: "@alice:example.org", RoomID: "!room:example.org", Type: "m.room.message",
		Content: []byte(`{"body":"rude","msgtype":"m.text"}`),
	})
	eventID := pdu.EventID()
	redaction := fixtureEvent(t, "11", gomatrixserverlib.ProtoEvent{
		SenderID: "@mod:example.org", RoomID: "!room:example.org", Type: "m.room.redaction",
		Content: []byte(fmt.Sprintf(`{"redacts":%q}`, eventID)),
	})
	because := mustClientEvent(t, redaction, FormatClient, WithoutRoomID())
	pdu.Redact()
	if !pdu.Redacted() || pdu.EventID() != eventID {
		t.Fatalf("Redact: redacted %v, event ID %s, want true, %s", pdu.Redacted(), pdu.EventID(), eventID)
	}
	got := mustClientEvent(t, pdu, FormatClient, WithRedactedBecause(because))
	equalJSON(t, got, fmt.Sprintf(`{"content":{},"event_id":%q,"origin_server_ts":1700000000000,
		"room_id":"!room:example.org","sender":"@alice:example.org","type":"m.room.message",
		"unsigned":{"age":1234,"redacted_because":%s}}`, eventID, because))
}

func TestFormatClientEvent_EscapesStrings(t *testing.T) {
	pdu := fixtureEvent(t, "11", gomatrixserverlib.ProtoEvent{
		SenderID: "@alice:example.org", RoomID: "!room:example.org", Type: "org.example.\"quoted\"\n",
		StateKey: ptr("clé\\"), Content: []byte(`{}`),
	})
	got := decodeObject(t, mustClientEvent(t, pdu, FormatClient, WithTransactionID("bad\xff")))
	if got["type"] != "org.example.\"quoted\"\n" || got["state_key"] != "clé\\" {
		t.Errorf("type %q, state_key %q, want them as sent", got["type"], got["state_key"])
	}
	if txn := got["unsigned"].(map[string]any)["transaction_id"]; txn != "bad\uFFFD" {
		t.Errorf("transaction_id = %q, want invalid UTF-8 replaced", txn)
	}
}

func TestStrippedState(t *testing.T) {
	member := fixtureEvent(t, "11", gomatrixserverlib.ProtoEvent{
		SenderID: "@alice:example.org", RoomID: "!room:example.org", Type: "m.room.member",
		StateKey: ptr("@bob:example.org"), Content: []byte(`{"membership":"invite"}`),
	})
	got, err := StrippedState(member)
	if err != nil {
		t.Fatalf("StrippedState: %v", err)
	}
	raw, _ := json.Marshal(got)
	want := `{"content":{"membership":"invite"},"sender":"@alice:example.org","state_key":"@bob:example.org","type":"m.room.member"}`
	if string(raw) != want {
		t.Errorf("got  %s\nwant %s", raw, want)
	}

	msg := fixtureEvent(t, "11", gomatrixserverlib.ProtoEvent{
		SenderID: "@alice:example.org", RoomID: "!room:example.org", Type: "m.room.message", Content: []byte(`{}`),
	})
	if _, err := StrippedState(msg); !errors.Is(err, ErrNotState) {
		t.Errorf("StrippedState of a message: got %v, want ErrNotState", err)
	}
}

// BenchmarkClientEvent serializes a page of 100 messages.
func BenchmarkClientEvent(b *testing.B) {
	page := make([]gomatrixserverlib.PDU, 100)
	for i := range page {
		page[i] = fixtureEvent(b, "12", gomatrixserverlib.ProtoEvent{
			SenderID: "@alice:example.org", RoomID: "!" + strings.Repeat("A", 43), Type: "m.room.message",
			Content: []byte(fmt.Sprintf(`{"body":"message %d with some text in it","msgtype":"m.text"}`, i)),
		})
		page[i].EventID() // computed once, as the store's parse does
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, pdu := range page {
			if _, err := ClientEvent(pdu, FormatClient, fixtureNow(), WithoutRoomID()); err != nil {
				b.Fatal(err)
			}
		}
	}
}
