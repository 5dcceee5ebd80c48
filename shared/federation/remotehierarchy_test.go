package federation_test

import (
	"fmt"
	"net/url"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestTwoServers_RemoteHierarchy: alice's space on A (version 10, so its
// room ID names A) has a public child and an invite-only one; bob's space
// on B has alice's space as a child, via A, and a child via a server that
// does not answer. bob's hierarchy of his space shows his space, alice's
// (with both child events) and its public child, as A describes them
// (/hierarchy), not the invite-only child nor the unreachable one; the
// hierarchy of alice's space itself, which B does not hold, is asked of
// the server its room ID names. Its room summary, asked on B with A as
// via, is A's description.
func TestTwoServers_RemoteHierarchy(t *testing.T) {
	a, b := twoServers(t)
	alice := a.Member(t, "alice")
	bob := b.Member(t, "bob")
	space := func(c servertest.Member, version, name string) id.RoomID {
		t.Helper()
		created, err := c.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: id.RoomVersion(version), Name: name,
			CreationContent: map[string]any{"type": "m.space"}})
		if err != nil {
			t.Fatal(err)
		}
		return created.RoomID
	}
	addChild := func(c servertest.Member, parent, child id.RoomID, via string) {
		t.Helper()
		if _, err := c.SendStateEvent(background, parent, event.StateSpaceChild, string(child), map[string]any{"via": []string{via}}); err != nil {
			t.Fatal(err)
		}
	}
	aliceSpace := space(alice, "10", "Alice's space")
	public, err := alice.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Open"})
	if err != nil {
		t.Fatal(err)
	}
	private, err := alice.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Closed"})
	if err != nil {
		t.Fatal(err)
	}
	addChild(alice, aliceSpace, public.RoomID, a.Name())
	addChild(alice, aliceSpace, private.RoomID, a.Name())
	bobSpace := space(bob, "12", "Bob's space")
	addChild(bob, bobSpace, aliceSpace, a.Name())
	addChild(bob, bobSpace, "!gone:127.0.0.1:1", "127.0.0.1:1")

	h, err := bob.Hierarchy(background, bobSpace, &mautrix.ReqHierarchy{})
	if err != nil {
		t.Fatal(err)
	}
	var got []id.RoomID
	for _, r := range h.Rooms {
		got = append(got, r.RoomID)
	}
	if want := []id.RoomID{bobSpace, aliceSpace, public.RoomID}; !slices.Equal(got, want) {
		t.Fatalf("bob's hierarchy: %v, want %v", got, want)
	}
	if h.Rooms[1].Name != "Alice's space" || len(h.Rooms[1].ChildrenState) != 2 || h.Rooms[2].Name != "Open" {
		t.Fatalf("alice's space and its child as B describes them: %+v / %+v", h.Rooms[1], h.Rooms[2])
	}

	// Paged one room at a time, the rooms held elsewhere are asked about
	// from the via servers kept in the page's session.
	var paged []id.RoomID
	from := ""
	for range 5 {
		h, err := bob.Hierarchy(background, bobSpace, &mautrix.ReqHierarchy{Limit: 1, From: from})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range h.Rooms {
			paged = append(paged, r.RoomID)
		}
		if from = h.NextBatch; from == "" {
			break
		}
	}
	if want := []id.RoomID{bobSpace, aliceSpace, public.RoomID}; !slices.Equal(paged, want) {
		t.Fatalf("bob's hierarchy a room a page: %v, want %v", paged, want)
	}

	h, err = bob.Hierarchy(background, aliceSpace, &mautrix.ReqHierarchy{})
	if err != nil {
		t.Fatal(err)
	}
	got = got[:0]
	for _, r := range h.Rooms {
		got = append(got, r.RoomID)
	}
	if want := []id.RoomID{aliceSpace, public.RoomID}; !slices.Equal(got, want) {
		t.Fatalf("the hierarchy of alice's space on B: %v, want %v", got, want)
	}

	// The room summary of a room B does not hold comes from the via
	// servers too; one the user may not see, or that no server describes,
	// is 404.
	summary := func(room id.RoomID, via string) servertest.Reply {
		return b.Do(t, "GET", "/_matrix/client/v1/room_summary/"+url.PathEscape(string(room))+"?via="+url.QueryEscape(via), bob.User.AccessToken, nil)
	}
	if r := summary(aliceSpace, a.Name()); r.Status != 200 || r.Body["name"] != "Alice's space" || r.Body["room_type"] != "m.space" || r.Body["membership"] != "leave" {
		t.Fatalf("room summary of alice's space on B: %d %s", r.Status, r.Raw)
	}
	wantError(t, "room summary of alice's invite-only room", summary(private.RoomID, a.Name()), 404, "M_NOT_FOUND")
	wantError(t, "room summary via a server that does not answer", summary("!gone:127.0.0.1:1", "127.0.0.1:1"), 404, "M_NOT_FOUND")

	// A room B does not hold and no server describes is 403, as an unknown
	// room is.
	r := b.Do(t, "GET", "/_matrix/client/v1/rooms/"+url.PathEscape("!gone:127.0.0.1:1")+"/hierarchy", bob.User.AccessToken, nil)
	wantError(t, "the hierarchy of a room no server describes", r, 403, "M_FORBIDDEN")
}

// TestTwoServers_RemoteHierarchyPaged: a space on B with 12 children held
// by A: a page asks A about 10 of them at most, and the next page goes on
// with the rest; every child is listed once, in the space's order.
func TestTwoServers_RemoteHierarchyPaged(t *testing.T) {
	a, b := twoServers(t)
	alice := a.Member(t, "alice")
	bob := b.Member(t, "bob")
	created, err := bob.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Bob's space",
		CreationContent: map[string]any{"type": "m.space"}})
	if err != nil {
		t.Fatal(err)
	}
	space := created.RoomID
	want := []id.RoomID{space}
	for i := range 12 {
		child, err := alice.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.SendStateEvent(background, space, event.StateSpaceChild, string(child.RoomID),
			map[string]any{"via": []string{a.Name()}, "order": fmt.Sprintf("%02d", i)}); err != nil {
			t.Fatal(err)
		}
		want = append(want, child.RoomID)
	}
	first, err := bob.Hierarchy(background, space, &mautrix.ReqHierarchy{})
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Rooms) != 11 || first.NextBatch == "" {
		t.Fatalf("first page: %d rooms, next_batch %q; want 11 (the space and the 10 A was asked about) and more", len(first.Rooms), first.NextBatch)
	}
	second, err := bob.Hierarchy(background, space, &mautrix.ReqHierarchy{From: first.NextBatch})
	if err != nil {
		t.Fatal(err)
	}
	var got []id.RoomID
	for _, r := range append(first.Rooms, second.Rooms...) {
		got = append(got, r.RoomID)
	}
	if !slices.Equal(got, want) || second.NextBatch != "" {
		t.Fatalf("both pages: %v (next_batch %q), want %v", got, second.NextBatch, want)
	}
}
