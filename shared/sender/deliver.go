package sender

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// sendMargin is kept back from an invocation's deadline: time to record a
// failed send before Lambda ends the invocation.
const sendMargin = 5 * time.Second

// minBatchTime is the least time left in an invocation worth starting
// another transaction in; with less, the worker hands the destination on to
// a new job.
const minBatchTime = 20 * time.Second

// Handle runs a send job: the queue handler of Kind. An error leaves the
// job to the queue's retries (and then its dead-letter queue); a
// destination that does not answer is not an error but a backoff, whose
// wake-up is a delayed job.
func (s *Sender) Handle(ctx context.Context, body []byte) error {
	var j job
	if err := json.Unmarshal(body, &j); err != nil || j.Destination == "" {
		return errors.New("send job: not a job with a destination")
	}
	return s.deliver(ctx, j)
}

func (s *Sender) deliver(ctx context.Context, j job) error {
	for {
		st, err := s.readState(ctx, j.Destination)
		if err != nil {
			return err
		}
		now := s.now()
		if st.RetryAt > now.UnixMilli() {
			return s.wake(ctx, st, j, now)
		}
		if st.LeaseUntil > now.UnixMilli() {
			// Another worker is sending; it looks at the outbox again
			// after it lets go, and finds what this job was for.
			return nil
		}
		var b batch
		if st.Txn == "" && st.Failures == 0 {
			// The batch is formed before the lease is taken, so that one
			// write takes the lease and fixes the transaction ID.
			if b, err = s.nextBatch(ctx, j.Destination); err != nil || len(b.entries) == 0 {
				return err
			}
			st.Txn, st.Seqs = newID(), b.seqs()
		}
		st.Owner, st.LeaseUntil = newID(), now.Add(lease).UnixMilli()
		if err := s.writeState(ctx, st); err != nil {
			return ignoreConflict(err) // taken by another worker in between
		}
		more, err := s.drain(ctx, j.Destination, st, b)
		if err != nil || !more {
			return err
		}
	}
}

// batch is the head of an outbox, read to form a transaction.
type batch struct {
	entries []entry
	// full is a batch at a transaction's limit: more may wait behind it.
	full bool
}

func (b batch) seqs() []int64 {
	out := make([]int64, 0, len(b.entries))
	for _, e := range b.entries {
		out = append(out, seqOf(e.SK))
	}
	return out
}

// drain sends the outbox's transactions one after another while it holds
// the lease, starting with st.Txn (whose entries b holds when it was just
// formed), and lets go. It reports whether entries came in after it last
// looked (the caller then tries again).
func (s *Sender) drain(ctx context.Context, destination string, st *state, b batch) (bool, error) {
	for {
		if st.Txn == "" {
			if st.Failures > 0 {
				if err := s.catchUp(ctx, destination); err != nil {
					return false, s.release(ctx, st, err)
				}
				st.Failures, st.Interval, st.RetryAt, st.WakeAt = 0, 0, 0, 0
			}
			var err error
			if b, err = s.nextBatch(ctx, destination); err != nil {
				return false, s.release(ctx, st, err)
			}
			if len(b.entries) == 0 {
				return s.letGo(ctx, destination, st)
			}
			// The ID is stored before the transaction goes, so that any
			// retry, by this worker or another, sends it under the same ID.
			st.Txn, st.Seqs = newID(), b.seqs()
			st.LeaseUntil = s.now().Add(lease).UnixMilli()
			if err := s.writeState(ctx, st); err != nil {
				return false, ignoreConflict(err)
			}
		}
		// Leave time to record the outcome of a send: hand a long drain on.
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < minBatchTime {
			return false, s.handOn(ctx, destination, st)
		}
		if b.entries == nil {
			var err error
			if b.entries, err = s.txnEntries(ctx, destination, st.Seqs); err != nil {
				return false, s.release(ctx, st, err)
			}
		}
		// With no entry left, a worker that died delivered them all.
		if len(b.entries) > 0 {
			if err := s.send(ctx, destination, st.Txn, b.entries); err != nil {
				if ctx.Err() != nil {
					return false, s.release(ctx, st, err)
				}
				return false, s.backOff(ctx, destination, st, err)
			}
		}
		keys := make([]store.Key, 0, len(st.Seqs))
		for _, n := range st.Seqs {
			keys = append(keys, store.Key{PK: partition(destination), SK: entrySK(n)})
		}
		if err := s.Store.DeleteEach(ctx, keys); err != nil {
			return false, s.release(ctx, st, err)
		}
		st.Txn, st.Seqs = "", nil
		// After a backoff the next round catches up; after a batch short
		// of the limits the outbox is most likely empty: look once, after
		// letting go.
		if st.Failures == 0 && !b.full {
			return s.letGo(ctx, destination, st)
		}
		b = batch{}
	}
}

// letGo releases the lease and reports whether the outbox holds entries: a
// job that came while the lease was held left them to this worker.
func (s *Sender) letGo(ctx context.Context, destination string, st *state) (bool, error) {
	if err := s.release(ctx, st, nil); err != nil {
		return false, err
	}
	empty, err := s.outboxEmpty(ctx, destination)
	return !empty, err
}

// send puts one transaction to the destination. The destination's answers
// about single PDUs (rejected, unknown room) are its own business: they are
// logged, and the transaction counts as delivered.
func (s *Sender) send(ctx context.Context, destination, txnID string, entries []entry) error {
	txn := gomatrixserverlib.Transaction{
		TransactionID:  gomatrixserverlib.TransactionID(txnID),
		Origin:         spec.ServerName(s.ServerName),
		Destination:    spec.ServerName(destination),
		OriginServerTS: spec.AsTimestamp(s.now()),
		PDUs:           []json.RawMessage{},
	}
	for _, e := range entries {
		if e.PDU != "" {
			txn.PDUs = append(txn.PDUs, json.RawMessage(e.PDU))
			continue
		}
		var edu gomatrixserverlib.EDU
		if err := json.Unmarshal([]byte(e.EDU), &edu); err != nil {
			return fmt.Errorf("send transaction %s: entry %s: %w", txnID, e.SK, err)
		}
		edu.Origin = s.ServerName
		txn.EDUs = append(txn.EDUs, edu)
	}
	sendCtx := ctx
	if deadline, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		sendCtx, cancel = context.WithDeadline(ctx, deadline.Add(-sendMargin))
		defer cancel()
	}
	res, err := s.Client.SendTransaction(sendCtx, txn)
	if err != nil {
		return fmt.Errorf("send transaction %s to %s: %w", txnID, destination, err)
	}
	for id, r := range res.PDUs {
		if r.Error != "" {
			s.logger().LogAttrs(ctx, slog.LevelInfo, "destination refused an event",
				slog.String("destination", destination), slog.String("txn_id", txnID),
				slog.String("event_id", id), slog.String("error", r.Error))
		}
	}
	return nil
}

// backOff records a failed attempt: the next interval (doubled from the
// last, within MinRetry and MaxRetry), the jittered time of the next try,
// a wake-up job for that time, and the lease let go. The transaction stays,
// to go again under its ID.
func (s *Sender) backOff(ctx context.Context, destination string, st *state, cause error) error {
	interval := s.minRetry()
	if st.Interval > 0 {
		interval = time.Duration(float64(time.Duration(st.Interval)*time.Millisecond) * s.multiplier())
	}
	interval = min(max(interval, s.minRetry()), s.maxRetry())
	wait := min(time.Duration(float64(interval)*(jitterMin+(jitterMax-jitterMin)*s.jitter())), s.maxRetry())
	now := s.now()
	st.Failures++
	st.Interval = interval.Milliseconds()
	st.RetryAt = now.Add(wait).UnixMilli()
	st.Owner, st.LeaseUntil = "", 0
	s.logger().LogAttrs(ctx, slog.LevelWarn, "federation transaction failed; backing off",
		slog.String("destination", destination), slog.String("txn_id", st.Txn),
		slog.Int64("failures", st.Failures), slog.Duration("retry_in", wait), slog.Any("error", cause))
	if q := s.queue(); q != nil {
		if err := s.queueJob(ctx, q, job{Destination: destination, WakeAt: st.RetryAt}, wait); err == nil {
			st.WakeAt = st.RetryAt
		}
	}
	return ignoreConflict(s.writeState(ctx, st))
}

// wake makes sure a job wakes the destination at the end of its backoff:
// a wake-up that came early (SQS delays a message 15 minutes at most) goes
// round again; any other job queues one if none is queued.
func (s *Sender) wake(ctx context.Context, st *state, j job, now time.Time) error {
	q := s.queue()
	if q == nil {
		return nil
	}
	wait := time.UnixMilli(st.RetryAt).Sub(now)
	if j.WakeAt != 0 {
		if j.WakeAt != st.RetryAt {
			return nil // a wake-up of an earlier backoff; the latest has its own
		}
		return s.queueJob(ctx, q, j, wait)
	}
	if st.WakeAt == st.RetryAt {
		return nil
	}
	if err := s.queueJob(ctx, q, job{Destination: j.Destination, WakeAt: st.RetryAt}, wait); err != nil {
		return err
	}
	st.WakeAt = st.RetryAt
	return ignoreConflict(s.writeState(ctx, st))
}

// handOn lets go of the destination and queues a job to go on with it, for
// an invocation near its end.
func (s *Sender) handOn(ctx context.Context, destination string, st *state) error {
	if err := s.release(ctx, st, nil); err != nil {
		return err
	}
	q := s.queue()
	if q == nil {
		return nil
	}
	return s.queueJob(context.WithoutCancel(ctx), q, job{Destination: destination}, 0)
}

// release lets go of the lease and returns cause, joined with the write's
// error.
func (s *Sender) release(ctx context.Context, st *state, cause error) error {
	st.Owner, st.LeaseUntil = "", 0
	// A release must land even when ctx has ended: a lease left held keeps
	// other jobs off the destination until it runs out.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return errors.Join(cause, ignoreConflict(s.writeState(wctx, st)))
}

// nextBatch reads the head of the outbox: its PDUs up to MaxPDUs and EDUs
// up to MaxEDUs, in outbox order but for each room's PDUs, in room order.
func (s *Sender) nextBatch(ctx context.Context, destination string) (batch, error) {
	var page []entry
	_, err := s.Store.QueryPage(ctx, store.Query{PK: partition(destination), Prefix: entryPrefix, Limit: MaxPDUs + MaxEDUs}, &page)
	if err != nil {
		return batch{}, fmt.Errorf("read outbox of %s: %w", destination, err)
	}
	var b batch
	pdus, edus := 0, 0
	for _, e := range page {
		switch {
		case e.PDU != "" && pdus < MaxPDUs:
			pdus++
		case e.PDU == "" && edus < MaxEDUs:
			edus++
		default:
			b.full = true
			continue
		}
		b.entries = append(b.entries, e)
	}
	b.full = b.full || len(page) == MaxPDUs+MaxEDUs
	roomOrder(b.entries)
	return b, nil
}

// roomOrder puts each room's PDUs among entries in the order of their
// positions in the room, keeping the places the room's PDUs take: two
// appends to a room may number their entries the other way round.
func roomOrder(entries []entry) {
	places := map[string][]int{}
	for i, e := range entries {
		if e.PDU != "" {
			places[e.Room] = append(places[e.Room], i)
		}
	}
	for _, idx := range places {
		group := make([]entry, len(idx))
		for k, i := range idx {
			group[k] = entries[i]
		}
		slices.SortStableFunc(group, func(a, b entry) int { return cmp.Compare(a.RoomSeq, b.RoomSeq) })
		for k, i := range idx {
			entries[i] = group[k]
		}
	}
}

// txnEntries reads the entries of a formed transaction back, in its order.
// Entries already gone were delivered by a worker that died before it said
// so: the transaction goes with the rest, under its ID.
func (s *Sender) txnEntries(ctx context.Context, destination string, seqs []int64) ([]entry, error) {
	keys := make([]store.Key, 0, len(seqs))
	pos := make(map[string]int, len(seqs))
	for i, n := range seqs {
		k := store.Key{PK: partition(destination), SK: entrySK(n)}
		keys = append(keys, k)
		pos[k.SK] = i
	}
	out := make([]entry, 0, len(seqs))
	err := s.Store.GetMany(ctx, keys, func(_ store.Key, decode func(any) error) error {
		var e entry
		if err := decode(&e); err != nil {
			return err
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read transaction of %s: %w", destination, err)
	}
	slices.SortFunc(out, func(a, b entry) int { return cmp.Compare(pos[a.SK], pos[b.SK]) })
	return out, nil
}

// catchUpKeep is how many of a room's PDUs that waited out a backoff go to
// the destination when it answers again: a transaction's worth.
const catchUpKeep = MaxPDUs

// catchUp keeps, of the PDUs that waited out a backoff, the newest
// catchUpKeep of each room: a short outage loses nothing (every event
// reaches the destination, in order), and after a long one the destination
// learns of the older ones from those, fetching the gap with
// /get_missing_events, rather than taking hours of history a transaction
// at a time. EDUs stay.
func (s *Sender) catchUp(ctx context.Context, destination string) error {
	perRoom := map[string]int{} // room -> PDUs waiting
	var pdus []entry
	cursor := ""
	for {
		var page []entry
		next, err := s.Store.QueryPage(ctx, store.Query{PK: partition(destination), Prefix: entryPrefix, Cursor: cursor}, &page)
		if err != nil {
			return fmt.Errorf("catch up %s: %w", destination, err)
		}
		for _, e := range page {
			if e.PDU == "" {
				continue
			}
			pdus = append(pdus, entry{PK: e.PK, SK: e.SK, Room: e.Room, RoomSeq: e.RoomSeq})
			perRoom[e.Room]++
		}
		if next == "" {
			break
		}
		cursor = next
	}
	// A room's oldest go, by their place in the room.
	slices.SortStableFunc(pdus, func(a, b entry) int { return cmp.Compare(a.RoomSeq, b.RoomSeq) })
	var drop []store.Key
	for _, e := range pdus {
		if perRoom[e.Room] > catchUpKeep {
			perRoom[e.Room]--
			drop = append(drop, store.Key{PK: e.PK, SK: e.SK})
		}
	}
	if len(drop) == 0 {
		return nil
	}
	s.logger().LogAttrs(ctx, slog.LevelInfo, "catching up a destination with the newest events of each room",
		slog.String("destination", destination), slog.Int("kept_per_room", catchUpKeep), slog.Int("dropped", len(drop)))
	if err := s.Store.DeleteEach(ctx, drop); err != nil {
		return fmt.Errorf("catch up %s: %w", destination, err)
	}
	return nil
}

// outboxEmpty reports whether the destination's outbox holds nothing.
func (s *Sender) outboxEmpty(ctx context.Context, destination string) (bool, error) {
	var page []entry
	if _, err := s.Store.QueryPage(ctx, store.Query{PK: partition(destination), Prefix: entryPrefix, Limit: 1}, &page); err != nil {
		return false, fmt.Errorf("read outbox of %s: %w", destination, err)
	}
	return len(page) == 0, nil
}

func (s *Sender) readState(ctx context.Context, destination string) (*state, error) {
	st := &state{PK: partition(destination), SK: stateSK}
	if err := s.Store.Get(ctx, store.Key{PK: st.PK, SK: st.SK}, st); err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("read sender state of %s: %w", destination, err)
	}
	return st, nil
}

// writeState writes st over the revision it was read at.
func (s *Sender) writeState(ctx context.Context, st *state) error {
	old := st.Rev
	st.Rev++
	var err error
	if old == 0 {
		err = s.Store.Create(ctx, st)
	} else {
		err = s.Store.PutIf(ctx, st, "rev", old)
	}
	if err != nil {
		st.Rev = old
		return fmt.Errorf("write sender state of %s: %w", st.PK, err)
	}
	return nil
}

// ignoreConflict drops a lost race for the state: the worker that won it
// holds the destination and sees to its outbox.
func ignoreConflict(err error) error {
	if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrExists) {
		return nil
	}
	return err
}

func (s *Sender) minRetry() time.Duration {
	return cmp.Or(s.MinRetry, DefaultMinRetry)
}

func (s *Sender) maxRetry() time.Duration {
	return cmp.Or(s.MaxRetry, DefaultMaxRetry)
}

func (s *Sender) multiplier() float64 {
	return cmp.Or(s.Multiplier, DefaultMultiplier)
}

// newID is a random ID of 24 hex digits: transaction IDs and lease owners.
func newID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
