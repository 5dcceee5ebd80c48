package rooms

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// ErrUnknownRoom is a room this server holds nothing of.
var ErrUnknownRoom = errors.New("unknown room")

// errMoved means the head changed while an event was being built.
var errMoved = errors.New("room head moved")

// maxAttempts bounds the retries of an append that keeps losing the race for
// the next slot; 8 senders at once settle in a handful.
const maxAttempts = 100

// raceBackoff is the wait after a lost race, longer after each, with jitter
// so that racing senders spread out.
var raceBackoff = store.Backoff{Attempts: maxAttempts, Base: time.Millisecond, Max: 10 * time.Millisecond}

// head is the last slot of a room: where the next event goes.
type head struct {
	slot
	Seq int64
	ev  events.PDU
}

// maxPrevEvents caps the prev_events of a local event, as Synapse caps
// them, so that a room with many forks does not make huge events: the first
// ones of the head's extremities (the newest first), the others left for
// the next events to merge.
const maxPrevEvents = 10

// extremities are the room's forward extremities after the head: the
// events nothing in the room builds on yet, the newest first.
func (h *head) extremities() []string {
	if len(h.Ext) > 0 {
		return h.Ext
	}
	return []string{h.EventID}
}

// depth is the greatest depth among the extremities.
func (h *head) depth() int64 {
	if len(h.Ext) > 0 {
		return h.Depth
	}
	return h.ev.Depth()
}

// graph places the next event after the head: it builds on all forward
// extremities (up to maxPrevEvents), so a local event merges the forks.
func (h *head) graph() events.Graph {
	ext := h.extremities()
	return events.Graph{PrevEvents: ext[:min(len(ext), maxPrevEvents)], Depth: h.depth() + 1}
}

// carry sets on sl, the slot of the local event ev appended after h, the
// extremities it leaves: ev and those past maxPrevEvents, if any.
func (sl *slot) carry(h *head, ev events.PDU) {
	if h == nil {
		return
	}
	ext := h.extremities()
	if len(ext) <= maxPrevEvents {
		return
	}
	sl.Ext = append([]string{ev.EventID()}, ext[maxPrevEvents:]...)
	sl.Depth = max(ev.Depth(), h.depth())
}

// readHead reads the last slot of the room: one strongly consistent query of
// one item.
func (s *Service) readHead(ctx context.Context, roomID string) (*head, error) {
	var page []slot
	q := store.Query{PK: roomPK(roomID), Prefix: slotPrefix, Descending: true, Limit: 1}
	if _, err := s.Store.QueryPage(ctx, q, &page); err != nil {
		return nil, fmt.Errorf("read head of %s: %w", roomID, err)
	}
	if len(page) == 0 {
		return nil, fmt.Errorf("%w %s", ErrUnknownRoom, roomID)
	}
	h := &head{slot: page[0]}
	var err error
	if h.Seq, err = seqOf(h.SK); err != nil {
		return nil, fmt.Errorf("read head of %s: %w", roomID, err)
	}
	if h.ev, err = events.Parse(h.Version, h.EventID, []byte(h.PDU)); err != nil {
		return nil, err
	}
	return h, nil
}

// stateFor reads the current state items for tuples. It fails with errMoved
// when one of them is newer than h: state and slot are written together, so
// the head read earlier is stale.
func (s *Service) stateFor(ctx context.Context, roomID string, h *head, tuples []events.StateKeyTuple) (map[events.StateKeyTuple]events.PDU, error) {
	keys := make([]store.Key, 0, len(tuples))
	for _, t := range tuples {
		keys = append(keys, store.Key{PK: roomPK(roomID), SK: stateSK(t.Type, t.StateKey)})
	}
	out := make(map[events.StateKeyTuple]events.PDU, len(tuples))
	var moved bool
	err := s.Store.GetMany(ctx, keys, func(k store.Key, decode func(any) error) error {
		var c current
		if err := decode(&c); err != nil {
			return err
		}
		if h != nil && c.Seq > h.Seq {
			moved = true
		}
		ev, err := events.Parse(c.Version, c.EventID, []byte(c.PDU))
		if err != nil {
			return err
		}
		typ, key := tupleOf(c.SK)
		out[events.StateKeyTuple{Type: typ, StateKey: key}] = ev
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read state of %s: %w", roomID, err)
	}
	if moved {
		return nil, errMoved
	}
	return out, nil
}

// sendRequest is one event a local user sends, with the extra checks of the
// endpoint it came through.
type sendRequest struct {
	proto events.Proto
	// also lists state the check needs beyond the auth events.
	also []events.StateKeyTuple
	// check refuses the event for reasons beyond the auth rules (an
	// endpoint's own rules); it sees the state read for the event.
	check func(version string, state map[events.StateKeyTuple]events.PDU) error
	// txn is the client's transaction, when there is one.
	txn *txnClaim
}

// send builds, checks and appends one event to the end of the room, trying
// again from a fresh head while other events win the race. A request
// whose transaction ID another one holds waits for that one's event, and
// ends with *sentBefore naming it.
func (s *Service) send(ctx context.Context, roomID string, req sendRequest) (ev events.PDU, err error) {
	// The repairs of the slots lost on the way run beside the attempts
	// after them; the request ends once they have.
	var repairs errgroup.Group
	defer func() {
		if rerr := repairs.Wait(); rerr != nil {
			err = errors.Join(err, fmt.Errorf("put back what a lost slot's writes replaced: %w", rerr))
		}
	}()
	for attempt := 0; attempt < maxAttempts; attempt++ {
		ev, finish, err := s.trySend(ctx, roomID, req)
		switch {
		case errors.Is(err, errMoved):
			var lost *lostSlot
			if errors.As(err, &lost) {
				repairs.Go(func() error { return lost.repair(context.WithoutCancel(ctx)) })
			}
			if err := raceBackoff.Wait(ctx, attempt); err != nil {
				s.release(ctx, req.txn)
				return nil, err
			}
			continue
		case errors.Is(err, errTxnTaken):
			id, err := s.awaitTxn(ctx, req.txn)
			if err != nil {
				return nil, err
			}
			if id != "" {
				if err := s.restoreOverwritten(ctx, roomID, req.txn); err != nil {
					return nil, err
				}
				return nil, &sentBefore{eventID: id}
			}
			continue
		case errors.Is(err, errHalted):
			return nil, err
		case err != nil:
			s.release(ctx, req.txn)
			return nil, err
		}
		if s.halted("appended") {
			return nil, errHalted
		}
		if finish != nil {
			err = finish(ctx)
		}
		return ev, err
	}
	s.release(ctx, req.txn)
	return nil, fmt.Errorf("send to %s: gave up after %d attempts", roomID, maxAttempts)
}

// trySend appends one event with the room's entry in the cache locked: the
// senders of one process queue for the room instead of racing for its next
// slot, and build on the head and state they left. Senders in other
// processes still race; the conditional write of the slot decides, and the
// loser drops its cached entry and reads the room again.
func (s *Service) trySend(ctx context.Context, roomID string, req sendRequest) (events.PDU, func(context.Context) error, error) {
	e := s.cache.entry(roomID)
	e.mu.Lock()
	defer e.mu.Unlock()
	ev, finish, err := s.appendLocked(ctx, e, roomID, req)
	if errors.Is(err, errMoved) {
		e.reset()
	}
	return ev, finish, err
}

func (s *Service) appendLocked(ctx context.Context, e *roomEntry, roomID string, req sendRequest) (events.PDU, func(context.Context) error, error) {
	if c := req.txn; c != nil && !c.owned {
		// A request this process served while this one queued.
		if id := s.sent.get(c.key(), s.now().Unix()); id != "" {
			return nil, nil, &sentBefore{eventID: id}
		}
	}
	if e.head == nil {
		h, err := s.readHead(ctx, roomID)
		if err != nil {
			return nil, nil, err
		}
		e.head, e.state = h, map[events.StateKeyTuple]events.PDU{}
	}
	h := e.head
	req.proto.RoomID = roomID
	tuples, err := events.AuthStateNeeded(h.Version, req.proto)
	if err != nil {
		return nil, nil, err
	}
	want := append(tuples, req.also...)
	if p := req.proto; p.StateKey != nil {
		// The state replaced, for the new event's prev_content.
		want = append(want, events.StateKeyTuple{Type: p.Type, StateKey: *p.StateKey})
	}
	if err := s.fillLocked(ctx, roomID, e, want); err != nil {
		return nil, nil, err
	}
	if req.check != nil {
		if err := req.check(h.Version, e.state); err != nil {
			return nil, nil, err
		}
	}
	ev, err := s.buildLocal(h, req.proto, e.state, tuples)
	if err != nil {
		return nil, nil, err
	}
	next, finish, err := s.commit(ctx, roomID, h, []events.PDU{ev}, e.state, req.txn, e.locals)
	if errors.Is(err, errTxnTaken) {
		// Another request stored this transaction's event; the head and
		// state are as they were, unless a redaction changed the state.
		if ev.StateKey() != nil || ev.Type() == events.Redaction {
			e.reset()
		}
		return nil, nil, err
	}
	if err != nil {
		// A state event has already changed the cached state, which the
		// failed write did not store.
		e.reset()
		return nil, nil, err
	}
	e.head = next
	if c := req.txn; c != nil {
		s.sent.add(c.key(), ev.EventID(), s.now().Unix()+txnTTLSeconds)
	}
	return ev, finish, nil
}

// fillLocked reads, side by side, the room's local users if the entry does
// not hold them, and the state tuples it does not hold yet. Both reads
// begin once the head is read, so neither is older than the head: a state
// or membership change written after it is newer than the head, which
// stateFor reports as errMoved, or lands at a position the append then
// loses.
func (s *Service) fillLocked(ctx context.Context, roomID string, e *roomEntry, tuples []events.StateKeyTuple) error {
	if e.locals != nil {
		return s.fill(ctx, roomID, e, tuples)
	}
	var loc *locals
	var g errgroup.Group
	g.Go(func() error {
		l, err := s.readLocals(ctx, roomID)
		loc = l
		return err
	})
	g.Go(func() error { return s.fill(ctx, roomID, e, tuples) })
	if err := g.Wait(); err != nil {
		return err
	}
	e.locals = loc
	return nil
}

// fill reads the state tuples the entry does not hold yet; absent state is
// remembered as nil.
func (s *Service) fill(ctx context.Context, roomID string, e *roomEntry, tuples []events.StateKeyTuple) error {
	var missing []events.StateKeyTuple
	for _, t := range tuples {
		if _, ok := e.state[t]; !ok {
			missing = append(missing, t)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	found, err := s.stateFor(ctx, roomID, e.head, missing)
	if err != nil {
		return err
	}
	for _, t := range missing {
		e.state[t] = found[t]
	}
	return nil
}

// buildLocal builds p, an event of this server's, on h with the events of
// state at tuples as its auth events, and checks it as every local event
// is checked: its size, and the auth rules against those events.
func (s *Service) buildLocal(h *head, p events.Proto, state map[events.StateKeyTuple]events.PDU, tuples []events.StateKeyTuple) (events.PDU, error) {
	auth, err := events.NewState(authOnly(state, tuples))
	if err != nil {
		return nil, err
	}
	ev, err := s.Signer.Build(h.Version, p, h.graph(), auth, s.now())
	if err != nil {
		return nil, err
	}
	if err := events.CheckSize(ev.JSON()); err != nil {
		return nil, err
	}
	if err := events.Allowed(ev, auth); err != nil {
		return nil, err
	}
	return ev, nil
}

// authOnly returns the events of state at tuples, in the order of tuples,
// those it lacks left out: the auth state an event needs, or the stripped
// state shown to another server.
func authOnly(state map[events.StateKeyTuple]events.PDU, tuples []events.StateKeyTuple) []events.PDU {
	out := make([]events.PDU, 0, len(tuples))
	for _, t := range tuples {
		if ev := state[t]; ev != nil {
			out = append(out, ev)
		}
	}
	return out
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}
