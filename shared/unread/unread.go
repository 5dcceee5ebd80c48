// Package unread counts the events in a room that notify a user since they
// last read it, by their push rules: the unread_notifications of /sync.
package unread

import (
	"context"
	"encoding/json"
	gosync "sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cirrus-matrix/cirrus/shared/ephemeral"
	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/push"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

// MaxCounted bounds the events read for one count: a room with more unread
// shows this many, as clients show "99+" anyway.
const MaxCounted = 100

// Service counts unread notifications.
type Service struct {
	Rooms    *rooms.Service
	Push     *push.Service
	Receipts *ephemeral.Service

	mu      gosync.Mutex
	rules   map[string]cachedRules
	loading map[string]*rulesLoad
	seen    receiptsSeen
}

// rulesFor is how long a user's push rules are reused: a sync counts many
// rooms at once, and a rule changed a moment ago may count a moment late.
const rulesFor = 2 * time.Second

type cachedRules struct {
	rules push.Ruleset
	at    time.Time
}

// rulesOf reads the user's push rules, once for the rooms of one sync:
// the rooms counted side by side wait for the one read under way.
func (s *Service) rulesOf(ctx context.Context, userID string) (push.Ruleset, error) {
	s.mu.Lock()
	c, ok := s.rules[userID]
	if ok && time.Since(c.at) < rulesFor {
		s.mu.Unlock()
		return c.rules, nil
	}
	load, loading := s.loading[userID]
	if !loading {
		load = &rulesLoad{done: make(chan struct{})}
		if s.loading == nil {
			s.loading = map[string]*rulesLoad{}
		}
		s.loading[userID] = load
	}
	s.mu.Unlock()
	if loading {
		select {
		case <-load.done:
			if load.err == nil {
				return load.rules, nil
			}
			// The read failed in its own request: this one reads anew.
			return s.Push.Rules(ctx, userID)
		case <-ctx.Done():
			return push.Ruleset{}, ctx.Err()
		}
	}
	load.rules, load.err = s.Push.Rules(ctx, userID)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.loading, userID)
	close(load.done)
	if load.err != nil {
		return push.Ruleset{}, load.err
	}
	if s.rules == nil || len(s.rules) > 10000 {
		s.rules = map[string]cachedRules{}
	}
	s.rules[userID] = cachedRules{rules: load.rules, at: time.Now()}
	return load.rules, nil
}

// rulesLoad is a read of a user's push rules under way.
type rulesLoad struct {
	done  chan struct{} // closed once rules and err are set
	rules push.Ruleset
	err   error
}

// Counts are the spec's unread_notifications of a room.
type Counts struct {
	Notifications int `json:"notification_count"`
	Highlights    int `json:"highlight_count"`
}

// Count evaluates the user's push rules on the events they can see after
// their read receipts, newest first, up to MaxCounted of them. With
// threads, events in a thread count apart, by thread root, from that
// thread's receipt: the spec's unread_thread_notifications.
//
// The events are read after the receipt, which takes a read first; where
// this process has seen the user's receipt in the room before
// (receiptsSeen), the events after that one are read beside the receipts
// instead, a round trip less. Receipts move forward, so that page holds
// every event after the receipt now, and more, which are dropped; a
// receipt that moved back has the page read again.
func (s *Service) Count(ctx context.Context, userID, roomID string, threads bool) (Counts, map[string]Counts, error) {
	// What evaluating the events takes is read beside them when the room
	// is known to hold one after the receipt (WithNewest), else once
	// they are read, and only if there are any.
	var rules push.Ruleset
	var c *roomContext
	var threadMarks map[string]ephemeral.Mark
	g, gctx := errgroup.WithContext(ctx)
	contextRead := false
	readContext := func() {
		contextRead = true
		g.Go(func() (err error) { rules, err = s.rulesOf(gctx, userID); return err })
		g.Go(func() (err error) { c, err = s.context(gctx, userID, roomID); return err })
	}
	seenKey := receiptKey{userID, roomID, threads}
	guess, guessed := s.seen.get(seenKey)
	var marks map[string]ephemeral.Mark
	var page rooms.Page
	first, fctx := errgroup.WithContext(ctx)
	first.Go(func() (err error) {
		marks, err = s.Receipts.ReadMarks(fctx, userID, roomID, []string{"", "main"})
		return err
	})
	if guessed {
		first.Go(func() (err error) { page, err = s.after(fctx, userID, roomID, guess); return err })
		if newestAfter(ctx, guess) {
			readContext()
		}
	}
	if err := first.Wait(); err != nil {
		_ = g.Wait() // what was read ahead is unused
		return Counts{}, nil, err
	}
	// An unthreaded receipt reads everything before it; without threads a
	// "main" one does too.
	main := later(marks[""], marks["main"])
	from := main.Seq
	if threads {
		from = marks[""].Seq
	}
	s.seen.put(seenKey, from)
	if !guessed || from < guess {
		if !contextRead && newestAfter(ctx, from) {
			readContext()
		}
		var err error
		if page, err = s.after(ctx, userID, roomID, from); err != nil {
			_ = g.Wait()
			return Counts{}, nil, err
		}
	}
	chunk := eventsAfter(page, from)
	if len(chunk) == 0 {
		_ = g.Wait() // what was read ahead is unused
		return Counts{}, nil, nil
	}
	evs := describe(chunk, threads)
	if !contextRead {
		readContext()
	}
	g.Go(func() (err error) { threadMarks, err = s.threadMarks(gctx, userID, roomID, evs); return err })
	if err := g.Wait(); err != nil {
		return Counts{}, nil, err
	}
	threadMarks["main"] = main
	var out Counts
	perThread := map[string]Counts{}
	read := map[string]bool{}
	for _, ev := range evs { // newest first: a receipt's event ends its thread's count
		if threadMarks[ev.thread].EventID == ev.id {
			read[ev.thread] = true
		}
		if read[ev.thread] || ev.doc == nil {
			continue
		}
		o := rules.EvaluateDecoded(ev.doc, c.forSenderID(ev.sender))
		counts := perThread[ev.thread]
		if o.Notify {
			counts.Notifications++
		}
		if o.Highlight {
			counts.Highlights++
		}
		perThread[ev.thread] = counts
	}
	out = perThread["main"]
	delete(perThread, "main")
	return out, perThread, nil
}

// after reads the newest MaxCounted events the user can see after
// position from, newest first.
func (s *Service) after(ctx context.Context, userID, roomID string, from int64) (rooms.Page, error) {
	return s.Rooms.Messages(ctx, userID, roomID, rooms.MessagesQuery{Backward: true, Limit: MaxCounted, To: rooms.Token(from)})
}

// eventsAfter is the events of page after position from.
func eventsAfter(page rooms.Page, from int64) []json.RawMessage {
	for i, pos := range page.Positions {
		if pos <= from {
			return page.Chunk[:i]
		}
	}
	return page.Chunk
}

// receiptKey names a user's receipt in a room, as Count takes it: with
// threads apart, or not.
type receiptKey struct {
	userID, roomID string
	threads        bool
}

// receiptsSeen holds the receipt position Count last read for each
// receiptKey in this process: where to read the events from beside the
// receipts, never what to count from. It forgets all past maxSeen.
type receiptsSeen struct {
	mu  gosync.Mutex
	pos map[receiptKey]int64
}

const maxSeen = 100000

func (r *receiptsSeen) get(k receiptKey) (int64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pos, ok := r.pos[k]
	return pos, ok
}

func (r *receiptsSeen) put(k receiptKey, pos int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pos == nil || len(r.pos) >= maxSeen {
		r.pos = map[receiptKey]int64{}
	}
	r.pos[k] = pos
}

type newestKey struct{}

// WithNewest is ctx telling Count, for one room, the position of its
// newest event: newest gives it, waiting if need be (0: unknown). A sync
// knows it from its stream or its timeline. When it is after the user's
// read receipt there are events to count, and Count reads the rules and
// the room's context beside them, a round trip less; a wrong guess costs
// those reads in vain, not a wrong count.
func WithNewest(ctx context.Context, newest func(context.Context) int64) context.Context {
	return context.WithValue(ctx, newestKey{}, newest)
}

// newestAfter reports whether ctx says the room's newest event is after
// position seq.
func newestAfter(ctx context.Context, seq int64) bool {
	newest, _ := ctx.Value(newestKey{}).(func(context.Context) int64)
	return newest != nil && newest(ctx) > seq
}

func later(a, b ephemeral.Mark) ephemeral.Mark {
	if b.Seq > a.Seq {
		return b
	}
	return a
}

// event is a timeline event with the thread it counts in ("main" outside
// threads, or when threads are not counted apart).
type event struct {
	doc    map[string]any // push.DecodeEvent's
	id     string
	sender string
	thread string
}

func describe(chunk []json.RawMessage, threads bool) []event {
	out := make([]event, 0, len(chunk))
	for _, raw := range chunk {
		// Decoded once, for the fields here and for the push rules.
		doc, _ := push.DecodeEvent(raw)
		id, _ := doc["event_id"].(string)
		sender, _ := doc["sender"].(string)
		thread := "main"
		content, _ := doc["content"].(map[string]any)
		rel, _ := content["m.relates_to"].(map[string]any)
		if root, _ := rel["event_id"].(string); threads && rel["rel_type"] == "m.thread" && root != "" {
			thread = root
		}
		out = append(out, event{doc: doc, id: id, sender: sender, thread: thread})
	}
	return out
}

// threadMarks reads the receipts of the threads the events are in.
func (s *Service) threadMarks(ctx context.Context, userID, roomID string, evs []event) (map[string]ephemeral.Mark, error) {
	var roots []string
	seen := map[string]bool{"main": true}
	for _, ev := range evs {
		if !seen[ev.thread] {
			seen[ev.thread] = true
			roots = append(roots, ev.thread)
		}
	}
	if len(roots) == 0 {
		return map[string]ephemeral.Mark{}, nil
	}
	return s.Receipts.ReadMarks(ctx, userID, roomID, roots)
}

// roomContext is what the rules need of the room, read once per count.
type roomContext struct {
	push.EventContext
	levels *events.PowerLevelContent
	create events.PDU
}

func (s *Service) context(ctx context.Context, userID, roomID string) (*roomContext, error) {
	me := events.StateKeyTuple{Type: events.Member, StateKey: userID}
	pl := events.StateKeyTuple{Type: events.PowerLevels}
	create := events.StateKeyTuple{Type: events.Create}
	// The summary and the state are read side by side.
	var info rooms.Info
	var state map[events.StateKeyTuple]events.PDU
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) { info, err = s.Rooms.Info(gctx, roomID); return err })
	g.Go(func() (err error) {
		state, err = s.Rooms.StateEvents(gctx, roomID, []events.StateKeyTuple{me, pl, create})
		return err
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	c := &roomContext{EventContext: push.EventContext{UserID: userID, MemberCount: int(info.Joined)}}
	var err error
	if ev := state[me]; ev != nil {
		var m struct {
			DisplayName string `json:"displayname"`
		}
		_ = json.Unmarshal(ev.Content(), &m)
		c.DisplayName = m.DisplayName
	}
	if c.levels, err = events.PowerLevelsOf(state[pl]); err != nil {
		return nil, err
	}
	c.NotifLevels = map[string]int64{"room": c.levels.NotificationLevel("room")}
	c.create = state[create]
	return c, nil
}

// Rules reads the user's push rules, reused for rulesFor as a sync's
// count reuses them.
func (s *Service) Rules(ctx context.Context, userID string) (push.Ruleset, error) {
	return s.rulesOf(ctx, userID)
}

// Context is what evaluating userID's push rules on eventJSON, an event of
// roomID, needs beyond the event (push.EventContext): the room's member
// count, the user's display name in it and the sender's power level. It
// reads the room's summary and three pieces of its state.
func (s *Service) Context(ctx context.Context, userID, roomID string, eventJSON json.RawMessage) (push.EventContext, error) {
	c, err := s.context(ctx, userID, roomID)
	if err != nil {
		return push.EventContext{}, err
	}
	return c.forSender(eventJSON), nil
}

// forSender completes the context with the sender's power level.
func (c *roomContext) forSender(raw json.RawMessage) push.EventContext {
	var ev struct {
		Sender string `json:"sender"`
	}
	_ = json.Unmarshal(raw, &ev)
	return c.forSenderID(ev.Sender)
}

// forSenderID is the rules' context for an event of sender.
func (c *roomContext) forSenderID(sender string) push.EventContext {
	out := c.EventContext
	out.SenderLevel = events.UserLevel(c.levels, sender)
	if c.create != nil && events.PrivilegedCreators(string(c.create.Version())) {
		for _, u := range events.Creators(c.create) {
			if u == sender {
				out.SenderLevel = 1 << 53 // creators outrank every level
			}
		}
	}
	return out
}
