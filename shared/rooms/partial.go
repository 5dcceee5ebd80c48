package rooms

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/stateres"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Rooms joined with partial state (server-server API, send_join's
// omit_members; Synapse's "faster joins"). The resident server leaves
// most member events out of its send_join answer, so that the join of a
// room of any size fits in API Gateway's 30 s. The room is taken in with
// the state it gave (TakeJoined with the servers in the room) and is
// usable at once; its locals item lists those servers (locals.Partial)
// until CompletePartialState has loaded the rest, which a queue worker
// fetches (/state at the join) in the background.
//
// Meanwhile:
//   - a received event is checked against the state before it and the
//     current state where they hold what the auth rules need, and, for a
//     member event they lack (a member whose event was left out), against
//     the event's own auth events (membersFromAuth), as Synapse does;
//   - the sender sends to the servers in the room besides those the
//     member state shows (Appended.Servers);
//   - member lists show the members known so far (the caller may wait
//     for the rest: PartialServers).
//
// CompletePartialState adds the missing state to the state before the
// join, to every snapshot taken since and to the current state, where a
// later event has not set the same state key, then clears the mark.

// PartialServers lists the servers in roomID while it is held with
// partial state; nil once its state is whole (or it is not held). One
// GetItem.
func (s *Service) PartialServers(ctx context.Context, roomID string) ([]string, error) {
	l, err := s.readLocals(ctx, roomID)
	if err != nil {
		return nil, err
	}
	return l.Partial, nil
}

// membersFromAuth completes state, the events an event's checks take
// from the state before it or from the current state (the tuples the auth
// rules need), in a room held with partial state: a member tuple that
// state lacks is taken from the event's own auth events, which the check
// against them loaded into l. A member event left out of the partial
// state is then not taken for "not a member".
func (l *graphLoader) membersFromAuth(ctx context.Context, ev events.PDU, state []events.PDU, tuples []events.StateKeyTuple) ([]events.PDU, error) {
	have := map[events.StateKeyTuple]bool{}
	for _, x := range state {
		have[events.StateKeyTuple{Type: x.Type(), StateKey: *x.StateKey()}] = true
	}
	lacking := map[events.StateKeyTuple]bool{}
	for _, t := range tuples {
		if t.Type == events.Member && !have[t] {
			lacking[t] = true
		}
	}
	if len(lacking) == 0 {
		return state, nil
	}
	got, err := l.Events(ctx, ev.AuthEventIDs())
	if err != nil {
		return nil, err
	}
	out := slices.Clone(state)
	for _, id := range ev.AuthEventIDs() {
		a, ok := got[id]
		if !ok || l.Rejected(id) || a.StateKey() == nil {
			continue
		}
		t := events.StateKeyTuple{Type: a.Type(), StateKey: *a.StateKey()}
		if lacking[t] {
			out = append(out, a)
			delete(lacking, t)
		}
	}
	return out, nil
}

// currentAuth is the events of the cached current state under tuples,
// completed from ev's auth events (membersFromAuth) in a room held with
// partial state.
func (l *graphLoader) currentAuth(ctx context.Context, e *roomEntry, ev events.PDU, tuples []events.StateKeyTuple) ([]events.PDU, error) {
	state := authOnly(e.state, tuples)
	if e.locals.Partial == nil {
		return state, nil
	}
	return l.membersFromAuth(ctx, ev, state, tuples)
}

// partialWrites bounds the conditional writes of the current state that
// CompletePartialState makes at once.
const partialWrites = 64

// loadLease is how long a load of a room's state holds the room against
// another (the queue delivering its message again while it runs): past
// it, a load cut short (a Lambda timeout) is taken over. The loader
// function's timeout is 15 minutes.
const loadLease = 16 * time.Minute

// ErrLoading is a load of the room's state that another worker holds:
// the message is to be tried again later.
var ErrLoading = errors.New("another worker is loading the state of the room")

// loadClaim holds a room's state load (CompletePartialState).
type loadClaim struct {
	PK      string `dynamodbav:"pk"` // room|<room ID>
	SK      string `dynamodbav:"sk"` // partial-load
	Expires int64  `dynamodbav:"expires_at"`
}

// CompletePartialState loads the whole state of roomID, held with partial
// state since a local user's join (joinID): full is the state before the
// join, as another server gave it (/state at the join), checked by the
// caller (signatures, hashes, each event allowed by its auth events).
// The events of full whose state key the state before the join lacks
// are stored as outliers and added to the state before the join and to
// every snapshot since where the key is unset, and to the current state
// where no later event set it. It returns the events added to the
// current state. A room whose state is whole already is left alone: a
// second run (a queue message delivered twice) does nothing. One load of
// a room runs at a time (a lease: ErrLoading); a load cut short is done
// again from the start, each step finding what it wrote.
func (s *Service) CompletePartialState(ctx context.Context, roomID, joinID string, full []events.PDU) ([]events.PDU, error) {
	loc, err := s.readLocals(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if loc.Partial == nil {
		return nil, nil
	}
	lease := loadClaim{PK: roomPK(roomID), SK: "partial-load", Expires: s.now().Add(loadLease).Unix()}
	switch err := s.Store.Create(ctx, lease); {
	case errors.Is(err, store.ErrExists):
		return nil, fmt.Errorf("complete the state of %s: %w", roomID, ErrLoading)
	case err != nil:
		return nil, err
	}
	defer func() {
		// A lease left by a failed delete ends by itself.
		_ = s.Store.Delete(context.WithoutCancel(ctx), store.Key{PK: lease.PK, SK: lease.SK})
	}()
	return s.completePartial(ctx, roomID, joinID, full)
}

// completePartial is CompletePartialState under the room's lease.
func (s *Service) completePartial(ctx context.Context, roomID, joinID string, full []events.PDU) ([]events.PDU, error) {
	ptrs, err := s.pointers(ctx, []string{joinID})
	if err != nil {
		return nil, err
	}
	jp, ok := ptrs[joinID]
	if !ok || jp.RoomID != roomID || jp.Seq == 0 {
		return nil, fmt.Errorf("complete the state of %s: the join %s is not in its timeline", roomID, joinID)
	}
	preSeq := jp.Seq - 1
	before, err := s.snapshotMap(ctx, roomID, preSeq)
	if err != nil {
		return nil, err
	}
	missing, err := s.missingState(ctx, roomID, joinID, before, full)
	if err != nil {
		return nil, err
	}
	if err := s.addToSnapshots(ctx, roomID, preSeq, missing); err != nil {
		return nil, err
	}
	added, err := s.addToCurrent(ctx, roomID, preSeq, missing)
	if err != nil {
		return nil, err
	}
	if s.halted("partial-count") {
		return nil, errHalted
	}
	joined := int64(0)
	for _, ev := range added {
		if m, _ := ev.Membership(); ev.Type() == events.Member && m == "join" {
			joined++
		}
	}
	if joined > 0 {
		if err := s.updateInfo(ctx, roomID, func(i *info) { i.Joined += joined }); err != nil {
			return nil, err
		}
	}
	if err := s.Store.ClearAttr(ctx, store.Key{PK: roomPK(roomID), SK: localsSK}, "partial"); err != nil {
		return nil, fmt.Errorf("complete the state of %s: %w", roomID, err)
	}
	// This process's cached state may hold the absence of what was added.
	e := s.cache.entry(roomID)
	e.mu.Lock()
	e.reset()
	e.mu.Unlock()
	return added, nil
}

// snapshotMap reads the state of the snapshot at seq.
func (s *Service) snapshotMap(ctx context.Context, roomID string, seq int64) (stateres.StateMap, error) {
	var snap snapshot
	if err := s.Store.Get(ctx, store.Key{PK: roomPK(roomID), SK: snapSK(seq)}, &snap); err != nil {
		return nil, fmt.Errorf("read snapshot %d of %s: %w", seq, roomID, err)
	}
	return s.blocksMap(ctx, roomID, snap.Blocks)
}

// blocksMap reads the state the block hashes of a snapshot name.
func (s *Service) blocksMap(ctx context.Context, roomID string, hashes []string) (stateres.StateMap, error) {
	got, err := s.readBlocks(ctx, roomID, nil, hashes)
	if err != nil {
		return nil, err
	}
	return mapOf(got, hashes), nil
}

// missingState is the state of full that the state before the join,
// before, lacks: the events whose key before does not set, and those it
// sets to them as outliers (a load cut short added them), not taken in
// with the join. The events the room does not hold are stored as
// outliers, so that the snapshots naming them can be read: one
// BatchGetItem of their pointers per 100, one BatchWriteItem per 25.
func (s *Service) missingState(ctx context.Context, roomID, joinID string, before stateres.StateMap, full []events.PDU) (map[stateres.Key]events.PDU, error) {
	cand := map[stateres.Key]events.PDU{}
	var ids []string
	for _, ev := range full {
		if ev.StateKey() == nil || events.RoomID(ev) != roomID || ev.EventID() == joinID {
			continue
		}
		k := stateres.Key{Type: ev.Type(), StateKey: *ev.StateKey()}
		if id, ok := before[k]; !ok || id == ev.EventID() {
			cand[k] = ev
			ids = append(ids, ev.EventID())
		}
	}
	held, err := s.pointers(ctx, ids)
	if err != nil {
		return nil, err
	}
	missing := map[stateres.Key]events.PDU{}
	var items []any
	for k, ev := range cand {
		p, ok := held[ev.EventID()]
		if _, set := before[k]; set && (!ok || p.RoomID != roomID || p.Status != outlier) {
			continue // taken in with the join
		}
		missing[k] = ev
		if !ok {
			items = append(items, pointer{PK: pointerPK(ev.EventID()), SK: "event", RoomID: roomID, Status: outlier, PDU: string(ev.JSON()), Version: string(ev.Version())})
		}
	}
	if err := s.Store.PutMany(ctx, items); err != nil {
		return nil, fmt.Errorf("store the state of %s: %w", roomID, err)
	}
	return missing, nil
}

// addToSnapshots adds missing to the snapshots of roomID from position
// from on, each where its key is unset, until a pass finds no snapshot
// it has not done: an append meanwhile may take one from a snapshot read
// before it was done.
func (s *Service) addToSnapshots(ctx context.Context, roomID string, from int64, missing map[stateres.Key]events.PDU) error {
	written := map[string]bool{}
	done := map[string]bool{}
	for {
		var snaps []snapshot
		q := store.Query{PK: roomPK(roomID), Prefix: "snap|", From: snapSK(from)}
		for {
			var page []snapshot
			next, err := s.Store.QueryPage(ctx, q, &page)
			if err != nil {
				return fmt.Errorf("read snapshots of %s: %w", roomID, err)
			}
			for _, sn := range page {
				if !done[sn.SK] {
					snaps = append(snaps, sn)
				}
			}
			if next == "" {
				break
			}
			q.Cursor = next
		}
		if len(snaps) == 0 {
			return nil
		}
		for _, sn := range snaps {
			m, err := s.blocksMap(ctx, roomID, sn.Blocks)
			if err != nil {
				return err
			}
			for k, ev := range missing {
				if _, ok := m[k]; !ok {
					m[k] = ev.EventID()
				}
			}
			hashes, blks := blocksOf(roomID, m)
			var items []any
			for _, b := range blks {
				if !written[b.SK] {
					written[b.SK] = true
					items = append(items, b)
				}
			}
			if err := s.Store.PutMany(ctx, items); err != nil {
				return fmt.Errorf("write state blocks of %s: %w", roomID, err)
			}
			sn.Blocks = hashes
			if err := s.Store.Put(ctx, sn); err != nil {
				return fmt.Errorf("write snapshot %s of %s: %w", sn.SK, roomID, err)
			}
			done[sn.SK] = true
		}
	}
}

// addToCurrent writes the events of missing into the current state of
// roomID, each where no event has set its key since (a conditional
// PutItem each, partialWrites at a time), at position seq, the state
// before the join. It returns those written, and those a load cut short
// wrote (found in place: a second conditional PutItem on the event ID).
func (s *Service) addToCurrent(ctx context.Context, roomID string, seq int64, missing map[stateres.Key]events.PDU) ([]events.PDU, error) {
	evs := make([]events.PDU, 0, len(missing))
	for _, ev := range missing {
		evs = append(evs, ev)
	}
	wrote := make([]bool, len(evs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(partialWrites)
	for i, ev := range evs {
		g.Go(func() error {
			c := current{PK: roomPK(roomID), SK: stateSK(ev.Type(), *ev.StateKey()), EventID: ev.EventID(), Seq: seq, PDU: string(ev.JSON()), Version: string(ev.Version())}
			if ev.Type() == events.Member {
				c.Membership, _ = ev.Membership()
			}
			err := s.Store.Create(gctx, c)
			if errors.Is(err, store.ErrExists) {
				err = s.Store.PutIf(gctx, c, "id", c.EventID)
				if errors.Is(err, store.ErrConflict) {
					return nil // a later event set the key
				}
			}
			if err != nil {
				return fmt.Errorf("write the current state of %s: %w", roomID, err)
			}
			wrote[i] = true
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var out []events.PDU
	for i, ev := range evs {
		if wrote[i] {
			out = append(out, ev)
		}
	}
	return out, nil
}
