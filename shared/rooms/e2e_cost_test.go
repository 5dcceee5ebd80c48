package rooms_test

import (
	"net/url"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestCosts pins what docs/storage.md gives for appends ("What rooms
// cost"): a message writes its transaction record, pointer and slot
// (3 WCU), without reading the record first; a retry through the process
// that sent it is answered from memory, one through another finds the
// record's create failing, then reads the record and the slot it names; a
// redaction is one transaction with the mark on its target.
func TestCosts(t *testing.T) {
	st := servertest.Start(t)
	alice, bob := st.Register(t, "alice"), st.Register(t, "bob")
	room := createRoom(t, st, alice, map[string]any{"preset": "public_chat"})
	join(t, st, bob, room)
	want := servertest.Want
	sendPath := roomPath(room) + "/send/m.room.message/"
	text := map[string]any{"msgtype": "m.text", "body": "a message like the bench's, of about sixty-seven characters long."}

	if _, err := send(t, st, alice, room, "warm", "warm the room's cache"); err != nil {
		t.Fatal(err)
	}
	// auth; the record, pointer (in parallel), the slot; beside it, one
	// BatchWriteItem of the two members' stream entries and the search
	// index, an item per distinct word (10 here: shared/search).
	id, _ := put(t, st, alice, sendPath+"c1", text)
	st.CheckCost(t, "message, two members", "/send/", want(5, 1, 15))
	// auth: this process stored the event.
	put(t, st, alice, sendPath+"c1", text)
	st.CheckCost(t, "retry of the message", "/send/", want(1, 1, 0))
	// + the record's read first (a relation is keyed by the position its
	// event is to take: send.go), the relation, before the slot; after it,
	// as the first reply of a thread: GetItem of the thread (none), the
	// root's pointer and slot, a Create of the thread (and its gsi1 copy),
	// PutItem of alice's participation (TestThreads_Cost).
	reply := map[string]any{"msgtype": "m.text", "body": "reply", "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": id}}
	put(t, st, alice, sendPath+"c2", reply)
	st.CheckCost(t, "message with a relation", "/send/", want(12, 5, 10))
	// auth; the info (room version), the target's pointer and
	// slot (the check), again under the room's lock; one transaction of
	// the redaction's slot, pointer, record and the target's slot (2 WCU
	// per action and KB); the stream entries.
	put(t, st, alice, roomPath(room)+"/redact/"+url.PathEscape(id)+"/r1", map[string]any{})
	st.CheckCost(t, "redaction of a message", "/redact/", want(8, 6, 10))
	// A redaction of the topic, still current: + the snapshot and info
	// (the batch's reads; the current topic is cached since its PUT); one
	// transaction of the redaction's slot, pointer, record, the topic's
	// slot, the current topic and the info (12 WCU).
	st.Do(t, "PUT", roomPath(room)+"/state/m.room.topic/", alice.AccessToken, map[string]any{"topic": "to be redacted"})
	r := st.Do(t, "GET", roomPath(room)+"/state/m.room.topic/?format=event", alice.AccessToken, nil)
	topic, _ := r.Body["event_id"].(string)
	put(t, st, alice, roomPath(room)+"/redact/"+url.PathEscape(topic)+"/r2", map[string]any{})
	st.CheckCost(t, "redaction of the current topic", "/redact/", want(10, 8, 14))

	// A retry of the first message through another process (its cache
	// warmed by a message of its own): auth; the record's create (failed,
	// billed as a write) beside the pointer of the event it would have
	// sent; the record; the slot it names.
	twin := st.Twin(t)
	if _, err := send(t, twin, alice, room, "warm2", "warm the twin's cache"); err != nil {
		t.Fatal(err)
	}
	if again, _ := put(t, twin, alice, sendPath+"c1", text); again != id {
		t.Fatalf("retry through another process answered %q, want %s", again, id)
	}
	twin.CheckCost(t, "retry of the message through another process", "/send/", want(5, 3, 2))
}
