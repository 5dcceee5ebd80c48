package rooms_test

import (
	"fmt"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// TestLargeState_JoinCost pins what a join writes in rooms of 2,000 and
// 20,000 members (docs/storage.md, "State at any event"): one leaf of at
// most 64 entries and the index blocks above it, where 16 fixed buckets
// rewrote a sixteenth of the room's state (some 85 KB at 20,000). The
// members are added to the state tree in bulk (rooms.AddStateEntries);
// the joins go through POST /join.
func TestLargeState_JoinCost(t *testing.T) {
	st := servertest.Start(t)
	rs := st.Server.Rooms
	alice, bob, carol := st.Register(t, "alice"), st.Register(t, "bob"), st.Register(t, "carol")
	room := createRoom(t, st, alice, map[string]any{"preset": "public_chat"})
	small, err := rooms.StateTree(bg, rs, room)
	if err != nil {
		t.Fatal(err)
	}
	want := servertest.Want

	grow := func(from, n int) {
		t.Helper()
		if err := rooms.AddStateEntries(bg, rs, room, from, n); err != nil {
			t.Fatalf("add %d members: %v", n, err)
		}
	}
	check := func(what string, members int, joined ...servertest.User) {
		t.Helper()
		ctx, meter := store.WithMeter(bg)
		tree, err := rooms.StateTree(ctx, rs, room)
		if err != nil {
			t.Fatal(err)
		}
		u := meter.Usage()
		t.Logf("%s: the whole state tree read in %d calls, %.1f RCU", what, u.Calls, u.ReadUnits)
		if got, want := len(tree), len(small)+members+len(joined); got != want {
			t.Fatalf("%s: %d state entries, want %d", what, got, want)
		}
		for i := range members {
			user, want := rooms.BulkMember(i)
			if id := tree[events.Member+"\x00"+user]; id != want {
				t.Fatalf("%s: member %d is %q", what, i, id)
			}
		}
		for _, u := range joined {
			r := st.Do(t, "GET", roomPath(room)+"/state/m.room.member/"+u.ID+"?format=event", u.AccessToken, nil)
			if id, _ := r.Body["event_id"].(string); id == "" || tree[events.Member+"\x00"+u.ID] != id {
				t.Fatalf("%s: %s's member event in the tree is %q, current %q", what, u.ID, tree[events.Member+"\x00"+u.ID], id)
			}
		}
		leaves, indexes, largest, err := rooms.BlockCount(bg, rs, room)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d leaves (at most %d entries), %d indexes", what, leaves, largest, indexes)
		if largest > 64 {
			t.Fatalf("%s: a leaf of %d entries", what, largest)
		}
	}

	grow(0, 2000)
	check("2,000 members", 2000)
	// auth; the join rules; the profile; the auth tuples not cached (bob's
	// member event); the snapshot, the info, the blocks on the path to
	// bob's leaf (two indexes and the leaf), bob's membership item; one
	// transaction: slot, pointer, leaf, indexes, snapshot, current state,
	// info, membership; the stream entries. The 16 fixed blocks of before
	// made it 12 calls, 15 RCU + 38 WCU (a block of 127 entries, 10 KB).
	join(t, st, bob, room)
	st.CheckCost(t, "join, 2,000 members", "/join/", want(13, 14, 24))
	check("2,000 members and bob", 2000, bob)

	grow(2000, 18000)
	check("20,000 members", 20000, bob)
	// The same steps, the path to carol's leaf one to three indexes
	// deep. Before: 10 calls, 32 RCU + 217 WCU, a
	// block of 1,254 entries (100 KB) rewritten.
	join(t, st, carol, room)
	st.CheckCost(t, "join, 20,000 members", "/join/", want(13, 11, 27))
	check("20,000 members, bob and carol", 20000, bob, carol)

	// A batch of 12 joins (as a room taken in through a remote join is
	// written) rewrites up to 12 paths of blocks: more than one
	// transaction's 100 actions, so it goes in smaller transactions.
	var protos []events.Proto
	for i := range 12 {
		user := fmt.Sprintf("@late%d:example.org", i)
		protos = append(protos, events.Proto{Sender: user, Type: events.Member, StateKey: &user, Content: []byte(`{"membership":"join"}`)})
	}
	ids, err := rooms.AppendBatch(bg, rs, room, protos)
	if err != nil {
		t.Fatalf("a batch of 12 joins: %v", err)
	}
	tree, err := rooms.StateTree(bg, rs, room)
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		if got := tree[fmt.Sprintf("%s\x00@late%d:example.org", events.Member, i)]; got != id {
			t.Fatalf("join %d of the batch: %q in the tree, want %q", i, got, id)
		}
	}
}
