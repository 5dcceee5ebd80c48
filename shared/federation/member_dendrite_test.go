package federation_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// TestDendrite_Memberships: Cirrus's outbound membership changes against
// Dendrite 0.13.8, in version 10 rooms. alice@Cirrus creates a room
// inviting bob@Dendrite (Cirrus's /v2/invite to Dendrite, stripped state as
// PDUs); bob joins through Dendrite; alice kicks him and Dendrite sees it.
// bob invites alice to his own room; she rejects (make_leave, send_leave to
// Dendrite) and Dendrite sees her leave. Dendrite 0.13.8 serves no
// make_knock: a knock on its room is 502, and nothing is kept here.
func TestDendrite_Memberships(t *testing.T) {
	st, d := withDendrite(t)
	alice := st.Member(t, "alice")
	bob := "@bob:" + d.Name
	bobToken, dendrite := dendriteUser(t, d, "bob")
	memberOnDendrite := func(room, user string) string {
		status, raw := d.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.member/"+url.PathEscape(user), bobToken, nil)
		var c struct {
			Membership string `json:"membership"`
		}
		if status != http.StatusOK || json.Unmarshal([]byte(raw), &c) != nil {
			return ""
		}
		return c.Membership
	}

	// Cirrus invites, Dendrite's user joins, is kicked.
	created, err := alice.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "10", Name: "Cirrus room",
		Invite: []id.UserID{id.UserID(bob)}, IsDirect: true})
	if err != nil {
		t.Fatalf("createRoom inviting %s: %v\n%s", bob, err, d.LogTail())
	}
	room := string(created.RoomID)
	dendrite("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{})
	waitMembership(t, st, created.RoomID, id.UserID(bob), "join")
	if _, err := alice.KickUser(background, created.RoomID, &mautrix.ReqKickUser{UserID: id.UserID(bob)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the kick on Dendrite", func() ([]string, bool) {
		m := memberOnDendrite(room, bob)
		return []string{m}, m == "leave"
	}, d.LogTail)

	// Dendrite invites, alice rejects.
	mine := dendrite("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat", "room_version": "10"})["room_id"].(string)
	dendrite("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(mine)+"/invite", map[string]any{"user_id": alice.User.ID})
	if _, err := alice.LeaveRoom(background, id.RoomID(mine)); err != nil {
		t.Fatalf("alice rejects Dendrite's invite: %v\n%s", err, d.LogTail())
	}
	if m := memberOnDendrite(mine, alice.User.ID); m != "leave" {
		t.Errorf("alice on Dendrite after her rejection: %q\n%s", m, d.LogTail())
	}

	// Dendrite 0.13.8 serves no make_knock (404 M_UNRECOGNIZED): the
	// knock fails with 502, and nothing is recorded here.
	knock := dendrite("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat", "room_version": "10",
		"initial_state": []any{map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "knock"}}}})["room_id"].(string)
	if _, err := alice.KnockRoom(background, knock, &mautrix.ReqKnockRoom{Via: []string{d.Name}}); !isStatus(err, http.StatusBadGateway, "M_UNKNOWN") {
		t.Errorf("alice knocks on Dendrite's room: %v, want 502", err)
	}
	if m, err := st.Server.Rooms.Membership(background, alice.User.ID, knock); err != nil || m != "" {
		t.Errorf("alice's membership after the failed knock: %q %v", m, err)
	}
}
