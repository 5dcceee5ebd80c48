package federation_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// syncRooms is a user's initial /sync: its rooms section by membership,
// room ID and field.
func syncRooms(t *testing.T, st *servertest.Stack, token string) map[string]map[string]map[string]any {
	t.Helper()
	r := st.Do(t, "GET", "/_matrix/client/v3/sync?timeout=0", token, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("sync: %d %s", r.Status, r.Raw)
	}
	out := map[string]map[string]map[string]any{}
	rms, _ := r.Body["rooms"].(map[string]any)
	for m, v := range rms {
		byRoom, _ := v.(map[string]any)
		out[m] = map[string]map[string]any{}
		for room, body := range byRoom {
			out[m][room], _ = body.(map[string]any)
		}
	}
	return out
}

// strippedMember is userID's member event content in a /sync room's
// invite_state or knock_state (field), nil when absent.
func strippedMember(room map[string]any, field, userID string) map[string]any {
	st, _ := room[field].(map[string]any)
	evs, _ := st["events"].([]any)
	for _, e := range evs {
		ev, _ := e.(map[string]any)
		if ev["type"] == "m.room.member" && ev["state_key"] == userID {
			c, _ := ev["content"].(map[string]any)
			return c
		}
	}
	return nil
}

// membershipOn is userID's membership in room's current state on st, ""
// when none.
func membershipOn(t *testing.T, st *servertest.Stack, room id.RoomID, userID id.UserID) string {
	t.Helper()
	ev, err := st.Server.Rooms.StateEvent(background, string(room), "m.room.member", string(userID))
	if err != nil {
		return ""
	}
	m, _ := ev.Membership()
	return m
}

func waitMembership(t *testing.T, st *servertest.Stack, room id.RoomID, userID id.UserID, want string) {
	t.Helper()
	waitFor(t, string(userID)+" "+want+" on "+st.Name(), func() ([]string, bool) {
		m := membershipOn(t, st, room, userID)
		return []string{m}, m == want
	}, st.Logs)
}

// TestTwoServers_RemoteInvite: alice@A creates a direct chat with bob@B in
// createRoom's invite list: B countersigns the invite (PUT /invite v2), A
// appends it, bob's /sync shows it with is_direct. bob rejects it while B
// does not hold the room (make_leave, send_leave v2 to A): alice sees the
// leave, and bob's invite is gone. A second invite by POST /invite, bob
// joins through the inviter's server with no via. carol@B is invited
// while B is in the room and joins. alice kicks bob, the kick reaches B;
// invited and joined again, bob is banned: the ban reaches B, his rejoin
// is 403 on both paths, and an event of his that B's signer builds after
// the ban is rejected by A. The unban reaches B too. carol leaves: B holds
// the room but is outside it; bob's next invite is kept with A's stripped
// state, his rejection goes through A, and his join after a third invite
// takes the room's state from A's send_join answer: messages flow both
// ways again. B out once more, the room made public meanwhile: bob joins
// uninvited (the join rules caught up before his join).
func TestTwoServers_RemoteInvite(t *testing.T) {
	a, b := twoServers(t)
	alice := a.Member(t, "alice")
	bob := b.Member(t, "bob")
	created, err := alice.CreateRoom(background, &mautrix.ReqCreateRoom{
		Preset: "private_chat", RoomVersion: "12", Invite: []id.UserID{bob.UserID}, IsDirect: true, Name: "Direct",
	})
	if err != nil {
		t.Fatalf("createRoom inviting %s: %v", bob.UserID, err)
	}
	room := created.RoomID
	if m := membershipOn(t, a, room, bob.UserID); m != "invite" {
		t.Fatalf("bob on A after createRoom: %q", m)
	}
	inv := syncRooms(t, b, bob.User.AccessToken)["invite"][string(room)]
	if c := strippedMember(inv, "invite_state", string(bob.UserID)); c == nil || c["membership"] != "invite" || c["is_direct"] != true {
		t.Fatalf("bob's invite on B: %v", inv)
	}

	// Rejecting: B holds nothing of the room; A takes the leave.
	if _, err := bob.LeaveRoom(background, room); err != nil {
		t.Fatalf("bob rejects the invite: %v", err)
	}
	b.CheckCost(t, "rejection of a remote invite", "/leave", servertest.Want(6, 4, 2))
	// A's append of bob's leave records it for device lists (e2ekeys'
	// remote memberships): one BatchWriteItem; presence drops its index
	// item of bob's room (a DeleteItem).
	a.CheckCost(t, "send_leave served", "/send_leave/", servertest.Want(13, 9, 15))
	if m := membershipOn(t, a, room, bob.UserID); m != "leave" {
		t.Fatalf("bob on A after the rejection: %q", m)
	}
	if _, ok := syncRooms(t, b, bob.User.AccessToken)["invite"][string(room)]; ok {
		t.Errorf("bob's rejected invite still in his /sync")
	}
	if ev, err := a.Server.Rooms.StateEvent(background, string(room), "m.room.member", string(bob.UserID)); err != nil || events.Sender(ev) != string(bob.UserID) {
		t.Errorf("bob's leave on A is not his own: %v", err)
	}

	// POST /invite, then a join with no via: the inviter's server.
	if _, err := alice.InviteUser(background, room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatalf("second invite: %v", err)
	}
	a.CheckCost(t, "invite of a remote user", "/invite", servertest.Want(10, 17, 15)) // presence drops nothing for an invite
	b.CheckCost(t, "invite served", "/invite/", servertest.Want(10, 8, 3))
	waitFor(t, "bob's second invite in his /sync", func() ([]string, bool) {
		_, ok := syncRooms(t, b, bob.User.AccessToken)["invite"][string(room)]
		return nil, ok
	}, b.Logs)
	if _, err := bob.JoinRoomByID(background, room); err != nil {
		t.Fatalf("bob accepts: %v", err)
	}
	waitMembership(t, a, room, bob.UserID, "join")

	// carol@B, invited while B is in the room: the invite comes to B
	// twice (PUT /invite, then A's transaction), and her join is B's own.
	// She keeps B in the room until the end.
	carol := b.Member(t, "carol")
	if _, err := alice.InviteUser(background, room, &mautrix.ReqInviteUser{UserID: carol.UserID}); err != nil {
		t.Fatalf("invite of carol: %v", err)
	}
	waitMembership(t, b, room, carol.UserID, "invite")
	if _, err := carol.JoinRoomByID(background, room); err != nil {
		t.Fatalf("carol joins on B: %v", err)
	}
	waitMembership(t, a, room, carol.UserID, "join")

	// Kick: the event reaches B.
	if _, err := alice.KickUser(background, room, &mautrix.ReqKickUser{UserID: bob.UserID, Reason: "out"}); err != nil {
		t.Fatalf("kick: %v", err)
	}
	waitMembership(t, b, room, bob.UserID, "leave")

	// Invited and joined again, then banned.
	if _, err := alice.InviteUser(background, room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatalf("third invite: %v", err)
	}
	waitMembership(t, b, room, bob.UserID, "invite")
	if _, err := bob.JoinRoomByID(background, room); err != nil {
		t.Fatalf("bob joins again: %v", err)
	}
	waitMembership(t, a, room, bob.UserID, "join")
	if _, err := bob.SendText(background, room, "before the ban"); err != nil {
		t.Fatal(err)
	}
	// The ban builds on bob's message: a fork here would need B to resolve
	// state whose auth chain it does not fully hold (remote-joined rooms
	// keep no superseded state), which is the room engine's business.
	waitFor(t, "bob's message on A", func() ([]string, bool) {
		got := bodies(t, alice.Client, room)
		return got, len(got) == 1
	}, a.Logs)
	if _, err := alice.BanUser(background, room, &mautrix.ReqBanUser{UserID: bob.UserID, Reason: "spam"}); err != nil {
		t.Fatalf("ban: %v", err)
	}
	waitMembership(t, b, room, bob.UserID, "ban")
	if _, err := bob.JoinRoomByID(background, room); !isStatus(err, http.StatusForbidden, "M_FORBIDDEN") {
		t.Errorf("banned bob rejoins: %v, want 403 M_FORBIDDEN", err)
	}
	if _, err := bob.JoinRoom(background, string(room), &mautrix.ReqJoinRoom{Via: []string{a.Name()}}); !isStatus(err, http.StatusForbidden, "M_FORBIDDEN") {
		t.Errorf("banned bob rejoins via A: %v, want 403 M_FORBIDDEN", err)
	}
	if _, err := bob.SendText(background, room, "after the ban"); !isStatus(err, http.StatusForbidden, "M_FORBIDDEN") {
		t.Errorf("banned bob sends: %v, want 403 M_FORBIDDEN", err)
	}
	// An event B's server would sign for bob after the ban, built on the
	// ban: A rejects it.
	forged := forgedAfterBan(t, a, b, string(room), string(bob.UserID))
	out, err := a.Server.Rooms.Receive(background, forged)
	if err != nil || out.Status != rooms.Rejected {
		t.Errorf("bob's message after the ban on A: %+v %v, want rejected", out, err)
	}
	if got := bodies(t, alice.Client, room); len(got) != 1 || got[0] != "before the ban" {
		t.Errorf("alice's messages: %q", got)
	}

	if _, err := alice.UnbanUser(background, room, &mautrix.ReqUnbanUser{UserID: bob.UserID}); err != nil {
		t.Fatalf("unban: %v", err)
	}
	waitMembership(t, b, room, bob.UserID, "leave")

	// carol leaves: B holds the room but is outside it, its state stale
	// from now on. An invite is kept as for a room B never held, its
	// rejection goes through A, and a join takes the room's state from
	// A's send_join answer.
	if _, err := carol.LeaveRoom(background, room); err != nil {
		t.Fatal(err)
	}
	waitMembership(t, a, room, carol.UserID, "leave")
	if _, err := alice.SendStateEvent(background, room, event.StateRoomName, "", map[string]any{"name": "Renamed while B was out"}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.InviteUser(background, room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatalf("invite to a room B left: %v", err)
	}
	inv = syncRooms(t, b, bob.User.AccessToken)["invite"][string(room)]
	if c := strippedMember(inv, "invite_state", string(bob.UserID)); c == nil || c["membership"] != "invite" {
		t.Fatalf("bob's invite to a room B left: %v", inv)
	}
	if !strippedHas(inv, "m.room.name", "name", "Renamed while B was out") {
		t.Errorf("the invite's stripped state is not A's: %v", inv)
	}
	if _, err := bob.LeaveRoom(background, room); err != nil {
		t.Fatalf("bob rejects the invite to a room B left: %v", err)
	}
	if m := membershipOn(t, a, room, bob.UserID); m != "leave" {
		t.Fatalf("bob on A after rejecting: %q", m)
	}
	if _, err := alice.InviteUser(background, room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatalf("invite after the rejection: %v", err)
	}
	if _, err := bob.JoinRoomByID(background, room); err != nil {
		t.Fatalf("bob joins the room B left: %v", err)
	}
	if m := membershipOn(t, a, room, bob.UserID); m != "join" {
		t.Fatalf("bob on A after rejoining: %q", m)
	}
	if _, err := alice.SendText(background, room, "welcome back"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice's message on B after the rejoin", func() ([]string, bool) {
		got := bodies(t, bob.Client, room)
		return got, slices.Contains(got, "welcome back")
	}, b.Logs)
	if _, err := bob.SendText(background, room, "back"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob's message on A after the rejoin", func() ([]string, bool) {
		got := bodies(t, alice.Client, room)
		return got, slices.Contains(got, "back")
	}, a.Logs)

	// B out again; the room made public meanwhile: bob joins uninvited.
	if _, err := bob.LeaveRoom(background, room); err != nil {
		t.Fatal(err)
	}
	waitMembership(t, a, room, bob.UserID, "leave")
	if _, err := alice.SendStateEvent(background, room, event.StateJoinRules, "", map[string]any{"join_rule": "public"}); err != nil {
		t.Fatal(err)
	}
	joinVia(t, bob, room, a.Name())
	if m := membershipOn(t, a, room, bob.UserID); m != "join" {
		t.Fatalf("bob on A after joining the public room: %q", m)
	}
}

// strippedHas reports whether a /sync room's invite_state holds an event
// of type typ whose content has key = value.
func strippedHas(room map[string]any, typ, key, value string) bool {
	st, _ := room["invite_state"].(map[string]any)
	evs, _ := st["events"].([]any)
	for _, e := range evs {
		ev, _ := e.(map[string]any)
		c, _ := ev["content"].(map[string]any)
		if ev["type"] == typ && c[key] == value {
			return true
		}
	}
	return false
}

// forgedAfterBan is a message of userID, signed by b, built on A's room
// as it stands after the ban, with the ban among its auth events.
func forgedAfterBan(t *testing.T, a, b *servertest.Stack, room, userID string) events.PDU {
	t.Helper()
	var auth []events.PDU
	for _, k := range [][2]string{{"m.room.create", ""}, {"m.room.power_levels", ""}, {"m.room.member", userID}} {
		ev, err := a.Server.Rooms.StateEvent(background, room, k[0], k[1])
		if err != nil {
			t.Fatal(err)
		}
		auth = append(auth, ev)
	}
	state, err := events.NewState(auth)
	if err != nil {
		t.Fatal(err)
	}
	ext, _, err := a.Server.Rooms.Extremities(background, room)
	if err != nil {
		t.Fatal(err)
	}
	info, err := a.Server.Rooms.Info(background, room)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := b.Server.Rooms.Signer.Build(info.Version, events.Proto{RoomID: room, Sender: userID, Type: "m.room.message",
		Content: json.RawMessage(`{"msgtype":"m.text","body":"after the ban"}`)}, events.Graph{PrevEvents: ext, Depth: 100}, state, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// TestTwoServers_Knock: bob@B knocks on alice@A's knockable version 12
// room, which B does not hold, through a server that does not answer and
// then A (make_knock, send_knock): his /sync lists the room under knock
// with the stripped state A answered; alice sees the knock. bob withdraws
// it (make_leave, send_leave to the server that took it), knocks again,
// and alice accepts by inviting: bob's invite comes, he joins. He leaves,
// so that B holds the room outside it: his next knock goes through A
// with no via (the servers B saw in the room), and his join after the
// acceptance takes A's state. A knock on an invite-only room is A's 403
// M_FORBIDDEN; on a version 6 room 400 M_INCOMPATIBLE_ROOM_VERSION. A knock
// by A's alias, with no via, reaches A.
func TestTwoServers_Knock(t *testing.T) {
	a, b := twoServers(t)
	alice := a.Member(t, "alice")
	bob := b.Member(t, "bob")
	knockable := &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "12", Name: "Knock here",
		InitialState: []*event.Event{{Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{"join_rule": "knock"}}}}}
	created, err := alice.CreateRoom(background, knockable)
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	via := &mautrix.ReqKnockRoom{Via: []string{"127.0.0.1:1", a.Name()}, Reason: "let me in"}
	if _, err := bob.KnockRoom(background, string(room), via); err != nil {
		t.Fatalf("knock: %v", err)
	}
	b.CheckCost(t, "knock on a remote room", "/knock/", servertest.Want(6, 4, 3))
	a.CheckCost(t, "make_knock served", "/make_knock/", servertest.Want(10, 11, 2))
	// send_knock's reads vary by a call with what the room's cache holds.
	if c := a.LastRequestTo(t, "/send_knock/").DynamoDB; c.Calls == 0 || c.Calls > 16 {
		t.Errorf("send_knock served: %+v", c)
	}
	if m := membershipOn(t, a, room, bob.UserID); m != "knock" {
		t.Fatalf("bob on A after the knock: %q", m)
	}
	kn := syncRooms(t, b, bob.User.AccessToken)["knock"][string(room)]
	if c := strippedMember(kn, "knock_state", string(bob.UserID)); c == nil || c["membership"] != "knock" || c["reason"] != "let me in" {
		t.Fatalf("bob's knock on B: %v", kn)
	}
	st, _ := kn["knock_state"].(map[string]any)
	if evs, _ := st["events"].([]any); len(evs) < 3 {
		t.Errorf("knock_state: %v, want the create event, join rules and name at least", st)
	}

	// Withdrawn, then knocked again.
	if _, err := bob.LeaveRoom(background, room); err != nil {
		t.Fatalf("bob withdraws his knock: %v", err)
	}
	if m := membershipOn(t, a, room, bob.UserID); m != "leave" {
		t.Fatalf("bob on A after withdrawing: %q", m)
	}
	if _, err := bob.KnockRoom(background, string(room), &mautrix.ReqKnockRoom{Via: []string{a.Name()}}); err != nil {
		t.Fatalf("second knock: %v", err)
	}
	if _, err := alice.InviteUser(background, room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatalf("alice accepts the knock: %v", err)
	}
	waitFor(t, "bob's invite after his knock", func() ([]string, bool) {
		r := syncRooms(t, b, bob.User.AccessToken)
		_, knocking := r["knock"][string(room)]
		_, invited := r["invite"][string(room)]
		return nil, invited && !knocking
	}, b.Logs)
	if _, err := bob.JoinRoomByID(background, room); err != nil {
		t.Fatalf("bob joins: %v", err)
	}
	waitMembership(t, a, room, bob.UserID, "join")

	// bob leaves: B holds the room, outside it. His knock goes through A
	// again, and his join after the acceptance takes A's state.
	if _, err := bob.LeaveRoom(background, room); err != nil {
		t.Fatal(err)
	}
	waitMembership(t, a, room, bob.UserID, "leave")
	if _, err := bob.KnockRoom(background, string(room), &mautrix.ReqKnockRoom{Reason: "again"}); err != nil {
		t.Fatalf("knock on a room B left: %v", err)
	}
	if m := membershipOn(t, a, room, bob.UserID); m != "knock" {
		t.Fatalf("bob on A after knocking on a room B left: %q", m)
	}
	if _, err := alice.InviteUser(background, room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(background, room); err != nil {
		t.Fatalf("bob rejoins: %v", err)
	}
	if m := membershipOn(t, a, room, bob.UserID); m != "join" {
		t.Fatalf("bob on A after rejoining: %q", m)
	}

	// Refusals.
	private, err := alice.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "12"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.KnockRoom(background, string(private.RoomID), &mautrix.ReqKnockRoom{Via: []string{a.Name()}}); !isStatus(err, http.StatusForbidden, "M_FORBIDDEN") {
		t.Errorf("knock on an invite-only room: %v, want 403 M_FORBIDDEN", err)
	}
	old, err := alice.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "6"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.KnockRoom(background, string(old.RoomID), &mautrix.ReqKnockRoom{Via: []string{a.Name()}}); !isStatus(err, http.StatusBadRequest, "M_INCOMPATIBLE_ROOM_VERSION") {
		t.Errorf("knock on a version 6 room: %v, want 400 M_INCOMPATIBLE_ROOM_VERSION", err)
	}
	if r := syncRooms(t, b, bob.User.AccessToken); r["knock"][string(private.RoomID)] != nil || r["knock"][string(old.RoomID)] != nil {
		t.Errorf("refused knocks in bob's /sync: %v", r["knock"])
	}

	// By A's alias, no via: A resolves it and takes the knock.
	knockable.RoomAliasName = "knockme"
	aliased, err := alice.CreateRoom(background, knockable)
	if err != nil {
		t.Fatal(err)
	}
	got, err := bob.KnockRoom(background, "#knockme:"+a.Name(), nil)
	if err != nil || got.RoomID != aliased.RoomID {
		t.Fatalf("knock by alias: %+v %v", got, err)
	}
	if m := membershipOn(t, a, aliased.RoomID, bob.UserID); m != "knock" {
		t.Errorf("bob on A after knocking by alias: %q", m)
	}
}

// TestMakeKnock: make_knock and send_knock served to remote.test: a
// knockable version 12 room gives a knock template; version 6 is 400
// M_INCOMPATIBLE_ROOM_VERSION, as is a ver list without the room's
// version; an invite-only room 403; the knock sent back is answered with
// knock_room_state, the create event among it as a PDU.
func TestMakeKnock(t *testing.T) {
	f := start(t)
	alice := f.st.Member(t, "alice")
	knock := []*event.Event{{Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{"join_rule": "knock"}}}}
	r12 := newRoomOf(t, f, alice, &mautrix.ReqCreateRoom{RoomVersion: "12", InitialState: knock})
	r6 := newRoomOf(t, f, alice, &mautrix.ReqCreateRoom{RoomVersion: "6", InitialState: knock})
	private := newRoomOf(t, f, alice, &mautrix.ReqCreateRoom{RoomVersion: "12", Preset: "private_chat"})
	user := f.rm.UserID("carol")
	path := func(r room, query string) string {
		return v1 + "/make_knock/" + url.PathEscape(string(r.id)) + "/" + url.PathEscape(user) + query
	}
	wantError(t, "make_knock, version 6", f.get(t, path(r6, "?ver=6")), http.StatusBadRequest, "M_INCOMPATIBLE_ROOM_VERSION")
	wantError(t, "make_knock, ver without 12", f.get(t, path(r12, "?ver=7")), http.StatusBadRequest, "M_INCOMPATIBLE_ROOM_VERSION")
	wantError(t, "make_knock, invite-only", f.get(t, path(private, "?ver=12")), http.StatusForbidden, "M_FORBIDDEN")
	reply := f.get(t, path(r12, "?ver=7&ver=12"))
	wantOK(t, "make_knock", reply)
	var tmpl struct {
		RoomVersion string          `json:"room_version"`
		Event       json.RawMessage `json:"event"`
	}
	json.Unmarshal(reply.Raw, &tmpl)
	signer := events.Signer{ServerName: f.rm.Name, Key: f.rm.Key}
	ev, err := signer.SignMemberTemplate(tmpl.RoomVersion, string(r12.id), user, "knock", tmpl.Event, nil, time.Now())
	if err != nil {
		t.Fatalf("sign the template %s: %v", tmpl.Event, err)
	}
	sent := f.rm.Do(t, f.url, "PUT", v1+"/send_knock/"+url.PathEscape(string(r12.id))+"/"+url.PathEscape(ev.EventID()), json.RawMessage(ev.JSON()))
	wantOK(t, "send_knock", sent)
	var answer struct {
		State []json.RawMessage `json:"knock_room_state"`
	}
	json.Unmarshal(sent.Raw, &answer)
	create := false
	for _, raw := range answer.State {
		pdu, err := events.ParseUntrusted("12", raw)
		if err != nil {
			t.Errorf("knock_room_state entry is not a PDU: %v %s", err, raw)
			continue
		}
		create = create || pdu.Type() == "m.room.create"
	}
	if !create {
		t.Errorf("knock_room_state lacks the create event: %s", sent.Raw)
	}
	if m := membership(t, f.st, r12, user); m != "knock" {
		t.Errorf("carol's membership after send_knock: %q", m)
	}
	// A join sent to send_knock is refused.
	wantError(t, "a join sent to send_knock", f.rm.Do(t, f.url, "PUT", v1+"/send_knock/"+url.PathEscape(string(r12.id))+"/"+url.PathEscape(ev.EventID()), json.RawMessage(swapMembership(t, f.rm, ev, "join").JSON())), http.StatusBadRequest, "M_INVALID_PARAM")
}

// TestTwoServers_JoinFailover: bob@B joins alice@A's room by its ID with
// candidates that fail first: a closed port, then C, a live server not in
// the room (make_join 404), then A, which lets him in. Invited to a
// private room, carol@B joins naming only the closed port: the inviter's
// server comes after it.
func TestTwoServers_JoinFailover(t *testing.T) {
	a, b := twoServers(t)
	c, _ := servertest.StartNamed(t)
	alice := a.Member(t, "alice")
	bob := b.Member(t, "bob")
	carol := b.Member(t, "carol")
	public, err := alice.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "12"})
	if err != nil {
		t.Fatal(err)
	}
	via := []string{"127.0.0.1:1", c.Name(), a.Name()}
	if _, err := bob.JoinRoom(background, string(public.RoomID), &mautrix.ReqJoinRoom{Via: via}); err != nil {
		t.Fatalf("join via %v: %v", via, err)
	}
	if m := membershipOn(t, a, public.RoomID, bob.UserID); m != "join" {
		t.Fatalf("bob on A: %q", m)
	}
	// C was asked and refused: it holds nothing of the room.
	if r := c.LastRequestTo(t, "/make_join/"); r.Status != http.StatusNotFound {
		t.Errorf("C's make_join: %d", r.Status)
	}
	// Only servers that cannot let him in: the refusal that tells most.
	if _, err := carol.JoinRoom(background, string(public.RoomID)+"x", &mautrix.ReqJoinRoom{Via: []string{"127.0.0.1:1", c.Name()}}); !isStatus(err, http.StatusNotFound, "M_NOT_FOUND") {
		t.Errorf("join through servers that cannot: %v, want 404 M_NOT_FOUND", err)
	}

	private, err := alice.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "12", Invite: []id.UserID{carol.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := carol.JoinRoom(background, string(private.RoomID), &mautrix.ReqJoinRoom{Via: []string{"127.0.0.1:1"}}); err != nil {
		t.Fatalf("carol joins via a closed port, then the inviter's server: %v", err)
	}
	waitMembership(t, a, private.RoomID, carol.UserID, "join")
}

// TestTwoServers_InviteRefusals: an invite the invitee's server refuses
// (no such user there: its 404) or that no server answers (502, as
// Synapse's "failed to send") is not appended; createRoom with such an
// invitee fails the same way, as Synapse's does.
func TestTwoServers_InviteRefusals(t *testing.T) {
	a, _ := servertest.StartNamed(t)
	a.RunQueue(t)
	b, _ := servertest.StartNamed(t)
	alice := a.Member(t, "alice")
	created, err := alice.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "12"})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	nobody := id.UserID("@nobody:" + b.Name())
	if _, err := alice.InviteUser(background, room, &mautrix.ReqInviteUser{UserID: nobody}); !isStatus(err, http.StatusNotFound, "M_NOT_FOUND") {
		t.Errorf("invite of a user B does not have: %v, want 404 M_NOT_FOUND", err)
	}
	unreachable := id.UserID("@someone:127.0.0.1:1")
	if _, err := alice.InviteUser(background, room, &mautrix.ReqInviteUser{UserID: unreachable}); !isStatus(err, http.StatusBadGateway, "M_UNKNOWN") {
		t.Errorf("invite on a server that does not answer: %v, want 502", err)
	}
	for _, u := range []id.UserID{nobody, unreachable} {
		if m := membershipOn(t, a, room, u); m != "" {
			t.Errorf("%s's membership after the refused invite: %q", u, m)
		}
	}
	if _, err := alice.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", Invite: []id.UserID{unreachable}, IsDirect: true}); !isStatus(err, http.StatusBadGateway, "M_UNKNOWN") {
		t.Errorf("createRoom inviting a user of a server that does not answer: %v, want 502", err)
	}
}
