package sync_test

import (
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestSliding_TimelineLimitZero: a list with timeline_limit 0 sends its
// rooms without timeline events, both whole and with news, and still names
// them.
func TestSliding_TimelineLimitZero(t *testing.T) {
	st := servertest.Start(t)
	au := st.Register(t, "alice")
	alice := st.Client(t, au)
	room := ssRoomOf(t, alice, "Quiet list")
	say(t, alice, room, "hello")
	body := ssList(0, [][]string{{"m.room.name", ""}})
	for _, path := range []string{ssUnstable, ssV4} {
		first := ssSlide(t, st.URL, path, au, "", 0, body)
		r, ok := first.Rooms[room.String()]
		if !ok || r.Name != "Quiet list" {
			t.Fatalf("%s: room missing or unnamed: %+v", path, first.Rooms)
		}
		if n := len(r.timeline()); n != 0 {
			t.Fatalf("%s: timeline_limit 0 sent %d timeline events", path, n)
		}
		say(t, alice, room, "more")
		next := ssSlide(t, st.URL, path, au, first.Pos, 0, body)
		r, ok = next.Rooms[room.String()]
		if !ok {
			t.Fatalf("%s: the room with news did not come: %+v", path, next.Rooms)
		}
		if n := len(r.timeline()); n != 0 {
			t.Fatalf("%s: timeline_limit 0 sent %d timeline events with news", path, n)
		}
	}
}
