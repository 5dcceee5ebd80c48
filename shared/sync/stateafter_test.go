package sync_test

import (
	"net/http"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// rawSync is GET /sync with the query given, its body decoded.
func rawSync(t *testing.T, st *servertest.Stack, token string, q url.Values) servertest.Reply {
	t.Helper()
	r := st.Do(t, "GET", "/_matrix/client/v3/sync?"+q.Encode(), token, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("sync %s: %d %s", q.Encode(), r.Status, r.Raw)
	}
	return r
}

// joinedRoom is rooms.join[roomID] of a sync body.
func joinedRoom(t *testing.T, body map[string]any, roomID id.RoomID) map[string]any {
	t.Helper()
	rooms, _ := body["rooms"].(map[string]any)
	join, _ := rooms["join"].(map[string]any)
	room, ok := join[string(roomID)].(map[string]any)
	if !ok {
		t.Fatalf("no joined room %s in %v", roomID, body["rooms"])
	}
	return room
}

// stateOf lists the events of a room's state list named key as
// "type|state_key=content field" strings for the fields asked.
type stateEv struct{ Type, StateKey, EventID string }

func stateList(t *testing.T, room map[string]any, key string) ([]stateEv, bool) {
	t.Helper()
	list, ok := room[key].(map[string]any)
	if !ok {
		return nil, false
	}
	evs, ok := list["events"].([]any)
	if !ok {
		t.Fatalf("%s has no events array: %v", key, list)
	}
	out := []stateEv{}
	for _, e := range evs {
		ev := e.(map[string]any)
		sk, _ := ev["state_key"].(string)
		eid, _ := ev["event_id"].(string)
		out = append(out, stateEv{Type: ev["type"].(string), StateKey: sk, EventID: eid})
	}
	return out, true
}

func hasState(list []stateEv, typ, key string) bool {
	for _, ev := range list {
		if ev.Type == typ && ev.StateKey == key {
			return true
		}
	}
	return false
}

func hasEventID(list []stateEv, eventID id.EventID) bool {
	for _, ev := range list {
		if ev.EventID == string(eventID) {
			return true
		}
	}
	return false
}

// TestSync_UseStateAfter: with use_state_after=true, joined rooms carry
// the state up to the end of the timeline in state_after, a delta since
// the token like state, and no state; without it, state as before.
func TestSync_UseStateAfter(t *testing.T) {
	st := servertest.Start(t)
	aliceU := st.Register(t, "alice")
	alice := st.Client(t, aliceU)
	room, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "One"})
	if err != nil {
		t.Fatal(err)
	}
	tok := aliceU.AccessToken

	first := rawSync(t, st, tok, url.Values{"use_state_after": {"true"}})
	j := joinedRoom(t, first.Body, room.RoomID)
	if _, ok := j["state"]; ok {
		t.Fatalf("initial sync with use_state_after has state: %v", j["state"])
	}
	after, ok := stateList(t, j, "state_after")
	if !ok {
		t.Fatalf("initial sync with use_state_after has no state_after: %v", j)
	}
	// The whole state at the end of the timeline, the timeline's own state
	// events included.
	for _, typ := range []string{"m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.name"} {
		if !hasState(after, typ, "") {
			t.Errorf("initial state_after lacks %s: %v", typ, after)
		}
	}
	if !hasState(after, "m.room.member", aliceU.ID) {
		t.Errorf("initial state_after lacks alice's member event: %v", after)
	}
	since := first.Body["next_batch"].(string)

	// A name change inside the timeline: state_after holds it, and only
	// what changed since the token.
	renamed, err := alice.SendStateEvent(bg, room.RoomID, event.StateRoomName, "", map[string]any{"name": "Two"})
	if err != nil {
		t.Fatal(err)
	}
	say(t, alice, room.RoomID, "after the rename")
	inc := rawSync(t, st, tok, url.Values{"use_state_after": {"true"}, "since": {since}})
	j = joinedRoom(t, inc.Body, room.RoomID)
	if _, ok := j["state"]; ok {
		t.Fatalf("incremental sync with use_state_after has state: %v", j["state"])
	}
	after, ok = stateList(t, j, "state_after")
	if !ok {
		t.Fatalf("incremental sync has no state_after: %v", j)
	}
	if len(after) != 1 || after[0].EventID != string(renamed.EventID) {
		t.Fatalf("incremental state_after = %v, want only the rename %s", after, renamed.EventID)
	}

	// The same sync without the parameter: state, which leaves out what the
	// timeline carries, and no state_after.
	old := rawSync(t, st, tok, url.Values{"since": {since}})
	j = joinedRoom(t, old.Body, room.RoomID)
	if _, ok := j["state_after"]; ok {
		t.Fatalf("sync without use_state_after has state_after")
	}
	state, ok := stateList(t, j, "state")
	if !ok || len(state) != 0 {
		t.Fatalf("sync without use_state_after: state = %v (present %v), want empty", state, ok)
	}

	// A limited timeline: the topic set before the gap comes in
	// state_after, as does the rename after it.
	since = inc.Body["next_batch"].(string)
	topic, err := alice.SendStateEvent(bg, room.RoomID, event.StateTopic, "", map[string]any{"topic": "gap"})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"a", "b", "c"} {
		say(t, alice, room.RoomID, b)
	}
	last, err := alice.SendStateEvent(bg, room.RoomID, event.StateRoomName, "", map[string]any{"name": "Three"})
	if err != nil {
		t.Fatal(err)
	}
	lim := rawSync(t, st, tok, url.Values{"use_state_after": {"true"}, "since": {since},
		"filter": {`{"room":{"timeline":{"limit":2}}}`}})
	j = joinedRoom(t, lim.Body, room.RoomID)
	if tl := j["timeline"].(map[string]any); tl["limited"] != true {
		t.Fatalf("timeline not limited: %v", tl)
	}
	after, _ = stateList(t, j, "state_after")
	if len(after) != 2 || !hasEventID(after, topic.EventID) || !hasEventID(after, last.EventID) {
		t.Fatalf("limited state_after = %v, want the topic %s and the last name %s", after, topic.EventID, last.EventID)
	}

	// MSC4222's unstable name is answered under its unstable name.
	un := rawSync(t, st, tok, url.Values{"org.matrix.msc4222.use_state_after": {"true"}})
	j = joinedRoom(t, un.Body, room.RoomID)
	if _, ok := j["state"]; ok {
		t.Fatal("unstable use_state_after: state present")
	}
	if after, ok := stateList(t, j, "org.matrix.msc4222.state_after"); !ok || !hasState(after, "m.room.name", "") {
		t.Fatalf("unstable use_state_after: org.matrix.msc4222.state_after = %v (present %v)", after, ok)
	}

	bad := st.Do(t, "GET", "/_matrix/client/v3/sync?use_state_after=yes", tok, nil)
	if bad.Status != http.StatusBadRequest || bad.Body["errcode"] != "M_INVALID_PARAM" {
		t.Fatalf("use_state_after=yes: %d %s", bad.Status, bad.Raw)
	}
}
