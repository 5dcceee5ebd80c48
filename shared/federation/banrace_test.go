package federation_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
)

// TestTwoServers_BanWhileSending: alice@A changes the power levels twice
// before bob@B joins, so that B, which takes the room in from A's
// send_join answer, holds the current power levels but not the older
// ones their auth chain names. Then alice bans bob while bob sends: the
// ban and bob's messages fork the room, and resolving the fork reads the
// auth chains B lacks, which B's worker fetches from A (/event_auth of
// the ban, which A serves B though B is no longer in the room: the ban
// removed its last user).
// Both servers end with bob banned, the same current state, and the
// events both hold in the same /messages order.
func TestTwoServers_BanWhileSending(t *testing.T) {
	a, b := twoServers(t)
	alice := a.Member(t, "alice")
	bob := b.Member(t, "bob")
	created, err := alice.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "12"})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	for i := 1; i <= 2; i++ {
		pl := map[string]any{"events_default": 0, "state_default": 50 + i, "ban": 50, "kick": 50, "redact": 50, "invite": 0}
		if _, err := alice.SendStateEvent(background, room, event.StatePowerLevels, "", pl); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bob.JoinRoom(background, string(room), &mautrix.ReqJoinRoom{Via: []string{a.Name()}}); err != nil {
		t.Fatalf("bob joins: %v", err)
	}
	waitMembership(t, a, room, bob.UserID, "join")

	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 1; i <= 3; i++ {
			if _, err := bob.SendText(background, room, fmt.Sprintf("bob %d", i)); err != nil {
				return // banned meanwhile
			}
		}
	}()
	go func() {
		defer wg.Done()
		if _, err := alice.BanUser(background, room, &mautrix.ReqBanUser{UserID: bob.UserID, Reason: "spam"}); err != nil {
			t.Errorf("ban: %v", err)
		}
	}()
	wg.Wait()
	waitMembership(t, b, room, bob.UserID, "ban")
	waitMembership(t, a, room, bob.UserID, "ban")
	// After the ban B has no member left: A sends it nothing more, and
	// what each holds is settled.
	// Whether the ban forked the room depends on the race: say so.
	t.Logf("B asked A for %d auth chains", strings.Count(a.Logs(), `"path":"/_matrix/federation/v1/event_auth/`))
	sameState(t, a, b, string(room))
	ax, bx := messageIDs(t, alice.Client, room), messageIDs(t, bob.Client, room)
	both := func(xs, ys []string) []string {
		var out []string
		for _, x := range xs {
			if slices.Contains(ys, x) {
				out = append(out, x)
			}
		}
		return out
	}
	if x, y := both(ax, bx), both(bx, ax); !slices.Equal(x, y) {
		t.Fatalf("/messages order of the events both hold differs:\nA: %v\nB: %v", x, y)
	}
}
