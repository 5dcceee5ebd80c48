package federation_test

import (
	"net/http"
	"net/url"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestTwoServers_RemoteProfile: bob@B reads alice@A's profile, whole and
// by field, through A (query/profile); a user A does not have is 404
// M_NOT_FOUND, a server that does not answer 502, as Synapse answers.
// alice, in a room with bob, changes her display name: the member event
// reaches B, where bob's /members, /joined_members and incremental /sync
// show the new name.
func TestTwoServers_RemoteProfile(t *testing.T) {
	a, b := twoServers(t)
	alice := a.Member(t, "alice")
	bob := b.Member(t, "bob")
	if err := alice.SetDisplayName(background, "Alice of A"); err != nil {
		t.Fatal(err)
	}
	if err := alice.SetAvatarURL(background, id.ContentURI{Homeserver: a.Name(), FileID: "face"}); err != nil {
		t.Fatal(err)
	}
	p, err := bob.GetProfile(background, alice.UserID)
	if err != nil {
		t.Fatalf("bob reads alice's profile: %v", err)
	}
	if p.DisplayName != "Alice of A" || p.AvatarURL.FileID != "face" {
		t.Errorf("alice's profile on B: %+v", p)
	}
	if got, err := bob.GetDisplayName(background, alice.UserID); err != nil || got.DisplayName != "Alice of A" {
		t.Errorf("alice's displayname on B: %+v %v", got, err)
	}
	r := b.Do(t, "GET", "/_matrix/client/v3/profile/"+url.PathEscape(string(alice.UserID))+"/avatar_url", bob.User.AccessToken, nil)
	if r.Status != http.StatusOK || r.Body["avatar_url"] != "mxc://"+a.Name()+"/face" {
		t.Errorf("alice's avatar_url on B: %d %s", r.Status, r.Raw)
	}
	if _, err := bob.GetProfile(background, id.UserID("@nobody:"+a.Name())); !isStatus(err, http.StatusNotFound, "M_NOT_FOUND") {
		t.Errorf("profile of a user A does not have: %v, want 404 M_NOT_FOUND", err)
	}
	if _, err := bob.GetProfile(background, "@someone:127.0.0.1:1"); !isStatus(err, http.StatusBadGateway, "M_UNKNOWN") {
		t.Errorf("profile on a server that does not answer: %v, want 502", err)
	}

	room := publicRoom(t, alice)
	joinVia(t, bob, room, a.Name())
	waitMembership(t, a, room, bob.UserID, "join")
	since := b.Do(t, "GET", "/_matrix/client/v3/sync?timeout=0", bob.User.AccessToken, nil).Body["next_batch"].(string)
	if err := alice.SetDisplayName(background, "Alice renamed"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice's new name in bob's /joined_members", func() ([]string, bool) {
		m, err := bob.JoinedMembers(background, room)
		if err != nil {
			return []string{err.Error()}, false
		}
		name := m.Joined[alice.UserID].DisplayName
		return []string{name}, name == "Alice renamed"
	}, b.Logs)
	members, err := bob.Members(background, room)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range members.Chunk {
		if ev.GetStateKey() == string(alice.UserID) {
			found = ev.Content.AsMember().Displayname == "Alice renamed"
		}
	}
	if !found {
		t.Errorf("alice's member event in bob's /members lacks the new name")
	}
	r = b.Do(t, "GET", "/_matrix/client/v3/sync?timeout=0&since="+url.QueryEscape(since), bob.User.AccessToken, nil)
	names := timelineNames(r.Body, string(room), string(alice.UserID))
	if len(names) != 1 || names[0] != "Alice renamed" {
		t.Errorf("alice's member events in bob's incremental /sync: %q\n%s", names, r.Raw)
	}
}

// timelineNames lists the display names of userID's member events in the
// room's /sync timeline.
func timelineNames(sync map[string]any, room, userID string) []string {
	var out []string
	for _, ev := range timelineOf(sync, room) {
		if ev["type"] == event.StateMember.Type && ev["state_key"] == userID {
			c, _ := ev["content"].(map[string]any)
			name, _ := c["displayname"].(string)
			out = append(out, name)
		}
	}
	return out
}
