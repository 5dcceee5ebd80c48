package federation_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestJoin_PartialState: alice joins a room of 300 members whose resident
// server answers send_join without its members (omit_members), naming a
// second server in the room, and holds back its /state answer, so that
// the join, after waiting a moment for the whole state, takes the room in
// with partial state. While the state is loading: the room is held and
// usable, alice's message
// goes to both servers, and a message from a member the partial state
// lacks is accepted (checked against its auth events). Once /state is
// answered, the worker adds the members: /joined_members counts all 301,
// and the room's state is whole.
func TestJoin_PartialState(t *testing.T) {
	const members = 300
	p := newPeer(t, "partial.test", "12", members)
	p.omit = true
	other := newPeer(t, "other.test", "12", 1)
	p.servers = []string{p.name, other.name}
	p.stateGate = make(chan struct{})
	released := false
	release := func() {
		if !released {
			released = true
			close(p.stateGate)
		}
	}
	t.Cleanup(release)
	env := append(append([]string{}, servertest.FederationEnv...),
		"CIRRUS_FEDERATION_HOSTS="+p.name+"="+p.addr+","+other.name+"="+other.addr)
	st := servertest.Start(t, env...)
	st.RunQueue(t)
	// The join waits a moment for the whole state, which the resident
	// holds back: the room is taken in with partial state.
	st.Server.Joiner.StateWait = 200 * time.Millisecond
	alice := st.Member(t, "alice")
	room := id.RoomID(p.roomID)
	ctx := context.Background()

	joined, err := alice.JoinRoom(background, p.roomID, &mautrix.ReqJoinRoom{Via: []string{p.name}})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.requests(); !slices.ContainsFunc(got, func(r string) bool {
		return strings.HasPrefix(r, "PUT /_matrix/federation/v2/send_join/") && strings.HasSuffix(r, "?omit_members=true")
	}) {
		t.Fatalf("the resident was asked %q, want a send_join with omit_members=true", got)
	}
	servers, err := st.Server.Rooms.PartialServers(ctx, p.roomID)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(servers, []string{p.name, other.name}) {
		t.Fatalf("partial servers %v, want [%s %s]", servers, p.name, other.name)
	}
	members0, err := st.Server.Rooms.Members(ctx, p.roomID)
	if err != nil {
		t.Fatal(err)
	}
	if len(members0) != 2 {
		t.Fatalf("%d member events held with partial state, want 2 (the creator, alice)", len(members0))
	}

	// alice's message reaches the resident and the server only
	// servers_in_room named.
	sent, err := alice.SendText(background, room, "hello, partial room")
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range []*peer{p, other} {
		waitFor(t, srv.name+" receives alice's message", func() ([]string, bool) {
			var got []string
			for _, txn := range srv.received() {
				for _, pdu := range txn.PDUs {
					got = append(got, string(pdu))
					if containsEventBody(string(pdu), "hello, partial room") {
						return got, true
					}
				}
			}
			return got, false
		}, st.Logs)
	}

	// Members the partial state lacks speak: u7 after alice's message (the
	// room's head), u8 beside it (a fork the room merges). Both are
	// accepted, checked against their auth events.
	head, _, err := st.Server.Rooms.Extremities(ctx, p.roomID)
	if err != nil {
		t.Fatal(err)
	}
	u7, u8 := p.userID("u7"), p.userID("u8")
	m7 := p.memberMessage(t, u7, joined.RoomID, "from u7", head, 1)
	m8 := p.memberMessage(t, u8, joined.RoomID, "from u8", head, 1)
	fed := httptest.NewServer(st.Server.FederationHandler())
	t.Cleanup(fed.Close)
	rm := &remote{Name: p.name, Key: p.signer.Key}
	for i, m := range []events.PDU{m7, m8} {
		if r := rm.send(t, fed.URL, fmt.Sprint("t", i), []json.RawMessage{m.JSON()}, nil); r.Status != http.StatusOK {
			t.Fatalf("send: %d %s", r.Status, r.Raw)
		}
	}
	waitFor(t, "alice sees u7's and u8's messages", func() ([]string, bool) {
		got := bodies(t, alice.Client, room)
		return got, slices.Contains(got, "from u7") && slices.Contains(got, "from u8")
	}, st.Logs)

	// Meanwhile this server gives no other server its partial state:
	// make_join and /state are 404, as Synapse answers.
	for _, path := range []string{
		"/_matrix/federation/v1/make_join/" + p.roomID + "/" + p.userID("newcomer") + "?ver=12",
		"/_matrix/federation/v1/state/" + p.roomID + "?event_id=" + string(sent.EventID),
	} {
		if status, body := rm.get(t, fed.URL, path); status != http.StatusNotFound || !strings.Contains(body, "partial state") {
			t.Fatalf("GET %s while the state loads: %d %s, want 404 M_NOT_FOUND", path, status, body)
		}
	}

	release()
	waitFor(t, "the state is loaded", func() ([]string, bool) {
		servers, err := st.Server.Rooms.PartialServers(ctx, p.roomID)
		return servers, err == nil && servers == nil
	}, st.Logs)
	if got := p.requests(); !slices.ContainsFunc(got, func(r string) bool {
		return strings.HasPrefix(r, "GET /_matrix/federation/v1/state/") && strings.Contains(r, "event_id=")
	}) {
		t.Fatalf("the resident was asked %q, want GET /state at the join", got)
	}
	jm, err := alice.JoinedMembers(background, room)
	if err != nil {
		t.Fatal(err)
	}
	if len(jm.Joined) != members+1 {
		t.Fatalf("joined members: %d, want %d", len(jm.Joined), members+1)
	}
	for _, u := range []string{u7, p.userID("u0"), p.userID(fmt.Sprintf("u%d", members-2)), string(alice.UserID)} {
		if _, ok := jm.Joined[id.UserID(u)]; !ok {
			t.Fatalf("%s is not among the joined members", u)
		}
	}
	info, err := st.Server.Rooms.Info(ctx, p.roomID)
	if err != nil {
		t.Fatal(err)
	}
	if info.Joined != members+1 {
		t.Fatalf("the room info counts %d joined, want %d", info.Joined, members+1)
	}
	state, err := alice.State(background, room)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(state[event.StateMember]); n != members+1 {
		t.Fatalf("/state lists %d member events, want %d", n, members+1)
	}
	// The state at alice's message, taken before the members were loaded,
	// holds them too.
	ev, err := st.Server.Rooms.Event(ctx, p.roomID, string(sent.EventID))
	if err != nil {
		t.Fatal(err)
	}
	at, err := st.Server.Rooms.StateAt(ctx, p.roomID, ev)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, x := range at {
		if x.Type() == events.Member {
			n++
		}
	}
	if n != members+1 {
		t.Fatalf("the state at alice's message holds %d member events, want %d", n, members+1)
	}
}

// memberMessage is a message of member userID, who joined when the room
// was built, built on prev, depth above the peer's last event.
func (p *peer) memberMessage(t *testing.T, userID string, roomID id.RoomID, body string, prev []string, depth int64) events.PDU {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	auth := slices.Clone(p.state[:6])
	for _, ev := range p.state {
		if ev.Type() == events.Member && *ev.StateKey() == userID {
			auth = append(auth, ev)
		}
	}
	st, err := events.NewState(auth)
	if err != nil {
		t.Fatal(err)
	}
	pr := events.Proto{RoomID: string(roomID), Sender: userID, Type: "m.room.message", Content: json.RawMessage(`{"msgtype":"m.text","body":"` + body + `"}`)}
	ev, err := p.signer.Build(p.v, pr, events.Graph{PrevEvents: prev, Depth: p.depth + 2 + depth}, st, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// TestJoin_PartialStateTooLarge: the resident answers /state at once, but
// the whole state is larger than a join takes in (MaxWholeState, here
// 100 for a room of 150 members): the room is taken in with partial
// state, and the worker loads the members.
func TestJoin_PartialStateTooLarge(t *testing.T) {
	const members = 150
	p := newPeer(t, "partial.test", "12", members)
	p.omit = true
	st := servertest.Start(t, p.env()...)
	st.RunQueue(t)
	st.Server.Joiner.MaxWholeState = 100
	alice := st.Member(t, "alice")
	ctx := context.Background()
	if _, err := alice.JoinRoom(background, p.roomID, &mautrix.ReqJoinRoom{Via: []string{p.name}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the join taken in with partial state", func() ([]string, bool) {
		var got []string
		for _, line := range strings.Split(st.Logs(), "\n") {
			if strings.Contains(line, "remote join phases") {
				got = append(got, line)
			}
		}
		return got, len(got) == 1 && strings.Contains(got[0], `"partial":true`)
	}, st.Logs)
	waitFor(t, "the members are loaded", func() ([]string, bool) {
		servers, err := st.Server.Rooms.PartialServers(ctx, p.roomID)
		return servers, err == nil && servers == nil
	}, st.Logs)
	jm, err := alice.JoinedMembers(background, id.RoomID(p.roomID))
	if err != nil {
		t.Fatal(err)
	}
	if len(jm.Joined) != members+1 {
		t.Fatalf("joined members: %d, want %d", len(jm.Joined), members+1)
	}
}

// TestJoin_PartialStateFetchedWhole: the resident answers send_join
// without its members and /state at once: the join fetches the whole
// state and takes the room in with it, so that the room is whole when
// the join returns.
func TestJoin_PartialStateFetchedWhole(t *testing.T) {
	const members = 50
	p := newPeer(t, "partial.test", "12", members)
	p.omit = true
	st := servertest.Start(t, p.env()...)
	st.RunQueue(t)
	alice := st.Member(t, "alice")
	if _, err := alice.JoinRoom(background, p.roomID, &mautrix.ReqJoinRoom{Via: []string{p.name}}); err != nil {
		t.Fatal(err)
	}
	servers, err := st.Server.Rooms.PartialServers(context.Background(), p.roomID)
	if err != nil || servers != nil {
		t.Fatalf("partial servers after the join: %v %v, want none", servers, err)
	}
	got := p.requests()
	if len(got) < 3 || !strings.HasPrefix(got[len(got)-1], "GET /_matrix/federation/v1/state/") || !strings.HasPrefix(got[len(got)-2], "PUT /_matrix/federation/v2/send_join/") {
		t.Fatalf("the resident was asked %q, want send_join then /state", got)
	}
	members0, err := st.Server.Rooms.Members(context.Background(), p.roomID)
	if err != nil {
		t.Fatal(err)
	}
	if len(members0) != members+1 {
		t.Fatalf("%d member events after the join, want %d", len(members0), members+1)
	}
}
