// Package unread counts the events in a room that notify a user since they
// last read it, by their push rules: the unread_notifications of /sync.
package unread

import (
	"context"
	"encoding/json"
	"hash/fnv"
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
	counted memo
}

// rulesFor is how long a user's push rules are reused: a sync counts many
// rooms at once, and a rule changed a moment ago may count a moment late.
const rulesFor = 2 * time.Second

// rules are a user's push rules with their fingerprint, which tells a
// count whether outcomes evaluated before were evaluated on the same rules.
type rules struct {
	push.Ruleset
	print uint64
}

func rulesWithPrint(rs push.Ruleset) rules {
	h := fnv.New64a()
	_ = json.NewEncoder(h).Encode(rs)
	return rules{Ruleset: rs, print: h.Sum64()}
}

type cachedRules struct {
	rules rules
	at    time.Time
}

// rulesOf reads the user's push rules, once for the rooms of one sync:
// the rooms counted side by side wait for the one read under way.
func (s *Service) rulesOf(ctx context.Context, userID string) (rules, error) {
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
			rs, err := s.Push.Rules(ctx, userID)
			return rulesWithPrint(rs), err
		case <-ctx.Done():
			return rules{}, ctx.Err()
		}
	}
	rs, err := s.Push.Rules(ctx, userID)
	load.rules, load.err = rulesWithPrint(rs), err
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.loading, userID)
	close(load.done)
	if load.err != nil {
		return rules{}, load.err
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
	rules rules
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
// this process counted the user's receipt in the room before (counted),
// only the events after the newest one it read are read, beside the
// receipts, a round trip less, and only those are evaluated.
func (s *Service) Count(ctx context.Context, userID, roomID string, threads bool) (Counts, map[string]Counts, error) {
	key := receiptKey{userID, roomID, threads}
	prev, known := s.counted.get(key)
	k := &count{s: s, userID: userID, roomID: roomID}
	k.g, k.gctx = errgroup.WithContext(ctx)
	var marks map[string]ephemeral.Mark
	var page rooms.Page
	first, fctx := errgroup.WithContext(ctx)
	first.Go(func() (err error) {
		marks, err = s.Receipts.ReadMarks(fctx, userID, roomID, []string{"", "main"})
		return err
	})
	if known {
		first.Go(func() (err error) { page, err = s.after(fctx, userID, roomID, prev.upTo); return err })
		// What evaluating new events takes is read beside them when the
		// room is known to hold some (WithNewest), else once they are
		// read, and only if there are any.
		if newestAfter(ctx, prev.upTo) {
			k.readContext()
		}
	}
	if err := first.Wait(); err != nil {
		_ = k.g.Wait() // what was read ahead is unused
		return Counts{}, nil, err
	}
	// An unthreaded receipt reads everything before it; without threads a
	// "main" one does too.
	main := later(marks[""], marks["main"])
	from := main.Seq
	if threads {
		from = marks[""].Seq
	}
	readFrom := prev.upTo
	var kept []outcome
	if known && from >= prev.from {
		kept = prev.after(from)
	} else { // a receipt that moved back (it cannot) reads all again
		readFrom = from
		if !k.contextRead && newestAfter(ctx, from) {
			k.readContext()
		}
		var err error
		if page, err = s.after(ctx, userID, roomID, from); err != nil {
			_ = k.g.Wait()
			return Counts{}, nil, err
		}
	}
	upTo := max(from, readFrom)
	fresh := describe(page, upTo, threads)
	if len(fresh) > 0 {
		upTo = fresh[0].pos
	}
	if len(fresh) == 0 && len(kept) == 0 {
		_ = k.g.Wait() // what was read ahead is unused
		s.counted.put(key, counted{from: from, upTo: upTo})
		return Counts{}, nil, nil
	}
	switch {
	case len(fresh) > 0 && !k.contextRead:
		k.readContext()
	case len(fresh) == 0 && !k.contextRead:
		// Nothing new: what the outcomes kept depend on in the room would
		// have come as an event; only the rules may have changed.
		k.readRules()
	}
	k.g.Go(func() (err error) { k.marks, err = s.threadMarks(k.gctx, userID, roomID, fresh, kept); return err })
	if err := k.g.Wait(); err != nil {
		return Counts{}, nil, err
	}
	b := prev.basis
	b.rules = k.rules.print
	if k.c != nil {
		b = k.basis()
	}
	if len(kept) > 0 && (b != prev.basis || redacts(fresh)) {
		// The outcomes kept may differ now: count all again.
		var err error
		if k.c == nil {
			if k.c, err = s.context(ctx, userID, roomID); err != nil {
				return Counts{}, nil, err
			}
			b = k.basis()
		}
		if page, err = s.after(ctx, userID, roomID, from); err != nil {
			return Counts{}, nil, err
		}
		kept, fresh = nil, describe(page, from, threads)
		if len(fresh) > 0 {
			upTo = fresh[0].pos
		}
		if k.marks, err = s.threadMarks(ctx, userID, roomID, fresh, nil); err != nil {
			return Counts{}, nil, err
		}
	}
	k.marks["main"] = main
	window := make([]outcome, 0, min(len(fresh)+len(kept), MaxCounted))
	for _, ev := range fresh {
		window = append(window, k.evaluate(ev))
	}
	window = append(window, kept...)
	window = window[:min(len(window), MaxCounted)]
	if k.c != nil && k.c.gaps { // a backfilled event may yet take a position below upTo
		s.counted.put(key, counted{from: from, upTo: from})
	} else {
		s.counted.put(key, counted{from: from, upTo: upTo, basis: b, evs: window})
	}
	perThread := map[string]Counts{}
	for _, o := range window {
		if o.pos <= k.marks[o.thread].Seq { // read: at or before its thread's receipt
			continue
		}
		counts := perThread[o.thread]
		if o.notify {
			counts.Notifications++
		}
		if o.highlight {
			counts.Highlights++
		}
		perThread[o.thread] = counts
	}
	out := perThread["main"]
	delete(perThread, "main")
	return out, perThread, nil
}

// count is one Count's reads of what evaluating events takes.
type count struct {
	s              *Service
	userID, roomID string
	g              *errgroup.Group // the reads beside the events'
	gctx           context.Context
	contextRead    bool
	rules          rules
	c              *roomContext // nil where no new event needed it
	marks          map[string]ephemeral.Mark
}

// readContext reads the rules and the room's context beside what else is
// under way.
func (k *count) readContext() {
	k.contextRead = true
	k.readRules()
	k.g.Go(func() (err error) { k.c, err = k.s.context(k.gctx, k.userID, k.roomID); return err })
}

func (k *count) readRules() {
	k.g.Go(func() (err error) { k.rules, err = k.s.rulesOf(k.gctx, k.userID); return err })
}

// basis is what the outcomes evaluated now depend on besides the events.
func (k *count) basis() basis {
	return basis{rules: k.rules.print, members: k.c.MemberCount, displayName: k.c.DisplayName, levels: k.c.levelsID}
}

// evaluate is the rules' outcome for ev.
func (k *count) evaluate(ev event) outcome {
	o := outcome{pos: ev.pos, thread: ev.thread}
	if ev.doc != nil {
		r := k.rules.EvaluateDecoded(ev.doc, k.c.forSenderID(ev.sender))
		o.notify, o.highlight = r.Notify, r.Highlight
	}
	return o
}

// after reads the newest MaxCounted events the user can see after
// position from, newest first.
func (s *Service) after(ctx context.Context, userID, roomID string, from int64) (rooms.Page, error) {
	return s.Rooms.Messages(ctx, userID, roomID, rooms.MessagesQuery{Backward: true, Limit: MaxCounted, To: rooms.Token(from)})
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
	pos    int64
	typ    string
	sender string
	thread string
}

// describe decodes the events of page after position from, newest first.
func describe(page rooms.Page, from int64, threads bool) []event {
	var out []event
	for i, raw := range page.Chunk {
		pos := page.Positions[i]
		if pos <= from {
			break
		}
		// Decoded once, for the fields here and for the push rules.
		doc, _ := push.DecodeEvent(raw)
		typ, _ := doc["type"].(string)
		sender, _ := doc["sender"].(string)
		thread := "main"
		content, _ := doc["content"].(map[string]any)
		rel, _ := content["m.relates_to"].(map[string]any)
		if root, _ := rel["event_id"].(string); threads && rel["rel_type"] == "m.thread" && root != "" {
			thread = root
		}
		out = append(out, event{doc: doc, pos: pos, typ: typ, sender: sender, thread: thread})
	}
	return out
}

// redacts reports whether one of evs is a redaction: the event it redacts
// now reads otherwise, and may be one whose outcome is kept.
func redacts(evs []event) bool {
	for _, ev := range evs {
		if ev.typ == events.Redaction {
			return true
		}
	}
	return false
}

// threadMarks reads the receipts of the threads the events are in.
func (s *Service) threadMarks(ctx context.Context, userID, roomID string, evs []event, kept []outcome) (map[string]ephemeral.Mark, error) {
	var roots []string
	seen := map[string]bool{"main": true}
	add := func(thread string) {
		if !seen[thread] {
			seen[thread] = true
			roots = append(roots, thread)
		}
	}
	for _, ev := range evs {
		add(ev.thread)
	}
	for _, o := range kept {
		add(o.thread)
	}
	if len(roots) == 0 {
		return map[string]ephemeral.Mark{}, nil
	}
	return s.Receipts.ReadMarks(ctx, userID, roomID, roots)
}

// roomContext is what the rules need of the room, read once per count.
type roomContext struct {
	push.EventContext
	levels   *events.PowerLevelContent
	levelsID string
	create   events.PDU
	gaps     bool // the timeline has gaps (Info.Gaps)
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
	c := &roomContext{EventContext: push.EventContext{UserID: userID, MemberCount: int(info.Joined)}, gaps: info.Gaps}
	var err error
	if ev := state[me]; ev != nil {
		var m struct {
			DisplayName string `json:"displayname"`
		}
		_ = json.Unmarshal(ev.Content(), &m)
		c.DisplayName = m.DisplayName
	}
	if ev := state[pl]; ev != nil {
		c.levelsID = ev.EventID()
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
	rs, err := s.rulesOf(ctx, userID)
	return rs.Ruleset, err
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
