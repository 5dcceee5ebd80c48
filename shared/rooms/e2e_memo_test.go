package rooms_test

import (
	"context"
	"errors"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Within one request that shares its reads (a sync), a room's info and a
// user's membership are read once, and its few state events come from
// the whole current state read; another request, or a read made Fresh,
// sees what changed since.
func TestReadsShared(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	roomID := create(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "before"})
	room := string(roomID)
	rs := st.Server.Rooms

	ctx, meter := store.WithMeter(rooms.WithReadsShared(bg))
	first, err := rs.Info(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rs.Membership(ctx, alice.ID, room); err != nil {
		t.Fatal(err)
	}
	again, err := rs.Info(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rs.Membership(ctx, alice.ID, room); err != nil {
		t.Fatal(err)
	}
	if u := meter.Usage(); u.Calls != 2 || first.Name != "before" || again.Name != "before" {
		t.Fatalf("info and membership read twice in one request: %d calls (want 2), names %q %q", u.Calls, first.Name, again.Name)
	}

	state, err := rs.CurrentState(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	before := meter.Usage().Calls
	tuples := []events.StateKeyTuple{{Type: "m.room.create"}, {Type: "m.room.power_levels"}, {Type: "m.room.member", StateKey: alice.ID}}
	picked, err := rs.StateEvents(ctx, room, tuples)
	if err != nil {
		t.Fatal(err)
	}
	if len(picked) != 3 || meter.Usage().Calls != before {
		t.Fatalf("state events after the current state: %d of 3, %d calls more (want 0)", len(picked), meter.Usage().Calls-before)
	}
	for _, ev := range state {
		if sk := ev.StateKey(); sk != nil && ev.Type() == "m.room.create" && picked[events.StateKeyTuple{Type: "m.room.create"}].EventID() != ev.EventID() {
			t.Fatal("the create event picked is not the current state's")
		}
	}

	if _, err := alice.SendStateEvent(bg, roomID, event.StateRoomName, "", map[string]any{"name": "after"}); err != nil {
		t.Fatal(err)
	}
	if i, err := rs.Info(ctx, room); err != nil || i.Name != "before" {
		t.Fatalf("the request's second read: %q %v, want what it read first", i.Name, err)
	}
	for what, c := range map[string]context.Context{"a fresh read": rooms.Fresh(ctx), "another request": rooms.WithReadsShared(bg)} {
		if i, err := rs.Info(c, room); err != nil || i.Name != "after" {
			t.Fatalf("%s: %q %v, want the new name", what, i.Name, err)
		}
	}
}

// TestReadsShared_Memberships: within a request that shares its reads, the
// memberships a Query of the user's rooms read serve the reads of each
// room's membership item: a sync reads each room's after them.
func TestReadsShared_Memberships(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	a := string(create(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"}))
	b := string(create(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"}))
	rs := st.Server.Rooms

	ctx, meter := store.WithMeter(rooms.WithReadsShared(bg))
	ms, err := rs.Memberships(ctx, alice.ID)
	if err != nil || len(ms) != 2 {
		t.Fatalf("memberships: %v %v", ms, err)
	}
	for _, room := range []string{a, b} {
		if m, err := rs.Membership(ctx, alice.ID, room); err != nil || m != "join" {
			t.Fatalf("membership of %s: %q %v, want join", room, m, err)
		}
	}
	if u := meter.Usage(); u.Calls != 1 {
		t.Fatalf("the memberships, then each room's: %d calls, want the Query alone", u.Calls)
	}
	// The rooms' summaries, read in one batch, serve each room's read;
	// a room that does not exist is unknown, as its own read says.
	rs.ShareInfos(ctx, []string{a, b, "!nowhere:example.org"})
	for _, room := range []string{a, b} {
		if i, err := rs.Info(ctx, room); err != nil || i.RoomID != room {
			t.Fatalf("info of %s: %+v %v", room, i, err)
		}
	}
	if _, err := rs.Info(ctx, "!nowhere:example.org"); !errors.Is(err, rooms.ErrUnknownRoom) {
		t.Fatalf("info of a room that is not: %v, want ErrUnknownRoom", err)
	}
	if u := meter.Usage(); u.Calls != 2 {
		t.Fatalf("the summaries shared, then each room's: %d calls, want one BatchGetItem more", u.Calls)
	}
	// Without shared reads each is read.
	ctx, meter = store.WithMeter(bg)
	if _, err := rs.Memberships(ctx, alice.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := rs.Membership(ctx, alice.ID, a); err != nil {
		t.Fatal(err)
	}
	if u := meter.Usage(); u.Calls != 2 {
		t.Fatalf("without shared reads: %d calls, want 2", u.Calls)
	}
}
