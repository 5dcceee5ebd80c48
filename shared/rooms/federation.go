package rooms

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/stateres"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// What shared/federation reads of rooms to answer other servers: events by
// ID, state before an event, auth chains, backfill and missing events, and
// what a server may see of a room. Reads only: nothing here writes.

// MaxFederationEvents caps the events one backfill or get_missing_events
// answer holds, as Synapse caps them.
const MaxFederationEvents = 100

// serverOf is the server name of a user ID: all after the first colon.
func serverOf(userID string) string {
	_, server, _ := strings.Cut(userID, ":")
	return server
}

// ServerMembership is the best membership a server's users have in the
// room's current state: "join" when one of them is joined, else "invite"
// when one is invited, else "". Cost: one Query of the room's current
// member events (1 RCU per 4 KB, about six member events).
func (s *Service) ServerMembership(ctx context.Context, roomID, server string) (string, error) {
	members, err := s.Members(ctx, roomID)
	if err != nil {
		return "", err
	}
	best := ""
	for _, ev := range members {
		if ev.StateKey() == nil || serverOf(*ev.StateKey()) != server {
			continue
		}
		switch m, _ := ev.Membership(); m {
		case "join":
			return "join", nil
		case "invite":
			best = "invite"
		}
	}
	return best, nil
}

// JoinedServers lists the servers with a joined member in the room's
// current state, this server first when it is one of them, the others in
// name order. Cost: one Query of the room's current member events.
func (s *Service) JoinedServers(ctx context.Context, roomID string) ([]string, error) {
	members, err := s.Members(ctx, roomID)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, ev := range members {
		if m, _ := ev.Membership(); m == "join" && ev.StateKey() != nil {
			seen[serverOf(*ev.StateKey())] = true
		}
	}
	out := []string{}
	if seen[s.Signer.ServerName] {
		out = append(out, s.Signer.ServerName)
		delete(seen, s.Signer.ServerName)
	}
	rest := make([]string, 0, len(seen))
	for srv := range seen {
		rest = append(rest, srv)
	}
	slices.Sort(rest)
	return append(out, rest...), nil
}

// EventsByID reads the events of roomID among ids: one BatchGetItem of
// their pointers, one of their slots (100 keys a call). IDs this server
// does not hold in that room are left out of the map.
func (s *Service) EventsByID(ctx context.Context, roomID string, ids []string) (map[string]Event, error) {
	out := map[string]Event{}
	if len(ids) == 0 {
		return out, nil
	}
	keys := make([]store.Key, 0, len(ids))
	for _, id := range ids {
		keys = append(keys, store.Key{PK: pointerPK(id), SK: "event"})
	}
	want := map[store.Key]string{}
	var slotKeys []store.Key
	err := s.Store.GetMany(ctx, keys, func(_ store.Key, decode func(any) error) error {
		var p pointer
		if err := decode(&p); err != nil {
			return err
		}
		// An event kept out of the timeline (rejected, soft failed) has
		// no slot, and is not served.
		if p.RoomID != roomID || p.Seq == 0 {
			return nil
		}
		pk, sk := slotKey(p.RoomID, p.Seq)
		k := store.Key{PK: pk, SK: sk}
		want[k] = strings.TrimPrefix(p.PK, "event|")
		slotKeys = append(slotKeys, k)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read event pointers: %w", err)
	}
	err = s.Store.GetMany(ctx, slotKeys, func(k store.Key, decode func(any) error) error {
		var sl slot
		if err := decode(&sl); err != nil {
			return err
		}
		// A pointer written for a claim another event won names a slot
		// that holds that other event.
		if sl.EventID != want[k] {
			return nil
		}
		e, err := sl.event()
		if err != nil {
			return err
		}
		out[sl.EventID] = e
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read event slots: %w", err)
	}
	return out, nil
}

// AuthChain returns the auth chain of evs: every event reached from them
// through one or more auth_events, in no particular order (an event of evs
// is in it only when another names it). In rooms whose ID is the create
// event's hash (version 12), events leave the create event out of their
// auth_events and the room ID names it instead: it counts as an auth event
// of every event but itself, as Synapse counts it, so that a server given
// the chain can check it. It walks the auth graph a level at a time, each
// level one EventsByID of the events not among evs; auth events this
// server does not hold are left out.
func (s *Service) AuthChain(ctx context.Context, roomID string, evs []events.PDU) ([]events.PDU, error) {
	seen := map[string]bool{}
	var next []string
	add := func(ev events.PDU) {
		ids := ev.AuthEventIDs()
		if events.DomainlessRoomIDs(string(ev.Version())) && ev.Type() != events.Create && strings.HasPrefix(roomID, "!") {
			ids = append([]string{"$" + roomID[1:]}, ids...)
		}
		for _, id := range ids {
			if !seen[id] {
				seen[id] = true
				next = append(next, id)
			}
		}
	}
	// The chain of a state is mostly that state: its events are not read
	// again.
	known := make(map[string]events.PDU, len(evs))
	for _, ev := range evs {
		known[ev.EventID()] = ev
		add(ev)
	}
	var out []events.PDU
	for len(next) > 0 {
		level := next
		next = nil
		var lookup []string
		for _, id := range level {
			if _, ok := known[id]; !ok {
				lookup = append(lookup, id)
			}
		}
		got, err := s.EventsByID(ctx, roomID, lookup)
		if err != nil {
			return nil, fmt.Errorf("auth chain: %w", err)
		}
		for _, id := range level {
			ev, ok := known[id]
			if e, found := got[id]; found {
				ev, ok = e.PDU, true
			}
			if ok {
				out = append(out, ev)
				add(ev)
			}
		}
	}
	return out, nil
}

// StateBefore is the room state before ev, which federation's /state and
// /state_ids return: the state after it for an event that changes no
// state; for a state event, the state after its prev_events, resolved
// when there are several (the create event has none: no state).
func (s *Service) StateBefore(ctx context.Context, roomID string, ev Event) ([]events.PDU, error) {
	if ev.PDU.StateKey() == nil {
		return s.StateAt(ctx, roomID, ev)
	}
	prevIDs := ev.PDU.PrevEventIDs()
	if len(prevIDs) == 0 {
		return []events.PDU{}, nil
	}
	prevs, err := s.EventsByID(ctx, roomID, prevIDs)
	if err != nil {
		return nil, err
	}
	var states []stateres.StateMap
	byID := map[string]events.PDU{}
	for _, id := range prevIDs {
		p, ok := prevs[id]
		if !ok {
			return nil, fmt.Errorf("%w %s (a prev_event of %s)", ErrUnknownEvent, id, ev.PDU.EventID())
		}
		st, err := s.StateAt(ctx, roomID, p)
		if err != nil {
			return nil, err
		}
		if len(prevIDs) == 1 {
			return st, nil
		}
		m := stateres.StateMap{}
		for _, e := range st {
			m[stateres.Key{Type: e.Type(), StateKey: *e.StateKey()}] = e.EventID()
			byID[e.EventID()] = e
		}
		states = append(states, m)
	}
	l := newGraphLoader(s, roomID)
	maps.Copy(l.known, byID)
	resolved, err := stateres.Resolve(ctx, string(ev.PDU.Version()), states, l)
	if err != nil {
		return nil, fmt.Errorf("state before %s: %w", ev.PDU.EventID(), err)
	}
	var missing []string
	out := make([]events.PDU, 0, len(resolved))
	for _, id := range resolved {
		if e, ok := byID[id]; ok {
			out = append(out, e)
		} else {
			missing = append(missing, id)
		}
	}
	got, err := s.EventsByID(ctx, roomID, missing)
	if err != nil {
		return nil, err
	}
	for _, id := range missing {
		e, ok := got[id]
		if !ok {
			return nil, fmt.Errorf("%w %s (resolved state)", ErrUnknownEvent, id)
		}
		out = append(out, e.PDU)
	}
	return out, nil
}

// Backfill returns the events of the room at or before the latest position
// of the events ids names, newest first, at most limit (capped at
// MaxFederationEvents): the events given and those before them, as the
// timeline orders them. ErrUnknownEvent when the room holds none of ids.
// Cost: one EventsByID, then one Query of the slots, eventually consistent
// (events do not change once written but for a redaction mark).
func (s *Service) Backfill(ctx context.Context, roomID string, ids []string, limit int) ([]Event, error) {
	limit = min(max(limit, 0), MaxFederationEvents)
	from, err := s.EventsByID(ctx, roomID, ids)
	if err != nil {
		return nil, err
	}
	if len(from) == 0 {
		return nil, fmt.Errorf("%w: none of %v in %s", ErrUnknownEvent, ids, roomID)
	}
	var top int64
	for _, e := range from {
		top = max(top, e.Seq)
	}
	if limit == 0 {
		return []Event{}, nil
	}
	var page []slot
	_, err = s.Store.QueryPage(ctx, store.Query{PK: roomPK(roomID), Prefix: slotPrefix, From: slotSK(top),
		Descending: true, Limit: limit, Eventual: true}, &page)
	if err != nil {
		return nil, fmt.Errorf("backfill %s: %w", roomID, err)
	}
	out := make([]Event, 0, len(page))
	for _, sl := range page {
		if sl.Hold {
			continue // a copy of the event above a gap
		}
		e, err := sl.event()
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// MissingEvents walks prev_events back from latest, breadth first, to the
// events earliest names, as get_missing_events asks: at most limit events
// (capped at MaxFederationEvents), none of depth below minDepth (the walk
// stops there), neither latest nor earliest themselves; oldest first.
// Events of latest the room does not hold are ignored. Cost: the timeline
// below the latest event is read a window at a time (one Query of up to
// limit+10 slots, eventually consistent), which holds the whole walk of a
// room without forks; prev events outside it are read by EventsByID.
func (s *Service) MissingEvents(ctx context.Context, roomID string, earliest, latest []string, limit int, minDepth int64) ([]Event, error) {
	limit = min(max(limit, 0), MaxFederationEvents)
	seen := map[string]bool{}
	for _, id := range earliest {
		seen[id] = true
	}
	var front []string
	for _, id := range latest {
		if !seen[id] {
			seen[id] = true
			front = append(front, id)
		}
	}
	heads, err := s.EventsByID(ctx, roomID, front)
	if err != nil {
		return nil, err
	}
	known := map[string]Event{}
	var top int64
	for _, e := range heads {
		known[e.PDU.EventID()] = e
		top = max(top, e.Seq)
	}
	if len(heads) > 0 && limit > 0 {
		var page []slot
		_, err = s.Store.QueryPage(ctx, store.Query{PK: roomPK(roomID), Prefix: slotPrefix, From: slotSK(top),
			Descending: true, Limit: limit + 10, Eventual: true}, &page)
		if err != nil {
			return nil, fmt.Errorf("missing events of %s: %w", roomID, err)
		}
		for _, sl := range page {
			if e, err := sl.event(); err == nil && !sl.Hold {
				known[sl.EventID] = e
			}
		}
	}
	var out []Event
	var queue []string
	push := func(e Event) {
		for _, id := range e.PDU.PrevEventIDs() {
			if !seen[id] {
				seen[id] = true
				queue = append(queue, id)
			}
		}
	}
	for _, id := range front {
		if e, ok := heads[id]; ok {
			push(e)
		}
	}
	for len(queue) > 0 && len(out) < limit {
		var lookup []string
		for _, id := range queue {
			if _, ok := known[id]; !ok {
				lookup = append(lookup, id)
			}
		}
		got, err := s.EventsByID(ctx, roomID, lookup)
		if err != nil {
			return nil, err
		}
		for id, e := range got {
			known[id] = e
		}
		level := queue
		queue = nil
		for _, id := range level {
			e, ok := known[id]
			if !ok || e.PDU.Depth() < minDepth || len(out) >= limit {
				continue
			}
			out = append(out, e)
			push(e)
		}
	}
	slices.SortFunc(out, func(a, b Event) int {
		return cmp.Or(cmp.Compare(a.PDU.Depth(), b.PDU.Depth()), cmp.Compare(a.Seq, b.Seq))
	})
	return out, nil
}

// ServerView decides which of a room's events a server may see in full,
// the history visibility rules applied to servers as Synapse applies them:
// an event sent while the room's history was world_readable or shared
// anyone in the room may see; one sent while it was invited or joined
// only a server one of whose users was joined (or invited, for invited)
// in the state after that event. Others see such an event redacted, so
// that they can still walk the room's graph.
type ServerView struct {
	s      *Service
	roomID string
	server string
	v      viewer
	// at caches the server's membership by the blocks of a state.
	at map[string]string
}

// ServerView reads what deciding needs: the room's info item (the history
// of its history visibility). ErrUnknownRoom for a room this server does
// not hold.
func (s *Service) ServerView(ctx context.Context, roomID, server string) (*ServerView, error) {
	var i info
	if err := s.Store.Get(ctx, store.Key{PK: roomPK(roomID), SK: infoSK}, &i); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("%w %s", ErrUnknownRoom, roomID)
		}
		return nil, err
	}
	return &ServerView{s: s, roomID: roomID, server: server, v: viewer{visibility: i.Visibility, info: i, visAt: stateAtOf(i.VisibilityAt)}, at: map[string]string{}}, nil
}

// Sees reports whether the server may see e in full. Cost: nothing for an
// event under world_readable or shared history; otherwise, once per state
// (a snapshot, or a forked event's own blocks), the snapshot's GetItem,
// one BatchGetItem of its blocks and one EventsByID of the server's member
// events.
func (sv *ServerView) Sees(ctx context.Context, e Event) (bool, error) {
	vis := sv.v.visibilityAt(e.Seq)
	if vis != "invited" && vis != "joined" {
		return true, nil
	}
	key := strings.Join(e.blocks, ",")
	if key == "" {
		key = strconv.FormatInt(e.StateSeq, 10)
	}
	m, ok := sv.at[key]
	if !ok {
		var err error
		if m, err = sv.s.serverMembershipAt(ctx, sv.roomID, e, sv.server); err != nil {
			return false, err
		}
		sv.at[key] = m
	}
	return m == "join" || (vis == "invited" && m == "invite"), nil
}

// Filter returns the PDUs of evs as the server may see them, in order:
// whole, or redacted (events.Redact). An event redacted in the room is
// served redacted to everyone.
func (sv *ServerView) Filter(ctx context.Context, evs []Event) ([]events.PDU, error) {
	out := make([]events.PDU, 0, len(evs))
	for _, e := range evs {
		ok, err := sv.Sees(ctx, e)
		if err != nil {
			return nil, err
		}
		pdu := e.PDU
		if !ok || e.RedactedBy != "" {
			if pdu, err = events.Redact(pdu); err != nil {
				return nil, err
			}
		}
		out = append(out, pdu)
	}
	return out, nil
}

// serverMembershipAt is the best membership ("join", "invite" or "") of
// the server's users in the state after e (as StateAt reads it).
func (s *Service) serverMembershipAt(ctx context.Context, roomID string, e Event, server string) (string, error) {
	blocks := e.blocks
	if len(blocks) == 0 {
		var snap snapshot
		if err := s.Store.Get(ctx, store.Key{PK: roomPK(roomID), SK: snapSK(e.StateSeq)}, &snap); err != nil {
			return "", fmt.Errorf("read snapshot %d of %s: %w", e.StateSeq, roomID, err)
		}
		blocks = snap.Blocks
	}
	tree, err := s.readBlocks(ctx, roomID, nil, blocks)
	if err != nil {
		return "", err
	}
	prefix := events.Member + "\x00"
	var ids []string
	for _, h := range blocks {
		for k, id := range tree[h] {
			if user, ok := strings.CutPrefix(k, prefix); ok && serverOf(user) == server {
				ids = append(ids, id)
			}
		}
	}
	got, err := s.EventsByID(ctx, roomID, ids)
	if err != nil {
		return "", err
	}
	best := ""
	for _, e := range got {
		switch m, _ := e.PDU.Membership(); m {
		case "join":
			return "join", nil
		case "invite":
			best = "invite"
		}
	}
	return best, nil
}
