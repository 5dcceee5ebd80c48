package rooms

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/stateres"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Received events that fork the room or merge its forks: the state before
// one is resolved from the states after its prev_events, and the current
// state from the states after every forward extremity.

// receiveFork takes ev, whose prev_events are not the room's forward
// extremities.
func (s *Service) receiveFork(ctx context.Context, roomID string, e *roomEntry, ev events.PDU) (Outcome, func(context.Context) error, error) {
	h := e.head
	prevIDs := ev.PrevEventIDs()
	recs, err := s.records(ctx, roomID, append([]string{ev.EventID()}, prevIDs...))
	if err != nil {
		return Outcome{}, nil, err
	}
	if r, ok := recs[ev.EventID()]; ok {
		return r.ptr.outcome(), nil, nil
	}
	var missing []string
	var prevs []*record
	for _, id := range prevIDs {
		if r, ok := recs[id]; ok {
			prevs = append(prevs, r)
		} else {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 || len(prevs) == 0 {
		return Outcome{}, nil, &MissingEventsError{EventID: ev.EventID(), IDs: missing}
	}
	l := newGraphLoader(s, roomID)
	l.add(recs)
	l.known[ev.EventID()] = ev // for the resolution of the current state
	states, err := s.statesAfter(ctx, roomID, prevs)
	if err != nil {
		return Outcome{}, nil, err
	}
	before, err := stateres.Resolve(ctx, h.Version, states, l)
	if err != nil {
		return Outcome{}, nil, fmt.Errorf("state before %s: %w", ev.EventID(), err)
	}
	tuples, err := events.AuthStateNeeded(h.Version, protoOf(ev))
	if err != nil {
		return s.keepOut(ctx, roomID, ev, h, before, Rejected, err.Error())
	}
	beforeAuth, err := l.state(ctx, before, tuples)
	if err != nil {
		return Outcome{}, nil, err
	}
	reason, err := s.checkAuth(ctx, l, ev, beforeAuth)
	if err != nil {
		return Outcome{}, nil, err
	}
	if reason != "" {
		return s.keepOut(ctx, roomID, ev, h, before, Rejected, reason)
	}
	cur, err := s.stateFor(ctx, roomID, nil, tuples)
	if err != nil {
		return Outcome{}, nil, err
	}
	if reason := allowed(ev, authOnly(cur, tuples)); reason != "" {
		return s.keepOut(ctx, roomID, ev, h, before, SoftFailed, "not allowed by the current state: "+reason)
	}
	return s.commitFork(ctx, roomID, e, ev, stateres.After(before, ev), l)
}

// state loads the events of m under tuples.
func (l *graphLoader) state(ctx context.Context, m stateres.StateMap, tuples []events.StateKeyTuple) ([]events.PDU, error) {
	var ids []string
	for _, t := range tuples {
		if id, ok := m[t]; ok {
			ids = append(ids, id)
		}
	}
	got, err := l.Events(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make([]events.PDU, 0, len(ids))
	for _, id := range ids {
		ev, ok := got[id]
		if !ok {
			return nil, fmt.Errorf("%w %s (in the state)", ErrUnknownEvent, id)
		}
		out = append(out, ev)
	}
	return out, nil
}

// statesAfter reads the state after each event of recs: the blocks its
// record names (a slot's own, or its snapshot's), one BatchGetItem of the
// snapshots and one of the blocks.
func (s *Service) statesAfter(ctx context.Context, roomID string, recs []*record) ([]stateres.StateMap, error) {
	lists := make([][]string, len(recs))
	snaps := map[int64][]int{} // snapshot position -> indexes in recs
	for i, r := range recs {
		switch {
		case r.sl == nil:
			lists[i] = r.ptr.Blocks
		case len(r.sl.Blocks) > 0:
			lists[i] = r.sl.Blocks
		default:
			snaps[r.sl.StateSeq] = append(snaps[r.sl.StateSeq], i)
		}
	}
	var keys []store.Key
	for seq := range snaps {
		keys = append(keys, store.Key{PK: roomPK(roomID), SK: snapSK(seq)})
	}
	err := s.Store.GetMany(ctx, keys, func(k store.Key, decode func(any) error) error {
		var snap snapshot
		if err := decode(&snap); err != nil {
			return err
		}
		seq, err := seqOf(k.SK[len("snap|"):])
		if err != nil {
			return err
		}
		for _, i := range snaps[seq] {
			lists[i] = snap.Blocks
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read state snapshots of %s: %w", roomID, err)
	}
	blocks, err := s.readBlocks(ctx, roomID, lists...)
	if err != nil {
		return nil, err
	}
	out := make([]stateres.StateMap, len(recs))
	for i, r := range recs {
		m := stateres.StateMap{}
		for _, h := range lists[i] {
			for k, id := range blocks[h] {
				typ, key, _ := cutTuple(k)
				m[stateres.Key{Type: typ, StateKey: key}] = id
			}
		}
		if r.sl == nil && r.ptr.Status == string(SoftFailed) {
			// The state after a soft-failed event holds it: it passed the
			// auth rules where it was sent.
			m = stateres.After(m, r.ev)
		}
		out[i] = m
	}
	return out, nil
}

func cutTuple(k string) (string, string, bool) {
	for i := 0; i < len(k); i++ {
		if k[i] == 0 {
			return k[:i], k[i+1:], true
		}
	}
	return k, "", false
}

// readBlocks reads the blocks the lists name, each once.
func (s *Service) readBlocks(ctx context.Context, roomID string, lists ...[]string) (map[string]map[string]string, error) {
	out := map[string]map[string]string{}
	var keys []store.Key
	for _, l := range lists {
		for _, h := range l {
			if h != "" {
				keys = append(keys, store.Key{PK: roomPK(roomID), SK: "blk|" + h})
			}
		}
	}
	err := s.Store.GetMany(ctx, keys, func(k store.Key, decode func(any) error) error {
		var b block
		if err := decode(&b); err != nil {
			return err
		}
		out[k.SK[len("blk|"):]] = b.Entries
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read state blocks of %s: %w", roomID, err)
	}
	return out, nil
}

// maxForkActions bounds the transaction of a forked event, which DynamoDB
// caps at 100 actions: a resolution that changes more of the current state
// at once is refused for now.
const maxForkActions = 100

// commitFork appends the accepted event ev, whose state after is after,
// at the next slot: the forward extremities become those of the head less
// ev's prev_events, plus ev; the current state becomes the resolution of
// the states after them, and what changed of it (current state items, a
// snapshot and its new blocks, the room info, local members' items) is
// written in one transaction with the slot and the pointer (a create).
func (s *Service) commitFork(ctx context.Context, roomID string, e *roomEntry, ev events.PDU, after stateres.StateMap, l *graphLoader) (Outcome, func(context.Context) error, error) {
	h := e.head
	seq := h.Seq + 1
	ext := []string{ev.EventID()}
	for _, id := range h.extremities() {
		if !slices.Contains(ev.PrevEventIDs(), id) {
			ext = append(ext, id)
		}
	}
	newCur := after
	if len(ext) > 1 {
		recs, err := s.records(ctx, roomID, ext[1:])
		if err != nil {
			return Outcome{}, nil, err
		}
		l.add(recs)
		others := make([]*record, 0, len(ext)-1)
		for _, id := range ext[1:] {
			r, ok := recs[id]
			if !ok {
				return Outcome{}, nil, fmt.Errorf("%w %s (a forward extremity)", ErrUnknownEvent, id)
			}
			others = append(others, r)
		}
		states, err := s.statesAfter(ctx, roomID, others)
		if err != nil {
			return Outcome{}, nil, err
		}
		if newCur, err = stateres.Resolve(ctx, h.Version, append(states, after), l); err != nil {
			return Outcome{}, nil, fmt.Errorf("current state of %s: %w", roomID, err)
		}
	}
	curEvs, err := s.CurrentState(ctx, roomID)
	if err != nil {
		return Outcome{}, nil, err
	}
	oldState := map[events.StateKeyTuple]events.PDU{}
	oldMap := stateres.StateMap{}
	for _, c := range curEvs {
		t := events.StateKeyTuple{Type: c.Type(), StateKey: *c.StateKey()}
		oldState[t], oldMap[t] = c, c.EventID()
	}
	b := &batch{s: s, roomID: roomID, seq: seq, loaded: map[string]map[string]string{}, members: map[string]*membership{},
		bySlot: map[string]int{}, currentOps: map[string]int{}}
	b.locals = &locals{PK: roomPK(roomID), SK: localsSK, Users: maps.Clone(e.locals.Users)}
	if b.locals.Users == nil {
		b.locals.Users = map[string]string{}
	}
	oldHashes, _ := blocksOf(roomID, oldMap)
	written := map[string]bool{}
	for _, h := range oldHashes {
		written[h] = true
	}
	putBlocks := func(blks []block) {
		for _, blk := range blks {
			if h := blk.SK[len("blk|"):]; !written[h] {
				written[h] = true
				b.ops = append(b.ops, store.PutOp(blk))
			}
		}
	}
	stateSeq := h.StateSeq
	if !maps.Equal(newCur, oldMap) {
		stateSeq = seq
		b.info = &info{}
		if err := s.Store.Get(ctx, store.Key{PK: roomPK(roomID), SK: infoSK}, b.info); err != nil {
			return Outcome{}, nil, fmt.Errorf("read info of %s: %w", roomID, err)
		}
		if err := b.setChanged(ctx, l, oldState, oldMap, newCur); err != nil {
			return Outcome{}, nil, err
		}
		hashes, blks := blocksOf(roomID, newCur)
		putBlocks(blks)
		b.ops = append(b.ops, store.PutOp(snapshot{PK: roomPK(roomID), SK: snapSK(seq), Blocks: hashes}))
	}
	sl := s.newSlot(roomID, seq, ev, stateSeq)
	if len(ext) > 1 {
		sl.Ext, sl.Depth = ext, max(h.depth(), ev.Depth())
	}
	if !maps.Equal(after, newCur) {
		var blks []block
		sl.Blocks, blks = blocksOf(roomID, after)
		putBlocks(blks)
	}
	b.ops = append(b.ops, store.CreateOp(newPointer(roomID, seq, ev)))
	if rel := relationOf(roomID, seq, ev); rel != nil {
		b.ops = append(b.ops, store.PutOp(*rel))
	}
	if ev.Type() == events.Redaction {
		// Only the mark on a message: a redaction on a fork of a state
		// event still current is not applied to the current state yet.
		t, err := s.redactionTarget(ctx, roomID, ev.Redacts())
		if err != nil {
			return Outcome{}, nil, err
		}
		if t != nil && t.RedactedBy == "" && !t.isState() {
			marked := *t
			marked.RedactedBy = ev.EventID()
			b.ops = append(b.ops, store.PutIfOp(marked, "id", marked.EventID))
		}
	}
	b.slots = []slot{sl}
	b.finish(nil, nil)
	if len(b.ops) > maxForkActions {
		return Outcome{}, nil, fmt.Errorf("event %s changes too much state at once (%d writes)", ev.EventID(), len(b.ops))
	}
	to := b.recipients(ev)
	if err := s.Store.Transact(ctx, b.ops...); err != nil {
		e.reset()
		if errors.Is(err, store.ErrConflict) {
			return s.storedOrMoved(ctx, ev)
		}
		return Outcome{}, nil, err
	}
	// The cached state may hold what the resolution replaced.
	e.head, e.state = headAt(sl, seq, ev), map[events.StateKeyTuple]events.PDU{}
	e.locals = b.locals
	finish := func(ctx context.Context) error {
		return s.notify(ctx, []Appended{{RoomID: roomID, Seq: seq, Event: ev, To: to}})
	}
	return Outcome{Status: Accepted, Seq: seq}, finish, nil
}

// setChanged writes the current state items that differ between old and
// next, with what the room info and local members' items keep of them.
func (b *batch) setChanged(ctx context.Context, l *graphLoader, oldState map[events.StateKeyTuple]events.PDU, old, next stateres.StateMap) error {
	var changed []events.StateKeyTuple
	var ids []string
	for k, id := range next {
		if old[k] != id {
			changed = append(changed, k)
			ids = append(ids, id)
		}
	}
	got, err := l.Events(ctx, ids)
	if err != nil {
		return err
	}
	// Create first, so that the summary starts from it; then by key, so
	// that the writes do not depend on map order.
	sort.Slice(changed, func(i, j int) bool {
		a, c := changed[i], changed[j]
		if (a.Type == events.Create) != (c.Type == events.Create) {
			return a.Type == events.Create
		}
		return a.Type+"\x00"+a.StateKey < c.Type+"\x00"+c.StateKey
	})
	for _, k := range changed {
		ev, ok := got[next[k]]
		if !ok {
			return fmt.Errorf("%w %s (resolved state)", ErrUnknownEvent, next[k])
		}
		if _, err := b.setCurrent(ctx, ev, oldState); err != nil {
			return err
		}
	}
	for k := range old {
		if _, ok := next[k]; !ok {
			b.ops = append(b.ops, store.DeleteOp(store.Key{PK: roomPK(b.roomID), SK: stateSK(k.Type, k.StateKey)}))
		}
	}
	return nil
}
