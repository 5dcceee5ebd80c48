package sync_test

import (
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestSliding_BumpTypes: only the MSC's bump event types (and the user's
// own membership) move a room in the list. A reaction and another user's
// join in room A, after a message in room B, leave B above A, both when a
// connection builds its list and when news updates it; a message moves A.
func TestSliding_BumpTypes(t *testing.T) {
	st := servertest.Start(t)
	au, bu := st.Register(t, "alice"), st.Register(t, "bob")
	alice, bob := st.Client(t, au), st.Client(t, bu)
	a := ssRoomOf(t, alice, "A")
	b := ssRoomOf(t, alice, "B")
	first := say(t, alice, a, "in A")
	time.Sleep(5 * time.Millisecond)
	say(t, alice, b, "in B")
	time.Sleep(5 * time.Millisecond)
	react := func(target id.EventID, key string) {
		t.Helper()
		if _, err := alice.SendReaction(bg, a, target, key); err != nil {
			t.Fatalf("react: %v", err)
		}
	}
	react(first, "👍")
	if _, err := bob.JoinRoomByID(bg, a); err != nil {
		t.Fatal(err)
	}
	top := func(r ssResp) []string {
		t.Helper()
		l := r.Lists["all"]
		if len(l.Ops) != 1 {
			t.Fatalf("list: %+v", r.Lists)
		}
		return l.Ops[0].RoomIDs
	}
	body := func(last int) map[string]any {
		return map[string]any{"lists": map[string]any{"all": map[string]any{
			"ranges": [][]int{{0, last}}, "timeline_limit": 1, "required_state": [][]string{},
		}}}
	}
	built := ssSlide(t, st.URL, ssUnstable, au, "", 0, body(1))
	if got := top(built); !slices.Equal(got, []string{b.String(), a.String()}) {
		t.Fatalf("a new connection's list %v, want B then A (A's reaction and bob's join do not bump)", got)
	}
	if sa, sb := built.Rooms[a.String()].BumpStamp, built.Rooms[b.String()].BumpStamp; sa >= sb {
		t.Fatalf("bump stamps A %d, B %d: want B's above", sa, sb)
	}
	// On the connection, with only the top room in range.
	pos := ssSlide(t, st.URL, ssUnstable, au, "", 0, body(0)).Pos
	time.Sleep(5 * time.Millisecond)
	react(first, "🎉")
	next := ssSlide(t, st.URL, ssUnstable, au, pos, 0, body(0))
	if got := top(next); !slices.Equal(got, []string{b.String()}) {
		t.Fatalf("after a reaction in A the list's top is %v, want B", got)
	}
	if _, ok := next.Rooms[a.String()]; ok {
		t.Fatalf("room A came for a reaction while outside the range: %+v", next.Rooms)
	}
	time.Sleep(5 * time.Millisecond)
	if _, err := alice.SendMessageEvent(bg, a, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "A again"}); err != nil {
		t.Fatal(err)
	}
	moved := ssSlide(t, st.URL, ssUnstable, au, next.Pos, 0, body(0))
	if got := top(moved); !slices.Equal(got, []string{a.String()}) {
		t.Fatalf("after a message in A the list's top is %v, want A", got)
	}
}
