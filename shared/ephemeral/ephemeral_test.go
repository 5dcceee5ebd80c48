package ephemeral_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// The tests drive typing, receipts and read markers with mautrix-go, a real
// client library, against the real handler tree and the embedded DynamoDB,
// and read the results back through /sync.

var bg = context.Background()

type user = servertest.Member

// lobby starts a stack with alice and bob joined to a public room.
func lobby(t *testing.T) (*servertest.Stack, user, user, id.RoomID) {
	t.Helper()
	st := servertest.Start(t)
	alice, bob := st.Member(t, "alice"), st.Member(t, "bob")
	room, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(bg, room.RoomID); err != nil {
		t.Fatal(err)
	}
	return st, alice, bob, room.RoomID
}

func sync(t *testing.T, u user, since string, timeout time.Duration) *mautrix.RespSync {
	t.Helper()
	resp, err := u.FullSyncRequest(bg, mautrix.ReqSync{Since: since, Timeout: int(timeout.Milliseconds())})
	if err != nil {
		t.Fatalf("sync of %s since %q: %v", u.User.ID, since, err)
	}
	return resp
}

// syncing starts a long-polling sync (20 s) and returns its answer's
// channel.
func syncing(t *testing.T, u user, since string) <-chan *mautrix.RespSync {
	got := make(chan *mautrix.RespSync, 1)
	go func() {
		resp, err := u.FullSyncRequest(bg, mautrix.ReqSync{Since: since, Timeout: 20000})
		if err != nil {
			t.Error(err)
		}
		got <- resp
	}()
	// Most likely it reaches its wait meanwhile; if not, it finds the news
	// when it starts, and the assertions hold as well.
	time.Sleep(300 * time.Millisecond)
	return got
}

// woken returns the answer of a long poll that what should end. Whether
// it was woken shows in its content, which the caller checks: a poll that
// nothing wakes answers without news when its 20 s pass. How long it took
// is not measured: a loaded machine may take any time.
func woken(t *testing.T, got <-chan *mautrix.RespSync, what string) *mautrix.RespSync {
	t.Helper()
	resp := <-got
	if resp == nil {
		t.Fatalf("%s: the waiting sync failed", what)
	}
	return resp
}

// ephemeral is the contents of the room's ephemeral events of type typ.
func ephemeral(resp *mautrix.RespSync, room id.RoomID, typ string) []map[string]any {
	j, ok := resp.Rooms.Join[room]
	if !ok {
		return nil
	}
	var out []map[string]any
	for _, ev := range j.Ephemeral.Events {
		if ev.Type.Type == typ {
			out = append(out, ev.Content.Raw)
		}
	}
	return out
}

// typing is the user_ids of the room's m.typing event, and whether there
// is one.
func typing(t *testing.T, resp *mautrix.RespSync, room id.RoomID) ([]string, bool) {
	t.Helper()
	evs := ephemeral(resp, room, "m.typing")
	if len(evs) == 0 {
		return nil, false
	}
	if len(evs) > 1 {
		t.Fatalf("%d m.typing events in one room: %v", len(evs), evs)
	}
	ids, ok := evs[0]["user_ids"].([]any)
	if !ok {
		t.Fatalf("m.typing without a user_ids list: %v", evs[0])
	}
	users := []string{}
	for _, u := range ids {
		users = append(users, u.(string))
	}
	return users, true
}

// receipt finds the receipt of type typ by userID on eventID in the room's
// m.receipt events: {ts, thread_id?}.
func receipt(resp *mautrix.RespSync, room id.RoomID, eventID id.EventID, typ, userID string) (map[string]any, bool) {
	for _, content := range ephemeral(resp, room, "m.receipt") {
		byType, _ := content[eventID.String()].(map[string]any)
		users, _ := byType[typ].(map[string]any)
		if r, ok := users[userID].(map[string]any); ok {
			return r, true
		}
	}
	return nil, false
}

// receiptCount is the number of receipts in the room's m.receipt events.
func receiptCount(resp *mautrix.RespSync, room id.RoomID) int {
	n := 0
	for _, content := range ephemeral(resp, room, "m.receipt") {
		for _, byType := range content {
			for _, users := range byType.(map[string]any) {
				n += len(users.(map[string]any))
			}
		}
	}
	return n
}

func say(t *testing.T, u user, room id.RoomID, body string) id.EventID {
	t.Helper()
	resp, err := u.SendText(bg, room, body)
	if err != nil {
		t.Fatalf("send %q: %v", body, err)
	}
	return resp.EventID
}

func wantErr(t *testing.T, what string, err error, code string, status int) {
	t.Helper()
	var he mautrix.HTTPError
	if !errors.As(err, &he) || he.RespError == nil {
		t.Fatalf("%s: got error %v, want %d %s", what, err, status, code)
	}
	if he.RespError.ErrCode != code || he.Response.StatusCode != status {
		t.Fatalf("%s: got %d %s (%s), want %d %s", what, he.Response.StatusCode, he.RespError.ErrCode, he.RespError.Err, status, code)
	}
}

// TestTyping_WakesAndClears: bob's waiting sync is woken by alice's typing
// and shows her typing, then an empty list when she stops; typing again
// before the timeout writes no news.
func TestTyping_WakesAndClears(t *testing.T) {
	_, alice, bob, room := lobby(t)
	base := sync(t, bob, "", 0)
	if users, ok := typing(t, base, room); ok {
		t.Fatalf("initial sync with nobody typing has m.typing %v", users)
	}

	got := syncing(t, bob, base.NextBatch)
	if _, err := alice.UserTyping(bg, room, true, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	started := woken(t, got, "alice starts typing")
	if users, ok := typing(t, started, room); !ok || !slices.Equal(users, []string{alice.User.ID}) {
		t.Fatalf("bob's sync after alice started typing: m.typing %v (present %v)", users, ok)
	}
	// A sync from scratch sees her typing too.
	if users, _ := typing(t, sync(t, bob, "", 0), room); !slices.Equal(users, []string{alice.User.ID}) {
		t.Fatalf("initial sync while alice types: m.typing %v", users)
	}

	// Typing again only moves the timeout: nobody is told.
	if _, err := alice.UserTyping(bg, room, true, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	quiet := sync(t, bob, started.NextBatch, 500*time.Millisecond)
	if _, ok := quiet.Rooms.Join[room]; ok {
		t.Fatalf("renewed typing woke bob's sync: %+v", quiet.Rooms.Join[room].Ephemeral)
	}

	got = syncing(t, bob, quiet.NextBatch)
	if _, err := alice.UserTyping(bg, room, false, 0); err != nil {
		t.Fatal(err)
	}
	stopped := woken(t, got, "alice stops typing")
	if users, ok := typing(t, stopped, room); !ok || len(users) != 0 {
		t.Fatalf("bob's sync after alice stopped: m.typing %v (present %v), want an empty list", users, ok)
	}
	// Stopping again changes nothing and tells nobody.
	if _, err := alice.UserTyping(bg, room, false, 0); err != nil {
		t.Fatal(err)
	}
	if again := sync(t, bob, stopped.NextBatch, 500*time.Millisecond); len(again.Rooms.Join) != 0 {
		t.Fatalf("a second stop woke bob's sync: %+v", again.Rooms.Join)
	}
}

// TestTyping_Expires: a typing notification is gone from syncs once its
// timeout passes, without a stop; a sync that showed it wakes by itself
// when the timeout passes to say so, though nothing is written then.
//
// The clock of the sync and ephemeral services is pinned and moved by the
// test: what is asserted is order (nothing before the timeout, the news
// once the clock passes it) and content, never how long anything took. A
// sync that nothing wakes cannot end by its own timeout here, since the
// pinned clock never reaches it.
func TestTyping_Expires(t *testing.T) {
	st, alice, bob, room := lobby(t)
	t0 := time.Now()
	var now atomic.Int64
	now.Store(t0.UnixNano())
	at := func(d time.Duration) { now.Store(t0.Add(d).UnixNano()) }
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	st.Server.Sync.Now, st.Server.Ephemeral.Now = clock, clock

	base := sync(t, bob, "", 0)
	at(10 * time.Millisecond)
	// She types until t0 + 810 ms.
	if _, err := alice.UserTyping(bg, room, true, 800*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	during := sync(t, bob, base.NextBatch, 0)
	if users, _ := typing(t, during, room); !slices.Equal(users, []string{alice.User.ID}) {
		t.Fatalf("while typing: m.typing %v", users)
	}

	got := syncing(t, bob, during.NextBatch)
	at(809 * time.Millisecond)
	if quiet := sync(t, bob, during.NextBatch, 0); len(quiet.Rooms.Join) != 0 {
		t.Fatalf("a sync 1 ms before her timeout has news: %+v", quiet.Rooms.Join)
	}
	select {
	case resp := <-got:
		t.Fatalf("the waiting sync answered before her timeout: %+v", resp)
	default:
	}

	at(810 * time.Millisecond)
	var after *mautrix.RespSync
	select {
	case after = <-got:
	case <-time.After(time.Minute): // a hang guard, not a bound on speed
		t.Fatal("the waiting sync did not answer once the clock passed her timeout")
	}
	if after == nil {
		t.FailNow()
	}
	if users, ok := typing(t, after, room); !ok || len(users) != 0 {
		t.Fatalf("the waiting sync after the timeout: m.typing %v (present %v), want an empty list", users, ok)
	}
	if users, ok := typing(t, sync(t, bob, "", 0), room); ok {
		t.Fatalf("initial sync after the timeout: m.typing %v", users)
	}
	// Once told, the client is not told again.
	if quiet := sync(t, bob, after.NextBatch, 0); len(quiet.Rooms.Join) != 0 {
		t.Fatalf("the sync after the stop answered again: %+v", quiet.Rooms.Join)
	}
}

// TestReceipts: m.read receipts reach the other members with their ts and
// thread; m.read.private only its sender; receipts only move forward.
func TestReceipts(t *testing.T) {
	_, alice, bob, room := lobby(t)
	first := say(t, alice, room, "first")
	base := sync(t, alice, "", 0)

	got := syncing(t, alice, base.NextBatch)
	before := time.Now().UnixMilli()
	if err := bob.MarkRead(bg, room, first); err != nil {
		t.Fatal(err)
	}
	after := time.Now().UnixMilli()
	read := woken(t, got, "bob reads")
	r, ok := receipt(read, room, first, "m.read", bob.User.ID)
	if !ok {
		t.Fatalf("alice's sync has no m.read of bob's: %v", ephemeral(read, room, "m.receipt"))
	}
	if ts, _ := r["ts"].(float64); int64(ts) < before || int64(ts) > after {
		t.Fatalf("receipt ts %v is not between %d and %d", r["ts"], before, after)
	}
	if _, threaded := r["thread_id"]; threaded {
		t.Fatalf("unthreaded receipt has a thread_id: %v", r)
	}

	// Threads: a reply in a thread, and receipts for it and for the main
	// timeline.
	root := say(t, alice, room, "root")
	reply, err := alice.SendMessageEvent(bg, room, event.EventMessage, map[string]any{
		"msgtype": "m.text", "body": "in the thread",
		"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := bob.SendReceipt(bg, room, reply.EventID, event.ReceiptTypeRead, &mautrix.ReqSendReceipt{ThreadID: root.String()}); err != nil {
		t.Fatal(err)
	}
	if err := bob.SendReceipt(bg, room, root, event.ReceiptTypeRead, &mautrix.ReqSendReceipt{ThreadID: "main"}); err != nil {
		t.Fatal(err)
	}
	err = bob.SendReceipt(bg, room, reply.EventID, event.ReceiptTypeRead, &mautrix.ReqSendReceipt{ThreadID: "main"})
	wantErr(t, "a main timeline receipt on an event in a thread", err, "M_INVALID_PARAM", 400)
	err = bob.SendReceipt(bg, room, first, event.ReceiptTypeRead, &mautrix.ReqSendReceipt{ThreadID: root.String()})
	wantErr(t, "a thread receipt on an event outside it", err, "M_INVALID_PARAM", 400)
	threads := sync(t, alice, read.NextBatch, 5*time.Second)
	if r, ok := receipt(threads, room, reply.EventID, "m.read", bob.User.ID); !ok || r["thread_id"] != root.String() {
		t.Fatalf("threaded receipt: %v (found %v), want thread_id %s", r, ok, root)
	}
	if r, ok := receipt(threads, room, root, "m.read", bob.User.ID); !ok || r["thread_id"] != "main" {
		t.Fatalf("main timeline receipt: %v (found %v)", r, ok)
	}
	if _, ok := receipt(threads, room, first, "m.read", bob.User.ID); ok {
		t.Fatal("an incremental sync repeats a receipt it delivered before")
	}

	// Private receipts: bob sees his own, alice is not even woken.
	bobBase := sync(t, bob, "", 0)
	if err := bob.SendReceipt(bg, room, reply.EventID, event.ReceiptTypeReadPrivate, nil); err != nil {
		t.Fatal(err)
	}
	if r, ok := receipt(sync(t, bob, bobBase.NextBatch, 5*time.Second), room, reply.EventID, "m.read.private", bob.User.ID); !ok || r["ts"] == nil {
		t.Fatalf("bob's own private receipt: %v (found %v)", r, ok)
	}
	if quiet := sync(t, alice, threads.NextBatch, 500*time.Millisecond); len(quiet.Rooms.Join) != 0 {
		t.Fatalf("bob's private receipt reached alice: %+v", quiet.Rooms.Join[room].Ephemeral)
	}
	if _, ok := receipt(sync(t, alice, "", 0), room, reply.EventID, "m.read.private", bob.User.ID); ok {
		t.Fatal("alice's initial sync shows bob's private receipt")
	}
	if _, ok := receipt(sync(t, bob, "", 0), room, reply.EventID, "m.read.private", bob.User.ID); !ok {
		t.Fatal("bob's initial sync lacks his private receipt")
	}

	// Forward only: a receipt on an earlier event is accepted and ignored.
	second := say(t, alice, room, "second")
	if err := bob.MarkRead(bg, room, second); err != nil {
		t.Fatal(err)
	}
	mark := sync(t, alice, "", 0)
	if err := bob.MarkRead(bg, room, first); err != nil {
		t.Fatalf("a receipt behind the current one: %v", err)
	}
	if quiet := sync(t, alice, mark.NextBatch, 500*time.Millisecond); len(quiet.Rooms.Join) != 0 {
		t.Fatalf("a receipt moving back was announced: %+v", quiet.Rooms.Join[room].Ephemeral)
	}
	full := sync(t, alice, "", 0)
	if _, ok := receipt(full, room, second, "m.read", bob.User.ID); !ok {
		t.Fatal("bob's unthreaded receipt moved off the later event")
	}
	if _, ok := receipt(full, room, first, "m.read", bob.User.ID); ok {
		t.Fatal("bob's unthreaded receipt is on the earlier event too")
	}
	// Initial sync: bob's unthreaded, main and thread receipts.
	if n := receiptCount(full, room); n != 3 {
		t.Fatalf("alice's initial sync has %d receipts, want bob's 3: %v", n, ephemeral(full, room, "m.receipt"))
	}
}

// TestReadMarkers: /read_markers sets m.fully_read room account data and
// the receipts; /receipt/m.fully_read sets the marker alone.
func TestReadMarkers(t *testing.T) {
	st, alice, bob, room := lobby(t)
	first := say(t, alice, room, "first")
	second := say(t, alice, room, "second")
	aliceBase := sync(t, alice, "", 0)
	bobBase := sync(t, bob, "", 0)

	err := bob.SetReadMarkers(bg, room, &mautrix.ReqSetReadMarkers{FullyRead: first, Read: first, ReadPrivate: second})
	if err != nil {
		t.Fatal(err)
	}
	path := "/_matrix/client/v3/user/" + url.PathEscape(bob.User.ID) + "/rooms/" + url.PathEscape(room.String()) + "/account_data/m.fully_read"
	if r := st.Do(t, "GET", path, bob.User.AccessToken, nil); r.Status != http.StatusOK || r.Body["event_id"] != first.String() {
		t.Fatalf("m.fully_read after /read_markers: %d %s", r.Status, r.Raw)
	}
	seen := sync(t, alice, aliceBase.NextBatch, 5*time.Second)
	if _, ok := receipt(seen, room, first, "m.read", bob.User.ID); !ok {
		t.Fatalf("alice does not see bob's m.read from /read_markers: %v", ephemeral(seen, room, "m.receipt"))
	}
	if _, ok := receipt(seen, room, second, "m.read.private", bob.User.ID); ok {
		t.Fatal("alice sees bob's m.read.private from /read_markers")
	}
	own := sync(t, bob, bobBase.NextBatch, 5*time.Second)
	if _, ok := receipt(own, room, second, "m.read.private", bob.User.ID); !ok {
		t.Fatal("bob does not see his m.read.private from /read_markers")
	}
	marked := false
	for _, ev := range own.Rooms.Join[room].AccountData.Events {
		marked = marked || (ev.Type.Type == "m.fully_read" && ev.Content.Raw["event_id"] == first.String())
	}
	if !marked {
		t.Fatalf("bob's sync lacks m.fully_read in the room's account data: %+v", own.Rooms.Join[room].AccountData.Events)
	}

	// The receipt endpoint's m.fully_read moves the marker, and it may move
	// back; it is no receipt.
	if err := bob.SendReceipt(bg, room, second, event.ReceiptType("m.fully_read"), nil); err != nil {
		t.Fatal(err)
	}
	if r := st.Do(t, "GET", path, bob.User.AccessToken, nil); r.Body["event_id"] != second.String() {
		t.Fatalf("m.fully_read after /receipt/m.fully_read: %s", r.Raw)
	}
	if err := bob.SetReadMarkers(bg, room, &mautrix.ReqSetReadMarkers{FullyRead: first}); err != nil {
		t.Fatal(err)
	}
	if r := st.Do(t, "GET", path, bob.User.AccessToken, nil); r.Body["event_id"] != first.String() {
		t.Fatalf("m.fully_read moved back: %s", r.Raw)
	}
	for _, content := range ephemeral(sync(t, alice, "", 0), room, "m.receipt") {
		for _, byType := range content {
			if _, ok := byType.(map[string]any)["m.fully_read"]; ok {
				t.Fatalf("m.fully_read shown as a receipt: %v", content)
			}
		}
	}
	// Clients may still not write it themselves.
	r := st.Do(t, "PUT", path, bob.User.AccessToken, map[string]any{"event_id": second})
	if r.Status != http.StatusMethodNotAllowed {
		t.Fatalf("PUT of m.fully_read: %d %s", r.Status, r.Raw)
	}
}

// TestRefusals: each kind of bad request gets its Matrix error, and
// nothing is a 500.
func TestRefusals(t *testing.T) {
	st, alice, bob, room := lobby(t)
	carol := st.Member(t, "carol")
	msg := say(t, alice, room, "hello")
	other, err := carol.CreateRoom(bg, &mautrix.ReqCreateRoom{})
	if err != nil {
		t.Fatal(err)
	}
	elsewhere := say(t, carol, other.RoomID, "elsewhere")
	r := "/_matrix/client/v3/rooms/" + url.PathEscape(room.String())
	typingPath := func(u string) string { return r + "/typing/" + url.PathEscape(u) }
	receiptPath := func(typ string, ev id.EventID) string {
		return r + "/receipt/" + typ + "/" + url.PathEscape(ev.String())
	}
	cases := []struct {
		name         string
		who          user
		method, path string
		body         any
		status       int
		code         string
	}{
		{"typing for another user", alice, "PUT", typingPath(bob.User.ID), map[string]any{"typing": true}, 403, "M_FORBIDDEN"},
		{"typing for a remote user", alice, "PUT", typingPath("@alice:elsewhere.example"), map[string]any{"typing": true}, 403, "M_FORBIDDEN"},
		{"typing when not joined", carol, "PUT", typingPath(carol.User.ID), map[string]any{"typing": true}, 403, "M_FORBIDDEN"},
		{"typing in an unknown room", alice, "PUT", "/_matrix/client/v3/rooms/!nowhere:localhost/typing/" + url.PathEscape(alice.User.ID), map[string]any{"typing": true}, 403, "M_FORBIDDEN"},
		{"typing without typing", alice, "PUT", typingPath(alice.User.ID), map[string]any{"timeout": 1000}, 400, "M_MISSING_PARAM"},
		{"typing not a boolean", alice, "PUT", typingPath(alice.User.ID), map[string]any{"typing": "yes"}, 400, "M_BAD_JSON"},
		{"typing with a negative timeout", alice, "PUT", typingPath(alice.User.ID), map[string]any{"typing": true, "timeout": -5}, 400, "M_INVALID_PARAM"},
		{"typing with a string timeout", alice, "PUT", typingPath(alice.User.ID), map[string]any{"typing": true, "timeout": "30000"}, 400, "M_BAD_JSON"},
		{"typing not JSON", alice, "PUT", typingPath(alice.User.ID), "{typing", 400, "M_NOT_JSON"},
		{"typing with a bad user ID", alice, "PUT", typingPath("alice"), map[string]any{"typing": true}, 400, "M_INVALID_PARAM"},
		{"typing with a bad room ID", alice, "PUT", "/_matrix/client/v3/rooms/room/typing/" + url.PathEscape(alice.User.ID), map[string]any{"typing": true}, 400, "M_INVALID_PARAM"},
		{"receipt of an unknown type", bob, "POST", receiptPath("m.seen", msg), map[string]any{}, 400, "M_INVALID_PARAM"},
		{"receipt on an event of another room", bob, "POST", receiptPath("m.read", elsewhere), map[string]any{}, 404, "M_NOT_FOUND"},
		{"receipt on an unknown event", bob, "POST", receiptPath("m.read", "$nothing"), map[string]any{}, 404, "M_NOT_FOUND"},
		{"receipt with a bad event ID", bob, "POST", receiptPath("m.read", "nothing"), map[string]any{}, 400, "M_INVALID_PARAM"},
		{"receipt when not joined", carol, "POST", receiptPath("m.read", msg), map[string]any{}, 403, "M_FORBIDDEN"},
		{"private receipt when not joined", carol, "POST", receiptPath("m.read.private", msg), map[string]any{}, 403, "M_FORBIDDEN"},
		{"receipt with an empty thread", bob, "POST", receiptPath("m.read", msg), map[string]any{"thread_id": ""}, 400, "M_INVALID_PARAM"},
		{"receipt with a numeric thread", bob, "POST", receiptPath("m.read", msg), map[string]any{"thread_id": 5}, 400, "M_INVALID_PARAM"},
		{"receipt with a bad thread", bob, "POST", receiptPath("m.read", msg), map[string]any{"thread_id": "side"}, 400, "M_INVALID_PARAM"},
		{"fully read with a thread", bob, "POST", receiptPath("m.fully_read", msg), map[string]any{"thread_id": "main"}, 400, "M_INVALID_PARAM"},
		{"receipt not JSON", bob, "POST", receiptPath("m.read", msg), "{not json", 400, "M_NOT_JSON"},
		{"receipt not an object", bob, "POST", receiptPath("m.read", msg), "[]", 400, "M_BAD_JSON"},
		{"read markers when not joined", carol, "POST", r + "/read_markers", map[string]any{"m.fully_read": msg}, 403, "M_FORBIDDEN"},
		{"read markers on an unknown event", bob, "POST", r + "/read_markers", map[string]any{"m.fully_read": "$nothing"}, 404, "M_NOT_FOUND"},
		{"read markers with a bad event ID", bob, "POST", r + "/read_markers", map[string]any{"m.read": "nothing"}, 400, "M_INVALID_PARAM"},
		{"read markers not a string", bob, "POST", r + "/read_markers", map[string]any{"m.read": 5}, 400, "M_BAD_JSON"},
		{"read markers not JSON", bob, "POST", r + "/read_markers", "nope", 400, "M_NOT_JSON"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := st.Do(t, tc.method, tc.path, tc.who.User.AccessToken, tc.body)
			if got.Status != tc.status || got.Body["errcode"] != tc.code {
				t.Fatalf("%s %s: got %d %s, want %d %s", tc.method, tc.path, got.Status, got.Raw, tc.status, tc.code)
			}
		})
	}
	// A refused read marker request writes nothing: the valid m.fully_read
	// beside an unknown m.read is not set.
	got := st.Do(t, "POST", r+"/read_markers", bob.User.AccessToken, map[string]any{"m.fully_read": msg, "m.read": "$nothing"})
	if got.Status != 404 {
		t.Fatalf("read markers with one unknown event: %d %s", got.Status, got.Raw)
	}
	path := "/_matrix/client/v3/user/" + url.PathEscape(bob.User.ID) + "/rooms/" + url.PathEscape(room.String()) + "/account_data/m.fully_read"
	if got := st.Do(t, "GET", path, bob.User.AccessToken, nil); got.Status != 404 {
		t.Fatalf("m.fully_read after a refused request: %d %s", got.Status, got.Raw)
	}
	// An empty body and an empty object are both a plain receipt.
	if got := st.Do(t, "POST", receiptPath("m.read", msg), bob.User.AccessToken, nil); got.Status != 200 {
		t.Fatalf("receipt without a body: %d %s", got.Status, got.Raw)
	}
	if got := st.Do(t, "POST", r+"/read_markers", bob.User.AccessToken, map[string]any{}); got.Status != 200 {
		t.Fatalf("read markers with nothing to set: %d %s", got.Status, got.Raw)
	}
}
