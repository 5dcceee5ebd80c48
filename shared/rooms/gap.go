package rooms

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/stateres"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Gaps in the timeline (docs/storage.md, "Backfilled and missing events").
// An event received from another server whose prev_events this server
// could not all fetch (get_missing_events answers at most its limit) is
// taken with the state before it as that server gave it
// (ReceiveWithState). It is placed gapReserve positions above the head,
// leaving the positions between free for the events it lacks: a client
// paging back through /messages past it asks the servers in the room for
// them (/backfill, the Backfiller) and they take those positions, the
// newest just below it, in graph order. Nothing is renumbered, and /sync
// never delivers them as news: an incremental sync reads only past its
// token, and every token given out since the event arrived is at or above
// it.
//
// The room info lists the open gaps ("<top>:<bottom>": the event at top
// lacks prev_events, which take the positions above bottom and below
// top), so that a /messages page knows, from the item it reads anyway,
// whether it went past one. The first position of a gap, bottom+1, is
// taken at once by a slot that holds a copy of the event above the gap
// (slot.Hold), which no reader shows: an instance appending after a stale
// head loses the race there, as it would at the event itself.

// gapReserve is how many positions a gap leaves free: the most events one
// gap takes. Positions run to 10^12, so a room has room for some 10^5
// gaps of 10^6 events.
const gapReserve = 1_000_000

// gapChunk is how many events of a gap one transaction places, with the
// room info, within DynamoDB's 100 actions (a slot, a pointer and at most
// a relation each).
const gapChunk = 30

type gap struct{ top, bottom int64 }

func gapsOf(list []string) []gap {
	var out []gap
	for _, e := range list {
		t, b, _ := strings.Cut(e, ":")
		top, err1 := strconv.ParseInt(t, 10, 64)
		bottom, err2 := strconv.ParseInt(b, 10, 64)
		if err1 == nil && err2 == nil {
			out = append(out, gap{top, bottom})
		}
	}
	return out
}

func (g gap) String() string { return fmt.Sprintf("%d:%d", g.top, g.bottom) }

// ReceiveWithState takes into its room an event made by another server
// whose prev_events this server does not hold and could not fetch, with
// state, the state before it as another server gave it, and authChain,
// that state's auth chain (all checked by the caller, as for Receive).
// The state and auth chain events this server does not hold are stored as
// outliers (their pointers alone). The event is checked against its auth
// events, that state and the current state, as Receive checks a forked
// one, and, accepted, placed gapReserve positions above the head, the
// positions between left for the events it lacks (a gap, filled as
// clients page back through it). An event whose prev_events are all held
// by now is taken as Receive takes it.
func (s *Service) ReceiveWithState(ctx context.Context, ev events.PDU, state, authChain []events.PDU) (Outcome, error) {
	roomID := events.RoomID(ev)
	if ev.Type() == events.Create {
		return Outcome{}, fmt.Errorf("%w: a create event of a room held already (%s)", ErrBadEvent, roomID)
	}
	for attempt := 0; attempt < maxAttempts; attempt++ {
		out, finish, err := s.tryReceiveWithState(ctx, roomID, ev, state, authChain)
		if errors.Is(err, errMoved) {
			if err := raceBackoff.Wait(ctx, attempt); err != nil {
				return Outcome{}, err
			}
			continue
		}
		if err != nil {
			return Outcome{}, fmt.Errorf("receive %s with state: %w", ev.EventID(), err)
		}
		if finish != nil {
			err = finish(ctx)
		}
		return out, err
	}
	return Outcome{}, fmt.Errorf("receive %s with state: gave up after %d attempts", ev.EventID(), maxAttempts)
}

func (s *Service) tryReceiveWithState(ctx context.Context, roomID string, ev events.PDU, state, chain []events.PDU) (Outcome, func(context.Context) error, error) {
	e := s.cache.entry(roomID)
	e.mu.Lock()
	defer e.mu.Unlock()
	// The head is read again: a gap is rare, and goes above the true head.
	e.reset()
	if err := s.loadEntry(ctx, roomID, e); err != nil {
		return Outcome{}, nil, err
	}
	h := e.head
	if v := string(ev.Version()); v != h.Version {
		return Outcome{}, nil, fmt.Errorf("%w: room version %s, the room's is %s", ErrBadEvent, v, h.Version)
	}
	recs, err := s.records(ctx, roomID, append([]string{ev.EventID()}, ev.PrevEventIDs()...))
	if err != nil {
		return Outcome{}, nil, err
	}
	r, held := recs[ev.EventID()]
	if held && r.placed() {
		return r.ptr.outcome(), nil, nil
	}
	heldPrevs := 0
	for _, id := range ev.PrevEventIDs() {
		if p, ok := recs[id]; ok && p.placed() {
			heldPrevs++
		}
	}
	if heldPrevs == len(ev.PrevEventIDs()) {
		// Every prev_event is held by now.
		out, finish, err := s.placeHeld(ctx, roomID, e, ev, held)
		return out, finish, err
	}
	l := newGraphLoader(s, roomID)
	before := stateres.StateMap{}
	for _, x := range state {
		if events.RoomID(x) != roomID || x.StateKey() == nil {
			return s.keepOut(ctx, roomID, ev, h, nil, nil, Rejected, "the state given holds "+x.EventID()+", not a state event of the room")
		}
		before[stateres.Key{Type: x.Type(), StateKey: *x.StateKey()}] = x.EventID()
	}
	if _, ok := before[stateres.Key{Type: events.Create}]; !ok {
		// No state at all: nothing to check the event against, and
		// nothing to reject it for; another server may answer better.
		return Outcome{}, nil, fmt.Errorf("%w: the state given before it holds no create event", ErrBadEvent)
	}
	if err := s.storeOutliers(ctx, roomID, l, append(slices.Clone(state), chain...)); err != nil {
		return Outcome{}, nil, err
	}
	for k, id := range before {
		if l.Rejected(id) {
			// Refused by its own auth events: not state (a create refused
			// leaves none, below).
			delete(before, k)
		}
	}
	if _, ok := before[stateres.Key{Type: events.Create}]; !ok {
		return Outcome{}, nil, fmt.Errorf("%w: the create event of the state given before it is rejected", ErrBadEvent)
	}
	if st, reason, err := s.authBeforeAndNow(ctx, roomID, e, l, ev, before); err != nil || reason != "" {
		if err != nil {
			return Outcome{}, nil, err
		}
		return s.keepOut(ctx, roomID, ev, h, before, l.blocks, st, reason)
	}
	// The room's forward extremities stay beside it: their states and the
	// event's are resolved into the current state.
	ext := extremitiesAfter(h, ev)
	others, err := s.records(ctx, roomID, ext[1:])
	if err != nil {
		return Outcome{}, nil, err
	}
	var otherRecs []*record
	for _, id := range ext[1:] {
		r, ok := others[id]
		if !ok {
			return Outcome{}, nil, fmt.Errorf("%w %s (a forward extremity)", ErrUnknownEvent, id)
		}
		otherRecs = append(otherRecs, r)
	}
	l.add(others)
	l.known[ev.EventID()] = ev
	lists, cur, err := s.blockLists(ctx, roomID, otherRecs, h.StateSeq)
	if err != nil {
		return Outcome{}, nil, err
	}
	return s.commitFork(ctx, roomID, e, ev, stateres.After(before, ev), l, fork{ext: ext, others: otherRecs, lists: lists, cur: cur, before: before, gap: gapReserve, outlier: held})
}

// placeHeld takes ev, whose prev_events are all held, as Receive does.
func (s *Service) placeHeld(ctx context.Context, roomID string, e *roomEntry, ev events.PDU, held bool) (Outcome, func(context.Context) error, error) {
	if !held && sameSet(ev.PrevEventIDs(), e.head.extremities()) {
		return s.receiveLinear(ctx, roomID, e, ev)
	}
	return s.receiveFork(ctx, roomID, e, ev)
}

// storeOutliers stores the events of evs this server does not hold as
// outliers: a pointer holding the PDU, outside the timeline, created
// conditionally (one stored meanwhile is left as it is), each after the
// auth rules against its own auth events (checkOutlier): one refused is
// stored rejected. They are added to l, the rejected marked. Cost: one
// BatchGetItem of their pointers, one conditional PutItem for each not
// held, and a BatchGetItem of the auth events neither among evs nor in l.
func (s *Service) storeOutliers(ctx context.Context, roomID string, l *graphLoader, evs []events.PDU) error {
	var ids []string
	byID := map[string]events.PDU{}
	for _, x := range evs {
		if events.RoomID(x) != roomID {
			continue
		}
		l.known[x.EventID()] = x
		if _, ok := byID[x.EventID()]; !ok {
			byID[x.EventID()] = x
			ids = append(ids, x.EventID())
		}
	}
	held, err := s.pointers(ctx, ids)
	if err != nil {
		return err
	}
	var fresh []string
	for _, id := range ids {
		if p, ok := held[id]; ok {
			if p.Status == string(Rejected) {
				l.rejected[id] = true
			}
			continue
		}
		fresh = append(fresh, id)
	}
	for _, id := range authOrder(fresh, byID) {
		x := byID[id]
		reason, err := s.checkOutlier(ctx, l, x)
		if err != nil {
			return err
		}
		p := pointer{PK: pointerPK(id), SK: "event", RoomID: roomID, Status: outlier, PDU: string(x.JSON()), Version: string(x.Version())}
		if reason != "" {
			l.rejected[id] = true
			p.Status, p.Reason = string(Rejected), reason
		}
		if err := s.Store.Create(ctx, p); err != nil && !errors.Is(err, store.ErrExists) {
			return fmt.Errorf("store outlier %s: %w", id, err)
		}
	}
	return nil
}

// checkOutlier is why ev, about to be stored as an outlier, is rejected
// ("" if it is not): like every received event, it must pass the auth
// rules against its own auth events (the receipt checks, step 4), which
// l holds, checked before it, or the room holds. One whose auth events
// are missing or rejected is rejected too, so that it is never taken as
// an auth event or as state.
func (s *Service) checkOutlier(ctx context.Context, l *graphLoader, ev events.PDU) (string, error) {
	if ev.Type() == events.Create {
		return allowed(ev, nil), nil
	}
	reason, err := s.checkAuthEvents(ctx, l, ev)
	var missing *MissingEventsError
	if errors.As(err, &missing) {
		return fmt.Sprintf("auth events %v are not held", missing.AuthIDs), nil
	}
	return reason, err
}

// authOrder is ids with each event after those of its auth events that
// are among ids (byID holds them): the order they are checked in.
func authOrder(ids []string, byID map[string]events.PDU) []string {
	in := map[string]bool{}
	for _, id := range ids {
		in[id] = true
	}
	done := map[string]bool{}
	var out []string
	var visit func(id string)
	visit = func(id string) {
		if done[id] {
			return
		}
		done[id] = true // before its auth events: a cycle ends here
		for _, a := range byID[id].AuthEventIDs() {
			if in[a] {
				visit(a)
			}
		}
		out = append(out, id)
	}
	for _, id := range ids {
		visit(id)
	}
	return out
}

// outlier is the status of an event stored only as part of the state
// another server gave: not in the timeline, but its place there is still
// open (a gap's filling takes it in).
const outlier = "outlier"

// errOutlier is a write that found ev's pointer held by an outlier: the
// event arrives in the timeline after its state was given, and is taken
// again as one whose pointer its placing replaces.
var errOutlier = fmt.Errorf("%w: the event is held as an outlier", errMoved)

// pointerOp is the write of the pointer p of an event placed or kept out
// on its receipt: a create, or, for an event held as an outlier (held),
// a write over the outlier's pointer alone.
func pointerOp(p pointer, held bool) store.Op {
	if held {
		return store.PutIfOp(p, "st", outlier)
	}
	return store.CreateOp(p)
}

// placed reports whether r is in the timeline or kept out of it, not an
// outlier whose place is still open.
func (r *record) placed() bool { return r.ptr.Status != outlier }

// openGap records, in the transaction of sl, the event placed above a gap
// whose first position is bottom+1: the gap in the room info, and the slot
// that holds that position.
func (b *batch) openGap(ctx context.Context, sl slot, bottom int64) error {
	if err := b.readInfo(ctx); err != nil {
		return err
	}
	top, err := seqOf(sl.SK)
	if err != nil {
		return err
	}
	b.info.Gaps = append(b.info.Gaps, gap{top, bottom}.String())
	b.info.Gapped = append(b.info.Gapped, gap{top, bottom}.String())
	b.info.Holds = append(b.info.Holds, bottom+1)
	hold := slot{PK: sl.PK, SK: slotSK(bottom + 1), EventID: sl.EventID, PDU: sl.PDU, Version: sl.Version, StateSeq: sl.StateSeq, Hold: true}
	b.ops = append(b.ops, store.CreateOp(hold))
	return nil
}

// inGap reports whether position seq is one a gap left free: an event
// placed there arrived after the events above it.
func inGap(gapped []gap, seq int64) bool {
	for _, g := range gapped {
		if seq > g.bottom && seq < g.top {
			return true
		}
	}
	return false
}

// gapAfter reports whether a gap with free positions has its top in
// (stop, from]: a page of events after stop misses those it holds.
func gapAfter(gapped []gap, stop, from int64) bool {
	for _, g := range gapped {
		if g.top > stop && g.top <= from && g.top-g.bottom > 1 {
			return true
		}
	}
	return false
}

// throughGaps fills the open gaps that a backwards /messages page without
// a "to" went past (the page read from from down to end, -1 for the
// room's start) and
// reads the page again, up to a few times: each fill places at most
// max(q.Limit, 10) events, the newest of the gap. The gaps are known from
// the room info the viewer read: a page past none costs nothing more.
func (s *Service) throughGaps(ctx context.Context, roomID string, v *viewer, from, stop int64, q MessagesQuery, evs []Event, end, top int64) ([]Event, int64, int64, error) {
	if stop >= 0 || v.news {
		// A page bounded by a token (/sync's, a client's "to") asks no
		// other server, as backfillBefore does not.
		return evs, end, top, nil
	}
	for round := 0; round < 4; round++ {
		g, ok := passed(gapsOf(v.info.Gaps), from, end)
		if !ok {
			break
		}
		filled, err := s.fillGap(ctx, roomID, v, g, max(q.Limit, 10))
		if err != nil || !filled {
			return evs, end, top, err
		}
		if evs, end, top, err = s.scan(ctx, roomID, v, from, stop, q); err != nil {
			return nil, 0, 0, err
		}
	}
	return evs, end, top, nil
}

// passed is the highest open gap whose first position to fill (just
// below its top) a backwards page from from to end read: a page from a
// token just below the top (a /sync's prev_batch) fills it too.
func passed(gaps []gap, from, end int64) (gap, bool) {
	var best gap
	found := false
	for _, g := range gaps {
		if g.top-1 <= from && g.top-1 > end && (!found || g.top > best.top) {
			best, found = g, true
		}
	}
	return best, found
}

// fillGap asks the servers in the room for the events before the one at
// the top of g (the Backfiller) and places those it lacks in g
// (TakeGap); it reports whether any was placed, and refreshes v's copy of
// the room info. A failure of the other servers leaves the gap open.
func (s *Service) fillGap(ctx context.Context, roomID string, v *viewer, g gap, limit int) (bool, error) {
	var sl slot
	pk, sk := slotKey(roomID, g.top)
	if err := s.Store.Get(ctx, store.Key{PK: pk, SK: sk}, &sl); err != nil {
		return false, fmt.Errorf("read the slot above a gap of %s: %w", roomID, err)
	}
	e, err := sl.event()
	if err != nil {
		return false, err
	}
	pdus, err := s.Backfiller(ctx, roomID, sl.Version, e.PDU.PrevEventIDs(), limit)
	if err != nil || len(pdus) == 0 {
		return false, nil
	}
	out, i, err := s.TakeGap(ctx, roomID, g.top, pdus)
	if err != nil {
		return false, err
	}
	v.info.Gaps, v.info.Holds = i.Gaps, i.Holds
	v.holds = i.Holds
	for _, o := range out {
		if o.Status == Accepted && !o.Duplicate {
			return true, nil
		}
	}
	return false, nil
}

// TakeGap places pdus, events of roomID fetched from other servers (their
// signatures and hashes checked by the caller), in the gap below the event
// at position top: the events this server lacks, oldest first (by depth,
// then ID), take the positions just below top, the newest highest. Each is
// checked against its auth events alone, as a backfilled event is (the
// state at it is unknown; its slot names the state of the event above
// the gap). Once the oldest placed has all its prev_events held, or the
// gap has no positions left, the gap is closed; else its top moves down
// to the oldest placed. At most gapChunk events are placed at once (the
// newest). It returns the outcomes, following pdus, and the room info as
// written.
//
// Cost: GetItem of the info and of the slot above the gap, BatchGetItem
// of the pointers of pdus, the auth events not among them, BatchGetItem of
// the pointers of the oldest placed event's prev_events, one
// TransactWriteItems of the slots, pointers and the info (over its
// revision).
func (s *Service) TakeGap(ctx context.Context, roomID string, top int64, pdus []events.PDU) ([]Outcome, info, error) {
	for attempt := 0; attempt < maxAttempts; attempt++ {
		out, i, err := s.tryGap(ctx, roomID, top, pdus)
		if errors.Is(err, errMoved) {
			if err := raceBackoff.Wait(ctx, attempt); err != nil {
				return nil, info{}, err
			}
			continue
		}
		if err != nil {
			return nil, info{}, fmt.Errorf("fill a gap of %s: %w", roomID, err)
		}
		return out, i, nil
	}
	return nil, info{}, fmt.Errorf("fill a gap of %s: gave up after %d attempts", roomID, maxAttempts)
}

func (s *Service) tryGap(ctx context.Context, roomID string, top int64, pdus []events.PDU) ([]Outcome, info, error) {
	var i info
	if err := s.Store.Get(ctx, store.Key{PK: roomPK(roomID), SK: infoSK}, &i); err != nil {
		return nil, info{}, fmt.Errorf("read info of %s: %w", roomID, err)
	}
	out := make([]Outcome, len(pdus))
	gaps := gapsOf(i.Gaps)
	k := slices.IndexFunc(gaps, func(g gap) bool { return g.top == top })
	if k < 0 {
		for j := range out {
			out[j].Reason = "the gap is filled"
		}
		return out, i, nil
	}
	g := gaps[k]
	var above slot
	pk, sk := slotKey(roomID, top)
	if err := s.Store.Get(ctx, store.Key{PK: pk, SK: sk}, &above); err != nil {
		return nil, info{}, fmt.Errorf("read slot %d of %s: %w", top, roomID, err)
	}
	byID := map[string][]int{}
	var ids []string
	for j, ev := range pdus {
		switch {
		case events.RoomID(ev) != roomID:
			out[j].Reason = "event of another room"
		case string(ev.Version()) != above.Version:
			out[j].Reason = "event of another room version"
		default:
			if byID[ev.EventID()] == nil {
				ids = append(ids, ev.EventID())
			}
			byID[ev.EventID()] = append(byID[ev.EventID()], j)
		}
	}
	held, err := s.pointers(ctx, ids)
	if err != nil {
		return nil, info{}, err
	}
	var fresh []events.PDU
	for _, id := range ids {
		j := byID[id][0]
		if p, ok := held[id]; ok && p.Status != outlier {
			out[j] = p.outcome()
		} else {
			fresh = append(fresh, pdus[j])
		}
	}
	sort.Slice(fresh, func(a, b int) bool {
		if fresh[a].Depth() != fresh[b].Depth() {
			return fresh[a].Depth() < fresh[b].Depth()
		}
		return fresh[a].EventID() < fresh[b].EventID()
	})
	placed, rejected, skipped, err := s.authBackfill(ctx, roomID, fresh)
	if err != nil {
		return nil, info{}, err
	}
	room := int(g.top - g.bottom - 1)
	if n := min(len(placed), room, gapChunk); n < len(placed) {
		placed = placed[len(placed)-n:] // the newest: the gap stays open below them
	}
	var ops []store.Op
	seqs := map[string]int64{}
	low := g.top
	for j := len(placed) - 1; j >= 0; j-- {
		ev := placed[j]
		low--
		seqs[ev.EventID()] = low
		sl := s.newSlot(roomID, low, ev, above.StateSeq)
		if slices.Contains(i.Holds, low) {
			ops = append(ops, store.PutIfOp(sl, "hold", true))
			i.Holds = slices.DeleteFunc(i.Holds, func(p int64) bool { return p == low })
		} else {
			ops = append(ops, store.CreateOp(sl))
		}
		p := newPointer(roomID, low, ev)
		if h, ok := held[ev.EventID()]; ok && h.Status == outlier {
			ops = append(ops, store.PutIfOp(p, "st", outlier))
		} else {
			ops = append(ops, store.CreateOp(p))
		}
		if rel := relationOf(roomID, low, ev); rel != nil {
			ops = append(ops, store.PutOp(*rel))
		}
	}
	for _, r := range rejected {
		if len(ops) >= store.MaxTransactActions-1 {
			break // asked for again with the gap's next fill
		}
		p := pointer{PK: pointerPK(r.ev.EventID()), SK: "event", RoomID: roomID, Status: string(Rejected), Reason: r.reason, PDU: string(r.ev.JSON()), Version: above.Version}
		if h, ok := held[r.ev.EventID()]; ok && h.Status == outlier {
			ops = append(ops, store.PutIfOp(p, "st", outlier))
		} else {
			ops = append(ops, store.CreateOp(p))
		}
	}
	closed := len(placed) == 0 || low == g.bottom+1
	if !closed {
		// Open while the oldest placed lacks a prev_event.
		oldest := placed[0]
		prevHeld, err := s.pointers(ctx, oldest.PrevEventIDs())
		if err != nil {
			return nil, info{}, err
		}
		closed = true
		for _, id := range oldest.PrevEventIDs() {
			if p, ok := prevHeld[id]; (!ok || p.Status == outlier) && seqs[id] == 0 {
				closed = false
			}
		}
	}
	gaps = slices.Delete(gaps, k, k+1)
	if !closed {
		gaps = append(gaps, gap{low, g.bottom})
	}
	i.Gaps = nil
	for _, x := range gaps {
		i.Gaps = append(i.Gaps, x.String())
	}
	rev := i.Rev
	i.Rev++
	ops = append(ops, store.PutIfOp(i, "rev", rev))
	if err := s.Store.Transact(ctx, ops...); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, info{}, errMoved
		}
		return nil, info{}, err
	}
	reasons := map[string]string{}
	for _, r := range rejected {
		reasons[r.ev.EventID()] = r.reason
	}
	for id, idx := range byID {
		j := idx[0]
		switch {
		case out[j].Status != "":
		case seqs[id] != 0:
			out[j] = Outcome{Status: Accepted, Seq: seqs[id]}
		case reasons[id] != "":
			out[j] = Outcome{Status: Rejected, Reason: reasons[id]}
		case skipped[id] != "":
			out[j].Reason = skipped[id]
		default:
			out[j].Reason = "older than the gap holds"
		}
		for _, x := range idx[1:] {
			out[x] = out[j]
			out[x].Duplicate = true
		}
	}
	return out, i, nil
}
