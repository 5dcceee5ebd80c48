package sync_test

import (
	"testing"

	"maunium.net/go/mautrix"

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
	st.CheckRoundTripsWithin(t, "message into a room of two members", "/send/", 5, 7)

	next := sync(t, bob, since, 0, "")
	if len(next.Rooms.Join[room.RoomID].Timeline.Events) == 0 {
		t.Fatal("bob's incremental sync missed the message")
	}
	// 13 calls (the access token's read first). The room's unread counts
	// (5 calls in a row) are read beside its timeline, and calls of two
	// chains that keep one another in flight count as one round trip (the
	// meter's lower bound): 5 to 10 in runs here, as the scheduler
	// interleaves the chains on the embedded store, and 13 at worst, when
	// one chain ends before the other begins. `make bench`'s cirrus+4ms
	// measures what the overlap saves where a call takes milliseconds.
	st.CheckRoundTripsWithin(t, "bob's incremental sync after the message", "/sync", 5, 13)
}
