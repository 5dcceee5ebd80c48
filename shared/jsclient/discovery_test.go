package jsclient_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
	"github.com/cirrus-matrix/cirrus/shared/testenv"
)

// TestDiscoveryWithJSSDK: the endpoints Element reaches through
// matrix-js-sdk's own methods, on a world mautrix-go made: a space's
// hierarchy walked a room a page, room summaries, server-side search paged
// back, the user directory, a room's threads paged and filtered, and
// account data deleted the SDK's way (a PUT of {}) and MSC3391's
// (scripts/jsclient/discovery.mjs, which asserts what it is answered).
func TestDiscoveryWithJSSDK(t *testing.T) {
	const timeout = 30 * time.Second
	st := servertest.Start(t)
	w := newDiscoveryWorld(t, st)
	doc, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}

	began := time.Now()
	out, err := testenv.RunJS(t, timeout+30*time.Second, "discovery.mjs",
		"CIRRUS_URL="+st.URL,
		"CIRRUS_USERS="+w.Alice+","+w.Bob,
		"CIRRUS_PASSWORD="+password,
		"CIRRUS_WORLD="+string(doc),
		"CIRRUS_TIMEOUT_MS="+strconv.FormatInt(timeout.Milliseconds(), 10),
	)
	if err != nil {
		t.Fatalf("matrix-js-sdk discovery.mjs: %v; its output:\n%s", err, out)
	}
	if !strings.Contains(out, "\nPASS in ") {
		t.Fatalf("matrix-js-sdk discovery.mjs exited 0 without PASS; its output:\n%s", out)
	}
	t.Logf("matrix-js-sdk discovery.mjs in %v:\n%s", time.Since(began).Round(time.Millisecond), out)
	checkServed(t, st)
}

// discoveryWorld is what the script is told of the world it checks.
type discoveryWorld struct {
	Alice, Bob, Alice2, Carol     string
	Space, Garden, Library, Attic string
	LibraryAlias                  string
	// Thread roots in Garden, T1 the one with the latest reply.
	T1, T2, T3 string
}

// newDiscoveryWorld makes, as alice:
//
//	Discovery (public space; bob joined)
//	├── Garden   order "a", suggested, public; bob and alice2 joined
//	├── Library  order "b", public, #library; alice alone
//	└── Attic    order "c", invite-only: bob may not see it
//
// with "pineapple" messages in Garden (alice, bob, alice) and Library, then
// three threads in Garden whose latest replies come T3, T2, T1. carol
// shares no room with anyone.
func newDiscoveryWorld(t *testing.T, st *servertest.Stack) discoveryWorld {
	t.Helper()
	ctx := context.Background()
	alice, bob, alice2, carol := st.Member(t, "alice"), st.Member(t, "bob"), st.Member(t, "alice2"), st.Member(t, "carol")
	for m, name := range map[*servertest.Member]string{&alice: "Alice Liddell", &bob: "Bob Builder", &alice2: "Alice Cooper", &carol: "Carol Danvers"} {
		if err := m.SetDisplayName(ctx, name); err != nil {
			t.Fatalf("display name of %s: %v", m.ID, err)
		}
	}
	create := func(req *mautrix.ReqCreateRoom) id.RoomID {
		t.Helper()
		resp, err := alice.CreateRoom(ctx, req)
		if err != nil {
			t.Fatalf("create %s: %v", req.Name, err)
		}
		return resp.RoomID
	}
	w := discoveryWorld{Alice: alice.ID, Bob: bob.ID, Alice2: alice2.ID, Carol: carol.ID}
	space := create(&mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Discovery", Topic: "what js-sdk finds",
		CreationContent: map[string]any{"type": "m.space"}})
	garden := create(&mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Garden", Topic: "where pineapples grow"})
	library := create(&mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Library", Topic: "quiet please", RoomAliasName: "library"})
	attic := create(&mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Attic"})
	w.Space, w.Garden, w.Library, w.Attic = string(space), string(garden), string(library), string(attic)
	w.LibraryAlias = "#library:" + alice.UserID.Homeserver()

	via := []string{alice.UserID.Homeserver()}
	for _, c := range []struct {
		room    id.RoomID
		content map[string]any
	}{
		{garden, map[string]any{"via": via, "order": "a", "suggested": true}},
		{library, map[string]any{"via": via, "order": "b"}},
		{attic, map[string]any{"via": via, "order": "c"}},
	} {
		if _, err := alice.SendStateEvent(ctx, space, event.StateSpaceChild, string(c.room), c.content); err != nil {
			t.Fatalf("link %s: %v", c.room, err)
		}
	}
	for _, j := range []struct {
		m    servertest.Member
		room id.RoomID
	}{{bob, space}, {bob, garden}, {alice2, garden}} {
		if _, err := j.m.JoinRoomByID(ctx, j.room); err != nil {
			t.Fatalf("%s joins %s: %v", j.m.ID, j.room, err)
		}
	}

	send := func(m servertest.Member, room id.RoomID, body string, thread id.EventID) id.EventID {
		t.Helper()
		c := &event.MessageEventContent{MsgType: event.MsgText, Body: body}
		if thread != "" {
			c.RelatesTo = (&event.RelatesTo{}).SetThread(thread, thread)
		}
		resp, err := m.SendMessageEvent(ctx, room, event.EventMessage, c)
		if err != nil {
			t.Fatalf("%s sends %q: %v", m.ID, body, err)
		}
		return resp.EventID
	}
	send(alice, garden, "pineapple on pizza", "")
	send(bob, garden, "no pineapple please", "")
	send(alice, garden, "pineapple forever", "")
	send(alice, library, "pineapple in the library", "")

	t3 := send(alice, garden, "thread about juice", "")
	send(alice2, garden, "orange juice", t3)
	t1 := send(alice, garden, "thread about tea", "")
	t2 := send(bob, garden, "thread about coffee", "")
	send(bob, garden, "green tea", t1)
	send(alice, garden, "espresso", t2)
	send(alice, garden, "black tea", t1)
	w.T1, w.T2, w.T3 = string(t1), string(t2), string(t3)
	return w
}
