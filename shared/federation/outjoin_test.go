package federation_test

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// messageIDs is the room's timeline as a member's /messages shows it,
// oldest first: event IDs.
func messageIDs(t *testing.T, c *mautrix.Client, room id.RoomID) []string {
	t.Helper()
	resp, err := c.Messages(background, room, "", "", mautrix.DirectionBackward, nil, 1000)
	if err != nil {
		t.Fatalf("/messages of %s: %v", c.UserID, err)
	}
	var ids []string
	for i := len(resp.Chunk) - 1; i >= 0; i-- {
		ids = append(ids, string(resp.Chunk[i].ID))
	}
	return ids
}

// TestTwoServers: two Cirrus servers, each with its sender and inbox
// worker. bob@B joins alice@A's public version 12 room by its ID through
// server_name=A (make_join, send_join, the answer checked, the room taken
// in on B); messages and a topic go both ways; both /messages list the
// same events in the same order. Then alice and bob send at once: both
// servers end with the same events and the same current state, and the
// next message of each side builds on every extremity it holds.
func TestTwoServers(t *testing.T) {
	a, b := twoServers(t)
	alice := a.Member(t, "alice")
	bob := b.Member(t, "bob")
	created, err := alice.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "12", Name: "Lobby"})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID

	// Without a server to ask, B knows nothing of the room: 404.
	if _, err := bob.JoinRoomByID(background, room); !isStatus(err, http.StatusNotFound, "M_NOT_FOUND") {
		t.Fatalf("join without via: %v, want 404 M_NOT_FOUND", err)
	}
	// A room the server asked does not hold: its 404.
	if _, err := bob.JoinRoom(background, "!nosuchroom", &mautrix.ReqJoinRoom{Via: []string{a.Name()}}); !isStatus(err, http.StatusNotFound, "M_NOT_FOUND") {
		t.Fatalf("join of a room A does not hold: %v, want 404 M_NOT_FOUND", err)
	}
	// An invite-only room: A's 403.
	private, err := alice.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "12"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoom(background, string(private.RoomID), &mautrix.ReqJoinRoom{Via: []string{a.Name()}}); !isStatus(err, http.StatusForbidden, "M_FORBIDDEN") {
		t.Fatalf("join of an invite-only room: %v, want 403 M_FORBIDDEN", err)
	}
	// A server that does not answer is passed over for the next.
	if _, err := bob.JoinRoom(background, string(room), &mautrix.ReqJoinRoom{Via: []string{"127.0.0.1:1", a.Name()}}); err != nil {
		t.Fatalf("bob joins through 127.0.0.1:1 then %s: %v", a.Name(), err)
	}
	// The state's blocks are one per bucket its keys fall in, and the keys
	// hold the servers' names, whose ports differ from run to run: a block
	// more or less, one write. The join's append reads the room's members
	// and server ACL for the sender, and the presence and device-list
	// hooks' items; e2ekeys reads the members once to record the remote
	// ones (a marker create, a Query, a BatchWriteItem), and presence
	// once to index them (a Query, a BatchWriteItem).
	// The room's name is indexed for search (2 writes).
	if u := b.LastRequestTo(t, "/join/").DynamoDB; u.Calls > 31 || u.ReadUnits > 15 || u.WriteUnits > 54 {
		t.Errorf("remote join of a room of 7 state events: %d calls, %.1f RCU, %.1f WCU; want at most 31, 15, 54", u.Calls, u.ReadUnits, u.WriteUnits)
	}
	if ev, err := a.Server.Rooms.StateEvent(background, string(room), "m.room.member", string(bob.UserID)); err != nil {
		t.Fatalf("bob's member event on A: %v", err)
	} else if m, _ := ev.Membership(); m != "join" {
		t.Fatalf("bob's membership on A: %q", m)
	}
	if m, err := b.Server.Rooms.Membership(background, string(bob.UserID), string(room)); err != nil || m != "join" {
		t.Fatalf("bob's membership on B: %q %v", m, err)
	}

	if _, err := alice.SendText(background, room, "hello from A"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice's message on B", func() ([]string, bool) {
		b := bodies(t, bob.Client, room)
		return b, slices.Contains(b, "hello from A")
	}, noLogs)
	if _, err := bob.SendText(background, room, "hello from B"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob's message on A", func() ([]string, bool) {
		b := bodies(t, alice.Client, room)
		return b, slices.Contains(b, "hello from B")
	}, noLogs)
	if _, err := alice.SendStateEvent(background, room, event.StateTopic, "", map[string]any{"topic": "from A"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice's topic on B", func() ([]string, bool) { return topicOf(bob.Client, room) }, noLogs)
	var pl event.PowerLevelsEventContent
	if err := alice.StateEvent(background, room, event.StatePowerLevels, "", &pl); err != nil {
		t.Fatal(err)
	}
	pl.SetUserLevel(bob.UserID, 50)
	if _, err := alice.SendStateEvent(background, room, event.StatePowerLevels, "", &pl); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob's power on B", func() ([]string, bool) {
		var got event.PowerLevelsEventContent
		err := bob.StateEvent(background, room, event.StatePowerLevels, "", &got)
		return nil, err == nil && got.GetUserLevel(bob.UserID) == 50
	}, noLogs)
	if _, err := bob.SendStateEvent(background, room, event.StateTopic, "", map[string]any{"topic": "from B"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob's topic on A", func() ([]string, bool) {
		got, _ := topicOf(alice.Client, room)
		return got, got[0] == "from B"
	}, noLogs)
	sameTimeline(t, alice.Client, bob.Client, room)

	// A fork: both send at once.
	var wg sync.WaitGroup
	for _, m := range []servertest.Member{alice, bob} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 4 {
				if _, err := m.SendText(background, room, fmt.Sprintf("%s %d", m.UserID, i)); err != nil {
					t.Errorf("%s: %v", m.UserID, err)
				}
			}
		}()
	}
	wg.Wait()
	want := func(b []string) bool {
		n := 0
		for _, s := range b {
			if strings.HasPrefix(s, "@") {
				n++
			}
		}
		return n == 8
	}
	waitFor(t, "the eight concurrent messages on A", func() ([]string, bool) { b := bodies(t, alice.Client, room); return b, want(b) }, noLogs)
	waitFor(t, "the eight concurrent messages on B", func() ([]string, bool) { b := bodies(t, bob.Client, room); return b, want(b) }, noLogs)
	// Each side's next message merges what it holds: its prev_events are
	// the side's forward extremities (more than one after a fork). B's
	// merge may instead find A's merge already arrived, which merged the
	// same two extremities (both sides hold the same events): then it
	// builds on that alone.
	merge := func(st *servertest.Stack, m servertest.Member, body string, or ...string) string {
		t.Helper()
		ext, _, err := st.Server.Rooms.Extremities(background, string(room))
		if err != nil {
			t.Fatal(err)
		}
		sent, err := m.SendText(background, room, body)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := st.Server.Rooms.Event(background, string(room), string(sent.EventID))
		if err != nil {
			t.Fatal(err)
		}
		prev := ev.PDU.PrevEventIDs()
		t.Logf("%s: %d forward extremities before %q", st.Name(), len(ext), body)
		sort.Strings(ext)
		sort.Strings(prev)
		if !slices.Equal(ext, prev) && !slices.Equal(prev, or) {
			t.Errorf("%q: prev_events %v, want the extremities %v", body, prev, ext)
		}
		return string(sent.EventID)
	}
	mergeA := merge(a, alice, "merge A")
	merge(b, bob, "merge B", mergeA)
	waitFor(t, "both merges on both sides", func() ([]string, bool) {
		x, y := bodies(t, alice.Client, room), bodies(t, bob.Client, room)
		ok := slices.Contains(x, "merge B") && slices.Contains(y, "merge A") && slices.Contains(x, "merge A") && slices.Contains(y, "merge B")
		return append(x, y...), ok
	}, noLogs)
	sameSet(t, messageIDs(t, alice.Client, room), messageIDs(t, bob.Client, room))
	sameState(t, a, b, string(room))
	extA, _, err := a.Server.Rooms.Extremities(background, string(room))
	if err != nil {
		t.Fatal(err)
	}
	extB, _, err := b.Server.Rooms.Extremities(background, string(room))
	if err != nil {
		t.Fatal(err)
	}
	if len(extA) > 2 || len(extB) > 2 {
		t.Errorf("extremities after the merges: A %v, B %v", extA, extB)
	}
}

func noLogs() string { return "" }

// topicOf is the room's topic as c reads it; true once it is "from A".
func topicOf(c *mautrix.Client, room id.RoomID) ([]string, bool) {
	var tc struct {
		Topic string `json:"topic"`
	}
	err := c.StateEvent(background, room, event.StateTopic, "", &tc)
	return []string{tc.Topic}, err == nil && tc.Topic == "from A"
}

func isStatus(err error, status int, code string) bool {
	var he mautrix.HTTPError
	if !errors.As(err, &he) {
		return false
	}
	return he.Response != nil && he.Response.StatusCode == status && (he.RespError == nil || he.RespError.ErrCode == code)
}

// bodies is the text of the room's messages as c's /messages shows them.
func bodies(t *testing.T, c *mautrix.Client, room id.RoomID) []string {
	t.Helper()
	resp, err := c.Messages(background, room, "", "", mautrix.DirectionBackward, nil, 1000)
	if err != nil {
		t.Fatalf("/messages of %s: %v", c.UserID, err)
	}
	var out []string
	for _, ev := range resp.Chunk {
		if ev.Type == event.EventMessage {
			if b, ok := ev.Content.Raw["body"].(string); ok {
				out = append(out, b)
			}
		}
	}
	return out
}

// sameTimeline checks that both /messages list the same events in the same
// order.
func sameTimeline(t *testing.T, x, y *mautrix.Client, room id.RoomID) {
	t.Helper()
	a, b := messageIDs(t, x, room), messageIDs(t, y, room)
	if !slices.Equal(a, b) {
		t.Fatalf("/messages differ:\n%s: %v\n%s: %v", x.UserID, a, y.UserID, b)
	}
}

func sameSet(t *testing.T, a, b []string) {
	t.Helper()
	a, b = slices.Clone(a), slices.Clone(b)
	sort.Strings(a)
	sort.Strings(b)
	if !slices.Equal(a, b) {
		t.Fatalf("the two servers hold different events:\nA: %v\nB: %v", a, b)
	}
}

// sameState checks that both servers' current state holds the same events.
func sameState(t *testing.T, a, b *servertest.Stack, room string) {
	t.Helper()
	ids := func(st *servertest.Stack) []string {
		evs, err := st.Server.Rooms.CurrentState(background, room)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, ev := range evs {
			out = append(out, ev.Type()+" "+*ev.StateKey()+" "+ev.EventID())
		}
		sort.Strings(out)
		return out
	}
	if x, y := ids(a), ids(b); !slices.Equal(x, y) {
		t.Fatalf("current state differs:\nA: %v\nB: %v", x, y)
	}
}

// TestTwoServers_LargeRoom: bob@B joins a room of A of 300 members; the
// join's time and cost are logged (docs/storage.md quotes them), and B's
// current state is A's.
func TestTwoServers_LargeRoom(t *testing.T) {
	if testing.Short() {
		t.Skip("300 members")
	}
	a, b := twoServers(t)
	alice := a.Member(t, "alice")
	bob := b.Member(t, "bob")
	created, err := alice.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "12"})
	if err != nil {
		t.Fatal(err)
	}
	room := string(created.RoomID)
	for i := range 299 {
		if err := a.Server.Rooms.Join(background, fmt.Sprintf("@user%d:%s", i, a.Name()), room, ""); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	if _, err := bob.JoinRoom(background, room, &mautrix.ReqJoinRoom{Via: []string{a.Name()}}); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	u := b.LastRequestTo(t, "/join/").DynamoDB
	t.Logf("remote join of a room of 300 members: %v, %d calls, %.1f RCU, %.1f WCU", took, u.Calls, u.ReadUnits, u.WriteUnits)
	sameState(t, a, b, room)
}

// TestTwoServers_EveryVersion: bob@B joins alice@A's room of each stable
// version (make_join's template filled and signed by B in each event
// format, send_join's answer checked); his /sync shows the room joined
// with its name; alice's next message reaches him.
func TestTwoServers_EveryVersion(t *testing.T) {
	a, b := twoServers(t)
	alice := a.Member(t, "alice")
	bob := b.Member(t, "bob")
	for v := 1; v <= 12; v++ {
		version := fmt.Sprint(v)
		created, err := alice.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: id.RoomVersion(version), Name: "v" + version})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		if _, err := bob.JoinRoom(background, string(room), &mautrix.ReqJoinRoom{Via: []string{a.Name()}}); err != nil {
			t.Fatalf("v%s: bob joins: %v", version, err)
		}
		resp, err := bob.SyncRequest(background, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		joined, ok := resp.Rooms.Join[room]
		if !ok {
			t.Fatalf("v%s: the room is not among bob's joined rooms in /sync", version)
		}
		name := ""
		for _, ev := range append(joined.State.Events, joined.Timeline.Events...) {
			if ev.Type == event.StateRoomName {
				name, _ = ev.Content.Raw["name"].(string)
			}
		}
		if name != "v"+version {
			t.Errorf("v%s: the room's name in bob's /sync: %q", version, name)
		}
		if _, err := alice.SendText(background, room, "hello v"+version); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "alice's message of v"+version+" on B", func() ([]string, bool) {
			got := bodies(t, bob.Client, room)
			return got, slices.Contains(got, "hello v"+version)
		}, noLogs)
		sameTimeline(t, alice.Client, bob.Client, room)
	}
}

// TestTwoServers_Alias: bob@B joins alice@A's room by its alias on A
// (query/directory to A, then the join through A and the servers it
// names); an alias A does not know is 404 M_NOT_FOUND.
func TestTwoServers_Alias(t *testing.T) {
	a, b := twoServers(t)
	alice := a.Member(t, "alice")
	bob := b.Member(t, "bob")
	created, err := alice.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "lobby"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoom(background, "#nope:"+a.Name(), nil); !isStatus(err, http.StatusNotFound, "M_NOT_FOUND") {
		t.Fatalf("join of an unknown alias: %v, want 404 M_NOT_FOUND", err)
	}
	joined, err := bob.JoinRoom(background, "#lobby:"+a.Name(), nil)
	if err != nil {
		t.Fatalf("bob joins #lobby:%s: %v", a.Name(), err)
	}
	if joined.RoomID != created.RoomID {
		t.Fatalf("joined %s, want %s", joined.RoomID, created.RoomID)
	}
	if m, err := b.Server.Rooms.Membership(background, string(bob.UserID), string(created.RoomID)); err != nil || m != "join" {
		t.Fatalf("bob's membership on B: %q %v", m, err)
	}
}
