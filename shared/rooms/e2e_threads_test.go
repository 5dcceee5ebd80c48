package rooms_test

import (
	"net/http"
	"strconv"
	"sync"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// threadsPage is the answer of GET /rooms/{roomId}/threads.
type threadsPage struct {
	Chunk []struct {
		EventID  id.EventID     `json:"event_id"`
		Content  map[string]any `json:"content"`
		Unsigned struct {
			Relations struct {
				Thread *struct {
					Latest struct {
						EventID id.EventID     `json:"event_id"`
						Content map[string]any `json:"content"`
					} `json:"latest_event"`
					Count        int  `json:"count"`
					Participated bool `json:"current_user_participated"`
				} `json:"m.thread"`
			} `json:"m.relations"`
		} `json:"unsigned"`
	} `json:"chunk"`
	NextBatch *string `json:"next_batch"`
}

func (p threadsPage) roots() []id.EventID {
	out := []id.EventID{}
	for _, c := range p.Chunk {
		out = append(out, c.EventID)
	}
	return out
}

// summary is "<count>:<latest event>:<participated>" of each root.
func (p threadsPage) summary(t *testing.T) []string {
	t.Helper()
	out := []string{}
	for _, c := range p.Chunk {
		th := c.Unsigned.Relations.Thread
		if th == nil {
			t.Fatalf("root %s has no m.thread aggregation", c.EventID)
		}
		out = append(out, strconv.Itoa(th.Count)+":"+string(th.Latest.EventID)+":"+strconv.FormatBool(th.Participated))
	}
	return out
}

func sum(count int, latest id.EventID, participated bool) string {
	return strconv.Itoa(count) + ":" + string(latest) + ":" + strconv.FormatBool(participated)
}

// threads reads one page of the room's threads as u.
func threads(t *testing.T, u mxUser, room id.RoomID, query map[string]string) threadsPage {
	t.Helper()
	var p threadsPage
	if err := rawQuery(u, query, &p, "v1", "rooms", room, "threads"); err != nil {
		t.Fatalf("threads of %s as %s with %v: %v", room, u.ID, query, err)
	}
	return p
}

// replyIn sends a thread reply to root and returns its ID.
func replyIn(t *testing.T, u mxUser, room id.RoomID, root id.EventID, body string) id.EventID {
	t.Helper()
	c := &event.MessageEventContent{MsgType: event.MsgText, Body: body, RelatesTo: (&event.RelatesTo{}).SetThread(root, root)}
	resp, err := u.SendMessageEvent(bg, room, event.EventMessage, c)
	if err != nil {
		t.Fatalf("%s replies %q to %s: %v", u.ID, body, root, err)
	}
	return resp.EventID
}

// threadRoom is a room of alice, bob and carol with three threads started
// by alice, whose replies came in an interleaved order.
type threadRoom struct {
	st                *servertest.Stack
	alice, bob, carol mxUser
	room              id.RoomID
	r1, r2, r3        id.EventID
}

func newThreadRoom(t *testing.T) *threadRoom {
	t.Helper()
	st := servertest.Start(t)
	c := &threadRoom{st: st, alice: st.Member(t, "alice"), bob: st.Member(t, "bob"), carol: st.Member(t, "carol")}
	c.room = create(t, c.alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	must[*mautrix.RespJoinRoom](t, "bob joins")(c.bob.JoinRoomByID(bg, c.room))
	must[*mautrix.RespJoinRoom](t, "carol joins")(c.carol.JoinRoomByID(bg, c.room))
	c.r1 = say(t, c.alice, c.room, "root 1")
	c.r2 = say(t, c.alice, c.room, "root 2")
	c.r3 = say(t, c.alice, c.room, "root 3")
	return c
}

// TestThreads_Order lists threads by their latest reply, newest first,
// each with its aggregation, and moves a thread to the front on a reply.
func TestThreads_Order(t *testing.T) {
	c := newThreadRoom(t)
	if p := threads(t, c.bob, c.room, nil); len(p.Chunk) != 0 || p.NextBatch != nil {
		t.Fatalf("threads before any reply: %v, next %v", p.roots(), p.NextBatch)
	}
	replyIn(t, c.bob, c.room, c.r3, "3a")
	replyIn(t, c.bob, c.room, c.r1, "1a")
	replyIn(t, c.carol, c.room, c.r2, "2a")
	last3 := replyIn(t, c.bob, c.room, c.r3, "3b")
	last2 := replyIn(t, c.bob, c.room, c.r2, "2b")
	last1 := replyIn(t, c.alice, c.room, c.r1, "1b")
	// Neither a plain message nor a reaction makes a thread, nor a thread
	// reply to an event that relates to another (the spec forbids it).
	plain := say(t, c.bob, c.room, "not a thread")
	must[*mautrix.RespSendEvent](t, "reaction")(c.bob.SendReaction(bg, c.room, plain, "👍"))
	replyIn(t, c.carol, c.room, last3, "nested")

	p := threads(t, c.bob, c.room, nil)
	wantEqual(t, "order by latest reply", p.roots(), []id.EventID{c.r1, c.r2, c.r3})
	wantEqual(t, "summaries as bob", p.summary(t), []string{sum(2, last1, true), sum(2, last2, true), sum(2, last3, true)})
	if p.NextBatch != nil {
		t.Errorf("next_batch %q on the only page", *p.NextBatch)
	}
	if body := p.Chunk[0].Content["body"]; body != "root 1" {
		t.Errorf("first root's body: got %v, want root 1", body)
	}
	if body := p.Chunk[0].Unsigned.Relations.Thread.Latest.Content["body"]; body != "1b" {
		t.Errorf("first root's latest event body: got %v, want 1b", body)
	}
	// carol replied in thread 2 only; alice started them all.
	wantEqual(t, "summaries as carol", threads(t, c.carol, c.room, nil).summary(t),
		[]string{sum(2, last1, false), sum(2, last2, true), sum(2, last3, false)})
	wantEqual(t, "summaries as alice", threads(t, c.alice, c.room, map[string]string{"include": "all"}).summary(t),
		[]string{sum(2, last1, true), sum(2, last2, true), sum(2, last3, true)})

	newest := replyIn(t, c.carol, c.room, c.r3, "3c")
	p = threads(t, c.carol, c.room, nil)
	wantEqual(t, "order after a reply to the last thread", p.roots(), []id.EventID{c.r3, c.r1, c.r2})
	wantEqual(t, "summaries after it", p.summary(t), []string{sum(3, newest, true), sum(2, last1, false), sum(2, last2, true)})
}

// TestThreads_Participated keeps the threads the user started or replied
// in.
func TestThreads_Participated(t *testing.T) {
	c := newThreadRoom(t)
	replyIn(t, c.bob, c.room, c.r1, "1a")
	in2 := replyIn(t, c.carol, c.room, c.r2, "2a")
	replyIn(t, c.bob, c.room, c.r3, "3a")
	last1 := replyIn(t, c.bob, c.room, c.r1, "1b")
	mine := say(t, c.carol, c.room, "carol's root")
	inMine := replyIn(t, c.bob, c.room, mine, "to carol")

	only := map[string]string{"include": "participated"}
	p := threads(t, c.carol, c.room, only)
	wantEqual(t, "carol's threads", p.roots(), []id.EventID{mine, c.r2})
	wantEqual(t, "their summaries", p.summary(t), []string{sum(1, inMine, true), sum(1, in2, true)})
	wantEqual(t, "alice's threads", threads(t, c.alice, c.room, only).roots(), []id.EventID{c.r1, c.r3, c.r2})
	wantEqual(t, "bob's threads", threads(t, c.bob, c.room, only).roots(), []id.EventID{mine, c.r1, c.r3})

	// Paging through one's own threads.
	p = threads(t, c.bob, c.room, map[string]string{"include": "participated", "limit": "2"})
	wantEqual(t, "bob's first page", p.summary(t), []string{sum(1, inMine, true), sum(2, last1, true)})
	if p.NextBatch == nil {
		t.Fatal("no next_batch after bob's first page")
	}
	p = threads(t, c.bob, c.room, map[string]string{"include": "participated", "limit": "2", "from": *p.NextBatch})
	wantEqual(t, "bob's second page", p.roots(), []id.EventID{c.r3})
	if p.NextBatch != nil {
		t.Errorf("next_batch %q on bob's last page", *p.NextBatch)
	}
	dave := c.st.Member(t, "dave")
	must[*mautrix.RespJoinRoom](t, "dave joins")(dave.JoinRoomByID(bg, c.room))
	if p := threads(t, dave, c.room, only); len(p.Chunk) != 0 || p.NextBatch != nil {
		t.Fatalf("threads of one who took part in none: %v, next %v", p.roots(), p.NextBatch)
	}
}

// TestThreads_Paging returns each thread exactly once over pages of one,
// even when a reply comes between two pages.
func TestThreads_Paging(t *testing.T) {
	c := newThreadRoom(t)
	r4 := say(t, c.bob, c.room, "root 4")
	for _, r := range []id.EventID{c.r2, c.r1, r4, c.r3, c.r1} {
		replyIn(t, c.bob, c.room, r, "reply")
	}
	want := []id.EventID{c.r1, c.r3, r4, c.r2}
	var got []id.EventID
	query := map[string]string{"limit": "1"}
	for page := 0; ; page++ {
		if page > len(want) {
			t.Fatalf("more than %d pages: %v", len(want), got)
		}
		p := threads(t, c.carol, c.room, query)
		if len(p.Chunk) != 1 {
			t.Fatalf("page %d holds %v, want one thread", page, p.roots())
		}
		got = append(got, p.Chunk[0].EventID)
		if p.NextBatch == nil {
			break
		}
		query["from"] = *p.NextBatch
		if page == 1 {
			// r2 moves to the front, past the pages read: not seen again.
			replyIn(t, c.alice, c.room, c.r2, "late")
			want = []id.EventID{c.r1, c.r3, r4}
		}
	}
	wantEqual(t, "threads over pages of one", got, want)
	wantEqual(t, "first page now", threads(t, c.carol, c.room, map[string]string{"limit": "1"}).roots(), []id.EventID{c.r2})
}

// TestThreads_Refused answers who may not see the room, and bad
// parameters, with the spec's errors.
func TestThreads_Refused(t *testing.T) {
	c := newThreadRoom(t)
	replyIn(t, c.bob, c.room, c.r1, "1a")
	stranger := c.st.Member(t, "stranger")
	err := rawQuery(stranger, nil, nil, "v1", "rooms", c.room, "threads")
	wantErr(t, "threads as one not in the room", err, "M_FORBIDDEN", http.StatusForbidden)
	err = rawQuery(c.bob, nil, nil, "v1", "rooms", "!nowhere:localhost", "threads")
	wantErr(t, "threads of an unknown room", err, "M_FORBIDDEN", http.StatusForbidden)
	for _, q := range []map[string]string{
		{"from": "nonsense"}, {"from": "t-1"}, {"from": "t1000000000000"},
		{"include": "mine"}, {"limit": "0"}, {"limit": "-1"}, {"limit": "ten"},
	} {
		err := rawQuery(c.bob, q, nil, "v1", "rooms", c.room, "threads")
		wantErr(t, "threads with "+mapString(q), err, "M_INVALID_PARAM", http.StatusBadRequest)
	}
	err = rawQuery(c.bob, nil, nil, "v1", "rooms", "not-a-room", "threads")
	wantErr(t, "threads of a bad room ID", err, "M_INVALID_PARAM", http.StatusBadRequest)
}

func mapString(m map[string]string) string {
	out := ""
	for k, v := range m {
		out += k + "=" + v + " "
	}
	return out
}

// TestThreads_HistoryVisibility leaves out roots the user may not see,
// and shows one who left a thread's latest reply from before they left.
func TestThreads_HistoryVisibility(t *testing.T) {
	st := servertest.Start(t)
	alice, dave := st.Member(t, "alice"), st.Member(t, "dave")
	room := create(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{
		{Type: event.StateHistoryVisibility, StateKey: new(""), Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}}},
	}})
	hidden := say(t, alice, room, "before dave")
	replyIn(t, alice, room, hidden, "still before dave")
	must[*mautrix.RespJoinRoom](t, "dave joins")(dave.JoinRoomByID(bg, room))
	// dave may see this reply, not its root.
	replyIn(t, alice, room, hidden, "after dave joined")
	seen := say(t, alice, room, "after dave")
	before := replyIn(t, dave, room, seen, "dave's reply")

	p := threads(t, dave, room, nil)
	wantEqual(t, "dave's threads", p.roots(), []id.EventID{seen})
	wantEqual(t, "dave's summary", p.summary(t), []string{sum(1, before, true)})
	wantEqual(t, "alice's threads", threads(t, alice, room, nil).roots(), []id.EventID{seen, hidden})

	must[*mautrix.RespLeaveRoom](t, "dave leaves")(dave.LeaveRoom(bg, room))
	after := replyIn(t, alice, room, seen, "after dave left")
	wantEqual(t, "alice's summary", threads(t, alice, room, nil).summary(t)[0], sum(2, after, true))
	p = threads(t, dave, room, nil)
	wantEqual(t, "dave's threads after he left", p.roots(), []id.EventID{seen})
	wantEqual(t, "the latest reply dave saw", p.Chunk[0].Unsigned.Relations.Thread.Latest.EventID, before)
}

// TestThreads_Cost pins what a thread reply adds to a message with a
// relation of another type (docs/storage.md quotes it), and what a page
// of threads costs.
func TestThreads_Cost(t *testing.T) {
	c := newThreadRoom(t)
	usage := func(route string) servertest.Cost {
		u := c.st.LastRequestTo(t, route).DynamoDB
		return servertest.Want(u.Calls, u.ReadUnits, u.WriteUnits)
	}
	delta := func(a, b servertest.Cost) servertest.Cost {
		return servertest.Want(a.Calls-b.Calls, a.RCU-b.RCU, a.WCU-b.WCU)
	}
	send := func(rel *event.RelatesTo) servertest.Cost {
		t.Helper()
		content := &event.MessageEventContent{MsgType: event.MsgText, Body: "a reply", RelatesTo: rel}
		must[*mautrix.RespSendEvent](t, "send")(c.bob.SendMessageEvent(bg, c.room, event.EventMessage, content))
		return usage("/send/")
	}
	reference := send(&event.RelatesTo{Type: event.RelReference, EventID: c.r1})
	// GetItem of the thread (none); the root's pointer and slot; a
	// Create of the thread (and its gsi1 copy); a BatchWriteItem of the
	// participants, bob and alice who started it.
	first := send((&event.RelatesTo{}).SetThread(c.r1, c.r1))
	want := servertest.Want(5, 3, 4)
	if d := delta(first, reference); d != want {
		t.Errorf("first reply of a thread: %+v more than a reference, want %+v", d, want)
	}
	// GetItem of the thread, PutIf on its rev (and its gsi1 copy), PutItem
	// of bob's participation.
	next := send((&event.RelatesTo{}).SetThread(c.r1, c.r1))
	want = servertest.Want(3, 1, 3)
	if d := delta(next, reference); d != want {
		t.Errorf("next reply of a thread: %+v more than a reference, want %+v", d, want)
	}
	say(t, c.alice, c.room, "warm")
	replyIn(t, c.bob, c.room, c.r2, "a reply")
	// auth; GetItem info and membership; Query of the caller's
	// participations; GetItem of the users the caller ignores; Query of
	// gsi1; BatchGetItem of each root and its latest reply.
	threads(t, c.carol, c.room, nil)
	c.st.CheckCost(t, "two threads", "/threads", servertest.Want(7, 9.5, 0))
	threads(t, c.carol, c.room, map[string]string{"limit": "1"})
	c.st.CheckCost(t, "one thread", "/threads", servertest.Want(7, 7.5, 0))
	// auth; GetItem info and membership; Query of bob's participations;
	// GetItem of whom he ignores; BatchGetItem of his threads;
	// BatchGetItem of roots and replies.
	threads(t, c.bob, c.room, map[string]string{"include": "participated"})
	c.st.CheckCost(t, "bob's two threads", "/threads", servertest.Want(7, 11, 0))
}

// TestThreads_ConcurrentReplies counts every reply and keeps the latest
// when replies to two threads race through two server instances on one
// table.
func TestThreads_ConcurrentReplies(t *testing.T) {
	c := newThreadRoom(t)
	twin := c.st.Twin(t)
	senders := []mxUser{c.bob, c.carol,
		{User: c.bob.User, Client: twin.Client(t, c.bob.User)}, {User: c.carol.User, Client: twin.Client(t, c.carol.User)}}
	const each = 4
	var wg sync.WaitGroup
	errs := make(chan error, len(senders)*each*2)
	for _, u := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each * 2 {
				root := c.r1
				if i%2 == 1 {
					root = c.r2
				}
				content := &event.MessageEventContent{MsgType: event.MsgText, Body: "race", RelatesTo: (&event.RelatesTo{}).SetThread(root, root)}
				if _, err := u.SendMessageEvent(bg, c.room, event.EventMessage, content); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("reply: %v", err)
	}
	latest := func(root id.EventID) id.EventID {
		var rels struct {
			Chunk []struct {
				EventID id.EventID `json:"event_id"`
			} `json:"chunk"`
		}
		if err := rawQuery(c.alice, map[string]string{"dir": "b", "limit": "1"}, &rels, "v1", "rooms", c.room, "relations", root, "m.thread"); err != nil || len(rels.Chunk) != 1 {
			t.Fatalf("latest reply to %s: %v, %v", root, rels.Chunk, err)
		}
		return rels.Chunk[0].EventID
	}
	n := len(senders) * each
	// A last reply, after the race, puts thread 2 first.
	final := replyIn(t, c.alice, c.room, c.r2, "final")
	if l2 := latest(c.r2); l2 != final {
		t.Fatalf("latest reply to root 2 by /relations: %s, want %s", l2, final)
	}
	p := threads(t, c.alice, c.room, nil)
	wantEqual(t, "threads after the race", p.roots(), []id.EventID{c.r2, c.r1})
	wantEqual(t, "their summaries", p.summary(t), []string{sum(n+1, final, true), sum(n, latest(c.r1), true)})
}

// TestThreads_Ignored shows a root sent by an ignored user redacted, and
// a thread's latest reply by one not as its latest.
func TestThreads_Ignored(t *testing.T) {
	c := newThreadRoom(t)
	byAlice := replyIn(t, c.alice, c.room, c.r1, "alice's reply")
	byBob := replyIn(t, c.bob, c.room, c.r1, "bob's reply")
	bobsRoot := say(t, c.bob, c.room, "bob's root")
	toBob := replyIn(t, c.alice, c.room, bobsRoot, "to bob")
	ignore := map[string]any{"ignored_users": map[string]any{string(c.bob.ID): map[string]any{}}}
	if err := c.carol.SetAccountData(bg, "m.ignored_user_list", ignore); err != nil {
		t.Fatalf("carol ignores bob: %v", err)
	}
	p := threads(t, c.carol, c.room, nil)
	wantEqual(t, "carol's threads", p.roots(), []id.EventID{bobsRoot, c.r1})
	wantEqual(t, "carol's summaries", p.summary(t), []string{sum(1, toBob, false), sum(2, byAlice, false)})
	if len(p.Chunk[0].Content) != 0 {
		t.Errorf("the root of an ignored user: content %v, want it redacted", p.Chunk[0].Content)
	}
	if p.Chunk[1].Content["body"] != "root 1" {
		t.Errorf("alice's root: content %v", p.Chunk[1].Content)
	}
	wantEqual(t, "alice's summaries", threads(t, c.alice, c.room, nil).summary(t), []string{sum(1, toBob, true), sum(2, byBob, true)})
}
