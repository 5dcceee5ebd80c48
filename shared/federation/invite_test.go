package federation_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// remoteRoom is a room remote.test holds and this server is not in: its
// create event and the invites its bob makes, in room version v.
type remoteRoom struct {
	f      fed
	v      string
	id     string
	create events.PDU
	signer events.Signer
}

func newRemoteRoom(t *testing.T, f fed, v string) remoteRoom {
	t.Helper()
	signer := events.Signer{ServerName: f.rm.Name, Key: f.rm.Key}
	bob := f.rm.UserID("bob")
	empty := ""
	p := events.Proto{Sender: bob, Type: events.Create, StateKey: &empty, Content: json.RawMessage(`{"room_version":"` + v + `","creator":"` + bob + `"}`)}
	if !events.DomainlessRoomIDs(v) {
		p.RoomID = "!remote:" + f.rm.Name
	}
	create, err := signer.Build(v, p, events.Graph{Depth: 1}, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return remoteRoom{f: f, v: v, id: events.RoomID(create), create: create, signer: signer}
}

// invite is bob's invite of target, signed by signer.
func (rr remoteRoom) invite(t *testing.T, signer events.Signer, sender, target, membership string) events.PDU {
	t.Helper()
	ev, err := signer.Build(rr.v, events.Proto{RoomID: rr.id, Sender: sender, Type: events.Member, StateKey: &target,
		Content: json.RawMessage(`{"membership":"` + membership + `"}`)}, events.Graph{PrevEvents: []string{rr.create.EventID()}, Depth: 2}, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// put sends an invite request for ev as rm.
func (rr remoteRoom) put(t *testing.T, rm *servertest.Remote, roomID, eventID string, body any) servertest.Reply {
	t.Helper()
	return rm.Do(t, rr.f.url, "PUT", v2+"/invite/"+url.PathEscape(roomID)+"/"+url.PathEscape(eventID), body)
}

// stripped is the stripped state remote.test sends with its invites.
func (rr remoteRoom) stripped() []any {
	return []any{
		map[string]any{"type": "m.room.create", "state_key": "", "sender": rr.f.rm.UserID("bob"), "content": map[string]any{"room_version": rr.v}},
		map[string]any{"type": "m.room.name", "state_key": "", "sender": rr.f.rm.UserID("bob"), "content": map[string]any{"name": "Remote room"}},
	}
}

// inviteState is the invite_state of room in a user's /sync, by type.
func inviteState(t *testing.T, st *servertest.Stack, token, room string) map[string]map[string]any {
	t.Helper()
	r := st.Do(t, "GET", "/_matrix/client/v3/sync?timeout=0", token, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("sync: %d %s", r.Status, r.Raw)
	}
	rooms, _ := r.Body["rooms"].(map[string]any)
	invite, _ := rooms["invite"].(map[string]any)
	inv, _ := invite[room].(map[string]any)
	state, _ := inv["invite_state"].(map[string]any)
	evs, _ := state["events"].([]any)
	out := map[string]map[string]any{}
	for _, e := range evs {
		ev, _ := e.(map[string]any)
		out[ev["type"].(string)] = ev
	}
	return out
}

// TestInvite: remote.test's bob invites alice to a room this server is not
// in. The answer is the invite signed by both servers; alice's /sync shows
// the invite with the stripped state bob's server sent and her own member
// event. The same invite again is answered the same. remote.test serves
// neither make_join nor make_leave: alice's join fails, her rejection is
// made here alone and succeeds.
func TestInvite(t *testing.T) {
	f := start(t)
	alice := f.st.Member(t, "alice")
	rr := newRemoteRoom(t, f, "10")
	ev := rr.invite(t, rr.signer, f.rm.UserID("bob"), alice.User.ID, "invite")
	body := map[string]any{"room_version": "10", "event": json.RawMessage(ev.JSON()), "invite_room_state": rr.stripped()}
	r := rr.put(t, f.rm, rr.id, ev.EventID(), body)
	wantOK(t, "invite", r)
	f.st.CheckCost(t, "invite", "/invite/", servertest.Want(6, 4, 3))
	var got struct {
		Event json.RawMessage `json:"event"`
	}
	json.Unmarshal(r.Raw, &got)
	signed, err := events.ParseUntrusted("10", got.Event)
	if err != nil || signed.EventID() != ev.EventID() {
		t.Fatalf("answered event: %v %s", err, got.Event)
	}
	var sigs struct {
		Signatures map[string]any `json:"signatures"`
	}
	json.Unmarshal(got.Event, &sigs)
	if sigs.Signatures["example.org"] == nil || sigs.Signatures["remote.test"] == nil {
		t.Errorf("signatures of the answered invite: %v", sigs.Signatures)
	}

	state := inviteState(t, f.st, alice.User.AccessToken, rr.id)
	if name, _ := state["m.room.name"]["content"].(map[string]any); name["name"] != "Remote room" {
		t.Errorf("invite_state name: %v", state)
	}
	if m, _ := state["m.room.member"]["content"].(map[string]any); m["membership"] != "invite" || state["m.room.member"]["state_key"] != alice.User.ID {
		t.Errorf("invite_state member: %v", state)
	}
	if _, ok := state["m.room.create"]; !ok {
		t.Errorf("invite_state lacks the create event: %v", state)
	}
	wantOK(t, "the same invite again", rr.put(t, f.rm, rr.id, ev.EventID(), body))

	// remote.test serves no make_join: the join fails, a client error.
	r = f.st.Do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(rr.id)+"/join", alice.User.AccessToken, map[string]any{})
	if r.Status == http.StatusOK || r.Status >= 500 {
		t.Errorf("join through a server that serves no make_join: %d %s", r.Status, r.Raw)
	}
	// Nor make_leave: the rejection is made here alone (out of band), as
	// Synapse makes it, and the client's request succeeds.
	before := f.st.Do(t, "GET", "/_matrix/client/v3/sync?timeout=0", alice.User.AccessToken, nil)
	r = f.st.Do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(rr.id)+"/leave", alice.User.AccessToken, map[string]any{"reason": "no thanks"})
	wantOK(t, "out-of-band rejection", r)
	sync := f.st.Do(t, "GET", "/_matrix/client/v3/sync?timeout=0&since="+url.QueryEscape(before.Body["next_batch"].(string)), alice.User.AccessToken, nil)
	wantOK(t, "incremental sync after the rejection", sync)
	rooms, _ := sync.Body["rooms"].(map[string]any)
	left, _ := rooms["leave"].(map[string]any)
	room, _ := left[rr.id].(map[string]any)
	timeline, _ := room["timeline"].(map[string]any)
	if evs, _ := timeline["events"].([]any); len(evs) != 1 || evs[0].(map[string]any)["sender"] != alice.User.ID ||
		evs[0].(map[string]any)["content"].(map[string]any)["membership"] != "leave" {
		t.Errorf("the rejection in rooms.leave of the incremental /sync: %v", sync.Body["rooms"])
	}
	if invite, _ := rooms["invite"].(map[string]any); invite[rr.id] != nil {
		t.Errorf("the rejected invite is still in /sync: %s", sync.Raw)
	}
	if m, err := f.st.Server.Rooms.Membership(background, alice.User.ID, rr.id); err != nil || m != "leave" {
		t.Errorf("alice's membership after the rejection: %q %v", m, err)
	}
}

// TestInvite_V12: in a version 12 room invite_room_state must hold the
// room's create event as a signed PDU: stripped entries are 400
// M_INVALID_PARAM, the PDUs are taken.
func TestInvite_V12(t *testing.T) {
	f := start(t)
	alice := f.st.Member(t, "alice")
	rr := newRemoteRoom(t, f, "12")
	ev := rr.invite(t, rr.signer, f.rm.UserID("bob"), alice.User.ID, "invite")
	wantError(t, "stripped state in a v12 room", rr.put(t, f.rm, rr.id, ev.EventID(),
		map[string]any{"room_version": "12", "event": json.RawMessage(ev.JSON()), "invite_room_state": rr.stripped()}), http.StatusBadRequest, "M_INVALID_PARAM")
	wantError(t, "no create event in a v12 room", rr.put(t, f.rm, rr.id, ev.EventID(),
		map[string]any{"room_version": "12", "event": json.RawMessage(ev.JSON()), "invite_room_state": []any{}}), http.StatusBadRequest, "M_INVALID_PARAM")
	wantOK(t, "signed state", rr.put(t, f.rm, rr.id, ev.EventID(),
		map[string]any{"room_version": "12", "event": json.RawMessage(ev.JSON()), "invite_room_state": []any{json.RawMessage(rr.create.JSON())}}))
	if _, ok := inviteState(t, f.st, alice.User.AccessToken, rr.id)["m.room.create"]; !ok {
		t.Errorf("alice's /sync shows no invite with the create event")
	}
}

// TestInvite_Errors: an invite is taken only when it is the event the path
// names, an invite from a user of the origin signed by it, of an existing
// user of this server, in a room version this server supports.
func TestInvite_Errors(t *testing.T) {
	f := start(t)
	alice := f.st.Member(t, "alice")
	rr := newRemoteRoom(t, f, "10")
	bob := f.rm.UserID("bob")
	good := rr.invite(t, rr.signer, bob, alice.User.ID, "invite")
	body := func(ev events.PDU, v string) map[string]any {
		return map[string]any{"room_version": v, "event": json.RawMessage(ev.JSON()), "invite_room_state": rr.stripped()}
	}
	forged := rr.invite(t, events.Signer{ServerName: f.rm.Name, Key: f.stranger.Key}, bob, alice.User.ID, "invite")
	strangers := rr.invite(t, events.Signer{ServerName: f.stranger.Name, Key: f.stranger.Key}, f.stranger.UserID("eve"), alice.User.ID, "invite")
	join := rr.invite(t, rr.signer, bob, alice.User.ID, "join")
	elsewhere := rr.invite(t, rr.signer, bob, "@carol:other.test", "invite")
	nobody := rr.invite(t, rr.signer, bob, "@nobody:example.org", "invite")
	for _, tc := range []struct {
		name    string
		roomID  string
		eventID string
		body    any
		status  int
		code    string
	}{
		{"OtherRoomInPath", "!other:remote.test", good.EventID(), body(good, "10"), http.StatusBadRequest, "M_INVALID_PARAM"},
		{"OtherEventID", rr.id, "$other", body(good, "10"), http.StatusBadRequest, "M_INVALID_PARAM"},
		{"NotAnInvite", rr.id, join.EventID(), body(join, "10"), http.StatusBadRequest, "M_INVALID_PARAM"},
		{"SenderOfAnotherServer", rr.id, strangers.EventID(), body(strangers, "10"), http.StatusBadRequest, "M_INVALID_PARAM"},
		{"TargetOfAnotherServer", rr.id, elsewhere.EventID(), body(elsewhere, "10"), http.StatusBadRequest, "M_INVALID_PARAM"},
		{"NoSuchUser", rr.id, nobody.EventID(), body(nobody, "10"), http.StatusNotFound, "M_NOT_FOUND"},
		{"BadSignature", rr.id, forged.EventID(), body(forged, "10"), http.StatusBadRequest, "M_INVALID_PARAM"},
		{"UnsupportedVersion", rr.id, good.EventID(), body(good, "99"), http.StatusBadRequest, "M_INCOMPATIBLE_ROOM_VERSION"},
		{"NoRoomVersion", rr.id, good.EventID(), map[string]any{"event": json.RawMessage(good.JSON())}, http.StatusBadRequest, "M_MISSING_PARAM"},
		{"NotAnObject", rr.id, good.EventID(), "{", http.StatusBadRequest, "M_BAD_JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, tc.name, rr.put(t, f.rm, tc.roomID, tc.eventID, tc.body), tc.status, tc.code)
		})
	}
	if state := inviteState(t, f.st, alice.User.AccessToken, rr.id); len(state) != 0 {
		t.Errorf("a refused invite shows in /sync: %v", state)
	}
}

// TestInvite_RoomHeldHere: an invite to a room this server holds is signed
// and answered, and nothing is written: it comes again in a transaction
// and goes through the room engine.
func TestInvite_RoomHeldHere(t *testing.T) {
	f := start(t)
	r := newRoom(t, f, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	r.join(t, "bob")
	carol := f.st.Member(t, "carol")
	bob := f.rm.UserID("bob")
	prev, depth, err := f.st.Server.Rooms.Extremities(background, string(r.id))
	if err != nil {
		t.Fatal(err)
	}
	ev, err := events.Signer{ServerName: f.rm.Name, Key: f.rm.Key}.Build(r.version, events.Proto{RoomID: string(r.id), Sender: bob, Type: events.Member,
		StateKey: &carol.User.ID, Content: json.RawMessage(`{"membership":"invite"}`)}, events.Graph{PrevEvents: prev, Depth: depth + 1}, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	reply := f.rm.Do(t, f.url, "PUT", v2+"/invite/"+url.PathEscape(string(r.id))+"/"+url.PathEscape(ev.EventID()),
		map[string]any{"room_version": r.version, "event": json.RawMessage(ev.JSON()), "invite_room_state": []any{}})
	wantOK(t, "invite", reply)
	if m, err := f.st.Server.Rooms.Membership(background, carol.User.ID, string(r.id)); err != nil || m != "" {
		t.Errorf("carol's membership after an invite to a room held here: %q %v", m, err)
	}
}
