package federation_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// sendJoinQuery sends join to v2 send_join as rm, with query.
func (r room) sendJoinQuery(t *testing.T, rm *servertest.Remote, join events.PDU, query string) servertest.Reply {
	t.Helper()
	return rm.Do(t, r.f.url, "PUT", v2+"/send_join/"+url.PathEscape(string(r.id))+"/"+url.PathEscape(join.EventID())+"?"+query, json.RawMessage(join.JSON()))
}

// stateBefore is the room state before join, as this server holds it.
func (r room) stateBefore(t *testing.T, join events.PDU) []events.PDU {
	t.Helper()
	rms := r.f.st.Server.Rooms
	got, err := rms.EventsByID(background, string(r.id), []string{join.EventID()})
	if err != nil || got[join.EventID()].PDU == nil {
		t.Fatalf("read the join %s: %v", join.EventID(), err)
	}
	state, err := rms.StateBefore(background, string(r.id), got[join.EventID()])
	if err != nil {
		t.Fatal(err)
	}
	return state
}

// memberKeys is the state keys of the member events among evs, sorted.
func memberKeys(evs []events.PDU) []string {
	var out []string
	for _, ev := range evs {
		if ev.Type() == events.Member {
			out = append(out, *ev.StateKey())
		}
	}
	return sorted(out)
}

// checkOmitted checks a send_join answer to join asked with
// omit_members=true: members_omitted, servers_in_room, a state of every
// non-member event of the state before the join and the member events of
// wantMembers only, an auth chain holding no event of the state and, with
// the state, every auth event of the state's events and of the join; and
// gomatrixserverlib's CheckSendJoinResponse takes it, join allowed by the
// state.
func checkOmitted(t *testing.T, r room, ans servertest.Reply, join events.PDU, wantMembers, wantServers []string) {
	t.Helper()
	wantOK(t, "send_join with omit_members", ans)
	wantEqual(t, "members_omitted", ans.Body["members_omitted"], true)
	wantEqual(t, "servers_in_room", strs(ans.Body["servers_in_room"]), wantServers)
	state, chain := r.pdus(t, ans, "state"), r.pdus(t, ans, "auth_chain")
	wantEqual(t, "the member events of the state", memberKeys(state), sorted(wantMembers))

	before := r.stateBefore(t, join)
	var want []string
	for _, ev := range before {
		if ev.Type() != events.Member || slices.Contains(wantMembers, *ev.StateKey()) {
			want = append(want, ev.EventID())
		}
	}
	wantEqual(t, "the state", sorted(ids(state)), sorted(want))

	have := map[string]bool{}
	for _, ev := range state {
		have[ev.EventID()] = true
	}
	for _, ev := range chain {
		if have[ev.EventID()] {
			t.Errorf("auth_chain holds %s (%s %q), which is in state", ev.EventID(), ev.Type(), *ev.StateKey())
		}
		have[ev.EventID()] = true
	}
	for _, ev := range append(append(slices.Clone(state), chain...), join) {
		for _, id := range ev.AuthEventIDs() {
			if !have[id] {
				t.Errorf("auth event %s of %s (%s %q) is in neither state nor auth_chain", id, ev.EventID(), ev.Type(), *ev.StateKey())
			}
		}
	}

	var a events.SendJoinAnswer
	if err := json.Unmarshal(ans.Raw, &a); err != nil {
		t.Fatal(err)
	}
	if _, _, err := events.CheckSendJoin(background, r.version, &a, join, r.f.st.Server.ServerKeys.Ring()); err != nil {
		t.Errorf("CheckSendJoin: %v", err)
	}
}

// TestOmitMembers_Unnamed: a room of 30 members (alice, 27 of remote.test's
// joined in the reverse of their IDs' order, 2 of stranger.test's) with
// no name nor canonical alias. bob's send_join with omit_members=true
// answers the state without member events but the heroes' (alice and the
// first four remote members by stream ordering, not by user ID), an auth
// chain of what that state and the join rest on without the state's
// events, members_omitted and the servers in the room; the answer passes
// CheckSendJoin. carol's with omit_members=false has every member event.
// In rooms of versions 10 and 12.
func TestOmitMembers_Unnamed(t *testing.T) {
	f := start(t)
	alice := f.st.Member(t, "alice")
	// Version 12's events leave the create event out of their auth
	// events: it is still in the state, and so out of the auth chain.
	for _, v := range []string{"10", "12"} {
		t.Run("v"+v, func(t *testing.T) {
			r := newRoomOf(t, f, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: id.RoomVersion(v)})
			for i := 26; i >= 0; i-- {
				r.join(t, fmt.Sprintf("m%02d", i))
			}
			r.joinFrom(t, f.stranger, "s1")
			r.joinFrom(t, f.stranger, "s2")
			r.send(t, "before the joins")

			bob := f.rm.UserID("bob")
			join := fill(t, f.rm, r.makeJoin(t, f.rm, bob, allVersions()))
			ans := r.sendJoinQuery(t, f.rm, join, "omit_members=true")
			heroes := []string{alice.User.ID, f.rm.UserID("m26"), f.rm.UserID("m25"), f.rm.UserID("m24"), f.rm.UserID("m23")}
			// The cost is logged, not asserted: docs/storage.md quotes it.
			u := f.st.LastRequestTo(t, "/send_join/").DynamoDB
			t.Logf("send_join, omit_members=true: %d bytes, %d calls, %.1f RCU, %.1f WCU", len(ans.Raw), u.Calls, u.ReadUnits, u.WriteUnits)
			checkOmitted(t, r, ans, join, heroes, []string{"example.org", "remote.test", "stranger.test"})
			if m := membership(t, f.st, r, bob); m != "join" {
				t.Fatalf("bob's membership after send_join: %q", m)
			}

			carol := f.rm.UserID("carol")
			join = fill(t, f.rm, r.makeJoin(t, f.rm, carol, allVersions()))
			ans = r.sendJoinQuery(t, f.rm, join, "omit_members=false")
			wantOK(t, "send_join with omit_members=false", ans)
			u = f.st.LastRequestTo(t, "/send_join/").DynamoDB
			t.Logf("send_join, omit_members=false: %d bytes, %d calls, %.1f RCU, %.1f WCU", len(ans.Raw), u.Calls, u.ReadUnits, u.WriteUnits)
			wantEqual(t, "members_omitted", ans.Body["members_omitted"], false)
			wantEqual(t, "the member events of the whole state", memberKeys(r.pdus(t, ans, "state")), memberKeys(r.stateBefore(t, join)))
			if n := len(memberKeys(r.pdus(t, ans, "state"))); n != 31 {
				t.Errorf("the whole state has %d member events, want 31 (30 and bob)", n)
			}
		})
	}
}

// TestOmitMembers_Named: in a named room, dave of remote.test, invited by
// a remote member, joins with omit_members=true: no hero's member event
// comes back, only dave's invite, which his join's auth rests on; the
// inviter's join is in the auth chain. In a named room restricted to a
// space's members, the member event of alice, who authorises bob's join,
// is the only one in the state.
func TestOmitMembers_Named(t *testing.T) {
	f := start(t)
	// Any member may invite, so that a remote member invites dave.
	r := newRoom(t, f, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10",
		PowerLevelOverride: &event.PowerLevelsEventContent{InvitePtr: new(int)}})
	r.state(t, event.StateRoomName, map[string]any{"name": "A named room"})
	var inviterJoin string
	for i := range 10 {
		id := r.join(t, fmt.Sprintf("m%02d", i))
		if i == 0 {
			inviterJoin = id
		}
	}
	dave := f.rm.UserID("dave")
	signer := events.Signer{ServerName: f.rm.Name, Key: f.rm.Key}
	r.receive(t, signer, f.rm.UserID("m00"), dave, `{"membership":"invite"}`)

	join := fill(t, f.rm, r.makeJoin(t, f.rm, dave, allVersions()))
	ans := r.sendJoinQuery(t, f.rm, join, "omit_members=true")
	checkOmitted(t, r, ans, join, []string{dave}, []string{"example.org", "remote.test"})
	if chain := ids(r.pdus(t, ans, "auth_chain")); !slices.Contains(chain, inviterJoin) {
		t.Errorf("auth_chain %v lacks the inviter's join %s", chain, inviterJoin)
	}

	space := newRoomOf(t, f, r.alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10"})
	space.join(t, "bob")
	restricted := newRoomOf(t, f, r.alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10", Name: "Restricted",
		InitialState: []*event.Event{{Type: event.StateJoinRules, StateKey: new(string), Content: event.Content{Raw: map[string]any{
			"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": string(space.id)}},
		}}}}})
	bob := f.rm.UserID("bob")
	join = fill(t, f.rm, restricted.makeJoin(t, f.rm, bob, allVersions()))
	ans = restricted.sendJoinQuery(t, f.rm, join, "omit_members=true")
	checkOmitted(t, restricted, ans, join, []string{r.alice.User.ID}, []string{"example.org", "remote.test"})
}

// TestOmitMembers_BadValue: omit_members other than true or false is 400
// M_INVALID_PARAM, and the join is not taken in.
func TestOmitMembers_BadValue(t *testing.T) {
	f := start(t)
	r := newRoom(t, f, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10"})
	bob := f.rm.UserID("bob")
	join := fill(t, f.rm, r.makeJoin(t, f.rm, bob, allVersions()))
	for _, v := range []string{"yes", "1", "True"} {
		q := "omit_members=" + v
		wantError(t, q, r.sendJoinQuery(t, f.rm, join, q), http.StatusBadRequest, "M_INVALID_PARAM")
		if m := membership(t, f.st, r, bob); m != "" {
			t.Fatalf("bob's membership after send_join?%s: %q", q, m)
		}
	}
}
