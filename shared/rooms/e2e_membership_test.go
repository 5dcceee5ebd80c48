package rooms_test

import (
	"net/http"
	"sort"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// joinedIDs lists the users /joined_members gives, sorted.
func joinedIDs(t *testing.T, u mxUser, room id.RoomID) []string {
	t.Helper()
	resp := must[*mautrix.RespJoinedMembers](t, "joined_members")(u.JoinedMembers(bg, room))
	out := []string{}
	for uid := range resp.Joined {
		out = append(out, uid.String())
	}
	sort.Strings(out)
	return out
}

func membershipOf(t *testing.T, u mxUser, room id.RoomID, target mxUser) map[string]any {
	t.Helper()
	return stateOf(t, u, room, "m.room.member", target.ID)
}

// TestMembership_JoinInviteLeaveForget covers joining by ID and alias,
// invites, leaving and forgetting.
func TestMembership_JoinInviteLeaveForget(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	bob := st.Member(t, "bob")
	carol := st.Member(t, "carol")
	dave := st.Member(t, "dave")

	hall := create(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "hall"})
	t.Run("join by ID and by alias", func(t *testing.T) {
		resp := must[*mautrix.RespJoinRoom](t, "join by ID")(bob.JoinRoomByID(bg, hall))
		wantEqual(t, "room of join by ID", resp.RoomID, hall)
		resp = must[*mautrix.RespJoinRoom](t, "join by alias")(carol.JoinRoom(bg, "#hall:example.org", &mautrix.ReqJoinRoom{Reason: "hi all"}))
		wantEqual(t, "room of join by alias", resp.RoomID, hall)
		wantEqual(t, "joined", joinedIDs(t, alice, hall), []string{alice.ID, bob.ID, carol.ID})
		wantEqual(t, "carol's member event", membershipOf(t, alice, hall, carol)["reason"], "hi all")
		// Joining again changes nothing: no new event.
		before := must[*mautrix.RespMessages](t, "messages")(alice.Messages(bg, hall, "", "", mautrix.DirectionBackward, nil, 1))
		must[*mautrix.RespJoinRoom](t, "join again")(bob.JoinRoomByID(bg, hall))
		after := must[*mautrix.RespMessages](t, "messages")(alice.Messages(bg, hall, "", "", mautrix.DirectionBackward, nil, 1))
		wantEqual(t, "last event after a repeated join", after.Chunk[0].ID, before.Chunk[0].ID)
		rooms := must[*mautrix.RespJoinedRooms](t, "joined_rooms")(carol.JoinedRooms(bg))
		wantEqual(t, "carol's rooms", rooms.JoinedRooms, []id.RoomID{hall})
		jm := must[*mautrix.RespJoinedMembers](t, "joined_members")(alice.JoinedMembers(bg, hall))
		wantEqual(t, "bob's display name", jm.Joined[bob.UserID].DisplayName, "bob")
	})

	t.Run("unknown rooms and aliases", func(t *testing.T) {
		_, err := bob.JoinRoomByID(bg, "!nosuchroom:example.org")
		wantErr(t, "join unknown room", err, "M_NOT_FOUND", http.StatusNotFound)
		_, err = bob.JoinRoom(bg, "#nosuch:example.org", nil)
		wantErr(t, "join unknown alias", err, "M_NOT_FOUND", http.StatusNotFound)
		_, err = bob.JoinedMembers(bg, "!nosuchroom:example.org")
		wantErr(t, "joined_members of unknown room", err, "M_FORBIDDEN", http.StatusForbidden)
	})

	private := create(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	t.Run("invite-only", func(t *testing.T) {
		_, err := carol.JoinRoomByID(bg, private)
		wantErr(t, "join uninvited", err, "M_FORBIDDEN", http.StatusForbidden)
		_, err = bob.InviteUser(bg, private, &mautrix.ReqInviteUser{UserID: carol.UserID})
		wantErr(t, "invite by a non-member", err, "M_FORBIDDEN", http.StatusForbidden)
		must[*mautrix.RespInviteUser](t, "invite")(alice.InviteUser(bg, private, &mautrix.ReqInviteUser{UserID: carol.UserID, Reason: "come"}))
		wantEqual(t, "carol's invite", membershipOf(t, alice, private, carol), map[string]any{"membership": "invite", "reason": "come"})
		must[*mautrix.RespJoinRoom](t, "carol joins")(carol.JoinRoomByID(bg, private))
		_, err = alice.InviteUser(bg, private, &mautrix.ReqInviteUser{UserID: carol.UserID})
		wantErr(t, "invite a member", err, "M_FORBIDDEN", http.StatusForbidden)
		_, err = alice.InviteUser(bg, private, &mautrix.ReqInviteUser{UserID: "not-a-user"})
		wantErr(t, "invite an invalid ID", err, "M_INVALID_PARAM", http.StatusBadRequest)
		wantEqual(t, "joined", joinedIDs(t, carol, private), []string{alice.ID, carol.ID})

		// Rejecting an invite is leaving.
		must[*mautrix.RespInviteUser](t, "invite dave")(alice.InviteUser(bg, private, &mautrix.ReqInviteUser{UserID: dave.UserID}))
		must[*mautrix.RespLeaveRoom](t, "dave rejects")(dave.LeaveRoom(bg, private))
		wantEqual(t, "dave after rejecting", membershipOf(t, alice, private, dave)["membership"], "leave")
	})

	t.Run("leave and forget", func(t *testing.T) {
		say(t, alice, private, "before carol leaves")
		_, err := carol.ForgetRoom(bg, private)
		wantErr(t, "forget while joined", err, "M_UNKNOWN", http.StatusBadRequest)
		must[*mautrix.RespLeaveRoom](t, "leave")(carol.LeaveRoom(bg, private, &mautrix.ReqLeave{Reason: "bye"}))
		wantEqual(t, "carol's leave", membershipOf(t, alice, private, carol), map[string]any{"membership": "leave", "reason": "bye"})
		rooms := must[*mautrix.RespJoinedRooms](t, "joined_rooms")(carol.JoinedRooms(bg))
		wantEqual(t, "carol's rooms", rooms.JoinedRooms, []id.RoomID{hall})
		_, err = carol.LeaveRoom(bg, private)
		wantErr(t, "leave again", err, "M_FORBIDDEN", http.StatusForbidden)
		_, err = carol.JoinedMembers(bg, private)
		wantErr(t, "joined_members after leaving", err, "M_FORBIDDEN", http.StatusForbidden)
		// Having left, carol still reads what she saw.
		msgs := must[*mautrix.RespMessages](t, "messages after leaving")(carol.Messages(bg, private, "", "", mautrix.DirectionBackward, nil, 50))
		wantEqual(t, "messages after leaving", bodies(msgs.Chunk), []string{"before carol leaves"})
		must[*mautrix.RespForgetRoom](t, "forget")(carol.ForgetRoom(bg, private))
		// Forgotten, the history is gone for her.
		_, err = carol.Messages(bg, private, "", "", mautrix.DirectionBackward, nil, 50)
		wantErr(t, "messages after forgetting", err, "M_FORBIDDEN", http.StatusForbidden)
		_, err = carol.State(bg, private)
		wantErr(t, "state after forgetting", err, "M_FORBIDDEN", http.StatusForbidden)
		_, err = carol.JoinRoomByID(bg, private)
		wantErr(t, "rejoin without invite", err, "M_FORBIDDEN", http.StatusForbidden)
	})
}

// TestMembership_KickBan covers kicks, bans and unbans, by moderators and
// by those without the power.
func TestMembership_KickBan(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	bob := st.Member(t, "bob")
	carol := st.Member(t, "carol")
	room := create(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	must[*mautrix.RespJoinRoom](t, "bob joins")(bob.JoinRoomByID(bg, room))
	must[*mautrix.RespJoinRoom](t, "carol joins")(carol.JoinRoomByID(bg, room))

	_, err := bob.KickUser(bg, room, &mautrix.ReqKickUser{UserID: carol.UserID})
	wantErr(t, "kick by a non-moderator", err, "M_FORBIDDEN", http.StatusForbidden)
	_, err = bob.BanUser(bg, room, &mautrix.ReqBanUser{UserID: carol.UserID})
	wantErr(t, "ban by a non-moderator", err, "M_FORBIDDEN", http.StatusForbidden)
	wantEqual(t, "joined after refusals", joinedIDs(t, alice, room), []string{alice.ID, bob.ID, carol.ID})

	must[*mautrix.RespKickUser](t, "kick")(alice.KickUser(bg, room, &mautrix.ReqKickUser{UserID: bob.UserID, Reason: "calm down"}))
	ev := must[*event.Event](t, "bob's member event")(alice.FullStateEvent(bg, room, event.StateMember, bob.ID))
	wantEqual(t, "kick event", []any{ev.Sender, ev.Content.Raw}, []any{alice.UserID, map[string]any{"membership": "leave", "reason": "calm down"}})
	_, err = alice.KickUser(bg, room, &mautrix.ReqKickUser{UserID: bob.UserID})
	wantErr(t, "kick a non-member", err, "M_FORBIDDEN", http.StatusForbidden)
	// A kick from a public room is no ban.
	must[*mautrix.RespJoinRoom](t, "bob rejoins")(bob.JoinRoomByID(bg, room))

	must[*mautrix.RespBanUser](t, "ban")(alice.BanUser(bg, room, &mautrix.ReqBanUser{UserID: bob.UserID, Reason: "spam"}))
	wantEqual(t, "ban event", membershipOf(t, alice, room, bob), map[string]any{"membership": "ban", "reason": "spam"})
	_, err = bob.JoinRoomByID(bg, room)
	wantErr(t, "banned user joins", err, "M_FORBIDDEN", http.StatusForbidden)
	_, err = alice.InviteUser(bg, room, &mautrix.ReqInviteUser{UserID: bob.UserID})
	wantErr(t, "invite a banned user", err, "M_FORBIDDEN", http.StatusForbidden)
	_, err = carol.UnbanUser(bg, room, &mautrix.ReqUnbanUser{UserID: bob.UserID})
	wantErr(t, "unban by a non-moderator", err, "M_FORBIDDEN", http.StatusForbidden)
	_, err = alice.UnbanUser(bg, room, &mautrix.ReqUnbanUser{UserID: carol.UserID})
	wantErr(t, "unban a user who is not banned", err, "M_FORBIDDEN", http.StatusForbidden)
	wantEqual(t, "joined while bob is banned", joinedIDs(t, alice, room), []string{alice.ID, carol.ID})

	must[*mautrix.RespUnbanUser](t, "unban")(alice.UnbanUser(bg, room, &mautrix.ReqUnbanUser{UserID: bob.UserID}))
	wantEqual(t, "unban event", membershipOf(t, alice, room, bob), map[string]any{"membership": "leave"})
	must[*mautrix.RespJoinRoom](t, "bob joins after unban")(bob.JoinRoomByID(bg, room))
	wantEqual(t, "joined at the end", joinedIDs(t, alice, room), []string{alice.ID, bob.ID, carol.ID})

	// A ban applies to users who are not in the room too.
	dave := st.Member(t, "dave")
	must[*mautrix.RespBanUser](t, "ban a stranger")(alice.BanUser(bg, room, &mautrix.ReqBanUser{UserID: dave.UserID}))
	_, err = dave.JoinRoomByID(bg, room)
	wantErr(t, "pre-banned user joins", err, "M_FORBIDDEN", http.StatusForbidden)
}

// TestMembership_Knock covers knocking in a version 10 room with the knock
// join rule, and its refusal where knocking is not allowed.
func TestMembership_Knock(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	bob := st.Member(t, "bob")
	knockRule := []*event.Event{{Type: event.StateJoinRules, StateKey: new(""), Content: event.Content{Raw: map[string]any{"join_rule": "knock"}}}}

	v10 := create(t, alice, &mautrix.ReqCreateRoom{RoomVersion: "10", RoomAliasName: "door", InitialState: knockRule})
	_, err := bob.JoinRoomByID(bg, v10)
	wantErr(t, "join a knock room uninvited", err, "M_FORBIDDEN", http.StatusForbidden)
	resp := must[*mautrix.RespKnockRoom](t, "knock")(bob.KnockRoom(bg, "#door:example.org", &mautrix.ReqKnockRoom{Reason: "let me in"}))
	wantEqual(t, "room of knock", resp.RoomID, v10)
	wantEqual(t, "knock event", membershipOf(t, alice, v10, bob), map[string]any{"membership": "knock", "reason": "let me in"})
	_, err = bob.KnockRoom(bg, v10.String(), nil)
	wantErr(t, "knock twice", err, "M_FORBIDDEN", http.StatusForbidden)
	knocking := must[*mautrix.RespMembers](t, "members")(alice.Members(bg, v10, mautrix.ReqMembers{Membership: event.MembershipKnock}))
	if len(knocking.Chunk) != 1 || knocking.Chunk[0].GetStateKey() != bob.ID {
		t.Fatalf("knocking members: %v", knocking.Chunk)
	}
	must[*mautrix.RespInviteUser](t, "invite the knocker")(alice.InviteUser(bg, v10, &mautrix.ReqInviteUser{UserID: bob.UserID}))
	must[*mautrix.RespJoinRoom](t, "join")(bob.JoinRoomByID(bg, v10))
	wantEqual(t, "joined", joinedIDs(t, alice, v10), []string{alice.ID, bob.ID})

	v6 := create(t, alice, &mautrix.ReqCreateRoom{RoomVersion: "6", InitialState: knockRule})
	_, err = bob.KnockRoom(bg, v6.String(), nil)
	wantErr(t, "knock in version 6", err, "M_FORBIDDEN", http.StatusForbidden)
	public := create(t, alice, &mautrix.ReqCreateRoom{RoomVersion: "10", Preset: "public_chat"})
	_, err = bob.KnockRoom(bg, public.String(), nil)
	wantErr(t, "knock on a public room", err, "M_FORBIDDEN", http.StatusForbidden)
	_, err = bob.KnockRoom(bg, "#nowhere:example.org", nil)
	wantErr(t, "knock on an unknown alias", err, "M_NOT_FOUND", http.StatusNotFound)
	_, err = bob.KnockRoom(bg, "!nosuchroom:example.org", nil)
	wantErr(t, "knock on an unknown room", err, "M_NOT_FOUND", http.StatusNotFound)
	m, err := st.Server.Rooms.Membership(bg, bob.ID, string(v6))
	if err != nil || m != "" {
		t.Fatalf("bob's membership of the version 6 room: %q %v", m, err)
	}
}
