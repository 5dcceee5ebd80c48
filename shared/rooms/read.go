package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// A token names a place in a room's timeline: "t<n>" is just after the
// event at position n, so paging backwards from it starts with that event
// and paging forwards with the next one.
func token(seq int64) string { return "t" + strconv.FormatInt(seq, 10) }

// maxSeq is the last position a slot key can hold (12 digits). A token past
// it names no place in any room: paging from it would overflow.
const maxSeq = 999_999_999_999

func parseToken(t string) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimPrefix(t, "t"), 10, 64)
	if err != nil || !strings.HasPrefix(t, "t") || n < 0 || n > maxSeq {
		return 0, refuse(ErrInvalid, "invalid pagination token %q", t)
	}
	return n, nil
}

// position reads a token of the room that userID gives: a room token, or a
// /sync token (next_batch), which the spec accepts wherever a pagination
// token goes; both come out as the position just after which they stand.
// Any other token, or a sync token of another user, is 400 M_INVALID_PARAM.
func (s *Service) position(ctx context.Context, userID, roomID, t string) (int64, error) {
	if strings.HasPrefix(t, "t") || s.SyncPosition == nil {
		return parseToken(t)
	}
	n, err := s.SyncPosition(ctx, userID, roomID, t)
	if err == nil && (n < 0 || n > maxSeq) {
		return 0, refuse(ErrInvalid, "invalid pagination token %q", t)
	}
	return n, err
}

// positionPage is how many of the newest events PositionAt reads at first:
// a client asks with the token of its last sync, after which few events
// came.
const positionPage = 10

// PositionAt is the position of the room's last event stamped at or before
// t, 0 when there is none: where a /sync token stands in a room it does not
// name. The server stamps the events it appends with the time, so stamps
// rise with positions. Cost: a Query of the newest events (one page of
// positionPage); only when the room moved on by more since t, a binary
// search by one-event Queries (about 1 RCU each, log2 of the room's length;
// in a room taken in through a remote join, one Query more of its first
// event).
func (s *Service) PositionAt(ctx context.Context, roomID string, t time.Time) (int64, error) {
	ms := t.UnixMilli()
	stamp := func(e Event) int64 { return int64(e.PDU.OriginServerTS()) }
	page, err := s.slots(ctx, roomID, live, true, positionPage)
	if err != nil {
		return 0, err
	}
	for _, e := range page {
		if stamp(e) <= ms {
			return e.Seq, nil
		}
	}
	if len(page) < positionPage {
		return 0, nil
	}
	// The answer is in [lo, hi]; lo 0 stands for "before the room began".
	lo, hi := int64(0), page[len(page)-1].Seq-1
	if hi >= joinBase {
		// A room taken in through a remote join starts at joinBase or
		// below: one read of its first slot spares the search the empty
		// positions under it.
		first, err := s.lowestSlot(ctx, roomID)
		if err != nil {
			return 0, err
		}
		if stamp(first) > ms {
			return 0, nil
		}
		lo = min(first.Seq, hi)
	}
	for lo < hi {
		mid := (lo + hi + 1) / 2
		evs, err := s.slots(ctx, roomID, mid, true, 1)
		if err != nil {
			return 0, err
		}
		if len(evs) > 0 && stamp(evs[0]) <= ms {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo, nil
}

// render turns stored events into the client format, redacted as their
// redactions say.
func (s *Service) render(ctx context.Context, evs []Event, opts ...events.Option) ([]json.RawMessage, error) {
	return s.renderFor(ctx, nil, evs, opts...)
}

// renderFor renders timeline events for the viewer v, each with
// unsigned.membership: v's membership just after the event (MSC4115, spec
// v1.11), "leave" where they had none, so that a client tells events from
// before its user joined, or after they left. A nil v sets none. The
// events that the device of v's user the rendering is for (WithDevice)
// sent carry their transaction IDs.
func (s *Service) renderFor(ctx context.Context, v *viewer, evs []Event, opts ...events.Option) ([]json.RawMessage, error) {
	out := make([]json.RawMessage, 0, len(evs))
	now := s.now()
	device := deviceOf(ctx)
	format := formatOf(ctx)
	because, err := s.redactionsOf(ctx, evs, now)
	if err != nil {
		return nil, err
	}
	o := make([]events.Option, 0, len(opts)+4)
	for _, e := range evs {
		pdu := e.PDU
		o = append(o[:0], opts...)
		if v != nil {
			o = append(o, events.WithMembership(v.membershipAt(e.Seq)))
		}
		if e.PrevContent != nil && e.RedactedBy == "" {
			o = append(o, events.WithPrevContent(e.PrevContent))
		}
		// Only the device that sent an event learns its transaction ID.
		if dev, id, ok := strings.Cut(e.Txn, "|"); ok && v != nil && device != "" && dev == device && events.Sender(pdu) == v.userID {
			o = append(o, events.WithTransactionID(id))
		}
		if e.RedactedBy != "" {
			var err error
			if pdu, err = events.Redact(pdu); err != nil {
				return nil, err
			}
			if r, ok := because[e.RedactedBy]; ok {
				o = append(o, events.WithRedactedBecause(r))
			}
		}
		raw, err := events.ClientEvent(pdu, format, now, o...)
		if err != nil {
			return nil, err
		}
		out = append(out, raw)
	}
	return out, nil
}

// maxRedactionReads bounds the reads of redactions in flight for one page.
const maxRedactionReads = 16

// redactionsOf renders the redactions of the redacted events of evs, the
// redacted_because of their targets, by redaction ID. A redaction in evs,
// as it mostly is in a page going back from the live end, needs no read;
// the others are read side by side, two round trips for a page however
// many it holds. A redaction that cannot be read is left out, its targets
// shown redacted without it.
func (s *Service) redactionsOf(ctx context.Context, evs []Event, now time.Time) (map[string]json.RawMessage, error) {
	var ids []string
	for _, e := range evs {
		if e.RedactedBy != "" && !slices.Contains(ids, e.RedactedBy) {
			ids = append(ids, e.RedactedBy)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	found := make([]*Event, len(ids))
	for i, id := range ids {
		if j := slices.IndexFunc(evs, func(e Event) bool { return e.PDU.EventID() == id }); j >= 0 {
			found[i] = &evs[j]
		}
	}
	var g errgroup.Group
	g.SetLimit(maxRedactionReads)
	for i, id := range ids {
		if found[i] != nil {
			continue
		}
		g.Go(func() error {
			if r, err := s.Event(ctx, "", id); err == nil {
				found[i] = &r
			}
			return nil
		})
	}
	_ = g.Wait()
	out := make(map[string]json.RawMessage, len(ids))
	for i, r := range found {
		if r == nil {
			continue
		}
		because, err := events.ClientEvent(r.PDU, events.FormatClient, now)
		if err != nil {
			return nil, err
		}
		out[ids[i]] = because
	}
	return out, nil
}

// MessagesQuery is GET /rooms/{roomId}/messages.
type MessagesQuery struct {
	From, To string
	Backward bool
	Limit    int
	Filter   *events.RoomEventFilter
	// News is set by /sync, whose timelines are the events as they
	// arrived: events placed in a gap of the timeline since (gap.go) are
	// history, left out, and no other server is asked for them.
	News bool
}

// Page is a page of a room's timeline.
type Page struct {
	Chunk []json.RawMessage `json:"chunk"`
	Start string            `json:"start"`
	End   string            `json:"end,omitempty"`
	State []json.RawMessage `json:"state,omitempty"`
	// Oldest is the position of the oldest event in Chunk (0 when empty):
	// where state before the page is taken, whatever history hid.
	Oldest int64 `json:"-"`
	// Positions are the positions of Chunk's events, in its order.
	Positions []int64 `json:"-"`
	// Resolved reports that at an event of Chunk resolving forks changed
	// the room's state other than by a state event of the timeline.
	Resolved bool `json:"-"`
	// Gap reports, for a /sync page (News), that a gap of the timeline
	// (gap.go) lies after To: events are missing from it, whatever was
	// filled since, so its timeline is limited.
	Gap bool `json:"-"`
	// Newest is, for a /sync page (News) read back from a position, the
	// newest position held at or before it, where the reader may see
	// that far: below it while the message a stream entry named is still
	// on its way to its slot (Service.Landing), and the page's To when
	// nothing after To is held yet. Else it is the position read from.
	Newest int64 `json:"-"`
}

// Messages pages through the room's timeline as userID may see it. In the
// common case, a page from the live end or from a room token, it costs one
// round trip: the viewer's reads and the first page of slots side by side
// (pageOf).
func (s *Service) Messages(ctx context.Context, userID, roomID string, q MessagesQuery) (Page, error) {
	if q.Limit <= 0 {
		q.Limit = 10
	}
	q.Limit = min(q.Limit, 1000)
	v, from, stop, first, err := s.pageOf(ctx, userID, roomID, q)
	if err != nil {
		return Page{}, err
	}
	v.news = q.News
	evs, end, top, err := s.scanFirst(ctx, roomID, v, from, stop, q, first)
	if err != nil {
		return Page{}, err
	}
	if q.Backward && s.Backfiller != nil && len(v.info.Gaps) > 0 {
		// The page may have gone past events missing from the timeline.
		if evs, end, top, err = s.throughGaps(ctx, roomID, v, from, stop, q, evs, end, top); err != nil {
			return Page{}, err
		}
	}
	if q.Backward && end < 0 && stop < 0 && len(evs) < q.Limit && s.Backfiller != nil && !reachesOne(evs) {
		// The page reached the oldest event held: a room taken in through
		// a remote join may have older history on other servers. (A page
		// holding position 1 is of a room created here: no read more.)
		more, err := s.backfillBefore(ctx, roomID, v, q.Limit-len(evs))
		if err != nil {
			return Page{}, err
		}
		if more {
			if evs, end, top, err = s.scan(ctx, roomID, v, from, stop, q); err != nil {
				return Page{}, err
			}
		}
	}
	newest := from
	if v.news && q.Backward && from != live && top < from && v.limit() >= from {
		newest = max(top, stop, 0)
	}
	if from == live {
		from, newest = top, top
	}
	page := Page{Start: token(from), Newest: newest, Positions: make([]int64, 0, len(evs))}
	for _, e := range evs {
		if page.Oldest == 0 || e.Seq < page.Oldest {
			page.Oldest = e.Seq
		}
		page.Positions = append(page.Positions, e.Seq)
		page.Resolved = page.Resolved || e.Resolved
	}
	page.Gap = v.news && gapAfter(v.gapped, stop, from)
	if page.Chunk, err = s.renderFor(ctx, v, evs); err != nil {
		return Page{}, err
	}
	if end >= 0 {
		page.End = token(end)
	}
	if q.Filter != nil && q.Filter.LazyLoadMembers {
		if page.State, err = s.senderMembers(ctx, roomID, evs); err != nil {
			return Page{}, err
		}
	}
	return page, nil
}

// pageOf reads what a page needs before its events: the viewer and where
// the page starts and stops. Where the tokens are room tokens (or none),
// which need no read, the first read of the page goes beside the viewer's:
// read as if the viewer may see up to the head, it is kept if they may,
// which is what scan would read first, and discarded else, a refusal
// included, unseen.
func (s *Service) pageOf(ctx context.Context, userID, roomID string, q MessagesQuery) (v *viewer, from, stop int64, first *slotRead, err error) {
	from, stop, plain := roomPositions(q)
	if !plain {
		// A /sync token is read after the viewer, as it always was, and
		// an invalid token's error comes after a refusal.
		if v, err = s.viewerOf(ctx, userID, roomID); err != nil {
			return nil, 0, 0, nil, err
		}
		if from, err = s.startOf(ctx, userID, roomID, q.From, q.Backward); err != nil {
			return nil, 0, 0, nil, err
		}
		stop = -1
		if q.To != "" {
			if stop, err = s.position(ctx, userID, roomID, q.To); err != nil {
				return nil, 0, 0, nil, err
			}
		}
		return v, from, stop, nil, nil
	}
	first = &slotRead{}
	first.pos, first.n, first.ok = firstRead(from, stop, live, q)
	v, err = s.viewerBeside(ctx, userID, roomID, func(ctx context.Context) error {
		if !first.ok {
			return nil
		}
		var err error
		first.evs, err = s.slotsTo(ctx, roomID, first.pos, stop, q.Backward, first.n)
		return err
	})
	if err != nil {
		return nil, 0, 0, nil, err
	}
	return v, from, stop, first, nil
}

// roomPositions is where the page of q starts and stops (-1: no stop) when
// its tokens are room tokens or none, which need no read; plain is false
// for any other token, a /sync token or an invalid one.
func roomPositions(q MessagesQuery) (from, stop int64, plain bool) {
	from, stop = 0, -1
	if q.Backward {
		from = live
	}
	var err error
	if q.From != "" {
		if from, err = parseToken(q.From); err != nil {
			return 0, 0, false
		}
	}
	if q.To != "" {
		if stop, err = parseToken(q.To); err != nil {
			return 0, 0, false
		}
	}
	return from, stop, true
}

// slotRead is one read of slots, made before the viewer was known.
type slotRead struct {
	pos int64
	n   int
	// ok is false where scan reads nothing first: the page starts past its
	// end.
	ok  bool
	evs []Event
}

// firstRead is the first read of scan for a viewer who may see up to
// limit: from pos, n slots; none (ok false) when the page starts past its
// end.
func firstRead(from, stop, limit int64, q MessagesQuery) (pos int64, n int, ok bool) {
	pos = startPos(from, limit, q.Backward)
	if pastStop(pos, stop, limit, q.Backward) && pos != live {
		return pos, 0, false
	}
	return pos, readSize(pos, stop, q.Limit, q.Backward), true
}

// pastStop reports whether position seq is beyond where a page stops:
// before the room or at stop going backwards, after stop or what the viewer
// may see (limit) going forwards.
func pastStop(seq, stop, limit int64, backward bool) bool {
	if backward {
		return seq < 1 || (stop >= 0 && seq <= stop)
	}
	return (stop >= 0 && seq > stop) || seq > limit
}

// reachesOne reports whether evs hold position 1, the first event of a
// room created here.
func reachesOne(evs []Event) bool {
	return slices.ContainsFunc(evs, func(e Event) bool { return e.Seq == 1 })
}

// live stands for the end of the timeline, wherever it is by the time the
// page is read: paging back from it needs no read of the head first.
const live = int64(1) << 62

// startOf is where a page starts: the given token, or the room's live end
// going backwards and its beginning going forwards.
func (s *Service) startOf(ctx context.Context, userID, roomID, from string, backward bool) (int64, error) {
	if from != "" {
		return s.position(ctx, userID, roomID, from)
	}
	if backward {
		return live, nil
	}
	return 0, nil
}

// scan reads slots from the position after token from, in the direction
// asked, keeping the events v may see that match the filter, until the page
// is full, the room ends or stop is reached. It returns the token to
// continue from (-1 at the end of the room) and the position of the first
// slot read, which is the head when from is live.
func (s *Service) scan(ctx context.Context, roomID string, v *viewer, from, stop int64, q MessagesQuery) (out []Event, end, top int64, err error) {
	return s.scanFirst(ctx, roomID, v, from, stop, q, nil)
}

// scanFirst is scan, with first, when not nil, a read made before v was
// known: taken for scan's first read if that is the read scan makes first,
// else dropped.
func (s *Service) scanFirst(ctx context.Context, roomID string, v *viewer, from, stop int64, q MessagesQuery, first *slotRead) (out []Event, end, top int64, err error) {
	limit := v.limit()
	pos := startPos(from, limit, q.Backward)
	top = -1
	for len(out) < q.Limit {
		if pastStop(pos, stop, limit, q.Backward) && pos != live {
			return out, -1, top, nil
		}
		n := readSize(pos, stop, q.Limit-len(out), q.Backward)
		var page []Event
		if first != nil && first.ok && first.pos == pos && first.n == n {
			page = first.evs
		} else if page, err = s.slotsTo(ctx, roomID, pos, stop, q.Backward, n); err != nil {
			return nil, 0, 0, err
		}
		first = nil
		if len(page) == 0 {
			if top < 0 && q.Backward && stop >= 0 && pos == live {
				// Nothing is newer than stop: the live end is there.
				top = stop
			}
			return out, -1, max(top, 0), nil
		}
		if top < 0 {
			top = page[0].Seq
		}
		for _, e := range page {
			if pastStop(e.Seq, stop, limit, q.Backward) {
				return out, -1, top, nil
			}
			if v.sees(e.Seq) && (q.Filter == nil || q.Filter.Match(e.PDU)) {
				out = append(out, e)
			}
			pos = e.Seq
			if len(out) == q.Limit {
				break
			}
		}
		if q.Backward {
			pos--
		} else {
			pos++
		}
	}
	if q.Backward {
		return out, pos, top, nil
	}
	return out, pos - 1, top, nil
}

// startPos is the first position a scan from token from reads, for a
// viewer who may see up to limit.
func startPos(from, limit int64, backward bool) int64 {
	if backward {
		return min(from, limit)
	}
	return from + 1
}

// readSize is how many slots a scan reads from pos for want events more:
// at least 20, as some may be hidden, and none at or before stop going
// backwards.
func readSize(pos, stop int64, want int, backward bool) int {
	n := max(want, 20)
	if backward && stop >= 0 && pos != live {
		n = int(min(int64(n), pos-stop))
	}
	return n
}

// slots reads up to n events starting at position pos in either direction.
func (s *Service) slots(ctx context.Context, roomID string, pos int64, backward bool, n int) ([]Event, error) {
	return s.slotsTo(ctx, roomID, pos, -1, backward, n)
}

// slotsTo is slots going no further back than the position after stop
// (-1: no stop): a page back from the live end to a token reads only what
// is newer, where the head is not known to bound the read by count.
func (s *Service) slotsTo(ctx context.Context, roomID string, pos, stop int64, backward bool, n int) ([]Event, error) {
	var page []slot
	q := store.Query{PK: roomPK(roomID), Prefix: slotPrefix, Descending: backward, Limit: n}
	if pos != live {
		q.From = slotSK(pos)
	}
	if backward && stop >= 0 {
		q.To = slotSK(stop + 1)
	}
	if _, err := s.Store.QueryPage(ctx, q, &page); err != nil {
		return nil, err
	}
	out := make([]Event, 0, len(page))
	for _, sl := range page {
		e, err := sl.sharedEvent(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// senderMembers is the current member events of the senders of evs, for
// lazy-loading clients.
func (s *Service) senderMembers(ctx context.Context, roomID string, evs []Event) ([]json.RawMessage, error) {
	var tuples []events.StateKeyTuple
	seen := map[string]bool{}
	for _, e := range evs {
		if u := events.Sender(e.PDU); !seen[u] {
			seen[u] = true
			tuples = append(tuples, events.StateKeyTuple{Type: events.Member, StateKey: u})
		}
	}
	state, err := s.stateFor(ctx, roomID, nil, tuples)
	if err != nil {
		return nil, err
	}
	var members []Event
	for _, t := range tuples {
		if ev, ok := state[t]; ok {
			members = append(members, Event{PDU: ev})
		}
	}
	return s.render(ctx, members)
}

// VisibleEvent reads one event of the room if userID may see it: the
// event's reads go beside the viewer's, two round trips in all, and what
// they read is dropped unseen if the viewer may not see it.
func (s *Service) VisibleEvent(ctx context.Context, userID, roomID, eventID string) (json.RawMessage, error) {
	var e Event
	var eventErr error
	v, err := s.viewerBeside(ctx, userID, roomID, func(ctx context.Context) error {
		e, eventErr = s.Event(ctx, roomID, eventID)
		return nil
	})
	if errors.Is(err, ErrForbidden) {
		// The spec answers 404 for any event the user may not read, in a
		// room they were never in too.
		return nil, refuse(ErrNotFound, "event %s not found", eventID)
	}
	if err != nil {
		return nil, err
	}
	if e, err = v.visible(e, eventErr, eventID); err != nil {
		return nil, err
	}
	out, err := s.renderFor(ctx, v, []Event{e})
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

func (s *Service) visible(ctx context.Context, v *viewer, roomID, eventID string) (Event, error) {
	e, err := s.Event(ctx, roomID, eventID)
	return v.visible(e, err, eventID)
}

// visible is e, read with err, if v may see it: an event not held or
// hidden is not found.
func (v *viewer) visible(e Event, err error, eventID string) (Event, error) {
	if errors.Is(err, ErrUnknownEvent) || (err == nil && !v.sees(e.Seq)) {
		return Event{}, refuse(ErrNotFound, "event %s not found", eventID)
	}
	return e, err
}

// Context is the response of /context/{eventId}.
type Context struct {
	Event  json.RawMessage   `json:"event"`
	Before []json.RawMessage `json:"events_before"`
	After  []json.RawMessage `json:"events_after"`
	Start  string            `json:"start"`
	End    string            `json:"end"`
	State  []json.RawMessage `json:"state"`
}

// ContextOf reads an event with the events around it, limit in all, and the
// state at the event.
func (s *Service) ContextOf(ctx context.Context, userID, roomID, eventID string, limit int, filter *events.RoomEventFilter) (Context, error) {
	// The event's reads go beside the viewer's, the pages either side of
	// it beside each other.
	var e Event
	var eventErr error
	v, err := s.viewerBeside(ctx, userID, roomID, func(ctx context.Context) error {
		e, eventErr = s.Event(ctx, roomID, eventID)
		return nil
	})
	if err != nil {
		return Context{}, err
	}
	if e, err = v.visible(e, eventErr, eventID); err != nil {
		return Context{}, err
	}
	// The limit is for events_before and events_after together.
	limit = min(max(limit, 0), 100)
	var before, after []Event
	var start, end int64
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		before, start, _, err = s.scan(gctx, roomID, v, e.Seq-1, -1, MessagesQuery{Backward: true, Limit: limit / 2, Filter: filter})
		return err
	})
	g.Go(func() (err error) {
		after, end, _, err = s.scan(gctx, roomID, v, e.Seq, -1, MessagesQuery{Limit: limit - limit/2, Filter: filter})
		return err
	})
	if err := g.Wait(); err != nil {
		return Context{}, err
	}
	var c Context
	if start < 0 {
		start = 0
	}
	if end < 0 {
		end = e.Seq + int64(len(after))
		if len(after) > 0 {
			if last := after[len(after)-1].Seq; last > end {
				end = last
			}
		}
	}
	c.Start, c.End = token(start), token(end)
	// Rendered together, the events share their redactions' reads, and
	// find the redactions among them.
	all := append(append([]Event{e}, before...), after...)
	rendered, err := s.renderFor(ctx, v, all)
	if err != nil {
		return Context{}, err
	}
	c.Event = rendered[0]
	c.Before = rendered[1 : 1+len(before) : 1+len(before)]
	c.After = rendered[1+len(before):]
	// The spec: the state at the last event returned, filtered like the
	// events.
	last := e
	if len(after) > 0 {
		last = after[len(after)-1]
	}
	state, err := s.StateAt(ctx, roomID, last)
	if err != nil {
		return Context{}, err
	}
	if filter != nil {
		state = slices.DeleteFunc(state, func(ev events.PDU) bool { return !filter.Match(ev) })
		if filter.LazyLoadMembers {
			state = lazyMembers(state, all)
		}
	}
	c.State, err = s.renderPDUs(ctx, state)
	return c, err
}

func lazyMembers(state []events.PDU, timeline []Event) []events.PDU {
	senders := map[string]bool{}
	for _, e := range timeline {
		senders[events.Sender(e.PDU)] = true
	}
	var out []events.PDU
	for _, ev := range state {
		if ev.Type() != events.Member || senders[*ev.StateKey()] {
			out = append(out, ev)
		}
	}
	return out
}

func (s *Service) renderPDUs(ctx context.Context, pdus []events.PDU) ([]json.RawMessage, error) {
	evs := make([]Event, len(pdus))
	for i, p := range pdus {
		evs[i] = Event{PDU: p}
	}
	return s.render(ctx, evs)
}

// VisibleState is the room state userID may see: current for members and
// readers of world-readable rooms, else as it was when they left.
func (s *Service) VisibleState(ctx context.Context, userID, roomID string) ([]events.PDU, error) {
	v, err := s.viewerOf(ctx, userID, roomID)
	if err != nil {
		return nil, err
	}
	if v.limit() == 1<<62 {
		if !v.joined() && !v.worldReadableNow() {
			return nil, refuse(ErrForbidden, "you are not in room %s", roomID)
		}
		return s.CurrentState(ctx, roomID)
	}
	e, err := s.Event(ctx, roomID, v.membership.EventID)
	if err != nil {
		return nil, err
	}
	return s.StateAt(ctx, roomID, e)
}

// stateAtToken is the state after the event at a pagination token. Before
// the room began (the prev_batch "t0" of a sync whose timeline starts with
// the create event) there is none, and no member.
func (s *Service) stateAtToken(ctx context.Context, roomID string, seq int64) ([]events.PDU, error) {
	evs, err := s.slots(ctx, roomID, seq, true, 1)
	if err != nil || len(evs) == 0 {
		return nil, err
	}
	return s.StateAt(ctx, roomID, evs[0])
}

// membersAt is the state at token at that userID may see: at the token, or
// where they left if that is before. The slot at the token is read beside
// the viewer's reads, as if they may see up to it, and read again up to
// where they may if they may not; its state after.
func (s *Service) membersAt(ctx context.Context, userID, roomID, at string) ([]events.PDU, error) {
	// The token is read first (a /sync token only in a room it did not
	// deliver lately), its error told after a refusal.
	seq, tokenErr := s.position(ctx, userID, roomID, at)
	var top []Event
	var topErr error
	v, err := s.viewerBeside(ctx, userID, roomID, func(ctx context.Context) error {
		if tokenErr == nil {
			top, topErr = s.slots(ctx, roomID, seq, true, 1)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if tokenErr != nil {
		return nil, tokenErr
	}
	if limit := v.limit(); seq > limit {
		return s.stateAtToken(ctx, roomID, limit)
	}
	if topErr != nil || len(top) == 0 {
		return nil, topErr
	}
	return s.StateAt(ctx, roomID, top[0])
}

// MembersQuery is GET /rooms/{roomId}/members.
type MembersQuery struct {
	At                        string
	Membership, NotMembership string
}

// keeps applies membership and not_membership to membership m. Given
// together they are an 'or', as rooms.yaml has it: m is membership or is
// not not_membership.
func (q MembersQuery) keeps(m string) bool {
	is, isNot := m == q.Membership, m != q.NotMembership
	switch {
	case q.Membership != "" && q.NotMembership != "":
		return is || isNot
	case q.Membership != "":
		return is
	case q.NotMembership != "":
		return isNot
	}
	return true
}

// MemberEvents lists the room's member events userID may see.
func (s *Service) MemberEvents(ctx context.Context, userID, roomID string, q MembersQuery) ([]json.RawMessage, error) {
	var state []events.PDU
	var err error
	if q.At != "" {
		state, err = s.membersAt(ctx, userID, roomID, q.At)
	} else {
		state, err = s.VisibleState(ctx, userID, roomID)
	}
	if err != nil {
		return nil, err
	}
	var out []events.PDU
	for _, ev := range state {
		if ev.Type() != events.Member {
			continue
		}
		if m, _ := ev.Membership(); q.keeps(m) {
			out = append(out, ev)
		}
	}
	return s.renderPDUs(ctx, out)
}

// JoinedMember is an entry of /joined_members.
type JoinedMember struct {
	DisplayName *string `json:"display_name"`
	AvatarURL   *string `json:"avatar_url"`
}

// JoinedMembers maps the room's joined users to their profile in the room;
// only members may ask.
func (s *Service) JoinedMembers(ctx context.Context, userID, roomID string) (map[string]JoinedMember, error) {
	m, err := s.Membership(ctx, userID, roomID)
	if err != nil {
		return nil, err
	}
	if m != "join" {
		return nil, refuse(ErrForbidden, "you are not in room %s", roomID)
	}
	members, err := s.Members(ctx, roomID)
	if err != nil {
		return nil, err
	}
	out := map[string]JoinedMember{}
	for _, ev := range members {
		if m, _ := ev.Membership(); m != "join" {
			continue
		}
		var c struct {
			DisplayName *string `json:"displayname"`
			AvatarURL   *string `json:"avatar_url"`
		}
		_ = json.Unmarshal(ev.Content(), &c)
		out[*ev.StateKey()] = JoinedMember{DisplayName: c.DisplayName, AvatarURL: c.AvatarURL}
	}
	return out, nil
}
