package rooms_test

import (
	"fmt"
	"net/url"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// nextBatch syncs u from since and returns the next_batch.
func nextBatch(t *testing.T, u mxUser, since string) string {
	t.Helper()
	resp, err := u.FullSyncRequest(bg, mautrix.ReqSync{Since: since})
	if err != nil {
		t.Fatalf("sync of %s since %q: %v", u.ID, since, err)
	}
	return resp.NextBatch
}

// memberships maps each member of room to their membership, as u gets them
// from /members with not_membership=leave at the token.
func memberships(t *testing.T, u mxUser, room id.RoomID, at string) map[string]string {
	t.Helper()
	resp, err := u.Members(bg, room, mautrix.ReqMembers{At: at, NotMembership: event.MembershipLeave})
	if err != nil {
		t.Fatalf("members of %s at %q: %v", room, at, err)
	}
	out := map[string]string{}
	for _, ev := range resp.Chunk {
		out[ev.GetStateKey()] = string(ev.Content.AsMember().Membership)
	}
	return out
}

func ids(evs []*event.Event) []id.EventID {
	out := []id.EventID{}
	for _, ev := range evs {
		out = append(out, ev.ID)
	}
	return out
}

// TestSyncTokens_ElementSendsInEncryptedRoom: the calls Element Web
// (matrix-js-sdk, lazy-loading members) makes around the first message in
// an encrypted room, in order: the third-party protocols and TURN servers at
// start, a sync, the members at the sync's next_batch, then the send. Then
// the same sync tokens wherever the spec takes a pagination token: from and
// to of /messages both ways, /relations, and /context's tokens next to them.
func TestSyncTokens_ElementSendsInEncryptedRoom(t *testing.T) {
	st := servertest.Start(t)
	alice, bob := st.Member(t, "alice"), st.Member(t, "bob")

	var protocols map[string]any
	if err := raw(alice, "GET", nil, &protocols, "v3", "thirdparty", "protocols"); err != nil || len(protocols) != 0 {
		t.Fatalf("thirdparty/protocols: %v, %v; want {}", protocols, err)
	}
	turn, err := alice.TurnServer(bg)
	if err != nil || turn.Username != "" || len(turn.URIs) != 0 {
		t.Fatalf("voip/turnServer without TURN configured: %+v, %v; want {}", turn, err)
	}

	room := create(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{id.UserID(bob.ID)},
		InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}}})
	invited := nextBatch(t, alice, "")
	if _, err := bob.JoinRoomByID(bg, room); err != nil {
		t.Fatal(err)
	}
	joined := nextBatch(t, alice, invited)

	// Element's order: the members at the sync token, then the send.
	wantEqual(t, "members at the sync after bob's join", memberships(t, alice, room, joined),
		map[string]string{alice.ID: "join", bob.ID: "join"})
	wantEqual(t, "members at the sync before it", memberships(t, alice, room, invited),
		map[string]string{alice.ID: "join", bob.ID: "invite"})
	// A timeline that starts with the create event has a prev_batch before
	// the room began: no members then, and nothing to page back to.
	whole, err := alice.FullSyncRequest(bg, mautrix.ReqSync{FilterID: `{"room":{"timeline":{"limit":50}}}`})
	if err != nil {
		t.Fatal(err)
	}
	start := whole.Rooms.Join[room].Timeline.PrevBatch
	wantEqual(t, "members at the prev_batch before the create event", memberships(t, alice, room, start), map[string]string{})
	page := must[*mautrix.RespMessages](t, "messages back from that prev_batch")(alice.Messages(bg, room, start, "", mautrix.DirectionBackward, nil, 5))
	wantEqual(t, "back from the prev_batch before the create event", ids(page.Chunk), []id.EventID{})
	page = must[*mautrix.RespMessages](t, "messages forward from that prev_batch")(alice.Messages(bg, room, start, "", mautrix.DirectionForward, nil, 1))
	if len(page.Chunk) != 1 || page.Chunk[0].Type != event.StateCreate {
		t.Fatalf("forward from the prev_batch before the create event: %v, want the create event", types(page.Chunk))
	}
	sent, err := alice.SendMessageEvent(bg, room, event.EventEncrypted, map[string]any{
		"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgAEnACgAkLmt6qF84IK++J7UDH2Za1YVchHyprqTqsg", "device_id": alice.User.DeviceID,
		"sender_key": "IlRMeOPX2e0MurIyfWEucYBRVOEEUMrOHqn/8mLqMjA", "session_id": "X3lUlvLELLYxeTx4yOVu6UDpasGEVO0Jbu+QFnm0cKQ"})
	if err != nil {
		t.Fatalf("send after loading the members: %v", err)
	}
	msg := sent.EventID
	after := nextBatch(t, alice, joined)

	page = must[*mautrix.RespMessages](t, "messages back from the sync token")(alice.Messages(bg, room, joined, "", mautrix.DirectionBackward, nil, 3))
	if len(page.Chunk) == 0 || page.Chunk[0].Type != event.StateMember || page.Chunk[0].GetStateKey() != bob.ID {
		t.Fatalf("back from the token of the sync that saw bob join: %v, want bob's join first", types(page.Chunk))
	}
	page = must[*mautrix.RespMessages](t, "messages forward from the sync token")(alice.Messages(bg, room, joined, "", mautrix.DirectionForward, nil, 10))
	wantEqual(t, "forward from the sync token", ids(page.Chunk), []id.EventID{msg})
	page = must[*mautrix.RespMessages](t, "messages back to the sync token")(alice.Messages(bg, room, "", joined, mautrix.DirectionBackward, nil, 10))
	wantEqual(t, "back from the live end to the sync token", ids(page.Chunk), []id.EventID{msg})
	page = must[*mautrix.RespMessages](t, "messages between two sync tokens")(alice.Messages(bg, room, joined, after, mautrix.DirectionForward, nil, 10))
	wantEqual(t, "forward between two sync tokens", ids(page.Chunk), []id.EventID{msg})

	// /relations: a reaction after the sync token.
	react, err := bob.SendMessageEvent(bg, room, event.EventReaction, map[string]any{
		"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": msg, "key": "👍"}})
	if err != nil {
		t.Fatal(err)
	}
	rels := func(req mautrix.ReqGetRelations) []id.EventID {
		t.Helper()
		resp, err := alice.GetRelations(bg, room, msg, &req)
		if err != nil {
			t.Fatalf("relations %+v: %v", req, err)
		}
		return ids(resp.Chunk)
	}
	wantEqual(t, "relations back from the sync token", rels(mautrix.ReqGetRelations{From: after}), []id.EventID{})
	wantEqual(t, "relations forward from the sync token", rels(mautrix.ReqGetRelations{From: after, Dir: mautrix.DirectionForward}), []id.EventID{react.EventID})
	wantEqual(t, "relations back to the sync token", rels(mautrix.ReqGetRelations{To: after}), []id.EventID{react.EventID})

	// /context's tokens bound the events it returned, for /messages.
	c := must[*mautrix.RespContext](t, "context")(alice.Context(bg, room, msg, nil, 2))
	around := ids(c.EventsBefore) // newest first
	slices.Reverse(around)
	around = append(append(around, msg), ids(c.EventsAfter)...)
	if len(around) != 3 || around[2] != react.EventID {
		t.Fatalf("context of the message: %v", around)
	}
	page = must[*mautrix.RespMessages](t, "messages from the context's start")(alice.Messages(bg, room, c.Start, c.End, mautrix.DirectionForward, nil, 10))
	wantEqual(t, "forward from the context's start to its end", ids(page.Chunk), around)
	page = must[*mautrix.RespMessages](t, "messages after the context")(alice.Messages(bg, room, c.End, "", mautrix.DirectionForward, nil, 10))
	wantEqual(t, "forward from the context's end", ids(page.Chunk), []id.EventID{})

	// Tokens that are not the caller's, or not tokens.
	bobs := nextBatch(t, bob, "")
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"members at another user's sync token", func() error { _, err := alice.Members(bg, room, mautrix.ReqMembers{At: bobs}); return err }},
		{"members at a made-up token", func() error { _, err := alice.Members(bg, room, mautrix.ReqMembers{At: "s!!!"}); return err }},
		{"messages from another user's sync token", func() error {
			_, err := alice.Messages(bg, room, bobs, "", mautrix.DirectionBackward, nil, 5)
			return err
		}},
		{"messages to a made-up token", func() error {
			_, err := alice.Messages(bg, room, "", "x12", mautrix.DirectionBackward, nil, 5)
			return err
		}},
		{"relations from another user's sync token", func() error {
			_, err := alice.GetRelations(bg, room, msg, &mautrix.ReqGetRelations{From: bobs})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { wantErr(t, tc.name, tc.call(), "M_INVALID_PARAM", 400) })
	}
	for _, r := range st.Requests(t) {
		if r.Status >= 500 {
			t.Errorf("%s %s: %d", r.Method, r.Path, r.Status)
		}
	}
}

// TestPositionAt: where a time stands in a room's timeline, which a sync
// token that does not name the room resolves to: after the last event
// stamped at or before it; before the first (0) for a time before the room.
// The room is longer than the first page read, so older times take the
// binary search.
func TestPositionAt(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	room := create(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	for i := range 30 {
		say(t, alice, room, fmt.Sprint("message ", i))
		if i%3 == 0 {
			// Stamps a millisecond or more apart, to tell positions apart.
			time.Sleep(2 * time.Millisecond)
		}
	}
	page := must[*mautrix.RespMessages](t, "whole room")(alice.Messages(bg, room, "", "", mautrix.DirectionForward, nil, 100))
	evs := page.Chunk
	if got, err := st.Server.Rooms.PositionAt(bg, room.String(), time.UnixMilli(evs[0].Timestamp-1)); err != nil || got != 0 {
		t.Fatalf("PositionAt before the room: %d, %v; want 0", got, err)
	}
	for i, ev := range evs {
		// The last event with this stamp is where the time stands.
		last := i
		for last+1 < len(evs) && evs[last+1].Timestamp == ev.Timestamp {
			last++
		}
		got, err := st.Server.Rooms.PositionAt(bg, room.String(), time.UnixMilli(ev.Timestamp))
		if err != nil {
			t.Fatal(err)
		}
		// Positions count from 1, the create event.
		if want := int64(last + 1); got != want {
			t.Fatalf("PositionAt(stamp of event %d, %s): %d, want %d", i+1, ev.ID, got, want)
		}
	}
	if !slices.IsSortedFunc(evs, func(a, b *event.Event) int { return int(a.Timestamp - b.Timestamp) }) {
		t.Fatal("stamps do not rise with positions")
	}
}

// TestUnsignedMembership: every timeline event carries the reader's
// membership just after it (MSC4115, spec v1.11) in /messages, /sync,
// /event and /context: "leave" before bob was invited, then invite, join,
// and leave from his own leave on.
func TestUnsignedMembership(t *testing.T) {
	st := servertest.Start(t)
	alice, bob := st.Member(t, "alice"), st.Member(t, "bob")
	room := create(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	before := say(t, alice, room, "before the invite")
	if _, err := alice.InviteUser(bg, room, &mautrix.ReqInviteUser{UserID: id.UserID(bob.ID)}); err != nil {
		t.Fatal(err)
	}
	invited := say(t, alice, room, "while bob is invited")
	if _, err := bob.JoinRoomByID(bg, room); err != nil {
		t.Fatal(err)
	}
	joined := say(t, alice, room, "after bob joined")
	since := nextBatch(t, bob, "")
	later := say(t, alice, room, "in bob's incremental sync")
	if _, err := bob.LeaveRoom(bg, room); err != nil {
		t.Fatal(err)
	}

	membership := func(doc map[string]any) string {
		u, _ := doc["unsigned"].(map[string]any)
		m, _ := u["membership"].(string)
		return m
	}
	want := map[id.EventID]string{before: "leave", invited: "invite", joined: "join", later: "join"}
	r := st.Do(t, "GET", "/_matrix/client/v3/rooms/"+room.String()+"/messages?dir=b&limit=50", bob.User.AccessToken, nil)
	got := map[id.EventID]string{}
	for _, raw := range r.Body["chunk"].([]any) {
		ev := raw.(map[string]any)
		if m := membership(ev); m == "" {
			t.Fatalf("/messages: %s has no unsigned.membership", ev["event_id"])
		} else if ev["type"] == "m.room.member" && ev["state_key"] == bob.ID && ev["content"].(map[string]any)["membership"] == "leave" && m != "leave" {
			t.Fatalf("bob's own leave: unsigned.membership %q, want leave", m)
		}
		got[id.EventID(ev["event_id"].(string))] = membership(ev)
	}
	for ev, m := range want {
		if got[ev] != m {
			t.Errorf("/messages: %s has membership %q, want %q", ev, got[ev], m)
		}
	}
	r = st.Do(t, "GET", "/_matrix/client/v3/rooms/"+room.String()+"/event/"+string(joined), bob.User.AccessToken, nil)
	if membership(r.Body) != "join" {
		t.Errorf("/event: %s", r.Raw)
	}
	r = st.Do(t, "GET", "/_matrix/client/v3/rooms/"+room.String()+"/context/"+string(invited)+"?limit=2", bob.User.AccessToken, nil)
	if membership(r.Body["event"].(map[string]any)) != "invite" {
		t.Errorf("/context: %s", r.Raw)
	}
	r = st.Do(t, "GET", "/_matrix/client/v3/sync?since="+url.QueryEscape(since), bob.User.AccessToken, nil)
	left := r.Body["rooms"].(map[string]any)["leave"].(map[string]any)[room.String()].(map[string]any)
	for _, raw := range left["timeline"].(map[string]any)["events"].([]any) {
		ev := raw.(map[string]any)
		if id.EventID(ev["event_id"].(string)) == later && membership(ev) != "join" {
			t.Errorf("sync: %s has membership %q, want join", later, membership(ev))
		}
		if ev["type"] == "m.room.member" && membership(ev) != "leave" {
			t.Errorf("sync: bob's leave has membership %q, want leave", membership(ev))
		}
	}
}
