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
	changed, err := s.setReceipt(ctx, userID, roomID, typ, ev, thread)
	if err != nil || !changed {
		return err
	}
	return s.tell(ctx, roomID, audience(typ, userID))
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
	if m.ReadPrivate != "" {
		changed, err := s.setReceipt(ctx, userID, roomID, ReadPrivate, evs[m.ReadPrivate], "")
		if err != nil {
			return err
		}
		private = changed
	}
	if m.Read != "" {
		changed, err := s.setReceipt(ctx, userID, roomID, Read, evs[m.Read], "")
		if err != nil {
			return err
		}
		public = changed
	}
	switch {
	case public: // everyone, the user too
		return s.tell(ctx, roomID, nil)
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

// setReceipt writes the receipt and its recent| copy, unless the user's
// current receipt of that type and thread is on the same event or a later
// one; it reports whether it wrote. GetItem of the current receipt, then
// one BatchWriteItem of the two items.
func (s *Service) setReceipt(ctx context.Context, userID, roomID, typ string, ev rooms.Event, thread string) (bool, error) {
	now := s.now()
	ts := now.UnixMilli()
	cur := item{
		PK: roomPK(roomID), SK: currentSK(typ, thread, userID), User: userID,
		Type: typ, Thread: thread, Event: ev.PDU.EventID(), Seq: ev.Seq, TS: ts,
	}
	entry := cur
	entry.SK = recentSK(ts, typ, thread, userID)
	entry.Expires = now.Add(recentKeep).Unix() + 1
	if len(cur.SK) > maxSortKey || len(entry.SK) > maxSortKey {
		return false, fmt.Errorf("%w: thread and user IDs are too long together", ErrInvalidThread)
	}
	var old item
	err := s.Store.Get(ctx, store.Key{PK: cur.PK, SK: cur.SK}, &old)
	switch {
	case err == nil && old.Seq >= ev.Seq:
		return false, nil
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return false, fmt.Errorf("receipt of %s in %s: %w", userID, roomID, err)
	}
	if err := s.Store.PutMany(ctx, []any{cur, entry}); err != nil {
		return false, fmt.Errorf("set receipt of %s in %s: %w", userID, roomID, err)
	}
	return true, nil
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
