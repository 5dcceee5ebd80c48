package federation_test

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
)

// TestDendrite_Join: a Dendrite 0.13.8 user joins a public room of a
// Cirrus user (versions 10, 1 and 11) through Dendrite's client API;
// Dendrite asks Cirrus's make_join and send_join. Then each side's message
// reaches the other: alice's through Cirrus's sender (a transaction to
// Dendrite), bob's through Dendrite's /send, Cirrus's inbox and its
// worker. Both servers' /messages then hold the same events in the same
// order. bob's leave on Dendrite reaches Cirrus.
func TestDendrite_Join(t *testing.T) {
	// 10 is Dendrite's default; 1 has event references in its templates
	// and server-made event IDs; 11 is the newest Dendrite knows.
	for _, v := range []string{"10", "1", "11"} {
		t.Run("v"+v, func(t *testing.T) { testDendriteJoin(t, v) })
	}
}

func testDendriteJoin(t *testing.T, version string) {
	st, d := withDendrite(t)
	alice := st.Member(t, "alice")
	created, err := alice.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: id.RoomVersion(version), Name: "Lobby"})
	if err != nil {
		t.Fatal(err)
	}
	room := string(created.RoomID)
	_, dendrite := dendriteUser(t, d, "bob")
	bob := "@bob:" + d.Name

	joined := dendrite("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?server_name="+url.QueryEscape(st.Name()), map[string]any{})
	if joined["room_id"] != room {
		t.Fatalf("join through Dendrite: %v", joined)
	}
	for _, route := range []string{"/make_join/", "/send_join/"} {
		if r := st.LastRequestTo(t, route); r.Status != http.StatusOK {
			t.Errorf("%s: Cirrus answered %d", route, r.Status)
		}
	}
	if ev, err := st.Server.Rooms.StateEvent(background, room, "m.room.member", bob); err != nil {
		t.Fatalf("bob's member event on Cirrus: %v", err)
	} else if m, _ := ev.Membership(); m != "join" {
		t.Fatalf("bob's membership on Cirrus: %q", m)
	}

	// alice's message goes out through Cirrus's sender.
	if _, err := alice.SendText(background, created.RoomID, "hello from cirrus"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice's message in bob's Dendrite /sync", func() ([]string, bool) {
		out := dendrite("GET", "/_matrix/client/v3/sync?timeout=0&filter="+url.QueryEscape(`{"room":{"timeline":{"limit":50}}}`), nil)
		b := timelineBodies(out, room)
		return b, slices.Contains(b, "hello from cirrus")
	}, d.LogTail)

	// bob's goes in through Dendrite's /send and Cirrus's inbox worker.
	dendrite("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/send/m.room.message/t1", map[string]any{"msgtype": "m.text", "body": "hello from dendrite"})
	waitFor(t, "bob's message in alice's Cirrus /sync", func() ([]string, bool) {
		r := st.Do(t, "GET", "/_matrix/client/v3/sync?timeout=0&filter="+url.QueryEscape(`{"room":{"timeline":{"limit":50}}}`), alice.User.AccessToken, nil)
		b := timelineBodies(r.Body, room)
		return b, slices.Contains(b, "hello from dendrite")
	}, st.Logs)

	// Both sides' /messages, from bob's join on, oldest first.
	cirrus := st.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?dir=b&limit=50", alice.User.AccessToken, nil)
	if cirrus.Status != http.StatusOK {
		t.Fatalf("Cirrus /messages: %d %s", cirrus.Status, cirrus.Raw)
	}
	theirs := dendrite("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?dir=b&limit=50", nil)
	ours, dendrites := sinceJoin(cirrus.Body, bob), sinceJoin(theirs, bob)
	t.Logf("Cirrus /messages since the join: %v\nDendrite's: %v", eventIDs(ours), eventIDs(dendrites))
	want := []string{"m.room.member " + bob, "m.room.message hello from cirrus", "m.room.message hello from dendrite"}
	if !slices.Equal(describe(ours), want) {
		t.Errorf("Cirrus /messages since bob's join: %v, want %v", describe(ours), want)
	}
	if !slices.Equal(eventIDs(ours), eventIDs(dendrites)) {
		t.Errorf("/messages since bob's join:\n Cirrus   %v\n Dendrite %v", describe(ours), describe(dendrites))
	}

	// bob leaves on Dendrite: his leave comes through /send.
	dendrite("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/leave", map[string]any{})
	waitFor(t, "bob's leave on Cirrus", func() ([]string, bool) {
		ev, err := st.Server.Rooms.StateEvent(background, room, "m.room.member", bob)
		if err != nil {
			t.Fatal(err)
		}
		m, _ := ev.Membership()
		return []string{m}, m == "leave"
	}, st.Logs)
}

// waitFor polls check until it reports done; the 60 s limit only keeps a
// broken test from hanging.
func waitFor(t *testing.T, what string, check func() ([]string, bool), logs func() string) {
	t.Helper()
	var got []string
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		var ok bool
		if got, ok = check(); ok {
			return
		}
	}
	t.Fatalf("%s: never came; last saw %q\n%s", what, got, logs())
}

// timelineBodies lists the message bodies of room's timeline in a /sync
// answer.
func timelineBodies(sync map[string]any, room string) []string {
	var out []string
	for _, ev := range timelineOf(sync, room) {
		c, _ := ev["content"].(map[string]any)
		if b, ok := c["body"].(string); ok {
			out = append(out, b)
		}
	}
	return out
}

// sinceJoin is the chunk of a /messages answer (dir=b) from user's join
// on, oldest first.
func sinceJoin(messages map[string]any, user string) []map[string]any {
	chunk, _ := messages["chunk"].([]any)
	var out []map[string]any
	for _, e := range chunk {
		ev, _ := e.(map[string]any)
		out = append(out, ev)
		c, _ := ev["content"].(map[string]any)
		if ev["type"] == "m.room.member" && ev["state_key"] == user && c["membership"] == "join" {
			break
		}
	}
	slices.Reverse(out)
	return out
}

func describe(evs []map[string]any) []string {
	var out []string
	for _, ev := range evs {
		c, _ := ev["content"].(map[string]any)
		if ev["type"] == "m.room.member" {
			out = append(out, fmt.Sprintf("m.room.member %v", ev["state_key"]))
		} else {
			out = append(out, fmt.Sprintf("%v %v", ev["type"], c["body"]))
		}
	}
	return out
}

func eventIDs(evs []map[string]any) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, fmt.Sprint(ev["event_id"]))
	}
	return out
}

// TestDendrite_Invite: a Dendrite user invites a Cirrus user to a room
// Cirrus is not in; Dendrite sends the invite to Cirrus's
// /v2/invite, takes Cirrus's signature back, and the invite shows in the
// Cirrus user's /sync with the room's name from the stripped state.
func TestDendrite_Invite(t *testing.T) {
	st, d := withDendrite(t)
	alice := st.Member(t, "alice")
	_, dendrite := dendriteUser(t, d, "bob")
	created := dendrite("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat", "name": "Dendrite's room"})
	room, _ := created["room_id"].(string)
	dendrite("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/invite", map[string]any{"user_id": alice.User.ID})
	if r := st.LastRequestTo(t, "/invite/"); r.Status != http.StatusOK {
		t.Fatalf("Cirrus answered Dendrite's invite %d", r.Status)
	}
	state := inviteState(t, st, alice.User.AccessToken, room)
	name, _ := state["m.room.name"]["content"].(map[string]any)
	member, _ := state["m.room.member"]["content"].(map[string]any)
	if name["name"] != "Dendrite's room" || member["membership"] != "invite" || state["m.room.member"]["sender"] != "@bob:"+d.Name {
		t.Errorf("alice's invite_state: %v", state)
	}
}

// TestDendrite_RestrictedJoin: a Dendrite user in a public Cirrus space
// joins a room restricted to the space's members: Cirrus's template names
// alice as the authoriser, Dendrite signs it, Cirrus countersigns it at
// send_join, and Dendrite takes the answer.
func TestDendrite_RestrictedJoin(t *testing.T) {
	st, d := withDendrite(t)
	alice := st.Member(t, "alice")
	space, err := alice.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10"})
	if err != nil {
		t.Fatal(err)
	}
	restricted, err := alice.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10",
		InitialState: []*event.Event{{Type: event.StateJoinRules, StateKey: new(string), Content: event.Content{Raw: map[string]any{
			"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": string(space.RoomID)}},
		}}}}})
	if err != nil {
		t.Fatal(err)
	}
	bobToken := d.Register(t, "bob", "correct horse battery staple")
	bob := "@bob:" + d.Name
	join := func(room id.RoomID) (int, string) {
		return d.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(string(room))+"?server_name="+url.QueryEscape(st.Name()), bobToken, map[string]any{})
	}
	if status, raw := join(restricted.RoomID); status == http.StatusOK {
		t.Fatalf("bob joined the restricted room before the space: %s", raw)
	}
	if status, raw := join(space.RoomID); status != http.StatusOK {
		t.Fatalf("join the space: %d %s\n%s", status, raw, d.LogTail())
	}
	if status, raw := join(restricted.RoomID); status != http.StatusOK {
		t.Fatalf("join the restricted room: %d %s\n%s", status, raw, d.LogTail())
	}
	ev, err := st.Server.Rooms.StateEvent(background, string(restricted.RoomID), "m.room.member", bob)
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Via string `json:"join_authorised_via_users_server"`
	}
	json.Unmarshal(ev.Content(), &c)
	var sigs struct {
		Signatures map[string]any `json:"signatures"`
	}
	json.Unmarshal(ev.JSON(), &sigs)
	if c.Via != alice.User.ID || sigs.Signatures[st.Name()] == nil || sigs.Signatures[d.Name] == nil {
		t.Errorf("bob's join on Cirrus: %s", ev.JSON())
	}
}
