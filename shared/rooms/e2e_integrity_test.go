package rooms_test

import (
	"encoding/json"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestLocals_LastLocalLeaves: once the last local user has left a room, its
// list of local users is empty, and reads of it (the sync's device lists
// and presence, typing) and a join through another instance (which reads
// it afresh) still work. An empty map came back from the embedded
// DynamoDB as a string, and every read of the item failed.
func TestLocals_LastLocalLeaves(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Register(t, "alice")
	room := createRoom(t, st, alice, map[string]any{"preset": "public_chat"})
	if r := st.Do(t, "POST", roomPath(room)+"/leave", alice.AccessToken, map[string]any{}); r.Status != 200 {
		t.Fatalf("leave: %d %s", r.Status, r.Raw)
	}
	users, err := st.Server.Rooms.LocalJoinedIn(bg, []string{room}, "")
	if err != nil || len(users) != 0 {
		t.Fatalf("local users after the last left: %v, %v; want none", users, err)
	}
	twin := st.Twin(t)
	if r := twin.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(room), alice.AccessToken, map[string]any{}); r.Status != 200 {
		t.Fatalf("join again through another instance: %d %s", r.Status, r.Raw)
	}
	users, err = st.Server.Rooms.LocalJoinedIn(bg, []string{room}, "")
	if err != nil || len(users) != 1 || users[0] != alice.ID {
		t.Fatalf("local users after the join: %v, %v; want [%s]", users, err, alice.ID)
	}
	if r := twin.Do(t, "GET", "/_matrix/client/v3/sync", alice.AccessToken, nil); r.Status != 200 {
		t.Fatalf("sync: %d %s", r.Status, r.Raw)
	}
}

// haltOnce stops the first append that reaches point, as a process dying
// there would, and lets the others through.
func haltOnce(point string) func(string) bool {
	var done atomic.Bool
	return func(p string) bool { return p == point && done.CompareAndSwap(false, true) }
}

// blockAtSlot stops the first append of a server at its slot claim (before
// what Landing writes beside it) until release is closed; reached closes
// when it is there.
func blockAtSlot(s *rooms.Service) (reached, release chan struct{}) {
	reached, release = make(chan struct{}), make(chan struct{})
	var once atomic.Bool
	rooms.SetHalt(s, func(p string) bool {
		if p == "slot" && once.CompareAndSwap(false, true) {
			close(reached)
			<-release
		}
		return false
	})
	return reached, release
}

// newest is the newest event of the room.
func newest(t *testing.T, st *servertest.Stack, u servertest.User, room string) map[string]any {
	t.Helper()
	r := st.Do(t, "GET", roomPath(room)+"/messages?dir=b&limit=1", u.AccessToken, nil)
	chunk, _ := r.Body["chunk"].([]any)
	if r.Status != 200 || len(chunk) != 1 {
		t.Fatalf("newest event: %d %s", r.Status, r.Raw)
	}
	return chunk[0].(map[string]any)
}

// getEvent reads /event/{eventId}, failing unless it answers 200.
func getEvent(t *testing.T, st *servertest.Stack, u servertest.User, room, id string) map[string]any {
	t.Helper()
	r := st.Do(t, "GET", roomPath(room)+"/event/"+url.PathEscape(id), u.AccessToken, nil)
	if r.Status != 200 {
		t.Fatalf("event %s: %d %s", id, r.Status, r.Raw)
	}
	return r.Body
}

// put sends a PUT and returns the event ID answered, "" for an error.
func put(t *testing.T, st *servertest.Stack, u servertest.User, path string, body any) (string, servertest.Reply) {
	t.Helper()
	r := st.Do(t, "PUT", path, u.AccessToken, body)
	id, _ := r.Body["event_id"].(string)
	return id, r
}

// TestCrash_AfterAppend: a process that dies once an event is stored,
// before anything else, leaves it whole: fetchable by its ID, with its
// context and relations, a redaction applied to its target (a message, a
// state event), and the client's retry answered with it, through an
// instance that never saw it.
func TestCrash_AfterAppend(t *testing.T) {
	st := servertest.Start(t)
	twin := st.Twin(t)
	alice := st.Register(t, "alice")
	room := createRoom(t, st, alice, map[string]any{"preset": "public_chat", "topic": "secret topic"})
	parent, err := send(t, st, alice, room, "p1", "parent")
	if err != nil {
		t.Fatal(err)
	}

	rooms.SetHalt(st.Server.Rooms, haltOnce("appended"))
	reply := map[string]any{"msgtype": "m.text", "body": "in thread", "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": parent}}
	if _, r := put(t, st, alice, roomPath(room)+"/send/m.room.message/c1", reply); r.Status != 500 {
		t.Fatalf("send halted after the append: %d %s", r.Status, r.Raw)
	}
	ev := newest(t, st, alice, room)
	id, _ := ev["event_id"].(string)
	if ev["content"].(map[string]any)["body"] != "in thread" {
		t.Fatalf("newest event %v, want the halted message", ev)
	}
	getEvent(t, twin, alice, room, id)
	if r := twin.Do(t, "GET", roomPath(room)+"/context/"+url.PathEscape(id), alice.AccessToken, nil); r.Status != 200 {
		t.Fatalf("context of the halted message: %d %s", r.Status, r.Raw)
	}
	r := twin.Do(t, "GET", "/_matrix/client/v1/rooms/"+url.PathEscape(room)+"/relations/"+url.PathEscape(parent), alice.AccessToken, nil)
	if chunk, _ := r.Body["chunk"].([]any); len(chunk) != 1 || chunk[0].(map[string]any)["event_id"] != id {
		t.Fatalf("relations of the parent: %s", r.Raw)
	}
	if again, r := put(t, twin, alice, roomPath(room)+"/send/m.room.message/c1", reply); again != id {
		t.Fatalf("retry answered %q (%s), want %s", again, r.Raw, id)
	}

	rooms.SetHalt(st.Server.Rooms, haltOnce("appended"))
	if _, r := put(t, st, alice, roomPath(room)+"/redact/"+url.PathEscape(id)+"/r1", map[string]any{}); r.Status != 500 {
		t.Fatalf("redaction halted after the append: %d %s", r.Status, r.Raw)
	}
	red, _ := newest(t, twin, alice, room)["event_id"].(string)
	target := getEvent(t, twin, alice, room, id)
	if c, _ := target["content"].(map[string]any); len(c) != 0 {
		t.Fatalf("target of the halted redaction is not redacted: %v", target)
	}
	if because, _ := target["unsigned"].(map[string]any)["redacted_because"].(map[string]any); because["event_id"] != red {
		t.Fatalf("redacted_because %v, want %s", target["unsigned"], red)
	}
	if again, r := put(t, twin, alice, roomPath(room)+"/redact/"+url.PathEscape(id)+"/r1", map[string]any{}); again != red {
		t.Fatalf("redaction retry answered %q (%s), want %s", again, r.Raw, red)
	}

	// A redaction of a state event changes the current state in the same
	// transaction as its slot.
	r = twin.Do(t, "GET", roomPath(room)+"/state/m.room.topic/?format=event", alice.AccessToken, nil)
	topic, _ := r.Body["event_id"].(string)
	rooms.SetHalt(st.Server.Rooms, haltOnce("appended"))
	if _, r := put(t, st, alice, roomPath(room)+"/redact/"+url.PathEscape(topic)+"/r2", map[string]any{}); r.Status != 500 {
		t.Fatalf("redaction of the topic halted after the append: %d %s", r.Status, r.Raw)
	}
	if r := twin.Do(t, "GET", roomPath(room)+"/state/m.room.topic/", alice.AccessToken, nil); r.Status != 200 || len(r.Body) != 0 {
		t.Fatalf("topic after its halted redaction: %d %s", r.Status, r.Raw)
	}
	if info, err := twin.Server.Rooms.Info(bg, room); err != nil || info.Topic != "" {
		t.Fatalf("room info after the topic's redaction: %+v, %v", info, err)
	}
}

// TestCrash_BeforeSlot: a process that dies after writing a message's
// transaction record and pointer, before claiming its slot, stored no
// event. A retry within the lease waits for the owner; once the lease is
// over it takes the transaction over and sends the event, once.
func TestCrash_BeforeSlot(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Register(t, "alice")
	room := createRoom(t, st, alice, map[string]any{})
	before := countTypes(t, st, alice, room)["m.room.message"]
	path := roomPath(room) + "/send/m.room.message/c2"
	body := map[string]any{"msgtype": "m.text", "body": "after the crash"}

	rooms.SetHalt(st.Server.Rooms, haltOnce("slot"))
	if _, r := put(t, st, alice, path, body); r.Status != 500 {
		t.Fatalf("send halted before its slot: %d %s", r.Status, r.Raw)
	}
	if n := countTypes(t, st, alice, room)["m.room.message"]; n != before {
		t.Fatalf("%d messages after the halt, want %d", n, before)
	}
	// The lease has run out for the retry.
	st.Server.Rooms.Now = func() time.Time { return time.Now().Add(11 * time.Second) }
	id, r := put(t, st, alice, path, body)
	if id == "" {
		t.Fatalf("retry: %d %s", r.Status, r.Raw)
	}
	getEvent(t, st, alice, room, id)
	if again, _ := put(t, st.Twin(t), alice, path, body); again != id {
		t.Fatalf("second retry answered %q, want %s", again, id)
	}
	if n := countTypes(t, st, alice, room)["m.room.message"]; n != before+1 {
		t.Fatalf("%d messages after the retries, want %d", n, before+1)
	}
}

// TestTxn_TakeoverOfALateOwner: a request takes over the transaction of an
// owner whose lease ran out, and the owner's event lands after all. The
// taker finds it at the slot the owner had named before it claims another,
// puts the record back and answers it: one event, one ID.
func TestTxn_TakeoverOfALateOwner(t *testing.T) {
	st := servertest.Start(t)
	twin := st.Twin(t)
	alice := st.Register(t, "alice")
	room := createRoom(t, st, alice, map[string]any{})
	path := roomPath(room) + "/send/m.room.message/late"
	body := map[string]any{"msgtype": "m.text", "body": "late"}

	ownerAt, ownerGo := blockAtSlot(st.Server.Rooms)
	takerAt, takerGo := blockAtSlot(twin.Server.Rooms)
	twin.Server.Rooms.Now = func() time.Time { return time.Now().Add(11 * time.Second) }

	answers := make(chan string, 2)
	go func() { id, _ := put(t, st, alice, path, body); answers <- id }()
	<-ownerAt
	go func() { id, _ := put(t, twin, alice, path, body); answers <- id }()
	<-takerAt
	close(ownerGo) // the owner's event lands at the slot its record named
	first := <-answers
	close(takerGo)
	second := <-answers
	if first == "" || second != first {
		t.Fatalf("answers %q and %q, want one event ID twice", first, second)
	}
	if n := countTypes(t, st, alice, room)["m.room.message"]; n != 1 {
		t.Fatalf("%d messages stored, want 1", n)
	}
	if again, _ := put(t, st.Twin(t), alice, path, body); again != first {
		t.Fatalf("later retry answered %q, want %s", again, first)
	}
}

// TestBatch_Redaction: a batch that holds a redaction applies it in its own
// transaction (it locked the room's cache entry it already held, and hung):
// of an event of the same batch, and of a state event stored before.
func TestBatch_Redaction(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Register(t, "alice")
	room := createRoom(t, st, alice, map[string]any{"topic": "batch topic"})
	r := st.Do(t, "GET", roomPath(room)+"/state/m.room.topic/?format=event", alice.AccessToken, nil)
	topic, _ := r.Body["event_id"].(string)
	msg := json.RawMessage(`{"msgtype":"m.text","body":"batched"}`)
	ids, err := rooms.AppendBatch(bg, st.Server.Rooms, room, []events.Proto{
		{Sender: alice.ID, Type: "m.room.message", Content: msg},
		{Sender: alice.ID, Type: "m.room.redaction", Redacts: "#0", Content: json.RawMessage(`{}`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := getEvent(t, st, alice, room, ids[0])["content"].(map[string]any); len(c) != 0 {
		t.Fatalf("message redacted in its own batch: content %v", c)
	}
	topicRedaction := json.RawMessage(`{"redacts":"` + topic + `"}`)
	if _, err := rooms.AppendBatch(bg, st.Server.Rooms, room, []events.Proto{
		{Sender: alice.ID, Type: "m.room.redaction", Redacts: topic, Content: topicRedaction},
		{Sender: alice.ID, Type: "m.room.message", Content: msg},
	}); err != nil {
		t.Fatal(err)
	}
	if r := st.Twin(t).Do(t, "GET", roomPath(room)+"/state/m.room.topic/", alice.AccessToken, nil); r.Status != 200 || len(r.Body) != 0 {
		t.Fatalf("topic after its redaction in a batch: %d %s", r.Status, r.Raw)
	}
	// The room still takes messages: nothing holds its entry.
	if _, err := send(t, st, alice, room, "after", "after the batches"); err != nil {
		t.Fatal(err)
	}
}
