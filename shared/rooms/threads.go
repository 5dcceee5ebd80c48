package rooms

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Threads: the room's thread roots ordered by their latest reply, for
// GET /rooms/{roomId}/threads, kept on write so that a page reads a few
// items whatever the length of the timeline. docs/storage.md gives the
// costs.

// relThread is the rel_type of a thread reply.
const relThread = "m.thread"

// thread is one thread of a room, under its root: what the m.thread
// aggregation shows, and the gsi1 keys that order the room's threads by
// their latest reply.
type thread struct {
	PK string `dynamodbav:"pk"` // room|<room ID>
	SK string `dynamodbav:"sk"` // thread|<root ID>
	// RootSeq is the root's position.
	RootSeq int64 `dynamodbav:"rs"`
	// Latest is the position of the latest reply, LatestID its event ID.
	Latest   int64  `dynamodbav:"seq"`
	LatestID string `dynamodbav:"lid"`
	// Count is the number of replies.
	Count int64 `dynamodbav:"n"`
	// Rev counts writes: replies read, change and write back the item,
	// each only over the revision it read.
	Rev    int64  `dynamodbav:"rev"`
	GSI1PK string `dynamodbav:"gsi1pk"` // threads|<room ID>
	GSI1SK string `dynamodbav:"gsi1sk"` // thr|<Latest>
}

const (
	threadPrefix   = "thread|"
	threadsIndexSK = "thr|"
)

func threadKey(roomID, rootID string) store.Key {
	return store.Key{PK: roomPK(roomID), SK: threadPrefix + rootID}
}

func threadsPK(roomID string) string { return "threads|" + roomID }

func threadsSK(seq int64) string { return fmt.Sprintf("%s%012d", threadsIndexSK, seq) }

func (t *thread) rootID() string { return strings.TrimPrefix(t.SK, threadPrefix) }

// participant records that a user sent a thread's root or one of its
// replies, keyed by user first so that one Query finds a user's threads in
// the room.
type participant struct {
	PK   string `dynamodbav:"pk"` // room|<room ID>
	SK   string `dynamodbav:"sk"` // thrp|<user ID>␀<root ID>
	Root string `dynamodbav:"root"`
}

func participantPrefix(userID string) string { return "thrp|" + userID + "\x00" }

func newParticipant(roomID, userID, rootID string) participant {
	return participant{PK: roomPK(roomID), SK: participantPrefix(userID) + rootID, Root: rootID}
}

// threadRoot is the root an m.thread relation of ev names, "" when ev is
// no thread reply.
func threadRoot(roomID string, seq int64, ev events.PDU) string {
	rel := relationOf(roomID, seq, ev)
	if rel == nil || rel.RelType != relThread {
		return ""
	}
	// rel|<parent ID>|<12 digits>
	return rel.SK[len("rel|") : len(rel.SK)-len("|000000000000")]
}

// indexThreads records the thread replies among evs, once their slots are
// claimed: a reply that lost its slot is never recorded. A process that
// stops between the claim and this leaves the thread where it was, and
// its count one short, until its next reply.
func (s *Service) indexThreads(ctx context.Context, evs []Appended) error {
	var errs []error
	for _, a := range evs {
		if root := threadRoot(a.RoomID, a.Seq, a.Event); root != "" {
			errs = append(errs, s.recordReply(ctx, a.RoomID, root, a.Seq, a.Event))
		}
	}
	return errors.Join(errs...)
}

// recordReply counts the reply ev at seq in the thread of rootID and moves
// the thread to its place in the room's list: a GetItem of the thread,
// then a write over the revision read (a create for the first reply,
// after a read of the root). A reply to an event this server does not
// hold in the room starts no thread, nor does one to an event that
// relates to another: the spec forbids threads from those.
func (s *Service) recordReply(ctx context.Context, roomID, rootID string, seq int64, ev events.PDU) error {
	starter, recorded := "", false
	lost := func(err error) bool { return errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrExists) }
	err := store.Retry(ctx, raceBackoff, lost, func(ctx context.Context) error {
		var t thread
		err := s.Store.Get(ctx, threadKey(roomID, rootID), &t)
		if errors.Is(err, store.ErrNotFound) {
			root, err := s.Event(ctx, roomID, rootID)
			if errors.Is(err, ErrUnknownEvent) || (err == nil && root.Seq >= seq) {
				return nil
			}
			if err != nil {
				return err
			}
			if relationOf(roomID, root.Seq, root.PDU) != nil {
				return nil
			}
			starter = events.Sender(root.PDU)
			k := threadKey(roomID, rootID)
			t = thread{PK: k.PK, SK: k.SK, RootSeq: root.Seq, Latest: seq, LatestID: ev.EventID(), Count: 1, Rev: 1,
				GSI1PK: threadsPK(roomID), GSI1SK: threadsSK(seq)}
			recorded = true
			return s.Store.Create(ctx, t)
		}
		if err != nil {
			return err
		}
		recorded = true
		if t.Latest == seq {
			return nil // recorded already
		}
		t.Count++
		if seq > t.Latest {
			t.Latest, t.LatestID, t.GSI1SK = seq, ev.EventID(), threadsSK(seq)
		}
		rev := t.Rev
		t.Rev++
		return s.Store.PutIf(ctx, t, "rev", rev)
	})
	if err != nil {
		return fmt.Errorf("record reply %s in thread %s: %w", ev.EventID(), rootID, err)
	}
	if !recorded {
		return nil
	}
	items := []any{newParticipant(roomID, events.Sender(ev), rootID)}
	if starter != "" && starter != events.Sender(ev) {
		items = append(items, newParticipant(roomID, starter, rootID))
	}
	if err := s.Store.PutMany(ctx, items); err != nil {
		return fmt.Errorf("record participants of thread %s: %w", rootID, err)
	}
	return nil
}

// Limits of GET /threads: Synapse's default; Synapse has no maximum, this
// one bounds what a page reads.
const (
	defaultThreadsLimit = 5
	maxThreadsLimit     = 100
	// threadRounds bounds the index pages one request reads when threads
	// the user may not see are left out: the page may then come up short,
	// with a next_batch.
	threadRounds = 10
)

// ThreadsQuery is GET /rooms/{roomId}/threads.
type ThreadsQuery struct {
	// Participated keeps the threads the user started or replied in.
	Participated bool
	From         string
	Limit        int
}

// Threads is a page of a room's thread roots.
type Threads struct {
	Chunk     []json.RawMessage `json:"chunk"`
	NextBatch string            `json:"next_batch,omitempty"`
}

// threadSummary is the m.thread aggregation of a root.
type threadSummary struct {
	Latest       json.RawMessage `json:"latest_event"`
	Count        int64           `json:"count"`
	Participated bool            `json:"current_user_participated"`
}

// ThreadsOf pages through the thread roots of the room that userID may
// see, the thread with the latest reply first, each with its m.thread
// aggregation. A token "t<n>" continues with the threads whose latest
// reply is before position n.
func (s *Service) ThreadsOf(ctx context.Context, userID, roomID string, q ThreadsQuery) (Threads, error) {
	v, err := s.viewerOf(ctx, userID, roomID)
	if err != nil {
		return Threads{}, err
	}
	before := int64(maxSeq + 1)
	if q.From != "" {
		if before, err = parseToken(q.From); err != nil {
			return Threads{}, err
		}
	}
	if q.Limit <= 0 {
		q.Limit = defaultThreadsLimit
	}
	q.Limit = min(q.Limit, maxThreadsLimit)
	mine, err := s.participatedIn(ctx, roomID, userID)
	if err != nil {
		return Threads{}, err
	}
	var ignored map[string]bool
	if s.Ignored != nil {
		if ignored, err = s.Ignored(ctx, userID); err != nil {
			return Threads{}, err
		}
	}
	next := s.allThreads(roomID)
	if q.Participated {
		if next, err = s.threadsAmong(ctx, roomID, mine); err != nil {
			return Threads{}, err
		}
	}
	out := Threads{Chunk: []json.RawMessage{}}
	for round := 0; round < threadRounds && len(out.Chunk) < q.Limit; round++ {
		need := q.Limit - len(out.Chunk)
		// One more than needed tells whether a next page exists.
		page, err := next(ctx, before, need+1)
		if err != nil {
			return Threads{}, err
		}
		more := len(page) > need
		page = page[:min(len(page), need)]
		chunk, err := s.renderThreads(ctx, v, roomID, page, mine, ignored)
		if err != nil {
			return Threads{}, err
		}
		out.Chunk = append(out.Chunk, chunk...)
		if len(page) > 0 {
			before = page[len(page)-1].Latest
		}
		if !more {
			out.NextBatch = ""
			return out, nil
		}
		out.NextBatch = token(before)
	}
	return out, nil
}

// threadSource lists up to n threads whose latest reply is before
// position before, the latest first.
type threadSource func(ctx context.Context, before int64, n int) ([]thread, error)

// allThreads reads the room's threads from gsi1: one Query of n items.
func (s *Service) allThreads(roomID string) threadSource {
	return func(ctx context.Context, before int64, n int) ([]thread, error) {
		if before <= 1 {
			return nil, nil
		}
		var page []thread
		q := store.Query{PK: threadsPK(roomID), Index: "gsi1", Prefix: threadsIndexSK, From: threadsSK(before - 1), Descending: true, Limit: n}
		if _, err := s.Store.QueryPage(ctx, q, &page); err != nil {
			return nil, err
		}
		return page, nil
	}
}

// threadsAmong reads the threads of the given roots (one BatchGetItem)
// and lists them in memory: a user's threads are few next to a room's.
func (s *Service) threadsAmong(ctx context.Context, roomID string, roots map[string]bool) (threadSource, error) {
	keys := make([]store.Key, 0, len(roots))
	for r := range roots {
		keys = append(keys, threadKey(roomID, r))
	}
	var all []thread
	err := s.Store.GetMany(ctx, keys, func(_ store.Key, decode func(any) error) error {
		var t thread
		err := decode(&t)
		all = append(all, t)
		return err
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(all, func(a, b thread) int { return cmp.Compare(b.Latest, a.Latest) })
	return func(_ context.Context, before int64, n int) ([]thread, error) {
		// The first thread whose latest reply is before the position.
		i, _ := slices.BinarySearchFunc(all, before, func(t thread, before int64) int {
			if t.Latest >= before {
				return -1
			}
			return 1
		})
		return all[i:min(len(all), i+n)], nil
	}, nil
}

// participatedIn lists the roots of the threads in the room that userID
// started or replied in: one Query.
func (s *Service) participatedIn(ctx context.Context, roomID, userID string) (map[string]bool, error) {
	var items []participant
	q := store.Query{PK: roomPK(roomID), Prefix: participantPrefix(userID)}
	for {
		var page []participant
		cursor, err := s.Store.QueryPage(ctx, q, &page)
		if err != nil {
			return nil, err
		}
		items = append(items, page...)
		if cursor == "" {
			break
		}
		q.Cursor = cursor
	}
	mine := make(map[string]bool, len(items))
	for _, p := range items {
		mine[p.Root] = true
	}
	return mine, nil
}

// renderThreads renders the roots of ts that v may see, each with its
// m.thread aggregation: one BatchGetItem of the roots and latest replies.
// As the spec has it, a root sent by a user the caller ignores is shown
// redacted, and a reply by one is not shown as the latest.
func (s *Service) renderThreads(ctx context.Context, v *viewer, roomID string, ts []thread, mine, ignored map[string]bool) ([]json.RawMessage, error) {
	var keys []store.Key
	for _, t := range ts {
		if !v.sees(t.RootSeq) {
			continue
		}
		for _, seq := range []int64{t.RootSeq, t.Latest} {
			pk, sk := slotKey(roomID, seq)
			keys = append(keys, store.Key{PK: pk, SK: sk})
		}
	}
	found, err := s.slotsAt(ctx, keys)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, 0, len(ts))
	for _, t := range ts {
		root, ok := found[t.RootSeq]
		if !ok || !v.sees(t.RootSeq) || root.PDU.EventID() != t.rootID() {
			continue
		}
		latest, ok := found[t.Latest]
		if !ok || latest.PDU.EventID() != t.LatestID || !v.sees(t.Latest) || ignored[events.Sender(latest.PDU)] {
			// A user who left sees the thread as it was when they left.
			if latest, ok, err = s.latestSeen(ctx, v, roomID, t, ignored); err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
		}
		rendered, err := s.renderFor(ctx, v, []Event{latest})
		if err != nil {
			return nil, err
		}
		rel, err := json.Marshal(map[string]threadSummary{relThread: {Latest: rendered[0], Count: t.Count, Participated: mine[t.rootID()]}})
		if err != nil {
			return nil, err
		}
		if ignored[events.Sender(root.PDU)] && root.RedactedBy == "" {
			if root.PDU, err = events.Redact(root.PDU); err != nil {
				return nil, err
			}
		}
		r, err := s.renderFor(ctx, v, []Event{root}, events.WithRelations(rel))
		if err != nil {
			return nil, err
		}
		out = append(out, r[0])
	}
	return out, nil
}

// latestSeen finds the latest reply of t that v may see, by a user not
// ignored, reading the relations of its root back from the latest: one
// Query of up to 50, and a GetItem of each candidate's slot.
func (s *Service) latestSeen(ctx context.Context, v *viewer, roomID string, t thread, ignored map[string]bool) (Event, bool, error) {
	prefix := relPrefix(t.rootID())
	q := store.Query{PK: roomPK(roomID), Prefix: prefix, Descending: true, Limit: 50,
		From: fmt.Sprintf("%s%012d", prefix, min(t.Latest, v.limit()))}
	var rels []relation
	if _, err := s.Store.QueryPage(ctx, q, &rels); err != nil {
		return Event{}, false, err
	}
	for _, r := range rels {
		if len(r.SK) != len(prefix)+12 || r.RelType != relThread || !v.sees(r.Seq) {
			continue
		}
		var sl slot
		pk, sk := slotKey(roomID, r.Seq)
		err := s.Store.Get(ctx, store.Key{PK: pk, SK: sk}, &sl)
		if errors.Is(err, store.ErrNotFound) || (err == nil && sl.EventID != r.EventID) {
			continue // written for a slot another event won
		}
		if err != nil {
			return Event{}, false, err
		}
		e, err := sl.event()
		if err != nil {
			return Event{}, false, err
		}
		if !ignored[events.Sender(e.PDU)] {
			return e, true, nil
		}
	}
	return Event{}, false, nil
}
