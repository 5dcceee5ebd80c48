package federation

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"golang.org/x/sync/errgroup"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Engine is the room engine as the worker needs it.
type Engine interface {
	// Receive checks pdu against its auth events, against the state before
	// it and against the room's current state (soft failure), and stores
	// it, rejected or not; an event it already holds is no error. For a
	// PDU whose prev events it lacks it returns an error from which
	// MissingPrevEvents reads their IDs. Any other error is a failure to
	// try again.
	Receive(ctx context.Context, pdu events.PDU) error
	// MissingPrevEvents returns the event IDs err says are missing, or nil
	// when err is not the engine's missing-events error.
	MissingPrevEvents(err error) []string
}

// StateEngine is an Engine that can also take a PDU whose prev events
// stay missing, with the state before it as another server gave it (and
// that state's auth chain); the worker uses it when the Engine has it.
type StateEngine interface {
	Engine
	ReceiveWithState(ctx context.Context, pdu events.PDU, state, authChain []events.PDU) error
}

// Remote is the part of gomatrixserverlib's federation client the worker
// uses to fetch what a PDU lacks; fedclient.Client.Federation() is one.
type Remote interface {
	LookupMissingEvents(ctx context.Context, origin, s spec.ServerName, roomID string, missing fclient.MissingEvents, roomVersion gomatrixserverlib.RoomVersion) (fclient.RespMissingEvents, error)
	LookupState(ctx context.Context, origin, s spec.ServerName, roomID, eventID string, roomVersion gomatrixserverlib.RoomVersion) (fclient.RespState, error)
	LookupStateIDs(ctx context.Context, origin, s spec.ServerName, roomID, eventID string) (fclient.RespStateIDs, error)
	GetEvent(ctx context.Context, origin, s spec.ServerName, eventID string) (gomatrixserverlib.Transaction, error)
}

// The worker's bounds.
const (
	// MissingEventsLimit is the most events asked of /get_missing_events
	// for one PDU (Synapse asks for 10).
	MissingEventsLimit = 10
	// FetchTimeout bounds the fetches for one PDU: the missing events,
	// then the state.
	FetchTimeout = 20 * time.Second
	// leaseFor is how long a worker holds a room when its context has no
	// deadline (`cirrus serve`); in Lambda the lease ends with the
	// invocation.
	leaseFor = 5 * time.Minute
	// margin is the time a worker keeps in hand: it takes no new PDU with
	// less than this left of its lease.
	margin = FetchTimeout + 10*time.Second
	// maxTries is how often a PDU may fail (the table, the engine) before
	// it is dropped, so that one bad PDU cannot block its room for ever.
	maxTries  = 3
	drainPage = 10
	// MaxEventFetches is the most events of a state the worker fetches one
	// by one (/event); past it, it asks for the whole state (/state).
	MaxEventFetches = 20
	fetchParallel   = 5
)

// errNoEngine leaves PDUs in their inbox until an engine is wired.
var errNoEngine = errors.New("inbox worker: no room engine")

// lockItem is a worker's hold on a room's inbox: whoever holds it drains
// the inbox, in order, alone. It lapses at expires_at if its worker dies.
type lockItem struct {
	PK string `dynamodbav:"pk"`
	SK string `dynamodbav:"sk"`
	// Owner tells holders apart for whoever reads the table.
	Owner   string `dynamodbav:"owner"`
	Expires int64  `dynamodbav:"expires_at"`
}

const lockSK = "lock"

// Work is the queue.Handler of InboxKind messages: it drains the room's
// inbox, PDU by PDU in arrival order, under the room's lock, so that one
// worker at a time handles a room and any number of rooms run at once. A
// message for a room another worker holds is done at once: that worker
// looks at the inbox again after it lets go. A worker that runs short of
// time lets go and queues a new message for the rest.
func (in *Inbox) Work(ctx context.Context, body []byte) error {
	var j job
	if err := json.Unmarshal(body, &j); err != nil || j.RoomID == "" {
		return fmt.Errorf("inbox worker: bad message %q", body)
	}
	if in.Engine == nil {
		return errNoEngine
	}
	for {
		until, ok, err := in.lock(ctx, j.RoomID)
		if err != nil || !ok {
			return err
		}
		more, err := in.drain(ctx, j.RoomID, until)
		in.unlock(ctx, j.RoomID)
		if err != nil {
			return err
		}
		if more {
			return in.nudge(ctx, j.RoomID)
		}
		// A PDU queued while the lock was held had its message dropped
		// by the worker that found the room locked: look once more.
		var left []inboxItem
		if _, err := in.Store.QueryPage(ctx, store.Query{PK: inboxPK(j.RoomID), Prefix: inboxPrefix, Limit: 1}, &left); err != nil {
			return fmt.Errorf("inbox worker: %w", err)
		}
		if len(left) == 0 {
			return nil
		}
	}
}

// lock takes the room's lock until the lease ends; ok is false when
// another worker holds it.
func (in *Inbox) lock(ctx context.Context, roomID string) (until time.Time, ok bool, err error) {
	until = in.now().Add(leaseFor)
	if d, has := ctx.Deadline(); has {
		until = d
	}
	var b [8]byte
	rand.Read(b[:])
	// The item lapses a little after the lease, so that a worker's last
	// PDU never overlaps the next worker's first.
	it := lockItem{PK: inboxPK(roomID), SK: lockSK, Owner: hex.EncodeToString(b[:]), Expires: until.Add(time.Minute).Unix()}
	err = in.Store.Create(ctx, it)
	if errors.Is(err, store.ErrExists) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("inbox worker: lock %s: %w", roomID, err)
	}
	return until, true, nil
}

func (in *Inbox) unlock(ctx context.Context, roomID string) {
	ctx = context.WithoutCancel(ctx)
	if err := in.Store.Delete(ctx, store.Key{PK: inboxPK(roomID), SK: lockSK}); err != nil {
		// It lapses by itself.
		in.logger().LogAttrs(ctx, slog.LevelWarn, "inbox worker: unlock failed",
			slog.String("room_id", roomID), slog.Any("error", err))
	}
}

// drain handles the room's PDUs in order until none is left (more false)
// or the lease runs short (more true). A PDU that fails is tried again
// later, the room's later PDUs waiting behind it, up to maxTries.
func (in *Inbox) drain(ctx context.Context, roomID string, until time.Time) (more bool, err error) {
	for {
		var page []inboxItem
		if _, err := in.Store.QueryPage(ctx, store.Query{PK: inboxPK(roomID), Prefix: inboxPrefix, Limit: drainPage}, &page); err != nil {
			return false, fmt.Errorf("inbox worker: read inbox of %s: %w", roomID, err)
		}
		if len(page) == 0 {
			return false, nil
		}
		for _, it := range page {
			if until.Sub(in.now()) < margin {
				return true, nil
			}
			err := in.process(ctx, it)
			if err != nil && !errors.Is(err, errGiveUp) {
				tries, ierr := in.Store.Increment(ctx, store.Key{PK: it.PK, SK: it.SK}, "tries", time.Time{})
				if ierr != nil {
					return false, fmt.Errorf("inbox worker: %s in %s: %w (and counting the try: %v)", it.EventID, roomID, err, ierr)
				}
				if tries < maxTries {
					return false, fmt.Errorf("inbox worker: %s in %s (try %d of %d): %w", it.EventID, roomID, tries, maxTries, err)
				}
			}
			if err != nil {
				in.logger().LogAttrs(ctx, slog.LevelWarn, "inbound PDU dropped",
					slog.String("room_id", roomID), slog.String("event_id", it.EventID),
					slog.String("origin", it.Origin), slog.Any("error", err))
			}
			if err := in.Store.Delete(ctx, store.Key{PK: it.PK, SK: it.SK}); err != nil {
				return false, fmt.Errorf("inbox worker: %w", err)
			}
		}
		if len(page) < drainPage {
			return false, nil
		}
	}
}

// errGiveUp marks a PDU that no retry will place.
var errGiveUp = errors.New("gave up")

// process gives one PDU to the engine. When the engine lacks its prev
// events, it asks the origin for them (/get_missing_events, bounded by
// MissingEventsLimit and FetchTimeout), gives them to the engine oldest
// first and tries again; if some are still missing and the engine takes
// state, it asks the origin for the state before the PDU (/state) and
// gives the PDU with it.
func (in *Inbox) process(ctx context.Context, it inboxItem) error {
	ev, err := events.Parse(it.Version, it.EventID, []byte(it.PDU))
	if err != nil {
		return fmt.Errorf("%w: stored PDU does not parse: %v", errGiveUp, err)
	}
	fctx, cancel := context.WithTimeout(ctx, FetchTimeout)
	defer cancel()
	err = in.receiveAuth(ctx, fctx, it.Origin, ev)
	missing := in.Engine.MissingPrevEvents(err)
	if missing == nil {
		return err
	}
	if gerr := in.fillGap(fctx, it, ev); gerr != nil {
		in.logger().LogAttrs(ctx, slog.LevelInfo, "get_missing_events failed",
			slog.String("event_id", it.EventID), slog.String("origin", it.Origin), slog.Any("error", gerr))
	}
	err = in.receiveAuth(ctx, fctx, it.Origin, ev)
	missing = in.Engine.MissingPrevEvents(err)
	if missing == nil {
		return err
	}
	se, ok := in.Engine.(StateEngine)
	if !ok {
		return fmt.Errorf("%w: prev events %s still missing after /get_missing_events, and the engine takes no state", errGiveUp, strings.Join(missing, ", "))
	}
	state, chain, err := in.stateBefore(fctx, it, ev)
	if err != nil {
		return fmt.Errorf("%w: prev events %s missing; state before the event: %v", errGiveUp, strings.Join(missing, ", "), err)
	}
	return se.ReceiveWithState(ctx, ev, state, chain)
}

// fillGap asks the origin for the events between what the room has and the
// PDU, and gives those it can check to the engine, oldest first; it stops
// at the first the engine cannot place.
func (in *Inbox) fillGap(ctx context.Context, it inboxItem, ev events.PDU) error {
	if in.Remote == nil {
		return errors.New("no federation client")
	}
	roomID := events.RoomID(ev)
	res, err := in.Remote.LookupMissingEvents(ctx, spec.ServerName(in.ServerName), spec.ServerName(it.Origin), roomID,
		fclient.MissingEvents{Limit: MissingEventsLimit, EarliestEvents: in.earliest(ctx, roomID), LatestEvents: []string{ev.EventID()}},
		gomatrixserverlib.RoomVersion(it.Version))
	if err != nil {
		return fmt.Errorf("get_missing_events from %s: %w", it.Origin, err)
	}
	got := in.verifyAll(ctx, it.Version, roomID, res.Events)
	slices.SortStableFunc(got, func(a, b events.PDU) int { return int(a.Depth() - b.Depth()) })
	for _, m := range got {
		if m.EventID() == ev.EventID() {
			continue
		}
		if err := in.receiveAuth(ctx, ctx, it.Origin, m); err != nil {
			return fmt.Errorf("missing event %s: %w", m.EventID(), err)
		}
	}
	return nil
}

// earliest is get_missing_events' earliest_events: the room's forward
// extremities, where the origin's walk back from the PDU stops; none when
// they cannot be read (the walk then stops at the limit).
func (in *Inbox) earliest(ctx context.Context, roomID string) []string {
	if in.Extremities == nil {
		return []string{}
	}
	ids, _, err := in.Extremities(ctx, roomID)
	if err != nil || ids == nil {
		return []string{}
	}
	return ids
}

// stateBefore asks the origin for the room's state before ev and its auth
// chain, keeping the events whose hashes and signatures check: their IDs
// (/state_ids), then the few this server does not hold one by one
// (/event), or, when they are many or what it holds is unknown, all of
// them (/state).
func (in *Inbox) stateBefore(ctx context.Context, it inboxItem, ev events.PDU) (state, chain []events.PDU, err error) {
	if in.Remote == nil {
		return nil, nil, errors.New("no federation client")
	}
	roomID := events.RoomID(ev)
	origin, dest := spec.ServerName(in.ServerName), spec.ServerName(it.Origin)
	if in.Held != nil {
		ids, err := in.Remote.LookupStateIDs(ctx, origin, dest, roomID, ev.EventID())
		if err != nil {
			return nil, nil, fmt.Errorf("state_ids from %s: %w", it.Origin, err)
		}
		state, chain, ok, err := in.stateByIDs(ctx, it, roomID, ids)
		if err != nil || ok {
			return state, chain, err
		}
	}
	res, err := in.Remote.LookupState(ctx, origin, dest, roomID, ev.EventID(), gomatrixserverlib.RoomVersion(it.Version))
	if err != nil {
		return nil, nil, fmt.Errorf("state from %s: %w", it.Origin, err)
	}
	return in.verifyAll(ctx, it.Version, roomID, res.StateEvents), in.verifyAll(ctx, it.Version, roomID, res.AuthEvents), nil
}

// stateByIDs builds the state and auth chain /state_ids named from the
// events this server holds and, when at most MaxEventFetches are
// missing, those fetched with /event; ok is false when more are missing.
func (in *Inbox) stateByIDs(ctx context.Context, it inboxItem, roomID string, ids fclient.RespStateIDs) (state, chain []events.PDU, ok bool, err error) {
	all := append(slices.Clone(ids.StateEventIDs), ids.AuthEventIDs...)
	held, err := in.Held(ctx, roomID, all)
	if err != nil {
		return nil, nil, false, fmt.Errorf("read held events: %w", err)
	}
	var want []string
	for _, id := range all {
		if _, ok := held[id]; !ok && !slices.Contains(want, id) {
			want = append(want, id)
		}
	}
	if len(want) > MaxEventFetches {
		return nil, nil, false, nil
	}
	got := make([][]spec.RawJSON, len(want))
	var g errgroup.Group
	g.SetLimit(fetchParallel)
	for i, id := range want {
		g.Go(func() error {
			txn, err := in.Remote.GetEvent(ctx, spec.ServerName(in.ServerName), spec.ServerName(it.Origin), id)
			if err == nil {
				for _, raw := range txn.PDUs {
					got[i] = append(got[i], spec.RawJSON(raw))
				}
			}
			return nil // an event that cannot be had is left out, as at /state
		})
	}
	g.Wait()
	byID := maps.Clone(held)
	if byID == nil {
		byID = map[string]events.PDU{}
	}
	for _, raws := range got {
		for _, ev := range in.verifyAll(ctx, it.Version, roomID, raws) {
			if slices.Contains(want, ev.EventID()) {
				byID[ev.EventID()] = ev
			}
		}
	}
	pick := func(ids []string) []events.PDU {
		out := make([]events.PDU, 0, len(ids))
		for _, id := range ids {
			if ev, ok := byID[id]; ok {
				out = append(out, ev)
			}
		}
		return out
	}
	return pick(ids.StateEventIDs), pick(ids.AuthEventIDs), true, nil
}

// verifyAll parses fetched events of room roomID (version v), checking
// their content hashes (a mismatch keeps the redacted form) and
// signatures; events that fail or belong elsewhere are left out.
func (in *Inbox) verifyAll(ctx context.Context, v, roomID string, raws []spec.RawJSON) []events.PDU {
	out := make([]events.PDU, 0, len(raws))
	verifier := in.verifier()
	for _, raw := range raws {
		ev, err := events.ParseUntrusted(v, raw)
		if err != nil || events.RoomID(ev) != roomID {
			continue
		}
		if err := gomatrixserverlib.VerifyEventSignatures(ctx, ev, verifier, senderUserID); err != nil {
			continue
		}
		out = append(out, ev)
	}
	return out
}

// RoomEngine is the Engine over shared/rooms.
type RoomEngine struct {
	Rooms  *rooms.Service
	Logger *slog.Logger
}

// Receive gives pdu to rooms.Service.Receive. A PDU the room can never
// take (rooms.ErrBadEvent) is given up at once rather than tried again.
func (e RoomEngine) Receive(ctx context.Context, pdu events.PDU) error {
	out, err := e.Rooms.Receive(ctx, pdu)
	if errors.Is(err, rooms.ErrBadEvent) {
		return fmt.Errorf("%w: %v", errGiveUp, err)
	}
	if err == nil && out.Status != rooms.Accepted && !out.Duplicate && e.Logger != nil {
		e.Logger.LogAttrs(ctx, slog.LevelInfo, "inbound PDU kept out",
			slog.String("event_id", pdu.EventID()), slog.String("status", string(out.Status)), slog.String("reason", out.Reason))
	}
	return err
}

// MissingPrevEvents reads a rooms.MissingEventsError: the missing
// prev_events, or the missing auth_events when those are all.
func (RoomEngine) MissingPrevEvents(err error) []string {
	var m *rooms.MissingEventsError
	if !errors.As(err, &m) {
		return nil
	}
	if len(m.IDs) > 0 {
		return m.IDs
	}
	return append([]string{}, m.AuthIDs...)
}
