package rooms_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/keys"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Events made by another server (remote.test, with its own signing key),
// taken into a room of this server through rooms.Service.Receive, and
// what local users see of them through the client API.

const bob = "@bob:remote.test"

// remote builds and signs events as remote.test.
type remote struct {
	t      *testing.T
	rooms  *rooms.Service
	signer events.Signer
	clock  time.Time
}

func newRemote(t *testing.T, st *servertest.Stack) *remote {
	t.Helper()
	k, err := keys.FromSeed("remote.test signing key")
	if err != nil {
		t.Fatal(err)
	}
	return &remote{t: t, rooms: st.Server.Rooms, signer: events.Signer{ServerName: "remote.test", Key: k},
		clock: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
}

// build makes an event of sender in room after prev (nil: the room's
// forward extremities), its auth events chosen from state (nil: the
// room's current state). A nil key makes a message-like event.
func (r *remote) build(room id.RoomID, sender, typ string, key *string, content string, prev []string, state []events.PDU) events.PDU {
	r.t.Helper()
	return r.buildProto(room, events.Proto{Sender: sender, Type: typ, StateKey: key, Content: json.RawMessage(content)}, prev, state)
}

// buildProto makes the event p in room, as build does.
func (r *remote) buildProto(room id.RoomID, p events.Proto, prev []string, state []events.PDU) events.PDU {
	r.t.Helper()
	ctx := bg
	var depth int64
	if prev == nil {
		var err error
		if prev, depth, err = r.rooms.Extremities(ctx, string(room)); err != nil {
			r.t.Fatalf("extremities: %v", err)
		}
	} else {
		for _, p := range prev {
			if e, err := r.rooms.Event(ctx, string(room), p); err == nil {
				depth = max(depth, e.PDU.Depth())
			}
		}
	}
	if state == nil {
		state = r.state(room)
	}
	st, err := events.NewState(state)
	if err != nil {
		r.t.Fatal(err)
	}
	info, err := r.rooms.Info(ctx, string(room))
	if err != nil {
		r.t.Fatal(err)
	}
	r.clock = r.clock.Add(time.Second)
	p.RoomID = string(room)
	ev, err := r.signer.Build(info.Version, p, events.Graph{PrevEvents: prev, Depth: depth + 1}, st, r.clock)
	if err != nil {
		r.t.Fatalf("build %s: %v", p.Type, err)
	}
	return ev
}

// redaction makes sender's redaction of target.
func (r *remote) redaction(room id.RoomID, sender, target string, prev []string, state []events.PDU) events.PDU {
	r.t.Helper()
	c, _ := json.Marshal(map[string]string{"redacts": target})
	return r.buildProto(room, events.Proto{Sender: sender, Type: "m.room.redaction", Content: c, Redacts: target}, prev, state)
}

func (r *remote) state(room id.RoomID) []events.PDU {
	r.t.Helper()
	state, err := r.rooms.CurrentState(bg, string(room))
	if err != nil {
		r.t.Fatal(err)
	}
	return state
}

func (r *remote) message(room id.RoomID, body string, prev []string, state []events.PDU) events.PDU {
	c, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": body})
	return r.build(room, bob, "m.room.message", nil, string(c), prev, state)
}

// receive takes ev in and wants status.
func (r *remote) receive(what string, ev events.PDU, want rooms.Status) rooms.Outcome {
	r.t.Helper()
	out, err := r.rooms.Receive(bg, ev)
	if err != nil {
		r.t.Fatalf("%s: receive: %v", what, err)
	}
	if out.Status != want {
		r.t.Fatalf("%s: got %s (%s), want %s", what, out.Status, out.Reason, want)
	}
	return out
}

// joinBob makes a public room of alice's (bob may set the topic) and
// joins bob to it through Receive.
func joinBob(t *testing.T, st *servertest.Stack, r *remote, alice mxUser) (id.RoomID, events.PDU) {
	t.Helper()
	return joinBobIn(t, r, alice, "")
}

// joinBobIn is joinBob in a room of version v ("" for the default).
func joinBobIn(t *testing.T, r *remote, alice mxUser, v string) (id.RoomID, events.PDU) {
	t.Helper()
	var created struct {
		RoomID id.RoomID `json:"room_id"`
	}
	body := map[string]any{"preset": "public_chat", "power_level_content_override": map[string]any{"users": map[string]int{bob: 50}}}
	if v != "" {
		body["room_version"] = v
		body["power_level_content_override"] = map[string]any{"users": map[string]int{bob: 50, string(alice.UserID): 100}}
	}
	if err := raw(alice, "POST", body, &created, "v3", "createRoom"); err != nil {
		t.Fatalf("createRoom: %v", err)
	}
	key := bob
	join := r.build(created.RoomID, bob, "m.room.member", &key, `{"membership":"join"}`, nil, nil)
	r.receive("bob's join", join, rooms.Accepted)
	return created.RoomID, join
}

// shown lists the bodies of the room's messages, oldest first, as
// /messages shows them to u.
func shown(t *testing.T, u mxUser, room id.RoomID) []string {
	t.Helper()
	resp, err := u.Messages(bg, room, "", "", mautrix.DirectionBackward, nil, 50)
	if err != nil {
		t.Fatalf("messages: %v", err)
	}
	b := bodies(resp.Chunk)
	slices.Reverse(b)
	return b
}

func TestReceive_Linear(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	r := newRemote(t, st)
	room, _ := joinBob(t, st, r, alice)

	joined, err := alice.JoinedMembers(bg, room)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := joined.Joined[id.UserID(bob)]; !ok {
		t.Fatalf("joined members %v: no %s", joined.Joined, bob)
	}

	say(t, alice, room, "before")
	msg := r.message(room, "hello from remote", nil, nil)
	first := r.receive("bob's message", msg, rooms.Accepted)
	if first.Duplicate {
		t.Fatalf("first receipt marked a duplicate")
	}
	say(t, alice, room, "after")
	wantEqual(t, "timeline", shown(t, alice, room), []string{"before", "hello from remote", "after"})

	t.Run("sync", func(t *testing.T) {
		resp, err := alice.FullSyncRequest(bg, mautrix.ReqSync{})
		if err != nil {
			t.Fatal(err)
		}
		jr := resp.Rooms.Join[room]
		if jr == nil {
			t.Fatalf("sync: no room %s", room)
		}
		wantEqual(t, "sync timeline", bodies(jr.Timeline.Events), []string{"before", "hello from remote", "after"})
	})

	t.Run("same PDU twice is stored once", func(t *testing.T) {
		again := r.receive("bob's message again", msg, rooms.Accepted)
		if !again.Duplicate || again.Seq != first.Seq {
			t.Fatalf("second receipt: got %+v, want the first's position %d, a duplicate", again, first.Seq)
		}
		wantEqual(t, "timeline", shown(t, alice, room), []string{"before", "hello from remote", "after"})
	})

	t.Run("remote state event changes current state", func(t *testing.T) {
		key := ""
		r.receive("bob's topic", r.build(room, bob, "m.room.topic", &key, `{"topic":"set remotely"}`, nil, nil), rooms.Accepted)
		wantEqual(t, "topic", stateOf(t, alice, room, "m.room.topic", "")["topic"], "set remotely")
		info, err := st.Server.Rooms.Info(bg, string(room))
		if err != nil {
			t.Fatal(err)
		}
		wantEqual(t, "room info topic, joined", []any{info.Topic, info.Joined}, []any{"set remotely", int64(2)})
		// A local event after it builds on it alone.
		local := say(t, alice, room, "reply")
		e, err := st.Server.Rooms.Event(bg, string(room), string(local))
		if err != nil {
			t.Fatal(err)
		}
		ext, _, _ := st.Server.Rooms.Extremities(bg, string(room))
		wantEqual(t, "extremities", ext, []string{string(local)})
		if len(e.PDU.PrevEventIDs()) != 1 {
			t.Fatalf("local event after a linear one: prev_events %v", e.PDU.PrevEventIDs())
		}
	})
}

func TestReceive_Fork(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	r := newRemote(t, st)
	room, join := joinBob(t, st, r, alice)
	stateAtJoin := r.state(room)

	// Alice goes on while bob, who has not seen her messages, sets the
	// topic on the join: the room forks.
	say(t, alice, room, "one")
	m2 := say(t, alice, room, "two")
	key := ""
	fork := r.build(room, bob, "m.room.topic", &key, `{"topic":"from the fork"}`, []string{join.EventID()}, stateAtJoin)
	r.receive("forked topic", fork, rooms.Accepted)

	ext, _, err := st.Server.Rooms.Extremities(bg, string(room))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ext)
	want := []string{fork.EventID(), string(m2)}
	slices.Sort(want)
	wantEqual(t, "extremities after the fork", ext, want)
	wantEqual(t, "resolved topic", stateOf(t, alice, room, "m.room.topic", "")["topic"], "from the fork")

	// A message on bob's fork does not merge it.
	r.receive("message on the fork", r.message(room, "on the fork", []string{fork.EventID()}, nil), rooms.Accepted)
	ext, _, _ = st.Server.Rooms.Extremities(bg, string(room))
	if len(ext) != 2 {
		t.Fatalf("extremities after a message on the fork: %v, want 2", ext)
	}

	// The next local event merges the forks.
	m3 := say(t, alice, room, "three")
	e, err := st.Server.Rooms.Event(bg, string(room), string(m3))
	if err != nil {
		t.Fatal(err)
	}
	prev := slices.Clone(e.PDU.PrevEventIDs())
	slices.Sort(prev)
	slices.Sort(ext)
	wantEqual(t, "prev_events of the local event after the fork", prev, ext)
	ext, _, _ = st.Server.Rooms.Extremities(bg, string(room))
	wantEqual(t, "extremities after the merge", ext, []string{string(m3)})
	wantEqual(t, "timeline", shown(t, alice, room), []string{"one", "two", "on the fork", "three"})
	wantEqual(t, "topic after the merge", stateOf(t, alice, room, "m.room.topic", "")["topic"], "from the fork")

	// A remote event that builds on the merge is linear again.
	r.receive("after the merge", r.message(room, "after the merge", nil, nil), rooms.Accepted)
	wantEqual(t, "timeline", shown(t, alice, room), []string{"one", "two", "on the fork", "three", "after the merge"})
}

func TestReceive_Refused(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	r := newRemote(t, st)
	room, _ := joinBob(t, st, r, alice)

	t.Run("sender not in the room is rejected", func(t *testing.T) {
		c := r.build(room, "@carol:remote.test", "m.room.message", nil, `{"msgtype":"m.text","body":"carol"}`, nil, nil)
		r.receive("carol's message", c, rooms.Rejected)
		again := r.receive("carol's message again", c, rooms.Rejected)
		if !again.Duplicate {
			t.Fatalf("second receipt of a rejected event: %+v", again)
		}
		if _, err := st.Server.Rooms.Event(bg, string(room), c.EventID()); !errors.Is(err, rooms.ErrUnknownEvent) {
			t.Fatalf("rejected event read as an event: %v", err)
		}
	})

	t.Run("auth events that do not allow it are rejected", func(t *testing.T) {
		var noMember []events.PDU
		for _, ev := range r.state(room) {
			if ev.Type() != "m.room.member" {
				noMember = append(noMember, ev)
			}
		}
		out := r.receive("bob's message without his member event", r.message(room, "bad auth", nil, noMember), rooms.Rejected)
		if !strings.Contains(out.Reason, "auth events") {
			t.Fatalf("reason %q", out.Reason)
		}
	})

	t.Run("missing prev_events", func(t *testing.T) {
		missing := "$" + strings.Repeat("A", 43)
		_, err := st.Server.Rooms.Receive(bg, r.message(room, "orphan", []string{missing}, nil))
		var me *rooms.MissingEventsError
		if !errors.As(err, &me) {
			t.Fatalf("got %v, want a MissingEventsError", err)
		}
		wantEqual(t, "missing IDs", me.IDs, []string{missing})
	})

	t.Run("not allowed by the current state: soft failed", func(t *testing.T) {
		before, _, _ := st.Server.Rooms.Extremities(bg, string(room))
		stateBefore := r.state(room)
		// Bob (50) may no longer send messages.
		pl := map[string]any{"users": map[string]int{bob: 50}, "events_default": 100}
		if _, err := alice.SendStateEvent(bg, room, event.StatePowerLevels, "", pl); err != nil {
			t.Fatalf("power levels: %v", err)
		}
		afterBan, _, _ := st.Server.Rooms.Extremities(bg, string(room))
		ev := r.message(room, "sent before the ban was seen", before, stateBefore)
		r.receive("bob's message", ev, rooms.SoftFailed)
		again := r.receive("bob's message again", ev, rooms.SoftFailed)
		if !again.Duplicate {
			t.Fatalf("second receipt of a soft-failed event: %+v", again)
		}
		ext, _, _ := st.Server.Rooms.Extremities(bg, string(room))
		wantEqual(t, "extremities", ext, afterBan)
	})

	if got := shown(t, alice, room); len(got) != 0 {
		t.Fatalf("timeline shows refused events: %v", got)
	}
	resp, err := alice.FullSyncRequest(bg, mautrix.ReqSync{})
	if err != nil {
		t.Fatal(err)
	}
	if jr := resp.Rooms.Join[room]; jr == nil || len(bodies(jr.Timeline.Events)) != 0 {
		t.Fatalf("sync shows refused events: %+v", jr)
	}
}

// TestReceive_ForkConflict: both forks set the topic; the resolution (v2.1,
// the same power, so the later origin_server_ts applies last) keeps bob's,
// sent on the fork, as the current topic.
func TestReceive_ForkConflict(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	r := newRemote(t, st)
	room, join := joinBob(t, st, r, alice)
	stateAtJoin := r.state(room)
	if _, err := alice.SendStateEvent(bg, room, event.StateTopic, "", map[string]string{"topic": "alice's topic"}); err != nil {
		t.Fatal(err)
	}
	say(t, alice, room, "after alice's topic")
	r.clock = time.Now().Add(time.Hour)
	key := ""
	fork := r.build(room, bob, "m.room.topic", &key, `{"topic":"bob's topic"}`, []string{join.EventID()}, stateAtJoin)
	r.receive("bob's topic on the fork", fork, rooms.Accepted)
	wantEqual(t, "resolved topic", stateOf(t, alice, room, "m.room.topic", "")["topic"], "bob's topic")
	info, err := st.Server.Rooms.Info(bg, string(room))
	if err != nil {
		t.Fatal(err)
	}
	wantEqual(t, "room info topic", info.Topic, "bob's topic")

	// A message on alice's side (after her topic) is allowed by the state
	// before it, whatever the topic.
	r.receive("bob's message on alice's side", r.message(room, "seen alice's topic", nil, nil), rooms.Accepted)
	wantEqual(t, "timeline", shown(t, alice, room), []string{"after alice's topic", "seen alice's topic"})
}

// TestReceive_Cost measures what Receive costs in DynamoDB (docs/storage.md,
// "Events from other servers").
func TestReceive_Cost(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	r := newRemote(t, st)
	room, join := joinBob(t, st, r, alice)
	stateAtJoin := r.state(room)
	measure := func(what string, rs *rooms.Service, ev events.PDU, want servertest.Cost) {
		t.Helper()
		ctx, m := store.WithMeter(bg)
		if _, err := rs.Receive(ctx, ev); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		servertest.CheckUsage(t, what, m.Usage(), want)
	}
	want := servertest.Want
	body := "a message like the bench's, of about sixty-seven characters long."
	rs := r.rooms
	// The figures include what every append costs besides the room: alice's
	// stream entry and the search index (an item per distinct word, 10).
	// One transaction of the slot and the pointer (a create), 2 WCU each.
	measure("linear message", rs, r.message(room, body, nil, nil), want(3, 0, 15))
	dup := r.message(room, body, nil, nil)
	measure("another", rs, dup, want(3, 0, 15))
	// Its prev_events are no longer the extremities: the head, read again
	// in case another instance moved it; the pointers and slots of it and
	// its prev_event, in two BatchGetItems.
	measure("its second receipt", rs, dup, want(3, 5, 0))
	// Another instance: + the head, the local users, the auth state.
	twin := st.Twin(t).Server.Rooms
	measure("linear message, cold", twin, r.message(room, body, nil, nil), want(6, 5, 15))
	key := ""
	// After the twin's append: the head, read again, then as cold (local
	// users, auth state), and the state path of a local state event
	// (snapshot, info, block; one transaction of 6 actions).
	measure("linear topic, after another instance", rs, r.build(room, bob, "m.room.topic", &key, `{"topic":"t0"}`, nil, nil), want(9, 9, 14))
	measure("linear topic", rs, r.build(room, bob, "m.room.topic", &key, `{"topic":"t1"}`, nil, nil), want(6, 3, 14))
	// The records of it, its prev_event and the other extremity (two
	// BatchGetItems), their snapshots with the head's (one), their blocks,
	// the resolution (the auth chains of the conflicted topic), the auth
	// state, the info; one transaction (its own state's blocks were read,
	// so stored: only the new current state's are written).
	measure("message on a fork", rs, r.message(room, body, []string{join.EventID()}, stateAtJoin), want(13, 28, 17))
	// Its prev_events are the extremities: linear, with the auth state
	// read again (the fork dropped the cached state).
	merge := r.message(room, body, nil, nil)
	measure("message merging the forks", rs, merge, want(4, 3, 15))
	measure("topic on a fork", rs, r.build(room, bob, "m.room.topic", &key, `{"topic":"t2"}`, []string{join.EventID()}, stateAtJoin), want(14, 31, 14))
	// A fork with the same state on both sides (bob's message beside
	// alice's, the usual fork): the head, the records, the snapshots, then
	// as a linear message with the extremities on its slot.
	again := r.message(room, body, nil, nil)
	r.receive("merging again", again, rooms.Accepted)
	say(t, alice, room, "alice's")
	measure("message on a fork, the same state", rs, r.message(room, body, []string{again.EventID()}, nil), want(7, 7, 15))
	// The auth state (carol's member event: none), the snapshot for the
	// pointer's blocks, the pointer's create.
	measure("rejected message", rs, r.build(room, "@carol:remote.test", "m.room.message", nil, `{"body":"x"}`, nil, nil), want(3, 2, 2))
	// Bob may no longer send; his message built before he knew is soft
	// failed: the head, the records, the snapshots, the blocks of the
	// state before it, its auth events, the current auth state; the
	// pointer's create (the PDU and the block hashes: 2 WCU, twice in a
	// transaction). Its blocks are stored already.
	before, _, _ := rs.Extremities(bg, string(room))
	stateBefore := r.state(room)
	if _, err := alice.SendStateEvent(bg, room, event.StatePowerLevels, "", map[string]any{"users": map[string]int{bob: 50}, "events_default": 100}); err != nil {
		t.Fatal(err)
	}
	measure("soft-failed message", rs, r.message(room, body, before, stateBefore), want(8, 23, 4))
}

// TestReceive_ManyForks: a local event builds on at most 10 forward
// extremities, the newest first; the next one merges the rest.
func TestReceive_ManyForks(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	r := newRemote(t, st)
	room, join := joinBob(t, st, r, alice)
	stateAtJoin := r.state(room)
	say(t, alice, room, "main line")
	for i := range 11 {
		r.receive("fork", r.message(room, "fork", []string{join.EventID()}, stateAtJoin), rooms.Accepted)
		if ext, _, _ := st.Server.Rooms.Extremities(bg, string(room)); len(ext) != i+2 {
			t.Fatalf("after %d forks: %d extremities, want %d", i+1, len(ext), i+2)
		}
	}
	ext, _, _ := st.Server.Rooms.Extremities(bg, string(room))
	first := say(t, alice, room, "merges ten")
	e, err := st.Server.Rooms.Event(bg, string(room), string(first))
	if err != nil {
		t.Fatal(err)
	}
	wantEqual(t, "prev_events of the first local event", e.PDU.PrevEventIDs(), ext[:10])
	left, _, _ := st.Server.Rooms.Extremities(bg, string(room))
	wantEqual(t, "extremities left", left, append([]string{string(first)}, ext[10:]...))
	second := say(t, alice, room, "merges the rest")
	e, err = st.Server.Rooms.Event(bg, string(room), string(second))
	if err != nil {
		t.Fatal(err)
	}
	wantEqual(t, "prev_events of the second local event", e.PDU.PrevEventIDs(), left)
	left, _, _ = st.Server.Rooms.Extremities(bg, string(room))
	wantEqual(t, "extremities at the end", left, []string{string(second)})
}

// TestReceive_Concurrent: local sends through one instance race remote
// events received through another, on one table: every event is stored
// once, in the timeline, and the next local event merges whatever forks
// the race made.
func TestReceive_Concurrent(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	r := newRemote(t, st)
	room, _ := joinBob(t, st, r, alice)
	twin := st.Twin(t).Server.Rooms
	r.rooms = twin
	const n = 10
	done := make(chan error, 1)
	go func() {
		for i := range n {
			if _, err := alice.SendText(bg, room, "local "+string(rune('a'+i))); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for i := range n {
		ev := r.message(room, "remote "+string(rune('a'+i)), nil, nil)
		if _, err := twin.Receive(bg, ev); err != nil {
			t.Fatalf("receive %d: %v", i, err)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("local sends: %v", err)
	}
	got := shown(t, alice, room)
	slices.Sort(got)
	var want []string
	for i := range n {
		want = append(want, "local "+string(rune('a'+i)), "remote "+string(rune('a'+i)))
	}
	slices.Sort(want)
	wantEqual(t, "timeline", got, want)
	last := say(t, alice, room, "last")
	ext, _, _ := st.Server.Rooms.Extremities(bg, string(room))
	wantEqual(t, "extremities after a local event", ext, []string{string(last)})
}

// TestReceive_Redactions: a received redaction applies when its sender may
// redact the target (same server, or the power to redact others'
// events), and not otherwise; on a fork, it redacts a state event still
// current as a local redaction does.
func TestReceive_Redactions(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	r := newRemote(t, st)
	room, _ := joinBob(t, st, r, alice)
	dave := "@dave:remote.test"
	r.receive("dave's join", r.build(room, dave, "m.room.member", &dave, `{"membership":"join"}`, nil, nil), rooms.Accepted)
	content := func(eventID id.EventID) map[string]any {
		t.Helper()
		ev, err := alice.GetEvent(bg, room, eventID)
		if err != nil {
			t.Fatalf("event %s: %v", eventID, err)
		}
		return ev.Content.Raw
	}

	m := say(t, alice, room, "secret")
	r.receive("dave's redaction", r.redaction(room, dave, string(m), nil, nil), rooms.Accepted)
	wantEqual(t, "body after dave's redaction (power 0)", content(m)["body"], "secret")
	r.receive("bob's redaction", r.redaction(room, bob, string(m), nil, nil), rooms.Accepted)
	if body, ok := content(m)["body"]; ok {
		t.Fatalf("body after bob's redaction (power 50): %v", body)
	}

	// On a fork: alice's topic, then her message; bob redacts the topic
	// on the topic.
	topic, err := alice.SendStateEvent(bg, room, event.StateTopic, "", map[string]string{"topic": "to go"})
	if err != nil {
		t.Fatal(err)
	}
	stateAtTopic := r.state(room)
	say(t, alice, room, "after the topic")
	r.receive("bob's redaction of the topic on a fork", r.redaction(room, bob, string(topic.EventID), []string{string(topic.EventID)}, stateAtTopic), rooms.Accepted)
	if got := stateOf(t, alice, room, "m.room.topic", ""); got["topic"] != nil {
		t.Fatalf("topic after its redaction: %v", got)
	}
	info, err := st.Server.Rooms.Info(bg, string(room))
	if err != nil {
		t.Fatal(err)
	}
	wantEqual(t, "room info topic", info.Topic, "")
	ext, _, _ := st.Server.Rooms.Extremities(bg, string(room))
	if len(ext) != 2 {
		t.Fatalf("extremities after the forked redaction: %v", ext)
	}
}

// TestReceive_TwiceAtOnce: two instances on one table receive the same
// events at the same time (a remote server's retried transaction): each is
// stored once, and the second receipt answers the first's position.
func TestReceive_TwiceAtOnce(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	r := newRemote(t, st)
	room, _ := joinBob(t, st, r, alice)
	twin := st.Twin(t).Server.Rooms
	for i := range 5 {
		ev := r.message(room, "twice "+string(rune('a'+i)), nil, nil)
		outs := make(chan rooms.Outcome, 2)
		errs := make(chan error, 2)
		for _, rs := range []*rooms.Service{st.Server.Rooms, twin} {
			go func() {
				out, err := rs.Receive(bg, ev)
				outs <- out
				errs <- err
			}()
		}
		a, b := <-outs, <-outs
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatalf("receive %d: %v", i, err)
			}
		}
		if a.Status != rooms.Accepted || b.Status != rooms.Accepted || a.Seq != b.Seq || a.Duplicate == b.Duplicate {
			t.Fatalf("event %d received twice at once: %+v and %+v, want one first receipt and one duplicate at one position", i, a, b)
		}
	}
	wantEqual(t, "timeline", shown(t, alice, room), []string{"twice a", "twice b", "twice c", "twice d", "twice e"})
}

// TestReceive_Versions: rooms before version 12 list the create event in
// auth_events and name their server in the room ID; received events are
// placed, forked and refused as in version 12.
func TestReceive_Versions(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	r := newRemote(t, st)
	for _, v := range []string{"10", "11"} {
		t.Run(v, func(t *testing.T) {
			room, join := joinBobIn(t, r, alice, v)
			stateAtJoin := r.state(room)
			r.receive("bob's message", r.message(room, "hello", nil, nil), rooms.Accepted)
			say(t, alice, room, "alice's")
			key := ""
			r.receive("bob's topic on a fork", r.build(room, bob, "m.room.topic", &key, `{"topic":"forked"}`, []string{join.EventID()}, stateAtJoin), rooms.Accepted)
			wantEqual(t, "topic", stateOf(t, alice, room, "m.room.topic", "")["topic"], "forked")
			r.receive("carol's message", r.build(room, "@carol:remote.test", "m.room.message", nil, `{"body":"x"}`, nil, nil), rooms.Rejected)
			last := say(t, alice, room, "merged")
			e, err := st.Server.Rooms.Event(bg, string(room), string(last))
			if err != nil {
				t.Fatal(err)
			}
			if len(e.PDU.PrevEventIDs()) != 2 {
				t.Fatalf("prev_events of the local event after the fork: %v", e.PDU.PrevEventIDs())
			}
			wantEqual(t, "timeline", shown(t, alice, room), []string{"hello", "alice's", "merged"})
		})
	}
}
