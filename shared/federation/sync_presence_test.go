package federation_test

import (
	"encoding/json"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestTwoServers_InitialSyncPresence: an initial sync on A gives the
// presence of bob, a user of B who shares a room with alice, as it gives a
// local user's; once bob has left, it no longer does.
func TestTwoServers_InitialSyncPresence(t *testing.T) {
	a, b := twoServers(t, "CIRRUS_PRESENCE_ENABLED=true")
	alice := a.Member(t, "alice")
	bob := b.Member(t, "bob")
	room := publicRoom(t, alice)
	joinVia(t, bob, room, a.Name())
	aw := watch(t, alice.Client)
	bobID := string(bob.UserID)

	if err := bob.SetPresence(background, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "on B"}); err != nil {
		t.Fatal(err)
	}
	aw.until(t, "bob's presence", presenceOf(bobID, "online", "on B"), b.Logs)

	initial := func() []string {
		t.Helper()
		resp, err := alice.FullSyncRequest(background, mautrix.ReqSync{SetPresence: event.PresenceOffline})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, ev := range resp.Presence.Events {
			var c struct {
				Presence  string `json:"presence"`
				StatusMsg string `json:"status_msg"`
			}
			if err := json.Unmarshal(ev.Content.VeryRaw, &c); err != nil {
				t.Fatal(err)
			}
			out = append(out, string(ev.Sender)+" "+c.Presence+" "+c.StatusMsg)
		}
		return out
	}
	want := bobID + " online on B"
	if got := initial(); len(got) != 1 || got[0] != want {
		t.Errorf("presence of an initial sync on A: %q, want [%q]", got, want)
	}
	a.CheckCost(t, "an initial sync of one room with one remote member", "/sync", servertest.Want(15, 20.0, 0))

	if _, err := bob.LeaveRoom(background, room); err != nil {
		t.Fatal(err)
	}
	// The leave reaches A by the queue: until then bob still shares the room.
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		got := initial()
		if len(got) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("presence of an initial sync on A after bob left: %q, want none\n%s", got, b.Logs())
		}
	}
}
