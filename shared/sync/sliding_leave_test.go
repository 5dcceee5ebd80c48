package sync_test

import (
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestSliding_KickedAndBanned: rooms the user was kicked or banned from
// stay in the list, with their membership, as the MSC says; rooms the user
// left themselves before the connection, or was banned from without ever
// joining, are not in it; a room left during the connection that was
// never sent leaves the list, a kick during it stays.
func TestSliding_KickedAndBanned(t *testing.T) {
	st := servertest.Start(t)
	au, bu := st.Register(t, "alice"), st.Register(t, "bob")
	alice, bob := st.Client(t, au), st.Client(t, bu)
	me := id.UserID(au.ID)
	joined := func(name string) id.RoomID {
		t.Helper()
		r := ssRoomOf(t, bob, name)
		if _, err := alice.JoinRoomByID(bg, r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	kicked, banned, left := joined("kicked"), joined("banned"), joined("left")
	if _, err := bob.KickUser(bg, kicked, &mautrix.ReqKickUser{UserID: me, Reason: "out"}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.BanUser(bg, banned, &mautrix.ReqBanUser{UserID: me}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.LeaveRoom(bg, left); err != nil {
		t.Fatal(err)
	}
	never := ssRoomOf(t, bob, "never joined", me)
	if _, err := bob.BanUser(bg, never, &mautrix.ReqBanUser{UserID: me}); err != nil {
		t.Fatal(err)
	}
	body := func(last int) map[string]any {
		return map[string]any{"lists": map[string]any{"all": map[string]any{
			"ranges": [][]int{{0, last}}, "timeline_limit": 1, "required_state": [][]string{},
		}}}
	}
	first := ssSlide(t, st.URL, ssUnstable, au, "", 0, body(9))
	got := slices.Clone(first.Lists["all"].Ops[0].RoomIDs)
	slices.Sort(got)
	want := []string{kicked.String(), banned.String()}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("list %v, want the kicked and the banned rooms only (%v)", got, want)
	}
	// v4 says the membership.
	v4 := body(9)
	v4["conn_id"] = "v4"
	whole := ssSlide(t, st.URL, ssV4, au, "", 0, v4)
	if m := whole.Rooms[kicked.String()].Membership; m != "leave" {
		t.Errorf("kicked room's membership %q, want leave", m)
	}
	if m := whole.Rooms[banned.String()].Membership; m != "ban" {
		t.Errorf("banned room's membership %q, want ban", m)
	}
	if len(whole.Rooms) != 2 {
		t.Errorf("v4 rooms %d, want 2", len(whole.Rooms))
	}

	// During a connection whose range holds one room: a room alice
	// leaves herself, never sent, goes; one she is kicked from stays.
	quit, out, top := joined("quit"), joined("out"), joined("top")
	conn := ssSlide(t, st.URL, ssUnstable, au, "", 0, body(0))
	if ids := conn.Lists["all"].Ops[0].RoomIDs; conn.Lists["all"].Count != 5 || !slices.Equal(ids, []string{top.String()}) {
		t.Fatalf("list %+v, want 5 rooms, the top one in range", conn.Lists)
	}
	if _, err := alice.LeaveRoom(bg, quit); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.KickUser(bg, out, &mautrix.ReqKickUser{UserID: me}); err != nil {
		t.Fatal(err)
	}
	next := ssSlide(t, st.URL, ssUnstable, au, conn.Pos, 0, body(9))
	got = slices.Clone(next.Lists["all"].Ops[0].RoomIDs)
	slices.Sort(got)
	want = []string{kicked.String(), banned.String(), out.String(), top.String()}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("after leaving one room and a kick from another: list %v, want %v", got, want)
	}
	if _, ok := next.Rooms[out.String()]; !ok {
		t.Errorf("the room kicked from during the connection did not come: %+v", next.Rooms)
	}
}
