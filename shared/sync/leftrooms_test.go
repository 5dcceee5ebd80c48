package sync_test

import (
	"net/url"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// leftRoom is rooms.leave[roomID] of a sync body, nil when absent.
func leftRoom(body map[string]any, roomID id.RoomID) map[string]any {
	rooms, _ := body["rooms"].(map[string]any)
	leave, _ := rooms["leave"].(map[string]any)
	room, _ := leave[string(roomID)].(map[string]any)
	return room
}

func timelineIDs(room map[string]any) []string {
	tl, _ := room["timeline"].(map[string]any)
	evs, _ := tl["events"].([]any)
	var out []string
	for _, e := range evs {
		out = append(out, e.(map[string]any)["event_id"].(string))
	}
	return out
}

// TestSync_LeftRoomStopsAtTheLeave: a room the user left shows the room as
// it was when they left, as Synapse does, in an incremental sync after the
// leave and in an initial sync with include_leave: the timeline ends with
// the leave, and neither state nor state_after holds what was set after it.
func TestSync_LeftRoomStopsAtTheLeave(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Client(t, st.Register(t, "alice"))
	bobU := st.Register(t, "bob")
	bob := st.Client(t, bobU)
	room, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Before"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(bg, room.RoomID); err != nil {
		t.Fatal(err)
	}
	say(t, alice, room.RoomID, "before")
	since := rawSync(t, st, bobU.AccessToken, url.Values{}).Body["next_batch"].(string)

	if _, err := bob.LeaveRoom(bg, room.RoomID); err != nil {
		t.Fatal(err)
	}
	// bob's leave event, from the room's state as alice sees it.
	var leave struct{ EventID id.EventID }
	var full []map[string]any
	if err := alice.StateEvent(bg, room.RoomID, event.StateMember, bobU.ID, &struct{}{}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.MakeRequest(bg, "GET", alice.BuildClientURL("v3", "rooms", room.RoomID, "state"), nil, &full); err != nil {
		t.Fatal(err)
	}
	for _, ev := range full {
		if ev["type"] == "m.room.member" && ev["state_key"] == bobU.ID {
			leave.EventID = id.EventID(ev["event_id"].(string))
		}
	}
	if leave.EventID == "" {
		t.Fatalf("no member event of bob in %v", full)
	}
	renamed, err := alice.SendStateEvent(bg, room.RoomID, event.StateRoomName, "", map[string]any{"name": "After"})
	if err != nil {
		t.Fatal(err)
	}
	topic, err := alice.SendStateEvent(bg, room.RoomID, event.StateTopic, "", map[string]any{"topic": "after"})
	if err != nil {
		t.Fatal(err)
	}
	after := say(t, alice, room.RoomID, "after")
	later := []id.EventID{renamed.EventID, topic.EventID, after}

	check := func(what string, q url.Values, stateKey string) {
		t.Helper()
		body := rawSync(t, st, bobU.AccessToken, q).Body
		l := leftRoom(body, room.RoomID)
		if l == nil {
			t.Fatalf("%s: no left room %s: %v", what, room.RoomID, body["rooms"])
		}
		ids := timelineIDs(l)
		if len(ids) == 0 || ids[len(ids)-1] != string(leave.EventID) {
			t.Errorf("%s: timeline %v does not end with the leave %s", what, ids, leave.EventID)
		}
		state, ok := stateList(t, l, stateKey)
		if !ok {
			t.Fatalf("%s: left room has no %s: %v", what, stateKey, l)
		}
		for _, id := range later {
			if hasEventID(state, id) {
				t.Errorf("%s: %s holds %s, sent after the leave: %v", what, stateKey, id, state)
			}
		}
		if since := q.Get("since"); (since == "" || q.Get("full_state") == "true") && !hasState(state, "m.room.create", "") {
			t.Errorf("%s: %s lacks the create event: %v", what, stateKey, state)
		}
	}
	check("incremental", url.Values{"since": {since}}, "state")
	check("incremental state_after", url.Values{"since": {since}, "use_state_after": {"true"}}, "state_after")
	// A timeline of three leaves the create event to state.
	leaveFilter := `{"room":{"include_leave":true,"timeline":{"limit":3}}}`
	check("initial include_leave", url.Values{"filter": {leaveFilter}}, "state")
	check("initial include_leave state_after", url.Values{"filter": {leaveFilter}, "use_state_after": {"true"}}, "state_after")
	check("full_state include_leave", url.Values{"since": {since}, "full_state": {"true"}, "filter": {leaveFilter}}, "state")

	// Without include_leave an initial sync leaves out a room the user left.
	if l := leftRoom(rawSync(t, st, bobU.AccessToken, url.Values{}).Body, room.RoomID); l != nil {
		t.Fatalf("initial sync without include_leave shows the room bob left: %v", l)
	}
}

// TestSync_BannedRoomWithoutIncludeLeave: a room the user was banned from
// comes in an initial sync without include_leave, as Synapse sends it,
// ending with the ban.
func TestSync_BannedRoomWithoutIncludeLeave(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Client(t, st.Register(t, "alice"))
	bobU := st.Register(t, "bob")
	bob := st.Client(t, bobU)
	room, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(bg, room.RoomID); err != nil {
		t.Fatal(err)
	}
	ban, err := alice.SendStateEvent(bg, room.RoomID, event.StateMember, bobU.ID, map[string]any{"membership": "ban", "reason": "spam"})
	if err != nil {
		t.Fatal(err)
	}
	after := say(t, alice, room.RoomID, "after the ban")
	l := leftRoom(rawSync(t, st, bobU.AccessToken, url.Values{}).Body, room.RoomID)
	if l == nil {
		t.Fatal("initial sync without include_leave has no room bob was banned from")
	}
	ids := timelineIDs(l)
	if len(ids) == 0 || ids[len(ids)-1] != string(ban.EventID) {
		t.Fatalf("timeline %v does not end with the ban %s", ids, ban.EventID)
	}
	for _, id := range ids {
		if id == string(after) {
			t.Fatalf("timeline %v holds the message after the ban", ids)
		}
	}
}
