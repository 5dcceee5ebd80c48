package sync_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

var bg = context.Background()

func sync(t *testing.T, c *mautrix.Client, since string, timeout time.Duration, filter string) *mautrix.RespSync {
	t.Helper()
	resp, err := c.FullSyncRequest(bg, mautrix.ReqSync{Since: since, Timeout: int(timeout.Milliseconds()), FilterID: filter})
	if err != nil {
		t.Fatalf("sync since %q: %v", since, err)
	}
	return resp
}

func say(t *testing.T, c *mautrix.Client, room id.RoomID, body string) id.EventID {
	t.Helper()
	resp, err := c.SendText(bg, room, body)
	if err != nil {
		t.Fatalf("send %q: %v", body, err)
	}
	return resp.EventID
}

func bodies(evs []*event.Event) []string {
	var out []string
	for _, ev := range evs {
		if ev.Type == event.EventMessage {
			out = append(out, ev.Content.Raw["body"].(string))
		}
	}
	return out
}

func TestSync_InitialAndIncremental(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Client(t, st.Register(t, "alice"))
	bob := st.Client(t, st.Register(t, "bob"))
	room, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Lobby"})
	if err != nil {
		t.Fatal(err)
	}
	say(t, alice, room.RoomID, "first")

	first := sync(t, alice, "", 0, "")
	joined, ok := first.Rooms.Join[room.RoomID]
	if !ok {
		t.Fatalf("initial sync has no %s: %+v", room.RoomID, first.Rooms)
	}
	if got := bodies(joined.Timeline.Events); len(got) != 1 || got[0] != "first" {
		t.Fatalf("initial timeline messages %v", got)
	}
	// State and timeline together are the whole room: the name is in one.
	named := false
	for _, ev := range append(joined.State.Events, joined.Timeline.Events...) {
		named = named || (ev.Type == event.StateRoomName && ev.Content.Raw["name"] == "Lobby")
	}
	if !named || first.NextBatch == "" {
		t.Fatalf("initial sync lacks the room name or a next_batch")
	}
	if len(first.AccountData.Events) == 0 {
		t.Fatal("initial sync has no account data (push rules)")
	}

	// A waiting sync returns as soon as a message arrives.
	if _, err := bob.JoinRoomByID(bg, room.RoomID); err != nil {
		t.Fatal(err)
	}
	mid := sync(t, alice, first.NextBatch, 0, "")
	got := make(chan *mautrix.RespSync, 1)
	go func() {
		resp, err := alice.FullSyncRequest(bg, mautrix.ReqSync{Since: mid.NextBatch, Timeout: 20000})
		if err != nil {
			t.Error(err)
		}
		got <- resp
	}()
	time.Sleep(300 * time.Millisecond)
	sent := time.Now()
	say(t, bob, room.RoomID, "hello alice")
	var woke *mautrix.RespSync
	select {
	case woke = <-got:
	case <-time.After(15 * time.Second):
		t.Fatal("the waiting sync did not return")
	}
	// Woken, not timed out: the 15 s bound above is under the 20 s timeout
	// and far above any wake-up, however loaded the machine.
	t.Logf("the waiting sync returned %v after the send", time.Since(sent))
	if woke == nil {
		t.FailNow()
	}
	if got := bodies(woke.Rooms.Join[room.RoomID].Timeline.Events); len(got) != 1 || got[0] != "hello alice" {
		t.Fatalf("woken sync messages %v", got)
	}
	// Nothing new: the next sync waits out its timeout and brings nothing.
	quiet := sync(t, alice, woke.NextBatch, 300*time.Millisecond, "")
	if len(quiet.Rooms.Join) != 0 {
		t.Fatalf("a sync with nothing new returned rooms: %+v", quiet.Rooms.Join)
	}
	say(t, bob, room.RoomID, "again")
	again := sync(t, alice, quiet.NextBatch, 0, "")
	if got := bodies(again.Rooms.Join[room.RoomID].Timeline.Events); len(got) != 1 || got[0] != "again" {
		t.Fatalf("sync after the quiet one: %v", got)
	}
}

// TestSync_LimitedTimeline: a gap larger than the timeline limit is marked
// limited, and paging back from prev_batch fills it without gaps or
// duplicates.
func TestSync_LimitedTimeline(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Client(t, st.Register(t, "alice"))
	room, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{})
	if err != nil {
		t.Fatal(err)
	}
	filter, err := alice.CreateFilter(bg, &mautrix.Filter{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: 5}}})
	if err != nil {
		t.Fatal(err)
	}
	start := sync(t, alice, "", 0, filter.FilterID)
	for i := range 23 {
		say(t, alice, room.RoomID, fmt.Sprint("m", i))
	}
	resp := sync(t, alice, start.NextBatch, 0, filter.FilterID)
	tl := resp.Rooms.Join[room.RoomID].Timeline
	if !tl.Limited || len(tl.Events) != 5 || tl.PrevBatch == "" {
		t.Fatalf("timeline: limited %v, %d events, prev_batch %q", tl.Limited, len(tl.Events), tl.PrevBatch)
	}
	all := bodies(tl.Events)
	from := tl.PrevBatch
	for range 10 {
		page, err := alice.Messages(bg, room.RoomID, from, "", mautrix.DirectionBackward, nil, 7)
		if err != nil {
			t.Fatal(err)
		}
		var older []string
		for i := len(page.Chunk) - 1; i >= 0; i-- {
			older = append(older, bodies(page.Chunk[i:i+1])...)
		}
		all = append(older, all...)
		if page.End == "" || len(all) >= 23 {
			break
		}
		from = page.End
	}
	if len(all) != 23 {
		t.Fatalf("read back %d messages: %v", len(all), all)
	}
	for i, b := range all {
		if b != fmt.Sprint("m", i) {
			t.Fatalf("message %d is %s: %v", i, b, all)
		}
	}
}

// TestSync_InviteJoinLeave: an invite shows stripped state with the create
// event; the join shows the room whole; the leave shows in leave.
func TestSync_InviteJoinLeave(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Client(t, st.Register(t, "alice"))
	bob := st.Client(t, st.Register(t, "bob"))
	base := sync(t, bob, "", 0, "")
	room, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Secret", Invite: []id.UserID{bob.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	invited := sync(t, bob, base.NextBatch, 5000, "")
	inv, ok := invited.Rooms.Invite[room.RoomID]
	if !ok {
		t.Fatalf("no invite: %+v", invited.Rooms)
	}
	types := map[string]bool{}
	for _, ev := range inv.State.Events {
		types[ev.Type.Type] = true
	}
	if !types["m.room.create"] || !types["m.room.name"] || !types["m.room.member"] {
		t.Fatalf("invite state types %v", types)
	}
	if _, err := bob.JoinRoomByID(bg, room.RoomID); err != nil {
		t.Fatal(err)
	}
	joined := sync(t, bob, invited.NextBatch, 5000, "")
	j, ok := joined.Rooms.Join[room.RoomID]
	if !ok {
		t.Fatalf("no joined room after the join: %+v", joined.Rooms)
	}
	have := map[string]bool{}
	for _, ev := range append(j.State.Events, j.Timeline.Events...) {
		have[ev.Type.Type] = true
	}
	if !have["m.room.create"] || !have["m.room.power_levels"] || !have["m.room.name"] {
		t.Fatalf("a new member's sync lacks state: %v", have)
	}
	if _, err := bob.LeaveRoom(bg, room.RoomID); err != nil {
		t.Fatal(err)
	}
	left := sync(t, bob, joined.NextBatch, 5000, "")
	l, ok := left.Rooms.Leave[room.RoomID]
	if !ok {
		t.Fatalf("no left room: %+v", left.Rooms)
	}
	last := l.Timeline.Events[len(l.Timeline.Events)-1]
	if last.Type != event.StateMember || last.GetStateKey() != bob.UserID.String() || last.Content.Raw["membership"] != "leave" {
		t.Fatalf("left room's last event %+v", last)
	}
	say(t, alice, room.RoomID, "after bob left")
	after := sync(t, bob, left.NextBatch, 300*time.Millisecond, "")
	if len(after.Rooms.Join)+len(after.Rooms.Leave) != 0 {
		t.Fatalf("bob got news of a room he left: %+v", after.Rooms)
	}
}

// TestSync_Tokens: a token works on another server instance (a cold
// Lambda), and a bad token is M_INVALID_PARAM (another user's is read as a
// time: TestSync_AnotherUsersToken).
func TestSync_Tokens(t *testing.T) {
	st := servertest.Start(t, "CIRRUS_SYNC_POLL_INTERVAL_MS=100")
	au := st.Register(t, "alice")
	alice := st.Client(t, au)
	room, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	first := sync(t, alice, "", 0, "")
	other := st.Twin(t)
	alice2 := other.Client(t, au)
	// Waiting on the other instance, woken by its poll of the stream.
	got := make(chan []string, 1)
	go func() {
		resp, err := alice2.FullSyncRequest(bg, mautrix.ReqSync{Since: first.NextBatch, Timeout: 10000})
		if err != nil {
			t.Error(err)
			got <- nil
			return
		}
		got <- bodies(resp.Rooms.Join[room.RoomID].Timeline.Events)
	}()
	time.Sleep(200 * time.Millisecond)
	sent := time.Now()
	say(t, alice, room.RoomID, "across instances")
	select {
	case b := <-got:
		if len(b) != 1 || b[0] != "across instances" {
			t.Fatalf("other instance's sync: %v", b)
		}
	case <-time.After(8 * time.Second):
		t.Fatal("the other instance's sync did not return")
	}
	// The 8 s bound above is under the sync's 10 s timeout: the poll woke
	// it. How soon is make bench's figure, not a test's.
	t.Logf("woken after %v with a 100 ms poll interval", time.Since(sent))
	for _, since := range []string{"garbage", "s" + url.QueryEscape("{}")} {
		_, err := alice.FullSyncRequest(bg, mautrix.ReqSync{Since: since})
		var httpErr mautrix.HTTPError
		if !errors.As(err, &httpErr) || httpErr.RespError == nil || httpErr.RespError.ErrCode != "M_INVALID_PARAM" || httpErr.Response.StatusCode != http.StatusBadRequest {
			t.Fatalf("since %q: %v, want 400 M_INVALID_PARAM", since, err)
		}
	}
}

// TestSync_Filters: lazy-loaded members are the timeline's senders and the
// user; room, type and event_fields filters apply.
func TestSync_Filters(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Client(t, st.Register(t, "alice"))
	room, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	var people []*mautrix.Client
	for _, name := range []string{"bob", "carol", "dave"} {
		c := st.Client(t, st.Register(t, name))
		if _, err := c.JoinRoomByID(bg, room.RoomID); err != nil {
			t.Fatal(err)
		}
		people = append(people, c)
	}
	for i := range 4 {
		say(t, people[0], room.RoomID, fmt.Sprint("bob ", i))
	}
	lazy := `{"room":{"rooms":["` + room.RoomID.String() + `"],"timeline":{"limit":3},"state":{"lazy_load_members":true}}}`
	resp, err := alice.FullSyncRequest(bg, mautrix.ReqSync{FilterID: lazy})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := resp.Rooms.Join[other.RoomID]; ok || len(resp.Rooms.Join) != 1 {
		t.Fatalf("room filter let through %d rooms", len(resp.Rooms.Join))
	}
	j := resp.Rooms.Join[room.RoomID]
	members := map[string]bool{}
	for _, ev := range j.State.Events {
		if ev.Type == event.StateMember {
			members[ev.GetStateKey()] = true
		}
	}
	if len(members) != 2 || !members[alice.UserID.String()] || !members[people[0].UserID.String()] {
		t.Fatalf("lazy-loaded members %v, want alice and bob", members)
	}
	if j.Summary.JoinedMemberCount == nil || *j.Summary.JoinedMemberCount != 4 || len(j.Summary.Heroes) != 3 {
		t.Fatalf("summary %+v", j.Summary)
	}
	typed := `{"room":{"timeline":{"types":["m.room.member"],"limit":50}},"event_fields":["type","state_key"]}`
	resp, err = alice.FullSyncRequest(bg, mautrix.ReqSync{FilterID: typed})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range resp.Rooms.Join[room.RoomID].Timeline.Events {
		if ev.Type != event.StateMember || ev.ID != "" || ev.Sender != "" {
			t.Fatalf("type filter and event_fields let through %+v", ev)
		}
	}
	if n := len(resp.Rooms.Join[room.RoomID].Timeline.Events); n != 4 {
		t.Fatalf("%d member events in the timeline, want 4", n)
	}
}

// TestSync_AccountData: global and room account data written since the
// token come in the next sync, which they wake.
func TestSync_AccountData(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Client(t, st.Register(t, "alice"))
	room, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{})
	if err != nil {
		t.Fatal(err)
	}
	first := sync(t, alice, "", 0, "")
	got := make(chan *mautrix.RespSync, 1)
	go func() {
		resp, err := alice.FullSyncRequest(bg, mautrix.ReqSync{Since: first.NextBatch, Timeout: 10000})
		if err != nil {
			t.Error(err)
		}
		got <- resp
	}()
	time.Sleep(200 * time.Millisecond)
	if err := alice.SetAccountData(bg, "org.example.theme", map[string]any{"dark": true}); err != nil {
		t.Fatal(err)
	}
	var resp *mautrix.RespSync
	select {
	case resp = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("account data did not wake the sync")
	}
	if resp == nil || len(resp.AccountData.Events) != 1 || resp.AccountData.Events[0].Type.Type != "org.example.theme" {
		t.Fatalf("global account data in sync: %+v", resp)
	}
	if err := alice.SetRoomAccountData(bg, room.RoomID, "org.example.pin", map[string]any{"on": true}); err != nil {
		t.Fatal(err)
	}
	resp = sync(t, alice, resp.NextBatch, 5000, "")
	j, ok := resp.Rooms.Join[room.RoomID]
	if !ok || len(j.AccountData.Events) != 1 || j.AccountData.Events[0].Type.Type != "org.example.pin" {
		t.Fatalf("room account data in sync: %+v", resp.Rooms.Join)
	}
	if len(resp.AccountData.Events) != 0 {
		t.Fatalf("global account data sent again: %+v", resp.AccountData.Events)
	}
}

// TestSync_RejoinAndFullState: a user who leaves and comes back gets the
// room whole again, with what was said while they were away only as
// history allows; full_state gives every joined room whole at once.
func TestSync_RejoinAndFullState(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Client(t, st.Register(t, "alice"))
	bob := st.Client(t, st.Register(t, "bob"))
	room, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Cafe",
		InitialState: []*event.Event{{Type: event.StateHistoryVisibility, StateKey: new(""),
			Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(bg, room.RoomID); err != nil {
		t.Fatal(err)
	}
	base := sync(t, bob, "", 0, "")
	if _, err := bob.LeaveRoom(bg, room.RoomID); err != nil {
		t.Fatal(err)
	}
	say(t, alice, room.RoomID, "while bob was away")
	if _, err := bob.JoinRoomByID(bg, room.RoomID); err != nil {
		t.Fatal(err)
	}
	say(t, alice, room.RoomID, "welcome back")
	back := sync(t, bob, base.NextBatch, 0, "")
	j, ok := back.Rooms.Join[room.RoomID]
	if !ok {
		t.Fatalf("rejoined room missing: %+v", back.Rooms)
	}
	if got := bodies(j.Timeline.Events); len(got) != 1 || got[0] != "welcome back" {
		t.Fatalf("after rejoining bob sees %v, want only what came after his return", got)
	}
	named := false
	for _, ev := range append(j.State.Events, j.Timeline.Events...) {
		named = named || ev.Type == event.StateRoomName
	}
	if !named {
		t.Fatal("the rejoined room comes without its name")
	}
	full, err := bob.FullSyncRequest(bg, mautrix.ReqSync{Since: back.NextBatch, FullState: true, Timeout: 10000})
	if err != nil {
		t.Fatal(err)
	}
	fj, ok := full.Rooms.Join[room.RoomID]
	if !ok {
		t.Fatal("full_state sync lacks the room")
	}
	types := map[string]bool{}
	for _, ev := range append(fj.State.Events, fj.Timeline.Events...) {
		types[ev.Type.Type] = true
	}
	if !types["m.room.create"] || !types["m.room.name"] || !types["m.room.power_levels"] {
		for _, ev := range fj.State.Events {
			t.Logf("state %s %s", ev.Type.Type, ev.ID)
		}
		for _, ev := range fj.Timeline.Events {
			t.Logf("timeline %s %s", ev.Type.Type, ev.ID)
		}
		t.Fatalf("full_state room state types %v", types)
	}
}

// TestSync_FederationFormat: event_format federation gives the events as
// servers exchange them: signed, with their place in the graph.
func TestSync_FederationFormat(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Client(t, st.Register(t, "alice"))
	room, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{})
	if err != nil {
		t.Fatal(err)
	}
	say(t, alice, room.RoomID, "signed")
	resp, err := alice.FullSyncRequest(bg, mautrix.ReqSync{FilterID: `{"event_format":"federation"}`})
	if err != nil {
		t.Fatal(err)
	}
	evs := resp.Rooms.Join[room.RoomID].Timeline.Events
	if last := evs[len(evs)-1]; last.Content.Raw["body"] != "signed" {
		t.Fatalf("last event %+v", last)
	}
	// mautrix keeps only the client fields: read the raw answer too.
	r := st.Do(t, "GET", "/_matrix/client/v3/sync?filter="+url.QueryEscape(`{"event_format":"federation","room":{"timeline":{"limit":1}}}`), alice.AccessToken, nil)
	rooms := r.Body["rooms"].(map[string]any)["join"].(map[string]any)
	tl := rooms[room.RoomID.String()].(map[string]any)["timeline"].(map[string]any)["events"].([]any)
	ev := tl[0].(map[string]any)
	for _, k := range []string{"signatures", "hashes", "prev_events", "auth_events", "depth"} {
		if _, ok := ev[k]; !ok {
			t.Fatalf("federation format lacks %s: %v", k, ev)
		}
	}
}

// TestSync_InlineFilterChecked: an inline ?filter= is a JSON body in the
// query and is checked as one: a key twice, or nesting past the bodies'
// limit, is 400 M_BAD_JSON, whichever part of the filter holds it.
func TestSync_InlineFilterChecked(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Register(t, "alice")
	for _, f := range []string{
		`{"room":{"timeline":{"limit":1}},"room":{}}`,
		`{"event_format":"client","event_format":"federation"}`,
		`{"room":{"include_leave":true,"include_leave":false}}`,
		`{"account_data":` + strings.Repeat(`[`, 200) + strings.Repeat(`]`, 200) + `}`,
	} {
		r := st.Do(t, "GET", "/_matrix/client/v3/sync?filter="+url.QueryEscape(f), alice.AccessToken, nil)
		if r.Status != 400 || r.Body["errcode"] != "M_BAD_JSON" {
			t.Errorf("filter %.60s: %d %s, want 400 M_BAD_JSON", f, r.Status, r.Raw)
		}
	}
}

// TestSync_IgnoredInvites: invites from users bob ignores stay out of his
// syncs, initial and incremental; others' come.
func TestSync_IgnoredInvites(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Client(t, st.Register(t, "alice"))
	bob := st.Client(t, st.Register(t, "bob"))
	carol := st.Client(t, st.Register(t, "carol"))
	if err := bob.SetAccountData(bg, "m.ignored_user_list", map[string]any{"ignored_users": map[string]any{carol.UserID.String(): map[string]any{}}}); err != nil {
		t.Fatal(err)
	}
	invite := func(c *mautrix.Client) id.RoomID {
		t.Helper()
		r, err := c.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		return r.RoomID
	}
	fromCarol := invite(carol)
	first := sync(t, bob, "", 0, "")
	if _, ok := first.Rooms.Invite[fromCarol]; ok {
		t.Fatal("bob's initial sync shows the invite of carol, whom he ignores")
	}
	again, fromAlice := invite(carol), invite(alice)
	next := sync(t, bob, first.NextBatch, 0, "")
	if _, ok := next.Rooms.Invite[again]; ok {
		t.Fatal("bob's incremental sync shows carol's invite")
	}
	if _, ok := next.Rooms.Invite[fromAlice]; !ok {
		t.Fatalf("bob's incremental sync lacks alice's invite: %v", next.Rooms.Invite)
	}
}
