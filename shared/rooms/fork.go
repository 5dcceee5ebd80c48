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

// authBeforeAndNow checks ev against the state before it, then against
// the room's current state (its auth tuples read into e where missing).
// A non-empty reason keeps ev out with status st: Rejected by the state
// before it, SoftFailed by the current one.
func (s *Service) authBeforeAndNow(ctx context.Context, roomID string, e *roomEntry, l *graphLoader, ev events.PDU, before stateres.StateMap) (st Status, reason string, err error) {
	tuples, err := events.AuthStateNeeded(e.head.Version, protoOf(ev))
	if err != nil {
		return Rejected, err.Error(), nil
	}
	beforeAuth, err := l.state(ctx, before, tuples)
	if err != nil {
		return "", "", err
	}
	if e.locals.Partial != nil {
		if beforeAuth, err = l.membersFromAuth(ctx, ev, beforeAuth, tuples); err != nil {
			return "", "", err
		}
	}
	if reason, err := s.checkAuth(ctx, l, ev, beforeAuth); err != nil || reason != "" {
		return Rejected, reason, err
	}
	if err := s.fill(ctx, roomID, e, tuples); err != nil {
		return "", "", err
	}
	now, err := l.currentAuth(ctx, e, ev, tuples)
	if err != nil {
		return "", "", err
	}
	if reason := allowed(ev, now); reason != "" {
		return SoftFailed, "not allowed by the current state: " + reason, nil
	}
	return "", "", nil
}

// receiveFork takes ev, whose prev_events are not the room's forward
// extremities.
func (s *Service) receiveFork(ctx context.Context, roomID string, e *roomEntry, ev events.PDU) (Outcome, func(context.Context) error, error) {
	h := e.head
	prevIDs := ev.PrevEventIDs()
	ext := extremitiesAfter(h, ev)
	// One read of the records of ev, its prev_events and the other
	// extremities, one of their snapshots with the head's.
	recs, err := s.records(ctx, roomID, append(append([]string{ev.EventID()}, prevIDs...), ext[1:]...))
	if err != nil {
		return Outcome{}, nil, err
	}
	r, held := recs[ev.EventID()]
	if held && r.placed() {
		return r.ptr.outcome(), nil, nil
	}
	var missing []string
	var prevs, others []*record
	for _, id := range prevIDs {
		// An outlier's place, and the state after it, are unknown.
		if r, ok := recs[id]; ok && r.placed() {
			prevs = append(prevs, r)
		} else {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 || len(prevs) == 0 {
		return Outcome{}, nil, &MissingEventsError{EventID: ev.EventID(), IDs: missing}
	}
	for _, id := range ext[1:] {
		r, ok := recs[id]
		if !ok {
			return Outcome{}, nil, fmt.Errorf("%w %s (a forward extremity)", ErrUnknownEvent, id)
		}
		others = append(others, r)
	}
	lists, cur, err := s.blockLists(ctx, roomID, append(slices.Clone(prevs), others...), h.StateSeq)
	if err != nil {
		return Outcome{}, nil, err
	}
	if !held && ev.StateKey() == nil && ev.Type() != events.Redaction && allState(cur, lists, append(slices.Clone(prevs), others...)) {
		return s.receiveBeside(ctx, roomID, e, ev, ext)
	}
	l := newGraphLoader(s, roomID)
	l.add(recs)
	l.known[ev.EventID()] = ev // for the resolution of the current state
	states, err := s.mapsOf(ctx, roomID, l.blocks, prevs, lists[:len(prevs)])
	if err != nil {
		return Outcome{}, nil, err
	}
	before, err := stateres.Resolve(ctx, h.Version, states, l)
	if err != nil {
		return Outcome{}, nil, fmt.Errorf("state before %s: %w", ev.EventID(), l.missingAuth(ev, err))
	}
	if st, reason, err := s.authBeforeAndNow(ctx, roomID, e, l, ev, before); err != nil || reason != "" {
		if err != nil {
			return Outcome{}, nil, err
		}
		return s.keepOut(ctx, roomID, ev, h, before, l.blocks, st, reason)
	}
	return s.commitFork(ctx, roomID, e, ev, stateres.After(before, ev), l, fork{ext: ext, others: others, lists: lists[len(prevs):], cur: cur, before: before, outlier: held})
}

// extremitiesAfter are the room's forward extremities once ev, built on
// some of h's or on older events, is appended: ev first, then those of h
// it does not build on.
func extremitiesAfter(h *head, ev events.PDU) []string {
	ext := []string{ev.EventID()}
	for _, id := range h.extremities() {
		if !slices.Contains(ev.PrevEventIDs(), id) {
			ext = append(ext, id)
		}
	}
	return ext
}

// allState reports whether every list names the blocks cur names, and no
// record adds its own event on top (a soft-failed state event): the states
// after them all are the current state.
func allState(cur []string, lists [][]string, recs []*record) bool {
	for i, l := range lists {
		if !slices.Equal(padded(l), padded(cur)) {
			return false
		}
		if r := recs[i]; r.sl == nil && r.ptr.Status == string(SoftFailed) && r.ev.StateKey() != nil {
			return false
		}
	}
	return true
}

func padded(l []string) []string {
	out := make([]string, stateBuckets)
	copy(out, l)
	return out
}

// receiveBeside takes the message ev, on a fork whose state is the current
// state (concurrent messages, the usual fork): as a linear event, but for
// the extremities its slot keeps.
func (s *Service) receiveBeside(ctx context.Context, roomID string, e *roomEntry, ev events.PDU, ext []string) (Outcome, func(context.Context) error, error) {
	h := e.head
	tuples, err := events.AuthStateNeeded(h.Version, protoOf(ev))
	if err != nil {
		return s.reject(ctx, roomID, ev, h, nil, err.Error())
	}
	if err := s.fill(ctx, roomID, e, tuples); err != nil {
		return Outcome{}, nil, err
	}
	l := newGraphLoader(s, roomID)
	for _, pdu := range e.state {
		if pdu != nil {
			l.known[pdu.EventID()] = pdu
		}
	}
	before, err := l.currentAuth(ctx, e, ev, tuples)
	if err != nil {
		return Outcome{}, nil, err
	}
	if reason, err := s.checkAuth(ctx, l, ev, before); err != nil || reason != "" {
		if err != nil {
			return Outcome{}, nil, err
		}
		return s.reject(ctx, roomID, ev, h, nil, reason)
	}
	next, finish, err := s.commitReceivedMessage(ctx, roomID, h, ev, e.locals, ext)
	if err != nil {
		e.reset()
		if errors.Is(err, errMoved) {
			return s.storedOrMoved(ctx, ev)
		}
		return Outcome{}, nil, err
	}
	e.head = next
	return Outcome{Status: Accepted, Seq: next.Seq}, finish, nil
}

// fork is what receiveFork read of the extremities ev leaves beside it.
type fork struct {
	ext    []string
	others []*record
	lists  [][]string
	cur    []string
	// before is the state before the event.
	before stateres.StateMap
	// gap, when not 0, is how many positions to leave free below the
	// event for its missing prev_events (gap.go).
	gap int64
	// outlier is set when the event is held as an outlier, whose pointer
	// its slot's replaces.
	outlier bool
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

// blockLists reads the block hashes of the state after each event of
// recs (a slot's own blocks, or its snapshot's; a pointer's), and those of
// the snapshot at position cur: one BatchGetItem of the snapshots.
func (s *Service) blockLists(ctx context.Context, roomID string, recs []*record, cur int64) ([][]string, []string, error) {
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
	var curBlocks []string
	keys := []store.Key{{PK: roomPK(roomID), SK: snapSK(cur)}}
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
		if seq == cur {
			curBlocks = snap.Blocks
		}
		for _, i := range snaps[seq] {
			lists[i] = snap.Blocks
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read state snapshots of %s: %w", roomID, err)
	}
	return lists, padded(curBlocks), nil
}

// mapsOf reads the states lists name (the states after the events of
// recs): one BatchGetItem of the blocks blockCache does not hold.
func (s *Service) mapsOf(ctx context.Context, roomID string, blockCache map[string]map[string]string, recs []*record, lists [][]string) ([]stateres.StateMap, error) {
	blocks, err := s.readBlocks(ctx, roomID, blockCache, lists...)
	if err != nil {
		return nil, err
	}
	out := make([]stateres.StateMap, len(recs))
	for i, r := range recs {
		m := mapOf(blocks, lists[i])
		if r.sl == nil && r.ptr.Status == string(SoftFailed) {
			// The state after a soft-failed event holds it: it passed the
			// auth rules where it was sent.
			m = stateres.After(m, r.ev)
		}
		out[i] = m
	}
	return out, nil
}

// mapOf is the state the blocks of hashes hold, read into blocks.
func mapOf(blocks map[string]map[string]string, hashes []string) stateres.StateMap {
	m := stateres.StateMap{}
	for _, h := range hashes {
		for k, id := range blocks[h] {
			typ, key, _ := cutTuple(k)
			m[stateres.Key{Type: typ, StateKey: key}] = id
		}
	}
	return m
}

func cutTuple(k string) (string, string, bool) {
	for i := 0; i < len(k); i++ {
		if k[i] == 0 {
			return k[:i], k[i+1:], true
		}
	}
	return k, "", false
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
func (s *Service) commitFork(ctx context.Context, roomID string, e *roomEntry, ev events.PDU, after stateres.StateMap, l *graphLoader, f fork) (Outcome, func(context.Context) error, error) {
	h := e.head
	seq := h.Seq + 1 + f.gap
	ext := f.ext
	newCur := after
	if len(ext) > 1 {
		states, err := s.mapsOf(ctx, roomID, l.blocks, f.others, f.lists)
		if err != nil {
			return Outcome{}, nil, err
		}
		if newCur, err = stateres.Resolve(ctx, h.Version, append(states, after), l); err != nil {
			return Outcome{}, nil, fmt.Errorf("current state of %s: %w", roomID, l.missingAuth(ev, err))
		}
	}
	// The current state before is the head's snapshot: only the buckets
	// whose block differs are read and compared.
	oldHashes := f.cur
	newHashes, newBlks := blocksOf(roomID, newCur)
	b := &batch{s: s, roomID: roomID, seq: seq, loaded: map[string]block{}, members: map[string]*membership{},
		bySlot: map[string]int{}, currentOps: map[string]int{}}
	b.locals = &locals{PK: roomPK(roomID), SK: localsSK, Users: maps.Clone(e.locals.Users), Partial: e.locals.Partial}
	if b.locals.Users == nil {
		b.locals.Users = map[string]string{}
	}
	written := map[string]bool{}
	for _, h := range oldHashes {
		written[h] = true
	}
	putBlocks := func(blks []block) {
		for _, blk := range blks {
			// The blocks of the state before that setChanged read are stored.
			if h := blk.SK[len("blk|"):]; !written[h] && !written[blk.top] && l.blocks[h] == nil && l.blocks[blk.top] == nil {
				written[h] = true
				b.ops = append(b.ops, store.PutOp(blk))
			}
		}
	}
	stateSeq := h.StateSeq
	resolved := false
	if !slices.Equal(newHashes, oldHashes) {
		stateSeq = seq
		b.info = &info{}
		if err := s.Store.Get(ctx, store.Key{PK: roomPK(roomID), SK: infoSK}, b.info); err != nil {
			return Outcome{}, nil, fmt.Errorf("read info of %s: %w", roomID, err)
		}
		var err error
		if resolved, err = b.setChanged(ctx, l, oldHashes, newHashes, newCur, ev.EventID()); err != nil {
			return Outcome{}, nil, err
		}
		putBlocks(newBlks)
		b.ops = append(b.ops, store.PutOp(snapshot{PK: roomPK(roomID), SK: snapSK(seq), Blocks: newHashes}))
	}
	sl := s.newSlot(roomID, seq, ev, stateSeq)
	sl.Resolved = resolved
	if len(ext) > 1 {
		sl.Ext, sl.Depth = ext, max(h.depth(), ev.Depth())
	}
	if afterHashes, blks := blocksOf(roomID, after); !slices.Equal(afterHashes, newHashes) {
		sl.Blocks = afterHashes
		putBlocks(blks)
	}
	b.ops = append(b.ops, pointerOp(newPointer(roomID, seq, ev), f.outlier))
	if rel := relationOf(roomID, seq, ev); rel != nil {
		b.ops = append(b.ops, store.PutOp(*rel))
	}
	b.slots = []slot{sl}
	if ev.Type() == events.Redaction {
		if err := s.fill(ctx, roomID, e, []events.StateKeyTuple{{Type: events.Create}, {Type: events.PowerLevels}}); err != nil {
			return Outcome{}, nil, err
		}
		t, err := s.appliedTo(ctx, roomID, ev, e.state)
		if err != nil {
			return Outcome{}, nil, err
		}
		if t != nil {
			if b.info == nil && t.isState() {
				// A redacted topic is no topic.
				b.info = &info{}
				if err := s.Store.Get(ctx, store.Key{PK: roomPK(roomID), SK: infoSK}, b.info); err != nil {
					return Outcome{}, nil, fmt.Errorf("read info of %s: %w", roomID, err)
				}
			}
			b.target = t
			if err := b.redact(ctx, ev, nil); err != nil {
				return Outcome{}, nil, err
			}
		}
	}
	if err := b.recordStateAt(ctx, l, f.before, after, newCur, oldHashes, newHashes, e.locals.Users); err != nil {
		return Outcome{}, nil, err
	}
	if f.gap > 0 {
		if err := b.openGap(ctx, sl, h.Seq); err != nil {
			return Outcome{}, nil, err
		}
	}
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
		return s.notify(ctx, []Appended{{RoomID: roomID, Seq: seq, Event: ev, To: to, Servers: b.locals.Partial}})
	}
	return Outcome{Status: Accepted, Seq: seq}, finish, nil
}

// setChanged writes the current state items that differ between the
// snapshot of oldHashes and next (whose blocks are newHashes), with what
// the room info and local members' items keep of them. Only the old
// blocks of the buckets that differ are read. It reports whether anything
// changed other than the event evID becoming current.
func (b *batch) setChanged(ctx context.Context, l *graphLoader, oldHashes, newHashes []string, next stateres.StateMap, evID string) (bool, error) {
	var differ []string
	for i := range oldHashes {
		if oldHashes[i] != newHashes[i] && oldHashes[i] != "" {
			differ = append(differ, oldHashes[i])
		}
	}
	blocks, err := b.s.readBlocks(ctx, b.roomID, l.blocks, differ)
	if err != nil {
		return false, err
	}
	old := mapOf(blocks, differ)
	var changed []events.StateKeyTuple
	var ids, oldMembers []string
	for k, id := range next {
		if oldHashes[bucketOf(k.Type+"\x00"+k.StateKey)] == newHashes[bucketOf(k.Type+"\x00"+k.StateKey)] {
			continue
		}
		if old[k] != id {
			changed = append(changed, k)
			ids = append(ids, id)
			if o, ok := old[k]; ok && k.Type == events.Member {
				oldMembers = append(oldMembers, o)
			}
		}
	}
	got, err := l.Events(ctx, append(ids, oldMembers...))
	if err != nil {
		return false, err
	}
	// The member events replaced, for the joined count.
	oldState := map[events.StateKeyTuple]events.PDU{}
	for _, id := range oldMembers {
		if ev, ok := got[id]; ok {
			oldState[events.StateKeyTuple{Type: ev.Type(), StateKey: *ev.StateKey()}] = ev
		}
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
			return false, fmt.Errorf("%w %s (resolved state)", ErrUnknownEvent, next[k])
		}
		if _, err := b.setCurrent(ctx, ev, oldState); err != nil {
			return false, err
		}
	}
	other := false
	for _, k := range changed {
		other = other || next[k] != evID
	}
	for k := range old {
		if _, ok := next[k]; !ok {
			other = true
			b.ops = append(b.ops, store.DeleteOp(store.Key{PK: roomPK(b.roomID), SK: stateSK(k.Type, k.StateKey)}))
		}
	}
	return other, nil
}
