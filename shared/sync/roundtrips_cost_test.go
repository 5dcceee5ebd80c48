package sync_test

import (
	"fmt"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestRoundTrips_Costs pins the sequential DynamoDB round trips (store.Meter:
// the longest run of calls each begun after the one before it ended) of
// the requests whose latency in AWS issue 19 measures, each call a few
// milliseconds from Lambda. The requests measured go through a store that
// holds each call 50 ms, so that calls side by side overlap even on a
// loaded machine; the figures are the most a request may take, fewer
// where the end of one step and the beginning of the next overlap.
func TestRoundTrips_Costs(t *testing.T) {
	st, slow := servertest.StartSlow(t, 50*time.Millisecond)
	slow.Hold(false)
	alice := st.Client(t, st.Register(t, "alice"))
	bob := st.Client(t, st.Register(t, "bob"))
	slowly := func(request func()) {
		t.Helper()
		slow.Hold(true)
		defer slow.Hold(false)
		request()
	}

	slowly(func() {
		if _, err := alice.Whoami(bg); err != nil {
			t.Fatal(err)
		}
	})
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

	slowly(func() { say(t, alice, room.RoomID, "hello bob") })
	// 6 calls: the access token's read beside the transaction record's
	// create and the event's pointer, then the slot (which waits for the
	// token) beside the members' stream entries and the search index.
	st.CheckRoundTrips(t, "message into a room of two members", "/send/", 2)

	var next *mautrix.RespSync
	slowly(func() { next = sync(t, bob, since, 0, "") })
	if len(next.Rooms.Join[room.RoomID].Timeline.Events) == 0 {
		t.Fatal("bob's incremental sync missed the message")
	}
	// 10 calls: the stream (the access token's read beside it), then the
	// room's membership beside its timeline, bob's read receipts, the
	// events since this process last counted the room (unread.Count), what
	// evaluating them takes and the stream's second read. It was 8 to 13
	// round trips, then 3.
	st.CheckRoundTrips(t, "bob's incremental sync after the message", "/sync", 2)
	u := st.LastRequestTo(t, "/sync").DynamoDB
	t.Logf("bob's incremental sync after the message: %d calls, %.1f RCU", u.Calls, u.ReadUnits)
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
// beside its timeline, its read receipts, the unread events and what
// evaluating them takes, and the stream's second read (recheck): 2 (it was
// 8 to 13 round trips).
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
