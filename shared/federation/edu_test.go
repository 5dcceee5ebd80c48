package federation_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// syncWatch follows a user's /sync with since tokens, keeping every
// ephemeral and presence event it saw, in order.
type syncWatch struct {
	c     *mautrix.Client
	since string
	seen  []string
}

// watch starts following c's /sync from now. Its syncs leave the user's
// presence as it is (set_presence=offline), so that only what a test sets
// goes out.
func watch(t *testing.T, c *mautrix.Client) *syncWatch {
	t.Helper()
	w := &syncWatch{c: c}
	w.next(t)
	return w
}

// next runs one /sync from the last token and returns its ephemeral and
// presence events as "<room or presence> <type> <content>" lines.
func (w *syncWatch) next(t *testing.T) []string {
	t.Helper()
	resp, err := w.c.FullSyncRequest(background, mautrix.ReqSync{Since: w.since, Timeout: 500, SetPresence: event.PresenceOffline})
	if err != nil {
		t.Fatalf("/sync of %s: %v", w.c.UserID, err)
	}
	w.since = resp.NextBatch
	var out []string
	for roomID, r := range resp.Rooms.Join {
		for _, ev := range r.Ephemeral.Events {
			out = append(out, fmt.Sprintf("%s %s %s", roomID, ev.Type.Type, ev.Content.VeryRaw))
		}
	}
	for _, ev := range resp.Presence.Events {
		out = append(out, fmt.Sprintf("presence %s %s", ev.Sender, ev.Content.VeryRaw))
	}
	w.seen = append(w.seen, out...)
	return out
}

// until syncs until found accepts one of the events of a sync, and returns
// it. The deadline only keeps a broken test from hanging.
func (w *syncWatch) until(t *testing.T, what string, found func(line string) bool, logs func() string) string {
	t.Helper()
	var last []string
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); {
		evs := w.next(t)
		for _, line := range evs {
			if found(line) {
				return line
			}
		}
		if len(evs) > 0 {
			last = evs
		}
	}
	t.Fatalf("%s: never came to %s; last saw %q\n%s", what, w.c.UserID, last, logs())
	return ""
}

// typingIs matches the m.typing event of room naming exactly users.
func typingIs(room id.RoomID, users ...string) func(string) bool {
	return func(line string) bool {
		rest, ok := strings.CutPrefix(line, string(room)+" m.typing ")
		if !ok {
			return false
		}
		var c struct {
			UserIDs []string `json:"user_ids"`
		}
		if json.Unmarshal([]byte(rest), &c) != nil {
			return false
		}
		slices.Sort(c.UserIDs)
		return slices.Equal(c.UserIDs, users)
	}
}

// receiptOf matches an m.receipt event of room holding user's m.read on
// eventID with thread (none when "") and a ts.
func receiptOf(room id.RoomID, user, eventID, thread string) func(string) bool {
	return func(line string) bool {
		rest, ok := strings.CutPrefix(line, string(room)+" m.receipt ")
		if !ok {
			return false
		}
		var c map[string]map[string]map[string]struct {
			TS       int64   `json:"ts"`
			ThreadID *string `json:"thread_id"`
		}
		if json.Unmarshal([]byte(rest), &c) != nil {
			return false
		}
		r, ok := c[eventID]["m.read"][user]
		if !ok || r.TS <= 0 {
			return false
		}
		if thread == "" {
			return r.ThreadID == nil
		}
		return r.ThreadID != nil && *r.ThreadID == thread
	}
}

// presenceOf matches the m.presence event of user with presence and
// status message.
func presenceOf(user, presence, status string) func(string) bool {
	return func(line string) bool {
		rest, ok := strings.CutPrefix(line, "presence "+user+" ")
		if !ok {
			return false
		}
		var c struct {
			Presence  string `json:"presence"`
			StatusMsg string `json:"status_msg"`
		}
		return json.Unmarshal([]byte(rest), &c) == nil && c.Presence == presence && c.StatusMsg == status
	}
}

// recordEDUs records the typing and receipt EDUs st's users send out, in
// order, before passing them on.
func recordEDUs(st *servertest.Stack) func() []string {
	var mu sync.Mutex
	var sent []string
	next := st.Server.Ephemeral.Federate
	st.Server.Ephemeral.Federate = func(ctx context.Context, roomID, eduType string, content json.RawMessage) error {
		mu.Lock()
		sent = append(sent, eduType+" "+string(content))
		mu.Unlock()
		return next(ctx, roomID, eduType, content)
	}
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(sent)
	}
}

// transactions counts the transactions st has logged: a sync may see an
// EDU before the request that brought it is logged, which happens once
// its handler returns.
func transactions(t *testing.T, st *servertest.Stack) int {
	t.Helper()
	n := 0
	for _, r := range st.Requests(t) {
		if strings.Contains(r.Route, "/send/{txnID}") {
			n++
		}
	}
	return n
}

// checkTransaction checks the cost of the transaction st logs after the
// first n.
func checkTransaction(t *testing.T, st *servertest.Stack, n int, what string, want servertest.Cost) {
	t.Helper()
	waitFor(t, what+" logged", func() ([]string, bool) { return nil, transactions(t, st) > n }, st.Logs)
	st.CheckCost(t, what, "/send/{txnID}", want)
}

// TestTwoServers_EDUs: alice@A and bob@B share a room. Typing goes both
// ways, and its stop; alice's read receipt, unthreaded then in a thread,
// reaches bob with the thread ID, her private receipt never leaves A;
// bob's threaded receipt reaches alice; each one's presence and status
// message reaches the other. Every step is seen in the other user's /sync.
func TestTwoServers_EDUs(t *testing.T) {
	a, b := twoServers(t, "CIRRUS_PRESENCE_ENABLED=true")
	sentByA := recordEDUs(a)
	// B's clock, to be moved past its timeout of remote typing.
	var ahead atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
	b.Server.Sync.Now, b.Server.Ephemeral.Now = clock, clock
	alice := a.Member(t, "alice")
	bob := b.Member(t, "bob")
	room := publicRoom(t, alice)
	joinVia(t, bob, room, a.Name())
	aw, bw := watch(t, alice.Client), watch(t, bob.Client)
	aliceID, bobID := string(alice.UserID), string(bob.UserID)

	// Typing, both ways, and its stop.
	sent := transactions(t, b)
	if _, err := alice.UserTyping(background, room, true, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	a.CheckCost(t, "typing starts, one other server in the room", "/typing/", servertest.Want(10, 6, 4))
	bw.until(t, "alice typing", typingIs(room, aliceID), a.Logs)
	checkTransaction(t, b, sent, "a transaction of alice's m.typing, one local member", servertest.Want(9, 5, 4))
	if _, err := bob.UserTyping(background, room, true, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	aw.until(t, "bob typing", typingIs(room, aliceID, bobID), b.Logs)
	if _, err := bob.UserTyping(background, room, false, 0); err != nil {
		t.Fatal(err)
	}
	aw.until(t, "bob's stop", typingIs(room, aliceID), b.Logs)
	if _, err := alice.UserTyping(background, room, false, 0); err != nil {
		t.Fatal(err)
	}
	bw.until(t, "alice's stop", typingIs(room), a.Logs)
	// Her client asks for two minutes; B shows one (the EDU has no timeout).
	if _, err := alice.UserTyping(background, room, true, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	bw.until(t, "alice typing again", typingIs(room, aliceID), a.Logs)
	ahead.Store(int64(61 * time.Second))
	bw.until(t, "alice's typing timed out on B", typingIs(room), b.Logs)
	if users, err := a.Server.Ephemeral.Typing(background, string(room)); err != nil || !slices.Equal(users, []string{aliceID}) {
		t.Errorf("typing on A: %v, %v; want alice still", users, err)
	}
	if _, err := alice.UserTyping(background, room, false, 0); err != nil {
		t.Fatal(err)
	}

	// Receipts: alice's private one stays on A; her public ones go out,
	// the threaded one with its thread ID.
	root, err := alice.SendText(background, room, "root")
	if err != nil {
		t.Fatal(err)
	}
	reply, err := alice.SendMessageEvent(background, room, event.EventMessage, map[string]any{
		"msgtype": "m.text", "body": "in the thread",
		"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root.EventID},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Once B holds the events, each receipt goes in a transaction of its
	// own.
	waitFor(t, "the reply on B", func() ([]string, bool) {
		_, err := b.Server.Rooms.Event(background, string(room), string(reply.EventID))
		return nil, err == nil
	}, b.Logs)
	if err := alice.SendReceipt(background, room, reply.EventID, event.ReceiptTypeReadPrivate, nil); err != nil {
		t.Fatal(err)
	}
	sent = transactions(t, b)
	if err := alice.SendReceipt(background, room, root.EventID, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	a.CheckCost(t, "m.read receipt, one other server in the room", "/receipt/", servertest.Want(12, 8, 5))
	bw.until(t, "alice's unthreaded receipt", receiptOf(room, aliceID, string(root.EventID), ""), a.Logs)
	checkTransaction(t, b, sent, "a transaction of alice's m.receipt, one local member", servertest.Want(11, 7, 5))
	if err := alice.SendReceipt(background, room, reply.EventID, event.ReceiptTypeRead, &mautrix.ReqSendReceipt{ThreadID: string(root.EventID)}); err != nil {
		t.Fatal(err)
	}
	bw.until(t, "alice's threaded receipt", receiptOf(room, aliceID, string(reply.EventID), string(root.EventID)), a.Logs)
	for _, line := range bw.seen {
		if strings.Contains(line, "m.read.private") {
			t.Errorf("bob saw alice's private receipt: %s", line)
		}
	}
	var types []string
	for _, s := range sentByA() {
		if strings.Contains(s, "m.read.private") {
			t.Errorf("A sent a private receipt: %s", s)
		}
		typ, _, _ := strings.Cut(s, " ")
		types = append(types, typ)
	}
	want := []string{"m.typing", "m.typing", "m.typing", "m.typing", "m.receipt", "m.receipt"}
	if !slices.Equal(types, want) {
		t.Errorf("A sent EDUs %v, want %v", types, want)
	}

	// bob's threaded receipt.
	if err := bob.SendReceipt(background, room, reply.EventID, event.ReceiptTypeRead, &mautrix.ReqSendReceipt{ThreadID: string(root.EventID)}); err != nil {
		t.Fatal(err)
	}
	aw.until(t, "bob's threaded receipt", receiptOf(room, bobID, string(reply.EventID), string(root.EventID)), b.Logs)

	// Presence, both ways.
	sent = transactions(t, b)
	if err := alice.SetPresence(background, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: "in a meeting"}); err != nil {
		t.Fatal(err)
	}
	a.CheckCost(t, "presence change, one room with one other server", "/presence/", servertest.Want(9, 6, 3))
	bw.until(t, "alice's presence", presenceOf(aliceID, "unavailable", "in a meeting"), b.Logs)
	checkTransaction(t, b, sent, "a transaction of alice's m.presence, one room with one local member", servertest.Want(8, 4, 4))
	if err := bob.SetPresence(background, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "back"}); err != nil {
		t.Fatal(err)
	}
	aw.until(t, "bob's presence", presenceOf(bobID, "online", "back"), b.Logs)
	st, err := alice.GetPresence(background, bob.UserID)
	if err != nil || st.Presence != event.PresenceOnline || st.StatusMsg != "back" {
		t.Errorf("bob's presence on A: %+v, %v", st, err)
	}
}

// TestTwoServers_EDURefused: B's sender sends A, in one transaction's
// order, EDUs A must drop: typing, a receipt and presence of carol, a
// user of A, as if B could speak for her; bob typing in a room of A he is
// not in, and in a room A does not hold; malformed ones. Then bob's real
// typing: once alice sees it, everything before it was taken or dropped,
// and alice saw none of the dropped ones. The transaction itself is
// accepted (200), and A's log says why each was dropped.
func TestTwoServers_EDURefused(t *testing.T) {
	a, b := twoServers(t, "CIRRUS_PRESENCE_ENABLED=true")
	alice, carol := a.Member(t, "alice"), a.Member(t, "carol")
	bob := b.Member(t, "bob")
	room := publicRoom(t, alice)
	private, err := alice.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "12"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := carol.JoinRoomByID(background, room); err != nil {
		t.Fatal(err)
	}
	joinVia(t, bob, room, a.Name())
	msg, err := alice.SendText(background, room, "hello")
	if err != nil {
		t.Fatal(err)
	}
	aw := watch(t, alice.Client)
	carolID, bobID := string(carol.UserID), string(bob.UserID)

	typing := func(roomID, userID string) json.RawMessage {
		return json.RawMessage(fmt.Sprintf(`{"room_id":%q,"user_id":%q,"typing":true}`, roomID, userID))
	}
	receipt := func(roomID, userID string) json.RawMessage {
		return json.RawMessage(fmt.Sprintf(`{%q:{"m.read":{%q:{"event_ids":[%q],"data":{"ts":1}}}}}`, roomID, userID, msg.EventID))
	}
	send := []struct{ typ, content string }{
		{"m.typing", string(typing(string(room), carolID))},
		{"m.receipt", string(receipt(string(room), carolID))},
		{"m.presence", fmt.Sprintf(`{"push":[{"user_id":%q,"presence":"unavailable","status_msg":"forged","last_active_ago":1}]}`, carolID)},
		{"m.typing", string(typing(string(private.RoomID), bobID))},
		{"m.receipt", string(receipt(string(private.RoomID), bobID))},
		{"m.typing", string(typing("!nosuchroom:"+b.Name(), bobID))},
		{"m.typing", `["not", "an", "object"]`},
		{"m.typing", fmt.Sprintf(`{"room_id":%q,"user_id":%q}`, room, bobID)},
		{"m.receipt", fmt.Sprintf(`{%q:{"m.read":{%q:{"event_ids":"$x"}}}}`, room, bobID)},
		{"m.presence", `{"push":"nobody"}`},
		{"m.typing", string(typing(string(room), bobID))},
	}
	for _, e := range send {
		if err := b.Server.Sender.SendEDU(background, []string{a.Name()}, e.typ, json.RawMessage(e.content)); err != nil {
			t.Fatal(err)
		}
	}
	got := aw.until(t, "bob's typing", func(line string) bool {
		return strings.HasPrefix(line, string(room)+" m.typing ") && strings.Contains(line, bobID)
	}, a.Logs)
	if !typingIs(room, bobID)(got) {
		t.Errorf("alice saw %s, want bob alone typing", got)
	}
	for _, line := range aw.seen {
		if strings.Contains(line, carolID) || strings.Contains(line, "forged") || strings.HasPrefix(line, string(private.RoomID)) {
			t.Errorf("alice saw a refused EDU's effect: %s", line)
		}
	}
	for _, r := range a.Requests(t) {
		if strings.Contains(r.Route, "/send/") && r.Status != 200 {
			t.Errorf("A answered a transaction %d", r.Status)
		}
	}
	logs := a.Logs()
	for _, why := range []string{
		"may not send EDUs about " + carolID,
		"may not send the presence of " + carolID,
		bobID + " is not in room " + string(private.RoomID),
		"is not in room !nosuchroom:" + b.Name(),
		"m.typing from " + b.Name() + " is malformed",
		"lacks a room ID, user ID or typing",
		"m.receipt from " + b.Name() + " for " + bobID + " is malformed",
		"m.presence from " + b.Name() + " is malformed",
	} {
		if !strings.Contains(logs, why) {
			t.Errorf("A's log lacks %q", why)
		}
	}

	// Presence: of a user of B in no room held here, and of bob once he
	// left the room (A's index of his rooms lets go of it).
	if _, err := bob.LeaveRoom(background, room); err != nil {
		t.Fatal(err)
	}
	waitMembership(t, a, room, id.UserID(bobID), "leave")
	for _, u := range []string{"@nobody:" + b.Name(), bobID} {
		p := json.RawMessage(fmt.Sprintf(`{"push":[{"user_id":%q,"presence":"online","status_msg":"here","last_active_ago":1}]}`, u))
		if err := b.Server.Sender.SendEDU(background, []string{a.Name()}, "m.presence", p); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range []string{"@nobody:" + b.Name(), bobID} {
		waitFor(t, u+"'s presence refused", func() ([]string, bool) {
			return nil, strings.Contains(a.Logs(), u+" shares no room with this server")
		}, a.Logs)
	}
	if st, err := alice.GetPresence(background, bob.UserID); err != nil || st.StatusMsg == "here" {
		t.Errorf("bob's presence on A: %+v, %v; want none taken", st, err)
	}

	// A server ACL that denies IP literals denies B: EDUs about bob are
	// refused for that before anything else is read, and alice's /sync has
	// no news of his receipt.
	if _, err := alice.SendStateEvent(background, room, event.StateServerACL, "", map[string]any{"allow": []string{"*"}, "allow_ip_literals": false}); err != nil {
		t.Fatal(err)
	}
	stop := json.RawMessage(fmt.Sprintf(`{"room_id":%q,"user_id":%q,"typing":false}`, room, bobID))
	for _, e := range []struct {
		typ     string
		content json.RawMessage
	}{{"m.typing", stop}, {"m.receipt", receipt(string(room), bobID)}} {
		if err := b.Server.Sender.SendEDU(background, []string{a.Name()}, e.typ, e.content); err != nil {
			t.Fatal(err)
		}
	}
	denied := "the server ACL of " + string(room) + " denies " + b.Name()
	waitFor(t, "both refused", func() ([]string, bool) {
		return nil, strings.Count(a.Logs(), denied) == 2
	}, a.Logs)
	for _, line := range aw.next(t) {
		if strings.Contains(line, " m.receipt ") && strings.Contains(line, bobID) {
			t.Errorf("alice saw bob's refused receipt: %s", line)
		}
	}
}

// dendriteRoom is a room of alice on Cirrus (version 10) that bob on
// Dendrite 0.13.8 (with the settings of extra) joined, with a call of
// bob's client API and a follower of his /sync's ephemeral and presence
// events.
type dendriteRoom struct {
	st    *servertest.Stack
	d     *servertest.Dendrite
	alice servertest.Member
	room  id.RoomID
	bob   string
	token string
	since string
}

func newDendriteRoom(t *testing.T, extra map[string]any) *dendriteRoom {
	st, _ := servertest.StartNamed(t)
	st.RunQueue(t)
	d := servertest.StartDendrite(t, extra)
	dr := &dendriteRoom{st: st, d: d, alice: st.Member(t, "alice"), bob: "@bob:" + d.Name}
	created, err := dr.alice.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10"})
	if err != nil {
		t.Fatal(err)
	}
	dr.room = created.RoomID
	dr.token = d.Register(t, "bob", "correct horse battery staple")
	dr.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(string(dr.room))+"?server_name="+url.QueryEscape(st.Name()), map[string]any{})
	dr.sync(t)
	return dr
}

// do is a request of bob's to Dendrite, which must answer 200.
func (dr *dendriteRoom) do(t *testing.T, method, path string, body any) map[string]any {
	t.Helper()
	return dendriteDo(t, dr.d, dr.token, method, path, body)
}

// sync is bob's next /sync on Dendrite: the room's ephemeral events and
// the presence events, as syncWatch.next lists them.
func (dr *dendriteRoom) sync(t *testing.T) []string {
	t.Helper()
	out := dr.do(t, "GET", "/_matrix/client/v3/sync?timeout=500&since="+url.QueryEscape(dr.since), nil)
	dr.since, _ = out["next_batch"].(string)
	rooms, _ := out["rooms"].(map[string]any)
	join, _ := rooms["join"].(map[string]any)
	r, _ := join[string(dr.room)].(map[string]any)
	eph, _ := r["ephemeral"].(map[string]any)
	evs, _ := eph["events"].([]any)
	var lines []string
	for _, e := range evs {
		ev, _ := e.(map[string]any)
		c, _ := json.Marshal(ev["content"])
		lines = append(lines, fmt.Sprintf("%s %v %s", dr.room, ev["type"], c))
	}
	presence, _ := out["presence"].(map[string]any)
	evs, _ = presence["events"].([]any)
	for _, e := range evs {
		ev, _ := e.(map[string]any)
		c, _ := json.Marshal(ev["content"])
		lines = append(lines, fmt.Sprintf("presence %v %s", ev["sender"], c))
	}
	return lines
}

// until syncs bob until found accepts one of the events of a sync.
func (dr *dendriteRoom) until(t *testing.T, what string, found func(string) bool) {
	t.Helper()
	waitFor(t, what, func() ([]string, bool) {
		lines := dr.sync(t)
		return lines, slices.ContainsFunc(lines, found)
	}, dr.d.LogTail)
}

// TestDendrite_EDUs: alice on Cirrus and bob on Dendrite 0.13.8 share a
// room (version 10): each one's typing and its stop reach the other, and
// each one's read receipt of the other's message, in each /sync.
func TestDendrite_EDUs(t *testing.T) {
	dr := newDendriteRoom(t, nil)
	st, d, alice, room, bob, bobToken := dr.st, dr.d, dr.alice, dr.room, dr.bob, dr.token
	dendrite := func(method, path string, body any) map[string]any {
		t.Helper()
		return dr.do(t, method, path, body)
	}
	roomPath := "/_matrix/client/v3/rooms/" + url.PathEscape(string(room))
	aw := watch(t, alice.Client)
	bobUntil := func(what string, found func(string) bool) {
		t.Helper()
		dr.until(t, what, found)
	}

	// Typing, both ways, and its stop.
	if _, err := alice.UserTyping(background, room, true, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	bobUntil("alice typing on Dendrite", typingIs(room, string(alice.UserID)))
	dendrite("PUT", roomPath+"/typing/"+url.PathEscape(bob), map[string]any{"typing": true, "timeout": 30000})
	aw.until(t, "bob typing on Cirrus", typingIs(room, string(alice.UserID), bob), st.Logs)
	dendrite("PUT", roomPath+"/typing/"+url.PathEscape(bob), map[string]any{"typing": false})
	aw.until(t, "bob's stop on Cirrus", typingIs(room, string(alice.UserID)), st.Logs)
	if _, err := alice.UserTyping(background, room, false, 0); err != nil {
		t.Fatal(err)
	}
	bobUntil("alice's stop on Dendrite", typingIs(room))

	// Receipts, both ways, each of the other's message.
	sent, err := alice.SendText(background, room, "from cirrus")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice's message on Dendrite", func() ([]string, bool) {
		status, _ := d.Do(t, "GET", roomPath+"/event/"+url.PathEscape(string(sent.EventID)), bobToken, nil)
		return nil, status == 200
	}, d.LogTail)
	dendrite("POST", roomPath+"/receipt/m.read/"+url.PathEscape(string(sent.EventID)), map[string]any{})
	aw.until(t, "bob's receipt on Cirrus", receiptOf(room, bob, string(sent.EventID), ""), st.Logs)

	theirs := dendrite("PUT", roomPath+"/send/m.room.message/t1", map[string]any{"msgtype": "m.text", "body": "from dendrite"})
	eventID, _ := theirs["event_id"].(string)
	waitFor(t, "bob's message on Cirrus", func() ([]string, bool) {
		_, err := st.Server.Rooms.Event(background, string(room), eventID)
		return nil, err == nil
	}, st.Logs)
	if err := alice.SendReceipt(background, room, id.EventID(eventID), event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	bobUntil("alice's receipt on Dendrite", receiptOf(room, string(alice.UserID), eventID, ""))
}

// TestDendrite_Presence: with presence on in Dendrite, alice's presence
// and status message on Cirrus reach bob on Dendrite, and his reach her.
func TestDendrite_Presence(t *testing.T) {
	dr := newDendriteRoom(t, map[string]any{"global.presence.enable_inbound": true, "global.presence.enable_outbound": true})
	aw := watch(t, dr.alice.Client)
	if err := dr.alice.SetPresence(background, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: "from cirrus"}); err != nil {
		t.Fatal(err)
	}
	dr.until(t, "alice's presence on Dendrite", presenceOf(string(dr.alice.UserID), "unavailable", "from cirrus"))
	dr.do(t, "PUT", "/_matrix/client/v3/presence/"+url.PathEscape(dr.bob)+"/status", map[string]any{"presence": "online", "status_msg": "from dendrite"})
	aw.until(t, "bob's presence on Cirrus", presenceOf(dr.bob, "online", "from dendrite"), dr.st.Logs)
}
