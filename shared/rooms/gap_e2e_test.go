package rooms_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Gaps: bob's server sends 30 messages this server never gets, then a 31st
// that arrives with its prev_events missing; get_missing_events would give
// only the last 10, which this server cannot place either, so it takes the
// 31st with the state before it (ReceiveWithState), above a gap. Paging
// back through /messages fills the gap from /backfill (the Backfiller)
// in graph order; /sync never shows the filled events as news.

// chain builds n messages of bob's, each on the one before, the first on
// prev at depth+1, as bob's server makes them unseen by this server.
func chain(t *testing.T, r *remote, room id.RoomID, n int, first int, prev []string, depth int64, state []events.PDU) []events.PDU {
	t.Helper()
	st, err := events.NewState(state)
	if err != nil {
		t.Fatal(err)
	}
	info, err := r.rooms.Info(bg, string(room))
	if err != nil {
		t.Fatal(err)
	}
	var out []events.PDU
	for i := range n {
		c, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": fmt.Sprintf("b%d", first+i)})
		r.clock = r.clock.Add(1e9)
		depth++
		ev, err := r.signer.Build(info.Version, events.Proto{RoomID: string(room), Sender: bob, Type: "m.room.message", Content: c},
			events.Graph{PrevEvents: prev, Depth: depth}, st, r.clock)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
		prev = []string{ev.EventID()}
	}
	return out
}

// fakeBackfill answers as /backfill of a server holding evs: the events
// from names and those before them, breadth first, at most limit.
func fakeBackfill(evs []events.PDU, calls *int) rooms.Backfiller {
	byID := map[string]events.PDU{}
	for _, ev := range evs {
		byID[ev.EventID()] = ev
	}
	return func(_ context.Context, _, _ string, from []string, limit int) ([]events.PDU, error) {
		*calls++
		var out []events.PDU
		seen := map[string]bool{}
		queue := slices.Clone(from)
		for len(queue) > 0 && len(out) < limit {
			id := queue[0]
			queue = queue[1:]
			ev, ok := byID[id]
			if !ok || seen[id] {
				continue
			}
			seen[id] = true
			out = append(out, ev)
			queue = append(queue, ev.PrevEventIDs()...)
		}
		return out, nil
	}
}

// pageAll pages back through the room's /messages, limit at a time, and
// returns the message bodies oldest first.
func pageAll(t *testing.T, u mxUser, room id.RoomID, limit int) []string {
	t.Helper()
	var out []string
	from := ""
	for range 100 {
		resp, err := u.Messages(bg, room, from, "", mautrix.DirectionBackward, nil, limit)
		if err != nil {
			t.Fatalf("messages: %v", err)
		}
		b := bodies(resp.Chunk)
		slices.Reverse(b)
		out = append(b, out...)
		if resp.End == "" {
			return out
		}
		from = resp.End
	}
	t.Fatal("messages: no end after 100 pages")
	return nil
}

func TestGap_FilledThroughMessages(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	r := newRemote(t, st)
	room, _ := joinBob(t, st, r, alice)
	carol := st.Member(t, "carol")
	if _, err := carol.JoinRoomByID(bg, room); err != nil {
		t.Fatal(err)
	}
	say(t, alice, room, "a1")
	first, err := alice.FullSyncRequest(bg, mautrix.ReqSync{})
	if err != nil {
		t.Fatal(err)
	}
	// Carol's token is from before b31, and she syncs again only once the
	// gap is filled.
	carolFirst, err := carol.FullSyncRequest(bg, mautrix.ReqSync{})
	if err != nil {
		t.Fatal(err)
	}

	ext, depth, err := st.Server.Rooms.Extremities(bg, string(room))
	if err != nil {
		t.Fatal(err)
	}
	state := r.state(room)
	missing := chain(t, r, room, 30, 1, ext, depth, state)
	last := chain(t, r, room, 1, 31, []string{missing[29].EventID()}, missing[29].Depth(), state)[0]

	// As the worker does once get_missing_events left prev_events missing.
	if _, err := st.Server.Rooms.Receive(bg, last); err == nil {
		t.Fatal("receive of b31 without its prev_events: no error")
	}
	// The head, read again; the records of it and its prev_event; the
	// pointers of the state given (all held); the auth state; the
	// records of the extremities, their snapshots with the head's, their
	// blocks; the info; one transaction (its slot, the copy holding the
	// gap's first position, its pointer, the info).
	ctx, m := store.WithMeter(bg)
	out, err := st.Server.Rooms.ReceiveWithState(ctx, last, state, nil)
	if err != nil || out.Status != rooms.Accepted {
		t.Fatalf("receive b31 with state: %+v, %v", out, err)
	}
	servertest.CheckUsage(t, "b31 above a gap", m.Usage(), servertest.Want(13, 27, 11))
	news, err := alice.FullSyncRequest(bg, mautrix.ReqSync{Since: first.NextBatch})
	if err != nil {
		t.Fatal(err)
	}
	wantEqual(t, "sync after b31", bodies(news.Rooms.Join[room].Timeline.Events), []string{"b31"})
	wantEqual(t, "sync after b31: limited", news.Rooms.Join[room].Timeline.Limited, true)

	calls := 0
	st.Server.Rooms.Backfiller = fakeBackfill(append(slices.Clone(missing), last), &calls)
	want := []string{"a1"}
	for i := 1; i <= 31; i++ {
		want = append(want, fmt.Sprintf("b%d", i))
	}
	// The first page, from the sync's prev_batch (just below b31), goes
	// into the gap: it asks for 10 events and places them (TakeGap), then
	// reads the page again.
	prevBatch := news.Rooms.Join[room].Timeline.PrevBatch
	page, err := alice.Messages(bg, room, prevBatch, "", mautrix.DirectionBackward, nil, 10)
	if err != nil {
		t.Fatal(err)
	}
	b := bodies(page.Chunk)
	slices.Reverse(b)
	wantEqual(t, "the page from the sync's prev_batch", b, want[21:31])
	st.CheckCost(t, "a /messages page through a gap", "/messages", servertest.Want(13, 29, 42))
	wantEqual(t, "alice's /messages, 10 a page", pageAll(t, alice, room, 10), want)
	if calls == 0 {
		t.Fatal("no /backfill asked")
	}
	asked := calls
	wantEqual(t, "alice's /messages again, 7 a page", pageAll(t, alice, room, 7), want)
	wantEqual(t, "/backfill asked again", calls, asked)

	// The filled events are history, not news.
	after, err := alice.FullSyncRequest(bg, mautrix.ReqSync{Since: news.NextBatch})
	if err != nil {
		t.Fatal(err)
	}
	if j, ok := after.Rooms.Join[room]; ok && len(j.Timeline.Events) > 0 {
		t.Fatalf("sync after the fill: %v", bodies(j.Timeline.Events))
	}
	carolNext, err := carol.FullSyncRequest(bg, mautrix.ReqSync{Since: carolFirst.NextBatch, FilterID: `{"room":{"timeline":{"limit":50}}}`})
	if err != nil {
		t.Fatal(err)
	}
	wantEqual(t, "carol's sync from before b31, after the fill", bodies(carolNext.Rooms.Join[room].Timeline.Events), []string{"b31"})
	wantEqual(t, "carol's sync: limited", carolNext.Rooms.Join[room].Timeline.Limited, true)
	say(t, alice, room, "a2")
	next, err := alice.FullSyncRequest(bg, mautrix.ReqSync{Since: after.NextBatch})
	if err != nil {
		t.Fatal(err)
	}
	wantEqual(t, "sync after a2", bodies(next.Rooms.Join[room].Timeline.Events), []string{"a2"})
	for _, ev := range []events.PDU{missing[0], missing[17], last} {
		got, err := alice.GetEvent(bg, room, id.EventID(ev.EventID()))
		if err != nil || got.ID != id.EventID(ev.EventID()) {
			t.Fatalf("/event %s: %v", ev.EventID(), err)
		}
	}
	// The next local event builds on b31 and a2's extremities alone.
	ext, _, err = st.Server.Rooms.Extremities(bg, string(room))
	if err != nil || len(ext) != 1 {
		t.Fatalf("extremities after a2: %v, %v", ext, err)
	}
}
