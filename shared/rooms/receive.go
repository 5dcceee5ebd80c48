package rooms

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/stateres"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Events made by other servers (server-server API, "Checks performed on
// receipt of a PDU"). The caller has checked the PDU's format, signatures
// and hashes; Receive runs the checks that need the room: the auth rules
// against the event's auth_events, against the state before it, and
// against the room's current state.

// Status is what became of a received event.
type Status string

const (
	// Accepted events are in the timeline and the room's state.
	Accepted Status = "accepted"
	// SoftFailed events passed the auth rules where they were sent but not
	// against the current state: stored, never shown to clients, never
	// built on.
	SoftFailed Status = "soft_failed"
	// Rejected events failed the auth rules against their auth events or
	// the state before them: stored as such, so that they are not asked
	// for again, and nowhere else.
	Rejected Status = "rejected"
)

// Outcome is what Receive did with an event.
type Outcome struct {
	Status Status
	// Seq is the event's position in the timeline, when Accepted.
	Seq int64
	// Reason says why the event was soft failed or rejected.
	Reason string
	// Duplicate is set when this server held the event already: nothing
	// was written, and the outcome is that of its first receipt.
	Duplicate bool
}

// MissingEventsError is a received event whose prev_events or auth_events
// this server does not hold: the caller fetches them (get_missing_events,
// event_auth) and receives them first.
type MissingEventsError struct {
	EventID string
	// IDs are the missing prev_events, AuthIDs the missing auth_events.
	IDs, AuthIDs []string
}

func (e *MissingEventsError) Error() string {
	return fmt.Sprintf("event %s: missing prev_events %v, auth_events %v", e.EventID, e.IDs, e.AuthIDs)
}

// ErrBadEvent is a received event this server cannot take into the room
// whatever the state: another room version, a create event.
var ErrBadEvent = errors.New("bad event")

// Receive takes into its room an event made by another server, whose
// signatures and hashes the caller checked. It stores the event once: a
// second receipt writes nothing and returns the first's outcome
// (Duplicate). Its prev_events must be stored (else *MissingEventsError);
// the state before it is the state after them, resolved when they
// differ. An event the auth rules refuse is stored as Rejected, one the
// current state refuses as SoftFailed (neither in the timeline); any
// other is appended at the next position, and the room's forward
// extremities become those before it, less its prev_events, plus it.
//
// A linear event, whose prev_events are the room's forward extremities,
// costs what a local event costs; one that forks or merges reads the
// states after its prev_events, resolves them and writes the current
// state that changed in the transaction of its slot.
func (s *Service) Receive(ctx context.Context, ev events.PDU) (Outcome, error) {
	roomID := events.RoomID(ev)
	if ev.Type() == events.Create {
		return Outcome{}, fmt.Errorf("%w: a create event of a room held already (%s)", ErrBadEvent, roomID)
	}
	held := false // as an outlier
	for attempt := 0; attempt < maxAttempts; attempt++ {
		out, finish, err := s.tryReceive(ctx, roomID, ev, held)
		held = held || errors.Is(err, errOutlier)
		if errors.Is(err, errMoved) {
			if err := raceBackoff.Wait(ctx, attempt); err != nil {
				return Outcome{}, err
			}
			continue
		}
		if err != nil {
			return Outcome{}, fmt.Errorf("receive %s: %w", ev.EventID(), err)
		}
		if finish != nil {
			err = finish(ctx)
		}
		return out, err
	}
	return Outcome{}, fmt.Errorf("receive %s: gave up after %d attempts", ev.EventID(), maxAttempts)
}

// tryReceive takes ev with the room's cache entry locked, as trySend
// appends. An event held as an outlier (held) is taken as a forked one,
// whose reads find its pointer, so that its placing replaces it.
func (s *Service) tryReceive(ctx context.Context, roomID string, ev events.PDU, held bool) (Outcome, func(context.Context) error, error) {
	e := s.cache.entry(roomID)
	e.mu.Lock()
	defer e.mu.Unlock()
	cached := e.head != nil
	if err := s.loadEntry(ctx, roomID, e); err != nil {
		return Outcome{}, nil, err
	}
	if cached && !sameSet(ev.PrevEventIDs(), e.head.extremities()) {
		// Another instance may have appended what ev builds on: a Query
		// of the head costs less than a fork found stale at its write.
		h, err := s.readHead(ctx, roomID)
		if err != nil {
			return Outcome{}, nil, err
		}
		if h.Seq != e.head.Seq {
			e.reset()
			e.head, e.state = h, map[events.StateKeyTuple]events.PDU{}
			if err := s.loadEntry(ctx, roomID, e); err != nil {
				return Outcome{}, nil, err
			}
		}
	}
	if v := string(ev.Version()); v != e.head.Version {
		return Outcome{}, nil, fmt.Errorf("%w: room version %s, the room's is %s", ErrBadEvent, v, e.head.Version)
	}
	var out Outcome
	var finish func(context.Context) error
	var err error
	if !held && sameSet(ev.PrevEventIDs(), e.head.extremities()) {
		out, finish, err = s.receiveLinear(ctx, roomID, e, ev)
	} else {
		out, finish, err = s.receiveFork(ctx, roomID, e, ev)
	}
	var missing *MissingEventsError
	if err != nil && !errors.As(err, &missing) {
		e.reset()
	}
	return out, finish, err
}

// loadEntry reads the head and local users of the room into e, unless it
// holds them.
func (s *Service) loadEntry(ctx context.Context, roomID string, e *roomEntry) error {
	if e.head == nil {
		h, err := s.readHead(ctx, roomID)
		if err != nil {
			return err
		}
		e.head, e.state = h, map[events.StateKeyTuple]events.PDU{}
	}
	if e.locals == nil {
		l, err := s.readLocals(ctx, roomID)
		if err != nil {
			return err
		}
		e.locals = l
	}
	return nil
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, id := range a {
		if !slices.Contains(b, id) {
			return false
		}
	}
	return true
}

// protoOf is what the auth rules need to know of ev to name its state.
func protoOf(ev events.PDU) events.Proto {
	return events.Proto{RoomID: events.RoomID(ev), Sender: events.Sender(ev), Type: ev.Type(), StateKey: ev.StateKey(), Content: ev.Content()}
}

// receiveLinear takes ev, whose prev_events are the room's forward
// extremities: the state before it is the current state, so there is
// nothing to resolve and nothing to soft fail.
func (s *Service) receiveLinear(ctx context.Context, roomID string, e *roomEntry, ev events.PDU) (Outcome, func(context.Context) error, error) {
	h := e.head
	tuples, err := events.AuthStateNeeded(h.Version, protoOf(ev))
	if err != nil {
		return s.reject(ctx, roomID, ev, h, nil, err.Error())
	}
	want := tuples
	if ev.StateKey() != nil {
		want = append(slices.Clone(tuples), events.StateKeyTuple{Type: ev.Type(), StateKey: *ev.StateKey()})
	}
	if err := s.fill(ctx, roomID, e, want); err != nil {
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
	var next *head
	var finish func(context.Context) error
	var target *slot
	plain := ev.StateKey() == nil && ev.Type() != events.Redaction
	if ev.Type() == events.Redaction {
		if target, err = s.appliedTo(ctx, roomID, ev, e.state); err != nil {
			return Outcome{}, nil, err
		}
		plain = target == nil
	}
	if plain {
		next, finish, err = s.commitReceivedMessage(ctx, roomID, h, ev, e.locals, nil)
	} else {
		var appended []Appended
		next, appended, err = s.commitBatch(ctx, roomID, 0, h, []events.PDU{ev}, e.state, nil, e.locals, target, true)
		finish = func(ctx context.Context) error { return s.notify(ctx, appended) }
	}
	if err != nil {
		// A state event changed the cached state, which nothing stored.
		e.reset()
		if errors.Is(err, errMoved) {
			return s.storedOrMoved(ctx, ev)
		}
		return Outcome{}, nil, err
	}
	e.head = next
	return Outcome{Status: Accepted, Seq: next.Seq}, finish, nil
}

// checkAuth runs the auth rules on ev against its own auth events, then
// against before, the state before it (the tuples the rules need); the
// reason is empty when both allow it. Missing auth events are a
// *MissingEventsError.
func (s *Service) checkAuth(ctx context.Context, l *graphLoader, ev events.PDU, before []events.PDU) (string, error) {
	if reason, err := s.checkAuthEvents(ctx, l, ev); err != nil || reason != "" {
		return reason, err
	}
	if reason := allowed(ev, before); reason != "" {
		return "not allowed by the state before it: " + reason, nil
	}
	return "", nil
}

// checkAuthEvents runs the auth rules on ev against its own auth events
// alone: all a backfilled event, whose state is unknown, is checked
// against.
func (s *Service) checkAuthEvents(ctx context.Context, l *graphLoader, ev events.PDU) (string, error) {
	v := string(ev.Version())
	want := ev.AuthEventIDs()
	createID := ""
	if events.DomainlessRoomIDs(v) {
		// The room ID names the create event, which auth_events must not
		// list (room version 12, auth rules 2 and 3.2); the rules still
		// read it, and the library's AuthEventIDs adds it to those listed.
		createID = "$" + strings.TrimPrefix(events.RoomID(ev), "!")
		switch n := countOf(want, createID); {
		case n > 1:
			return "auth_events list the create event", nil
		case n == 0:
			want = append(slices.Clone(want), createID)
		}
	}
	got, err := l.Events(ctx, want)
	if err != nil {
		return "", err
	}
	var missing []string
	var auth []events.PDU
	for _, id := range want {
		a, ok := got[id]
		switch {
		case !ok:
			missing = append(missing, id)
		case l.Rejected(id):
			return "auth event " + id + " was rejected", nil
		default:
			auth = append(auth, a)
		}
	}
	if len(missing) > 0 {
		return "", &MissingEventsError{EventID: ev.EventID(), AuthIDs: missing}
	}
	if reason := selected(v, ev, auth, createID); reason != "" {
		return reason, nil
	}
	if reason := allowed(ev, auth); reason != "" {
		return "not allowed by its auth events: " + reason, nil
	}
	return "", nil
}

func countOf(ids []string, id string) int {
	n := 0
	for _, x := range ids {
		if x == id {
			n++
		}
	}
	return n
}

// selected is why ev's auth events are not a selection the auth rules
// accept (rule "considering the event's auth_events"), "" when they are:
// state events, one per type and state key, each of a kind the auth events
// selection picks for ev, the create event among them before version 12.
// createID is the create event added for version 12, which auth_events do
// not list.
func selected(v string, ev events.PDU, auth []events.PDU, createID string) string {
	tuples, err := events.AuthStateNeeded(v, protoOf(ev))
	if err != nil {
		return err.Error()
	}
	seen := map[events.StateKeyTuple]bool{}
	for _, a := range auth {
		if a.EventID() == createID {
			continue
		}
		if a.StateKey() == nil {
			return "auth event " + a.EventID() + " is not a state event"
		}
		t := events.StateKeyTuple{Type: a.Type(), StateKey: *a.StateKey()}
		if seen[t] {
			return fmt.Sprintf("auth_events list two %s events with state key %q", t.Type, t.StateKey)
		}
		seen[t] = true
		if !slices.Contains(tuples, t) {
			return fmt.Sprintf("auth event %s (%s, state key %q) is not one the auth rules select for this event", a.EventID(), t.Type, t.StateKey)
		}
	}
	if createID == "" && !seen[events.StateKeyTuple{Type: events.Create}] {
		return "auth_events do not list the create event"
	}
	return ""
}

// allowed is why the auth rules refuse ev in state, "" if they allow it.
func allowed(ev events.PDU, state []events.PDU) string {
	st, err := events.NewState(nil)
	if err != nil {
		return err.Error()
	}
	for _, e := range state {
		if events.RoomID(e) != events.RoomID(ev) {
			return "auth event " + e.EventID() + " is of another room"
		}
		if err := st.Add(e); err != nil {
			return err.Error()
		}
	}
	if err := events.Allowed(ev, st); err != nil {
		return err.Error()
	}
	return ""
}

// commitReceivedMessage appends a received message event at the slot after
// h: one transaction of the slot, the pointer (a create: an event stored
// already fails it) and the relation. ext are the extremities the slot
// keeps, when they are more than ev.
func (s *Service) commitReceivedMessage(ctx context.Context, roomID string, h *head, ev events.PDU, loc *locals, ext []string) (*head, func(context.Context) error, error) {
	seq := h.Seq + 1
	sl := s.newSlot(roomID, seq, ev, h.StateSeq)
	if len(ext) > 1 {
		sl.Ext, sl.Depth = ext, max(h.depth(), ev.Depth())
	}
	ops := []store.Op{store.CreateOp(sl), store.CreateOp(newPointer(roomID, seq, ev))}
	if rel := relationOf(roomID, seq, ev); rel != nil {
		ops = append(ops, store.PutOp(*rel))
	}
	if err := s.Store.Transact(ctx, ops...); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, nil, errMoved
		}
		return nil, nil, err
	}
	finish := func(ctx context.Context) error {
		return s.notify(ctx, []Appended{{RoomID: roomID, Seq: seq, Event: ev, To: loc.joined(), Servers: loc.Partial}})
	}
	return headAt(sl, seq, ev), finish, nil
}

// storedOrMoved tells, after a failed write, a second receipt of ev (its
// pointer is there) from a lost race for the slot, and from an event held
// as an outlier (errOutlier), whose pointer a create cannot replace.
func (s *Service) storedOrMoved(ctx context.Context, ev events.PDU) (Outcome, func(context.Context) error, error) {
	var p pointer
	err := s.Store.Get(ctx, store.Key{PK: pointerPK(ev.EventID()), SK: "event"}, &p)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return Outcome{}, nil, errMoved
	case err != nil:
		return Outcome{}, nil, err
	case p.Status == outlier:
		return Outcome{}, nil, errOutlier
	}
	if p.Status == "" {
		// A local event's pointer is written before its slot is claimed:
		// only a slot holding the event makes it stored.
		if _, err := s.Event(ctx, p.RoomID, ev.EventID()); err != nil {
			return Outcome{}, nil, errMoved
		}
	}
	return p.outcome(), nil, nil
}

// outcome is the first receipt's outcome of the event p points to.
func (p pointer) outcome() Outcome {
	if p.Status != "" {
		return Outcome{Status: Status(p.Status), Reason: p.Reason, Duplicate: true}
	}
	return Outcome{Status: Accepted, Seq: p.Seq, Duplicate: true}
}

// reject stores ev outside the timeline as Rejected. before is the state
// before it, nil for the current state at h.
func (s *Service) reject(ctx context.Context, roomID string, ev events.PDU, h *head, before stateres.StateMap, reason string) (Outcome, func(context.Context) error, error) {
	return s.keepOut(ctx, roomID, ev, h, before, nil, Rejected, reason)
}

// keepOut stores ev with status st in its pointer alone, with the block
// hashes of the state before it (blocks not among stored, read already,
// written in the same transaction), so that events built on it can still
// be placed.
func (s *Service) keepOut(ctx context.Context, roomID string, ev events.PDU, h *head, before stateres.StateMap, stored map[string]map[string]string, st Status, reason string) (Outcome, func(context.Context) error, error) {
	p := pointer{PK: pointerPK(ev.EventID()), SK: "event", RoomID: roomID, Status: string(st), Reason: reason, PDU: string(ev.JSON()), Version: string(ev.Version())}
	var ops []store.Op
	if before == nil {
		var snap snapshot
		if err := s.Store.Get(ctx, store.Key{PK: roomPK(roomID), SK: snapSK(h.StateSeq)}, &snap); err != nil {
			return Outcome{}, nil, fmt.Errorf("read state snapshot %d of %s: %w", h.StateSeq, roomID, err)
		}
		p.Blocks = snap.Blocks
	} else {
		var blks []block
		p.Blocks, blks = blocksOf(roomID, before)
		for _, b := range blks {
			if _, ok := stored[b.SK[len("blk|"):]]; !ok && stored[b.top] == nil {
				ops = append(ops, store.PutOp(b))
			}
		}
	}
	ops = append(ops, store.CreateOp(p))
	err := s.transactChunks(ctx, ops)
	if errors.Is(err, store.ErrConflict) {
		out, finish, err := s.storedOrMoved(ctx, ev)
		if !errors.Is(err, errOutlier) {
			return out, finish, err
		}
		// Held as an outlier: its receipt in the timeline decides.
		ops[len(ops)-1] = pointerOp(p, true)
		if err := s.transactChunks(ctx, ops); err != nil {
			if errors.Is(err, store.ErrConflict) {
				return s.storedOrMoved(ctx, ev)
			}
			return Outcome{}, nil, err
		}
		return Outcome{Status: st, Reason: reason}, nil, nil
	}
	if err != nil {
		return Outcome{}, nil, err
	}
	return Outcome{Status: st, Reason: reason}, nil, nil
}

// transactChunks writes ops, the last of which decides (a create): the
// others, content-addressed blocks, are written first when they do not
// fit in one transaction with it.
func (s *Service) transactChunks(ctx context.Context, ops []store.Op) error {
	for len(ops) > store.MaxTransactActions {
		if err := s.Store.Transact(ctx, ops[:store.MaxTransactActions]...); err != nil {
			return err
		}
		ops = ops[store.MaxTransactActions:]
	}
	return s.Store.Transact(ctx, ops...)
}

// blocksOf splits a state into the blocks of a snapshot: their hashes by
// bucket ("" for an empty one) and the blocks themselves.
func blocksOf(roomID string, m stateres.StateMap) ([]string, []block) {
	buckets := make([]map[string]string, stateBuckets)
	for k, id := range m {
		key := k.Type + "\x00" + k.StateKey
		i := bucketOf(key)
		if buckets[i] == nil {
			buckets[i] = map[string]string{}
		}
		buckets[i][key] = id
	}
	hashes := make([]string, stateBuckets)
	var blks []block
	for i, entries := range buckets {
		if entries == nil {
			continue
		}
		var sub []block
		hashes[i], sub = layout(roomID, entries, 1)
		for _, b := range sub {
			b.top = hashes[i]
			blks = append(blks, b)
		}
	}
	return hashes, blks
}

// record is what this server holds of one event of a room: its pointer,
// and its slot when it is in the timeline.
type record struct {
	ptr pointer
	sl  *slot
	ev  events.PDU
}

// records reads what the room holds of ids: one BatchGetItem of their
// pointers, one of the slots they name. IDs it does not hold are absent.
func (s *Service) records(ctx context.Context, roomID string, ids []string) (map[string]*record, error) {
	out := map[string]*record{}
	if len(ids) == 0 {
		return out, nil
	}
	keys := make([]store.Key, 0, len(ids))
	for _, id := range ids {
		keys = append(keys, store.Key{PK: pointerPK(id), SK: "event"})
	}
	bySlot := map[store.Key]*record{}
	var slotKeys []store.Key
	err := s.Store.GetMany(ctx, keys, func(_ store.Key, decode func(any) error) error {
		var p pointer
		if err := decode(&p); err != nil {
			return err
		}
		if p.RoomID != roomID {
			return nil
		}
		id := strings.TrimPrefix(p.PK, "event|")
		r := &record{ptr: p}
		if p.Seq == 0 {
			ev, err := events.Parse(p.Version, id, []byte(p.PDU))
			if err != nil {
				return err
			}
			r.ev = ev
			out[id] = r
			return nil
		}
		pk, sk := slotKey(roomID, p.Seq)
		k := store.Key{PK: pk, SK: sk}
		bySlot[k] = r
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
		r := bySlot[k]
		if r == nil || sl.EventID != strings.TrimPrefix(r.ptr.PK, "event|") {
			return nil // a pointer written for a slot another event won
		}
		ev, err := events.Parse(sl.Version, sl.EventID, []byte(sl.PDU))
		if err != nil {
			return err
		}
		r.sl, r.ev = &sl, ev
		out[sl.EventID] = r
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read event slots: %w", err)
	}
	return out, nil
}

// graphLoader gives state resolution and the auth checks the room's
// events, rejected ones marked.
type graphLoader struct {
	s        *Service
	roomID   string
	known    map[string]events.PDU
	rejected map[string]bool
	// blocks are the state blocks read, by hash.
	blocks map[string]map[string]string
	// missing are the events asked for and not held, for the error that
	// has the caller fetch them (missingAuth).
	missing []string
}

func newGraphLoader(s *Service, roomID string) *graphLoader {
	return &graphLoader{s: s, roomID: roomID, known: map[string]events.PDU{}, rejected: map[string]bool{}, blocks: map[string]map[string]string{}}
}

// add remembers what records hold.
func (l *graphLoader) add(recs map[string]*record) {
	for id, r := range recs {
		l.known[id] = r.ev
		if r.ptr.Status == string(Rejected) {
			l.rejected[id] = true
		}
	}
}

func (l *graphLoader) Events(ctx context.Context, ids []string) (map[string]events.PDU, error) {
	out := map[string]events.PDU{}
	var rest []string
	for _, id := range ids {
		if ev, ok := l.known[id]; ok {
			out[id] = ev
		} else {
			rest = append(rest, id)
		}
	}
	recs, err := l.s.records(ctx, l.roomID, rest)
	if err != nil {
		return nil, err
	}
	l.add(recs)
	for id, r := range recs {
		out[id] = r.ev
	}
	for _, id := range rest {
		if _, ok := recs[id]; !ok && !slices.Contains(l.missing, id) {
			l.missing = append(l.missing, id)
		}
	}
	return out, nil
}

func (l *graphLoader) Rejected(id string) bool { return l.rejected[id] }

var _ stateres.Rejecter = (*graphLoader)(nil)

// Extremities reads the room's forward extremities, the newest first, and
// the greatest depth among them: what the next event builds on (its
// prev_events, and its depth less one). One Query of the head.
func (s *Service) Extremities(ctx context.Context, roomID string) ([]string, int64, error) {
	h, err := s.readHead(ctx, roomID)
	if err != nil {
		return nil, 0, err
	}
	return slices.Clone(h.extremities()), h.depth(), nil
}

// appliedTo is the slot of the event the received redaction red redacts,
// when this server holds it and red may redact it; nil otherwise (red is
// then stored and applies to nothing). From room version 3 on the auth
// rules leave this to the server that applies it: the redaction's sender
// is on the target sender's server, or has the power to redact others'
// events in state (the current state's create and power levels).
func (s *Service) appliedTo(ctx context.Context, roomID string, red events.PDU, state map[events.StateKeyTuple]events.PDU) (*slot, error) {
	t, err := s.redactionTarget(ctx, roomID, red.Redacts())
	if err != nil || t == nil {
		return nil, err
	}
	target, err := t.event()
	if err != nil {
		return nil, err
	}
	if senderServer(red) != senderServer(target.PDU) && mayRedact(state, events.Sender(red), target.PDU) != nil {
		return nil, nil
	}
	if unredactable(target.PDU) != nil {
		return nil, nil
	}
	return t, nil
}

func senderServer(ev events.PDU) string {
	_, server, _ := strings.Cut(events.Sender(ev), ":")
	return server
}
