package rooms_test

import (
	"fmt"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// tokenRoundTrips is what the access token's read adds to a request's
// round trips: 1 while it goes before the handler's reads, 0 once it goes
// beside them (issue 19).
const tokenRoundTrips = 1

// messagesRoundTrips is the most sequential DynamoDB round trips a page of
// /messages may take: the access token's read, then the room's info, the
// reader's membership and the page of slots side by side.
const messagesRoundTrips = tokenRoundTrips + 1

// TestRoundTrips_Messages pins the sequential DynamoDB round trips of
// GET /rooms/{roomId}/messages, what its latency in AWS is made of, and
// that the reads made before the reader is known change nothing of what a
// refused reader gets.
func TestRoundTrips_Messages(t *testing.T) {
	st := servertest.Start(t)
	alice, bob := st.Member(t, "alice"), st.Member(t, "bob")
	room := create(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	for i := range 30 {
		say(t, alice, room, fmt.Sprint("message ", i))
	}

	// The live end, backwards: the common page of a client opening a room.
	for _, limit := range []int{20, 100} {
		page := must[*mautrix.RespMessages](t, "messages")(alice.Messages(bg, room, "", "", mautrix.DirectionBackward, nil, limit))
		if want := min(limit, 30); len(bodies(page.Chunk)) != want {
			t.Fatalf("page of %d: %d messages, want %d", limit, len(bodies(page.Chunk)), want)
		}
		st.CheckRoundTripsWithin(t, fmt.Sprintf("/messages of %d from the live end", limit), "/messages", 1, messagesRoundTrips)
	}

	// From a token, either way.
	first := must[*mautrix.RespMessages](t, "messages")(alice.Messages(bg, room, "", "", mautrix.DirectionBackward, nil, 10))
	back := must[*mautrix.RespMessages](t, "messages")(alice.Messages(bg, room, first.End, "", mautrix.DirectionBackward, nil, 10))
	st.CheckRoundTripsWithin(t, "/messages backwards from a token", "/messages", 1, messagesRoundTrips)
	wantEqual(t, "the next page back", bodies(back.Chunk)[0], "message 19")
	fwd := must[*mautrix.RespMessages](t, "messages")(alice.Messages(bg, room, back.End, "", mautrix.DirectionForward, nil, 10))
	st.CheckRoundTripsWithin(t, "/messages forwards from a token", "/messages", 1, messagesRoundTrips)
	wantEqual(t, "the page forwards", bodies(fwd.Chunk)[0], "message 10")

	// Redacted messages: their redactions are in the page, or read side
	// by side (the pointer, then the slot) however many there are.
	for _, ev := range first.Chunk[5:8] {
		if _, err := alice.RedactEvent(bg, room, ev.ID); err != nil {
			t.Fatal(err)
		}
	}
	page := must[*mautrix.RespMessages](t, "messages")(alice.Messages(bg, room, "", "", mautrix.DirectionBackward, nil, 20))
	st.CheckRoundTripsWithin(t, "/messages with its redactions in the page", "/messages", 1, messagesRoundTrips)
	wantRedacted(t, page.Chunk, 3)
	page = must[*mautrix.RespMessages](t, "messages")(alice.Messages(bg, room, first.Start, "", mautrix.DirectionBackward, nil, 10))
	// The chains of reads overlap: 2 round trips more at most, 1 where
	// one chain's slot begins before another's pointer ended.
	st.CheckRoundTripsWithin(t, "/messages with redactions read", "/messages", 2, messagesRoundTrips+2)
	wantRedacted(t, page.Chunk, 3)

	// One event, and one with its context: the event's reads go beside
	// the viewer's, the pages around it beside each other, and the
	// redactions of the events are among them.
	ev := page.Chunk[2]
	if err := raw(alice, "GET", nil, nil, "v3", "rooms", room, "event", ev.ID); err != nil {
		t.Fatal(err)
	}
	st.CheckRoundTripsWithin(t, "/event", "/event/", 1, tokenRoundTrips+2)
	if _, err := alice.Context(bg, room, ev.ID, nil, 10); err != nil {
		t.Fatal(err)
	}
	// The event's pointer beside the viewer, its slot, the pages either
	// side, the state at the last event (StateAt: three reads in a row).
	st.CheckRoundTripsWithin(t, "/context", "/context/", 3, tokenRoundTrips+6)

	// A user who may not read the room: refused as before, whatever was
	// read beside their membership.
	private := create(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	say(t, alice, private, "secret")
	_, err := bob.Messages(bg, private, "", "", mautrix.DirectionBackward, nil, 10)
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
