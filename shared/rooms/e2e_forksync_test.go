package rooms_test

import (
	"encoding/json"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestReceive_ResolvedStateReachesSync: a message received on a fork
// changes the current topic by resolution alone (no topic event in the
// timeline since alice's last sync); her incremental sync carries the new
// topic in the room's state (and in state_after when she asks for it), as
// the spec has it for state changes not in the timeline.
func TestReceive_ResolvedStateReachesSync(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	r := newRemote(t, st)
	room, _ := joinBob(t, st, r, alice)
	key := ""
	// Bob sets the topic twice; the second, after the first in the graph,
	// is stamped earlier, so that a resolution of the two applies the
	// first last.
	r.clock = time.Now().Add(2 * time.Hour)
	first := r.build(room, bob, "m.room.topic", &key, `{"topic":"first"}`, nil, nil)
	r.receive("bob's first topic", first, rooms.Accepted)
	stateAtFirst := r.state(room)
	r.clock = time.Now().Add(time.Hour)
	r.receive("bob's second topic", r.build(room, bob, "m.room.topic", &key, `{"topic":"second"}`, nil, nil), rooms.Accepted)
	say(t, alice, room, "after the second topic")
	initial, err := alice.FullSyncRequest(bg, mautrix.ReqSync{})
	if err != nil {
		t.Fatal(err)
	}
	wantEqual(t, "topic before the fork", stateOf(t, alice, room, "m.room.topic", "")["topic"], "second")

	// A message of bob's on the first topic: the room forks, and the
	// resolution of the two sides keeps the first topic.
	r.receive("message on the fork", r.message(room, "on the first topic", []string{first.EventID()}, stateAtFirst), rooms.Accepted)
	wantEqual(t, "resolved topic", stateOf(t, alice, room, "m.room.topic", "")["topic"], "first")

	next, err := alice.FullSyncRequest(bg, mautrix.ReqSync{Since: initial.NextBatch})
	if err != nil {
		t.Fatal(err)
	}
	j, ok := next.Rooms.Join[room]
	if !ok {
		t.Fatalf("incremental sync: no %s in rooms.join", room)
	}
	wantEqual(t, "timeline", bodies(j.Timeline.Events), []string{"on the first topic"})
	wantEqual(t, "timeline types", types(j.Timeline.Events), []string{"m.room.message"})
	wantEqual(t, "state", topics(j.State.Events), []string{"first"})

	// The same with use_state_after: the state at the end of the timeline.
	var after struct {
		Rooms struct {
			Join map[string]struct {
				StateAfter struct {
					Events []json.RawMessage `json:"events"`
				} `json:"state_after"`
			} `json:"join"`
		} `json:"rooms"`
	}
	if err := rawQuery(alice, map[string]string{"since": initial.NextBatch, "use_state_after": "true"}, &after, "v3", "sync"); err != nil {
		t.Fatal(err)
	}
	var evs []*event.Event
	for _, raw := range after.Rooms.Join[string(room)].StateAfter.Events {
		var ev event.Event
		if err := json.Unmarshal(raw, &ev); err != nil {
			t.Fatal(err)
		}
		evs = append(evs, &ev)
	}
	wantEqual(t, "state_after", topics(evs), []string{"first"})

	// Nothing more happens: the next sync carries nothing of the room.
	last, err := alice.FullSyncRequest(bg, mautrix.ReqSync{Since: next.NextBatch, Timeout: 0})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := last.Rooms.Join[room]; ok {
		t.Fatalf("sync after: the room again: %+v", last.Rooms.Join[room])
	}
}

// topics lists the topics of the m.room.topic events of evs.
func topics(evs []*event.Event) []string {
	out := []string{}
	for _, ev := range evs {
		if ev.Type == event.StateTopic {
			var c struct {
				Topic string `json:"topic"`
			}
			_ = json.Unmarshal(ev.Content.VeryRaw, &c)
			out = append(out, c.Topic)
		}
	}
	return out
}
