package ephemeral_test

import (
	"fmt"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestCosts pins the costs docs/storage.md gives for typing and receipts,
// in a room of two local members: a change writes its item(s) and one
// stream entry per member; a renewal or a receipt that does not move
// forward tells nobody; a sync woken by the news reads one Query.
func TestCosts(t *testing.T) {
	st, alice, bob, room := lobby(t)
	msg := say(t, alice, room, "hello")
	later := say(t, alice, room, "later")
	base := sync(t, bob, "", 0)

	want := servertest.Want
	check := func(what, route string, w servertest.Cost) {
		t.Helper()
		st.CheckCost(t, what, route, w)
	}

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// auth, membership, typing item, put, local users, stream entries.
	_, err := alice.UserTyping(bg, room, true, 10*time.Second)
	must(err)
	check("typing start", "/typing/", want(6, 4, 3))
	_, err = alice.UserTyping(bg, room, true, 10*time.Second)
	must(err)
	check("typing renewal", "/typing/", want(4, 3, 1))
	_, err = alice.UserTyping(bg, room, false, 0)
	must(err)
	check("typing stop", "/typing/", want(6, 4, 3))
	_, err = alice.UserTyping(bg, room, false, 0)
	must(err)
	check("typing stop, not typing", "/typing/", want(3, 3, 0))

	// auth, membership, pointer and slot, current receipt, the receipt and
	// its copy (one BatchWriteItem), local users, stream entries.
	must(bob.MarkRead(bg, room, later))
	check("m.read", "/receipt/", want(8, 6, 4))
	must(bob.MarkRead(bg, room, msg))
	check("m.read behind the current one", "/receipt/", want(5, 5, 0))
	must(bob.SendReceipt(bg, room, later, event.ReceiptTypeReadPrivate, nil))
	check("m.read.private", "/receipt/", want(7, 5, 3))
	must(bob.SetReadMarkers(bg, room, &mautrix.ReqSetReadMarkers{FullyRead: later}))
	// auth, membership, pointer and slot, the account data, and the news
	// of it in bob's stream (accountdata.Service.Changed).
	check("read_markers, m.fully_read alone", "/read_markers", want(6, 4, 2))

	// Refusals stop at the check that fails.
	carol := st.Member(t, "carol")
	wantErr(t, "receipt of a non-member", carol.MarkRead(bg, room, msg), "M_FORBIDDEN", 403)
	check("receipt of a non-member", "/receipt/", want(2, 2, 0))
	wantErr(t, "receipt on an unknown event", bob.MarkRead(bg, room, "$nothing"), "M_NOT_FOUND", 404)
	check("receipt on an unknown event", "/receipt/", want(3, 3, 0))
	_, err = bob.UserTyping(bg, "!nowhere:localhost", true, time.Second)
	wantErr(t, "typing in an unknown room", err, "M_FORBIDDEN", 403)
	check("typing in an unknown room", "/typing/", want(2, 2, 0))

	// Bob's sync: the stream, then one Query of the room's recent items.
	resp := sync(t, bob, base.NextBatch, 0)
	if len(resp.Rooms.Join[room].Ephemeral.Events) == 0 {
		t.Fatal("no ephemeral events")
	}
	u := st.LastRequestTo(t, "/sync").DynamoDB
	t.Logf("incremental sync with typing, receipts and a fully read marker: %d calls, %.1f RCU", u.Calls, u.ReadUnits)
	// auth, the stream (eventually consistent), memberships, the room's
	// recent items, its account data; then the unread counts (shared/unread:
	// the receipts beside history visibility and the events after the
	// newest the initial sync counted, read from there by a key condition
	// (none, not a page of the newest 20); bob's receipt is past the
	// events counted, so no rules or room state are read); last, the
	// stream again, strongly consistent, for key counts uploaded meanwhile.
	if u.Calls != 10 || u.ReadUnits != 12.5 {
		t.Errorf("incremental sync: %+v, want 10 calls, 12.5 RCU", u)
	}

	// Initial sync: two Queries per joined room.
	sync(t, bob, "", 0)
	u = st.LastRequestTo(t, "/sync").DynamoDB
	t.Logf("initial sync of one room: %d calls, %.1f RCU", u.Calls, u.ReadUnits)

	for _, members := range []int{20} {
		r, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		must(err)
		for i := 1; i < members; i++ {
			c := st.Member(t, fmt.Sprintf("m%d-%d", members, i))
			_, err := c.JoinRoomByID(bg, r.RoomID)
			must(err)
		}
		ev := say(t, alice, r.RoomID, "to all")
		must(alice.MarkRead(bg, r.RoomID, ev))
		u := st.LastRequestTo(t, "/receipt/").DynamoDB
		t.Logf("m.read in a room of %d local members: %d calls, %.1f RCU, %.1f WCU", members, u.Calls, u.ReadUnits, u.WriteUnits)
		if u.WriteUnits != float64(2+members) {
			t.Errorf("m.read to %d members: %.1f WCU, want %d", members, u.WriteUnits, 2+members)
		}
	}
}
