package rooms

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// History older than what the server holds (server-server API,
// "Backfilling and retrieving missing events"): a room taken in through a
// remote join starts at joinBase, and the events fetched from other
// servers as a client pages back past its lowest position take the
// positions below it, the newest just below, so that no position, token
// or history already given out moves (docs/storage.md, "Backfilled and
// missing events").
//
// A backfilled event is an outlier with a position: the state at it is
// unknown, so it is checked against its auth events alone, it changes no
// current state, it is never a forward extremity (the head is the highest
// slot), and it is never told to the users' sync streams (notify): an
// incremental /sync reads only past its token, which is above it. Its slot
// carries the state position (ss) of the slot above it, so that readers
// of the state at it find a snapshot: the earliest state this server
// knows, not the event's own.

// backfillChunk is how many events one transaction places: a slot, a
// pointer and at most a relation each, within DynamoDB's 100 actions.
const backfillChunk = 33

// TakeBackfilled stores pdus, events of roomID older than every event it holds,
// whose signatures and hashes the caller checked, at the positions below
// the room's lowest: the oldest (by depth, then ID) lowest. Each is stored
// once: an event held already is left as it is (Duplicate). An event the
// auth rules refuse against its auth events is stored Rejected, outside
// the timeline; one whose auth events this server does not hold (nor pdus)
// is not stored, its Outcome's Status empty and Reason saying why. The
// outcomes follow pdus.
//
// Cost: a Query of the lowest slot (Limit 1), a BatchGetItem of the
// pointers (the events held already), the auth events not among pdus
// (pointers and slots), then one TransactWriteItems per backfillChunk
// events of their slots and pointers (creates).
func (s *Service) TakeBackfilled(ctx context.Context, roomID string, pdus []events.PDU) ([]Outcome, error) {
	for attempt := 0; attempt < maxAttempts; attempt++ {
		out, err := s.tryBackfill(ctx, roomID, pdus)
		if errors.Is(err, errMoved) {
			if err := raceBackoff.Wait(ctx, attempt); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("backfill %s: %w", roomID, err)
		}
		return out, nil
	}
	return nil, fmt.Errorf("backfill %s: gave up after %d attempts", roomID, maxAttempts)
}

// lowestSlot reads the room's first slot: one Query, ascending, Limit 1.
func (s *Service) lowestSlot(ctx context.Context, roomID string) (Event, error) {
	var page []slot
	q := store.Query{PK: roomPK(roomID), Prefix: slotPrefix, Limit: 1}
	if _, err := s.Store.QueryPage(ctx, q, &page); err != nil {
		return Event{}, err
	}
	if len(page) == 0 {
		return Event{}, refuse(ErrNotFound, "room %s is not known to this server", roomID)
	}
	return page[0].event()
}

// Lowest is the position of the room's oldest event held: joinBase or
// below in a room taken in through a remote join, 1 in one created here.
func (s *Service) Lowest(ctx context.Context, roomID string) (int64, error) {
	e, err := s.lowestSlot(ctx, roomID)
	return e.Seq, err
}

func (s *Service) tryBackfill(ctx context.Context, roomID string, pdus []events.PDU) ([]Outcome, error) {
	low, err := s.lowestSlot(ctx, roomID)
	if err != nil {
		return nil, err
	}
	version := string(low.PDU.Version())
	out := make([]Outcome, len(pdus))
	byID := map[string][]int{}
	var ids []string
	for i, ev := range pdus {
		switch {
		case events.RoomID(ev) != roomID:
			out[i].Reason = "event of another room"
		case string(ev.Version()) != version:
			out[i].Reason = "event of another room version"
		default:
			if byID[ev.EventID()] == nil {
				ids = append(ids, ev.EventID())
			}
			byID[ev.EventID()] = append(byID[ev.EventID()], i)
		}
	}
	held, err := s.pointers(ctx, ids)
	if err != nil {
		return nil, err
	}
	var fresh []events.PDU
	for _, id := range ids {
		i := byID[id][0]
		if p, ok := held[id]; ok {
			out[i] = p.outcome()
		} else {
			fresh = append(fresh, pdus[i])
		}
	}
	sort.Slice(fresh, func(i, j int) bool {
		if fresh[i].Depth() != fresh[j].Depth() {
			return fresh[i].Depth() < fresh[j].Depth()
		}
		return fresh[i].EventID() < fresh[j].EventID()
	})
	placed, rejected, skipped, err := s.authBackfill(ctx, roomID, fresh)
	if err != nil {
		return nil, err
	}
	if int64(len(placed)) >= low.Seq {
		return nil, refuse(ErrInvalid, "room %s has no positions left below %d for %d events", roomID, low.Seq, len(placed))
	}
	var ops []store.Op
	seqs := map[string]int64{}
	// Newest first, down from the lowest slot: a transaction that fails
	// leaves the ones before it in place, contiguous below the room.
	for i := len(placed) - 1; i >= 0; i-- {
		ev := placed[i]
		seq := low.Seq - int64(len(placed)-i)
		seqs[ev.EventID()] = seq
		ops = append(ops, store.CreateOp(s.newSlot(roomID, seq, ev, low.StateSeq)), store.CreateOp(newPointer(roomID, seq, ev)))
		if rel := relationOf(roomID, seq, ev); rel != nil {
			ops = append(ops, store.PutOp(*rel))
		}
		if (len(placed)-i)%backfillChunk == 0 {
			if err := s.transactBackfill(ctx, ops); err != nil {
				return nil, err
			}
			ops = nil
		}
	}
	for _, r := range rejected {
		p := pointer{PK: pointerPK(r.ev.EventID()), SK: "event", RoomID: roomID, Status: string(Rejected), Reason: r.reason, PDU: string(r.ev.JSON()), Version: version}
		ops = append(ops, store.CreateOp(p))
		if len(ops) >= store.MaxTransactActions-2 {
			if err := s.transactBackfill(ctx, ops); err != nil {
				return nil, err
			}
			ops = nil
		}
	}
	if len(ops) > 0 {
		if err := s.transactBackfill(ctx, ops); err != nil {
			return nil, err
		}
	}
	reasons := map[string]string{}
	for _, r := range rejected {
		reasons[r.ev.EventID()] = r.reason
	}
	for id, idx := range byID {
		i := idx[0]
		switch {
		case out[i].Status != "":
		case seqs[id] != 0:
			out[i] = Outcome{Status: Accepted, Seq: seqs[id]}
		case reasons[id] != "":
			out[i] = Outcome{Status: Rejected, Reason: reasons[id]}
		default:
			out[i].Reason = skipped[id]
		}
		for _, j := range idx[1:] {
			out[j] = out[i]
			out[j].Duplicate = true
		}
	}
	return out, nil
}

// transactBackfill writes one chunk of a backfill: a conflict (another
// backfill took a position, or stored one of the events) is errMoved, and
// the backfill starts again from the new lowest slot.
func (s *Service) transactBackfill(ctx context.Context, ops []store.Op) error {
	err := s.Store.Transact(ctx, ops...)
	if errors.Is(err, store.ErrConflict) {
		return errMoved
	}
	return err
}

// pointers reads the pointers of ids that exist: one BatchGetItem.
func (s *Service) pointers(ctx context.Context, ids []string) (map[string]pointer, error) {
	out := map[string]pointer{}
	if len(ids) == 0 {
		return out, nil
	}
	keys := make([]store.Key, 0, len(ids))
	for _, id := range ids {
		keys = append(keys, store.Key{PK: pointerPK(id), SK: "event"})
	}
	err := s.Store.GetMany(ctx, keys, func(k store.Key, decode func(any) error) error {
		var p pointer
		if err := decode(&p); err != nil {
			return err
		}
		out[k.PK[len("event|"):]] = p
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read event pointers: %w", err)
	}
	return out, nil
}

type rejection struct {
	ev     events.PDU
	reason string
}

// authBackfill checks evs, oldest first, against their auth events, which
// may be among evs: those allowed are placed, those refused rejected, and
// those whose auth events are held nowhere skipped (with why, by ID).
func (s *Service) authBackfill(ctx context.Context, roomID string, evs []events.PDU) (placed []events.PDU, rejected []rejection, skipped map[string]string, err error) {
	l := newGraphLoader(s, roomID)
	for _, ev := range evs {
		l.known[ev.EventID()] = ev
	}
	skipped = map[string]string{}
	for _, ev := range evs {
		if ev.Type() == events.Create {
			// The room's own create event is held since the join: another
			// is not of this room.
			l.rejected[ev.EventID()] = true
			rejected = append(rejected, rejection{ev, "a second create event"})
			continue
		}
		reason, err := s.checkAuthEvents(ctx, l, ev)
		var missing *MissingEventsError
		switch {
		case errors.As(err, &missing):
			delete(l.known, ev.EventID())
			skipped[ev.EventID()] = fmt.Sprintf("auth events %v are not held", missing.AuthIDs)
		case err != nil:
			return nil, nil, nil, err
		case reason != "":
			l.rejected[ev.EventID()] = true
			rejected = append(rejected, rejection{ev, reason})
		default:
			placed = append(placed, ev)
		}
	}
	return placed, rejected, skipped, nil
}

// Backfiller asks the servers in roomID, of room version version, for up
// to limit events before the events from names (the /backfill of the
// server-server API), and returns them with their signatures and hashes
// checked. An error means no server answered.
type Backfiller func(ctx context.Context, roomID, version string, from []string, limit int) ([]events.PDU, error)

// backfillBefore fetches up to limit events older than the room's lowest
// through the Backfiller and stores them (TakeBackfilled); it reports
// whether any was stored. A room created here (its lowest position 1)
// holds its whole history and is not asked about; nor is one whose oldest
// events' prev_events are all held (its history is complete). A failure
// of the other servers leaves the page as it is: the history is there to
// be asked for again.
//
// Cost, a room created here: one Query of its first slot. A remote room:
// that, a GetItem of the slot the reader's join holds while nothing is
// backfilled, a BatchGetItem of the pointers of the frontier, then the
// request and TakeBackfilled.
func (s *Service) backfillBefore(ctx context.Context, roomID string, v *viewer, limit int) (bool, error) {
	low, err := s.lowestSlot(ctx, roomID)
	if err != nil || low.Seq <= 1 {
		return false, err
	}
	from := low.PDU.PrevEventIDs()
	if low.Seq >= joinBase {
		// Nothing backfilled yet: the state taken in at the join sits
		// first, ordered by depth, not by the graph; the history runs back
		// from the reader's join (a reader who joined later finds its
		// prev_events held, and nothing is asked).
		if from, err = s.joinFrontier(ctx, roomID, v); err != nil || len(from) == 0 {
			return false, err
		}
	}
	held, err := s.pointers(ctx, from)
	if err != nil {
		return false, err
	}
	var ask []string
	for _, id := range from {
		if _, ok := held[id]; !ok {
			ask = append(ask, id)
		}
	}
	if len(ask) == 0 {
		return false, nil
	}
	pdus, err := s.Backfiller(ctx, roomID, string(low.PDU.Version()), ask, max(limit, 10))
	if err != nil || len(pdus) == 0 {
		return false, nil
	}
	out, err := s.TakeBackfilled(ctx, roomID, pdus)
	if err != nil {
		return false, err
	}
	for _, o := range out {
		if o.Status == Accepted && !o.Duplicate {
			return true, nil
		}
	}
	return false, nil
}

// joinFrontier is the prev_events of the reader's first join at or above
// joinBase: where the history before the room was taken in ends.
func (s *Service) joinFrontier(ctx context.Context, roomID string, v *viewer) ([]string, error) {
	for _, h := range v.membership.History {
		p, m, _ := strings.Cut(h, ":")
		seq, err := strconv.ParseInt(p, 10, 64)
		if err != nil || m != "join" || seq < joinBase {
			continue
		}
		pk, sk := slotKey(roomID, seq)
		var sl slot
		if err := s.Store.Get(ctx, store.Key{PK: pk, SK: sk}, &sl); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return nil, nil
			}
			return nil, err
		}
		e, err := sl.event()
		if err != nil {
			return nil, err
		}
		return e.PDU.PrevEventIDs(), nil
	}
	return nil, nil
}
