package rooms_test

import (
	"fmt"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestRoundTrips_Send pins the sequential DynamoDB round trips of a
// message sent into a room of two local members (issue 19: in AWS each
// costs a few milliseconds), counted through slowStack's proxy so that
// calls side by side overlap and calls in a row never do: the access
// token's read beside the transaction record's create and the event's
// pointer (read by nothing before the slot, they need not wait for the
// token: gate.Ahead; the record is not read first: txn.go); the
// conditional create of the slot, which decides the position and waits
// for the token; the two members' stream entries beside the search index,
// which name the slot and so come after it.
func TestRoundTrips_Send(t *testing.T) {
	st, slow := slowStack(t)
	alice, bob := st.Member(t, "alice"), st.Member(t, "bob")
	room := create(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	must[*mautrix.RespJoinRoom](t, "join")(bob.JoinRoomByID(bg, room))
	say(t, alice, room, "warm the room's cache")
	since := must[*mautrix.RespSync](t, "sync")(bob.SyncRequest(bg, 0, "", "", false, "")).NextBatch
	slowly := func(send func() string) string {
		t.Helper()
		slow.Hold(true)
		defer slow.Hold(false)
		return send()
	}

	sent := slowly(func() string { return say(t, alice, room, "hello bob").String() })
	st.CheckRoundTrips(t, "message into a room of two members", "/send/", 2)
	if u := st.LastRequestTo(t, "/send/").DynamoDB; u.Calls != 5 {
		t.Errorf("message into a room of two members: %d calls, want 5", u.Calls)
	}

	// The stream entry written beside the slot: bob's next sync has it.
	next := must[*mautrix.RespSync](t, "sync")(bob.SyncRequest(bg, 0, since, "", false, ""))
	var got []string
	for _, ev := range next.Rooms.Join[room].Timeline.Events {
		got = append(got, ev.ID.String())
	}
	if len(got) != 1 || got[0] != sent {
		t.Fatalf("bob's incremental sync after the message: %v, want [%s]", got, sent)
	}

	// A process that never appended to the room (a new Lambda instance)
	// reads its head beside the access token, then the local users beside
	// the auth state (both after the head, so neither older than it): two
	// round trips more than a warm send, 3 calls more.
	twin := st.Twin(t)
	slowly(func() string {
		id, r := put(t, twin, bob.User, roomPath(room.String())+"/send/m.room.message/cold", map[string]any{"msgtype": "m.text", "body": "cold"})
		if id == "" {
			t.Fatalf("send through another process: %d %s", r.Status, r.Raw)
		}
		return id
	})
	twin.CheckRoundTripsWithin(t, "message from a process with nothing cached", "/send/", 4, 5)
	if u := twin.LastRequestTo(t, "/send/").DynamoDB; u.Calls != 8 {
		t.Errorf("message from a process with nothing cached: %d calls, want 8", u.Calls)
	}

	// The first process's cached head is now behind: its next send loses
	// the slot, then reads the head, then the local users beside the auth
	// state, and appends again; beside those two round trips, not before
	// them (lostSlot), it puts back the winner's search index (a read of
	// its slot, then Landing's writes). It was 8 round trips in a row.
	slowly(func() string { return say(t, alice, room, "after the other process").String() })
	st.CheckRoundTripsWithin(t, "message after another process appended", "/send/", 6, 7)
}

// TestTxn_RetryOfAStoredEvent: a request whose transaction ID stored its
// event before is answered with that event, through any process, even
// when the sender could not send it now (they left the room) or sent
// another body: the record, not read before the append, is read once the
// request is refused. A new transaction ID is refused as it should be.
func TestTxn_RetryOfAStoredEvent(t *testing.T) {
	st := servertest.Start(t)
	twin := st.Twin(t)
	alice, bob := st.Register(t, "alice"), st.Register(t, "bob")
	room := createRoom(t, st, bob, map[string]any{"preset": "public_chat"})
	join(t, st, alice, room)
	path := roomPath(room) + "/send/m.room.message/"
	body := map[string]any{"msgtype": "m.text", "body": "before leaving"}
	id, r := put(t, st, alice, path+"t1", body)
	if id == "" {
		t.Fatalf("send: %d %s", r.Status, r.Raw)
	}
	if r := st.Do(t, "POST", roomPath(room)+"/leave", alice.AccessToken, map[string]any{}); r.Status != 200 {
		t.Fatalf("leave: %d %s", r.Status, r.Raw)
	}
	for _, via := range []struct {
		name string
		st   *servertest.Stack
	}{{"the process that sent it", st}, {"another process", twin}} {
		if again, r := put(t, via.st, alice, path+"t1", body); again != id {
			t.Fatalf("retry after leaving, through %s: %d %s, want %s", via.name, r.Status, r.Raw, id)
		}
		other := map[string]any{"msgtype": "m.text", "body": "another body"}
		if again, r := put(t, via.st, alice, path+"t1", other); again != id {
			t.Fatalf("retry with another body, through %s: %d %s, want %s", via.name, r.Status, r.Raw, id)
		}
	}
	if _, r := put(t, twin, alice, path+"t2", body); r.Status != 403 || r.Body["errcode"] != "M_FORBIDDEN" {
		t.Fatalf("new transaction after leaving: %d %s, want 403 M_FORBIDDEN", r.Status, r.Raw)
	}
	if n := countTypes(t, st, bob, room)["m.room.message"]; n != 1 {
		t.Fatalf("%d messages stored, want 1", n)
	}
}

// TestTxn_RetryOfARelationThroughAStaleProcess: a relation item is keyed by
// the position its event is to take, and written before the slot is
// claimed. A retry of a stored reaction through a process whose cached
// head is behind builds on that head: were the record not read first, it
// would write its relation over the stored reaction's, which /relations
// would then leave out.
func TestTxn_RetryOfARelationThroughAStaleProcess(t *testing.T) {
	st := servertest.Start(t)
	twin := st.Twin(t)
	alice := st.Register(t, "alice")
	room := createRoom(t, st, alice, map[string]any{})
	parent, err := send(t, twin, alice, room, "parent", "react to me") // the twin's cached head
	if err != nil {
		t.Fatal(err)
	}
	path := roomPath(room) + "/send/m.reaction/r1"
	body := map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": parent, "key": "👍"}}
	id, r := put(t, st, alice, path, body)
	if id == "" {
		t.Fatalf("reaction: %d %s", r.Status, r.Raw)
	}
	if again, r := put(t, twin, alice, path, body); again != id {
		t.Fatalf("retry through the other process: %d %s, want %s", r.Status, r.Raw, id)
	}
	r = st.Do(t, "GET", "/_matrix/client/v1/rooms/"+url.PathEscape(room)+"/relations/"+url.PathEscape(parent), alice.AccessToken, nil)
	chunk, _ := r.Body["chunk"].([]any)
	if r.Status != 200 || len(chunk) != 1 || chunk[0].(map[string]any)["event_id"] != id {
		t.Fatalf("relations of the parent after the retry: %d %s, want [%s]", r.Status, r.Raw, id)
	}
}

// TestRelations_RaceOfTwoProcesses: two reactions to one message, the
// second sent through a process whose cached head is behind. It builds on
// that head and writes its relation item, keyed by the parent and the
// position, before it loses the slot to the first reaction: it puts the
// winner's item back, and /relations lists both.
func TestRelations_RaceOfTwoProcesses(t *testing.T) {
	st := servertest.Start(t)
	twin := st.Twin(t)
	alice, bob := st.Register(t, "alice"), st.Register(t, "bob")
	room := createRoom(t, st, alice, map[string]any{"preset": "public_chat"})
	join(t, st, bob, room)
	parent, err := send(t, twin, alice, room, "parent", "react to me") // the twin's cached head
	if err != nil {
		t.Fatal(err)
	}
	react := func(via *servertest.Stack, u servertest.User, key string) string {
		t.Helper()
		body := map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": parent, "key": key}}
		id, r := put(t, via, u, roomPath(room)+"/send/m.reaction/"+key, body)
		if id == "" {
			t.Fatalf("reaction %s: %d %s", key, r.Status, r.Raw)
		}
		return id
	}
	first := react(st, alice, "a")
	second := react(twin, bob, "b")
	r := st.Do(t, "GET", "/_matrix/client/v1/rooms/"+url.PathEscape(room)+"/relations/"+url.PathEscape(parent)+"?dir=f", alice.AccessToken, nil)
	chunk, _ := r.Body["chunk"].([]any)
	var got []any
	for _, ev := range chunk {
		got = append(got, ev.(map[string]any)["event_id"])
	}
	if r.Status != 200 || len(got) != 2 || got[0] != first || got[1] != second {
		t.Fatalf("relations of the parent: %d %v, want [%s %s]", r.Status, got, first, second)
	}
}

// TestTxn_IdenticalReactionsAtOnce: identical reactions sent at once
// through two processes store one event, and /relations lists it: a
// request that found the record taken had written its relation item at
// the position the stored event took, and puts the stored one's back.
func TestTxn_IdenticalReactionsAtOnce(t *testing.T) {
	st := servertest.Start(t)
	stacks := []*servertest.Stack{st, st.Twin(t)}
	alice := st.Register(t, "alice")
	room := createRoom(t, st, alice, map[string]any{})
	parent, err := send(t, st, alice, room, "parent", "react to me")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stacks[1:] {
		if _, err := send(t, s, alice, room, "warm", "warm the other process"); err != nil {
			t.Fatal(err)
		}
	}
	for round := range 5 {
		key := fmt.Sprint("r", round)
		body := map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": parent, "key": key}}
		ids := putAll(t, stacks, alice.AccessToken, roomPath(room)+"/send/m.reaction/"+key, body, 6)
		if len(ids) != 6 || len(distinct(ids)) != 1 {
			t.Fatalf("round %d: event IDs answered %v, want one ID 6 times", round, ids)
		}
		r := st.Do(t, "GET", "/_matrix/client/v1/rooms/"+url.PathEscape(room)+"/relations/"+url.PathEscape(parent)+"?dir=b&limit=1", alice.AccessToken, nil)
		chunk, _ := r.Body["chunk"].([]any)
		if r.Status != 200 || len(chunk) != 1 || chunk[0].(map[string]any)["event_id"] != ids[0] {
			t.Fatalf("round %d: newest relation of the parent: %d %s, want %s", round, r.Status, r.Raw, ids[0])
		}
	}
}
