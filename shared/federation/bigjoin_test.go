package federation_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// TestJoin_BigRoom: alice joins a room of 5,000 members that only a fake
// peer holds; its send_join answer is the whole state (a few MB). The
// join's time and DynamoDB cost are logged (docs/storage.md quotes them);
// the join succeeds, /joined_members counts every member, and the room is
// usable at once: alice's message is in /messages after the state and
// goes to the peer.
func TestJoin_BigRoom(t *testing.T) {
	if testing.Short() {
		t.Skip("5,000 members")
	}
	const members = 5000
	built := time.Now()
	p := newPeer(t, "big.test", "12", members)
	t.Logf("the peer built its room of %d members in %v", members, time.Since(built))
	st := servertest.Start(t, p.env()...)
	st.RunQueue(t)
	// The test asserts what the join does, not how long it takes on a
	// loaded machine: its time is logged, and docs/storage.md estimates it
	// on AWS.
	st.Server.Joiner.Timeout = 10 * time.Minute
	alice := st.Member(t, "alice")
	room := id.RoomID(p.roomID)

	// The append hooks (sync, sender, presence, device lists) are timed
	// apart from the take-in itself.
	var hooks store.Usage
	var hookTime time.Duration
	appended := st.Server.Rooms.Appended
	st.Server.Rooms.Appended = func(ctx context.Context, evs []rooms.Appended) error {
		t0, u0 := time.Now(), store.MeterFrom(ctx).Usage()
		err := appended(ctx, evs)
		if hookTime == 0 {
			u1 := store.MeterFrom(ctx).Usage()
			hookTime, hooks = time.Since(t0), store.Usage{Calls: u1.Calls - u0.Calls, ReadUnits: u1.ReadUnits - u0.ReadUnits, WriteUnits: u1.WriteUnits - u0.WriteUnits}
		}
		return err
	}
	start := time.Now()
	if _, err := alice.JoinRoom(background, p.roomID, &mautrix.ReqJoinRoom{Via: []string{p.name}}); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	u := st.LastRequestTo(t, "/join/").DynamoDB
	t.Logf("remote join of a room of %d members: %v, %d calls, %.1f RCU, %.1f WCU", members, took, u.Calls, u.ReadUnits, u.WriteUnits)
	t.Logf("of which the append hooks of the join: %v, %d calls, %.1f RCU, %.1f WCU", hookTime, hooks.Calls, hooks.ReadUnits, hooks.WriteUnits)
	for _, line := range strings.Split(st.Logs(), "\n") {
		if strings.Contains(line, "remote join phases") {
			t.Log(line)
		}
	}

	joined, err := alice.JoinedMembers(background, room)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(joined.Joined); got != members+1 {
		t.Fatalf("joined members: %d, want %d", got, members+1)
	}
	if _, ok := joined.Joined[alice.UserID]; !ok {
		t.Fatal("alice is not among the joined members")
	}
	sent, err := alice.SendText(background, room, "hello, big room")
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := alice.Messages(background, room, "", "", mautrix.DirectionBackward, nil, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs.Chunk) < 2 || msgs.Chunk[0].ID != sent.EventID || msgs.Chunk[1].Type != event.StateMember || msgs.Chunk[1].GetStateKey() != string(alice.UserID) {
		t.Fatalf("/messages after the join: %v, want alice's message then her join", describeChunk(msgs.Chunk))
	}
	waitFor(t, "the peer receives alice's message", func() ([]string, bool) {
		var got []string
		for _, txn := range p.received() {
			for _, pdu := range txn.PDUs {
				got = append(got, string(pdu))
			}
		}
		for _, pdu := range got {
			if containsEventBody(pdu, "hello, big room") {
				return got, true
			}
		}
		return got, false
	}, noLogs)
	r := st.Do(t, "GET", "/_matrix/client/v3/rooms/"+p.roomID+"/members", alice.User.AccessToken, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("/members: %d %s", r.Status, r.Raw)
	}
	if chunk, _ := r.Body["chunk"].([]any); len(chunk) != members+1 {
		t.Fatalf("/members lists %d, want %d", len(chunk), members+1)
	}
}

// describeChunk lists a /messages chunk as "type state_key sender".
func describeChunk(chunk []*event.Event) []string {
	var out []string
	for _, ev := range chunk {
		out = append(out, ev.Type.Type+" "+ev.GetStateKey()+" "+string(ev.Sender))
	}
	return out
}

// containsEventBody reports whether the PDU pdu is a message with body.
func containsEventBody(pdu, body string) bool {
	var ev struct {
		Content struct {
			Body string `json:"body"`
		} `json:"content"`
	}
	return json.Unmarshal([]byte(pdu), &ev) == nil && ev.Content.Body == body
}

// TestJoin_BigRoomPartial: alice joins a room of 5,000 members (or
// CIRRUS_TEST_BIG_MEMBERS) whose resident server answers send_join
// without its members. The join takes in the room's other state alone;
// the worker then loads the members (GET /state) in the background. Both
// are logged with their cost (docs/storage.md quotes them); the room is
// usable at once, and once loaded /joined_members counts every member.
func TestJoin_BigRoomPartial(t *testing.T) {
	if testing.Short() {
		t.Skip("5,000 members")
	}
	members := 5000
	if n, err := strconv.Atoi(os.Getenv("CIRRUS_TEST_BIG_MEMBERS")); err == nil && n > 0 {
		members = n
	}
	built := time.Now()
	p := newPeer(t, "big.test", "12", members)
	p.omit = true
	t.Logf("the peer built its room of %d members in %v", members, time.Since(built))
	st := servertest.Start(t, p.env()...)
	st.RunQueue(t)
	st.Server.Joiner.StateWait = -1 // the partial join, whatever the time
	alice := st.Member(t, "alice")
	room := id.RoomID(p.roomID)
	ctx := context.Background()

	start := time.Now()
	if _, err := alice.JoinRoom(background, p.roomID, &mautrix.ReqJoinRoom{Via: []string{p.name}}); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	u := st.LastRequestTo(t, "/join/").DynamoDB
	t.Logf("partial join of a room of %d members: %v, %d calls, %.1f RCU, %.1f WCU", members, took, u.Calls, u.ReadUnits, u.WriteUnits)
	sent, err := alice.SendText(background, room, "hello, big room")
	if err != nil {
		t.Fatal(err)
	}
	// A minute of waiting per 5,000 members: the bound of a load that
	// never ends, not a timing.
	bound := time.Now().Add(time.Duration(members/5000+1) * time.Minute)
	for {
		servers, err := st.Server.Rooms.PartialServers(ctx, p.roomID)
		if err == nil && servers == nil {
			break
		}
		if time.Now().After(bound) {
			t.Fatalf("the members are not loaded: %v %v\n%s", servers, err, st.Logs())
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("members loaded %v after the join began", time.Since(start))
	// The load's lines: what it did, and the job's cost (a delivery
	// that found another load under way fails and is logged too).
	loadLines := func() []string {
		var got []string
		for _, line := range strings.Split(st.Logs(), "\n") {
			if strings.Contains(line, "partial state: loaded") || strings.Contains(line, `"kind":"partial-state"`) && strings.Contains(line, `"ok":true`) {
				got = append(got, line)
			}
		}
		return got
	}
	waitFor(t, "the load's log lines", func() ([]string, bool) {
		got := loadLines()
		return got, len(got) == 2
	}, st.Logs)
	for _, line := range loadLines() {
		t.Log(line)
	}
	joined, err := alice.JoinedMembers(background, room)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(joined.Joined); got != members+1 {
		t.Fatalf("joined members: %d, want %d", got, members+1)
	}
	msgs, err := alice.Messages(background, room, "", "", mautrix.DirectionBackward, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs.Chunk) != 1 || msgs.Chunk[0].ID != sent.EventID {
		t.Fatalf("/messages after the join: %v, want alice's message", describeChunk(msgs.Chunk))
	}
}
