package rooms

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/gate"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// stateBuckets is how many block trees a snapshot splits the state into
// (blocks.go): a state change rewrites one leaf and the indexes above it.
const stateBuckets = 16

// maxBatch is how many events one transaction appends; each takes six
// actions or more (a state event of a large room writes a leaf and the
// indexes above it) and DynamoDB allows 100: a batch over that is
// errTooManyActions, and goes in halves.
const maxBatch = 12

var errTooManyActions = errors.New("batch exceeds one transaction")

// commit appends evs after h (nil for a new room) and returns the new head;
// finish, when not nil, then tells the local users (it need not hold up
// the next sender). Whatever a reader follows from an event in the
// timeline is written before the event's slot is claimed or in one
// transaction with it, so that no crash leaves an event that cannot be
// fetched by its ID or a redaction that does not apply:
//   - a lone message event: its transaction record, pointer and relation,
//     then the conditional write of its slot (commitMessage);
//   - a redaction of a message: one transaction of its slot, pointer,
//     transaction record and the mark on its target (commitRedaction);
//   - anything that changes state, a redaction of a state event included:
//     one transaction, so that the current state, the snapshot and the
//     slot never disagree (commitBatch).
//
// c is the client's transaction, nil without one; losing it to another
// request is errTxnTaken, losing the slot errMoved.
func (s *Service) commit(ctx context.Context, roomID string, h *head, evs []events.PDU, state map[events.StateKeyTuple]events.PDU, c *txnClaim, loc *locals) (next *head, finish func(context.Context) error, err error) {
	return s.commitFrom(ctx, roomID, 0, h, evs, state, c, loc)
}

// commitFrom is commit with a new room's first event (h nil) at position
// base+1 rather than 1: a room taken in through a remote join starts at
// joinBase, leaving the positions below for its history (backfill.go).
func (s *Service) commitFrom(ctx context.Context, roomID string, base int64, h *head, evs []events.PDU, state map[events.StateKeyTuple]events.PDU, c *txnClaim, loc *locals) (next *head, finish func(context.Context) error, err error) {
	var target *slot // of a lone redaction
	if h != nil && len(evs) == 1 && evs[0].StateKey() == nil {
		ev := evs[0]
		if ev.Type() != events.Redaction {
			return s.commitMessage(ctx, roomID, h, ev, c, loc)
		}
		if target, err = s.redactionTarget(ctx, roomID, ev.Redacts()); err != nil {
			return nil, nil, err
		}
		if target == nil || !target.isState() {
			return s.commitRedaction(ctx, roomID, h, ev, target, c, loc)
		}
	}
	var appended []Appended
	n := maxBatch
	for len(evs) > 0 {
		n = min(len(evs), n)
		var done []Appended
		var bc *txnClaim
		if n == len(evs) {
			bc = c // the transaction's record goes with the last event
		}
		var before map[events.StateKeyTuple]events.PDU
		if n > 1 && state != nil {
			before = maps.Clone(state)
		}
		next, done, err := s.commitBatch(ctx, roomID, base, h, evs[:n], state, bc, loc, target, false)
		if errors.Is(err, errTooManyActions) && n > 1 {
			// State events of a large room rewrite several blocks each.
			clear(state)
			maps.Copy(state, before)
			n /= 2
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		h = next
		appended = append(appended, done...)
		evs = evs[n:]
	}
	return h, func(ctx context.Context) error { return s.notify(ctx, appended) }, nil
}

// headAt is the head once ev is appended in sl.
func headAt(sl slot, seq int64, ev events.PDU) *head {
	return &head{slot: sl, Seq: seq, ev: ev}
}

func (s *Service) newSlot(roomID string, seq int64, ev events.PDU, stateSeq int64) slot {
	pk, sk := slotKey(roomID, seq)
	return slot{PK: pk, SK: sk, EventID: ev.EventID(), PDU: string(ev.JSON()), Version: string(ev.Version()), StateSeq: stateSeq}
}

func newPointer(roomID string, seq int64, ev events.PDU) pointer {
	return pointer{PK: pointerPK(ev.EventID()), SK: "event", RoomID: roomID, Seq: seq}
}

// commitMessage appends a message event at the slot after h: first, at
// once, its transaction record (a create, which decides the transaction
// ID), its pointer and its relation; then the conditional write of the
// slot, which decides the position. Losing the slot is errMoved; the
// pointer and relation written for it name a slot that holds another
// event, which readers check (and a relation or search index written
// over the winner's is put back, beside the next attempt: lostSlot,
// repairLost). So does a pointer
// written beside a record found taken (a retry through another process,
// which does not read the record first: txn.go): the slot it names is
// never claimed for its event. (A message with a relation reads its
// record first, so that a retry does not write its relation over the
// stored event's: send.go.)
func (s *Service) commitMessage(ctx context.Context, roomID string, h *head, ev events.PDU, c *txnClaim, loc *locals) (*head, func(context.Context) error, error) {
	seq := h.Seq + 1
	if err := s.checkTaken(ctx, c, seq); err != nil {
		return nil, nil, err
	}
	sl := s.newSlot(roomID, seq, ev, h.StateSeq)
	sl.carry(h, ev)
	// The pointer and the record are read by nothing until the slot
	// holds the event: they go beside the access token's read
	// (gate.Ahead), the slot after it. A relation item may overwrite
	// another event's (repairLost): it waits for the caller.
	// They are not cut short when the request is (a refused token
	// cancels it): a record left half-written would hold its transaction
	// ID until its lease ends, where one written can be given up.
	ahead := gate.Ahead(context.WithoutCancel(ctx))
	errs := make(chan error, 3)
	writes := 2
	if c != nil {
		sl.Txn = c.rec.tag
		r := s.record(c, ev.EventID(), roomID, seq)
		go func() { errs <- s.writeRecord(ahead, c, r) }()
	} else {
		errs <- nil
	}
	go func() { errs <- s.Store.Put(ahead, newPointer(roomID, seq, ev)) }()
	rel := relationOf(roomID, seq, ev)
	if rel != nil {
		writes++
		go func() { errs <- s.Store.Put(ctx, *rel) }()
	}
	// What goes beside the slot is encoded while those writes are on
	// their way.
	a := Appended{RoomID: roomID, Seq: seq, Event: ev, To: loc.joined(), StateSeq: sl.StateSeq, Servers: loc.Partial}
	land := s.prepareLanding(a)
	var err error
	for range writes {
		// errTxnTaken wins over any other failure: the request then waits.
		if e := <-errs; e != nil && !errors.Is(err, errTxnTaken) {
			err = e
		}
	}
	if errors.Is(err, errTxnTaken) && rel != nil {
		// Another request of this transaction may store its event, with
		// the same relation, at this position: once it has (send waits
		// for it), its relation item is put back over this one.
		c.overwrote = rel
	}
	if err != nil {
		return nil, nil, err
	}
	if s.halted("slot") {
		return nil, nil, errHalted
	}
	if s.halted("landed") {
		_ = land(ctx)
		return nil, nil, errHalted
	}
	// The stream entries and the search index go beside the slot (Landing).
	landed := make(chan error, 1)
	go func() { landed <- land(ctx) }()
	err = s.Store.Create(ctx, sl)
	landErr := <-landed
	switch {
	case errors.Is(err, store.ErrExists):
		relanding := landErr != errNoLanding
		if rel == nil && !relanding {
			return nil, nil, errMoved
		}
		return nil, nil, &lostSlot{repair: func(ctx context.Context) error {
			return s.repairLost(ctx, roomID, seq, rel, relanding, loc)
		}}
	case err != nil:
		return nil, nil, err
	}
	// What Landing failed to write is written after the slot, as for any
	// other event.
	a.Landed = landErr == nil
	finish := func(ctx context.Context) error { return s.notify(ctx, []Appended{a}) }
	sl.Txn = ""
	return headAt(sl, seq, ev), finish, nil
}

// lostSlot is errMoved for a message that lost its slot after writing
// beside it: repair puts back what those writes may have replaced of the
// winner's (its relation item, its search index), all keyed by the lost
// position. The message is built again at a later position meanwhile,
// whose writes never touch the lost one's: send runs the repair beside
// the new attempt, not before it, and waits for both.
type lostSlot struct {
	repair func(context.Context) error
}

func (e *lostSlot) Error() string {
	return errMoved.Error() + " (what was written beside it to be put back)"
}
func (e *lostSlot) Unwrap() error { return errMoved }

// errNoLanding stands for a Landing that was not called.
var errNoLanding = errors.New("no landing hook")

// prepareLanding encodes what Landing writes of a and returns the write:
// errNoLanding without the hook, the encoding's error if it failed.
func (s *Service) prepareLanding(a Appended) func(context.Context) error {
	if s.Landing == nil {
		return func(context.Context) error { return errNoLanding }
	}
	write, err := s.Landing(a)
	if err != nil {
		return func(context.Context) error { return err }
	}
	return write
}

// repairLost puts back what a message that lost position seq wrote over
// the winner's there: its relation item rel (nil without one; see
// putBackRelation) and, relanding, the search index Landing wrote, whose
// items are keyed by word and position. The winner's slot is read once,
// then the writes go side by side. The loser's writes are over, and the
// winner's came before its slot, so these are the last.
func (s *Service) repairLost(ctx context.Context, roomID string, seq int64, rel *relation, relanding bool, loc *locals) error {
	sl, found, err := s.slotAt(ctx, roomID, seq)
	if err != nil || !found {
		return err
	}
	won, err := sl.event()
	if err != nil {
		return fmt.Errorf("read the event that won position %d of %s: %w", seq, roomID, err)
	}
	var g errgroup.Group
	if rel != nil && !sl.Hold {
		g.Go(func() error { return s.putBackRelation(ctx, roomID, seq, won, rel) })
	}
	if relanding {
		g.Go(func() error {
			write, err := s.Landing(Appended{RoomID: roomID, Seq: seq, Event: won.PDU, To: loc.joined(), StateSeq: won.StateSeq})
			if err != nil {
				return err
			}
			return write(ctx)
		})
	}
	return g.Wait()
}

// slotAt reads the slot at position seq of roomID; found is false when
// no event is there yet (its own writes would come later).
func (s *Service) slotAt(ctx context.Context, roomID string, seq int64) (sl slot, found bool, err error) {
	pk, sk := slotKey(roomID, seq)
	err = s.Store.Get(ctx, store.Key{PK: pk, SK: sk}, &sl)
	if errors.Is(err, store.ErrNotFound) {
		return sl, false, nil
	}
	if err != nil {
		return sl, false, fmt.Errorf("read position %d of %s: %w", seq, roomID, err)
	}
	return sl, true, nil
}

// restoreRelation puts back the relation item of the event at position
// seq, for a request that wrote rel for that position and did not store
// its event there (putBackRelation).
func (s *Service) restoreRelation(ctx context.Context, roomID string, seq int64, rel *relation) error {
	sl, found, err := s.slotAt(ctx, roomID, seq)
	if err != nil || !found || sl.Hold {
		return err
	}
	won, err := sl.event()
	if err != nil {
		return fmt.Errorf("restore the relation at %d of %s: %w", seq, roomID, err)
	}
	return s.putBackRelation(ctx, roomID, seq, won, rel)
}

// putBackRelation writes the relation item of won, the event at position
// seq, over rel, which a request wrote for that position: a relation item
// is keyed by its parent and position, so when both events relate to one
// parent (two reactions to a message, sent through processes whose cached
// heads differ) rel may have overwritten won's. A relation of a loser that
// relates to another parent is left: readers skip an item whose position
// holds another event. A copy of an event above a gap (a slot's Hold) has
// its own relation: callers leave it.
func (s *Service) putBackRelation(ctx context.Context, roomID string, seq int64, won Event, rel *relation) error {
	if r := relationOf(roomID, seq, won.PDU); r != nil && r.SK == rel.SK && r.EventID != rel.EventID {
		return s.Store.Put(ctx, *r)
	}
	return nil
}

// commitRedaction appends a redaction whose target, if this server holds
// it, is not a state event: one transaction of its slot, its pointer, its
// relation, its transaction record, and its target's slot marked with it
// (unless another redaction marked it first).
func (s *Service) commitRedaction(ctx context.Context, roomID string, h *head, ev events.PDU, target *slot, c *txnClaim, loc *locals) (*head, func(context.Context) error, error) {
	seq := h.Seq + 1
	if target != nil && target.SK >= slotSK(seq) {
		return nil, nil, errMoved // the target came after the cached head
	}
	if err := s.checkTaken(ctx, c, seq); err != nil {
		return nil, nil, err
	}
	sl := s.newSlot(roomID, seq, ev, h.StateSeq)
	sl.carry(h, ev)
	var ops []store.Op
	if c != nil {
		sl.Txn = c.rec.tag
		ops = append(ops, c.recordOp(s.record(c, ev.EventID(), roomID, 0)))
	}
	ops = append(ops, store.CreateOp(sl), store.PutOp(newPointer(roomID, seq, ev)))
	if rel := relationOf(roomID, seq, ev); rel != nil {
		ops = append(ops, store.PutOp(*rel))
	}
	if target != nil && target.RedactedBy == "" {
		marked := *target
		marked.RedactedBy = ev.EventID()
		ops = append(ops, store.PutIfOp(marked, "id", marked.EventID))
	}
	if err := s.Store.Transact(ctx, ops...); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, nil, s.lost(ctx, c)
		}
		return nil, nil, err
	}
	finish := func(ctx context.Context) error {
		return s.notify(ctx, []Appended{{RoomID: roomID, Seq: seq, Event: ev, To: loc.joined(), StateSeq: sl.StateSeq, Servers: loc.Partial}})
	}
	sl.Txn = ""
	return headAt(sl, seq, ev), finish, nil
}

// redactionTarget reads the slot of the event a redaction in roomID
// redacts; nil when this server holds no such event in that room (the
// redaction is kept and applies nowhere).
func (s *Service) redactionTarget(ctx context.Context, roomID, eventID string) (*slot, error) {
	var p pointer
	if err := s.Store.Get(ctx, store.Key{PK: pointerPK(eventID), SK: "event"}, &p); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil
		}
		return nil, err
	}
	if p.RoomID != roomID {
		return nil, nil
	}
	var sl slot
	pk, sk := slotKey(roomID, p.Seq)
	if err := s.Store.Get(ctx, store.Key{PK: pk, SK: sk}, &sl); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil
		}
		return nil, err
	}
	if sl.EventID != eventID {
		return nil, nil // a pointer written for a slot another event won
	}
	return &sl, nil
}

// isState reports whether the slot holds a state event.
func (sl *slot) isState() bool {
	var f struct {
		StateKey *string `json:"state_key"`
	}
	return json.Unmarshal([]byte(sl.PDU), &f) == nil && f.StateKey != nil
}

// batch accumulates the writes of events appended together.
type batch struct {
	s       *Service
	roomID  string
	seq     int64
	blocks  []string
	loaded  map[string]block // blocks read or written, by hash
	info    *info
	members map[string]*membership
	ops     []store.Op
	// slots are the batch's events, written by finish; bySlot finds one by
	// event ID, for a redaction of an event of the same batch.
	slots  []slot
	bySlot map[string]int
	// currentOps finds the write of a current state item in ops by its
	// sort key, so that a later write of the item in the batch replaces it
	// (DynamoDB refuses two actions on one item in a transaction).
	currentOps map[string]int
	// target is the slot of a redaction's target, read before the batch.
	target *slot
	// locals is the room's local users, changed by member events.
	locals        *locals
	localsChanged bool
}

// commitBatch appends evs after h (nil for a new room, whose first event
// goes at base+1) in one transaction.
// target, when not nil, is the slot of the event a redaction in evs
// redacts, read already. received events (from other servers) create their
// pointers, so that one stored already fails the transaction.
func (s *Service) commitBatch(ctx context.Context, roomID string, base int64, h *head, evs []events.PDU, state map[events.StateKeyTuple]events.PDU, c *txnClaim, loc *locals, target *slot, received bool) (*head, []Appended, error) {
	b := &batch{s: s, roomID: roomID, blocks: make([]string, stateBuckets), loaded: map[string]block{}, members: map[string]*membership{},
		bySlot: map[string]int{}, currentOps: map[string]int{}, target: target, seq: base}
	b.locals = &locals{PK: roomPK(roomID), SK: localsSK, Users: map[string]string{}}
	if h != nil {
		if c != nil {
			if err := s.checkTaken(ctx, c, h.Seq+1); err != nil {
				return nil, nil, err
			}
		}
		if err := b.load(ctx, h); err != nil {
			return nil, nil, err
		}
		b.locals = loc
	}
	// The cached copy changes only once the batch is stored.
	b.locals = &locals{PK: b.locals.PK, SK: b.locals.SK, Users: maps.Clone(b.locals.Users), Partial: b.locals.Partial}
	var appended []Appended
	stateSeq := int64(0)
	if h != nil {
		stateSeq = h.StateSeq
	}
	for i, ev := range evs {
		b.seq++
		var replaced events.PDU
		if ev.StateKey() != nil {
			stateSeq = b.seq
			var err error
			if replaced, err = b.applyState(ctx, ev, state); err != nil {
				return nil, nil, err
			}
		}
		appended = append(appended, Appended{RoomID: roomID, Seq: b.seq, Event: ev, To: b.recipients(ev), Servers: b.locals.Partial})
		sl := s.newSlot(roomID, b.seq, ev, stateSeq)
		sl.carry(h, ev)
		if replaced != nil {
			sl.PrevContent = string(replaced.Content())
		}
		if c != nil && i == len(evs)-1 {
			sl.Txn = c.rec.tag
		}
		b.bySlot[sl.EventID] = len(b.slots)
		b.slots = append(b.slots, sl)
		if received {
			b.ops = append(b.ops, store.CreateOp(newPointer(roomID, b.seq, ev)))
		} else {
			b.ops = append(b.ops, store.PutOp(newPointer(roomID, b.seq, ev)))
		}
		if rel := relationOf(roomID, b.seq, ev); rel != nil {
			b.ops = append(b.ops, store.PutOp(*rel))
		}
		if ev.Type() == events.Redaction {
			if err := b.redact(ctx, ev, state); err != nil {
				return nil, nil, err
			}
		}
	}
	b.finish(c, evs)
	if len(b.ops) > store.MaxTransactActions && len(evs) > 1 {
		return nil, nil, errTooManyActions
	}
	if err := s.Store.Transact(ctx, b.ops...); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, nil, s.lost(ctx, c)
		}
		return nil, nil, err
	}
	loc.Users = b.locals.Users
	last := b.slots[len(b.slots)-1]
	last.Txn = ""
	return headAt(last, b.seq, evs[len(evs)-1]), appended, nil
}

// recipients are the local users whose streams ev goes to: the joined, and
// the local target of a membership change (an invitee, a leaver).
func (b *batch) recipients(ev events.PDU) []string {
	to := b.locals.joined()
	if ev.Type() == events.Member && b.s.isLocal(*ev.StateKey()) {
		if m, _ := ev.Membership(); m != "join" {
			to = append(to, *ev.StateKey())
		}
	}
	return to
}

// load reads what the batch modifies: the snapshot after h, the room info.
func (b *batch) load(ctx context.Context, h *head) error {
	b.seq = h.Seq
	var snap snapshot
	if err := b.s.Store.Get(ctx, store.Key{PK: roomPK(b.roomID), SK: snapSK(h.StateSeq)}, &snap); err != nil {
		return fmt.Errorf("read state snapshot %d of %s: %w", h.StateSeq, b.roomID, err)
	}
	copy(b.blocks, snap.Blocks)
	b.info = &info{}
	if err := b.s.Store.Get(ctx, store.Key{PK: roomPK(b.roomID), SK: infoSK}, b.info); err != nil {
		return fmt.Errorf("read info of %s: %w", b.roomID, err)
	}
	return nil
}

// node returns the block named hash, reading it on first use.
func (b *batch) node(ctx context.Context, hash string) (block, error) {
	if hash == "" {
		return block{}, nil
	}
	if blk, ok := b.loaded[hash]; ok {
		return blk, nil
	}
	var blk block
	if err := b.s.Store.Get(ctx, store.Key{PK: roomPK(b.roomID), SK: "blk|" + hash}, &blk); err != nil {
		return block{}, fmt.Errorf("read state block %s of %s: %w", hash, b.roomID, err)
	}
	b.loaded[hash] = blk
	return blk, nil
}

// has reports whether the block named h is stored or written by the batch.
func (b *batch) has(h string) bool {
	_, ok := b.loaded[h]
	return ok
}

// applyState records the state event ev at the batch's position: current
// state, the new blocks and snapshot, and what the room summary and the
// member's own index keep of it. It returns the state event ev replaces,
// when the state read for the append holds it.
func (b *batch) applyState(ctx context.Context, ev events.PDU, state map[events.StateKeyTuple]events.PDU) (events.PDU, error) {
	key := ev.Type() + "\x00" + *ev.StateKey()
	i := bucketOf(key)
	hash, blks, err := set(ctx, b.roomID, b.blocks[i], key, ev.EventID(), 1, b.node)
	if err != nil {
		return nil, err
	}
	b.blocks[i] = hash
	for _, blk := range blks {
		if h := blk.SK[len("blk|"):]; !b.has(h) {
			b.loaded[h] = blk
			b.ops = append(b.ops, store.PutOp(blk))
		}
	}
	b.ops = append(b.ops, store.PutOp(snapshot{PK: roomPK(b.roomID), SK: snapSK(b.seq), Blocks: append([]string(nil), b.blocks...)}))
	return b.setCurrent(ctx, ev, state)
}

// setCurrent makes the state event ev current at the batch's position: its
// current state item, what the room summary and the member's own index
// keep of it. It returns the state event ev replaces, when state holds it,
// and sets ev in state.
func (b *batch) setCurrent(ctx context.Context, ev events.PDU, state map[events.StateKeyTuple]events.PDU) (events.PDU, error) {
	cur := current{PK: roomPK(b.roomID), SK: stateSK(ev.Type(), *ev.StateKey()), EventID: ev.EventID(), Seq: b.seq, PDU: string(ev.JSON()), Version: string(ev.Version())}
	if ev.Type() == events.Member {
		cur.Membership, _ = ev.Membership()
		if err := b.member(ctx, ev, cur.Membership, state); err != nil {
			return nil, err
		}
	}
	b.putCurrent(store.PutOp(cur), cur.SK)
	b.summarize(ev)
	tuple := events.StateKeyTuple{Type: ev.Type(), StateKey: *ev.StateKey()}
	replaced := state[tuple]
	if state != nil {
		state[tuple] = ev
	}
	return replaced, nil
}

// blockHash names a block by its content, so equal blocks are stored once.
func blockHash(entries map[string]string) string {
	keys := make([]string, 0, len(entries))
	for k := range entries {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s\x01%s\x02", k, entries[k])
	}
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:18])
}

// member updates the joined count and, for a local user, their own index of
// rooms with the history of their membership.
func (b *batch) member(ctx context.Context, ev events.PDU, m string, state map[events.StateKeyTuple]events.PDU) error {
	target := *ev.StateKey()
	prev := ""
	if old := state[events.StateKeyTuple{Type: events.Member, StateKey: target}]; old != nil {
		prev, _ = old.Membership()
	}
	if b.info != nil {
		if prev == "join" {
			b.info.Joined--
		}
		if m == "join" {
			b.info.Joined++
		}
	}
	if !b.s.isLocal(target) {
		return nil
	}
	mem, ok := b.members[target]
	if !ok {
		mem = &membership{PK: userPK(target), SK: membershipPrefix + b.roomID}
		err := b.s.Store.Get(ctx, store.Key{PK: mem.PK, SK: mem.SK}, mem)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		b.members[target] = mem
	}
	mem.Membership, mem.EventID, mem.Seq = m, ev.EventID(), b.seq
	mem.History = append(mem.History, transition(b.seq, m))
	switch m {
	case "join", "invite", "knock":
		b.locals.Users[target] = m
	default:
		delete(b.locals.Users, target)
	}
	b.localsChanged = true
	if m == "join" || m == "invite" || m == "knock" {
		mem.Forgotten = false
	}
	return nil
}

// summarize keeps the room info in step with the state events it lists.
func (b *batch) summarize(ev events.PDU) {
	if ev.Type() == events.Create {
		b.info = &info{PK: roomPK(b.roomID), SK: infoSK, Version: string(ev.Version()), Creator: events.Sender(ev), Created: int64(ev.OriginServerTS())}
		var c struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(ev.Content(), &c)
		b.info.RoomType = c.Type
		return
	}
	if b.info != nil {
		b.info.apply(ev, b.seq)
	}
}

// apply keeps the summary in step with the state event ev at position seq.
func (i *info) apply(ev events.PDU, seq int64) {
	if *ev.StateKey() != "" {
		return
	}
	var c map[string]any
	_ = json.Unmarshal(ev.Content(), &c)
	str := func(k string) string { v, _ := c[k].(string); return v }
	switch ev.Type() {
	case events.Name:
		i.Name = str("name")
	case events.Topic:
		i.Topic = str("topic")
	case events.Avatar:
		i.Avatar = str("url")
	case events.CanonicalAlias:
		i.Alias = str("alias")
	case events.JoinRules:
		i.JoinRule = str("join_rule")
	case events.GuestAccess:
		i.Guests = str("guest_access") == "can_join"
	case events.HistoryVisibility:
		i.Visibility = append(i.Visibility, transition(seq, str("history_visibility")))
	case events.Tombstone:
		i.Tombstoned = str("replacement_room")
	}
}

// putCurrent adds the write of the current state item sk, replacing an
// earlier write of it in the batch.
func (b *batch) putCurrent(op store.Op, sk string) {
	if i, ok := b.currentOps[sk]; ok {
		b.ops[i] = op
		return
	}
	b.currentOps[sk] = len(b.ops)
	b.ops = append(b.ops, op)
}

// redact applies the redaction red in the batch: the target's slot is
// marked with it (unless another redaction marked it first) and, if the
// target is a state event still current, the current state item holds its
// redacted form and the room info forgets what it took from it (a redacted
// topic is no topic), as the spec has the auth rules and the state
// endpoints see it. A target this server does not hold is left alone.
func (b *batch) redact(ctx context.Context, red events.PDU, state map[events.StateKeyTuple]events.PDU) error {
	targetID := red.Redacts()
	i, inBatch := b.bySlot[targetID]
	var sl slot
	if inBatch {
		sl = b.slots[i]
	} else {
		t := b.target
		if t == nil || t.EventID != targetID {
			var err error
			if t, err = b.s.redactionTarget(ctx, b.roomID, targetID); err != nil || t == nil {
				return err
			}
		}
		if len(b.slots) > 0 && t.SK >= b.slots[0].SK {
			return errMoved // the target came after the head the batch builds on
		}
		sl = *t
	}
	if sl.RedactedBy != "" {
		return nil
	}
	sl.RedactedBy = red.EventID()
	if inBatch {
		b.slots[i] = sl
	} else {
		b.ops = append(b.ops, store.PutIfOp(sl, "id", targetID))
	}
	e, err := sl.event()
	if err != nil || e.PDU.StateKey() == nil {
		return err
	}
	tuple := events.StateKeyTuple{Type: e.PDU.Type(), StateKey: *e.PDU.StateKey()}
	cur, known := state[tuple]
	if !known {
		found, err := b.s.stateFor(ctx, b.roomID, nil, []events.StateKeyTuple{tuple})
		if err != nil {
			return err
		}
		cur = found[tuple]
	}
	if cur == nil || cur.EventID() != targetID {
		return nil // replaced since: nothing current to redact
	}
	redacted, err := events.Redact(e.PDU)
	if err != nil {
		return err
	}
	item := current{PK: roomPK(b.roomID), SK: stateSK(tuple.Type, tuple.StateKey), EventID: targetID, Seq: e.Seq, PDU: string(redacted.JSON()), Version: string(redacted.Version())}
	if tuple.Type == events.Member {
		item.Membership, _ = redacted.Membership()
	}
	if _, ok := b.currentOps[item.SK]; ok {
		b.putCurrent(store.PutOp(item), item.SK)
	} else {
		// Only over the same event: a state change landing meanwhile wins.
		b.putCurrent(store.PutIfOp(item, "id", targetID), item.SK)
	}
	if state != nil {
		state[tuple] = redacted
	}
	if b.info != nil && tuple.Type != events.HistoryVisibility && tuple.Type != events.Member {
		// The redaction algorithm keeps what the summary holds of these.
		b.info.apply(redacted, e.Seq)
	}
	return nil
}

// finish adds the writes gathered over the batch.
func (b *batch) finish(c *txnClaim, evs []events.PDU) {
	for _, sl := range b.slots {
		b.ops = append(b.ops, store.CreateOp(sl))
	}
	if b.info != nil {
		b.info.listing()
		rev := b.info.Rev
		b.info.Rev++
		if rev == 0 {
			b.ops = append(b.ops, store.CreateOp(*b.info))
		} else {
			b.ops = append(b.ops, store.PutIfOp(*b.info, "rev", rev))
		}
	}
	for _, m := range b.members {
		b.ops = append(b.ops, store.PutOp(*m))
	}
	if b.localsChanged {
		b.ops = append(b.ops, store.PutOp(*b.locals))
	}
	if c != nil {
		b.ops = append(b.ops, c.recordOp(b.s.record(c, evs[len(evs)-1].EventID(), b.roomID, 0)))
	}
}

// listing sets the index keys of a public room, most members first.
func (i *info) listing() {
	if i.GSI1PK == "" {
		i.GSI1SK = ""
		return
	}
	i.GSI1SK = fmt.Sprintf("%012d|%s", 1_000_000_000_000-i.Joined, strings.TrimPrefix(i.PK, "room|"))
}

// updateInfo changes the room info with change, over the revision read.
func (s *Service) updateInfo(ctx context.Context, roomID string, change func(*info)) error {
	lost := func(err error) bool { return errors.Is(err, store.ErrConflict) }
	err := store.Retry(ctx, raceBackoff, lost, func(ctx context.Context) error {
		var i info
		if err := s.Store.Get(ctx, store.Key{PK: roomPK(roomID), SK: infoSK}, &i); err != nil {
			return err
		}
		change(&i)
		i.listing()
		rev := i.Rev
		i.Rev++
		return s.Store.PutIf(ctx, i, "rev", rev)
	})
	if err != nil {
		return fmt.Errorf("update info of %s: %w", roomID, err)
	}
	return nil
}

// restoreOverwritten puts back, once the transaction's event is stored, the
// relation item at the position where this request wrote its own beside a
// record it found taken: the event stored there, if it relates to the same
// parent (the transaction's event does), wrote its item before its slot,
// maybe before this request's, and its slot is there by now.
func (s *Service) restoreOverwritten(ctx context.Context, roomID string, c *txnClaim) error {
	if c == nil || c.overwrote == nil {
		return nil
	}
	rel := c.overwrote
	c.overwrote = nil
	return s.restoreRelation(ctx, roomID, rel.Seq, rel)
}
