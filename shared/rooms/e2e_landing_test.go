package rooms_test

import (
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// syncBodies syncs u through st from since (an initial sync for "") without
// waiting, and returns the bodies of the messages in room's timeline and
// the next token.
func syncBodies(t *testing.T, st *servertest.Stack, u servertest.User, room, since string) ([]string, string) {
	t.Helper()
	path := "/_matrix/client/v3/sync?timeout=0"
	if since != "" {
		path += "&since=" + url.QueryEscape(since)
	}
	r := st.Do(t, "GET", path, u.AccessToken, nil)
	next, _ := r.Body["next_batch"].(string)
	if r.Status != 200 || next == "" {
		t.Fatalf("sync: %d %s", r.Status, r.Raw)
	}
	return timelineBodies(r, room), next
}

// timelineBodies are the bodies of the messages in room's timeline in a
// sync's answer.
func timelineBodies(r servertest.Reply, room string) []string {
	var out []string
	rms, _ := r.Body["rooms"].(map[string]any)
	join, _ := rms["join"].(map[string]any)
	jr, _ := join[room].(map[string]any)
	tl, _ := jr["timeline"].(map[string]any)
	evs, _ := tl["events"].([]any)
	for _, ev := range evs {
		ev := ev.(map[string]any)
		if ev["type"] == "m.room.message" {
			out = append(out, ev["content"].(map[string]any)["body"].(string))
		}
	}
	return out
}

// TestLanding_EntryBeforeItsSlot: a message's stream entries are written
// beside its slot, so a sync may read an entry whose slot is not there
// yet, or never will be (its process died between the writes). Such a
// sync delivers the room up to the event before it; a sync that may wait
// waits on instead of answering with nothing; the next message, which
// takes the position, reaches the member's sync. A sync that took the
// entry for delivered would never show it.
func TestLanding_EntryBeforeItsSlot(t *testing.T) {
	st := servertest.Start(t, "CIRRUS_SYNC_POLL_INTERVAL_MS=100")
	twin := st.Twin(t)
	alice := st.Register(t, "alice")
	bob := st.Register(t, "bob")
	room := createRoom(t, st, alice, map[string]any{"preset": "public_chat"})
	join(t, st, bob, room)
	if _, err := send(t, st, alice, room, "first", "first"); err != nil {
		t.Fatal(err)
	}
	_, since := syncBodies(t, twin, bob, room, "")

	rooms.SetHalt(st.Server.Rooms, haltOnce("landed"))
	if _, r := put(t, st, alice, roomPath(room)+"/send/m.room.message/lost", map[string]any{"msgtype": "m.text", "body": "never stored"}); r.Status != 500 {
		t.Fatalf("send halted between its entries and its slot: %d %s", r.Status, r.Raw)
	}
	got, next := syncBodies(t, twin, bob, room, since)
	if len(got) != 0 {
		t.Fatalf("sync after an entry without its slot shows %q, want nothing", got)
	}
	// A long-poll from before the entry does not answer with nothing: it
	// waits on, and answers with the next message.
	polled := make(chan servertest.Reply, 1)
	go func() {
		polled <- twin.Do(t, "GET", "/_matrix/client/v3/sync?timeout=30000&since="+url.QueryEscape(since), bob.AccessToken, nil)
	}()
	for waiting := 0; waiting != 1; waiting, _ = twin.Server.Sync.Waiting() {
		select {
		case r := <-polled:
			t.Fatalf("the long-poll answered before the next message: %d %s", r.Status, r.Raw)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if _, err := send(t, st, alice, room, "next", "stored"); err != nil {
		t.Fatal(err)
	}
	if got := timelineBodies(<-polled, room); !slices.Equal(got, []string{"stored"}) {
		t.Fatalf("the long-poll shows %q, want [stored]", got)
	}
	if got, _ := syncBodies(t, twin, bob, room, next); !slices.Equal(got, []string{"stored"}) {
		t.Fatalf("sync after the next message shows %q, want [stored]", got)
	}
	if n := countTypes(t, st, alice, room)["m.room.message"]; n != 2 {
		t.Fatalf("%d messages, want 2", n)
	}
}

// TestLanding_LoserPutsBackTheWinnersIndex: two processes send to one
// room at the same position; the loser writes its search index items
// beside its slot after the winner wrote its own, over them where both
// messages have a word. Having lost the slot, it puts the winner's back:
// both messages are found by the word they share.
func TestLanding_LoserPutsBackTheWinnersIndex(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Register(t, "alice")
	room := createRoom(t, st, alice, map[string]any{})
	if _, err := send(t, st, alice, room, "w1", "warm"); err != nil {
		t.Fatal(err)
	}
	// The twin has not seen the room: it reads the head st holds.
	twin := st.Twin(t)

	loserAt, loserGo := blockAtSlot(st.Server.Rooms)
	winnerAt, winnerGo := blockAtSlot(twin.Server.Rooms)
	loser, winner := make(chan error, 1), make(chan error, 1)
	go func() { _, err := send(t, st, alice, room, "l", "apple banana"); loser <- err }()
	<-loserAt
	go func() { _, err := send(t, twin, alice, room, "w", "apple cherry"); winner <- err }()
	<-winnerAt
	close(winnerGo)
	if err := <-winner; err != nil {
		t.Fatal(err)
	}
	close(loserGo)
	if err := <-loser; err != nil {
		t.Fatal(err)
	}

	for word, want := range map[string][]string{"apple": {"apple banana", "apple cherry"}, "cherry": {"apple cherry"}, "banana": {"apple banana"}} {
		r := st.Do(t, "POST", "/_matrix/client/v3/search", alice.AccessToken, map[string]any{
			"search_categories": map[string]any{"room_events": map[string]any{"search_term": word, "order_by": "recent"}}})
		if r.Status != 200 {
			t.Fatalf("search %q: %d %s", word, r.Status, r.Raw)
		}
		var got []string
		results, _ := r.Body["search_categories"].(map[string]any)["room_events"].(map[string]any)["results"].([]any)
		for _, res := range results {
			ev := res.(map[string]any)["result"].(map[string]any)
			got = append(got, ev["content"].(map[string]any)["body"].(string))
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("search %q finds %q, want %q", word, got, want)
		}
	}
}
