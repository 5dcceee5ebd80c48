package rooms_test

import (
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// History visibility by the state at each event: events received on a
// fork of the room whose state differs from the current state as events
// arrived are shown or hidden as their own state says, by /messages,
// /event, /context and /sync.

// TestStateVis_ForkDidNotSeeJoinedOnly: alice makes history joined-only;
// bob's message on a branch that did not see it is under shared history,
// so dave, who joins later, sees it (and what came before the change) but
// not alice's message after the change.
func TestStateVis_ForkDidNotSeeJoinedOnly(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	dave := st.Member(t, "dave")
	r := newRemote(t, st)
	room, join := joinBob(t, st, r, alice)
	stateAtJoin := r.state(room)

	say(t, alice, room, "before the change")
	setVisibility(t, alice, room, "joined")
	hidden := say(t, alice, room, "after the change")
	fork := r.message(room, "on the shared branch", []string{join.EventID()}, stateAtJoin)
	receiveCosting(t, r, "bob's message on the branch under shared", fork, servertest.Want(14, 31, 11))
	wantEqual(t, "resolved history visibility", stateOf(t, alice, room, "m.room.history_visibility", "")["history_visibility"], "joined")

	if _, err := dave.JoinRoomByID(bg, room); err != nil {
		t.Fatalf("dave joins: %v", err)
	}
	say(t, alice, room, "after dave joined")
	want := []string{"before the change", "on the shared branch", "after dave joined"}
	wantEqual(t, "dave's /messages", shown(t, dave, room), want)
	wantEqual(t, "alice's /messages", shown(t, alice, room), []string{"before the change", "after the change", "on the shared branch", "after dave joined"})
	seesEvent(t, dave, room, id.EventID(fork.EventID()), true)
	seesEvent(t, dave, room, hidden, false)

	// An initial sync of dave's: the same events, in the same order.
	resp, err := dave.FullSyncRequest(bg, mautrix.ReqSync{FullState: true, FilterID: `{"room":{"timeline":{"limit":50}}}`})
	if err != nil {
		t.Fatal(err)
	}
	wantEqual(t, "dave's sync timeline", bodies(resp.Rooms.Join[room].Timeline.Events), want)
}

// carolInJoinedOnly starts a server with alice's joined-only room, which
// bob of a remote server and then carol have joined; carol has said
// "carol is in".
func carolInJoinedOnly(t *testing.T) (st *servertest.Stack, alice, carol servertest.Member, r *remote, room id.RoomID) {
	t.Helper()
	st = servertest.Start(t)
	alice = st.Member(t, "alice")
	carol = st.Member(t, "carol")
	r = newRemote(t, st)
	room, _ = joinBob(t, st, r, alice)
	setVisibility(t, alice, room, "joined")
	if _, err := carol.JoinRoomByID(bg, room); err != nil {
		t.Fatalf("carol joins: %v", err)
	}
	say(t, carol, room, "carol is in")
	return st, alice, carol, r, room
}

// TestStateVis_ForkDidNotSeeBan: in a joined-only room alice bans carol;
// bob's message on a branch that did not see the ban is one carol was
// joined at, so she still sees it, though she is banned and the ban came
// first; alice's message after the ban she does not see.
func TestStateVis_ForkDidNotSeeBan(t *testing.T) {
	st, alice, carol, r, room := carolInJoinedOnly(t)
	ext, _, err := st.Server.Rooms.Extremities(bg, string(room))
	if err != nil {
		t.Fatal(err)
	}
	stateBefore := r.state(room)

	if _, err := alice.BanUser(bg, room, &mautrix.ReqBanUser{UserID: carol.UserID, Reason: "test"}); err != nil {
		t.Fatalf("ban: %v", err)
	}
	hidden := say(t, alice, room, "after the ban")
	fork := r.message(room, "carol was still in", ext, stateBefore)
	receiveCosting(t, r, "bob's message on the branch without the ban", fork, servertest.Want(14, 36, 13))
	wantEqual(t, "carol's membership", stateOf(t, alice, room, "m.room.member", string(carol.UserID))["membership"], "ban")

	wantEqual(t, "carol's /messages", shown(t, carol, room), []string{"carol is in", "carol was still in"})
	seesEvent(t, carol, room, id.EventID(fork.EventID()), true)
	seesEvent(t, carol, room, hidden, false)
	wantMembership(t, carol, room, id.EventID(fork.EventID()), "join")
}

// TestStateVis_ForkSawLeave: in a joined-only room carol leaves and joins
// again; bob's message on a branch that saw her leave but not her return
// is one she was not joined at: she does not see it, though the room's
// current state had her joined when it arrived; /sync does not bring it.
func TestStateVis_ForkSawLeave(t *testing.T) {
	st, alice, carol, r, room := carolInJoinedOnly(t)
	if _, err := carol.LeaveRoom(bg, room); err != nil {
		t.Fatalf("carol leaves: %v", err)
	}
	ext, _, err := st.Server.Rooms.Extremities(bg, string(room))
	if err != nil {
		t.Fatal(err)
	}
	stateAtLeave := r.state(room)
	say(t, alice, room, "while carol was away")
	if _, err := carol.JoinRoomByID(bg, room); err != nil {
		t.Fatalf("carol joins again: %v", err)
	}
	say(t, alice, room, "carol is back")
	first, err := carol.FullSyncRequest(bg, mautrix.ReqSync{})
	if err != nil {
		t.Fatal(err)
	}

	fork := r.message(room, "carol had left", ext, stateAtLeave)
	receiveCosting(t, r, "bob's message on the branch with the leave", fork, servertest.Want(16, 36, 13))
	wantEqual(t, "carol's membership", stateOf(t, alice, room, "m.room.member", string(carol.UserID))["membership"], "join")
	say(t, alice, room, "after the fork")

	want := []string{"carol is in", "carol is back", "after the fork"}
	wantEqual(t, "carol's /messages", shown(t, carol, room), want)
	wantEqual(t, "alice's /messages", shown(t, alice, room), []string{"carol is in", "while carol was away", "carol is back", "carol had left", "after the fork"})
	seesEvent(t, carol, room, id.EventID(fork.EventID()), false)

	next, err := carol.FullSyncRequest(bg, mautrix.ReqSync{Since: first.NextBatch})
	if err != nil {
		t.Fatal(err)
	}
	wantEqual(t, "carol's incremental sync", bodies(next.Rooms.Join[room].Timeline.Events), []string{"after the fork"})
	initial, err := carol.FullSyncRequest(bg, mautrix.ReqSync{FullState: true, FilterID: `{"room":{"timeline":{"limit":50}}}`})
	if err != nil {
		t.Fatal(err)
	}
	wantEqual(t, "carol's initial sync", bodies(initial.Rooms.Join[room].Timeline.Events), want)
}

// receiveCosting takes ev in, accepted, at the cost want. What the state
// at a forked event records costs, where it differs from the lists, the
// GetItem of the room info or the user's membership item (1 RCU) and its
// write in the event's transaction (2 WCU): 1 call, 1 RCU, 2 WCU more than
// the same fork did before.
func receiveCosting(t *testing.T, r *remote, what string, ev events.PDU, want servertest.Cost) {
	t.Helper()
	ctx, m := store.WithMeter(bg)
	out, err := r.rooms.Receive(ctx, ev)
	if err != nil || out.Status != rooms.Accepted {
		t.Fatalf("%s: %+v, %v", what, out, err)
	}
	servertest.CheckUsage(t, what, m.Usage(), want)
}

func setVisibility(t *testing.T, u mxUser, room id.RoomID, v string) {
	t.Helper()
	if _, err := u.SendStateEvent(bg, room, event.StateHistoryVisibility, "", map[string]string{"history_visibility": v}); err != nil {
		t.Fatalf("history visibility %s: %v", v, err)
	}
}

// seesEvent checks /event and /context of ev for u: found when want, else
// 404 M_NOT_FOUND.
func seesEvent(t *testing.T, u mxUser, room id.RoomID, ev id.EventID, want bool) {
	t.Helper()
	got, err := u.GetEvent(bg, room, ev)
	ctx, cerr := u.Context(bg, room, ev, nil, 10)
	if !want {
		wantErr(t, "/event of "+string(ev), err, "M_NOT_FOUND", http.StatusNotFound)
		wantErr(t, "/context of "+string(ev), cerr, "M_NOT_FOUND", http.StatusNotFound)
		return
	}
	if err != nil || got.ID != ev {
		t.Fatalf("/event of %s: %v", ev, err)
	}
	if cerr != nil || ctx.Event == nil || ctx.Event.ID != ev {
		t.Fatalf("/context of %s: %v", ev, cerr)
	}
}

// wantMembership checks unsigned.membership of ev as /event shows it to u.
func wantMembership(t *testing.T, u mxUser, room id.RoomID, ev id.EventID, want string) {
	t.Helper()
	var got struct {
		Unsigned struct {
			Membership string `json:"membership"`
		} `json:"unsigned"`
	}
	if err := raw(u, "GET", nil, &got, "v3", "rooms", room, "event", ev); err != nil {
		t.Fatal(err)
	}
	wantEqual(t, "unsigned.membership of "+string(ev), got.Unsigned.Membership, want)
}
