package sync_test

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestSliding_Costs measures sliding sync for a user in many rooms
// (docs/storage.md, "Sliding sync"): the first request of a connection,
// an incremental one after one message, and an idle poll. The room count
// is 50, or CIRRUS_SLIDING_ROOMS.
func TestSliding_Costs(t *testing.T) {
	n := 50
	if v, err := strconv.Atoi(os.Getenv("CIRRUS_SLIDING_ROOMS")); err == nil && v > 0 {
		n = v
	}
	st := servertest.Start(t, "CIRRUS_SYNC_POLL_INTERVAL_MS=250")
	au := st.Register(t, "alice")
	alice := st.Client(t, au)
	for i := range n {
		ssRoomOf(t, alice, fmt.Sprint("room ", i))
	}
	body := map[string]any{
		"lists": map[string]any{"all": map[string]any{
			"ranges": [][]int{{0, 19}}, "timeline_limit": 1,
			"required_state": [][]string{{"m.room.name", ""}, {"m.room.avatar", ""}, {"m.room.encryption", ""}, {"m.room.member", "$LAZY"}},
		}},
		"extensions": map[string]any{"to_device": map[string]any{"enabled": true}, "e2ee": map[string]any{"enabled": true}},
	}
	const route = "simplified_msc3575"
	first := ssSlide(t, st.URL, ssUnstable, au, "", 0, body)
	if len(first.Rooms) != 20 || first.Lists["all"].Count != n {
		t.Fatalf("first request: %d rooms, list %+v", len(first.Rooms), first.Lists)
	}
	u := st.LastRequestTo(t, route).DynamoDB
	t.Logf("first request, %d rooms, range 0-19: %d calls, %.1f RCU, %.1f WCU", n, u.Calls, u.ReadUnits, u.WriteUnits)

	// The oldest room gets a message: it moves to the top and comes whole.
	oldest := first.Lists["all"].Ops[0].RoomIDs[19]
	inc0 := ssSlide(t, st.URL, ssUnstable, au, first.Pos, 0, body)
	say(t, alice, id.RoomID(oldest), "news")
	inc := ssSlide(t, st.URL, ssUnstable, au, inc0.Pos, 0, body)
	if len(inc.Rooms) != 1 || inc.Rooms[oldest].Initial {
		t.Fatalf("incremental: %v", inc.Rooms)
	}
	u = st.LastRequestTo(t, route).DynamoDB
	t.Logf("incremental request, one message in a listed room: %d calls, %.1f RCU, %.1f WCU", u.Calls, u.ReadUnits, u.WriteUnits)

	// An idle poll reads the stream back a window of 10 s before its pos:
	// past the burst of room creations above, as a real idle client is.
	time.Sleep(11 * time.Second)
	caught := ssSlide(t, st.URL, ssUnstable, au, inc.Pos, 0, body)
	// A poll with no timeout is one wake check; the waiting one's further
	// checks each cost what its stream read does.
	once := ssSlide(t, st.URL, ssUnstable, au, caught.Pos, 0, body)
	u0 := st.LastRequestTo(t, route).DynamoDB
	t.Logf("poll without timeout, nothing new: %d calls, %.1f RCU, %.1f WCU", u0.Calls, u0.ReadUnits, u0.WriteUnits)
	start := time.Now()
	idle := ssSlide(t, st.URL, ssUnstable, au, once.Pos, 1000, body)
	if len(idle.Rooms) != 0 {
		t.Fatalf("idle poll: %v", idle.Rooms)
	}
	u = st.LastRequestTo(t, route).DynamoDB
	t.Logf("idle poll of 1 s (%v), 250 ms wake checks: %d calls, %.1f RCU, %.1f WCU", time.Since(start).Round(time.Millisecond), u.Calls, u.ReadUnits, u.WriteUnits)
	extra := u.Calls - u0.Calls
	perCheck := (u.ReadUnits - u0.ReadUnits) / float64(extra)
	t.Logf("idle poll: %.2f RCU per further wake check", perCheck)
	if u.WriteUnits != 0 || extra < 2 || perCheck > 0.5 {
		t.Fatalf("idle poll: %d further wake checks, %.2f RCU each, %.1f WCU", extra, perCheck, u.WriteUnits)
	}

	// The tags filters read each room's account data once per
	// connection: a new connection with and without one.
	plain := map[string]any{"conn_id": "plain", "lists": map[string]any{"all": map[string]any{
		"ranges": [][]int{{0, 19}}, "timeline_limit": 1, "required_state": [][]string{},
	}}}
	ssSlide(t, st.URL, ssUnstable, au, "", 0, plain)
	p := st.LastRequestTo(t, route).DynamoDB
	tagged := map[string]any{"conn_id": "tagged", "lists": map[string]any{"all": map[string]any{
		"ranges": [][]int{{0, 19}}, "timeline_limit": 1, "required_state": [][]string{},
		"filters": map[string]any{"not_tags": []string{"m.lowpriority"}},
	}}}
	ssSlide(t, st.URL, ssUnstable, au, "", 0, tagged)
	q := st.LastRequestTo(t, route).DynamoDB
	t.Logf("new connection, %d rooms: %d calls, %.1f RCU, %.1f WCU; with not_tags: %d calls, %.1f RCU, %.1f WCU", n, p.Calls, p.ReadUnits, p.WriteUnits, q.Calls, q.ReadUnits, q.WriteUnits)
}
