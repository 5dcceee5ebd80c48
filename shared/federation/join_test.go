package federation_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// allVersions is the ver query of make_join for a server that knows every
// stable room version.
func allVersions() string {
	q := url.Values{}
	for _, v := range events.Versions() {
		q.Add("ver", v)
	}
	return q.Encode()
}

// makeJoin asks for a template for rm's user in room r.
func (r room) makeJoin(t *testing.T, rm *servertest.Remote, user, query string) servertest.Reply {
	t.Helper()
	return rm.Do(t, r.f.url, "GET", v1+"/make_join/"+url.PathEscape(string(r.id))+"/"+url.PathEscape(user)+"?"+query, nil)
}

// fill signs a make_join or make_leave answer's template as rm's server
// would: its own timestamp, hashes and signature.
func fill(t *testing.T, rm *servertest.Remote, reply servertest.Reply) events.PDU {
	t.Helper()
	if reply.Status != http.StatusOK {
		t.Fatalf("make: %d %s", reply.Status, reply.Raw)
	}
	var ans struct {
		RoomVersion string                       `json:"room_version"`
		Event       gomatrixserverlib.ProtoEvent `json:"event"`
	}
	if err := json.Unmarshal(reply.Raw, &ans); err != nil {
		t.Fatal(err)
	}
	impl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersion(ans.RoomVersion))
	ev, err := impl.NewEventBuilderFromProtoEvent(&ans.Event).Build(time.Now(), spec.ServerName(rm.Name), gomatrixserverlib.KeyID(rm.Key.ID), rm.Key.Private)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// sendJoin sends ev to send_join (or send_leave) version ver as rm.
func (r room) sendMember(t *testing.T, rm *servertest.Remote, endpoint, eventID string, body any) servertest.Reply {
	t.Helper()
	return rm.Do(t, r.f.url, "PUT", endpoint+"/"+url.PathEscape(string(r.id))+"/"+url.PathEscape(eventID), body)
}

const v2 = "/_matrix/federation/v2"

// TestMakeJoin_Errors: make_join refuses a user of another server than the
// origin (403), a room version the origin does not list or no ver at all
// (version 1 only; 400 M_INCOMPATIBLE_ROOM_VERSION with the room's
// version), a room this server is not in (404), malformed IDs (400), a
// join the join rules refuse (403) and an origin the server ACL denies
// (403).
func TestMakeJoin_Errors(t *testing.T) {
	f := start(t)
	r := newRoom(t, f, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10"})
	private := newRoomOf(t, f, r.alice, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "10"})
	bob := f.rm.UserID("bob")
	acl := newRoomOf(t, f, r.alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10"})
	acl.state(t, event.StateServerACL, map[string]any{"allow": []string{"*"}, "deny": []string{"remote.test"}})

	for _, tc := range []struct {
		name   string
		r      room
		user   string
		query  string
		status int
		code   string
	}{
		{"WrongOrigin", r, f.stranger.UserID("eve"), allVersions(), http.StatusForbidden, "M_FORBIDDEN"},
		{"IncompatibleVersion", r, bob, "ver=1&ver=2&ver=11", http.StatusBadRequest, "M_INCOMPATIBLE_ROOM_VERSION"},
		{"NoVer", r, bob, "", http.StatusBadRequest, "M_INCOMPATIBLE_ROOM_VERSION"},
		{"UnknownRoom", room{f: f, id: "!nowhere:example.org"}, bob, allVersions(), http.StatusNotFound, "M_NOT_FOUND"},
		{"BadRoomID", room{f: f, id: "nowhere"}, bob, allVersions(), http.StatusBadRequest, "M_INVALID_PARAM"},
		{"BadUserID", r, "bob", allVersions(), http.StatusBadRequest, "M_INVALID_PARAM"},
		{"InviteOnly", private, bob, allVersions(), http.StatusForbidden, "M_FORBIDDEN"},
		{"DeniedByACL", acl, bob, allVersions(), http.StatusForbidden, "M_FORBIDDEN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.r.makeJoin(t, f.rm, tc.user, tc.query)
			wantError(t, tc.name, got, tc.status, tc.code)
			if tc.code == "M_INCOMPATIBLE_ROOM_VERSION" && got.Body["room_version"] != "10" {
				t.Errorf("room_version: %s", got.Raw)
			}
		})
	}
}

// TestJoin: a remote user's join through make_join and send_join, as a
// remote server makes it: the template builds on the room's forward
// extremities with the join's auth events and no hashes or signatures;
// send_join takes the signed join into the room and answers the state
// before it with its auth chain, the event and the servers in the room. A
// second send_join of the same event answers the same; v1 wraps the
// answer in [200, ...]. Then make_leave and send_leave take the user out.
func TestJoin(t *testing.T) {
	f := start(t)
	r := newRoom(t, f, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10"})
	last := r.send(t, "before the join")
	bob := f.rm.UserID("bob")

	tmplReply := r.makeJoin(t, f.rm, bob, allVersions())
	wantOK(t, "make_join", tmplReply)
	f.st.CheckCost(t, "make_join", "/make_join/", servertest.Want(8, 11, 0))
	if tmplReply.Body["room_version"] != "10" {
		t.Errorf("room_version: %s", tmplReply.Raw)
	}
	tmpl, _ := tmplReply.Body["event"].(map[string]any)
	for _, k := range []string{"hashes", "signatures", "event_id"} {
		if _, ok := tmpl[k]; ok {
			t.Errorf("the template has %s: %s", k, tmplReply.Raw)
		}
	}
	content, _ := tmpl["content"].(map[string]any)
	if tmpl["type"] != "m.room.member" || tmpl["state_key"] != bob || tmpl["sender"] != bob || tmpl["room_id"] != string(r.id) || content["membership"] != "join" {
		t.Errorf("template: %s", tmplReply.Raw)
	}
	wantEqual(t, "template prev_events", strs(tmpl["prev_events"]), []string{last})
	if len(strs(tmpl["auth_events"])) != 3 { // create, power levels, join rules
		t.Errorf("template auth_events: %v", tmpl["auth_events"])
	}

	join := fill(t, f.rm, tmplReply)
	ans := r.sendMember(t, f.rm, v2+"/send_join", join.EventID(), json.RawMessage(join.JSON()))
	wantOK(t, "send_join", ans)
	f.st.CheckCost(t, "send_join", "/send_join/", servertest.Want(19, 22, 15)) // with presence indexing the remote member
	current, err := f.st.Server.Rooms.CurrentState(background, string(r.id))
	if err != nil {
		t.Fatal(err)
	}
	var before []string
	for _, ev := range current {
		if ev.EventID() != join.EventID() {
			before = append(before, ev.EventID())
		}
	}
	state := r.pdus(t, ans, "state")
	wantEqual(t, "send_join state (before the join)", sorted(ids(state)), sorted(before))
	chain := ids(r.pdus(t, ans, "auth_chain"))
	for _, id := range strs(tmpl["auth_events"]) {
		if !slices.Contains(chain, id) {
			t.Errorf("auth_chain %v lacks the join's auth event %s", chain, id)
		}
	}
	var evID struct {
		Event json.RawMessage `json:"event"`
	}
	json.Unmarshal(ans.Raw, &evID)
	if got, err := events.ParseUntrusted("10", evID.Event); err != nil || got.EventID() != join.EventID() {
		t.Errorf("send_join event: %v %s", err, evID.Event)
	}
	wantEqual(t, "members_omitted", ans.Body["members_omitted"], false)
	wantEqual(t, "servers_in_room", strs(ans.Body["servers_in_room"]), []string{"example.org", "remote.test"})
	wantEqual(t, "origin", ans.Body["origin"], "example.org")
	if m := membership(t, f.st, r, bob); m != "join" {
		t.Fatalf("bob's membership after send_join: %q", m)
	}

	again := r.sendMember(t, f.rm, v2+"/send_join", join.EventID(), json.RawMessage(join.JSON()))
	wantOK(t, "send_join again", again)
	wantEqual(t, "send_join again: state", sorted(ids(r.pdus(t, again, "state"))), sorted(before))
	status, raw := f.rm.DoRaw(t, f.url, "PUT", v1+"/send_join/"+url.PathEscape(string(r.id))+"/"+url.PathEscape(join.EventID()), json.RawMessage(join.JSON()))
	var v1ans []json.RawMessage
	if status != http.StatusOK || json.Unmarshal(raw, &v1ans) != nil || len(v1ans) != 2 || string(v1ans[0]) != "200" || !strings.Contains(string(v1ans[1]), `"auth_chain"`) {
		t.Errorf("v1 send_join: %d %.200s", status, raw)
	}

	leaveReply := f.rm.Do(t, f.url, "GET", v1+"/make_leave/"+url.PathEscape(string(r.id))+"/"+url.PathEscape(bob), nil)
	f.st.CheckCost(t, "make_leave", "/make_leave/", servertest.Want(7, 9, 0))
	leave := fill(t, f.rm, leaveReply)
	if m, _ := leave.Membership(); m != "leave" || leave.PrevEventIDs()[0] != join.EventID() {
		t.Errorf("make_leave template: %s", leaveReply.Raw)
	}
	left := r.sendMember(t, f.rm, v2+"/send_leave", leave.EventID(), json.RawMessage(leave.JSON()))
	wantOK(t, "send_leave", left)
	f.st.CheckCost(t, "send_leave", "/send_leave/", servertest.Want(13, 9, 15))
	if string(left.Raw) != "{}" {
		t.Errorf("send_leave answered %s, want {}", left.Raw)
	}
	if m := membership(t, f.st, r, bob); m != "leave" {
		t.Errorf("bob's membership after send_leave: %q", m)
	}
}

// membership is user's membership in the room's current state.
func membership(t *testing.T, st *servertest.Stack, r room, user string) string {
	t.Helper()
	ev, err := st.Server.Rooms.StateEvent(background, string(r.id), events.Member, user)
	if err != nil {
		return ""
	}
	m, _ := ev.Membership()
	return m
}

// TestSendJoin_Errors: send_join takes only the event the path names, a
// join of a user of the origin, signed by the origin, into a room this
// server holds; anything else is 400 (M_INVALID_PARAM where the spec asks
// for it: another event, a bad signature, a user of another server, the
// wrong membership) or 404, and leaves the user out.
func TestSendJoin_Errors(t *testing.T) {
	f := start(t)
	r := newRoom(t, f, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10"})
	bob := f.rm.UserID("bob")
	join := fill(t, f.rm, r.makeJoin(t, f.rm, bob, allVersions()))
	// The same template signed by another key of no server's.
	forged := fill(t, &servertest.Remote{Name: f.rm.Name, Key: f.stranger.Key}, r.makeJoin(t, f.rm, bob, allVersions()))
	// A join of the stranger's user, asked for by the stranger, sent by
	// the remote.
	eve := fill(t, f.stranger, r.makeJoin(t, f.stranger, f.stranger.UserID("eve"), allVersions()))
	// A leave of bob's, who is not in the room, made as the auth rules
	// would never let make_leave make it.
	leave := fill(t, f.rm, r.makeJoin(t, f.rm, bob, allVersions()))
	leave = swapMembership(t, f.rm, leave, "leave")

	for _, tc := range []struct {
		name     string
		endpoint string
		r        room
		eventID  string
		body     any
		status   int
		code     string
	}{
		{"OtherEventID", v2 + "/send_join", r, "$other", json.RawMessage(join.JSON()), http.StatusBadRequest, "M_INVALID_PARAM"},
		{"NotJSON", v2 + "/send_join", r, join.EventID(), "{", http.StatusBadRequest, "M_BAD_JSON"},
		{"NotAnEvent", v2 + "/send_join", r, join.EventID(), map[string]any{"type": "m.room.member"}, http.StatusBadRequest, "M_BAD_JSON"},
		{"BadSignature", v2 + "/send_join", r, forged.EventID(), json.RawMessage(forged.JSON()), http.StatusBadRequest, "M_INVALID_PARAM"},
		{"UserOfAnotherServer", v2 + "/send_join", r, eve.EventID(), json.RawMessage(eve.JSON()), http.StatusBadRequest, "M_INVALID_PARAM"},
		{"LeaveToSendJoin", v2 + "/send_join", r, leave.EventID(), json.RawMessage(leave.JSON()), http.StatusBadRequest, "M_INVALID_PARAM"},
		{"JoinToSendLeave", v2 + "/send_leave", r, join.EventID(), json.RawMessage(join.JSON()), http.StatusBadRequest, "M_INVALID_PARAM"},
		{"UnknownRoom", v2 + "/send_join", room{f: f, id: "!nowhere:example.org"}, join.EventID(), json.RawMessage(join.JSON()), http.StatusNotFound, "M_NOT_FOUND"},
		{"OtherRoom", v2 + "/send_join", newRoomOf(t, f, r.alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10"}), join.EventID(), json.RawMessage(join.JSON()), http.StatusBadRequest, "M_INVALID_PARAM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, tc.name, tc.r.sendMember(t, f.rm, tc.endpoint, tc.eventID, tc.body), tc.status, tc.code)
		})
	}
	if m := membership(t, f.st, r, bob); m != "" {
		t.Errorf("bob's membership after refused send_joins: %q", m)
	}
	// A leave of a user who never joined: the auth rules refuse it.
	wantError(t, "make_leave of a user not in the room", f.rm.Do(t, f.url, "GET", v1+"/make_leave/"+url.PathEscape(string(r.id))+"/"+url.PathEscape(f.rm.UserID("carol")), nil), http.StatusForbidden, "M_FORBIDDEN")
}

// TestJoin_Restricted: a room restricted to a space's members. The
// remote's bob, joined to the space, gets a template naming alice (a
// local member who may invite) in join_authorised_via_users_server, and
// his join is stored countersigned by this server; carol, in no allowed
// room, is refused (403); a room restricted to a room this server is not
// in cannot be decided here (400 M_UNABLE_TO_AUTHORISE_JOIN).
func TestJoin_Restricted(t *testing.T) {
	f := start(t)
	space := newRoom(t, f, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10"})
	space.join(t, "bob")
	restricted := func(allowed string) room {
		t.Helper()
		return newRoomOf(t, f, space.alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10",
			InitialState: []*event.Event{{Type: event.StateJoinRules, StateKey: new(string), Content: event.Content{Raw: map[string]any{
				"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": allowed}},
			}}}}})
	}
	r := restricted(string(space.id))
	bob := f.rm.UserID("bob")
	tmplReply := r.makeJoin(t, f.rm, bob, allVersions())
	wantOK(t, "make_join", tmplReply)
	content, _ := tmplReply.Body["event"].(map[string]any)["content"].(map[string]any)
	if content["join_authorised_via_users_server"] != space.alice.User.ID {
		t.Fatalf("template content: %v", content)
	}
	join := fill(t, f.rm, tmplReply)
	ans := r.sendMember(t, f.rm, v2+"/send_join", join.EventID(), json.RawMessage(join.JSON()))
	wantOK(t, "send_join", ans)
	var got struct {
		Event struct {
			Signatures map[string]any `json:"signatures"`
		} `json:"event"`
	}
	json.Unmarshal(ans.Raw, &got)
	if _, ok := got.Event.Signatures["example.org"]; !ok {
		t.Errorf("the event send_join answers is not signed by this server: %s", ans.Raw)
	}
	if _, ok := got.Event.Signatures["remote.test"]; !ok {
		t.Errorf("the event send_join answers lost the remote's signature: %s", ans.Raw)
	}
	stored, err := f.st.Server.Rooms.StateEvent(background, string(r.id), events.Member, bob)
	if err != nil || !strings.Contains(string(stored.JSON()), `"example.org"`) {
		t.Errorf("stored join: %v %s", err, stored.JSON())
	}

	wantError(t, "carol, in no allowed room", r.makeJoin(t, f.rm, f.rm.UserID("carol"), allVersions()), http.StatusForbidden, "M_FORBIDDEN")
	elsewhere := restricted("!elsewhere:other.test")
	wantError(t, "restricted to a room this server is not in", elsewhere.makeJoin(t, f.rm, bob, allVersions()), http.StatusBadRequest, "M_UNABLE_TO_AUTHORISE_JOIN")
}

// newRoomOf is newRoom with a room creator already registered.
func newRoomOf(t *testing.T, f fed, alice servertest.Member, req *mautrix.ReqCreateRoom) room {
	t.Helper()
	resp, err := alice.CreateRoom(background, req)
	if err != nil {
		t.Fatal(err)
	}
	return room{f: f, alice: alice, id: resp.RoomID, version: string(req.RoomVersion)}
}

// swapMembership re-signs ev as rm with membership m.
func swapMembership(t *testing.T, rm *servertest.Remote, ev events.PDU, m string) events.PDU {
	t.Helper()
	var proto gomatrixserverlib.ProtoEvent
	if err := json.Unmarshal(ev.JSON(), &proto); err != nil {
		t.Fatal(err)
	}
	proto.Content = spec.RawJSON(`{"membership":"` + m + `"}`)
	out, err := gomatrixserverlib.MustGetRoomVersion(ev.Version()).NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), spec.ServerName(rm.Name), gomatrixserverlib.KeyID(rm.Key.ID), rm.Key.Private)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestJoin_EveryVersion: a remote join through make_join and send_join
// into a room of each stable version: event references in the templates
// of versions 1 and 2, the create event named by the room ID in version
// 12's.
func TestJoin_EveryVersion(t *testing.T) {
	f := start(t)
	alice := f.st.Member(t, "alice")
	for _, v := range events.Versions() {
		t.Run("v"+v, func(t *testing.T) {
			r := newRoomOf(t, f, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: id.RoomVersion(v)})
			bob := f.rm.UserID("bob")
			join := fill(t, f.rm, r.makeJoin(t, f.rm, bob, allVersions()))
			ans := r.sendMember(t, f.rm, v2+"/send_join", join.EventID(), json.RawMessage(join.JSON()))
			wantOK(t, "send_join", ans)
			if m := membership(t, f.st, r, bob); m != "join" {
				t.Fatalf("bob's membership: %q", m)
			}
			if len(r.pdus(t, ans, "state")) == 0 || (v != "12" && len(r.pdus(t, ans, "auth_chain")) == 0) {
				t.Errorf("send_join answer: %.300s", ans.Raw)
			}
		})
	}
}
