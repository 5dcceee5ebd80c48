package sync_test

import (
	"fmt"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestRoundTrips_Costs pins the sequential DynamoDB round trips (store.Meter)
// of the requests whose latency in AWS issue 19 measures, as they are
// through the real stack today: each costs a few milliseconds from Lambda.
// The figures are to go down; lower them here as they do.
func TestRoundTrips_Costs(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Client(t, st.Register(t, "alice"))
	bob := st.Client(t, st.Register(t, "bob"))

	if _, err := alice.Whoami(bg); err != nil {
		t.Fatal(err)
	}
	// The access token's read.
	st.CheckRoundTrips(t, "whoami", "/whoami", 1)

	room, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(bg, room.RoomID); err != nil {
		t.Fatal(err)
	}
	say(t, alice, room.RoomID, "warm the room's cache")
	since := sync(t, bob, "", 0, "").NextBatch

	say(t, alice, room.RoomID, "hello bob")
	// 7 calls: two reads (the access token first), then the transaction
	// record beside the event's pointer, then the slot, then two batch
	// writes side by side (what the Appended hook writes for the
	// members). 5 when both pairs overlap, as they do where a call takes
	// milliseconds; on the embedded store the first of a pair may end
	// before the goroutine of the second has begun it (6 in 2 runs of 10).
	st.CheckRoundTripsWithin(t, "message into a room of two members", "/send/", 4, 7)

	next := sync(t, bob, since, 0, "")
	if len(next.Rooms.Join[room.RoomID].Timeline.Events) == 0 {
		t.Fatal("bob's incremental sync missed the message")
	}
	// 13 calls (the access token's read beside the first). The room's
	// timeline and unread counts are read beside its membership, and calls
	// of chains that keep one another in flight count as one round trip
	// (the meter's lower bound): 1 to 3 in runs here, as the scheduler
	// interleaves the chains on the embedded store, and more at worst,
	// when one chain ends before the other begins. TestRoundTrips_InitialSync
	// counts the calls in a row on a store whose calls take milliseconds.
	st.CheckRoundTripsWithin(t, "bob's incremental sync after the message", "/sync", 1, 13)
}

// TestRoundTrips_InitialSync pins the sequential calls of an initial sync
// of several rooms: the rooms are read side by side, and within a room its
// timeline, current state, ephemeral events, account data and unread
// counts; the to-device inbox, the key counts, the global account data
// and the presence beside them. On a store whose calls take milliseconds
// the meter counts one round trip or two (chains of calls keep one another
// in flight); the longest chain of calls one after the other is what the
// latency is made of: the memberships, then the room's timeline beside
// its read receipts, then the unread events beside what evaluating them
// takes (3, with the access token's read beside the first; set_presence's
// write then whom to tell, 4, beside them all). On a loaded machine the
// embedded store queues the calls and the chain reads 5 to 9, or more: the
// bound is loose. It was 53 round trips, about 80 calls in a row. Then an
// incremental sync after a message: the stream, then the room's membership
// beside its timeline and its read receipts, then the unread events beside
// what evaluating them takes and the stream's second read (recheck): 3 (it
// was 8 to 13 round trips).
func TestRoundTrips_InitialSync(t *testing.T) {
	st, slow := servertest.StartSlow(t, 10*time.Millisecond)
	alice := st.Client(t, st.Register(t, "alice"))
	bob := st.Client(t, st.Register(t, "bob"))
	var rooms []id.RoomID
	for i := range 10 {
		room, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(bg, room.RoomID); err != nil {
			t.Fatal(err)
		}
		say(t, alice, room.RoomID, fmt.Sprint("hello ", i))
		rooms = append(rooms, room.RoomID)
	}
	slow.Reset()
	first := sync(t, bob, "", 0, "")
	chain, calls := slow.Chain()
	for _, r := range rooms {
		if len(first.Rooms.Join[r].Timeline.Events) == 0 {
			t.Fatalf("room %s missing from bob's initial sync", r)
		}
	}
	st.CheckRoundTripsWithin(t, "bob's initial sync of 10 rooms", "/sync", 1, 8)
	t.Logf("bob's initial sync of 10 rooms: %d calls, %d in a row", calls, chain)
	if chain > 14 {
		t.Errorf("bob's initial sync of 10 rooms: %d calls in a row, want at most 14", chain)
	}

	say(t, alice, rooms[3], "one more")
	slow.Reset()
	next := sync(t, bob, first.NextBatch, 0, "")
	chain, calls = slow.Chain()
	if len(next.Rooms.Join[rooms[3]].Timeline.Events) != 1 {
		t.Fatalf("bob's incremental sync: %+v", next.Rooms.Join)
	}
	t.Logf("bob's incremental sync after a message: %d calls, %d in a row", calls, chain)
	if chain > 6 {
		t.Errorf("bob's incremental sync after a message: %d calls in a row, want at most 6", chain)
	}
}
