package federation_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestDendrite_AliasStateLeave: a Cirrus user joins a Dendrite 0.13.8 room
// by its alias alone (/query/directory asked of Dendrite), state changes
// made on each side (power levels, a topic, a name) are seen on the other, and her leave reaches Dendrite.
func TestDendrite_AliasStateLeave(t *testing.T) {
	st, d := withDendrite(t)
	alice := st.Member(t, "alice")
	bobToken := d.Register(t, "bob", "correct horse battery staple")
	dendrite := func(method, path string, body any) (int, map[string]any) {
		t.Helper()
		status, raw := d.Do(t, method, path, bobToken, body)
		var out map[string]any
		_ = json.Unmarshal([]byte(raw), &out)
		return status, out
	}
	status, created := dendrite("POST", "/_matrix/client/v3/createRoom", map[string]any{
		"preset": "public_chat", "room_alias_name": "dlobby", "room_version": "10", "topic": "first topic"})
	room, _ := created["room_id"].(string)
	if status != http.StatusOK || room == "" {
		t.Fatalf("Dendrite createRoom: %d %v\n%s", status, created, d.LogTail())
	}
	alias := "#dlobby:" + d.Name
	joined, err := alice.JoinRoom(background, alias, nil)
	if err != nil {
		t.Fatalf("alice joins %s: %v\n%s", alias, err, d.LogTail())
	}
	if string(joined.RoomID) != room {
		t.Fatalf("the alias led to %s, not %s", joined.RoomID, room)
	}
	roomPath := "/_matrix/client/v3/rooms/" + url.PathEscape(room)

	// bob gives alice the power to change state: Cirrus applies it.
	_, pl := dendrite("GET", roomPath+"/state/m.room.power_levels", nil)
	users, _ := pl["users"].(map[string]any)
	users[alice.User.ID] = 50
	if status, out := dendrite("PUT", roomPath+"/state/m.room.power_levels", pl); status != http.StatusOK {
		t.Fatalf("bob raises alice: %d %v", status, out)
	}
	waitFor(t, "alice's power level on Cirrus", func() ([]string, bool) {
		var pl struct {
			Users map[string]int `json:"users"`
		}
		if err := alice.StateEvent(background, id.RoomID(room), event.StatePowerLevels, "", &pl); err != nil {
			return []string{err.Error()}, false
		}
		return nil, pl.Users[alice.User.ID] == 50
	}, d.LogTail)

	// alice's topic, made on Cirrus, on Dendrite.
	if _, err := alice.SendStateEvent(background, id.RoomID(room), event.StateTopic, "", map[string]any{"topic": "set on cirrus"}); err != nil {
		t.Fatalf("alice sets the topic: %v", err)
	}
	waitFor(t, "alice's topic on Dendrite", func() ([]string, bool) {
		_, topic := dendrite("GET", roomPath+"/state/m.room.topic", nil)
		s, _ := topic["topic"].(string)
		return []string{s}, s == "set on cirrus"
	}, d.LogTail)

	// bob's room name, made on Dendrite, on Cirrus.
	if status, out := dendrite("PUT", roomPath+"/state/m.room.name", map[string]any{"name": "named on dendrite"}); status != http.StatusOK {
		t.Fatalf("bob names the room: %d %v", status, out)
	}
	waitFor(t, "bob's room name on Cirrus", func() ([]string, bool) {
		var name struct {
			Name string `json:"name"`
		}
		if err := alice.StateEvent(background, id.RoomID(room), event.StateRoomName, "", &name); err != nil {
			return []string{err.Error()}, false
		}
		return []string{name.Name}, name.Name == "named on dendrite"
	}, d.LogTail)

	// alice leaves: Dendrite sees it.
	if _, err := alice.LeaveRoom(background, id.RoomID(room)); err != nil {
		t.Fatalf("alice leaves: %v", err)
	}
	waitFor(t, "alice's leave on Dendrite", func() ([]string, bool) {
		_, m := dendrite("GET", roomPath+"/state/m.room.member/"+url.PathEscape(alice.User.ID), nil)
		s, _ := m["membership"].(string)
		return []string{s}, s == "leave"
	}, d.LogTail)
	if m, err := st.Server.Rooms.Membership(background, string(alice.UserID), room); err != nil || m != "leave" {
		t.Errorf("alice's membership on Cirrus after the leave: %q %v", m, err)
	}
}
