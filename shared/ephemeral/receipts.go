package ephemeral

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// maxThreadHops is how many relations are followed to find an event's
// thread, as the spec recommends ("a maximum of 3 hops").
const maxThreadHops = 3

// SendReceipt sets the user's receipt of type typ (Read, ReadPrivate or
// FullyRead) on the event of the room, for thread ("" for an unthreaded
// receipt, MainThread, or a thread root's event ID). It is
// POST /rooms/{roomId}/receipt/{receiptType}/{eventId}.
//
// The user must be joined (ErrNotJoined) and the event in the room
// (ErrUnknownEvent). A thread must hold the event (ErrInvalidThread), as
// Synapse checks. FullyRead sets the m.fully_read room account data
// instead, and takes no thread. Receipts only move forward, as Synapse's
// do: one on an event that is not after the user's current receipt of that
// type and thread is accepted and changes nothing. A changed m.read tells
// the room's joined local users; m.read.private only the user.
func (s *Service) SendReceipt(ctx context.Context, userID, roomID, typ, eventID, thread string) error {
	switch typ {
	case Read, ReadPrivate:
	case FullyRead:
		if thread != "" {
			return fmt.Errorf("%w: %s takes no thread", ErrInvalidThread, FullyRead)
		}
	default:
		return fmt.Errorf("%w %q", ErrUnknownType, typ)
	}
	if err := s.joined(ctx, userID, roomID); err != nil {
		return err
	}
	ev, err := s.event(ctx, roomID, eventID)
	if err != nil {
		return err
	}
	if typ == FullyRead {
		return s.setFullyRead(ctx, userID, roomID, eventID)
	}
	if thread != "" {
		if err := s.checkThread(ctx, roomID, ev, thread); err != nil {
			return err
		}
	}
	ts, changed, err := s.setReceipt(ctx, userID, roomID, receipt{typ: typ, thread: thread, eventID: ev.PDU.EventID(), seq: ev.Seq})
	if err != nil || !changed {
		return err
	}
	if err := s.tell(ctx, roomID, audience(typ, userID)); err != nil {
		return err
	}
	if typ != Read {
		return nil // private receipts stay on this server
	}
	return s.federateReceipt(ctx, userID, roomID, ev.PDU.EventID(), thread, ts)
}

// ReadMarkers is the body of POST /rooms/{roomId}/read_markers: event IDs,
// "" for those not to set.
type ReadMarkers struct {
	FullyRead   string `json:"m.fully_read"`
	Read        string `json:"m.read"`
	ReadPrivate string `json:"m.read.private"`
}

// SetReadMarkers sets the fully read marker and the unthreaded receipts
// that m names, as SendReceipt would one by one, with one membership check
// and at most one round of news. Every event is checked before anything is
// written.
func (s *Service) SetReadMarkers(ctx context.Context, userID, roomID string, m ReadMarkers) error {
	if err := s.joined(ctx, userID, roomID); err != nil {
		return err
	}
	evs := map[string]rooms.Event{}
	for _, id := range []string{m.FullyRead, m.Read, m.ReadPrivate} {
		if _, done := evs[id]; id == "" || done {
			continue
		}
		ev, err := s.event(ctx, roomID, id)
		if err != nil {
			return err
		}
		evs[id] = ev
	}
	if m.FullyRead != "" {
		if err := s.setFullyRead(ctx, userID, roomID, m.FullyRead); err != nil {
			return err
		}
	}
	var private, public bool
	var publicTS int64
	if m.ReadPrivate != "" {
		_, changed, err := s.setReceipt(ctx, userID, roomID, receipt{typ: ReadPrivate, eventID: m.ReadPrivate, seq: evs[m.ReadPrivate].Seq})
		if err != nil {
			return err
		}
		private = changed
	}
	if m.Read != "" {
		ts, changed, err := s.setReceipt(ctx, userID, roomID, receipt{typ: Read, eventID: m.Read, seq: evs[m.Read].Seq})
		if err != nil {
			return err
		}
		public, publicTS = changed, ts
	}
	switch {
	case public: // everyone, the user too, and the other servers
		if err := s.tell(ctx, roomID, nil); err != nil {
			return err
		}
		return s.federateReceipt(ctx, userID, roomID, m.Read, "", publicTS)
	case private:
		return s.tell(ctx, roomID, audience(ReadPrivate, userID))
	}
	return nil
}

// audience is who is told of a receipt of type typ: nil for all the room's
// joined local users.
func audience(typ, userID string) []string {
	if typ == ReadPrivate {
		return []string{userID}
	}
	return nil
}

// event reads an event of the room: GetItem of its pointer and its slot.
func (s *Service) event(ctx context.Context, roomID, eventID string) (rooms.Event, error) {
	ev, err := s.Rooms.Event(ctx, roomID, eventID)
	if errors.Is(err, rooms.ErrUnknownEvent) {
		return rooms.Event{}, fmt.Errorf("%w: %s", ErrUnknownEvent, eventID)
	}
	if err != nil {
		return rooms.Event{}, fmt.Errorf("read event %s: %w", eventID, err)
	}
	return ev, nil
}

// setFullyRead writes the m.fully_read room account data. It may move
// back: a user may undo marking messages as read (Synapse allows it too).
func (s *Service) setFullyRead(ctx context.Context, userID, roomID, eventID string) error {
	content := mustJSON(map[string]string{"event_id": eventID})
	if err := s.AccountData.Set(ctx, userID, roomID, FullyRead, content); err != nil {
		return fmt.Errorf("set fully read marker: %w", err)
	}
	return nil
}

// receipt is a receipt to set: its type, thread ("" unthreaded), the
// event and the event's position in the room. seq is 0 for another
// server's receipt of an event this server does not hold (yet), which has
// no place to move forward from; remoteTS is the ts that server gave it.
type receipt struct {
	typ, thread, eventID string
	seq, remoteTS        int64
}

// setReceipt writes the receipt and its recent| copy, unless the user's
// current receipt of that type and thread is on the same event or a later
// one; it reports when it was set (Unix ms) and whether it wrote. GetItem
// of the current receipt, then one BatchWriteItem of the two items.
func (s *Service) setReceipt(ctx context.Context, userID, roomID string, r receipt) (int64, bool, error) {
	now := s.now()
	ts := now.UnixMilli()
	cur := item{
		PK: roomPK(roomID), SK: currentSK(r.typ, r.thread, userID), User: userID,
		Type: r.typ, Thread: r.thread, Event: r.eventID, Seq: r.seq, TS: ts, RemoteTS: r.remoteTS,
	}
	entry := cur
	entry.SK = recentSK(ts, r.typ, r.thread, userID)
	entry.Expires = now.Add(recentKeep).Unix() + 1
	if len(cur.SK) > maxSortKey || len(entry.SK) > maxSortKey {
		return 0, false, fmt.Errorf("%w: thread and user IDs are too long together", ErrInvalidThread)
	}
	var old item
	err := s.Store.Get(ctx, store.Key{PK: cur.PK, SK: cur.SK}, &old)
	switch {
	case err == nil && (old.Event == r.eventID || r.seq != 0 && old.Seq >= r.seq):
		return 0, false, nil
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return 0, false, fmt.Errorf("receipt of %s in %s: %w", userID, roomID, err)
	}
	if err := s.Store.PutMany(ctx, []any{cur, entry}); err != nil {
		return 0, false, fmt.Errorf("set receipt of %s in %s: %w", userID, roomID, err)
	}
	return ts, true, nil
}

// checkThread checks that ev is in thread, as Synapse does: for
// MainThread, that no m.thread relation is found following its relations
// (a thread root is in the main timeline); for a thread root, that ev is
// the root, relates to it, or is in its thread. Each relation followed
// reads the parent (pointer and slot).
func (s *Service) checkThread(ctx context.Context, roomID string, ev rooms.Event, thread string) error {
	cur := ev.PDU
	for hop := 0; ; hop++ {
		if cur.EventID() == thread {
			return nil
		}
		relType, parent := relatesTo(cur)
		found := ""
		switch {
		case relType == "m.thread":
			found = parent
		case parent == "" || hop == maxThreadHops:
			found = MainThread
		default:
			next, err := s.Rooms.Event(ctx, roomID, parent)
			if errors.Is(err, rooms.ErrUnknownEvent) {
				found = MainThread
				break
			}
			if err != nil {
				return fmt.Errorf("read event %s: %w", parent, err)
			}
			cur = next.PDU
			continue
		}
		if found != thread {
			return fmt.Errorf("%w: event %s is not in thread %s", ErrInvalidThread, ev.PDU.EventID(), thread)
		}
		return nil
	}
}

// relatesTo is the rel_type and parent event of ev's m.relates_to, if any.
func relatesTo(ev events.PDU) (relType, parent string) {
	var c struct {
		RelatesTo *struct {
			RelType string `json:"rel_type"`
			EventID string `json:"event_id"`
		} `json:"m.relates_to"`
	}
	if json.Unmarshal(ev.Content(), &c) != nil || c.RelatesTo == nil {
		return "", ""
	}
	return c.RelatesTo.RelType, c.RelatesTo.EventID
}
