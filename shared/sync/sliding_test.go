package sync_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

const (
	ssUnstable = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
	ssV4       = "/_matrix/client/v4/sync"
)

// ssRoom is the part of a sliding sync room the tests read.
type ssRoom struct {
	Name           string            `json:"name"`
	Initial        bool              `json:"initial"`
	Timeline       []json.RawMessage `json:"timeline"`
	TimelineEvents []json.RawMessage `json:"timeline_events"`
	RequiredState  []json.RawMessage `json:"required_state"`
	PrevBatch      string            `json:"prev_batch"`
	NumLive        *int              `json:"num_live"`
	JoinedCount    *int              `json:"joined_count"`
	InvitedCount   *int              `json:"invited_count"`
	BumpStamp      int64             `json:"bump_stamp"`
	Heroes         []struct {
		UserID string `json:"user_id"`
	} `json:"heroes"`
	InviteState   []json.RawMessage `json:"invite_state"`
	StrippedState []json.RawMessage `json:"stripped_state"`
	Membership    string            `json:"membership"`
	IsDM          bool              `json:"is_dm"`
	Expanded      bool              `json:"expanded_timeline"`
}

type ssResp struct {
	Pos   string `json:"pos"`
	Lists map[string]struct {
		Count int `json:"count"`
		Ops   []struct {
			RoomIDs []string `json:"room_ids"`
		} `json:"ops"`
	} `json:"lists"`
	Rooms      map[string]ssRoom `json:"rooms"`
	Extensions struct {
		ToDevice *struct {
			NextBatch string            `json:"next_batch"`
			Events    []json.RawMessage `json:"events"`
		} `json:"to_device"`
		E2EE *struct {
			Counts   map[string]int `json:"device_one_time_keys_count"`
			Fallback []string       `json:"device_unused_fallback_key_types"`
			Lists    *struct {
				Changed []string `json:"changed"`
			} `json:"device_lists"`
		} `json:"e2ee"`
	} `json:"extensions"`
}

// slide posts a sliding sync request to path of base as the user; pos and
// timeout go in the query string on the unstable path, in the body on v4.
func ssSlide(t *testing.T, base, path string, u servertest.User, pos string, timeout int, body map[string]any) ssResp {
	t.Helper()
	r := ssSlideRaw(t, base, path, u, pos, timeout, body)
	if r.Status != http.StatusOK {
		t.Fatalf("sliding sync: %d %s", r.Status, r.Raw)
	}
	var out ssResp
	if err := json.Unmarshal(r.Raw, &out); err != nil {
		t.Fatal(err)
	}
	if out.Pos == "" {
		t.Fatalf("no pos: %s", r.Raw)
	}
	return out
}

func ssSlideRaw(t *testing.T, base, path string, u servertest.User, pos string, timeout int, body map[string]any) servertest.Reply {
	t.Helper()
	doc := map[string]any{}
	for k, v := range body {
		doc[k] = v
	}
	q := url.Values{}
	if path == ssV4 {
		if pos != "" {
			doc["pos"] = pos
		}
		doc["timeout"] = timeout
	} else {
		if pos != "" {
			q.Set("pos", pos)
		}
		q.Set("timeout", fmt.Sprint(timeout))
	}
	return servertest.Call(t, "POST", base+path+"?"+q.Encode(), u.AccessToken, doc)
}

func (r ssRoom) timeline() []json.RawMessage {
	return append(slices.Clone(r.Timeline), r.TimelineEvents...)
}

func ssBodies(evs []json.RawMessage) []string {
	var out []string
	for _, raw := range evs {
		var ev struct {
			Type    string `json:"type"`
			Content struct {
				Body string `json:"body"`
			} `json:"content"`
		}
		_ = json.Unmarshal(raw, &ev)
		if ev.Type == "m.room.message" {
			out = append(out, ev.Content.Body)
		}
	}
	return out
}

func ssStateKeys(evs []json.RawMessage, typ string) []string {
	var out []string
	for _, raw := range evs {
		var ev struct {
			Type     string `json:"type"`
			StateKey string `json:"state_key"`
		}
		_ = json.Unmarshal(raw, &ev)
		if ev.Type == typ {
			out = append(out, ev.StateKey)
		}
	}
	slices.Sort(out)
	return out
}

func ssRoomOf(t *testing.T, c *mautrix.Client, name string, invite ...id.UserID) id.RoomID {
	t.Helper()
	r, err := c.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: name, Invite: invite})
	if err != nil {
		t.Fatal(err)
	}
	return r.RoomID
}

func ssList(limit int, state any) map[string]any {
	return map[string]any{"lists": map[string]any{"all": map[string]any{
		"ranges": [][]int{{0, 9}}, "timeline_limit": limit, "required_state": state,
	}}}
}

func TestSliding_ListsIncrementalAndPaths(t *testing.T) {
	st := servertest.Start(t)
	au, bu, cu := st.Register(t, "alice"), st.Register(t, "bob"), st.Register(t, "carol")
	alice, bob, carol := st.Client(t, au), st.Client(t, bu), st.Client(t, cu)
	older := ssRoomOf(t, alice, "Older")
	newer := ssRoomOf(t, alice, "Newer")
	for _, c := range []*mautrix.Client{bob, carol} {
		if _, err := c.JoinRoomByID(bg, newer); err != nil {
			t.Fatal(err)
		}
	}
	say(t, alice, older, "old news")
	time.Sleep(5 * time.Millisecond)
	say(t, bob, newer, "from bob")
	say(t, alice, newer, "from alice")

	state := [][]string{{"m.room.name", ""}, {"m.room.member", "$LAZY"}, {"m.room.member", "$ME"}}
	first := ssSlide(t, st.URL, ssUnstable, au, "", 0, ssList(2, state))
	if l := first.Lists["all"]; l.Count != 2 || len(l.Ops) != 1 || !slices.Equal(l.Ops[0].RoomIDs, []string{newer.String(), older.String()}) {
		t.Fatalf("list: %+v", first.Lists)
	}
	r := first.Rooms[newer.String()]
	if !r.Initial || r.Name != "Newer" || r.PrevBatch == "" || r.JoinedCount == nil || *r.JoinedCount != 3 || r.BumpStamp == 0 {
		t.Fatalf("newer room: %+v", r)
	}
	if got := ssBodies(r.timeline()); !slices.Equal(got, []string{"from bob", "from alice"}) {
		t.Fatalf("timeline: %v", got)
	}
	// $LAZY: bob and alice sent the timeline; $ME: alice; not carol, whose
	// join is before it.
	if got := ssStateKeys(r.RequiredState, "m.room.member"); !slices.Equal(got, []string{au.ID, bu.ID}) {
		t.Fatalf("members: %v", got)
	}
	if got := ssStateKeys(r.RequiredState, "m.room.name"); len(got) != 1 {
		t.Fatalf("required_state has no name: %v", r.RequiredState)
	}
	if first.Rooms[older.String()].BumpStamp >= r.BumpStamp {
		t.Fatal("bump stamps are not by recency")
	}
	// prev_batch is a token /messages takes.
	m := st.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(newer.String())+"/messages?dir=b&from="+url.QueryEscape(r.PrevBatch), au.AccessToken, nil)
	if m.Status != http.StatusOK {
		t.Fatalf("messages from prev_batch: %d %s", m.Status, m.Raw)
	}

	// Nothing new: an immediate answer holds no rooms.
	quiet := ssSlide(t, st.URL, ssUnstable, au, first.Pos, 0, ssList(2, state))
	if len(quiet.Rooms) != 0 {
		t.Fatalf("quiet answer has rooms: %v", quiet.Rooms)
	}
	// A message in the older room: only that room, now first.
	say(t, alice, older, "newest")
	inc := ssSlide(t, st.URL, ssUnstable, au, quiet.Pos, 0, ssList(2, state))
	if len(inc.Rooms) != 1 {
		t.Fatalf("incremental rooms: %v", inc.Rooms)
	}
	o := inc.Rooms[older.String()]
	if o.Initial || !slices.Equal(ssBodies(o.timeline()), []string{"newest"}) || o.NumLive == nil || *o.NumLive != 1 {
		t.Fatalf("incremental room: %+v", o)
	}
	if l := inc.Lists["all"]; l.Count != 2 || !slices.Equal(l.Ops[0].RoomIDs, []string{older.String(), newer.String()}) {
		t.Fatalf("list after the message: %+v", inc.Lists)
	}

	// The v4 path, on a connection of its own, with the MSC's names.
	v4 := ssSlide(t, st.URL, ssV4, au, "", 0, map[string]any{
		"conn_id": "v4",
		"lists": map[string]any{"all": map[string]any{
			"range": []int{0, 0}, "timeline_limit": 1,
			"required_state": map[string]any{"include": []map[string]any{{"type": "m.room.name"}}, "lazy_members": true},
		}},
	})
	if len(v4.Rooms) != 1 {
		t.Fatalf("v4 rooms: %v", v4.Rooms)
	}
	w := v4.Rooms[older.String()]
	if w.Membership != "join" || !w.Initial || !slices.Equal(ssBodies(w.TimelineEvents), []string{"newest"}) || len(w.Timeline) != 0 {
		t.Fatalf("v4 room: %+v", w)
	}
	if got := ssStateKeys(w.RequiredState, "m.room.member"); !slices.Equal(got, []string{au.ID}) {
		t.Fatalf("v4 lazy members: %v", got)
	}
	// Widening the range sends the room not sent yet, at once.
	v4b := ssSlide(t, st.URL, ssV4, au, v4.Pos, 20000, map[string]any{
		"conn_id": "v4",
		"lists":   map[string]any{"all": map[string]any{"range": []int{0, 9}, "timeline_limit": 1}},
	})
	if len(v4b.Rooms) != 1 || !v4b.Rooms[newer.String()].Initial {
		t.Fatalf("widened range: %v", v4b.Rooms)
	}
	// The answer was lost: the client retries the same pos and gets the
	// room again.
	retry := ssSlide(t, st.URL, ssV4, au, v4.Pos, 0, map[string]any{
		"conn_id": "v4",
		"lists":   map[string]any{"all": map[string]any{"range": []int{0, 9}, "timeline_limit": 1}},
	})
	if len(retry.Rooms) != 1 || !retry.Rooms[newer.String()].Initial {
		t.Fatalf("retried pos: %v", retry.Rooms)
	}
	// Subscribing with a larger timeline_limit sends the latest events
	// again, as an expanded timeline; the room is not new to the client.
	exp := ssSlide(t, st.URL, ssV4, au, retry.Pos, 20000, map[string]any{
		"conn_id":            "v4",
		"lists":              map[string]any{"all": map[string]any{"range": []int{0, 9}, "timeline_limit": 1}},
		"room_subscriptions": map[string]any{older.String(): map[string]any{"timeline_limit": 10}},
	})
	e := exp.Rooms[older.String()]
	if len(exp.Rooms) != 1 || e.Initial || !e.Expanded || !slices.Equal(ssBodies(e.TimelineEvents), []string{"old news", "newest"}) {
		t.Fatalf("expanded timeline: %+v", exp.Rooms)
	}

	// A new sender in a held room: $LAZY sends her member event, which
	// did not change.
	say(t, carol, newer, "carol speaks")
	inc2 := ssSlide(t, st.URL, ssUnstable, au, inc.Pos, 20000, ssList(2, state))
	if got := ssStateKeys(inc2.Rooms[newer.String()].RequiredState, "m.room.member"); !slices.Contains(got, cu.ID) {
		t.Fatalf("lazy members of an incremental answer: %v", got)
	}
}

func TestSliding_SubscriptionInviteTwinUnknownPos(t *testing.T) {
	st := servertest.Start(t)
	au, bu := st.Register(t, "alice"), st.Register(t, "bob")
	alice, bob := st.Client(t, au), st.Client(t, bu)
	shared := ssRoomOf(t, bob, "Shared")
	if _, err := alice.JoinRoomByID(bg, shared); err != nil {
		t.Fatal(err)
	}
	say(t, bob, shared, "hello")
	invite := ssRoomOf(t, bob, "Invitation", id.UserID(au.ID))

	body := map[string]any{
		"lists": map[string]any{"invites": map[string]any{
			"ranges": [][]int{{0, 9}}, "timeline_limit": 0, "required_state": [][]string{},
			"filters": map[string]any{"is_invite": true},
		}},
		"room_subscriptions": map[string]any{shared.String(): map[string]any{
			"timeline_limit": 5, "required_state": [][]string{{"*", "*"}},
		}},
	}
	first := ssSlide(t, st.URL, ssUnstable, au, "", 0, body)
	if first.Lists["invites"].Count != 1 {
		t.Fatalf("invites list: %+v", first.Lists)
	}
	inv := first.Rooms[invite.String()]
	if len(inv.InviteState) == 0 || len(inv.timeline()) != 0 {
		t.Fatalf("invite: %+v", inv)
	}
	sub := first.Rooms[shared.String()]
	if !slices.Equal(ssBodies(sub.timeline()), []string{"hello"}) || !slices.Equal(ssStateKeys(sub.RequiredState, "m.room.member"), []string{au.ID, bu.ID}) {
		t.Fatalf("subscription: %+v", sub)
	}

	// The pos works on another instance, which wakes on the message.
	twin := st.Twin(t)
	got := make(chan servertest.Reply, 1)
	go func() {
		got <- ssSlideRaw(t, twin.URL, ssUnstable, au, first.Pos, 20000, body)
	}()
	time.Sleep(300 * time.Millisecond)
	say(t, bob, shared, "wake up")
	var reply servertest.Reply
	select {
	case reply = <-got:
	case <-time.After(time.Minute):
		t.Fatal("the waiting sliding sync did not return")
	}
	var woke ssResp
	if err := json.Unmarshal(reply.Raw, &woke); reply.Status != http.StatusOK || err != nil {
		t.Fatalf("woken answer: %d %s", reply.Status, reply.Raw)
	}
	// The answer that woke may hold only earlier news: poll on until the
	// message comes, the minute only bounding a hang.
	for deadline := time.Now().Add(time.Minute); ; {
		if slices.Contains(ssBodies(woke.Rooms[shared.String()].timeline()), "wake up") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the message never came: %+v", woke.Rooms)
		}
		woke = ssSlide(t, twin.URL, ssUnstable, au, woke.Pos, 20000, body)
	}

	// Two answers on, the first pos is too old to retry.
	say(t, bob, shared, "one more")
	for deadline := time.Now().Add(time.Minute); ; {
		woke = ssSlide(t, st.URL, ssUnstable, au, woke.Pos, 20000, body)
		if slices.Contains(ssBodies(woke.Rooms[shared.String()].timeline()), "one more") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the message never came: %+v", woke.Rooms)
		}
	}
	// An old pos (the connection moved on), a bad one, another conn_id's.
	for _, pos := range []string{first.Pos, "garbage", woke.Pos + "x"} {
		r := ssSlideRaw(t, st.URL, ssUnstable, au, pos, 0, body)
		if r.Status != http.StatusBadRequest || r.Body["errcode"] != "M_UNKNOWN_POS" {
			t.Fatalf("pos %q: %d %s", pos, r.Status, r.Raw)
		}
	}
	r := ssSlideRaw(t, st.URL, ssV4, au, woke.Pos, 0, map[string]any{"conn_id": "other"})
	if r.Status != http.StatusBadRequest || r.Body["errcode"] != "M_UNKNOWN_POS" {
		t.Fatalf("another connection's pos: %d %s", r.Status, r.Raw)
	}
	// Bob cannot use alice's pos.
	r = ssSlideRaw(t, st.URL, ssUnstable, bu, woke.Pos, 0, body)
	if r.Status != http.StatusBadRequest || r.Body["errcode"] != "M_UNKNOWN_POS" {
		t.Fatalf("another user's pos: %d %s", r.Status, r.Raw)
	}
}

func TestSliding_Extensions(t *testing.T) {
	st := servertest.Start(t)
	au, bu := st.Register(t, "alice"), st.Register(t, "bob")
	bob := st.Client(t, bu)
	body := map[string]any{"extensions": map[string]any{
		"to_device": map[string]any{"enabled": true},
		"e2ee":      map[string]any{"enabled": true},
	}}
	first := ssSlide(t, st.URL, ssUnstable, au, "", 0, body)
	if first.Extensions.ToDevice == nil || first.Extensions.E2EE == nil || first.Extensions.E2EE.Counts == nil {
		t.Fatalf("extensions: %+v", first.Extensions)
	}
	_, err := bob.SendToDevice(bg, event.NewEventType("org.example.ping"), &mautrix.ReqSendToDevice{
		Messages: map[id.UserID]map[id.DeviceID]*event.Content{
			id.UserID(au.ID): {id.DeviceID(au.DeviceID): {Raw: map[string]any{"n": 1}}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	next := ssSlide(t, st.URL, ssUnstable, au, first.Pos, 20000, body)
	if next.Extensions.ToDevice == nil || len(next.Extensions.ToDevice.Events) != 1 || next.Extensions.ToDevice.NextBatch == "" {
		t.Fatalf("to_device: %+v", next.Extensions.ToDevice)
	}
	// The next request acknowledges it: it comes no more.
	again := ssSlide(t, st.URL, ssUnstable, au, next.Pos, 0, body)
	if len(again.Extensions.ToDevice.Events) != 0 {
		t.Fatalf("to_device delivered twice: %s", again.Extensions.ToDevice.Events)
	}
}

func TestSliding_BadInput(t *testing.T) {
	st := servertest.Start(t)
	au := st.Register(t, "alice")
	for _, c := range []struct {
		body any
		code string
	}{
		{`{"lists": 5}`, "M_BAD_JSON"},
		{`{"lists": {"a": {"ranges": [[3, 1]], "timeline_limit": 1}}}`, "M_INVALID_PARAM"},
		{`{"lists": {"a": {"range": [0], "timeline_limit": 1}}}`, "M_INVALID_PARAM"},
		{`{"lists": {"a": {"timeline_limit": -1}}}`, "M_INVALID_PARAM"},
		{`{"lists": {"a": {"required_state": [["m.room.name"]]}}}`, "M_BAD_JSON"},
		{`{"room_subscriptions": {"not a room": {}}}`, "M_INVALID_PARAM"},
		{`{"set_presence": "busy"}`, "M_INVALID_PARAM"},
		{`{"timeout": -5}`, "M_INVALID_PARAM"},
	} {
		r := servertest.Call(t, "POST", st.URL+ssV4, au.AccessToken, c.body)
		if r.Status != http.StatusBadRequest || r.Body["errcode"] != c.code {
			t.Errorf("%s: %d %s, want %s", c.body, r.Status, r.Raw, c.code)
		}
	}
	r := servertest.Call(t, "POST", st.URL+ssUnstable+"?timeout=soon", au.AccessToken, `{}`)
	if r.Status != http.StatusBadRequest || r.Body["errcode"] != "M_INVALID_PARAM" {
		t.Errorf("bad timeout: %d %s", r.Status, r.Raw)
	}
}

// A request that subscribes to one room waits on through a message in
// another room, and answers with the message in its own.
func TestSliding_WaitsThroughOtherRooms(t *testing.T) {
	st := servertest.Start(t)
	au := st.Register(t, "alice")
	alice := st.Client(t, au)
	mine := ssRoomOf(t, alice, "Mine")
	other := ssRoomOf(t, alice, "Other")
	body := map[string]any{"room_subscriptions": map[string]any{mine.String(): map[string]any{"timeline_limit": 5}}}
	first := ssSlide(t, st.URL, ssUnstable, au, "", 0, body)
	if len(first.Rooms) != 1 {
		t.Fatalf("first: %v", first.Rooms)
	}
	got := make(chan servertest.Reply, 1)
	go func() { got <- ssSlideRaw(t, st.URL, ssUnstable, au, first.Pos, 20000, body) }()
	time.Sleep(300 * time.Millisecond)
	say(t, alice, other, "elsewhere")
	time.Sleep(300 * time.Millisecond)
	say(t, alice, mine, "here")
	var reply servertest.Reply
	select {
	case reply = <-got:
	case <-time.After(time.Minute):
		t.Fatal("the waiting request did not return")
	}
	var r ssResp
	if err := json.Unmarshal(reply.Raw, &r); err != nil || reply.Status != http.StatusOK {
		t.Fatalf("%d %s", reply.Status, reply.Raw)
	}
	if len(r.Rooms) != 1 || !slices.Equal(ssBodies(r.Rooms[mine.String()].timeline()), []string{"here"}) {
		t.Fatalf("answer: %s", reply.Raw)
	}
}

func TestSliding_FiltersAndAccountData(t *testing.T) {
	st := servertest.Start(t)
	au, bu := st.Register(t, "alice"), st.Register(t, "bob")
	alice, bob := st.Client(t, au), st.Client(t, bu)
	plain := ssRoomOf(t, alice, "Plain")
	dm, err := bob.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true, Invite: []id.UserID{id.UserID(au.ID)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.JoinRoomByID(bg, dm.RoomID); err != nil {
		t.Fatal(err)
	}
	if err := alice.SetAccountData(bg, "m.direct", map[string][]string{bu.ID: {dm.RoomID.String()}}); err != nil {
		t.Fatal(err)
	}
	enc, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "private_chat", InitialState: []*event.Event{{
		Type: event.StateEncryption, Content: event.Content{Raw: map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	space, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "private_chat", CreationContent: map[string]any{"type": "m.space"}})
	if err != nil {
		t.Fatal(err)
	}
	child := map[string]any{"via": []string{"example.org"}}
	if _, err := alice.SendStateEvent(bg, space.RoomID, event.StateSpaceChild, enc.RoomID.String(), child); err != nil {
		t.Fatal(err)
	}
	if err := alice.SetRoomAccountData(bg, plain, "org.example.note", map[string]any{"n": 1}); err != nil {
		t.Fatal(err)
	}
	list := func(filters map[string]any) map[string]any {
		return map[string]any{"ranges": [][]int{{0, 9}}, "timeline_limit": 1, "required_state": [][]string{}, "filters": filters}
	}
	body := map[string]any{
		"lists": map[string]any{
			"dms":    list(map[string]any{"is_dm": true}),
			"enc":    list(map[string]any{"is_encrypted": true}),
			"spaces": list(map[string]any{"room_types": []any{"m.space"}}),
			"rooms":  list(map[string]any{"not_room_types": []any{"m.space"}, "is_dm": false}),
			"kids":   list(map[string]any{"spaces": []string{space.RoomID.String()}}),
		},
		"extensions": map[string]any{"account_data": map[string]any{"enabled": true}},
	}
	r := ssSlideRaw(t, st.URL, ssUnstable, au, "", 0, body)
	if r.Status != http.StatusOK {
		t.Fatalf("%d %s", r.Status, r.Raw)
	}
	var resp struct {
		Lists map[string]struct {
			Ops []struct {
				RoomIDs []string `json:"room_ids"`
			} `json:"ops"`
		} `json:"lists"`
		Rooms      map[string]ssRoom `json:"rooms"`
		Extensions struct {
			AccountData struct {
				Global []struct {
					Type string `json:"type"`
				} `json:"global"`
				Rooms map[string][]struct {
					Type string `json:"type"`
				} `json:"rooms"`
			} `json:"account_data"`
		} `json:"extensions"`
	}
	if err := json.Unmarshal(r.Raw, &resp); err != nil {
		t.Fatal(err)
	}
	ids := func(name string) []string {
		out := resp.Lists[name].Ops[0].RoomIDs
		slices.Sort(out)
		return out
	}
	want := func(rooms ...id.RoomID) []string {
		var out []string
		for _, r := range rooms {
			out = append(out, r.String())
		}
		slices.Sort(out)
		return out
	}
	for name, w := range map[string][]string{
		"dms": want(dm.RoomID), "enc": want(enc.RoomID), "spaces": want(space.RoomID),
		"rooms": want(plain, enc.RoomID), "kids": want(enc.RoomID),
	} {
		if got := ids(name); !slices.Equal(got, w) {
			t.Errorf("list %s: %v, want %v", name, got, w)
		}
	}
	if !resp.Rooms[dm.RoomID.String()].IsDM || resp.Rooms[plain.String()].IsDM {
		t.Errorf("is_dm: %+v", resp.Rooms)
	}
	global := false
	for _, ev := range resp.Extensions.AccountData.Global {
		global = global || ev.Type == "m.direct"
	}
	note := resp.Extensions.AccountData.Rooms[plain.String()]
	if !global || len(note) != 1 || note[0].Type != "org.example.note" {
		t.Errorf("account_data: %s", r.Raw)
	}

	// The room stops being a DM: it comes again, no longer is_dm.
	var pos struct {
		Pos string `json:"pos"`
	}
	_ = json.Unmarshal(r.Raw, &pos)
	if err := alice.SetAccountData(bg, "m.direct", map[string][]string{}); err != nil {
		t.Fatal(err)
	}
	next := ssSlide(t, st.URL, ssUnstable, au, pos.Pos, 20000, body)
	for deadline := time.Now().Add(time.Minute); ; {
		if _, ok := next.Rooms[dm.RoomID.String()]; ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the DM room did not come again: %v", next.Rooms)
		}
		next = ssSlide(t, st.URL, ssUnstable, au, next.Pos, 20000, body)
	}
	if got := next.Rooms[dm.RoomID.String()]; got.IsDM || !got.Initial {
		t.Fatalf("former DM: %+v", got)
	}
}
