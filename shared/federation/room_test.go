package federation_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// The room endpoints, asked by a remote server one of whose users joined
// a room of alice's (taken in through rooms.Service.Receive, as the inbound
// /send worker takes it), and by servers that may not ask.

// room is a room of alice's that the remote's bob joined.
type room struct {
	f       fed
	alice   servertest.Member
	id      id.RoomID
	version string
}

func newRoom(t *testing.T, f fed, req *mautrix.ReqCreateRoom) room {
	t.Helper()
	alice := f.st.Member(t, "alice")
	resp, err := alice.CreateRoom(background, req)
	if err != nil {
		t.Fatal(err)
	}
	info, err := f.st.Server.Rooms.Info(background, string(resp.RoomID))
	if err != nil {
		t.Fatal(err)
	}
	return room{f: f, alice: alice, id: resp.RoomID, version: info.Version}
}

// join takes a join of remote.test's user into the room.
func (r room) join(t *testing.T, localpart string) string {
	t.Helper()
	return r.joinFrom(t, r.f.rm, localpart)
}

// joinFrom takes a join of rm's user into the room.
func (r room) joinFrom(t *testing.T, rm *servertest.Remote, localpart string) string {
	t.Helper()
	user := rm.UserID(localpart)
	return r.receive(t, events.Signer{ServerName: rm.Name, Key: rm.Key}, user, user, `{"membership":"join"}`)
}

// receive takes into the room a member event of sender about target, made
// and signed by signer, on the room's forward extremities.
func (r room) receive(t *testing.T, signer events.Signer, sender, target, content string) string {
	t.Helper()
	ctx := background
	rms := r.f.st.Server.Rooms
	prev, depth, err := rms.Extremities(ctx, string(r.id))
	if err != nil {
		t.Fatal(err)
	}
	state, err := rms.CurrentState(ctx, string(r.id))
	if err != nil {
		t.Fatal(err)
	}
	st, err := events.NewState(state)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := signer.Build(r.version, events.Proto{RoomID: string(r.id), Sender: sender, Type: events.Member, StateKey: &target,
		Content: json.RawMessage(content)}, events.Graph{PrevEvents: prev, Depth: depth + 1}, st, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	out, err := rms.Receive(ctx, ev)
	if err != nil || out.Status != rooms.Accepted {
		t.Fatalf("receive %s's member event about %s: %+v %v", sender, target, out, err)
	}
	return ev.EventID()
}

func (r room) send(t *testing.T, body string) string {
	t.Helper()
	resp, err := r.alice.SendText(background, r.id, body)
	if err != nil {
		t.Fatal(err)
	}
	return string(resp.EventID)
}

func (r room) state(t *testing.T, typ event.Type, content map[string]any) string {
	t.Helper()
	resp, err := r.alice.SendStateEvent(background, r.id, typ, "", content)
	if err != nil {
		t.Fatal(err)
	}
	return string(resp.EventID)
}

func (r room) path(endpoint string) string {
	return v1 + "/" + endpoint + "/" + url.PathEscape(string(r.id))
}

// pdus parses the PDUs of a reply field as the room's events.
func (r room) pdus(t *testing.T, reply servertest.Reply, field string) []events.PDU {
	t.Helper()
	list, ok := reply.Body[field].([]any)
	if !ok {
		t.Fatalf("no %s array in %s", field, reply.Raw)
	}
	out := make([]events.PDU, 0, len(list))
	for _, raw := range list {
		doc, _ := json.Marshal(raw)
		ev, err := events.ParseUntrusted(r.version, doc)
		if err != nil {
			t.Fatalf("%s: %v", field, err)
		}
		out = append(out, ev)
	}
	return out
}

func ids(pdus []events.PDU) []string {
	out := make([]string, len(pdus))
	for i, p := range pdus {
		out[i] = p.EventID()
	}
	return out
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func strs(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, x := range list {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

func body(ev events.PDU) string {
	var c struct {
		Body string `json:"body"`
	}
	json.Unmarshal(ev.Content(), &c)
	return c.Body
}

// TestRoomEndpoints: a server with a joined user reads events, state, auth
// chains, history and missing events of the room.
func TestRoomEndpoints(t *testing.T) {
	f := start(t)
	r := newRoom(t, f, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	m1 := r.send(t, "one")
	m2 := r.send(t, "two")
	bob := r.join(t, "bob")
	m3 := r.send(t, "three")
	ctx := background
	current, err := f.st.Server.Rooms.CurrentState(ctx, string(r.id))
	if err != nil {
		t.Fatal(err)
	}

	// /event
	reply := f.get(t, v1+"/event/"+url.PathEscape(m1))
	wantOK(t, "event", reply)
	got := r.pdus(t, reply, "pdus")
	if reply.Body["origin"] != servertest.ServerName || reply.Body["origin_server_ts"] == nil || len(got) != 1 || got[0].EventID() != m1 || body(got[0]) != "one" {
		t.Errorf("event: %s", reply.Raw)
	}
	f.st.CheckCost(t, "event", "/event/", servertest.Want(6, 6, 0))
	if _, err := r.alice.RedactEvent(background, r.id, id.EventID(m2)); err != nil {
		t.Fatal(err)
	}
	reply = f.get(t, v1+"/event/"+url.PathEscape(m2))
	if got := r.pdus(t, reply, "pdus"); len(got) != 1 || got[0].EventID() != m2 || string(got[0].Content()) != "{}" {
		t.Errorf("a redacted event: %s, want it redacted", reply.Raw)
	}
	wantError(t, "unknown event", f.get(t, v1+"/event/"+url.PathEscape("$nothing")), http.StatusNotFound, "M_NOT_FOUND")
	wantError(t, "bad event ID", f.get(t, v1+"/event/nothing"), http.StatusBadRequest, "M_INVALID_PARAM")

	// /state_ids and /state before a message: the current state.
	reply = f.get(t, r.path("state_ids")+"?event_id="+url.QueryEscape(m3))
	wantOK(t, "state_ids", reply)
	wantEqual(t, "state_ids pdu_ids", sorted(strs(reply.Body["pdu_ids"])), sorted(ids(current)))
	chainIDs := strs(reply.Body["auth_chain_ids"])
	createID := "$" + string(r.id)[1:]
	if !slices.Contains(chainIDs, createID) || slices.Contains(chainIDs, m3) || slices.Contains(chainIDs, m1) {
		t.Errorf("state_ids auth_chain_ids %v: want the create event, no messages", chainIDs)
	}
	f.st.CheckCost(t, "state_ids", "/state_ids/", servertest.Want(10, 17, 0))
	reply = f.get(t, r.path("state")+"?event_id="+url.QueryEscape(m3))
	wantOK(t, "state", reply)
	wantEqual(t, "state pdus", sorted(ids(r.pdus(t, reply, "pdus"))), sorted(ids(current)))
	wantEqual(t, "state auth_chain", sorted(ids(r.pdus(t, reply, "auth_chain"))), sorted(chainIDs))
	f.st.CheckCost(t, "state", "/state/", servertest.Want(10, 17, 0))

	// Before a state event: without it, with what it replaced.
	t1 := r.state(t, event.StateTopic, map[string]any{"topic": "first"})
	t2 := r.state(t, event.StateTopic, map[string]any{"topic": "second"})
	reply = f.get(t, r.path("state_ids")+"?event_id="+url.QueryEscape(t2))
	before := strs(reply.Body["pdu_ids"])
	if !slices.Contains(before, t1) || slices.Contains(before, t2) || !slices.Contains(before, bob) || len(before) != len(current)+1 {
		t.Errorf("state before %s: %v, want the state with %s, without %s", t2, before, t1, t2)
	}
	wantError(t, "state_ids of an unknown event", f.get(t, r.path("state_ids")+"?event_id="+url.QueryEscape("$nothing")), http.StatusNotFound, "M_NOT_FOUND")
	wantError(t, "state_ids without event_id", f.get(t, r.path("state_ids")), http.StatusBadRequest, "M_MISSING_PARAM")

	// /event_auth: the auth chain of m3 (alice's join and what it rests on).
	reply = f.get(t, v1+"/event_auth/"+url.PathEscape(string(r.id))+"/"+url.PathEscape(m3))
	wantOK(t, "event_auth", reply)
	chain := r.pdus(t, reply, "auth_chain")
	types := map[string]int{}
	for _, ev := range chain {
		types[ev.Type()]++
	}
	wantEqual(t, "event_auth types", types, map[string]int{"m.room.create": 1, "m.room.member": 1, "m.room.power_levels": 1})
	f.st.CheckCost(t, "event_auth", "/event_auth/", servertest.Want(7, 11, 0))

	// /backfill: from m3 back, newest first, the limit counting m3.
	reply = f.get(t, r.path("backfill")+"?v="+url.QueryEscape(m3)+"&limit=4")
	wantOK(t, "backfill", reply)
	wantEqual(t, "backfill", ids(r.pdus(t, reply, "pdus")), []string{m3, bob, m2, m1})
	if reply.Body["origin"] != servertest.ServerName {
		t.Errorf("backfill origin: %s", reply.Raw)
	}
	f.st.CheckCost(t, "backfill of 4", "/backfill/", servertest.Want(7, 6.5, 0))
	reply = f.get(t, r.path("backfill")+"?v="+url.QueryEscape(m1)+"&v="+url.QueryEscape(m2)+"&limit=2")
	wantEqual(t, "backfill from two events", ids(r.pdus(t, reply, "pdus")), []string{m2, m1})
	wantError(t, "backfill without limit", f.get(t, r.path("backfill")+"?v="+url.QueryEscape(m3)), http.StatusBadRequest, "M_MISSING_PARAM")
	wantError(t, "backfill without v", f.get(t, r.path("backfill")+"?limit=3"), http.StatusBadRequest, "M_MISSING_PARAM")
	wantError(t, "backfill bad limit", f.get(t, r.path("backfill")+"?v="+url.QueryEscape(m3)+"&limit=x"), http.StatusBadRequest, "M_INVALID_PARAM")
	wantError(t, "backfill from unknown events", f.get(t, r.path("backfill")+"?v="+url.QueryEscape("$nothing")+"&limit=3"), http.StatusNotFound, "M_NOT_FOUND")

	// /get_missing_events: between m1 and m3, oldest first.
	missing := func(req map[string]any) []string {
		t.Helper()
		reply := f.post(t, v1+"/get_missing_events/"+url.PathEscape(string(r.id)), req)
		wantOK(t, "get_missing_events", reply)
		return ids(r.pdus(t, reply, "events"))
	}
	wantEqual(t, "missing events", missing(map[string]any{"earliest_events": []string{m1}, "latest_events": []string{m3}}), []string{m2, bob})
	f.st.CheckCost(t, "get_missing_events", "/get_missing_events/", servertest.Want(7, 7, 0))
	wantEqual(t, "missing events, limit 1", missing(map[string]any{"earliest_events": []string{m1}, "latest_events": []string{m3}, "limit": 1}), []string{bob})
	bobEv, err := f.st.Server.Rooms.Event(ctx, string(r.id), bob)
	if err != nil {
		t.Fatal(err)
	}
	wantEqual(t, "missing events, min_depth", missing(map[string]any{"earliest_events": []string{}, "latest_events": []string{m3}, "min_depth": bobEv.PDU.Depth()}), []string{bob})
	wantEqual(t, "missing events of unknown events", missing(map[string]any{"earliest_events": []string{}, "latest_events": []string{"$nothing"}}), []string{})
	wantEqual(t, "missing events of IDs that are not event IDs", missing(map[string]any{"earliest_events": []string{"x"}, "latest_events": []string{"nothing", "$\u0000"}}), []string{})
	reply = f.post(t, v1+"/get_missing_events/"+url.PathEscape(string(r.id)), map[string]any{"latest_events": []string{m3}})
	wantError(t, "get_missing_events without earliest_events", reply, http.StatusBadRequest, "M_BAD_JSON")
	reply = f.post(t, v1+"/get_missing_events/"+url.PathEscape(string(r.id)), map[string]any{"earliest_events": []string{}, "latest_events": "$x"})
	wantError(t, "get_missing_events, latest_events not a list", reply, http.StatusBadRequest, "M_BAD_JSON")
	reply = f.post(t, v1+"/get_missing_events/"+url.PathEscape(string(r.id)), map[string]any{"earliest_events": []string{}, "latest_events": []string{m3}, "limit": "ten"})
	wantError(t, "get_missing_events, limit not a number", reply, http.StatusBadRequest, "M_BAD_JSON")
	many := make([]string, 101)
	for i := range many {
		many[i] = m3
	}
	reply = f.post(t, v1+"/get_missing_events/"+url.PathEscape(string(r.id)), map[string]any{"earliest_events": []string{}, "latest_events": many})
	wantError(t, "get_missing_events of 101 latest events", reply, http.StatusBadRequest, "M_INVALID_PARAM")
	backfillMany := r.path("backfill") + "?limit=3"
	for range 101 {
		backfillMany += "&v=" + url.QueryEscape(m3)
	}
	wantError(t, "backfill from 101 events", f.get(t, backfillMany), http.StatusBadRequest, "M_INVALID_PARAM")
	wantError(t, "backfill from a long event ID", f.get(t, r.path("backfill")+"?limit=3&v=%24"+strings.Repeat("a", 300)), http.StatusBadRequest, "M_INVALID_PARAM")
	wantError(t, "event of a long event ID", f.get(t, v1+"/event/%24"+strings.Repeat("a", 300)), http.StatusBadRequest, "M_INVALID_PARAM")
	wantError(t, "state_ids in a bad room ID", f.get(t, v1+"/state_ids/room?event_id="+url.QueryEscape(m3)), http.StatusBadRequest, "M_INVALID_PARAM")
}

// TestRoomEndpoints_Forbidden: a server with no joined user, or one the
// room's server ACL denies, gets 403 from every room endpoint.
func TestRoomEndpoints_Forbidden(t *testing.T) {
	f := start(t)
	r := newRoom(t, f, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	m1 := r.send(t, "one")
	asks := func(rm *servertest.Remote) map[string]servertest.Reply {
		enc := url.QueryEscape(m1)
		return map[string]servertest.Reply{
			"event":      rm.Do(t, f.url, "GET", v1+"/event/"+url.PathEscape(m1), nil),
			"state":      rm.Do(t, f.url, "GET", r.path("state")+"?event_id="+enc, nil),
			"state_ids":  rm.Do(t, f.url, "GET", r.path("state_ids")+"?event_id="+enc, nil),
			"event_auth": rm.Do(t, f.url, "GET", v1+"/event_auth/"+url.PathEscape(string(r.id))+"/"+url.PathEscape(m1), nil),
			"backfill":   rm.Do(t, f.url, "GET", r.path("backfill")+"?v="+enc+"&limit=5", nil),
			"get_missing_events": rm.Do(t, f.url, "POST", v1+"/get_missing_events/"+url.PathEscape(string(r.id)),
				map[string]any{"earliest_events": []string{}, "latest_events": []string{m1}}),
		}
	}
	want := func(rm *servertest.Remote, what string, status int) {
		t.Helper()
		for name, reply := range asks(rm) {
			if status == http.StatusOK {
				wantOK(t, name+" "+what, reply)
			} else {
				wantError(t, name+" "+what, reply, status, "M_FORBIDDEN")
			}
		}
	}
	want(f.rm, "before the remote joined", http.StatusForbidden)
	r.join(t, "bob")
	r.joinFrom(t, f.byIP, "carol")
	want(f.rm, "once joined", http.StatusOK)
	want(f.byIP, "once joined", http.StatusOK)
	want(f.stranger, "by a server not in the room", http.StatusForbidden)

	r.state(t, event.StateServerACL, map[string]any{"allow": []string{"*"}, "deny": []string{"REMOTE.test"}})
	want(f.rm, "denied by the ACL", http.StatusForbidden)
	want(f.byIP, "not denied by the ACL", http.StatusOK)
	r.state(t, event.StateServerACL, map[string]any{"allow": []string{"example.org", "*.test"}, "allow_ip_literals": false})
	want(f.rm, "allowed by the ACL", http.StatusOK)
	want(f.byIP, "denied as an IP literal", http.StatusForbidden)
	r.state(t, event.StateServerACL, map[string]any{"allow": []string{"example.org", "127.0.0.?"}, "deny": []string{}})
	want(f.rm, "not allowed by the ACL", http.StatusForbidden)
	want(f.byIP, "allowed by the ACL, port ignored", http.StatusOK)
	wantError(t, "a room this server does not hold", f.get(t, v1+"/state_ids/"+url.PathEscape("!nope:example.org")+"?event_id="+url.QueryEscape(m1)), http.StatusForbidden, "M_FORBIDDEN")
}

// TestRoomEndpoints_HistoryVisibility: under joined history visibility,
// a server sees in full only the events sent while one of its users was
// joined; the others it gets redacted, and not the state at them.
func TestRoomEndpoints_HistoryVisibility(t *testing.T) {
	f := start(t)
	r := newRoom(t, f, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{{
		Type: event.StateHistoryVisibility, StateKey: new(string), Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}},
	}}})
	early := r.send(t, "before bob")
	bob := r.join(t, "bob")
	late := r.send(t, "after bob")

	get := func(eventID string) events.PDU {
		t.Helper()
		reply := f.get(t, v1+"/event/"+url.PathEscape(eventID))
		wantOK(t, "event "+eventID, reply)
		return r.pdus(t, reply, "pdus")[0]
	}
	if ev := get(early); body(ev) != "" || ev.EventID() != early {
		t.Errorf("event before the remote joined: %s, want it redacted", ev.Content())
	}
	if ev := get(late); body(ev) != "after bob" {
		t.Errorf("event after the remote joined: %s, want it whole", ev.Content())
	}
	reply := f.get(t, r.path("backfill")+"?v="+url.QueryEscape(late)+"&limit=3")
	got := r.pdus(t, reply, "pdus")
	wantEqual(t, "backfill", ids(got), []string{late, bob, early})
	wantEqual(t, "backfill bodies", []string{body(got[0]), body(got[2])}, []string{"after bob", ""})
	wantError(t, "state at an event the remote may not see", f.get(t, r.path("state_ids")+"?event_id="+url.QueryEscape(early)), http.StatusForbidden, "M_FORBIDDEN")
	wantOK(t, "state at an event the remote may see", f.get(t, r.path("state_ids")+"?event_id="+url.QueryEscape(late)))
	f.st.CheckCost(t, "state_ids under joined visibility", "/state_ids/", servertest.Want(14, 27, 0))
}

// TestRoomEndpoints_Invited: under invited history visibility, a server
// sees events sent while its user was invited; under joined it does not.
func TestRoomEndpoints_Invited(t *testing.T) {
	for _, tc := range []struct {
		visibility string
		want       string
	}{{"invited", "while invited"}, {"joined", ""}} {
		t.Run(tc.visibility, func(t *testing.T) {
			f := start(t)
			r := newRoom(t, f, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{{
				Type: event.StateHistoryVisibility, StateKey: new(string), Content: event.Content{Raw: map[string]any{"history_visibility": tc.visibility}},
			}}})
			before := r.send(t, "before the invite")
			// Inviting a remote user needs federation's /invite, not there
			// yet: the invite alice's server would make, taken in as is.
			local := events.Signer{ServerName: servertest.ServerName, Key: f.st.Server.Key}
			r.receive(t, local, r.alice.ID, f.rm.UserID("bob"), `{"membership":"invite"}`)
			invited := r.send(t, "while invited")
			bob := r.join(t, "bob")
			reply := f.get(t, r.path("backfill")+"?v="+url.QueryEscape(bob)+"&limit=4")
			got := r.pdus(t, reply, "pdus")
			if len(got) != 4 || got[1].EventID() != invited || got[3].EventID() != before {
				t.Fatalf("backfill: %s", reply.Raw)
			}
			wantEqual(t, "bodies", []string{body(got[1]), body(got[3])}, []string{tc.want, ""})
		})
	}
}

// TestHierarchy_Restricted: a room restricted to a space's members is
// open to a server once one of its users joined the space.
func TestHierarchy_Restricted(t *testing.T) {
	f := start(t)
	space := newRoom(t, f, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Space", CreationContent: map[string]any{"type": "m.space"}})
	resp, err := space.alice.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Members only",
		InitialState: []*event.Event{{Type: event.StateJoinRules, StateKey: new(string), Content: event.Content{Raw: map[string]any{
			"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": space.id}},
		}}}}})
	if err != nil {
		t.Fatal(err)
	}
	child := string(resp.RoomID)
	if _, err := space.alice.SendStateEvent(background, space.id, event.StateSpaceChild, child, map[string]any{"via": []string{"example.org"}}); err != nil {
		t.Fatal(err)
	}
	hierarchy := func() servertest.Reply {
		r := f.get(t, space.path("hierarchy"))
		wantOK(t, "hierarchy", r)
		return r
	}
	r := hierarchy()
	wantEqual(t, "before joining the space: inaccessible", r.Body["inaccessible_children"], []any{child})
	space.join(t, "bob")
	r = hierarchy()
	children, _ := r.Body["children"].([]any)
	if len(children) != 1 || children[0].(map[string]any)["room_id"] != child || children[0].(map[string]any)["join_rule"] != "restricted" {
		t.Errorf("once in the space: children %v", children)
	}
	wantEqual(t, "allowed_room_ids", children[0].(map[string]any)["allowed_room_ids"], []any{string(space.id)})
	wantEqual(t, "once in the space: inaccessible", r.Body["inaccessible_children"], []any{})
}

// TestRoomEndpoints_SlashInEventID: event IDs of room version 3 are
// standard base64, with '/' and '+': escaped in the path, they stay one
// segment.
func TestRoomEndpoints_SlashInEventID(t *testing.T) {
	f := start(t)
	r := newRoom(t, f, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "3"})
	r.join(t, "bob")
	var slashed string
	for i := 0; i < 40 && slashed == ""; i++ {
		if id := r.send(t, "message"); strings.ContainsAny(id, "/+") {
			slashed = id
		}
	}
	if slashed == "" {
		t.Fatal("no event ID with '/' or '+' in 40 messages")
	}
	reply := f.get(t, v1+"/event/"+url.PathEscape(slashed))
	wantOK(t, "event", reply)
	if got := r.pdus(t, reply, "pdus"); got[0].EventID() != slashed {
		t.Errorf("event %s: got %s", slashed, got[0].EventID())
	}
	wantOK(t, "event_auth", f.get(t, v1+"/event_auth/"+url.PathEscape(string(r.id))+"/"+url.PathEscape(slashed)))
	reply = f.get(t, r.path("backfill")+"?limit=1&v="+url.QueryEscape(slashed))
	wantEqual(t, "backfill", ids(r.pdus(t, reply, "pdus")), []string{slashed})
	reply = f.get(t, r.path("state_ids")+"?event_id="+url.QueryEscape(slashed))
	wantOK(t, "state_ids", reply)
}
