package federation_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// joinBase is where a room taken in through a remote join starts
// (rooms.joinBase).
const joinBase = 100_000_000_000

// pagedBodies pages c's /messages of room backwards from the live end,
// limit events a page, to the start: the messages' bodies, oldest first,
// and the events' IDs.
func pagedBodies(t *testing.T, c *mautrix.Client, room id.RoomID, limit int) (bodies, ids []string) {
	t.Helper()
	from := ""
	for range 100 {
		resp, err := c.Messages(background, room, from, "", mautrix.DirectionBackward, nil, limit)
		if err != nil {
			t.Fatalf("/messages from %q: %v", from, err)
		}
		for _, ev := range resp.Chunk {
			ids = append(ids, string(ev.ID))
			if ev.Type == event.EventMessage {
				bodies = append(bodies, ev.Content.Raw["body"].(string))
			}
		}
		if resp.End == "" {
			slices.Reverse(bodies)
			slices.Reverse(ids)
			return bodies, ids
		}
		from = resp.End
	}
	t.Fatal("/messages never ended")
	return nil, nil
}

// TestTwoServers_Backfill: bob of B joins alice's room on A after five
// messages; B takes the room in at positions from 10^11 on. The five
// messages, as A stores them, given to B's TakeBackfilled in any order,
// take the positions below: bob's /messages, paged back three at a time
// from the live end, shows them oldest first below the state taken in at
// the join; an incremental /sync from before shows none of them, the
// current state is unchanged, and the same backfill again stores nothing
// more.
func TestTwoServers_Backfill(t *testing.T) {
	a, _ := servertest.StartNamed(t)
	a.RunQueue(t)
	b, _ := servertest.StartNamed(t)
	// B does not ask A for the history itself here (that is
	// TestTwoServers_BackfillOnMessages): the test hands it over.
	b.Server.Rooms.Backfiller = nil
	b.RunQueue(t)
	alice := a.Member(t, "alice")
	bob := b.Member(t, "bob")
	room := publicRoom(t, alice)
	var old []events.PDU
	var want []string
	for i := range 5 {
		body := fmt.Sprintf("old %d", i)
		sent, err := alice.SendText(background, room, body)
		if err != nil {
			t.Fatal(err)
		}
		e, err := a.Server.Rooms.Event(background, string(room), string(sent.EventID))
		if err != nil {
			t.Fatal(err)
		}
		old = append(old, e.PDU)
		want = append(want, body)
	}
	joinVia(t, bob, room, a.Name())
	low, err := b.Server.Rooms.Lowest(background, string(room))
	if err != nil || low != joinBase {
		t.Fatalf("B's first position in the room: %d %v, want %d", low, err, joinBase)
	}
	if low, err := a.Server.Rooms.Lowest(background, string(room)); err != nil || low != 1 {
		t.Fatalf("A's first position in the room it created: %d %v, want 1", low, err)
	}
	if got, _ := pagedBodies(t, bob.Client, room, 3); len(got) != 0 {
		t.Fatalf("bob's messages before the backfill: %v", got)
	}
	synced, err := bob.SyncRequest(background, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	stateBefore := stateIDs(t, b, string(room))

	shuffled := []events.PDU{old[3], old[0], old[4], old[1], old[2]}
	metered, meter := store.WithMeter(background)
	out, err := b.Server.Rooms.TakeBackfilled(metered, string(room), shuffled)
	if err != nil {
		t.Fatal(err)
	}
	servertest.CheckUsage(t, "TakeBackfilled of 5 messages", meter.Usage(), servertest.Want(5, 12, 20))
	seqs := map[string]int64{}
	for i, o := range out {
		if o.Status != rooms.Accepted || o.Duplicate || o.Seq >= joinBase || o.Seq <= 0 {
			t.Fatalf("outcome of %s: %+v", shuffled[i].EventID(), o)
		}
		seqs[shuffled[i].EventID()] = o.Seq
	}
	for i := 1; i < len(old); i++ {
		if seqs[old[i].EventID()] != seqs[old[i-1].EventID()]+1 {
			t.Fatalf("positions %v are not the messages' order, just below %d", seqs, joinBase)
		}
	}
	if seqs[old[4].EventID()] != joinBase-1 {
		t.Fatalf("newest backfilled at %d, want %d", seqs[old[4].EventID()], joinBase-1)
	}

	got, ids := pagedBodies(t, bob.Client, room, 3)
	if !slices.Equal(got, want) {
		t.Fatalf("bob's /messages after the backfill: %v, want %v", got, want)
	}
	for i, e := range old {
		if ids[i] != e.EventID() {
			t.Fatalf("event %d of bob's /messages: %s, want %s (the backfilled first)", i, ids[i], e.EventID())
		}
	}
	if !slices.Equal(stateIDs(t, b, string(room)), stateBefore) {
		t.Fatalf("current state changed by the backfill")
	}
	// A backfilled event is an event of the room like any other to read.
	if ev, err := bob.GetEvent(background, room, id.EventID(old[2].EventID())); err != nil || ev.Content.Raw["body"] != "old 2" {
		t.Fatalf("/event of a backfilled event: %v %v", ev, err)
	}
	ctxResp, err := bob.Context(background, room, id.EventID(old[2].EventID()), nil, 2)
	if err != nil {
		t.Fatalf("/context of a backfilled event: %v", err)
	}
	if len(ctxResp.EventsBefore) != 1 || ctxResp.EventsBefore[0].ID != id.EventID(old[1].EventID()) ||
		len(ctxResp.EventsAfter) == 0 || ctxResp.EventsAfter[0].ID != id.EventID(old[3].EventID()) {
		t.Fatalf("/context of old 2: before %v, after %v", ctxResp.EventsBefore, ctxResp.EventsAfter)
	}
	if _, err := alice.SendText(background, room, "after"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice's next message on B", func() ([]string, bool) {
		b := bodies(t, bob.Client, room)
		return b, slices.Contains(b, "after")
	}, noLogs)
	next, err := bob.SyncRequest(background, 0, synced.NextBatch, "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	var news []string
	for _, ev := range next.Rooms.Join[room].Timeline.Events {
		if ev.Type == event.EventMessage {
			news = append(news, ev.Content.Raw["body"].(string))
		}
	}
	if !slices.Equal(news, []string{"after"}) {
		t.Fatalf("incremental /sync after the backfill: %v, want just [after]", news)
	}
	// An initial sync answers, the room joined, its newest message last.
	full, err := bob.SyncRequest(background, 0, "", "", false, "")
	if err != nil {
		t.Fatalf("initial /sync after the backfill: %v", err)
	}
	tl := full.Rooms.Join[room].Timeline.Events
	if len(tl) == 0 || tl[len(tl)-1].Content.Raw["body"] != "after" {
		t.Fatalf("initial /sync's timeline after the backfill: %v", tl)
	}

	metered, meter = store.WithMeter(background)
	again, err := b.Server.Rooms.TakeBackfilled(metered, string(room), old)
	if err != nil {
		t.Fatal(err)
	}
	servertest.CheckUsage(t, "TakeBackfilled of the same 5 again", meter.Usage(), servertest.Want(2, 6, 0))
	for i, o := range again {
		if !o.Duplicate || o.Seq != seqs[old[i].EventID()] {
			t.Fatalf("second backfill of %s: %+v, want a duplicate at %d", old[i].EventID(), o, seqs[old[i].EventID()])
		}
	}
	if got, _ := pagedBodies(t, bob.Client, room, 50); !slices.Equal(got, append(want, "after")) {
		t.Fatalf("bob's /messages after the second backfill: %v", got)
	}

	// An event the auth rules refuse against its auth events (its sender,
	// of A, never joined) is stored Rejected, outside the timeline.
	cur, err := a.Server.Rooms.CurrentState(background, string(room))
	if err != nil {
		t.Fatal(err)
	}
	st, err := events.NewState(cur)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := a.Server.Rooms.Signer.Build("12", events.Proto{RoomID: string(room), Sender: "@mallory:" + a.Name(), Type: "m.room.message",
		Content: []byte(`{"msgtype":"m.text","body":"never joined"}`)}, events.Graph{PrevEvents: []string{old[0].EventID()}, Depth: old[0].Depth() + 1}, st, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	lowBefore, _ := b.Server.Rooms.Lowest(background, string(room))
	for _, dup := range []bool{false, true} {
		out, err := b.Server.Rooms.TakeBackfilled(background, string(room), []events.PDU{forged})
		if err != nil {
			t.Fatal(err)
		}
		if out[0].Status != rooms.Rejected || out[0].Duplicate != dup {
			t.Fatalf("backfill of mallory's event (again: %v): %+v, want rejected", dup, out[0])
		}
	}
	if low, _ := b.Server.Rooms.Lowest(background, string(room)); low != lowBefore {
		t.Fatalf("a rejected event moved the lowest position from %d to %d", lowBefore, low)
	}
	if got, _ := pagedBodies(t, bob.Client, room, 50); slices.Contains(got, "never joined") {
		t.Fatalf("bob's /messages shows a rejected event: %v", got)
	}
}

// stateIDs is the room's current state on st: event IDs, sorted.
func stateIDs(t *testing.T, st *servertest.Stack, room string) []string {
	t.Helper()
	evs, err := st.Server.Rooms.CurrentState(background, room)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range evs {
		ids = append(ids, e.EventID())
	}
	sort.Strings(ids)
	return ids
}

// TestTwoServers_BackfillOnMessages: bob of B joins alice's room on A
// after 25 messages. Paging bob's /messages back ten at a time, B asks A
// for the history past its lowest position (/backfill), checks and stores
// it below the join, and answers with it: all 25 messages, oldest first,
// below the state taken in. Paging again asks for nothing more and shows
// the same; an incremental /sync shows none of them.
func TestTwoServers_BackfillOnMessages(t *testing.T) {
	a, b := twoServers(t)
	alice := a.Member(t, "alice")
	bob := b.Member(t, "bob")
	room := publicRoom(t, alice)
	var want []string
	for i := range 25 {
		body := fmt.Sprintf("old %d", i)
		if _, err := alice.SendText(background, room, body); err != nil {
			t.Fatal(err)
		}
		want = append(want, body)
	}
	joinVia(t, bob, room, a.Name())
	synced, err := bob.SyncRequest(background, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	stateBefore := stateIDs(t, b, string(room))
	got, ids := pagedBodies(t, bob.Client, room, 10)
	if !slices.Equal(got, want) {
		t.Fatalf("bob's /messages, paged back ten at a time: %v, want %v", got, want)
	}
	for _, r := range b.Requests(t) {
		if strings.Contains(r.Route, "/messages") {
			t.Logf("B's %s %s: %d calls, %.1f RCU, %.1f WCU", r.Route, r.Path, r.DynamoDB.Calls, r.DynamoDB.ReadUnits, r.DynamoDB.WriteUnits)
		}
	}
	aliceIDs := messageIDs(t, alice.Client, room)
	// A room created here holds its whole history: a page that reaches
	// position 1 reads nothing more and asks no one.
	a.CheckCost(t, "A's /messages of its own room, to its start", "/messages", servertest.Want(4, 10, 0))
	for i, id := range aliceIDs[:len(aliceIDs)-1] { // all but bob's join
		if !slices.Contains(ids, id) {
			t.Errorf("event %d of A's timeline, %s, is not in B's", i, id)
		}
	}
	low, err := b.Server.Rooms.Lowest(background, string(room))
	if err != nil || low != joinBase-25 {
		t.Fatalf("B's lowest position: %d %v, want %d (25 messages below the join)", low, err, joinBase-25)
	}
	if again, _ := pagedBodies(t, bob.Client, room, 10); !slices.Equal(again, want) {
		t.Fatalf("bob's /messages paged again: %v", again)
	}
	if low2, _ := b.Server.Rooms.Lowest(background, string(room)); low2 != low {
		t.Fatalf("paging again moved the lowest position from %d to %d", low, low2)
	}
	if !slices.Equal(stateIDs(t, b, string(room)), stateBefore) {
		t.Fatalf("current state changed by the backfill")
	}
	if _, err := alice.SendText(background, room, "after"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice's next message on B", func() ([]string, bool) {
		b := bodies(t, bob.Client, room)
		return b, slices.Contains(b, "after")
	}, noLogs)
	next, err := bob.SyncRequest(background, 0, synced.NextBatch, "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	var news []string
	for _, ev := range next.Rooms.Join[room].Timeline.Events {
		if ev.Type == event.EventMessage {
			news = append(news, ev.Content.Raw["body"].(string))
		}
	}
	if !slices.Equal(news, []string{"after"}) {
		t.Fatalf("incremental /sync after the backfill: %v, want just [after]", news)
	}
}

// TestTwoServers_BackfillRefused: when no server answers /backfill, or
// answers with events of another room, bob's /messages still answers
// with what B holds (the history from the join on) and B stores nothing.
func TestTwoServers_BackfillRefused(t *testing.T) {
	a, b := twoServers(t)
	alice := a.Member(t, "alice")
	bob := b.Member(t, "bob")
	room := publicRoom(t, alice)
	other, err := alice.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "12"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendText(background, room, "old"); err != nil {
		t.Fatal(err)
	}
	stray, err := alice.SendText(background, other.RoomID, "of another room")
	if err != nil {
		t.Fatal(err)
	}
	strayEv, err := a.Server.Rooms.Event(background, string(other.RoomID), string(stray.EventID))
	if err != nil {
		t.Fatal(err)
	}
	joinVia(t, bob, room, a.Name())
	asked := 0
	for _, answer := range []func() ([]events.PDU, error){
		func() ([]events.PDU, error) { return nil, fmt.Errorf("no server answered") },
		func() ([]events.PDU, error) { return []events.PDU{strayEv.PDU}, nil },
	} {
		b.Server.Rooms.Backfiller = func(_ context.Context, roomID, _ string, from []string, _ int) ([]events.PDU, error) {
			asked++
			return answer()
		}
		if got, _ := pagedBodies(t, bob.Client, room, 10); len(got) != 0 {
			t.Fatalf("bob's /messages: %v, want no message", got)
		}
		if low, err := b.Server.Rooms.Lowest(background, string(room)); err != nil || low != joinBase {
			t.Fatalf("B's lowest position: %d %v, want %d", low, err, joinBase)
		}
	}
	if asked != 2 {
		t.Fatalf("the backfiller was asked %d times, want 2", asked)
	}
}

// TestTwoServers_BackfillJoinedVisibility: in a room whose history is
// visible to joined members only, the history backfilled below bob's join
// is stored but hidden from bob: the setting taken in at the join holds
// below it, not the "shared" default.
func TestTwoServers_BackfillJoinedVisibility(t *testing.T) {
	a, _ := servertest.StartNamed(t)
	a.RunQueue(t)
	b, _ := servertest.StartNamed(t)
	b.Server.Rooms.Backfiller = nil
	b.RunQueue(t)
	alice := a.Member(t, "alice")
	bob := b.Member(t, "bob")
	created, err := alice.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "12",
		InitialState: []*event.Event{{Type: event.StateHistoryVisibility, StateKey: new(string),
			Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	var old []events.PDU
	for i := range 3 {
		sent, err := alice.SendText(background, room, fmt.Sprintf("old %d", i))
		if err != nil {
			t.Fatal(err)
		}
		e, err := a.Server.Rooms.Event(background, string(room), string(sent.EventID))
		if err != nil {
			t.Fatal(err)
		}
		old = append(old, e.PDU)
	}
	joinVia(t, bob, room, a.Name())
	out, err := b.Server.Rooms.TakeBackfilled(background, string(room), old)
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range out {
		if o.Status != rooms.Accepted || o.Seq >= joinBase {
			t.Fatalf("outcome of old %d: %+v", i, o)
		}
	}
	if got, ids := pagedBodies(t, bob.Client, room, 10); len(got) != 0 || slices.Contains(ids, old[0].EventID()) {
		t.Fatalf("bob's /messages in a joined-only room: %v %v, want none of the history before his join", got, ids)
	}
}
