package notify_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/notify"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
	"github.com/cirrus-matrix/cirrus/shared/store"
	"github.com/cirrus-matrix/cirrus/shared/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// pushHang bounds every wait: only a broken server takes this long.
const pushHang = time.Minute

// gateway is a push gateway on real HTTPS: it keeps what it receives, by
// pushkey, and answers as answer says (200 {} when nil).
type gateway struct {
	*httptest.Server
	mu       sync.Mutex
	byKey    map[string][]map[string]any
	taken    map[string]int
	arrived  chan struct{}
	requests int
	answer   func(n int) (int, string)
}

func newGateway(t *testing.T) *gateway {
	t.Helper()
	g := &gateway{byKey: map[string][]map[string]any{}, taken: map[string]int{}, arrived: make(chan struct{}, 1)}
	g.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/_matrix/push/v1/notify" || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("gateway got %s %s (%s)", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
		}
		raw, _ := io.ReadAll(r.Body)
		var body struct {
			Notification map[string]any `json:"notification"`
		}
		if err := json.Unmarshal(raw, &body); err != nil || body.Notification == nil {
			t.Errorf("gateway got %q", raw)
		}
		key := ""
		if devs, _ := body.Notification["devices"].([]any); len(devs) == 1 {
			d, _ := devs[0].(map[string]any)
			key, _ = d["pushkey"].(string)
		}
		g.mu.Lock()
		g.requests++
		n := g.requests
		g.byKey[key] = append(g.byKey[key], body.Notification)
		answer := g.answer
		g.mu.Unlock()
		select {
		case g.arrived <- struct{}{}:
		default:
		}
		status, reply := http.StatusOK, "{}"
		if answer != nil {
			status, reply = answer(n)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, reply)
	}))
	t.Cleanup(g.Close)
	return g
}

func (g *gateway) url() string { return g.URL + "/_matrix/push/v1/notify" }

// next waits for the next notification to pushkey that the test has not
// taken yet.
func (g *gateway) next(t *testing.T, pushkey string) map[string]any {
	t.Helper()
	deadline := time.After(pushHang)
	for {
		g.mu.Lock()
		if i := g.taken[pushkey]; i < len(g.byKey[pushkey]) {
			g.taken[pushkey] = i + 1
			n := g.byKey[pushkey][i]
			g.mu.Unlock()
			return n
		}
		g.mu.Unlock()
		select {
		case <-g.arrived:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no notification to pushkey %s within %v", pushkey, pushHang)
		}
	}
}

// startPush runs a stack with its queue drained in process, pushing to gw.
func startPush(t *testing.T, gw *gateway) *servertest.Stack {
	t.Helper()
	st := servertest.Start(t)
	st.Server.Notify.Client = gw.Client()
	st.RunQueue(t)
	return st
}

func setHTTPPusher(t *testing.T, m servertest.Member, gw *gateway, pushkey string, data map[string]any) {
	t.Helper()
	kind := mautrix.PusherKindHTTP
	d := mautrix.PusherData{"url": gw.url()}
	for k, v := range data {
		d[k] = v
	}
	err := m.SetPusher(context.Background(), &mautrix.Pusher{AppID: "org.example.phone", PushKey: pushkey, Kind: &kind,
		AppDisplayName: "Phone", DeviceDisplayName: "Pocket", Language: "en", Data: d})
	if err != nil {
		t.Fatal(err)
	}
}

func sendEvent(t *testing.T, m servertest.Member, roomID id.RoomID, typ event.Type, content map[string]any) string {
	t.Helper()
	resp, err := m.SendMessageEvent(context.Background(), roomID, typ, content)
	if err != nil {
		t.Fatal(err)
	}
	return string(resp.EventID)
}

func joinRoom(t *testing.T, m servertest.Member, roomID id.RoomID) {
	t.Helper()
	if _, err := m.JoinRoomByID(context.Background(), roomID); err != nil {
		t.Fatal(err)
	}
}

// checkFields compares fields of a notification.
func checkFields(t *testing.T, what string, n map[string]any, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if got := n[k]; !reflect.DeepEqual(got, v) {
			t.Errorf("%s: %s is %#v, want %#v (notification %v)", what, k, got, v, n)
		}
	}
}

func deviceOf(t *testing.T, n map[string]any) map[string]any {
	t.Helper()
	devs, _ := n["devices"].([]any)
	if len(devs) != 1 {
		t.Fatalf("devices %v", n["devices"])
	}
	d, _ := devs[0].(map[string]any)
	return d
}

// TestPush drives users with mautrix-go and reads what a push gateway on
// real HTTPS receives: a mention in a group room, an invite, a message and
// an encrypted message in a one-to-one room, in the default rules' words,
// and nothing for the user's own messages or for a notice, which the
// default rules do not notify of. Another user's pusher has the
// event_id_only format.
func TestPush(t *testing.T) {
	ctx := context.Background()
	gw := newGateway(t)
	st := startPush(t, gw)
	alice, bob, carol := st.Member(t, "alice"), st.Member(t, "bob"), st.Member(t, "carol")
	if err := alice.SetDisplayName(ctx, "Alice"); err != nil {
		t.Fatal(err)
	}
	if err := bob.SetDisplayName(ctx, "Major Tom"); err != nil {
		t.Fatal(err)
	}
	setHTTPPusher(t, alice, gw, "alice-key", map[string]any{"extra": "kept"})
	setHTTPPusher(t, carol, gw, "carol-key", map[string]any{"format": "event_id_only"})

	group, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "Mission Control", Preset: "private_chat",
		Invite: []id.UserID{bob.UserID, carol.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	joinRoom(t, bob, group.RoomID)

	t.Run("EventIDOnly", func(t *testing.T) {
		// Carol's invite is her first notification: only IDs, counts and
		// her device, no tweaks.
		n := gw.next(t, "carol-key")
		checkFields(t, "invite, event_id_only", n, map[string]any{"room_id": string(group.RoomID), "prio": "high",
			"counts": map[string]any{"unread": 1.0}})
		for _, k := range []string{"type", "sender", "content", "room_name", "sender_display_name"} {
			if _, ok := n[k]; ok {
				t.Errorf("event_id_only notification has %s: %v", k, n)
			}
		}
		if id, _ := n["event_id"].(string); id == "" {
			t.Errorf("no event_id: %v", n)
		}
		d := deviceOf(t, n)
		if _, ok := d["tweaks"]; ok || !reflect.DeepEqual(d["data"], map[string]any{"format": "event_id_only"}) {
			t.Errorf("event_id_only device %v", d)
		}
	})
	joinRoom(t, carol, group.RoomID)

	own := sendEvent(t, alice, group.RoomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "my own words"})
	sendEvent(t, bob, group.RoomID, event.EventMessage, map[string]any{"msgtype": "m.notice", "body": "a bot says"})
	mention := sendEvent(t, bob, group.RoomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "Alice, look",
		"m.mentions": map[string]any{"user_ids": []any{alice.UserID.String()}}})

	t.Run("Mention", func(t *testing.T) {
		// Jobs run one after another: what alice's own message or the
		// notice would have sent her came before this.
		n := gw.next(t, "alice-key")
		checkFields(t, "mention", n, map[string]any{"event_id": mention, "room_id": string(group.RoomID),
			"type": "m.room.message", "sender": bob.UserID.String(), "sender_display_name": "Major Tom",
			"room_name": "Mission Control", "prio": "high", "counts": map[string]any{"unread": 1.0},
			"content": map[string]any{"msgtype": "m.text", "body": "Alice, look",
				"m.mentions": map[string]any{"user_ids": []any{alice.UserID.String()}}}})
		d := deviceOf(t, n)
		checkFields(t, "mention device", d, map[string]any{"app_id": "org.example.phone", "pushkey": "alice-key",
			"data":   map[string]any{"extra": "kept"},
			"tweaks": map[string]any{"sound": "default", "highlight": true}})
		if ts, _ := d["pushkey_ts"].(float64); ts < 1e9 || ts > 1e11 {
			t.Errorf("pushkey_ts %v is not in seconds", d["pushkey_ts"])
		}
		// Carol is not mentioned: a group message notifies her quietly,
		// and the notice not at all.
		n = gw.next(t, "carol-key")
		checkFields(t, "group message for carol", n, map[string]any{"event_id": own, "prio": "low"})
		n = gw.next(t, "carol-key")
		checkFields(t, "mention of alice for carol", n, map[string]any{"event_id": mention, "prio": "low"})
	})

	dm, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true,
		Invite: []id.UserID{alice.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("Invite", func(t *testing.T) {
		n := gw.next(t, "alice-key")
		checkFields(t, "invite", n, map[string]any{"room_id": string(dm.RoomID), "type": "m.room.member",
			"membership": "invite", "user_is_target": true, "prio": "high"})
		checkFields(t, "invite device", deviceOf(t, n), map[string]any{"tweaks": map[string]any{"sound": "default"}})
	})
	joinRoom(t, alice, dm.RoomID)
	hi := sendEvent(t, bob, dm.RoomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "hi"})

	t.Run("OneToOne", func(t *testing.T) {
		n := gw.next(t, "alice-key")
		checkFields(t, "DM", n, map[string]any{"event_id": hi, "room_id": string(dm.RoomID), "type": "m.room.message",
			"sender_display_name": "Major Tom", "prio": "high",
			// The group room (the mention) and this one are unread.
			"counts":  map[string]any{"unread": 2.0},
			"content": map[string]any{"msgtype": "m.text", "body": "hi"}})
		if _, ok := n["room_name"]; ok {
			t.Errorf("unnamed room has room_name: %v", n)
		}
		checkFields(t, "DM device", deviceOf(t, n), map[string]any{"tweaks": map[string]any{"sound": "default"}})
	})

	encrypted := map[string]any{"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgAEnACgAkLmt6qF84IK++J7UDH2Za1YVchHyprqTqsg",
		"device_id": "BOBDEVICE", "sender_key": "IlRMeOPX2e0MurIyfWEucYBRVOEEUMrOHqn/8mLqMjA", "session_id": "X3lUlvLELLYxeTx4yOVu6UDpasGEVO0Jbu+QFnm0cKQ"}
	secret := sendEvent(t, bob, dm.RoomID, event.EventEncrypted, encrypted)
	t.Run("Encrypted", func(t *testing.T) {
		n := gw.next(t, "alice-key")
		checkFields(t, "encrypted", n, map[string]any{"event_id": secret, "type": "m.room.encrypted", "prio": "high",
			"content": encrypted})
	})

	t.Run("Ignored", func(t *testing.T) {
		// Carol ignores bob: his messages notify her of nothing (alice
		// still hears of them).
		err := carol.SetAccountData(ctx, "m.ignored_user_list", map[string]any{"ignored_users": map[string]any{bob.UserID.String(): map[string]any{}}})
		if err != nil {
			t.Fatal(err)
		}
		ignored := sendEvent(t, bob, group.RoomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "hello all"})
		after := sendEvent(t, alice, group.RoomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "hello carol"})
		checkFields(t, "bob's message for alice", gw.next(t, "alice-key"), map[string]any{"event_id": ignored, "prio": "low"})
		checkFields(t, "carol's next", gw.next(t, "carol-key"), map[string]any{"event_id": after})
	})

	// Nothing else reached the gateway: every notification was taken.
	gw.mu.Lock()
	defer gw.mu.Unlock()
	for key, list := range gw.byKey {
		if gw.taken[key] != len(list) {
			t.Errorf("gateway got %d notifications to %s, the test took %d: %v", len(list), key, gw.taken[key], list[gw.taken[key]:])
		}
	}
}

// jobUsage returns the DynamoDB usage of the jobs of kind run so far, oldest
// first, from the dispatcher's log lines.
func jobUsage(t *testing.T, st *servertest.Stack, kind string) []store.Usage {
	t.Helper()
	var out []store.Usage
	sc := bufio.NewScanner(strings.NewReader(st.Logs()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line struct {
			Msg      string      `json:"msg"`
			Kind     string      `json:"kind"`
			DynamoDB store.Usage `json:"dynamodb"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "job" && line.Kind == kind {
			out = append(out, line.DynamoDB)
		}
	}
	return out
}

// TestPush_Rejected: a gateway that answers {"rejected": [pushkey]} has
// the pusher removed, as the push gateway API asks.
func TestPush_Rejected(t *testing.T) {
	ctx := context.Background()
	gw := newGateway(t)
	gw.answer = func(int) (int, string) { return http.StatusOK, `{"rejected":["stale-key","someone-else"]}` }
	st := startPush(t, gw)
	alice, bob := st.Member(t, "alice"), st.Member(t, "bob")
	setHTTPPusher(t, alice, gw, "stale-key", nil)
	if _, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{alice.UserID}}); err != nil {
		t.Fatal(err)
	}
	gw.next(t, "stale-key")
	deadline := time.Now().Add(pushHang)
	for {
		resp, err := alice.GetPushers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Pushers) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pusher still listed %v after the gateway rejected its pushkey", resp.Pushers)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPush_Retry: a gateway failing with 500 gets the notification again
// (after the backoff's first second), and once it takes it, no more.
func TestPush_Retry(t *testing.T) {
	ctx := context.Background()
	gw := newGateway(t)
	gw.answer = func(n int) (int, string) {
		if n == 1 {
			return http.StatusInternalServerError, `{"error":"try later"}`
		}
		return http.StatusOK, `{}`
	}
	st := startPush(t, gw)
	alice, bob := st.Member(t, "alice"), st.Member(t, "bob")
	setHTTPPusher(t, alice, gw, "alice-key", nil)
	room, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{alice.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	first, again := gw.next(t, "alice-key"), gw.next(t, "alice-key")
	if first["event_id"] == nil || !reflect.DeepEqual(first, again) {
		t.Errorf("retry sent %v, first try %v", again, first)
	}
	// The next event's notification comes next: the invite was
	// delivered once, not retried again.
	joinRoom(t, alice, room.RoomID)
	hi := sendEvent(t, bob, room.RoomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "hi"})
	checkFields(t, "after the retry", gw.next(t, "alice-key"), map[string]any{"event_id": hi})
	if n := len(jobUsage(t, st, notify.RetryKind)); n != 1 {
		t.Errorf("%d retry jobs, want 1", n)
	}
}

// waitJobs waits until n jobs of kind have run and returns their usage.
func waitJobs(t *testing.T, st *servertest.Stack, kind string, n int) []store.Usage {
	t.Helper()
	deadline := time.Now().Add(pushHang)
	for {
		js := jobUsage(t, st, kind)
		if len(js) >= n {
			return js
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d %s jobs ran, want %d", len(js), kind, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkJob is servertest.CheckUsage for a push job, which reads at most
// two items more when a cache ran out on a slow machine: the user's push
// rules (kept 2 s, shared/unread) and their pushers (kept 30 s).
func checkJob(t *testing.T, what string, got store.Usage, want servertest.Cost) {
	t.Helper()
	t.Logf("%s: %d calls, %.1f RCU, %.1f WCU", what, got.Calls, got.ReadUnits, got.WriteUnits)
	extra := got.Calls - want.Calls
	rcu := got.ReadUnits - want.RCU
	if extra < 0 || extra > 2 || rcu < 0.5*float64(extra) || rcu > float64(extra) || got.WriteUnits != want.WCU {
		t.Errorf("%s: %d calls, %.1f RCU, %.1f WCU; want %d, %.1f, %.1f (up to two cache misses more)",
			what, got.Calls, got.ReadUnits, got.WriteUnits, want.Calls, want.RCU, want.WCU)
	}
}

// TestPush_Cost measures what the worker reads per notification
// (docs/storage.md, "Push"), and that a send costs what the rooms cost
// test pins (rooms' TestCosts, "message, two members") with the queue on:
// the append hook reads nothing, it only sends the job.
func TestPush_Cost(t *testing.T) {
	ctx := context.Background()
	gw := newGateway(t)
	st := startPush(t, gw)
	alice, bob, carol := st.Member(t, "alice"), st.Member(t, "bob"), st.Member(t, "carol")
	setHTTPPusher(t, alice, gw, "alice-key", nil)
	room, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Invite: []id.UserID{alice.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	gw.next(t, "alice-key")         // job 1: alice's invite
	joinRoom(t, alice, room.RoomID) // job 2: bob, no pusher, hears of the join
	text := map[string]any{"msgtype": "m.text", "body": "a message like the bench's, of about sixty-seven characters long."}
	sendEvent(t, bob, room.RoomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "warm"}) // job 3
	gw.next(t, "alice-key")
	sendEvent(t, bob, room.RoomID, event.EventMessage, text) // job 4
	gw.next(t, "alice-key")
	st.CheckCost(t, "message, two members, queue on", "/send/", servertest.Want(5, 1, 15))
	js := waitJobs(t, st, notify.Kind, 4)
	// The event's pointer and slot; bob's pushers (a Query: none).
	checkJob(t, "push job, a recipient without pushers", js[1], servertest.Want(3, 3, 0))
	// The event's pointer and slot; alice's ignored users; her rules
	// context (room summary, three state items); the room's name and the
	// sender's member event;
	// her badge: her memberships, and in her one room her receipts, the
	// events since the last count (shared/unread keeps the outcomes of
	// those before) and the rules context again.
	checkJob(t, "push job, a notification (one room)", js[3], servertest.Want(14, 21, 0))

	// Carol, without pushers, adds her query the first time only. Her
	// join changed the member count the rules read, so alice's badge
	// counts every unread event again: a /messages page more (3 calls).
	if _, err := bob.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: carol.UserID}); err != nil { // job 5
		t.Fatal(err)
	}
	joinRoom(t, carol, room.RoomID)                          // job 6
	sendEvent(t, bob, room.RoomID, event.EventMessage, text) // job 7
	gw.next(t, "alice-key")
	js = waitJobs(t, st, notify.Kind, 7)
	checkJob(t, "push job, a notification and a recipient without pushers (cached)", js[6], servertest.Want(17, 26, 0))

	// Each other joined room adds its count to the badge: its receipts,
	// its page of unread events, and (some unread) its rules context; the
	// first room's count reads only the newest event.
	other, err := carol.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	joinRoom(t, alice, other.RoomID)                         // job 8: carol hears of it
	sendEvent(t, bob, room.RoomID, event.EventMessage, text) // job 9
	gw.next(t, "alice-key")
	js = waitJobs(t, st, notify.Kind, 9)
	checkJob(t, "push job, a notification, the user in two rooms", js[8], servertest.Want(20, 33, 0))
	if len(js) != 9 {
		t.Errorf("%d push jobs, want 9", len(js))
	}
}
