package sync_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// The paths of simplified sliding sync (MSC4186): the unstable one Synapse
// serves and Element X and matrix-js-sdk call, and the accepted MSC's.
const (
	slidingUnstable = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
	slidingV4       = "/_matrix/client/v4/sync"
)

// elementXState is the required_state of Element X's room list and room
// subscriptions: DEFAULT_REQUIRED_STATE of matrix-rust-sdk's
// RoomListService (crates/matrix-sdk-ui/src/room_list_service/mod.rs).
var elementXState = [][2]string{
	{"m.room.name", ""},
	{"m.room.encryption", ""},
	{"m.room.member", "$LAZY"},
	{"m.room.member", "$ME"},
	{"m.room.topic", ""},
	{"m.room.avatar", ""},
	{"m.room.canonical_alias", ""},
	{"m.room.power_levels", ""},
	{"org.matrix.msc3401.call.member", "*"},
	{"m.room.join_rules", ""},
	{"m.room.tombstone", ""},
	{"m.room.create", ""},
	{"m.room.history_visibility", ""},
	{"io.element.functional_members", ""},
	{"m.space.parent", "*"},
	{"m.space.child", "*"},
	{"m.beacon_info", "*"},
}

// roomListBody is the body of Element X's room-list connection: the
// all_rooms list with a timeline of one event, and the account_data,
// receipts and typing extensions as the rust SDK asks for them (receipts
// for all subscribed rooms, "*"; typing with no lists or rooms, which
// the server takes as all of them).
func roomListBody(ranges [][2]int) map[string]any {
	return map[string]any{
		"conn_id": "room-list",
		"lists": map[string]any{
			"all_rooms": map[string]any{
				"ranges":         ranges,
				"timeline_limit": 1,
				"required_state": elementXState,
				"filters":        map[string]any{},
			},
		},
		"extensions": map[string]any{
			"account_data": map[string]any{"enabled": true},
			"receipts":     map[string]any{"enabled": true, "rooms": []string{"*"}},
			"typing":       map[string]any{"enabled": true},
		},
	}
}

// slEvent is an event of a sliding sync response, as much as the tests read.
type slEvent struct {
	Type     string         `json:"type"`
	StateKey *string        `json:"state_key"`
	Sender   string         `json:"sender"`
	EventID  string         `json:"event_id"`
	Content  map[string]any `json:"content"`
}

type slRoom struct {
	Name          string    `json:"name"`
	Initial       bool      `json:"initial"`
	Timeline      []slEvent `json:"timeline"`
	TimelineV4    []slEvent `json:"timeline_events"`
	RequiredState []slEvent `json:"required_state"`
	BumpStamp     int64     `json:"bump_stamp"`
	NumLive       int       `json:"num_live"`
	IsDM          bool      `json:"is_dm"`
	JoinedCount   int       `json:"joined_count"`
	PrevBatch     string    `json:"prev_batch"`
	Limited       bool      `json:"limited"`
	Membership    string    `json:"membership"`
	Lists         []string  `json:"lists"`
}

type slResponse struct {
	Pos   string `json:"pos"`
	Lists map[string]struct {
		Count int `json:"count"`
	} `json:"lists"`
	Rooms      map[string]slRoom `json:"rooms"`
	Extensions struct {
		ToDevice *struct {
			NextBatch string    `json:"next_batch"`
			Events    []slEvent `json:"events"`
		} `json:"to_device"`
		E2EE *struct {
			DeviceLists struct {
				Changed []string `json:"changed"`
				Left    []string `json:"left"`
			} `json:"device_lists"`
			OneTimeKeys map[string]int `json:"device_one_time_keys_count"`
		} `json:"e2ee"`
		AccountData *struct {
			Global []slEvent            `json:"global"`
			Rooms  map[string][]slEvent `json:"rooms"`
		} `json:"account_data"`
		Receipts *struct {
			Rooms map[string]slEvent `json:"rooms"`
		} `json:"receipts"`
		Typing *struct {
			Rooms map[string]slEvent `json:"rooms"`
		} `json:"typing"`
	} `json:"extensions"`
	raw []byte
}

// slide makes one request on the unstable path as Element X and
// matrix-js-sdk make it: pos and timeout in the query, the rest in the body.
func slide(t *testing.T, st *servertest.Stack, token, pos string, timeout time.Duration, body map[string]any) slResponse {
	t.Helper()
	q := url.Values{"timeout": {strconv.FormatInt(timeout.Milliseconds(), 10)}}
	if pos != "" {
		q.Set("pos", pos)
	}
	r := st.Do(t, "POST", slidingUnstable+"?"+q.Encode(), token, body)
	if r.Status != http.StatusOK {
		t.Fatalf("sliding sync pos %q: %d %s", pos, r.Status, r.Raw)
	}
	return decodeSliding(t, r.Raw)
}

func decodeSliding(t *testing.T, raw []byte) slResponse {
	t.Helper()
	var resp slResponse
	if err := json.Unmarshal(raw, &resp); err != nil {
		t.Fatalf("sliding sync response: %v: %s", err, raw)
	}
	if resp.Pos == "" {
		t.Fatalf("sliding sync response has no pos: %s", raw)
	}
	resp.raw = raw
	return resp
}

// members lists the state keys of the m.room.member events in evs.
func slMembers(evs []slEvent) []string {
	var out []string
	for _, ev := range evs {
		if ev.Type == "m.room.member" && ev.StateKey != nil {
			out = append(out, *ev.StateKey)
		}
	}
	slices.Sort(out)
	return out
}

func slHasState(evs []slEvent, typ, key string) bool {
	return slices.ContainsFunc(evs, func(ev slEvent) bool { return ev.Type == typ && ev.StateKey != nil && *ev.StateKey == key })
}

func slBodies(evs []slEvent) []string {
	var out []string
	for _, ev := range evs {
		if ev.Type == "m.room.message" {
			body, _ := ev.Content["body"].(string)
			out = append(out, body)
		}
	}
	return out
}

// elementXWorld is alice, who uses Element X, in three rooms bob made
// (one encrypted, one a DM by alice's m.direct), with carol in the first;
// by their last messages the rooms rank two, one, three.
type elementXWorld struct {
	st                *servertest.Stack
	alice, bob, carol servertest.User
	ac, bc, cc        *mautrix.Client
	one, two, three   id.RoomID
	oneFirst, oneLast id.EventID
}

func newElementXWorld(t *testing.T) *elementXWorld {
	st := servertest.Start(t)
	w := &elementXWorld{st: st, alice: st.Register(t, "alice"), bob: st.Register(t, "bob"), carol: st.Register(t, "carol")}
	w.ac, w.bc, w.cc = st.Client(t, w.alice), st.Client(t, w.bob), st.Client(t, w.carol)
	create := func(name string, encrypted bool, invite ...string) id.RoomID {
		req := &mautrix.ReqCreateRoom{Preset: "private_chat", Name: name}
		for _, u := range invite {
			req.Invite = append(req.Invite, id.UserID(u))
		}
		if encrypted {
			req.InitialState = []*event.Event{{Type: event.StateEncryption, StateKey: new(string),
				Content: event.Content{Raw: map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}}}
		}
		resp, err := w.bc.CreateRoom(bg, req)
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		for _, c := range []*mautrix.Client{w.ac, w.cc} {
			if slices.Contains(invite, c.UserID.String()) {
				if _, err := c.JoinRoomByID(bg, resp.RoomID); err != nil {
					t.Fatalf("%s joins %s: %v", c.UserID, name, err)
				}
			}
		}
		return resp.RoomID
	}
	w.one = create("one", true, w.alice.ID, w.carol.ID)
	w.two = create("two", false, w.alice.ID)
	w.three = create("three", false, w.alice.ID)
	if err := w.ac.SetAccountData(bg, "m.direct", map[string]any{w.bob.ID: []string{w.three.String()}}); err != nil {
		t.Fatal(err)
	}
	if err := w.ac.SetRoomAccountData(bg, w.one, "m.tag", map[string]any{"tags": map[string]any{"m.favourite": map[string]any{}}}); err != nil {
		t.Fatal(err)
	}
	say(t, w.bc, w.three, "three")
	w.oneFirst = say(t, w.bc, w.one, "one from bob")
	w.oneLast = say(t, w.cc, w.one, "one from carol")
	say(t, w.bc, w.two, "two")
	return w
}

// TestSlidingSync_ElementXRoomList: the room-list connection of Element X:
// the first request lists alice's rooms by recency with their names, last
// event, bump stamps, is_dm, $LAZY and $ME members and account data; a
// growing range brings only the rooms not sent yet; a prev_batch pages
// back with /messages; opening a room subscribes to it, and a waiting
// request wakes with bob's receipt and typing there, then with a message
// in another room that takes the top of the list.
func TestSlidingSync_ElementXRoomList(t *testing.T) {
	w := newElementXWorld(t)
	st, alice := w.st, w.alice

	r := st.Do(t, "GET", "/_matrix/client/versions", "", nil)
	if f, _ := r.Body["unstable_features"].(map[string]any); f["org.matrix.simplified_msc3575"] != true {
		t.Fatalf("/versions unstable_features: %s", r.Raw)
	}

	// Element X starts with a window of the top room, then grows it.
	first := slide(t, st, alice.AccessToken, "", 0, roomListBody([][2]int{{0, 0}}))
	if got := first.Lists["all_rooms"].Count; got != 3 {
		t.Fatalf("all_rooms count %d, want 3: %s", got, first.raw)
	}
	if len(first.Rooms) != 1 || first.Rooms[w.two.String()].Name != "two" {
		t.Fatalf("range [0,0] returned rooms %v, want only %s (two, the most recent): %s", slKeys(first.Rooms), w.two, first.raw)
	}
	grown := slide(t, st, alice.AccessToken, first.Pos, 0, roomListBody([][2]int{{0, 19}}))
	if len(grown.Rooms) != 2 {
		t.Fatalf("growing the range to [0,19] returned rooms %v, want the two not sent yet: %s", slKeys(grown.Rooms), grown.raw)
	}
	one, three := grown.Rooms[w.one.String()], grown.Rooms[w.three.String()]
	two := first.Rooms[w.two.String()]
	for name, room := range map[string]slRoom{"one": one, "two": two, "three": three} {
		if !room.Initial || room.Name != name || room.BumpStamp == 0 || len(room.Timeline) != 1 {
			t.Fatalf("room %s: initial %v, name %q, bump_stamp %d, %d timeline events: %s", name, room.Initial, room.Name, room.BumpStamp, len(room.Timeline), grown.raw)
		}
		if !slHasState(room.RequiredState, "m.room.create", "") || !slHasState(room.RequiredState, "m.room.power_levels", "") {
			t.Fatalf("room %s lacks its create or power levels event in required_state: %+v", name, room.RequiredState)
		}
	}
	if !(two.BumpStamp > one.BumpStamp && one.BumpStamp > three.BumpStamp) {
		t.Fatalf("bump stamps two %d, one %d, three %d: want two > one > three", two.BumpStamp, one.BumpStamp, three.BumpStamp)
	}
	if !three.IsDM || one.IsDM || two.IsDM {
		t.Fatalf("is_dm: one %v, two %v, three %v; want only three, alice's m.direct room", one.IsDM, two.IsDM, three.IsDM)
	}
	if !slHasState(one.RequiredState, "m.room.encryption", "") || slHasState(two.RequiredState, "m.room.encryption", "") {
		t.Fatal("m.room.encryption in required_state: want it in one only")
	}
	// $LAZY: the sender of the one timeline event (carol), and $ME: alice;
	// not bob, who sent nothing in the timeline.
	if got, want := slMembers(one.RequiredState), []string{w.alice.ID, w.carol.ID}; !slices.Equal(got, want) {
		t.Fatalf("room one's members in required_state %v, want %v ($LAZY for carol's message, $ME)", got, want)
	}
	if got := slBodies(one.Timeline); len(got) != 1 || got[0] != "one from carol" || !one.Limited || one.PrevBatch == "" {
		t.Fatalf("room one's timeline %v, limited %v, prev_batch %q", got, one.Limited, one.PrevBatch)
	}
	if one.JoinedCount != 3 {
		t.Fatalf("room one's joined_count %d, want 3", one.JoinedCount)
	}
	// prev_batch is a token /messages takes, to page back from the timeline.
	back := st.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(w.one.String())+"/messages?dir=b&limit=1&from="+url.QueryEscape(one.PrevBatch), alice.AccessToken, nil)
	if back.Status != http.StatusOK || !json.Valid(back.Raw) || !slHasEvent(back.Body["chunk"], w.oneFirst) {
		t.Fatalf("/messages from prev_batch: %d %s, want %s", back.Status, back.Raw, w.oneFirst)
	}
	ad := first.Extensions.AccountData
	if ad == nil || !slices.ContainsFunc(ad.Global, func(ev slEvent) bool { return ev.Type == "m.direct" }) {
		t.Fatalf("account_data extension of the first response lacks m.direct: %s", first.raw)
	}
	roomAD := grown.Extensions.AccountData
	if roomAD == nil || !slices.ContainsFunc(roomAD.Rooms[w.one.String()], func(ev slEvent) bool { return ev.Type == "m.tag" }) {
		if ad == nil || !slices.ContainsFunc(ad.Rooms[w.one.String()], func(ev slEvent) bool { return ev.Type == "m.tag" }) {
			t.Fatalf("account_data extension lacks room one's m.tag: %s / %s", first.raw, grown.raw)
		}
	}

	// Nothing new: a request with a short timeout brings no rooms.
	quiet := slide(t, st, alice.AccessToken, grown.Pos, 300*time.Millisecond, roomListBody([][2]int{{0, 19}}))
	if len(quiet.Rooms) != 0 {
		t.Fatalf("a request with nothing new returned rooms %v: %s", slKeys(quiet.Rooms), quiet.raw)
	}

	// alice opens room one: Element X subscribes to it with a longer
	// timeline; bob reads carol's message and types there.
	open := roomListBody([][2]int{{0, 19}})
	open["room_subscriptions"] = map[string]any{w.one.String(): map[string]any{
		"timeline_limit": 20,
		"required_state": append(slices.Clone(elementXState), [2]string{"m.room.pinned_events", ""}),
	}}
	if err := w.bc.SendReceipt(bg, w.one, w.oneLast, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := w.bc.UserTyping(bg, w.one, true, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	sub := slide(t, st, alice.AccessToken, quiet.Pos, 10*time.Second, open)
	// The subscription's longer timeline brings bob's earlier message (the
	// MSC's SHOULD, as Synapse does), and with it bob's member event.
	if opened, ok := sub.Rooms[w.one.String()]; !ok {
		t.Logf("room one did not come with its subscription (expanded timeline): %s", sub.raw)
	} else if slices.Contains(slBodies(opened.Timeline), "one from bob") && !slices.Contains(slMembers(opened.RequiredState), w.bob.ID) {
		t.Fatalf("room one's subscription has bob's message but not his member event ($LAZY): %s", sub.raw)
	}
	rec := sub.Extensions.Receipts
	if rec == nil || rec.Rooms[w.one.String()].Type != "m.receipt" {
		t.Fatalf("receipts extension for room one: %s", sub.raw)
	}
	readers, _ := rec.Rooms[w.one.String()].Content[w.oneLast.String()].(map[string]any)["m.read"].(map[string]any)
	if readers[w.bob.ID] == nil {
		t.Fatalf("room one's receipts lack bob's read receipt on %s: %+v", w.oneLast, rec.Rooms[w.one.String()])
	}
	typing := sub.Extensions.Typing
	if typing == nil || typing.Rooms[w.one.String()].Type != "m.typing" {
		t.Fatalf("typing extension for room one: %s", sub.raw)
	}
	if ids, _ := typing.Rooms[w.one.String()].Content["user_ids"].([]any); !slices.Contains(ids, any(w.bob.ID)) {
		t.Fatalf("room one's typing user_ids %v, want bob", ids)
	}

	// A waiting request wakes with bob's message in three, which goes to
	// the top: its bump stamp passes two's.
	woke := make(chan slResponse, 1)
	go func() {
		r := st.Do(t, "POST", slidingUnstable+"?timeout=20000&pos="+url.QueryEscape(sub.Pos), alice.AccessToken, roomListBody([][2]int{{0, 19}}))
		if r.Status != http.StatusOK {
			t.Errorf("waiting sliding sync: %d %s", r.Status, r.Raw)
			woke <- slResponse{}
			return
		}
		woke <- decodeSliding(t, r.Raw)
	}()
	time.Sleep(300 * time.Millisecond)
	say(t, w.bc, w.three, "three again")
	var news slResponse
	select {
	case news = <-woke:
	case <-time.After(15 * time.Second):
		t.Fatal("the waiting sliding sync did not return after bob's message")
	}
	if news.Pos == "" {
		t.FailNow()
	}
	got, ok := news.Rooms[w.three.String()]
	if !ok || got.Initial || got.NumLive != 1 || !slices.Equal(slBodies(got.Timeline), []string{"three again"}) {
		t.Fatalf("woken response for room three: %s", news.raw)
	}
	if got.BumpStamp <= two.BumpStamp {
		t.Fatalf("room three's bump stamp %d after its message, room two's %d: want three above", got.BumpStamp, two.BumpStamp)
	}
	top := slide(t, st, alice.AccessToken, "", 0, roomListBody([][2]int{{0, 0}}))
	if _, ok := top.Rooms[w.three.String()]; !ok || len(top.Rooms) != 1 {
		t.Fatalf("a new connection's range [0,0] after the message: rooms %v, want three", slKeys(top.Rooms))
	}
}

// TestSlidingSync_ElementXEncryption: the encryption connection of Element
// X (conn_id "encryption": to_device and e2ee extensions, no lists): the
// one-time key counts, a to-device message delivered once and acknowledged
// by the next since, and a user who comes into a shared room in
// device_lists.changed. An unknown pos answers 400 M_UNKNOWN_POS, so the
// client starts over.
func TestSlidingSync_ElementXEncryption(t *testing.T) {
	w := newElementXWorld(t)
	st, alice := w.st, w.alice
	if r := st.Do(t, "POST", "/_matrix/client/v3/keys/upload", alice.AccessToken, map[string]any{
		"one_time_keys": map[string]any{"signed_curve25519:AAAA": "k1", "signed_curve25519:AAAB": "k2"},
	}); r.Status != http.StatusOK {
		t.Fatalf("alice's key upload: %d %s", r.Status, r.Raw)
	}
	if _, err := w.bc.SendToDevice(bg, event.Type{Type: "m.test", Class: event.ToDeviceEventType}, &mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{
		id.UserID(alice.ID): {id.DeviceID(alice.DeviceID): &event.Content{Raw: map[string]any{"for": "alice"}}},
	}}); err != nil {
		t.Fatal(err)
	}
	body := func(since string) map[string]any {
		td := map[string]any{"enabled": true, "limit": 100}
		if since != "" {
			td["since"] = since
		}
		return map[string]any{"conn_id": "encryption", "extensions": map[string]any{
			"to_device": td,
			"e2ee":      map[string]any{"enabled": true},
		}}
	}

	first := slide(t, st, alice.AccessToken, "", 0, body(""))
	e2ee, td := first.Extensions.E2EE, first.Extensions.ToDevice
	if e2ee == nil || e2ee.OneTimeKeys["signed_curve25519"] != 2 {
		t.Fatalf("e2ee extension's one-time key counts, want signed_curve25519: 2: %s", first.raw)
	}
	if td == nil || td.NextBatch == "" || len(td.Events) != 1 || td.Events[0].Sender != w.bob.ID || td.Events[0].Content["for"] != "alice" {
		t.Fatalf("to_device extension, want bob's message and a next_batch: %s", first.raw)
	}
	if len(first.Rooms) != 0 {
		t.Fatalf("a connection with no lists or subscriptions returned rooms %v", slKeys(first.Rooms))
	}

	// dave joins room two: his devices are news for alice, who now shares
	// a room with him.
	dave := st.Register(t, "dave")
	if _, err := w.bc.InviteUser(bg, w.two, &mautrix.ReqInviteUser{UserID: id.UserID(dave.ID)}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Client(t, dave).JoinRoomByID(bg, w.two); err != nil {
		t.Fatal(err)
	}
	next := slide(t, st, alice.AccessToken, first.Pos, 10*time.Second, body(td.NextBatch))
	if next.Extensions.ToDevice != nil && len(next.Extensions.ToDevice.Events) != 0 {
		t.Fatalf("the to-device message came again after its next_batch was sent as since: %s", next.raw)
	}
	if next.Extensions.E2EE == nil || !slices.Contains(next.Extensions.E2EE.DeviceLists.Changed, dave.ID) {
		t.Fatalf("e2ee device_lists.changed after dave joined room two, want %s: %s", dave.ID, next.raw)
	}
	// Claiming a key changes the count the next response reports.
	if r := st.Do(t, "POST", "/_matrix/client/v3/keys/claim", w.bob.AccessToken, map[string]any{
		"one_time_keys": map[string]any{alice.ID: map[string]any{alice.DeviceID: "signed_curve25519"}},
	}); r.Status != http.StatusOK {
		t.Fatalf("bob's claim: %d %s", r.Status, r.Raw)
	}
	since := td.NextBatch
	if next.Extensions.ToDevice != nil && next.Extensions.ToDevice.NextBatch != "" {
		since = next.Extensions.ToDevice.NextBatch
	}
	claimed := slide(t, st, alice.AccessToken, next.Pos, 10*time.Second, body(since))
	if claimed.Extensions.E2EE == nil || claimed.Extensions.E2EE.OneTimeKeys["signed_curve25519"] != 1 {
		t.Fatalf("e2ee one-time key counts after bob's claim, want signed_curve25519: 1: %s", claimed.raw)
	}

	r := st.Do(t, "POST", slidingUnstable+"?pos=not-a-position", alice.AccessToken, body(""))
	if r.Status != http.StatusBadRequest || r.Body["errcode"] != "M_UNKNOWN_POS" {
		t.Fatalf("unknown pos: %d %s, want 400 M_UNKNOWN_POS", r.Status, r.Raw)
	}
}

// TestSlidingSync_V4: the accepted MSC's endpoint and names: pos and
// timeout in the body, range (one), required_state with include and
// lazy_members, the room's membership and lists, and timeline_events.
func TestSlidingSync_V4(t *testing.T) {
	w := newElementXWorld(t)
	st, alice := w.st, w.alice
	body := func(pos string, timeout int) map[string]any {
		b := map[string]any{
			"conn_id": "v4",
			"timeout": timeout,
			"lists": map[string]any{"recent": map[string]any{
				"range":          [2]int{0, 9},
				"timeline_limit": 1,
				"required_state": map[string]any{
					"include":      []map[string]string{{"type": "m.room.create", "state_key": ""}},
					"lazy_members": true,
				},
				"filters": map[string]any{"is_encrypted": true},
			}},
		}
		if pos != "" {
			b["pos"] = pos
		}
		return b
	}
	r := st.Do(t, "POST", slidingV4, alice.AccessToken, body("", 0))
	if r.Status != http.StatusOK {
		t.Fatalf("POST %s: %d %s", slidingV4, r.Status, r.Raw)
	}
	first := decodeSliding(t, r.Raw)
	if first.Lists["recent"].Count != 1 || len(first.Rooms) != 1 {
		t.Fatalf("is_encrypted list: count %d, rooms %v; want room one alone: %s", first.Lists["recent"].Count, slKeys(first.Rooms), r.Raw)
	}
	one := first.Rooms[w.one.String()]
	if !one.Initial || one.Membership != "join" || !slices.Equal(one.Lists, []string{"recent"}) {
		t.Fatalf("room one: initial %v, membership %q, lists %v: %s", one.Initial, one.Membership, one.Lists, r.Raw)
	}
	if got := slBodies(one.TimelineV4); !slices.Equal(got, []string{"one from carol"}) {
		t.Fatalf("room one's timeline_events %v: %s", got, r.Raw)
	}
	// lazy_members: carol's member event for her message; not bob's, who
	// sent nothing in the timeline (alice's own may come: the MSC allows it).
	got := slMembers(one.RequiredState)
	if !slHasState(one.RequiredState, "m.room.create", "") || !slices.Contains(got, w.carol.ID) || slices.Contains(got, w.bob.ID) {
		t.Fatalf("room one's required_state has members %v, want the create event and carol's member event, not bob's (lazy_members): %s", got, r.Raw)
	}

	say(t, w.cc, w.one, "v4 news")
	r = st.Do(t, "POST", slidingV4, alice.AccessToken, body(first.Pos, 10000))
	if r.Status != http.StatusOK {
		t.Fatalf("POST %s with pos: %d %s", slidingV4, r.Status, r.Raw)
	}
	next := decodeSliding(t, r.Raw)
	if got := slBodies(next.Rooms[w.one.String()].TimelineV4); !slices.Equal(got, []string{"v4 news"}) {
		t.Fatalf("room one's timeline_events after carol's message %v: %s", got, r.Raw)
	}
}

func slKeys(rooms map[string]slRoom) []string {
	var out []string
	for k := range rooms {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// containsEvent reports whether chunk, a decoded /messages chunk, holds the event.
func slHasEvent(chunk any, want id.EventID) bool {
	evs, _ := chunk.([]any)
	for _, ev := range evs {
		if m, _ := ev.(map[string]any); m["event_id"] == want.String() {
			return true
		}
	}
	return false
}

// TestSlidingSync_RetrySamePos: a client that cancels a request, or never
// gets its answer, sends the same pos again, as the MSC allows (matrix-js-sdk
// does it whenever a room subscription changes): the server answers it, and
// with the news the lost answer held, since the client never processed it.
func TestSlidingSync_RetrySamePos(t *testing.T) {
	w := newElementXWorld(t)
	st, alice := w.st, w.alice
	first := slide(t, st, alice.AccessToken, "", 0, roomListBody([][2]int{{0, 19}}))

	// A waiting request cancelled by the client before anything happens.
	ctx, cancel := context.WithCancel(bg)
	req, err := http.NewRequestWithContext(ctx, "POST", st.URL+slidingUnstable+"?timeout=10000&pos="+url.QueryEscape(first.Pos), strings.NewReader(`{"conn_id":"room-list","lists":{"all_rooms":{"ranges":[[0,19]],"timeline_limit":1,"required_state":[]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if res, err := http.DefaultClient.Do(req); err == nil {
			res.Body.Close()
		}
	}()
	time.Sleep(300 * time.Millisecond)
	cancel()
	<-done

	// bob's message; the answer that holds it is lost.
	say(t, w.bc, w.two, "lost once")
	lost := slide(t, st, alice.AccessToken, first.Pos, 0, roomListBody([][2]int{{0, 19}}))
	if !slices.Equal(slBodies(lost.Rooms[w.two.String()].Timeline), []string{"lost once"}) {
		t.Fatalf("the first answer from pos lacks bob's message: %s", lost.raw)
	}
	again := slide(t, st, alice.AccessToken, first.Pos, 0, roomListBody([][2]int{{0, 19}}))
	if !slices.Equal(slBodies(again.Rooms[w.two.String()].Timeline), []string{"lost once"}) {
		t.Fatalf("the same pos sent again, after a lost answer: bob's message missing: %s", again.raw)
	}
	next := slide(t, st, alice.AccessToken, again.Pos, 0, roomListBody([][2]int{{0, 19}}))
	if len(next.Rooms) != 0 {
		t.Fatalf("after the retried answer, rooms %v came again", slKeys(next.Rooms))
	}
}

// TestSlidingSync_ToDeviceSinceAfterReset: the to_device extension's since
// acknowledges messages apart from pos (MSC3885, as Synapse and the rust SDK
// use it): a client that lost its pos (M_UNKNOWN_POS, a restart) starts a
// new connection with its last next_batch as since, and does not get the
// messages it already processed again; a message sent since comes once.
func TestSlidingSync_ToDeviceSinceAfterReset(t *testing.T) {
	st := servertest.Start(t)
	alice, bob := st.Register(t, "alice"), st.Register(t, "bob")
	send := func(txn, body string) {
		t.Helper()
		if r := st.Do(t, "PUT", "/_matrix/client/v3/sendToDevice/m.test/"+txn, bob.AccessToken, map[string]any{
			"messages": map[string]any{alice.ID: map[string]any{alice.DeviceID: map[string]any{"body": body}}},
		}); r.Status != http.StatusOK {
			t.Fatalf("to-device: %d %s", r.Status, r.Raw)
		}
	}
	body := func(since string) map[string]any {
		td := map[string]any{"enabled": true, "limit": 100}
		if since != "" {
			td["since"] = since
		}
		return map[string]any{"conn_id": "encryption", "extensions": map[string]any{"to_device": td}}
	}
	bodiesOf := func(r slResponse) []string {
		var out []string
		if r.Extensions.ToDevice != nil {
			for _, ev := range r.Extensions.ToDevice.Events {
				b, _ := ev.Content["body"].(string)
				out = append(out, b)
			}
		}
		return out
	}
	send("t1", "first")
	first := slide(t, st, alice.AccessToken, "", 0, body(""))
	if got := bodiesOf(first); !slices.Equal(got, []string{"first"}) {
		t.Fatalf("first request's to-device messages %v: %s", got, first.raw)
	}
	since := first.Extensions.ToDevice.NextBatch
	send("t2", "second")
	// A new connection (no pos) with the since of the processed answer.
	again := slide(t, st, alice.AccessToken, "", 0, body(since))
	if got := bodiesOf(again); !slices.Equal(got, []string{"second"}) {
		t.Fatalf("a new connection with since %q: to-device messages %v, want only the second: %s", since, got, again.raw)
	}
	// limit caps an answer; the rest come with the next since, on the
	// same connection, each once.
	send("t3", "third")
	send("t4", "fourth")
	lim := body(again.Extensions.ToDevice.NextBatch)
	lim["extensions"].(map[string]any)["to_device"].(map[string]any)["limit"] = 1
	one := slide(t, st, alice.AccessToken, again.Pos, 0, lim)
	if got := bodiesOf(one); !slices.Equal(got, []string{"third"}) {
		t.Fatalf("limit 1: to-device messages %v, want the third: %s", got, one.raw)
	}
	lim = body(one.Extensions.ToDevice.NextBatch)
	two := slide(t, st, alice.AccessToken, one.Pos, 0, lim)
	if got := bodiesOf(two); !slices.Equal(got, []string{"fourth"}) {
		t.Fatalf("after limit 1: to-device messages %v, want the fourth: %s", got, two.raw)
	}
	// A restart with the last since: nothing again.
	last := slide(t, st, alice.AccessToken, "", 0, body(two.Extensions.ToDevice.NextBatch))
	if got := bodiesOf(last); len(got) != 0 {
		t.Fatalf("a new connection after all were processed: to-device messages %v: %s", got, last.raw)
	}
	for _, bad := range []map[string]any{{"enabled": true, "since": "nonsense"}, {"enabled": true, "limit": 0}} {
		r := st.Do(t, "POST", slidingUnstable, alice.AccessToken, map[string]any{"conn_id": "encryption", "extensions": map[string]any{"to_device": bad}})
		if r.Status != http.StatusBadRequest || r.Body["errcode"] != "M_INVALID_PARAM" {
			t.Errorf("to_device %v: %d %s, want 400 M_INVALID_PARAM", bad, r.Status, r.Raw)
		}
	}
}

// TestSlidingSync_BadInput: the MSC's error for an unknown set_presence,
// and the spec's for a body that is not JSON, on both paths; never a 500.
func TestSlidingSync_BadInput(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Register(t, "alice")
	for _, path := range []string{slidingUnstable, slidingV4} {
		r := st.Do(t, "POST", path, alice.AccessToken, map[string]any{"set_presence": "dancing"})
		if r.Status != http.StatusBadRequest || r.Body["errcode"] != "M_INVALID_PARAM" {
			t.Errorf("POST %s with set_presence dancing: %d %s, want 400 M_INVALID_PARAM", path, r.Status, r.Raw)
		}
		r = st.Do(t, "POST", path, alice.AccessToken, "{not json")
		if r.Status != http.StatusBadRequest || r.Body["errcode"] != "M_NOT_JSON" {
			t.Errorf("POST %s with a body that is not JSON: %d %s, want 400 M_NOT_JSON", path, r.Status, r.Raw)
		}
		r = st.Do(t, "POST", path, "", map[string]any{})
		if r.Status != http.StatusUnauthorized || r.Body["errcode"] != "M_MISSING_TOKEN" {
			t.Errorf("POST %s without a token: %d %s, want 401 M_MISSING_TOKEN", path, r.Status, r.Raw)
		}
	}
}
