package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/stateres"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Joining a room this server does not hold (server-server API, "Joining
// Rooms"): the federation side (make_join, send_join, the checks of the
// answer) is Service.RemoteJoin's; this file picks the servers to ask and
// takes the checked room in.
//
// The room is taken in as a timeline: the state before the join, the
// create event first and the rest by depth, then the join, appended at
// positions joinBase to joinBase+n as a new room's first events are
// (commitFrom; the positions below are its history's, backfill.go), so that
// current state, snapshots and the blocks come out as for any room, the
// room's forward extremity is the join, and every state event can be
// fetched by its ID (a later event's prev_events and auth_events). The
// snapshots before the join are that order's prefixes, not the state the
// room had at those events: a received event that forks from before the
// join resolves against them. Auth chain events that are not state are
// not kept (an event that names one as an auth event is missing it).

// joinBase is the position of a room taken in through a remote join:
// 10^11, within the 12 digits of slot keys, leaving 10^11 - 1 positions
// below for the history backfilled before it.
const joinBase = 100_000_000_000

// RemoteJoiner joins userID to roomID, which this server does not hold,
// through one of servers, the first that answers, and takes the room in
// (TakeJoined).
type RemoteJoiner func(ctx context.Context, userID, roomID string, servers []string, reason string) error

// viaKey carries the client's via and server_name candidates to Join.
type viaKey struct{}

// joinCandidates are the servers to ask for a join of roomID: those the
// client named, the server of the inviter when userID holds a remote
// invite, and the room ID's server (rooms before version 12), in that
// order, once each, never this server.
func (s *Service) joinCandidates(ctx context.Context, userID, roomID string) []string {
	via, _ := ctx.Value(viaKey{}).([]string)
	var inv remoteInvite
	if err := s.Store.Get(ctx, store.Key{PK: userPK(userID), SK: membershipPrefix + roomID}, &inv); err == nil && inv.Membership == "invite" && inv.PDU != "" {
		if ev, err := events.Parse(inv.Version, inv.EventID, []byte(inv.PDU)); err == nil {
			via = append(via, senderServer(ev))
		}
	}
	if _, server, ok := strings.Cut(roomID, ":"); ok {
		via = append(via, server)
	}
	var out []string
	seen := map[string]bool{s.Signer.ServerName: true}
	for _, v := range via {
		if v != "" && !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// joinRemote joins a room this server does not hold, through RemoteJoin:
// 404 when no server is known to ask.
func (s *Service) joinRemote(ctx context.Context, userID, roomID, reason string) error {
	servers := s.joinCandidates(ctx, userID, roomID)
	if len(servers) == 0 {
		return refuse(ErrNotFound, "room %s is not known to this server and no server to join it through was given (via)", roomID)
	}
	return s.RemoteJoin(ctx, userID, roomID, servers, reason)
}

// TakeJoined takes in roomID, which this server does not hold, after a
// local user's join through another server: state is the state before
// join as send_join answered it, checked (events.CheckSendJoin). The
// state and the join are appended as the room's first events; the local
// users concerned are told as for any append. A room held already (two
// local users joining it at once) is ErrExists: the caller then sends the
// join into the room as it stands.
//
// The items are laid out at once, not appended event by event: the state
// of a room of thousands of members is written in batches of 25 items,
// several at a time (takeIn), so that the join fits in API Gateway's 30 s
// whatever the room's size.
//
// partial, when not nil, says that state lacks member events (send_join's
// members_omitted) and lists the servers in the room (servers_in_room):
// the room is held with partial state until CompletePartialState loads
// the rest (partial.go).
func (s *Service) TakeJoined(ctx context.Context, join events.PDU, state []events.PDU, partial []string) error {
	roomID := events.RoomID(join)
	evs, err := joinedTimeline(join, state)
	if err != nil {
		return err
	}
	t, err := s.layOutJoined(ctx, roomID, evs, partial)
	if err != nil {
		return fmt.Errorf("take in %s: %w", roomID, err)
	}
	if err := s.takeIn(ctx, t); err != nil {
		return fmt.Errorf("take in %s: %w", roomID, err)
	}
	return s.notify(ctx, t.appended)
}

// takenIn is a room taken in through a remote join, laid out as items.
type takenIn struct {
	roomID string
	info   *info
	// items go first: blocks, snapshots, current state, pointers, and
	// slots, those below the head.
	items []any
	slots []any
	// head is the join's slot, written with the room info and the local
	// users' items once the items are: from then on the room is held.
	head     slot
	locals   []any
	appended []Appended
}

// layOutJoined lays out evs, the state before a join then the join
// (joinedTimeline), as the room's first items at positions joinBase
// onwards. Every event before the join takes the state before the join as
// its state (one snapshot): the state the room had at each of them is not
// known, and the order of the answer's events is not theirs. The join
// has a snapshot of its own.
func (s *Service) layOutJoined(ctx context.Context, roomID string, evs []events.PDU, partial []string) (*takenIn, error) {
	n := len(evs)
	joinSeq := joinBase + int64(n) - 1
	preSeq := joinSeq - 1 // the last event before the join
	t := &takenIn{roomID: roomID}
	cur := map[events.StateKeyTuple]current{}
	prev := map[events.StateKeyTuple]events.PDU{}
	before := stateres.StateMap{}
	replaced := map[int]string{} // position in evs -> content it replaced
	for i, ev := range evs {
		seq := joinBase + int64(i)
		tuple := events.StateKeyTuple{Type: ev.Type(), StateKey: *ev.StateKey()}
		if old, ok := prev[tuple]; ok {
			replaced[i] = string(old.Content())
		}
		prev[tuple] = ev
		c := current{PK: roomPK(roomID), SK: stateSK(ev.Type(), *ev.StateKey()), EventID: ev.EventID(), Seq: seq, PDU: string(ev.JSON()), Version: string(ev.Version())}
		if ev.Type() == events.Member {
			c.Membership, _ = ev.Membership()
		}
		cur[tuple] = c
		if i < n-1 {
			before[stateres.Key(tuple)] = ev.EventID()
		}
	}
	after := maps.Clone(before)
	last := evs[n-1]
	after[stateres.Key{Type: last.Type(), StateKey: *last.StateKey()}] = last.EventID()
	seen := map[string]bool{}
	for _, m := range []struct {
		seq   int64
		state stateres.StateMap
	}{{preSeq, before}, {joinSeq, after}} {
		hashes, blks := blocksOf(roomID, m.state)
		for _, b := range blks {
			if !seen[b.SK] {
				seen[b.SK] = true
				t.items = append(t.items, b)
			}
		}
		t.items = append(t.items, snapshot{PK: roomPK(roomID), SK: snapSK(m.seq), Blocks: hashes})
	}
	for _, c := range cur {
		t.items = append(t.items, c)
	}
	loc := &locals{PK: roomPK(roomID), SK: localsSK, Users: map[string]string{}, Partial: partial}
	members := map[string]*membership{}
	for i, ev := range evs {
		seq := joinBase + int64(i)
		t.items = append(t.items, newPointer(roomID, seq, ev))
		if rel := relationOf(roomID, seq, ev); rel != nil {
			t.items = append(t.items, *rel)
		}
		t.summarize(roomID, ev, seq)
		if err := s.takeInMember(ctx, roomID, ev, seq, loc, members); err != nil {
			return nil, err
		}
		stateSeq := preSeq
		if i == n-1 {
			stateSeq = joinSeq
		}
		sl := s.newSlot(roomID, seq, ev, stateSeq)
		sl.PrevContent = replaced[i]
		if i == n-1 {
			t.head = sl
		} else {
			t.slots = append(t.slots, sl)
		}
		to := loc.joined()
		if ev.Type() == events.Member && s.isLocal(*ev.StateKey()) {
			if m, _ := ev.Membership(); m != "join" {
				to = append(to, *ev.StateKey())
			}
		}
		// The hooks hear of the room's state but its thousands of member
		// events (search indexes the name and topic); a member event that
		// concerns a local user is heard of too.
		if len(to) > 0 || ev.Type() != events.Member {
			a := Appended{RoomID: roomID, Seq: seq, Event: ev, To: to, StateSeq: stateSeq, Servers: partial}
			if i == n-1 {
				a.Members = memberEvents(prev)
			}
			t.appended = append(t.appended, a)
		}
	}
	for _, c := range cur {
		if c.Membership == "join" {
			t.info.Joined++
		}
	}
	t.info.listing()
	t.info.Rev = 1
	// The room's local users first: they go with the head whatever the
	// number of members' items.
	t.locals = append(t.locals, *loc)
	for _, m := range members {
		t.locals = append(t.locals, *m)
	}
	return t, nil
}

// summarize keeps the room info of a take-in, as batch.summarize does.
func (t *takenIn) summarize(roomID string, ev events.PDU, seq int64) {
	if ev.Type() == events.Create {
		t.info = &info{PK: roomPK(roomID), SK: infoSK, Version: string(ev.Version()), Creator: events.Sender(ev), Created: int64(ev.OriginServerTS())}
		var c struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(ev.Content(), &c)
		t.info.RoomType = c.Type
		return
	}
	t.info.apply(ev, seq)
}

// takeInMember records a local user's membership among the taken in
// events, as batch.member does: their own index of rooms, and the room's
// local users.
func (s *Service) takeInMember(ctx context.Context, roomID string, ev events.PDU, seq int64, loc *locals, members map[string]*membership) error {
	if ev.Type() != events.Member || !s.isLocal(*ev.StateKey()) {
		return nil
	}
	target := *ev.StateKey()
	m, _ := ev.Membership()
	mem, ok := members[target]
	if !ok {
		mem = &membership{PK: userPK(target), SK: membershipPrefix + roomID}
		err := s.Store.Get(ctx, store.Key{PK: mem.PK, SK: mem.SK}, mem)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		members[target] = mem
	}
	mem.Membership, mem.EventID, mem.Seq = m, ev.EventID(), seq
	mem.History = append(mem.History, transition(seq, m))
	switch m {
	case "join", "invite", "knock":
		loc.Users[target] = m
		mem.Forgotten = false
	default:
		delete(loc.Users, target)
	}
	return nil
}

// takeIn writes a laid out room. The room is claimed first (claimTakeIn:
// ErrExists when another join took it in). Then the blocks, snapshots,
// current state, pointers and the slots below the join; then, in one
// transaction, the join's slot, the room info and the local users' items,
// from which on the room is held (its info), complete, with the join at
// its head. Nothing reads a room without its info (joins, /send, the
// inbox), so nothing builds on the slots written before it.
func (s *Service) takeIn(ctx context.Context, t *takenIn) error {
	at, tookOver, err := s.claimTakeIn(ctx, t.roomID)
	if err != nil {
		return err
	}
	if tookOver {
		// The slots of the take-in cut short may lie above this one's.
		if err := s.clearSlots(ctx, t.roomID); err != nil {
			s.releaseTakeIn(ctx, t.roomID, at)
			return err
		}
	}
	if err := s.writeTakenIn(ctx, t); err != nil {
		s.releaseTakeIn(ctx, t.roomID, at)
		return err
	}
	return nil
}

// writeTakenIn writes the items of a claimed take-in, in takeIn's order.
func (s *Service) writeTakenIn(ctx context.Context, t *takenIn) error {
	// The room info goes with the head: a room with an info item is a room
	// held (joins and /send read it), never one without its head.
	ops := []store.Op{store.CreateOp(t.head), store.PutOp(*t.info)}
	items := append(t.items, t.slots...)
	for _, it := range t.locals {
		if len(ops) < store.MaxTransactActions {
			ops = append(ops, store.PutOp(it))
		} else {
			items = append(items, it)
		}
	}
	if err := s.Store.PutMany(ctx, items); err != nil {
		return err
	}
	return s.Store.Transact(ctx, ops...)
}

// joinedTimeline orders the state before a join and the join: the create
// event, the rest by depth (then ID, so that every server holding the
// same state orders it alike), the join last.
func joinedTimeline(join events.PDU, state []events.PDU) ([]events.PDU, error) {
	roomID := events.RoomID(join)
	var create events.PDU
	rest := make([]events.PDU, 0, len(state))
	for _, ev := range state {
		switch {
		case events.RoomID(ev) != roomID || ev.StateKey() == nil:
			return nil, fmt.Errorf("take in %s: state event %s is not a state event of the room", roomID, ev.EventID())
		case ev.EventID() == join.EventID():
		case ev.Type() == events.Create && *ev.StateKey() == "":
			create = ev
		default:
			rest = append(rest, ev)
		}
	}
	if create == nil {
		return nil, fmt.Errorf("take in %s: the state lacks the create event", roomID)
	}
	sort.SliceStable(rest, func(i, j int) bool {
		if rest[i].Depth() != rest[j].Depth() {
			return rest[i].Depth() < rest[j].Depth()
		}
		return rest[i].EventID() < rest[j].EventID()
	})
	out := append([]events.PDU{create}, rest...)
	return append(out, join), nil
}

// JoinContent is the content of userID's join event: their profile, and
// the reason given.
func (s *Service) JoinContent(ctx context.Context, userID, reason string) map[string]any {
	return s.memberContent(ctx, userID, "join", reason, false)
}

// Refuse is a refusal of the room engine's kind (ErrForbidden,
// ErrNotFound ...), for the federation side of a remote join, whose
// errors reach the client through the rooms handlers.
func Refuse(kind error, format string, args ...any) error { return refuse(kind, format, args...) }
