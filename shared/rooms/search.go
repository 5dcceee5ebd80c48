package rooms

import (
	"context"
	"encoding/json"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// What server-side search (shared/search) reads of rooms: events by
// position as one user may see them, with their context.

// SearchView is what one user may see of one room, read once for a search:
// the two items history visibility needs.
type SearchView struct {
	s      *Service
	v      *viewer
	roomID string
}

// SearchView reads what userID may see of roomID; a room they may not read
// is 403 M_FORBIDDEN, as for /messages.
func (s *Service) SearchView(ctx context.Context, userID, roomID string) (*SearchView, error) {
	v, err := s.viewerOf(ctx, userID, roomID)
	if err != nil {
		return nil, err
	}
	return &SearchView{s: s, v: v, roomID: roomID}, nil
}

// Sees reports whether the user may see the event at position seq, by
// history visibility: what a search counts before loading any event.
func (sv *SearchView) Sees(seq int64) bool { return sv.v.sees(seq) }

// Found is an event a search found that the user may see, rendered for them.
type Found struct {
	Seq    int64
	PDU    events.PDU
	Client json.RawMessage
	ev     Event
}

// Load reads the events at the positions given, each with the ID it should
// hold, in one BatchGetItem (strongly consistent, one unit per 4 KB of each
// event). It keeps those the user may see and that are not redacted: a
// redacted event has no searchable text left, and what it had must not be
// found through it. Missing positions are left out.
func (sv *SearchView) Load(ctx context.Context, want map[int64]string) (map[int64]Found, error) {
	keys := make([]store.Key, 0, len(want))
	for seq := range want {
		pk, sk := slotKey(sv.roomID, seq)
		keys = append(keys, store.Key{PK: pk, SK: sk})
	}
	var evs []Event
	err := sv.s.Store.GetMany(ctx, keys, func(_ store.Key, decode func(any) error) error {
		var sl slot
		if err := decode(&sl); err != nil {
			return err
		}
		e, err := sl.event()
		if err != nil {
			return err
		}
		if want[e.Seq] == sl.EventID && e.RedactedBy == "" && sv.v.sees(e.Seq) {
			evs = append(evs, e)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	rendered, err := sv.s.renderFor(ctx, sv.v, evs)
	if err != nil {
		return nil, err
	}
	out := make(map[int64]Found, len(evs))
	for i, e := range evs {
		out[e.Seq] = Found{Seq: e.Seq, PDU: e.PDU, Client: rendered[i], ev: e}
	}
	return out, nil
}

// SearchContext is the event_context of a search result.
type SearchContext struct {
	Before, After []json.RawMessage
	Start, End    string
	// Senders are the senders of the result and of Before and After.
	Senders []string
	// last is the last event of the context, where profiles are read.
	last Event
}

// Context reads up to before events before f and after events after it
// that the user may see, as /context reads them (a Query of the room's
// slots each way).
func (sv *SearchView) Context(ctx context.Context, f Found, before, after int) (SearchContext, error) {
	b, start, _, err := sv.s.scan(ctx, sv.roomID, sv.v, f.Seq-1, -1, MessagesQuery{Backward: true, Limit: before})
	if err != nil {
		return SearchContext{}, err
	}
	a, end, _, err := sv.s.scan(ctx, sv.roomID, sv.v, f.Seq, -1, MessagesQuery{Limit: after})
	if err != nil {
		return SearchContext{}, err
	}
	c := SearchContext{last: f.ev}
	if len(a) > 0 {
		c.last = a[len(a)-1]
	}
	if start < 0 {
		start = 0
	}
	if end < 0 {
		end = c.last.Seq
	}
	c.Start, c.End = token(start), token(end)
	if c.Before, err = sv.s.renderFor(ctx, sv.v, b); err != nil {
		return SearchContext{}, err
	}
	if c.After, err = sv.s.renderFor(ctx, sv.v, a); err != nil {
		return SearchContext{}, err
	}
	seen := map[string]bool{}
	for _, e := range append(append(b, f.ev), a...) {
		if u := events.Sender(e.PDU); !seen[u] {
			seen[u] = true
			c.Senders = append(c.Senders, u)
		}
	}
	return c, nil
}

// Profiles reads the member events of c's senders in the state after c's
// last event: the profiles they had then (StateAt's reads).
func (sv *SearchView) Profiles(ctx context.Context, c SearchContext) (map[string]events.PDU, error) {
	state, err := sv.s.StateAt(ctx, sv.roomID, c.last)
	if err != nil {
		return nil, err
	}
	senders := map[string]bool{}
	for _, u := range c.Senders {
		senders[u] = true
	}
	out := map[string]events.PDU{}
	for _, ev := range state {
		if ev.Type() == events.Member && ev.StateKey() != nil && senders[*ev.StateKey()] {
			out[*ev.StateKey()] = ev
		}
	}
	return out, nil
}

// State is the room's state as the user may see it now: the current state
// for a member (one Query of the state items).
func (sv *SearchView) State(ctx context.Context) ([]json.RawMessage, error) {
	var state []events.PDU
	var err error
	if sv.v.joined() || sv.v.worldReadableNow() {
		state, err = sv.s.CurrentState(ctx, sv.roomID)
	} else {
		state, err = sv.s.stateAtToken(ctx, sv.roomID, sv.v.membership.Seq)
	}
	if err != nil {
		return nil, err
	}
	return sv.s.renderPDUs(ctx, state)
}
