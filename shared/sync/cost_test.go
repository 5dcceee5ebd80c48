package sync_test

import (
	"fmt"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestSync_Costs pins the cost design of sync (docs/storage.md): an idle
// poll is one eventually consistent read of at most 0.5 RCU; a message
// costs one write per local member more than without sync.
func TestSync_Costs(t *testing.T) {
	st := servertest.Start(t, "CIRRUS_SYNC_POLL_INTERVAL_MS=250")
	alice := st.Client(t, st.Register(t, "alice"))
	room, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	first := sync(t, alice, "", 0, "")

	idle := sync(t, alice, first.NextBatch, 1000_000_000, "") // 1 s
	u := st.LastRequestTo(t, "/sync").DynamoDB
	polls := u.Calls - 1 // the access token's read aside
	perPoll := (u.ReadUnits - 1) / float64(polls)
	t.Logf("idle sync of 1 s, 250 ms polls: %d calls, %.1f RCU: %.2f RCU per poll", u.Calls, u.ReadUnits, perPoll)
	if polls < 3 || perPoll > 0.5 || u.WriteUnits != 0 {
		t.Fatalf("idle sync: %+v", u)
	}

	for _, members := range []int{2, 20} {
		r, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i < members; i++ {
			c := st.Client(t, st.Register(t, fmt.Sprintf("m%d-%d", members, i)))
			if _, err := c.JoinRoomByID(bg, r.RoomID); err != nil {
				t.Fatal(err)
			}
		}
		say(t, alice, r.RoomID, "warm the room's cache")
		say(t, alice, r.RoomID, fmt.Sprint("to ", members))
		u := st.LastRequestTo(t, "/send/").DynamoDB
		t.Logf("message into a room of %d local members: %d calls, %.1f RCU, %.1f WCU", members, u.Calls, u.ReadUnits, u.WriteUnits)
		// + the search index: an item per distinct word of two letters or
		// digits or more ("to", and "20" for 20).
		index := 1
		if members >= 10 {
			index = 2
		}
		if u.WriteUnits != float64(3+members+index) {
			t.Fatalf("message to %d members: %.1f WCU, want %d", members, u.WriteUnits, 3+members+index)
		}
	}

	caught := sync(t, alice, idle.NextBatch, 0, "")
	say(t, alice, room.RoomID, "one new message")
	next := sync(t, alice, caught.NextBatch, 0, "")
	if len(next.Rooms.Join) == 0 {
		t.Fatal("incremental sync missed the message")
	}
	u = st.LastRequestTo(t, "/sync").DynamoDB
	t.Logf("incremental sync with one message in one room: %d calls, %.1f RCU", u.Calls, u.ReadUnits)
	// 6 RCU for the news itself, the rest for the unread counts (the events
	// since alice's read receipt, none here, evaluated by her push rules).
	if u.ReadUnits > 20 || u.WriteUnits != 0 {
		t.Fatalf("incremental sync: %+v", u)
	}
	// 10 calls: the room's info and alice's membership are read once for
	// its timeline and its counts (rooms.WithReadsShared); 13 before.
	if u.Calls != 10 {
		t.Fatalf("incremental sync: %d calls, want 10", u.Calls)
	}
}
