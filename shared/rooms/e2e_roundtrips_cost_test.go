package rooms_test

import (
	"fmt"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// tokenRoundTrips is what the access token's read adds to a request's
// round trips: none, as it goes beside the handler's first reads
// (accounts.RequireAuth, a signed token).
const tokenRoundTrips = 0

// callDelay stands for a DynamoDB call's latency in AWS, and more: calls
// a request makes side by side overlap even when a goroutine of a loaded
// machine is slow to begin its call, and calls made one after the other
// never do, so the round trips counted are the request's chain of calls.
const callDelay = 50 * time.Millisecond

// slowStack is a stack whose DynamoDB calls are held callDelay while
// slow holds them (the requests measured; the rest of a test runs at the
// embedded store's speed).
func slowStack(t *testing.T) (*servertest.Stack, *servertest.SlowStore) {
	st, slow := servertest.StartSlow(t, callDelay)
	slow.Hold(false)
	return st, slow
}

// TestRoundTrips_Messages pins the sequential DynamoDB round trips of
// GET /rooms/{roomId}/messages, /event and /context, what their latency
// in AWS is made of, and that the reads made before the reader is known
// change nothing of what a refused reader gets. The figures are the most
// a request may take; fewer are counted where the end of one step's calls
// and the beginning of the next's overlap.
func TestRoundTrips_Messages(t *testing.T) {
	st, slow := slowStack(t)
	alice, bob := st.Member(t, "alice"), st.Member(t, "bob")
	room := create(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	for i := range 30 {
		say(t, alice, room, fmt.Sprint("message ", i))
	}
	measure := func(what, route string, most int, request func() error) {
		t.Helper()
		slow.Hold(true)
		err := request()
		slow.Hold(false)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		st.CheckRoundTripsWithin(t, what, route, 1, int64(most))
	}
	messages := func(from string, dir mautrix.Direction, limit int) (page *mautrix.RespMessages) {
		t.Helper()
		measure(fmt.Sprintf("/messages from %q, dir %c, limit %d", from, dir, limit), "/messages", tokenRoundTrips+1, func() (err error) {
			page, err = alice.Messages(bg, room, from, "", dir, nil, limit)
			return err
		})
		return page
	}

	// The live end, backwards, the page a client opening a room asks
	// for: the room's info, the reader's membership and the page of
	// slots side by side.
	for _, limit := range []int{20, 100} {
		page := messages("", mautrix.DirectionBackward, limit)
		if want := min(limit, 30); len(bodies(page.Chunk)) != want {
			t.Fatalf("page of %d: %d messages, want %d", limit, len(bodies(page.Chunk)), want)
		}
	}
	// From a token, either way.
	first := messages("", mautrix.DirectionBackward, 10)
	back := messages(first.End, mautrix.DirectionBackward, 10)
	wantEqual(t, "the next page back", bodies(back.Chunk)[0], "message 19")
	fwd := messages(back.End, mautrix.DirectionForward, 10)
	wantEqual(t, "the page forwards", bodies(fwd.Chunk)[0], "message 10")

	// Redacted messages: their redactions are in the page, or read side
	// by side (the pointers, then the slots) however many there are.
	for _, ev := range first.Chunk[5:8] {
		if _, err := alice.RedactEvent(bg, room, ev.ID); err != nil {
			t.Fatal(err)
		}
	}
	wantRedacted(t, messages("", mautrix.DirectionBackward, 20).Chunk, 3)
	var page *mautrix.RespMessages
	measure("/messages with redactions read", "/messages", tokenRoundTrips+3, func() (err error) {
		page, err = alice.Messages(bg, room, first.Start, "", mautrix.DirectionBackward, nil, 10)
		return err
	})
	wantRedacted(t, page.Chunk, 3)

	// One event: its pointer beside the viewer's reads, then its slot.
	ev := page.Chunk[2]
	measure("/event", "/event/", tokenRoundTrips+2, func() error {
		return raw(alice, "GET", nil, nil, "v3", "rooms", room, "event", ev.ID)
	})
	// With its context: the same, then the pages either side of it side
	// by side, their redactions among them, then the state at the last
	// event (StateAt: its snapshot, then the snapshot's blocks, the
	// current state beside them).
	measure("/context", "/context/", tokenRoundTrips+5, func() error {
		_, err := alice.Context(bg, room, ev.ID, nil, 10)
		return err
	})

	// The member list a client reads on opening a room, at its last
	// sync: whether the room still loads its members, the viewer's reads
	// and the slot at the token side by side, then the state after it
	// (StateAt).
	sync, err := alice.SyncRequest(bg, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	measure("/members at a sync", "/members", tokenRoundTrips+3, func() error {
		return rawQuery(alice, map[string]string{"at": sync.NextBatch, "not_membership": "leave"}, nil, "v3", "rooms", room, "members")
	})
	// The current members: the same, but for the viewer's reads then the
	// current state.
	measure("/members", "/members", tokenRoundTrips+2, func() error {
		return raw(alice, "GET", nil, nil, "v3", "rooms", room, "members")
	})
	measure("/joined_members", "/joined_members", tokenRoundTrips+2, func() error {
		return raw(alice, "GET", nil, nil, "v3", "rooms", room, "joined_members")
	})

	// A user who may not read the room: refused as before, whatever was
	// read beside their membership.
	private := create(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	say(t, alice, private, "secret")
	_, err = bob.Messages(bg, private, "", "", mautrix.DirectionBackward, nil, 10)
	wantErr(t, "a stranger's /messages of a private room", err, "M_FORBIDDEN", 403)
	_, err = bob.Messages(bg, "!nowhere:localhost", "", "", mautrix.DirectionBackward, nil, 10)
	wantErr(t, "/messages of a room that does not exist", err, "M_FORBIDDEN", 403)
}

// wantRedacted checks that n events of chunk are redacted, each with the
// redaction that did it.
func wantRedacted(t *testing.T, chunk []*event.Event, n int) {
	t.Helper()
	got := 0
	for _, ev := range chunk {
		if ev.Unsigned.RedactedBecause != nil {
			got++
			if ev.Unsigned.RedactedBecause.Redacts != ev.ID && ev.Unsigned.RedactedBecause.Content.Raw["redacts"] != ev.ID.String() {
				t.Errorf("%s redacted because of %s, which redacts another event", ev.ID, ev.Unsigned.RedactedBecause.ID)
			}
			if len(ev.Content.Raw) != 0 {
				t.Errorf("%s redacted and still has content %v", ev.ID, ev.Content.Raw)
			}
		}
	}
	if got != n {
		t.Fatalf("%d redacted events in the page, want %d", got, n)
	}
}
