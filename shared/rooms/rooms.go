// Package rooms holds rooms and their events: the event graph stored in the
// table, current and historical state, creating and joining rooms, sending
// and reading events, with the auth rules of every room version.
package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Service is the rooms of this server.
type Service struct {
	Store  *store.Store
	Signer events.Signer
	// DefaultRoomVersion is the version of rooms created without a
	// room_version (the configuration's default_room_version); "" is
	// events.DefaultVersion.
	DefaultRoomVersion string
	// Profile gives a local user's display name and avatar for their member
	// events; nil leaves them out.
	Profile func(ctx context.Context, userID string) (displayName, avatarURL string)
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// Appended is told of every event appended, after it is stored, with
	// the local users whose sync streams it goes to; nil does nothing.
	Appended func(ctx context.Context, evs []Appended) error
	// Landing, when set, prepares the write of what the local users' syncs
	// and search read of a lone message (its stream entries, its search
	// index), which the append encodes while its first writes are on
	// their way and sends beside the write of its slot, not after it: a
	// send then waits one round trip less. Its writes may come before the
	// slot or without it (the slot went to another event, or the process
	// died): what reads them takes an entry whose slot is not there yet
	// for news still to come, and an index item for a hit only where the
	// slot holds its event. Losing the slot, the append calls Landing
	// again with the event that won it, beside its next attempt, to put
	// back index items the loser's replaced (repairLost). The event then
	// reaches Appended with Landed set.
	Landing func(a Appended) (write func(ctx context.Context) error, err error)
	// SyncPosition reads a /sync token of userID as the position in roomID
	// it stands just after (sync.Service.RoomPosition), for the endpoints
	// that take a sync token for a pagination token; nil accepts room
	// tokens alone.
	SyncPosition func(ctx context.Context, userID, roomID, token string) (int64, error)
	// Ignored lists the users userID ignores (m.ignored_user_list), whose
	// thread roots /threads shows redacted and whose replies it does not
	// show as a thread's latest; nil ignores no one.
	Ignored func(ctx context.Context, userID string) (map[string]bool, error)
	// RemoteJoin joins a room this server does not hold through other
	// servers (remotejoin.go); nil answers such joins 404.
	RemoteJoin RemoteJoiner
	// RemoteMembers invites other servers' users, and leaves and knocks on
	// rooms this server does not hold (remotemember.go); nil refuses them.
	RemoteMembers RemoteMembers
	// RemoteAlias resolves another server's room alias for a join
	// (federation's query/directory): the room ID and servers in it; nil
	// leaves such aliases unknown.
	RemoteAlias func(ctx context.Context, alias string) (roomID string, servers []string, err error)
	// Backfiller fetches history older than a remote-joined room's lowest
	// position from the servers in the room (backfill.go); nil never asks,
	// and such a room's history starts at the join.
	Backfiller Backfiller
	// RemoteReads asks other servers what the client endpoints read of
	// them (remoteevent.go); its zero value asks nothing.
	RemoteReads RemoteReads

	cache roomCache
	sent  sentTxns
	// halt, set by tests, is asked at the points where a process can die
	// during an append ("slot": a message's record and pointer are
	// written, its slot not yet; "landed": that, and what Landing writes;
	// "appended": the event is stored, the local users not yet told).
	// true stops the append there as a death would: nothing more is
	// written.
	halt func(point string) bool
}

// errHalted is an append stopped by halt.
var errHalted = errors.New("append halted")

func (s *Service) halted(point string) bool { return s.halt != nil && s.halt(point) }

func (s *Service) isLocal(userID string) bool {
	_, server, ok := strings.Cut(userID, ":")
	return ok && server == s.Signer.ServerName
}

// Appended is an event just appended and the local users to tell of it.
type Appended struct {
	RoomID string
	Seq    int64
	Event  events.PDU
	To     []string
	// StateSeq is the position of the room's state snapshot after the
	// event (the slot's ss) where the append knows it; 0 where it does not.
	// Events with one StateSeq saw one state: what is derived from the state
	// (the servers in the room) may be kept under it.
	StateSeq int64
	// Members, on the local join that took a room in (TakeJoined), are
	// the room's member events after it, as the take-in holds them: the
	// hooks that keep track of members take them from here rather than
	// each reading the room's member state again. Nil elsewhere.
	Members []events.PDU
	// Servers are the servers in a room joined with partial state that
	// its member state does not show yet (partial.go): the sender sends to
	// them too. Nil in a room whose state is whole.
	Servers []string
	// Landed reports that Landing wrote the event's stream entries and
	// search index beside its slot: Appended's hooks only wake the syncs
	// waiting for it.
	Landed bool
}

// notify records the thread replies among appended events and passes the
// events on to the Appended hook.
func (s *Service) notify(ctx context.Context, evs []Appended) error {
	threadErr := s.indexThreads(ctx, evs)
	if s.Appended == nil || len(evs) == 0 {
		return threadErr
	}
	if err := s.Appended(ctx, evs); err != nil {
		return errors.Join(threadErr, fmt.Errorf("tell local users of new events: %w", err))
	}
	return threadErr
}

// readLocals reads the room's local users; a room without any has none.
// The users are decoded loosely: an item written with an empty map holds a
// string in the embedded DynamoDB (see locals), and means no one.
func (s *Service) readLocals(ctx context.Context, roomID string) (*locals, error) {
	l := &locals{PK: roomPK(roomID), SK: localsSK, Users: map[string]string{}}
	var stored struct {
		Users   any      `dynamodbav:"u"`
		Partial []string `dynamodbav:"partial"`
	}
	err := s.Store.Get(ctx, store.Key{PK: l.PK, SK: l.SK}, &stored)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	l.Partial = stored.Partial
	users, _ := stored.Users.(map[string]any)
	for u, m := range users {
		if m, ok := m.(string); ok {
			l.Users[u] = m
		}
	}
	return l, nil
}

// slotsAt reads the slots at keys (slotKey's) in one BatchGetItem,
// strongly consistent, by position; an empty slot is left out. A slot's
// event may not be the one a caller expects there (another event won the
// position): callers compare IDs.
func (s *Service) slotsAt(ctx context.Context, keys []store.Key) (map[int64]Event, error) {
	found := map[int64]Event{}
	err := s.Store.GetMany(ctx, keys, func(_ store.Key, decode func(any) error) error {
		var sl slot
		if err := decode(&sl); err != nil {
			return err
		}
		e, err := sl.event()
		found[e.Seq] = e
		return err
	})
	return found, err
}

// Event is an event as stored: the PDU, where it sits and what redacted it.
type Event struct {
	PDU        events.PDU
	Seq        int64
	StateSeq   int64
	RedactedBy string
	// Txn is "<device ID>|<transaction ID>" when a local client sent it.
	Txn string
	// PrevContent is the content of the state it replaced.
	PrevContent json.RawMessage
	// Resolved is set on an event received on a fork at which resolving
	// the forks changed current state other than by the event itself.
	Resolved bool
	// blocks are the slot's own state blocks: the state after an event
	// received on a fork, when it is not the snapshot at StateSeq.
	blocks []string
}

func (sl slot) event() (Event, error) {
	ev, err := events.Parse(sl.Version, sl.EventID, []byte(sl.PDU))
	if err != nil {
		return Event{}, err
	}
	return sl.eventOf(ev)
}

// sharedEvent is event through ctx's shared reads (store.WithShared): a
// sync pages a room's newest slots for its timeline and again for its
// unread counts, and parses each event once.
func (sl slot) sharedEvent(ctx context.Context) (Event, error) {
	ev, err := store.Shared(ctx, store.Key{PK: sl.PK, SK: "memo|" + sl.SK + "|" + sl.EventID}, func() (events.PDU, error) {
		return events.Parse(sl.Version, sl.EventID, []byte(sl.PDU))
	})
	if err != nil {
		return Event{}, err
	}
	return sl.eventOf(ev)
}

// eventOf is the slot's Event, its PDU parsed.
func (sl slot) eventOf(ev events.PDU) (Event, error) {
	seq, err := seqOf(sl.SK)
	if err != nil {
		return Event{}, err
	}
	e := Event{PDU: ev, Seq: seq, StateSeq: sl.StateSeq, RedactedBy: sl.RedactedBy, Txn: sl.Txn, Resolved: sl.Resolved, blocks: sl.Blocks}
	if sl.PrevContent != "" {
		e.PrevContent = json.RawMessage(sl.PrevContent)
	}
	return e, nil
}

// ErrUnknownEvent is an event this server does not hold in that room.
var ErrUnknownEvent = errors.New("unknown event")

// Event reads the event eventID of roomID ("" for any room): two reads, the
// pointer then the slot.
func (s *Service) Event(ctx context.Context, roomID, eventID string) (Event, error) {
	var p pointer
	if err := s.Store.Get(ctx, store.Key{PK: pointerPK(eventID), SK: "event"}, &p); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return Event{}, fmt.Errorf("%w %s", ErrUnknownEvent, eventID)
		}
		return Event{}, err
	}
	if roomID != "" && p.RoomID != roomID {
		return Event{}, fmt.Errorf("%w %s in %s", ErrUnknownEvent, eventID, roomID)
	}
	if p.Seq == 0 {
		// A received event kept out of the timeline (receive.go).
		return Event{}, fmt.Errorf("%w %s", ErrUnknownEvent, eventID)
	}
	pk, sk := slotKey(p.RoomID, p.Seq)
	var sl slot
	if err := s.Store.Get(ctx, store.Key{PK: pk, SK: sk}, &sl); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return Event{}, fmt.Errorf("%w %s", ErrUnknownEvent, eventID)
		}
		return Event{}, err
	}
	// A pointer written before its slot was claimed by another event.
	if sl.EventID != eventID {
		return Event{}, fmt.Errorf("%w %s", ErrUnknownEvent, eventID)
	}
	return sl.event()
}

// Info is what the directory and clients learn of a room without its state.
type Info struct {
	RoomID, Version, Creator, Name, Topic, Avatar, Alias, JoinRule, RoomType, Tombstoned string
	Guests, Public                                                                       bool
	Joined                                                                               int64
	// Gaps: the timeline has open gaps, whose positions backfilled events
	// may yet take, below newer events (gap.go).
	Gaps bool
}

// ShareInfos begins reading the rooms' summaries for ctx's shared reads
// (WithReadsShared), in BatchGetItems of 100: a sync about to read each of
// many rooms reads them in a call or two instead of one each.
func (s *Service) ShareInfos(ctx context.Context, roomIDs []string) {
	keys := make([]store.Key, 0, len(roomIDs))
	for _, roomID := range roomIDs {
		keys = append(keys, store.Key{PK: roomPK(roomID), SK: infoSK})
	}
	store.Prefetch[info](ctx, s.Store, keys)
}

// Info reads the room's summary.
func (s *Service) Info(ctx context.Context, roomID string) (Info, error) {
	var i info
	if err := store.GetShared(ctx, s.Store, store.Key{PK: roomPK(roomID), SK: infoSK}, &i); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return Info{}, fmt.Errorf("%w %s", ErrUnknownRoom, roomID)
		}
		return Info{}, err
	}
	return i.public(roomID), nil
}

func (i info) public(roomID string) Info {
	return Info{
		RoomID: roomID, Version: i.Version, Creator: i.Creator, Name: i.Name, Topic: i.Topic,
		Avatar: i.Avatar, Alias: i.Alias, JoinRule: i.JoinRule, RoomType: i.RoomType,
		Tombstoned: i.Tombstoned, Guests: i.Guests, Public: i.GSI1PK != "", Joined: i.Joined,
		Gaps: len(i.Gaps) > 0,
	}
}

// CurrentState reads the whole current state of the room: one query of its
// state items.
func (s *Service) CurrentState(ctx context.Context, roomID string) ([]events.PDU, error) {
	state, err := store.Shared(ctx, currentStateKey(roomID), func() ([]events.PDU, error) {
		return s.currentWithPrefix(ctx, roomID, statePrefix)
	})
	// Each caller gets a slice of its own to filter or sort.
	return slices.Clone(state), err
}

// Members reads the current member events of the room.
func (s *Service) Members(ctx context.Context, roomID string) ([]events.PDU, error) {
	return s.currentWithPrefix(ctx, roomID, stateSK(events.Member, ""))
}

func (s *Service) currentWithPrefix(ctx context.Context, roomID, prefix string) ([]events.PDU, error) {
	var out []events.PDU
	cursor := ""
	for {
		var page []current
		next, err := s.Store.QueryPage(ctx, store.Query{PK: roomPK(roomID), Prefix: prefix, Cursor: cursor}, &page)
		if err != nil {
			return nil, fmt.Errorf("read state of %s: %w", roomID, err)
		}
		for _, c := range page {
			ev, err := events.Parse(c.Version, c.EventID, []byte(c.PDU))
			if err != nil {
				return nil, err
			}
			out = append(out, ev)
		}
		if next == "" {
			return out, nil
		}
		cursor = next
	}
}

// StateEvent reads one piece of current state; ErrUnknownEvent when unset.
func (s *Service) StateEvent(ctx context.Context, roomID, evType, stateKey string) (events.PDU, error) {
	var c current
	if err := s.Store.Get(ctx, store.Key{PK: roomPK(roomID), SK: stateSK(evType, stateKey)}, &c); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("%w: no %s state with key %q in %s", ErrUnknownEvent, evType, stateKey, roomID)
		}
		return nil, err
	}
	return events.Parse(c.Version, c.EventID, []byte(c.PDU))
}

// StateAt reads the state of the room after the event at position seq,
// without replaying the room: the snapshot named by the event's slot (or
// the slot's own blocks, for an event received on a fork), its blocks,
// then the events they list. Most of those are current state, read beside
// the snapshot and blocks: two round trips, not three.
func (s *Service) StateAt(ctx context.Context, roomID string, ev Event) ([]events.PDU, error) {
	var cur []events.PDU
	var curErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		cur, curErr = s.CurrentState(ctx, roomID)
	}()
	ids, err := s.stateIDsAt(ctx, roomID, ev)
	<-done
	if err != nil {
		return nil, err
	}
	if curErr != nil {
		return nil, curErr
	}
	return s.eventsByID(ctx, roomID, cur, ids)
}

// stateIDsAt is the IDs of the events of the state after ev.
func (s *Service) stateIDsAt(ctx context.Context, roomID string, ev Event) (map[string]bool, error) {
	blocks := ev.blocks
	if len(blocks) == 0 {
		var snap snapshot
		if err := s.Store.Get(ctx, store.Key{PK: roomPK(roomID), SK: snapSK(ev.StateSeq)}, &snap); err != nil {
			return nil, fmt.Errorf("read snapshot %d of %s: %w", ev.StateSeq, roomID, err)
		}
		blocks = snap.Blocks
	}
	got, err := s.readBlocks(ctx, roomID, nil, blocks)
	if err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for _, h := range blocks {
		for _, id := range got[h] {
			ids[id] = true
		}
	}
	return ids, nil
}

// eventsByID loads state events: most are still current state, cur; the
// others through their pointers (and slots), outliers among them (a gap's
// state names events held only as such).
func (s *Service) eventsByID(ctx context.Context, roomID string, cur []events.PDU, ids map[string]bool) ([]events.PDU, error) {
	var out []events.PDU
	for _, ev := range cur {
		if ids[ev.EventID()] {
			out = append(out, ev)
			delete(ids, ev.EventID())
		}
	}
	rest := make([]string, 0, len(ids))
	for id := range ids {
		rest = append(rest, id)
	}
	recs, err := s.records(ctx, roomID, rest)
	if err != nil {
		return nil, err
	}
	for _, id := range rest {
		r, ok := recs[id]
		if !ok {
			return nil, fmt.Errorf("%w %s", ErrUnknownEvent, id)
		}
		out = append(out, r.ev)
	}
	return out, nil
}

// Membership is a local user's current membership of a room ("" if none).
func (s *Service) Membership(ctx context.Context, userID, roomID string) (string, error) {
	m, err := s.membership(ctx, userID, roomID)
	if err != nil {
		return "", err
	}
	return m.Membership, nil
}

func (s *Service) membership(ctx context.Context, userID, roomID string) (membership, error) {
	var m membership
	err := store.GetShared(ctx, s.Store, store.Key{PK: userPK(userID), SK: membershipPrefix + roomID}, &m)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return m, err
	}
	return m, nil
}

// JoinedRooms lists the rooms a local user is joined to: one query of the
// user's partition.
func (s *Service) JoinedRooms(ctx context.Context, userID string) ([]string, error) {
	ms, err := s.memberships(ctx, userID)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		if m.Membership == "join" {
			out = append(out, strings.TrimPrefix(m.SK, membershipPrefix))
		}
	}
	return out, nil
}

func (s *Service) memberships(ctx context.Context, userID string) ([]membership, error) {
	var out []membership
	cursor := ""
	for {
		var page []membership
		next, err := s.Store.QueryPage(ctx, store.Query{PK: userPK(userID), Prefix: membershipPrefix, Cursor: cursor}, &page)
		if err != nil {
			return nil, fmt.Errorf("read rooms of %s: %w", userID, err)
		}
		out = append(out, page...)
		if next == "" {
			// A sync reads each room's membership item again with the
			// room (membership): this read serves them.
			for _, m := range out {
				store.Seed(ctx, store.Key{PK: userPK(userID), SK: m.SK}, m)
			}
			return out, nil
		}
		cursor = next
	}
}
