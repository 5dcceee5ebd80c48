package rooms_test

import (
	"fmt"
	"net/http"
	"sort"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// chat is a room of alice and bob with ten messages m0..m9, the even ones
// from alice and the odd ones from bob.
type chat struct {
	st         *servertest.Stack
	alice, bob mxUser
	room       id.RoomID
	ids        []id.EventID
}

func newChat(t *testing.T) *chat {
	t.Helper()
	st := servertest.Start(t)
	c := &chat{st: st, alice: st.Member(t, "alice"), bob: st.Member(t, "bob")}
	c.room = create(t, c.alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	must[*mautrix.RespJoinRoom](t, "bob joins")(c.bob.JoinRoomByID(bg, c.room))
	for i := range 10 {
		u := c.alice
		if i%2 == 1 {
			u = c.bob
		}
		c.ids = append(c.ids, say(t, u, c.room, fmt.Sprintf("m%d", i)))
	}
	return c
}

func msgs(t *testing.T, u mxUser, room id.RoomID, from, to string, dir mautrix.Direction, f *mautrix.FilterPart, limit int) *mautrix.RespMessages {
	t.Helper()
	resp, err := u.Messages(bg, room, from, to, dir, f, limit)
	if err != nil {
		t.Fatalf("messages from %q to %q dir %c limit %d as %s: %v", from, to, dir, limit, u.ID, err)
	}
	return resp
}

// TestRead_Messages pages through a timeline both ways, with tokens,
// limits and filters.
func TestRead_Messages(t *testing.T) {
	c := newChat(t)
	b, f := mautrix.DirectionBackward, mautrix.DirectionForward

	p1 := msgs(t, c.bob, c.room, "", "", b, nil, 3)
	wantEqual(t, "newest page", bodies(p1.Chunk), []string{"m9", "m8", "m7"})
	if p1.Start == "" || p1.End == "" {
		t.Fatalf("tokens: start %q end %q", p1.Start, p1.End)
	}
	p2 := msgs(t, c.bob, c.room, p1.End, "", b, nil, 3)
	wantEqual(t, "next page back", bodies(p2.Chunk), []string{"m6", "m5", "m4"})
	wantEqual(t, "start of a page from a token", p2.Start, p1.End)
	// Forwards from the end of the first page comes back to it.
	fw := msgs(t, c.bob, c.room, p1.End, "", f, nil, 3)
	wantEqual(t, "forwards from a backward token", bodies(fw.Chunk), []string{"m7", "m8", "m9"})
	fw = msgs(t, c.bob, c.room, fw.End, "", f, nil, 3)
	if len(fw.Chunk) != 0 || fw.End != "" {
		t.Fatalf("past the head: %d events, end %q", len(fw.Chunk), fw.End)
	}
	// Forwards from the start: the room's first events, then the messages.
	first := msgs(t, c.bob, c.room, "", "", f, nil, 2)
	wantEqual(t, "first events", types(first.Chunk), []string{"m.room.create", "m.room.member"})
	// to stops the page where another began.
	upTo := msgs(t, c.bob, c.room, "", p2.End, b, nil, 50)
	wantEqual(t, "back to a token", bodies(upTo.Chunk), []string{"m9", "m8", "m7", "m6", "m5", "m4"})
	upTo = msgs(t, c.bob, c.room, p2.End, p1.End, f, nil, 50)
	wantEqual(t, "forwards to a token", bodies(upTo.Chunk), []string{"m4", "m5", "m6"})
	// The whole room backwards ends with the create event and no end.
	all := msgs(t, c.bob, c.room, "", "", b, nil, 100)
	if last := all.Chunk[len(all.Chunk)-1]; last.Type != event.StateCreate || all.End != "" {
		t.Fatalf("whole room: last event %s, end %q", last.Type.Type, all.End)
	}
	wantEqual(t, "every message", len(bodies(all.Chunk)), 10)

	onlyAlice := &mautrix.FilterPart{Types: []event.Type{event.EventMessage}, NotSenders: []id.UserID{c.bob.UserID}}
	fp := msgs(t, c.bob, c.room, "", "", b, onlyAlice, 3)
	wantEqual(t, "filtered page", bodies(fp.Chunk), []string{"m8", "m6", "m4"})
	fp = msgs(t, c.bob, c.room, fp.End, "", b, onlyAlice, 3)
	wantEqual(t, "next filtered page", bodies(fp.Chunk), []string{"m2", "m0"})
	wantEqual(t, "end of the filtered pages", fp.End, "")
	members := msgs(t, c.bob, c.room, "", "", f, &mautrix.FilterPart{Types: []event.Type{event.StateMember}}, 10)
	wantEqual(t, "member events", len(members.Chunk), 2)
	limited := msgs(t, c.bob, c.room, "", "", b, &mautrix.FilterPart{Limit: 2}, 0)
	wantEqual(t, "limit from the filter", bodies(limited.Chunk), []string{"m9", "m8"})

	err := rawQuery(c.bob, map[string]string{"dir": "x"}, nil, "v3", "rooms", c.room, "messages")
	wantErr(t, "bad dir", err, "M_INVALID_PARAM", http.StatusBadRequest)
	_, err = c.bob.Messages(bg, c.room, "garbage", "", b, nil, 3)
	wantErr(t, "bad token", err, "M_INVALID_PARAM", http.StatusBadRequest)
}

// TestRead_ContextEventState covers /context, /event, /state and
// /state/{type}/{key}.
func TestRead_ContextEventState(t *testing.T) {
	c := newChat(t)
	ctx := must[*mautrix.RespContext](t, "context")(c.bob.Context(bg, c.room, c.ids[5], nil, 4))
	wantEqual(t, "event", ctx.Event.Content.Raw["body"], "m5")
	wantEqual(t, "before", bodies(ctx.EventsBefore), []string{"m4", "m3"})
	wantEqual(t, "after", bodies(ctx.EventsAfter), []string{"m6", "m7"})
	older := msgs(t, c.bob, c.room, ctx.Start, "", mautrix.DirectionBackward, nil, 1)
	wantEqual(t, "before the context", bodies(older.Chunk), []string{"m2"})
	newer := msgs(t, c.bob, c.room, ctx.End, "", mautrix.DirectionForward, nil, 1)
	wantEqual(t, "after the context", bodies(newer.Chunk), []string{"m8"})
	var state []string
	for _, ev := range ctx.State {
		state = append(state, ev.Type.Type+"|"+ev.GetStateKey())
	}
	sort.Strings(state)
	wantEqual(t, "state at the event", state, []string{
		"m.room.create|", "m.room.guest_access|", "m.room.history_visibility|", "m.room.join_rules|",
		"m.room.member|" + c.alice.ID, "m.room.member|" + c.bob.ID, "m.room.power_levels|",
	})
	// limit counts events_before and events_after together.
	one := must[*mautrix.RespContext](t, "context of limit 1")(c.bob.Context(bg, c.room, c.ids[5], nil, 1))
	wantEqual(t, "limit 1", []any{len(one.EventsBefore), bodies(one.EventsAfter), one.Event.ID}, []any{0, []string{"m6"}, c.ids[5]})
	var zero mautrix.RespContext // mautrix leaves out a limit of 0
	if err := rawQuery(c.bob, map[string]string{"limit": "0"}, &zero, "v3", "rooms", c.room, "context", c.ids[5]); err != nil {
		t.Fatalf("context of limit 0: %v", err)
	}
	wantEqual(t, "limit 0", []any{len(zero.EventsBefore), len(zero.EventsAfter), zero.Event.ID}, []any{0, 0, c.ids[5]})
	older = msgs(t, c.bob, c.room, zero.Start, "", mautrix.DirectionBackward, nil, 1)
	wantEqual(t, "before an empty context", bodies(older.Chunk), []string{"m4"})
	newer = msgs(t, c.bob, c.room, zero.End, "", mautrix.DirectionForward, nil, 1)
	wantEqual(t, "after an empty context", bodies(newer.Chunk), []string{"m6"})
	// The filter applies to the state as well.
	noMembers := must[*mautrix.RespContext](t, "context without members")(c.bob.Context(bg, c.room, c.ids[5], &mautrix.FilterPart{NotTypes: []event.Type{event.StateMember}}, 4))
	for _, ev := range noMembers.State {
		if ev.Type.Type == "m.room.member" {
			t.Fatalf("filtered state has a member event: %v", ev)
		}
	}
	wantEqual(t, "filtered state", len(noMembers.State), len(state)-2)
	filtered := must[*mautrix.RespContext](t, "filtered context")(c.bob.Context(bg, c.room, c.ids[5], &mautrix.FilterPart{NotSenders: []id.UserID{c.bob.UserID}}, 4))
	wantEqual(t, "filtered before", bodies(filtered.EventsBefore), []string{"m4", "m2"})
	wantEqual(t, "filtered after", bodies(filtered.EventsAfter), []string{"m6", "m8"})

	ev := must[*event.Event](t, "event")(c.alice.GetEvent(bg, c.room, c.ids[3]))
	wantEqual(t, "event", []any{ev.ID, ev.Sender, ev.RoomID, ev.Type, ev.Content.Raw["body"]}, []any{c.ids[3], c.bob.UserID, c.room, event.EventMessage, "m3"})
	_, err := c.alice.GetEvent(bg, c.room, "$nosuchevent")
	wantErr(t, "unknown event", err, "M_NOT_FOUND", http.StatusNotFound)
	_, err = c.alice.Context(bg, c.room, "$nosuchevent", nil, 4)
	wantErr(t, "context of an unknown event", err, "M_NOT_FOUND", http.StatusNotFound)
	other := create(t, c.alice, &mautrix.ReqCreateRoom{})
	_, err = c.alice.GetEvent(bg, other, c.ids[3])
	wantErr(t, "event of another room", err, "M_NOT_FOUND", http.StatusNotFound)

	full := must[mautrix.RoomStateMap](t, "state")(c.bob.State(bg, c.room))
	var keys []string
	for typ, byKey := range full {
		for key := range byKey {
			keys = append(keys, typ.Type+"|"+key)
		}
	}
	sort.Strings(keys)
	wantEqual(t, "current state", keys, state)
	wantEqual(t, "alice's membership", stateOf(t, c.bob, c.room, "m.room.member", c.alice.ID)["membership"], "join")
	wantEqual(t, "a state GET matches /state", stateOf(t, c.bob, c.room, "m.room.join_rules", ""), full[event.StateJoinRules][""].Content.Raw)

	// The state is the state at the last event returned.
	must[*mautrix.RespSendEvent](t, "topic")(c.alice.SendStateEvent(bg, c.room, event.StateTopic, "", map[string]any{"topic": "late"}))
	withTopic := must[*mautrix.RespContext](t, "context up to the topic")(c.bob.Context(bg, c.room, c.ids[9], nil, 2))
	topics := 0
	for _, ev := range withTopic.State {
		if ev.Type.Type == "m.room.topic" {
			topics++
		}
	}
	wantEqual(t, "topic events in the state after it", topics, 1)
}

// TestRead_Members covers /members with at, membership and
// not_membership, /joined_members and /joined_rooms.
func TestRead_Members(t *testing.T) {
	c := newChat(t)
	carol := c.st.Member(t, "carol")
	dave := c.st.Member(t, "dave")
	must[*mautrix.RespJoinRoom](t, "dave joins")(dave.JoinRoomByID(bg, c.room))
	must[*mautrix.RespInviteUser](t, "invite carol")(c.alice.InviteUser(bg, c.room, &mautrix.ReqInviteUser{UserID: carol.UserID}))
	whileDaveWasIn := msgs(t, c.alice, c.room, "", "", mautrix.DirectionBackward, nil, 1).Start
	must[*mautrix.RespLeaveRoom](t, "dave leaves")(dave.LeaveRoom(bg, c.room))

	list := func(req mautrix.ReqMembers) map[string]string {
		t.Helper()
		resp := must[*mautrix.RespMembers](t, "members")(c.bob.Members(bg, c.room, req))
		out := map[string]string{}
		for _, ev := range resp.Chunk {
			out[ev.GetStateKey()] = string(ev.Content.AsMember().Membership)
		}
		return out
	}
	wantEqual(t, "all members", list(mautrix.ReqMembers{}), map[string]string{c.alice.ID: "join", c.bob.ID: "join", carol.ID: "invite", dave.ID: "leave"})
	wantEqual(t, "joined members", list(mautrix.ReqMembers{Membership: event.MembershipJoin}), map[string]string{c.alice.ID: "join", c.bob.ID: "join"})
	wantEqual(t, "members not left", list(mautrix.ReqMembers{NotMembership: event.MembershipLeave}), map[string]string{c.alice.ID: "join", c.bob.ID: "join", carol.ID: "invite"})
	wantEqual(t, "members at a token", list(mautrix.ReqMembers{At: whileDaveWasIn}), map[string]string{c.alice.ID: "join", c.bob.ID: "join", carol.ID: "invite", dave.ID: "join"})
	wantEqual(t, "joined members at a token", list(mautrix.ReqMembers{At: whileDaveWasIn, Membership: event.MembershipJoin}), map[string]string{c.alice.ID: "join", c.bob.ID: "join", dave.ID: "join"})
	err := rawQuery(c.bob, map[string]string{"membership": "lurking"}, nil, "v3", "rooms", c.room, "members")
	wantErr(t, "unknown membership", err, "M_INVALID_PARAM", http.StatusBadRequest)
	// Dave left: he sees the members as they were when he left.
	resp := must[*mautrix.RespMembers](t, "dave's members")(dave.Members(bg, c.room))
	seen := map[string]string{}
	for _, ev := range resp.Chunk {
		seen[ev.GetStateKey()] = string(ev.Content.AsMember().Membership)
	}
	wantEqual(t, "members dave sees", seen, map[string]string{c.alice.ID: "join", c.bob.ID: "join", carol.ID: "invite", dave.ID: "leave"})

	wantEqual(t, "joined_members", joinedIDs(t, c.bob, c.room), []string{c.alice.ID, c.bob.ID})
	_, err = carol.JoinedMembers(bg, c.room)
	wantErr(t, "joined_members as an invitee", err, "M_FORBIDDEN", http.StatusForbidden)
	second := create(t, c.bob, &mautrix.ReqCreateRoom{})
	rooms := must[*mautrix.RespJoinedRooms](t, "joined_rooms")(c.bob.JoinedRooms(bg))
	got := []string{}
	for _, r := range rooms.JoinedRooms {
		got = append(got, r.String())
	}
	sort.Strings(got)
	want := []string{c.room.String(), second.String()}
	sort.Strings(want)
	wantEqual(t, "bob's rooms", got, want)
	rooms = must[*mautrix.RespJoinedRooms](t, "joined_rooms")(dave.JoinedRooms(bg))
	wantEqual(t, "dave's rooms", rooms.JoinedRooms, []id.RoomID{})
}

// TestRead_Relations covers /relations with a thread reply, an edit and
// reactions, filtered by relation and event type, and paged.
func TestRead_Relations(t *testing.T) {
	c := newChat(t)
	root := c.ids[0]
	rel := func(relType event.RelationType, extra map[string]any) map[string]any {
		r := map[string]any{"rel_type": relType, "event_id": root}
		for k, v := range extra {
			r[k] = v
		}
		return r
	}
	thread := must[*mautrix.RespSendEvent](t, "thread reply")(c.bob.SendMessageEvent(bg, c.room, event.EventMessage, map[string]any{
		"msgtype": "m.text", "body": "in thread", "m.relates_to": rel(event.RelThread, map[string]any{"is_falling_back": true, "m.in_reply_to": map[string]any{"event_id": root}}),
	})).EventID
	edit := must[*mautrix.RespSendEvent](t, "edit")(c.alice.SendMessageEvent(bg, c.room, event.EventMessage, map[string]any{
		"msgtype": "m.text", "body": "* m0 edited", "m.new_content": map[string]any{"msgtype": "m.text", "body": "m0 edited"}, "m.relates_to": rel(event.RelReplace, nil),
	})).EventID
	thumbs := must[*mautrix.RespSendEvent](t, "reaction")(c.bob.SendReaction(bg, c.room, root, "👍")).EventID
	heart := must[*mautrix.RespSendEvent](t, "reaction")(c.alice.SendReaction(bg, c.room, root, "❤️")).EventID
	say(t, c.alice, c.room, "unrelated")

	get := func(req *mautrix.ReqGetRelations) *mautrix.RespGetRelations {
		t.Helper()
		return must[*mautrix.RespGetRelations](t, "relations")(c.bob.GetRelations(bg, c.room, root, req))
	}
	ids := func(evs []*event.Event) []id.EventID {
		out := []id.EventID{}
		for _, ev := range evs {
			out = append(out, ev.ID)
		}
		return out
	}
	wantEqual(t, "all relations, newest first", ids(get(&mautrix.ReqGetRelations{}).Chunk), []id.EventID{heart, thumbs, edit, thread})
	wantEqual(t, "all relations forwards", ids(get(&mautrix.ReqGetRelations{Dir: mautrix.DirectionForward}).Chunk), []id.EventID{thread, edit, thumbs, heart})
	wantEqual(t, "thread", ids(get(&mautrix.ReqGetRelations{RelationType: event.RelThread}).Chunk), []id.EventID{thread})
	wantEqual(t, "edits", ids(get(&mautrix.ReqGetRelations{RelationType: event.RelReplace}).Chunk), []id.EventID{edit})
	wantEqual(t, "reactions", ids(get(&mautrix.ReqGetRelations{RelationType: event.RelAnnotation, EventType: event.EventReaction}).Chunk), []id.EventID{heart, thumbs})
	wantEqual(t, "annotations that are messages", ids(get(&mautrix.ReqGetRelations{RelationType: event.RelAnnotation, EventType: event.EventMessage}).Chunk), []id.EventID{})

	var paged []id.EventID
	req := &mautrix.ReqGetRelations{Limit: 1}
	for range 10 {
		page := get(req)
		paged = append(paged, ids(page.Chunk)...)
		if page.NextBatch == "" {
			break
		}
		req.From = page.NextBatch
	}
	wantEqual(t, "paged relations", paged, []id.EventID{heart, thumbs, edit, thread})
	page := get(&mautrix.ReqGetRelations{Limit: 2, Dir: mautrix.DirectionForward})
	wantEqual(t, "first forward page", ids(page.Chunk), []id.EventID{thread, edit})
	page = get(&mautrix.ReqGetRelations{Limit: 2, Dir: mautrix.DirectionForward, From: page.NextBatch})
	wantEqual(t, "second forward page", ids(page.Chunk), []id.EventID{thumbs, heart})
	wantEqual(t, "end of the forward pages", page.NextBatch, "")

	// A redacted child no longer relates; a redacted parent keeps its
	// children.
	must[*mautrix.RespSendEvent](t, "redact a reaction")(c.alice.RedactEvent(bg, c.room, heart))
	wantEqual(t, "relations after a redacted reaction", ids(get(&mautrix.ReqGetRelations{}).Chunk), []id.EventID{thumbs, edit, thread})
	must[*mautrix.RespSendEvent](t, "redact the root")(c.alice.RedactEvent(bg, c.room, root))
	wantEqual(t, "relations of a redacted parent", ids(get(&mautrix.ReqGetRelations{}).Chunk), []id.EventID{thumbs, edit, thread})

	_, err := c.bob.GetRelations(bg, c.room, "$nosuchevent", &mautrix.ReqGetRelations{})
	wantErr(t, "relations of an unknown event", err, "M_NOT_FOUND", http.StatusNotFound)
	stranger := c.st.Member(t, "stranger")
	private := create(t, c.alice, &mautrix.ReqCreateRoom{})
	inPrivate := say(t, c.alice, private, "private")
	_, err = stranger.GetRelations(bg, private, inPrivate, &mautrix.ReqGetRelations{})
	wantErr(t, "relations in a room the user was never in", err, "M_FORBIDDEN", http.StatusForbidden)
}
