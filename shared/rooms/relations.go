package rooms

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/events"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// relation indexes an event that relates to another (a thread reply, an
// edit, a reaction) under its parent, in the parent's room partition.
//
// A message's relation is written before its slot is claimed: one written
// for a slot that another event won names an event the slot does not
// hold, and is skipped.
type relation struct {
	PK      string `dynamodbav:"pk"` // room|<room ID>
	SK      string `dynamodbav:"sk"` // rel|<parent ID>|<position>
	RelType string `dynamodbav:"rt"`
	Type    string `dynamodbav:"t"`
	Seq     int64  `dynamodbav:"seq"`
	// EventID is the child's; empty on items of an older layout, which
	// were written after their slot.
	EventID string `dynamodbav:"id,omitempty"`
}

func relPrefix(parent string) string { return "rel|" + parent + "|" }

// relationOf reads m.relates_to of ev, if it has one.
func relationOf(roomID string, seq int64, ev events.PDU) *relation {
	var c struct {
		RelatesTo *struct {
			RelType string `json:"rel_type"`
			EventID string `json:"event_id"`
		} `json:"m.relates_to"`
	}
	if json.Unmarshal(ev.Content(), &c) != nil || c.RelatesTo == nil || c.RelatesTo.RelType == "" {
		return nil
	}
	// The parent is part of the key: one that is no event ID (too long
	// for a key, or holding a NUL) relates to nothing this server holds.
	if !ValidEventID(c.RelatesTo.EventID) {
		return nil
	}
	return &relation{
		PK: roomPK(roomID), SK: fmt.Sprintf("%s%012d", relPrefix(c.RelatesTo.EventID), seq),
		RelType: c.RelatesTo.RelType, Type: ev.Type(), Seq: seq, EventID: ev.EventID(),
	}
}

// relationsPoint reads a from or to token of /relations. Its own tokens
// name the position where the next page starts, inclusive; a /sync token
// stands just after an event: going forwards, the next position is the
// first after it.
func (s *Service) relationsPoint(ctx context.Context, userID, roomID, t string, backward bool) (int64, error) {
	seq, err := s.position(ctx, userID, roomID, t)
	if err != nil || strings.HasPrefix(t, "t") || backward {
		return seq, err
	}
	return seq + 1, nil
}

// RelationsQuery is GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]].
type RelationsQuery struct {
	RelType, EventType string
	From, To           string
	Backward           bool
	Limit              int
}

// Relations is a page of events relating to one event.
type Relations struct {
	Chunk     []json.RawMessage `json:"chunk"`
	NextBatch string            `json:"next_batch,omitempty"`
	PrevBatch string            `json:"prev_batch,omitempty"`
}

// RelationsOf pages through the events relating to eventID that userID may
// see, newest first unless dir=f.
func (s *Service) RelationsOf(ctx context.Context, userID, roomID, eventID string, q RelationsQuery) (Relations, error) {
	v, err := s.viewerOf(ctx, userID, roomID)
	if err != nil {
		return Relations{}, err
	}
	if _, err := s.visible(ctx, v, roomID, eventID); err != nil {
		return Relations{}, err
	}
	if q.Limit <= 0 {
		q.Limit = 50
	}
	q.Limit = min(q.Limit, 1000)
	query := store.Query{PK: roomPK(roomID), Prefix: relPrefix(eventID), Descending: q.Backward}
	if q.From != "" {
		seq, err := s.relationsPoint(ctx, userID, roomID, q.From, q.Backward)
		if err != nil {
			return Relations{}, err
		}
		query.From = fmt.Sprintf("%s%012d", relPrefix(eventID), seq)
	}
	stop := int64(-1)
	if q.To != "" {
		if stop, err = s.relationsPoint(ctx, userID, roomID, q.To, q.Backward); err != nil {
			return Relations{}, err
		}
	}
	var rels []relation
	if _, err := s.Store.QueryPage(ctx, query, &rels); err != nil {
		return Relations{}, err
	}
	var keys []store.Key
	ids := map[int64]string{}
	next := int64(-1)
	for _, r := range rels {
		// The prefix of a parent whose ID holds '|' also matches the
		// relations of a parent whose ID starts with it and '|'.
		if len(r.SK) != len(query.Prefix)+12 {
			continue
		}
		if stop >= 0 && ((q.Backward && r.Seq <= stop) || (!q.Backward && r.Seq >= stop)) {
			break
		}
		if (q.RelType != "" && r.RelType != q.RelType) || (q.EventType != "" && r.Type != q.EventType) || !v.sees(r.Seq) {
			continue
		}
		if len(keys) == q.Limit {
			next = r.Seq
			break
		}
		pk, sk := slotKey(roomID, r.Seq)
		keys = append(keys, store.Key{PK: pk, SK: sk})
		ids[r.Seq] = r.EventID
	}
	found, err := s.slotsAt(ctx, keys)
	if err != nil {
		return Relations{}, err
	}
	var evs []Event
	for _, k := range keys {
		seq, _ := seqOf(k.SK)
		// A redacted child has lost its m.relates_to: the spec breaks the
		// relationship, so it is left out (the page may come up short).
		e, ok := found[seq]
		if id := ids[seq]; ok && id != "" && e.PDU.EventID() != id {
			continue // written for a slot another event won
		}
		if ok && e.RedactedBy == "" {
			evs = append(evs, e)
		}
	}
	out := Relations{}
	if out.Chunk, err = s.renderFor(ctx, v, evs); err != nil {
		return Relations{}, err
	}
	if next >= 0 {
		out.NextBatch = token(next)
	}
	if q.From != "" {
		out.PrevBatch = q.From
	}
	return out, nil
}
