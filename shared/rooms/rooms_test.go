package rooms_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

func createRoom(t *testing.T, st *servertest.Stack, u servertest.User, body map[string]any) string {
	t.Helper()
	r := st.Do(t, "POST", "/_matrix/client/v3/createRoom", u.AccessToken, body)
	id, _ := r.Body["room_id"].(string)
	if r.Status != http.StatusOK || id == "" {
		t.Fatalf("createRoom: %d %s", r.Status, r.Raw)
	}
	return id
}

func roomPath(room string) string { return "/_matrix/client/v3/rooms/" + url.PathEscape(room) }

func send(t testing.TB, st *servertest.Stack, u servertest.User, room, txn, body string) (string, error) {
	r := servertest.Call(t, "PUT", st.URL+roomPath(room)+"/send/m.room.message/"+txn, u.AccessToken,
		map[string]any{"msgtype": "m.text", "body": body})
	id, _ := r.Body["event_id"].(string)
	if r.Status != http.StatusOK || id == "" {
		return "", fmt.Errorf("send %s: %d %s", txn, r.Status, r.Raw)
	}
	return id, nil
}

func join(t *testing.T, st *servertest.Stack, u servertest.User, room string) {
	t.Helper()
	if r := st.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(room), u.AccessToken, map[string]any{}); r.Status != 200 {
		t.Fatalf("join %s: %d %s", u.ID, r.Status, r.Raw)
	}
}

// page reads the whole timeline in one direction, limit events at a time.
func page(t *testing.T, st *servertest.Stack, u servertest.User, room, dir string, limit int) []map[string]any {
	t.Helper()
	var all []map[string]any
	from := ""
	for range 1000 {
		q := fmt.Sprintf("?dir=%s&limit=%d", dir, limit)
		if from != "" {
			q += "&from=" + url.QueryEscape(from)
		}
		r := st.Do(t, "GET", roomPath(room)+"/messages"+q, u.AccessToken, nil)
		if r.Status != 200 {
			t.Fatalf("messages: %d %s", r.Status, r.Raw)
		}
		chunk, _ := r.Body["chunk"].([]any)
		for _, c := range chunk {
			all = append(all, c.(map[string]any))
		}
		end, _ := r.Body["end"].(string)
		if end == "" {
			return all
		}
		from = end
	}
	t.Fatal("pagination did not end")
	return nil
}

// TestConcurrentSenders: 8 clients send 100 messages each into one room at
// once. Every message is stored exactly once, each event's prev_events is
// the event before it, and /messages gives one order both ways.
func TestConcurrentSenders(t *testing.T) {
	t.Run("OneInstance", func(t *testing.T) {
		st := servertest.Start(t)
		concurrentSenders(t, []*servertest.Stack{st}, 100)
	})
	// Senders spread over three servers on one table, as over Lambda
	// instances: nothing in memory orders them, only the conditional write
	// of each slot.
	t.Run("ThreeInstances", func(t *testing.T) {
		st := servertest.Start(t)
		concurrentSenders(t, []*servertest.Stack{st, st.Twin(t), st.Twin(t)}, 50)
	})
}

func concurrentSenders(t *testing.T, stacks []*servertest.Stack, each int) {
	const clients = 8
	st := stacks[0]
	owner := st.Register(t, "owner")
	room := createRoom(t, st, owner, map[string]any{"preset": "public_chat"})
	users := make([]servertest.User, clients)
	for i := range users {
		users[i] = st.Register(t, fmt.Sprintf("sender%d", i))
		join(t, st, users[i], room)
	}
	var wg sync.WaitGroup
	errs := make(chan error, clients*each)
	for i, u := range users {
		via := stacks[i%len(stacks)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range each {
				if _, err := send(t, via, u, room, fmt.Sprintf("c%d-%d", i, n), fmt.Sprintf("%d/%d", i, n)); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var n, calls int64
	var rcu, wcu float64
	for _, r := range st.Requests(t) {
		if strings.Contains(r.Path, "/send/m.room.message/c") {
			n++
			calls, rcu, wcu = calls+r.DynamoDB.Calls, rcu+r.DynamoDB.ReadUnits, wcu+r.DynamoDB.WriteUnits
		}
	}
	// The sync design adds one stream entry per joined local member.
	t.Logf("a message cost on average %.2f calls, %.2f RCU, %.2f WCU (%.2f without the %d members' stream entries)",
		float64(calls)/float64(n), rcu/float64(n), wcu/float64(n), wcu/float64(n)-float64(clients+1), clients+1)
	checkTimeline(t, st, owner, room, clients*each)
}

// checkTimeline reads the room both ways and checks that it holds want
// distinct messages once each, in one order, on a linear graph.
func checkTimeline(t *testing.T, st *servertest.Stack, u servertest.User, room string, want int) {
	t.Helper()
	forward := page(t, st, u, room, "f", 100)
	backward := page(t, st, u, room, "b", 37)
	if len(forward) != len(backward) {
		t.Fatalf("forward paging read %d events, backward %d", len(forward), len(backward))
	}
	seen := map[string]bool{}
	bodies := map[string]bool{}
	for i, ev := range forward {
		id := ev["event_id"].(string)
		if back := backward[len(backward)-1-i]["event_id"]; back != id {
			t.Fatalf("event %d is %s forwards but %s backwards", i, id, back)
		}
		if seen[id] {
			t.Fatalf("event %s twice", id)
		}
		seen[id] = true
		if ev["type"] == "m.room.message" {
			body := ev["content"].(map[string]any)["body"].(string)
			if bodies[body] {
				t.Fatalf("message %s stored twice", body)
			}
			bodies[body] = true
		}
	}
	if len(bodies) != want {
		t.Fatalf("%d messages stored, want %d", len(bodies), want)
	}
	// The graph is one line: each event's only parent is the one before.
	ctx := context.Background()
	prev := ""
	for i, ev := range forward {
		e, err := st.Server.Rooms.Event(ctx, room, ev["event_id"].(string))
		if err != nil {
			t.Fatal(err)
		}
		if e.Seq != int64(i+1) {
			t.Fatalf("event %d sits at position %d", i, e.Seq)
		}
		parents := e.PDU.PrevEventIDs()
		if i > 0 && (len(parents) != 1 || parents[0] != prev) {
			t.Fatalf("event %d has prev_events %v, want [%s]", i, parents, prev)
		}
		if i > 0 && e.PDU.Depth() != int64(i+1) {
			t.Fatalf("event %d has depth %d", i, e.PDU.Depth())
		}
		prev = e.PDU.EventID()
	}
}

// TestRedactOthers: the auth rules let any user of the server redact; only
// the original sender or a user with the redact level may.
func TestRedactOthers(t *testing.T) {
	st := servertest.Start(t)
	alice, bob := st.Register(t, "alice"), st.Register(t, "bob")
	room := createRoom(t, st, alice, map[string]any{"preset": "public_chat"})
	join(t, st, bob, room)
	mine, err := send(t, st, alice, room, "a1", "alice's")
	if err != nil {
		t.Fatal(err)
	}
	bobs, err := send(t, st, bob, room, "b1", "bob's")
	if err != nil {
		t.Fatal(err)
	}
	redact := func(u servertest.User, id, txn string) servertest.Reply {
		return st.Do(t, "PUT", roomPath(room)+"/redact/"+url.PathEscape(id)+"/"+txn, u.AccessToken, map[string]any{"reason": "x"})
	}
	if r := redact(bob, mine, "r1"); r.Status != 403 || r.Body["errcode"] != "M_FORBIDDEN" {
		t.Fatalf("bob redacting alice's event: %d %s", r.Status, r.Raw)
	}
	r := st.Do(t, "GET", roomPath(room)+"/event/"+url.PathEscape(mine), bob.AccessToken, nil)
	if c, _ := r.Body["content"].(map[string]any); c["body"] != "alice's" {
		t.Fatalf("alice's event after the refused redaction: %s", r.Raw)
	}
	if r := redact(bob, bobs, "r2"); r.Status != 200 {
		t.Fatalf("bob redacting his own event: %d %s", r.Status, r.Raw)
	}
	if r := redact(alice, mine, "r3"); r.Status != 200 {
		t.Fatalf("alice redacting her own event: %d %s", r.Status, r.Raw)
	}
	r = st.Do(t, "GET", roomPath(room)+"/event/"+url.PathEscape(bobs), alice.AccessToken, nil)
	if c, _ := r.Body["content"].(map[string]any); len(c) != 0 {
		t.Fatalf("bob's event after his redaction still has content: %s", r.Raw)
	}
}

// TestProfilePropagates: a new display name reaches the member event of
// every room the user is in.
func TestProfilePropagates(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Register(t, "alice")
	rooms := []string{
		createRoom(t, st, alice, map[string]any{"preset": "private_chat"}),
		createRoom(t, st, alice, map[string]any{"preset": "public_chat"}),
	}
	if r := st.Do(t, "PUT", "/_matrix/client/v3/profile/"+url.PathEscape(alice.ID)+"/displayname", alice.AccessToken,
		map[string]any{"displayname": "Alice A."}); r.Status != 200 {
		t.Fatalf("set displayname: %d %s", r.Status, r.Raw)
	}
	if r := st.Do(t, "PUT", "/_matrix/client/v3/profile/"+url.PathEscape(alice.ID)+"/avatar_url", alice.AccessToken,
		map[string]any{"avatar_url": "mxc://example.org/abc"}); r.Status != 200 {
		t.Fatalf("set avatar: %d %s", r.Status, r.Raw)
	}
	for _, room := range rooms {
		r := st.Do(t, "GET", roomPath(room)+"/state/m.room.member/"+url.PathEscape(alice.ID), alice.AccessToken, nil)
		if r.Status != 200 || r.Body["displayname"] != "Alice A." || r.Body["avatar_url"] != "mxc://example.org/abc" || r.Body["membership"] != "join" {
			t.Fatalf("member event in %s: %d %s", room, r.Status, r.Raw)
		}
	}
	// A room created after the change starts with the new profile.
	later := createRoom(t, st, alice, map[string]any{})
	r := st.Do(t, "GET", roomPath(later)+"/state/m.room.member/"+url.PathEscape(alice.ID), alice.AccessToken, nil)
	if r.Body["displayname"] != "Alice A." {
		t.Fatalf("new room member event: %s", r.Raw)
	}
}

// TestRestrictedJoin: members of an allowed room may join a restricted one,
// authorised by a local member who may invite; others may not.
func TestRestrictedJoin(t *testing.T) {
	for _, version := range []string{"10", "12"} {
		t.Run("v"+version, func(t *testing.T) {
			st := servertest.Start(t)
			alice, bob := st.Register(t, "alice"), st.Register(t, "bob")
			space := createRoom(t, st, alice, map[string]any{"preset": "public_chat"})
			room := createRoom(t, st, alice, map[string]any{"room_version": version, "initial_state": []any{map[string]any{
				"type": "m.room.join_rules", "state_key": "",
				"content": map[string]any{"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": space}}},
			}}})
			r := st.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(room), bob.AccessToken, map[string]any{})
			if r.Status != 403 || r.Body["errcode"] != "M_FORBIDDEN" {
				t.Fatalf("join before being in the allowed room: %d %s", r.Status, r.Raw)
			}
			join(t, st, bob, space)
			join(t, st, bob, room)
			r = st.Do(t, "GET", roomPath(room)+"/state/m.room.member/"+url.PathEscape(bob.ID), bob.AccessToken, nil)
			if r.Body["membership"] != "join" || r.Body["join_authorised_via_users_server"] != alice.ID {
				t.Fatalf("bob's member event: %s", r.Raw)
			}
		})
	}
}

// TestPublishDuringStateChanges: listing a room in the directory while its
// name changes loses neither the listing nor the name.
func TestPublishDuringStateChanges(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Register(t, "alice")
	room := createRoom(t, st, alice, map[string]any{"preset": "public_chat"})
	other := st.Twin(t)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range 20 {
			servertest.Call(t, "PUT", st.URL+roomPath(room)+"/state/m.room.name", alice.AccessToken, map[string]any{"name": fmt.Sprint("name ", i)})
		}
	}()
	go func() {
		defer wg.Done()
		for i := range 20 {
			vis := map[bool]string{true: "public", false: "private"}[i%2 == 1]
			servertest.Call(t, "PUT", other.URL+"/_matrix/client/v3/directory/list/room/"+url.PathEscape(room), alice.AccessToken, map[string]any{"visibility": vis})
		}
	}()
	wg.Wait()
	r := st.Do(t, "GET", "/_matrix/client/v3/publicRooms", "", nil)
	chunk, _ := r.Body["chunk"].([]any)
	if len(chunk) != 1 {
		t.Fatalf("public rooms after the race: %s", r.Raw)
	}
	if got := chunk[0].(map[string]any)["name"]; got != "name 19" {
		t.Fatalf("listed name %v, want the last one set", got)
	}
}

// TestUnsignedForSender: the sending device, and only it, sees the
// transaction ID; state events carry the content they replaced.
func TestUnsignedForSender(t *testing.T) {
	st := servertest.Start(t)
	alice, bob := st.Register(t, "alice"), st.Register(t, "bob")
	room := createRoom(t, st, alice, map[string]any{"preset": "public_chat", "name": "first"})
	join(t, st, bob, room)
	r := st.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"},
		"password": "correct horse battery staple",
	})
	other := servertest.User{ID: alice.ID}
	other.AccessToken, _ = r.Body["access_token"].(string)
	if other.AccessToken == "" {
		t.Fatalf("second login: %s", r.Raw)
	}
	id, err := send(t, st, alice, room, "tx-42", "hello")
	if err != nil {
		t.Fatal(err)
	}
	if r := st.Do(t, "PUT", roomPath(room)+"/state/m.room.name", alice.AccessToken, map[string]any{"name": "second"}); r.Status != 200 {
		t.Fatalf("rename: %d %s", r.Status, r.Raw)
	}
	txnOf := func(u servertest.User) any {
		r := st.Do(t, "GET", roomPath(room)+"/event/"+url.PathEscape(id), u.AccessToken, nil)
		unsigned, _ := r.Body["unsigned"].(map[string]any)
		return unsigned["transaction_id"]
	}
	if got := txnOf(alice); got != "tx-42" {
		t.Fatalf("sending device sees transaction_id %v", got)
	}
	if got := txnOf(other); got != nil {
		t.Fatalf("alice's other device sees transaction_id %v", got)
	}
	if got := txnOf(bob); got != nil {
		t.Fatalf("bob sees transaction_id %v", got)
	}
	msgs := page(t, st, bob, room, "b", 5)
	last := msgs[0]
	unsigned, _ := last["unsigned"].(map[string]any)
	prev, _ := unsigned["prev_content"].(map[string]any)
	if last["type"] != "m.room.name" || prev["name"] != "first" {
		t.Fatalf("rename event: %v", last)
	}
}

// TestInitialStateOverridesPreset: power levels and join rules given in
// initial_state replace the preset's, in one event each.
func TestInitialStateOverridesPreset(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Register(t, "alice")
	room := createRoom(t, st, alice, map[string]any{"room_version": "10", "preset": "private_chat", "initial_state": []any{
		map[string]any{"type": "m.room.power_levels", "state_key": "", "content": map[string]any{
			"users": map[string]any{alice.ID: 100, "@bob:example.org": 50}, "state_default": 60,
		}},
		map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "public"}},
	}})
	counts := map[string]int{}
	for _, ev := range page(t, st, alice, room, "f", 100) {
		counts[ev["type"].(string)]++
	}
	if counts["m.room.power_levels"] != 1 || counts["m.room.join_rules"] != 1 {
		t.Fatalf("events by type: %v", counts)
	}
	r := st.Do(t, "GET", roomPath(room)+"/state/m.room.power_levels/", alice.AccessToken, nil)
	if r.Body["state_default"] != float64(60) {
		t.Fatalf("power levels: %s", r.Raw)
	}
	r = st.Do(t, "GET", roomPath(room)+"/state/m.room.join_rules/", alice.AccessToken, nil)
	if r.Body["join_rule"] != "public" {
		t.Fatalf("join rules: %s", r.Raw)
	}
}

// TestEveryRoomVersion: rooms of each stable version can be created,
// joined, written, redacted and read.
func TestEveryRoomVersion(t *testing.T) {
	st := servertest.Start(t)
	alice, bob := st.Register(t, "alice"), st.Register(t, "bob")
	for v := 1; v <= 12; v++ {
		version := fmt.Sprint(v)
		room := createRoom(t, st, alice, map[string]any{"room_version": version, "preset": "public_chat", "name": "v" + version})
		join(t, st, bob, room)
		id, err := send(t, st, bob, room, "v"+version, "hello "+version)
		if err != nil {
			t.Fatalf("version %s: %v", version, err)
		}
		if r := st.Do(t, "PUT", roomPath(room)+"/redact/"+url.PathEscape(id)+"/r"+version, alice.AccessToken, map[string]any{}); r.Status != 200 {
			t.Fatalf("version %s: redact: %d %s", version, r.Status, r.Raw)
		}
		r := st.Do(t, "GET", roomPath(room)+"/state/m.room.create/", bob.AccessToken, nil)
		if r.Body["room_version"] != version {
			t.Fatalf("version %s: create content %s", version, r.Raw)
		}
		evs := page(t, st, bob, room, "b", 3)
		if evs[0]["type"] != "m.room.redaction" || evs[0]["redacts"] != id {
			t.Fatalf("version %s: newest event %v", version, evs[0])
		}
		if c, _ := evs[1]["content"].(map[string]any); evs[1]["event_id"] != id || len(c) != 0 {
			t.Fatalf("version %s: redacted message %v", version, evs[1])
		}
		if strings.Contains(room, ":") != (v < 12) {
			t.Fatalf("version %s: room ID %s", version, room)
		}
	}
}

// TestConcurrentCreateRoom: one user creating rooms 8 at a time gets every
// room; simultaneous transactions on the creator's items are retried.
func TestConcurrentCreateRoom(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Register(t, "alice")
	var wg sync.WaitGroup
	errs := make(chan error, 24)
	for i := range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := servertest.Call(t, "POST", st.URL+"/_matrix/client/v3/createRoom", alice.AccessToken, map[string]any{"name": fmt.Sprint("room ", i)})
			if r.Status != 200 {
				errs <- fmt.Errorf("createRoom %d: %d %s", i, r.Status, r.Raw)
			}
		}()
		if i%8 == 7 {
			wg.Wait()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		for _, line := range strings.Split(st.Logs(), "\n") {
			if strings.Contains(line, `"level":"ERROR"`) {
				t.Log(line)
			}
		}
	}
	r := st.Do(t, "GET", "/_matrix/client/v3/joined_rooms", alice.AccessToken, nil)
	if rooms, _ := r.Body["joined_rooms"].([]any); len(rooms) != 24 {
		t.Fatalf("joined rooms: %s", r.Raw)
	}
}
