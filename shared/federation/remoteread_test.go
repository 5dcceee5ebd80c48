package federation_test

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// fedRequests counts the federation requests A served on route.
func fedRequests(t *testing.T, s *servertest.Stack, route string) int {
	t.Helper()
	n := 0
	for _, r := range s.Requests(t) {
		if r.Route == route {
			n++
		}
	}
	return n
}

// TestTwoServers_RemotePublicRooms: bob of B lists the public rooms of A
// (GET /publicRooms?server=A): A's answer, paged with limit and since as
// A pages it; a POST with a search term passes the filter to A. A server
// that cannot be reached is 502 M_UNKNOWN, a name that is no server name
// 400 M_INVALID_PARAM, and a GET without an access token 401.
func TestTwoServers_RemotePublicRooms(t *testing.T) {
	a, b := twoServers(t)
	alice := a.Member(t, "alice")
	bob := b.Member(t, "bob")
	var want []string
	for _, name := range []string{"Lobby", "Garden"} {
		created, err := alice.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", Name: name})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, string(created.RoomID))
	}
	// B lists none of them itself.
	if own, err := bob.PublicRooms(background, &mautrix.ReqPublicRooms{}); err != nil || len(own.Chunk) != 0 {
		t.Fatalf("B's own directory: %+v %v", own, err)
	}
	all, err := bob.PublicRooms(background, &mautrix.ReqPublicRooms{Server: a.Name()})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	names := map[string]string{}
	for _, r := range all.Chunk {
		got = append(got, string(r.RoomID))
		names[string(r.RoomID)] = r.Name
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) || names[want[0]] == "" {
		t.Fatalf("A's rooms listed on B: %v (names %v), want %v", got, names, want)
	}

	first, err := bob.PublicRooms(background, &mautrix.ReqPublicRooms{Server: a.Name(), Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Chunk) != 1 || first.NextBatch == "" {
		t.Fatalf("first page of 1: %+v", first)
	}
	second, err := bob.PublicRooms(background, &mautrix.ReqPublicRooms{Server: a.Name(), Limit: 1, Since: first.NextBatch})
	if err != nil {
		t.Fatal(err)
	}
	if len(second.Chunk) != 1 || second.Chunk[0].RoomID == first.Chunk[0].RoomID {
		t.Fatalf("second page of 1: %+v after %+v", second, first)
	}

	posted := b.Do(t, "POST", "/_matrix/client/v3/publicRooms?server="+url.QueryEscape(a.Name()), bob.User.AccessToken,
		map[string]any{"filter": map[string]any{"generic_search_term": "gard"}})
	chunk, _ := posted.Body["chunk"].([]any)
	if posted.Status != 200 || len(chunk) != 1 || chunk[0].(map[string]any)["name"] != "Garden" {
		t.Fatalf("POST with a search term: %d %s", posted.Status, posted.Raw)
	}

	// Nothing listens on port 1.
	down := b.Do(t, "GET", "/_matrix/client/v3/publicRooms?server=127.0.0.1:1", bob.User.AccessToken, nil)
	wantError(t, "an unreachable server", down, 502, "M_UNKNOWN")
	down = b.Do(t, "POST", "/_matrix/client/v3/publicRooms?server=127.0.0.1:1", bob.User.AccessToken,
		map[string]any{"filter": map[string]any{"generic_search_term": "x"}})
	wantError(t, "an unreachable server, POST", down, 502, "M_UNKNOWN")
	bad := b.Do(t, "GET", "/_matrix/client/v3/publicRooms?server="+url.QueryEscape("not a server!"), bob.User.AccessToken, nil)
	wantError(t, "a bad server name", bad, 400, "M_INVALID_PARAM")
	// Another server's list is for users of this server: without an access
	// token it is 401, as Synapse has it; this server's own list is not.
	anon := b.Do(t, "GET", "/_matrix/client/v3/publicRooms?server="+url.QueryEscape(a.Name()), "", nil)
	wantError(t, "another server's rooms without an access token", anon, 401, "M_MISSING_TOKEN")
	if own := b.Do(t, "GET", "/_matrix/client/v3/publicRooms", "", nil); own.Status != 200 {
		t.Fatalf("B's own rooms without an access token: %d %s", own.Status, own.Raw)
	}
}

// TestTwoServers_RemoteEvent: bob of B joins alice's room on A after 30
// messages. /event of one B does not hold fetches it from A (/event) and
// backfills the history down to it; /context of an older one does the
// same and shows the messages around it, in order. An event A does not
// hold either is 404 M_NOT_FOUND, and so is one of a room carol (of B)
// is not in: nothing is asked of A for her.
func TestTwoServers_RemoteEvent(t *testing.T) {
	a, b := twoServers(t)
	alice := a.Member(t, "alice")
	bob := b.Member(t, "bob")
	carol := b.Member(t, "carol")
	room := publicRoom(t, alice)
	var ids []id.EventID
	for i := range 30 {
		sent, err := alice.SendText(background, room, fmt.Sprintf("msg %d", i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, sent.EventID)
	}
	joinVia(t, bob, room, a.Name())
	if _, err := b.Server.Rooms.Event(background, string(room), string(ids[25])); err == nil {
		t.Fatal("B holds msg 25 before anyone asked for it")
	}

	const eventRoute = "GET /_matrix/federation/v1/event/{eventId}"
	asked := fedRequests(t, a, eventRoute)
	ev, err := bob.GetEvent(background, room, ids[25])
	if err != nil {
		t.Fatal(err)
	}
	if ev.ID != ids[25] || ev.Content.Raw["body"] != "msg 25" || ev.Sender != id.UserID(alice.User.ID) {
		t.Fatalf("/event of msg 25 on B: %s %v %s", ev.ID, ev.Content.Raw, ev.Sender)
	}
	if n := fedRequests(t, a, eventRoute) - asked; n != 1 {
		t.Fatalf("A served %d /event requests for it, want 1", n)
	}
	// B's reads, the request to A, and ten events backfilled (4 WCU each).
	b.CheckCost(t, "/event fetched from A", "/event/{eventId}", servertest.Want(28, 40, 40))
	// Held now: asked again, B answers alone.
	if _, err := bob.GetEvent(background, room, ids[25]); err != nil {
		t.Fatal(err)
	}
	if n := fedRequests(t, a, eventRoute) - asked; n != 1 {
		t.Fatalf("A served %d /event requests after a second /event, want 1", n)
	}

	b.CheckCost(t, "/event held", "/event/{eventId}", servertest.Want(5, 5, 0))
	c, err := bob.Context(background, room, ids[5], nil, 2)
	if err != nil {
		t.Fatal(err)
	}
	// Sixteen events backfilled, from msg 19 down to msg 4. The read units
	// of one read vary by one from run to run (its items' sizes near a
	// 4 KB step).
	if got := b.LastRequestTo(t, "/context/{eventId}").DynamoDB; got.Calls != 30 || got.WriteUnits != 64 || got.ReadUnits < 56 || got.ReadUnits > 57 {
		t.Errorf("/context fetched from A: %d calls, %.1f RCU, %.1f WCU; want 30, 56 or 57, 64", got.Calls, got.ReadUnits, got.WriteUnits)
	}
	body := func(e *event.Event) string { s, _ := e.Content.Raw["body"].(string); return s }
	if c.Event == nil || c.Event.ID != ids[5] || len(c.EventsBefore) != 1 || len(c.EventsAfter) != 1 ||
		body(c.EventsBefore[0]) != "msg 4" || body(c.EventsAfter[0]) != "msg 6" {
		t.Fatalf("/context of msg 5 on B: %+v", c)
	}

	// The history between is in place: bob pages it in order.
	bodies, _ := pagedBodies(t, bob.Client, room, 50)
	var msgs []string
	for _, s := range bodies {
		if strings.HasPrefix(s, "msg ") {
			msgs = append(msgs, s)
		}
	}
	if len(msgs) < 26 || msgs[len(msgs)-1] != "msg 29" || msgs[len(msgs)-26] != "msg 4" {
		t.Fatalf("bob's /messages after the fetches: %v", msgs)
	}

	unknown := "$" + strings.Repeat("A", 43)
	r := b.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(string(room))+"/event/"+url.PathEscape(unknown), bob.User.AccessToken, nil)
	wantError(t, "/event of an event no server holds", r, 404, "M_NOT_FOUND")
	r = b.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(string(room))+"/context/"+url.PathEscape(unknown), bob.User.AccessToken, nil)
	wantError(t, "/context of an event no server holds", r, 404, "M_NOT_FOUND")

	before := fedRequests(t, a, eventRoute)
	r = b.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(string(room))+"/event/"+url.PathEscape(string(ids[1])), carol.User.AccessToken, nil)
	wantError(t, "/event for carol, not in the room", r, 404, "M_NOT_FOUND")
	if n := fedRequests(t, a, eventRoute); n != before {
		t.Fatalf("A served %d /event requests for carol, want none", n-before)
	}
}

// TestTwoServers_RemoteEventHidden: in alice's room whose history is for
// joined members only, bob of B may not read what was said before he
// joined: B fetches the event from A and backfills it, and still answers
// 404 M_NOT_FOUND, as for an event that is not there.
func TestTwoServers_RemoteEventHidden(t *testing.T) {
	a, b := twoServers(t)
	alice := a.Member(t, "alice")
	bob := b.Member(t, "bob")
	created, err := alice.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "12",
		InitialState: []*event.Event{{Type: event.StateHistoryVisibility,
			Content: event.Content{Parsed: &event.HistoryVisibilityEventContent{HistoryVisibility: event.HistoryVisibilityJoined}}}}})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	secret, err := alice.SendText(background, room, "before bob")
	if err != nil {
		t.Fatal(err)
	}
	joinVia(t, bob, room, a.Name())
	path := "/_matrix/client/v3/rooms/" + url.PathEscape(string(room))
	r := b.Do(t, "GET", path+"/event/"+url.PathEscape(string(secret.EventID)), bob.User.AccessToken, nil)
	wantError(t, "/event of a message before bob joined a joined-only room", r, 404, "M_NOT_FOUND")
	r = b.Do(t, "GET", path+"/context/"+url.PathEscape(string(secret.EventID)), bob.User.AccessToken, nil)
	wantError(t, "/context of it", r, 404, "M_NOT_FOUND")
	if _, err := b.Server.Rooms.Event(background, string(room), string(secret.EventID)); err != nil {
		t.Fatalf("B does not hold the hidden message after the fetch: %v", err)
	}
	// What bob may see he reads: a message after his join, held already.
	after, err := alice.SendText(background, room, "after bob")
	if err != nil {
		t.Fatal(err)
	}
	waitHeld(t, b, string(room), string(after.EventID))
	if ev, err := bob.GetEvent(background, room, after.EventID); err != nil || ev.Content.Raw["body"] != "after bob" {
		t.Fatalf("/event of a message after bob's join: %v %v", ev, err)
	}
}

// waitHeld waits until s holds eventID, as its inbox worker stores it.
func waitHeld(t *testing.T, s *servertest.Stack, roomID, eventID string) {
	t.Helper()
	waitFor(t, "event "+eventID+" on "+s.Name(), func() ([]string, bool) {
		_, err := s.Server.Rooms.Event(background, roomID, eventID)
		return nil, err == nil
	}, s.Logs)
}

// TestTwoServers_RemoteEventMissed: B works through no transaction (its
// queue does not run), so alice's message after bob's join never reaches
// its timeline; bob's /event of it fetches it from A and takes it in as
// the inbound worker would (its prev_events are held), and /messages
// shows it after his join.
func TestTwoServers_RemoteEventMissed(t *testing.T) {
	a, _ := servertest.StartNamed(t)
	a.RunQueue(t)
	b, _ := servertest.StartNamed(t)
	alice := a.Member(t, "alice")
	bob := b.Member(t, "bob")
	room := publicRoom(t, alice)
	joinVia(t, bob, room, a.Name())
	sent, err := alice.SendText(background, room, "after bob")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Server.Rooms.Event(background, string(room), string(sent.EventID)); err == nil {
		t.Fatal("B holds alice's message without working through a transaction")
	}
	ev, err := bob.GetEvent(background, room, sent.EventID)
	if err != nil {
		t.Fatal(err)
	}
	if ev.ID != sent.EventID || ev.Content.Raw["body"] != "after bob" {
		t.Fatalf("/event of the missed message: %s %v", ev.ID, ev.Content.Raw)
	}
	// The /event read twice, the fetch, and Receive of a linear event.
	b.CheckCost(t, "/event of a missed message", "/event/{eventId}", servertest.Want(23, 22, 7))
	resp, err := bob.Messages(background, room, "", "", mautrix.DirectionBackward, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Chunk) != 1 || resp.Chunk[0].ID != sent.EventID {
		t.Fatalf("bob's newest event: %+v, want the missed message", resp.Chunk)
	}
}
