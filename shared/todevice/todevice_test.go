package todevice_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
	"github.com/cirrus-matrix/cirrus/shared/todevice"
)

var bg = context.Background()

var ping = event.Type{Type: "org.example.ping", Class: event.ToDeviceEventType}

// login opens another device of u, as a second client of the same user.
func login(t *testing.T, st *servertest.Stack, u servertest.User, deviceID string) servertest.User {
	t.Helper()
	local, _, _ := strings.Cut(strings.TrimPrefix(u.ID, "@"), ":")
	body := map[string]any{"type": "m.login.password", "password": "correct horse battery staple",
		"identifier": map[string]any{"type": "m.id.user", "user": local}}
	if deviceID != "" {
		body["device_id"] = deviceID
	}
	r := st.Do(t, "POST", "/_matrix/client/v3/login", "", body)
	if r.Status != http.StatusOK {
		t.Fatalf("login %s: %d %s", u.ID, r.Status, r.Raw)
	}
	out := u
	out.DeviceID, _ = r.Body["device_id"].(string)
	out.AccessToken, _ = r.Body["access_token"].(string)
	return out
}

// send sends content to each of bob's devices named (or "*") as c.
func send(t *testing.T, c *mautrix.Client, to id.UserID, content map[string]any, devices ...string) {
	t.Helper()
	msgs := map[id.DeviceID]*event.Content{}
	for _, d := range devices {
		msgs[id.DeviceID(d)] = &event.Content{Raw: content}
	}
	_, err := c.SendToDevice(bg, ping, &mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{to: msgs}})
	if err != nil {
		t.Fatalf("send to %s %v: %v", to, devices, err)
	}
}

func sync(t *testing.T, c *mautrix.Client, since string, timeout time.Duration) *mautrix.RespSync {
	t.Helper()
	resp, err := c.FullSyncRequest(bg, mautrix.ReqSync{Since: since, Timeout: int(timeout.Milliseconds())})
	if err != nil {
		t.Fatalf("sync of %s since %q: %v", c.DeviceID, since, err)
	}
	return resp
}

// numbers lists the "n" of each message, in the order received.
func numbers(t *testing.T, resp *mautrix.RespSync) []int {
	t.Helper()
	var out []int
	for _, ev := range resp.ToDevice.Events {
		if ev.Type.Type != ping.Type {
			t.Fatalf("to-device event of type %q", ev.Type.Type)
		}
		n, _ := ev.Content.Raw["n"].(float64)
		out = append(out, int(n))
	}
	return out
}

func equal(a, b []int) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

// TestSendToDevice_Delivery: a message to one device reaches that device
// only; one to "*" reaches every device of the user, as the spec's event
// {type, sender, content}.
func TestSendToDevice_Delivery(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Client(t, st.Register(t, "alice"))
	bu := st.Register(t, "bob")
	bob1 := st.Client(t, bu)
	bob2 := st.Client(t, login(t, st, bu, ""))
	base1, base2 := sync(t, bob1, "", 0), sync(t, bob2, "", 0)

	send(t, alice, bob1.UserID, map[string]any{"n": 1}, bob1.DeviceID.String())
	one1 := sync(t, bob1, base1.NextBatch, 0)
	one2 := sync(t, bob2, base2.NextBatch, 300*time.Millisecond)
	if got := numbers(t, one1); !equal(got, []int{1}) {
		t.Fatalf("addressed device got %v, want [1]", got)
	}
	if got := numbers(t, one2); len(got) != 0 {
		t.Fatalf("the user's other device got %v, want nothing", got)
	}
	ev := one1.ToDevice.Events[0]
	if ev.Sender != alice.UserID {
		t.Fatalf("sender %s, want %s", ev.Sender, alice.UserID)
	}

	send(t, alice, bob1.UserID, map[string]any{"n": 2}, "*")
	all1 := sync(t, bob1, one1.NextBatch, 5000*time.Millisecond)
	all2 := sync(t, bob2, one2.NextBatch, 5000*time.Millisecond)
	if got1, got2 := numbers(t, all1), numbers(t, all2); !equal(got1, []int{2}) || !equal(got2, []int{2}) {
		t.Fatalf(`"*" delivered %v and %v, want [2] to both devices`, got1, got2)
	}

	// The raw answer carries exactly the spec's fields.
	send(t, alice, bob1.UserID, map[string]any{"n": 3}, bob1.DeviceID.String())
	r := st.Do(t, "GET", "/_matrix/client/v3/sync?since="+url.QueryEscape(all1.NextBatch), bob1.AccessToken, nil)
	evs := r.Body["to_device"].(map[string]any)["events"].([]any)
	raw := evs[0].(map[string]any)
	if len(evs) != 1 || len(raw) != 3 || raw["type"] != ping.Type || raw["sender"] != alice.UserID.String() || raw["content"].(map[string]any)["n"] != 3.0 {
		t.Fatalf("raw to_device %s", r.Raw)
	}
}

// TestSendToDevice_Acknowledgement: messages stay until a sync brings back
// the token of the response that delivered them; a sync from the token
// before is delivered them again.
func TestSendToDevice_Acknowledgement(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Client(t, st.Register(t, "alice"))
	bob := st.Client(t, st.Register(t, "bob"))
	base := sync(t, bob, "", 0)
	send(t, alice, bob.UserID, map[string]any{"n": 1}, bob.DeviceID.String())
	send(t, alice, bob.UserID, map[string]any{"n": 2}, bob.DeviceID.String())

	first := sync(t, bob, base.NextBatch, 0)
	if got := numbers(t, first); !equal(got, []int{1, 2}) {
		t.Fatalf("first sync got %v, want [1 2]", got)
	}
	again := sync(t, bob, base.NextBatch, 0)
	if got := numbers(t, again); !equal(got, []int{1, 2}) {
		t.Fatalf("sync from the old token got %v, want [1 2] again", got)
	}
	acked := sync(t, bob, first.NextBatch, 300*time.Millisecond)
	if got := numbers(t, acked); len(got) != 0 {
		t.Fatalf("sync acknowledging the messages got %v again", got)
	}
	if got := numbers(t, sync(t, bob, first.NextBatch, 0)); len(got) != 0 {
		t.Fatalf("the acknowledging token, used twice, got %v", got)
	}
	if got := numbers(t, sync(t, bob, base.NextBatch, 0)); len(got) != 0 {
		t.Fatalf("after the acknowledgement the old token got %v: not deleted", got)
	}
	send(t, alice, bob.UserID, map[string]any{"n": 3}, bob.DeviceID.String())
	if got := numbers(t, sync(t, bob, acked.NextBatch, 5*time.Second)); !equal(got, []int{3}) {
		t.Fatalf("next message: got %v, want [3]", got)
	}
	// An initial sync delivers what waits too.
	if got := numbers(t, sync(t, bob, "", 0)); !equal(got, []int{3}) {
		t.Fatalf("initial sync got %v, want [3]", got)
	}
}

// TestSendToDevice_Transaction: a retry with the same transaction ID sends
// nothing; the same ID for another event type or from another device is
// another transaction.
func TestSendToDevice_Transaction(t *testing.T) {
	st := servertest.Start(t)
	au := st.Register(t, "alice")
	alice2 := login(t, st, au, "")
	bob := st.Client(t, st.Register(t, "bob"))
	base := sync(t, bob, "", 0)
	put := func(token, evType string, n int) {
		t.Helper()
		body := map[string]any{"messages": map[string]any{bob.UserID.String(): map[string]any{bob.DeviceID.String(): map[string]any{"n": n}}}}
		r := st.Do(t, "PUT", "/_matrix/client/v3/sendToDevice/"+evType+"/txn1", token, body)
		if r.Status != http.StatusOK || len(r.Body) != 0 {
			t.Fatalf("send %s %d: %d %s", evType, n, r.Status, r.Raw)
		}
	}
	put(au.AccessToken, ping.Type, 1)
	put(au.AccessToken, ping.Type, 2)
	put(au.AccessToken, "org.example.other", 3)
	put(alice2.AccessToken, ping.Type, 4)
	resp := sync(t, bob, base.NextBatch, 0)
	var got []string
	for _, ev := range resp.ToDevice.Events {
		got = append(got, fmt.Sprint(ev.Type.Type, " ", ev.Content.Raw["n"]))
	}
	want := []string{ping.Type + " 1", "org.example.other 3", ping.Type + " 4"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
}

// TestSendToDevice_Cap: a sync carries at most 100 messages, oldest first;
// its token brings the client back at once for the rest.
func TestSendToDevice_Cap(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Client(t, st.Register(t, "alice"))
	bob := st.Client(t, st.Register(t, "bob"))
	base := sync(t, bob, "", 0)
	const total = todevice.MaxPerSync + 5
	for i := range total {
		send(t, alice, bob.UserID, map[string]any{"n": i}, bob.DeviceID.String())
	}
	first := sync(t, bob, base.NextBatch, 0)
	got := numbers(t, first)
	if len(got) != todevice.MaxPerSync {
		t.Fatalf("first sync carried %d messages, want %d", len(got), todevice.MaxPerSync)
	}
	for i, n := range got {
		if n != i {
			t.Fatalf("message %d is %d: not in order of arrival", i, n)
		}
	}
	start := time.Now()
	rest := sync(t, bob, first.NextBatch, 20*time.Second)
	// At once, not after its 20 s timeout; any loaded machine answers sooner.
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the sync for the rest waited %v", d)
	}
	if got := numbers(t, rest); !equal(got, []int{100, 101, 102, 103, 104}) {
		t.Fatalf("second sync got %v, want 100 to 104", got)
	}
	if got := numbers(t, sync(t, bob, rest.NextBatch, 300*time.Millisecond)); len(got) != 0 {
		t.Fatalf("third sync got %v, want nothing", got)
	}
}

// TestSendToDevice_Wake: a message wakes the waiting sync of its device at
// once in this process, and on another instance at its next poll; the
// user's other device keeps waiting.
func TestSendToDevice_Wake(t *testing.T) {
	st := servertest.Start(t, "CIRRUS_SYNC_POLL_INTERVAL_MS=200")
	alice := st.Client(t, st.Register(t, "alice"))
	bu := st.Register(t, "bob")
	bob1 := st.Client(t, bu)
	other := login(t, st, bu, "")
	bob2 := st.Client(t, other)
	base1, base2 := sync(t, bob1, "", 0), sync(t, bob2, "", 0)

	type result struct {
		resp      *mautrix.RespSync
		start, at time.Time
	}
	wait := func(c *mautrix.Client, since string, timeout time.Duration) chan result {
		ch := make(chan result, 1)
		go func() {
			start := time.Now()
			resp, err := c.FullSyncRequest(bg, mautrix.ReqSync{Since: since, Timeout: int(timeout.Milliseconds())})
			if err != nil {
				t.Error(err)
			}
			ch <- result{resp, start, time.Now()}
		}()
		return ch
	}
	woken := wait(bob1, base1.NextBatch, 20*time.Second)
	idle := wait(bob2, base2.NextBatch, 1500*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	sent := time.Now()
	send(t, alice, bob1.UserID, map[string]any{"n": 1}, bob1.DeviceID.String())
	var r result
	select {
	case r = <-woken:
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting sync was not woken")
	}
	if r.resp == nil {
		t.FailNow()
	}
	// The 10 s bound above is under the 20 s timeout: the send woke it.
	t.Logf("woken %v after the send", r.at.Sub(sent))
	if got := numbers(t, r.resp); !equal(got, []int{1}) {
		t.Fatalf("woken sync got %v", got)
	}
	r = <-idle
	if r.resp == nil {
		t.FailNow()
	}
	// It waited its whole timeout: the send did not wake it. (A lower
	// bound from its own start holds on any machine; one from the send
	// did not on a loaded one.)
	if got := numbers(t, r.resp); len(got) != 0 || r.at.Sub(r.start) < 1500*time.Millisecond {
		t.Fatalf("the other device's sync returned %v after %v, want nothing after its timeout of 1.5 s", got, r.at.Sub(r.start))
	}

	// Another instance, as another Lambda: no wake-up in memory, the poll
	// finds the stream entry.
	twin := st.Twin(t).Client(t, other)
	waiting := wait(twin, r.resp.NextBatch, 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	sent = time.Now()
	send(t, alice, bob1.UserID, map[string]any{"n": 2}, "*")
	select {
	case r = <-waiting:
	case <-time.After(8 * time.Second):
		t.Fatal("the other instance's sync was not woken")
	}
	if r.resp == nil {
		t.FailNow()
	}
	// The 8 s bound above is under the 10 s timeout: the poll found it.
	if got := numbers(t, r.resp); !equal(got, []int{2}) {
		t.Fatalf("other instance got %v after %v", got, r.at.Sub(sent))
	}
}

// TestSendToDevice_BadInput: each refusal goes through the one error
// writer and sends nothing.
func TestSendToDevice_BadInput(t *testing.T) {
	st := servertest.Start(t)
	au := st.Register(t, "alice")
	bob := st.Client(t, st.Register(t, "bob"))
	base := sync(t, bob, "", 0)
	to := func(content any) map[string]any {
		return map[string]any{"messages": map[string]any{bob.UserID.String(): map[string]any{bob.DeviceID.String(): content}}}
	}
	big := strings.Repeat("x", todevice.MaxEventBytes)
	cases := []struct {
		name   string
		body   any
		status int
		code   string
	}{
		{"NotJSON", "{not json", 400, "M_NOT_JSON"},
		{"NotAnObject", "[]", 400, "M_BAD_JSON"},
		{"NoMessages", map[string]any{}, 400, "M_BAD_JSON"},
		{"NullMessages", map[string]any{"messages": nil}, 400, "M_BAD_JSON"},
		{"MessagesNotAnObject", map[string]any{"messages": []any{}}, 400, "M_BAD_JSON"},
		{"BadUserID", map[string]any{"messages": map[string]any{"bob": map[string]any{"D": map[string]any{}}}}, 400, "M_INVALID_PARAM"},
		{"DevicesNotAnObject", map[string]any{"messages": map[string]any{bob.UserID.String(): "D"}}, 400, "M_BAD_JSON"},
		{"ContentNotAnObject", to("hello"), 400, "M_BAD_JSON"},
		{"ContentTooLarge", to(map[string]any{"x": big}), 413, "M_TOO_LARGE"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := st.Do(t, "PUT", fmt.Sprintf("/_matrix/client/v3/sendToDevice/%s/bad%d", ping.Type, i), au.AccessToken, tc.body)
			if r.Status != tc.status || r.Body["errcode"] != tc.code {
				t.Fatalf("got %d %s, want %d %s", r.Status, r.Raw, tc.status, tc.code)
			}
		})
	}
	// A user of another server gets nothing here (the message goes to
	// their server, TestTwoServers_DeviceListsAndToDevice in e2ekeys); a
	// device that does not exist gets nothing.
	r := st.Do(t, "PUT", "/_matrix/client/v3/sendToDevice/"+ping.Type+"/remote", au.AccessToken,
		map[string]any{"messages": map[string]any{"@carol:elsewhere.example": map[string]any{"*": map[string]any{}},
			bob.UserID.String(): map[string]any{"NOSUCHDEVICE": map[string]any{}}}})
	if r.Status != http.StatusOK {
		t.Fatalf("send to a remote user: %d %s", r.Status, r.Raw)
	}
	if got := numbers(t, sync(t, bob, base.NextBatch, 300*time.Millisecond)); len(got) != 0 {
		t.Fatalf("refused sends delivered %v", got)
	}
}

// TestSendToDevice_DeviceDeleted: a device's pending messages go with it,
// so that a new device of the same ID does not receive them.
func TestSendToDevice_DeviceDeleted(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Client(t, st.Register(t, "alice"))
	bu := st.Register(t, "bob")
	phone := login(t, st, bu, "PHONE")
	send(t, alice, id.UserID(bu.ID), map[string]any{"n": 1}, "PHONE")
	if r := st.Do(t, "POST", "/_matrix/client/v3/logout", phone.AccessToken, map[string]any{}); r.Status != http.StatusOK {
		t.Fatalf("logout: %d %s", r.Status, r.Raw)
	}
	again := st.Client(t, login(t, st, bu, "PHONE"))
	if got := numbers(t, sync(t, again, "", 0)); len(got) != 0 {
		t.Fatalf("a new device of the same ID got %v", got)
	}
}

// TestSendToDevice_LateWrite: a message whose key sorts before the newest
// one a sync delivered, but which landed after that sync read the inbox (a
// slow write), is not taken for delivered by the acknowledgement.
func TestSendToDevice_LateWrite(t *testing.T) {
	st := servertest.Start(t)
	var lag atomic.Int64
	st.Server.ToDevice.Now = func() time.Time { return time.Now().Add(-time.Duration(lag.Load())) }
	alice := st.Client(t, st.Register(t, "alice"))
	bob := st.Client(t, st.Register(t, "bob"))
	base := sync(t, bob, "", 0)
	send(t, alice, bob.UserID, map[string]any{"n": 1}, bob.DeviceID.String())
	first := sync(t, bob, base.NextBatch, 0)
	if got := numbers(t, first); !equal(got, []int{1}) {
		t.Fatalf("first sync got %v", got)
	}
	lag.Store(int64(2 * time.Second))
	send(t, alice, bob.UserID, map[string]any{"n": 2}, bob.DeviceID.String())
	if got := numbers(t, sync(t, bob, first.NextBatch, 5*time.Second)); !equal(got, []int{2}) {
		t.Fatalf("after the late write the sync got %v, want [2]", got)
	}
	if got := numbers(t, sync(t, bob, base.NextBatch, 0)); !equal(got, []int{2}) {
		t.Fatalf("from the first token: %v, want [2] alone (1 acknowledged and deleted)", got)
	}
}
