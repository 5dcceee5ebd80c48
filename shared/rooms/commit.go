package rooms

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"sort"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// stateBuckets is how many blocks a snapshot splits the state into. A state
// change rewrites one block: with 16, a room of 1,000 members writes about
// 4 KB per membership change instead of 60 KB.
const stateBuckets = 16

// maxBatch is how many events one transaction appends; each takes up to six
// actions and DynamoDB allows 100.
const maxBatch = 12

// commit appends evs after h (nil for a new room) and returns the new head.
// A lone message event takes one conditional write of its slot; finish,
// when not nil, then writes its pointer and transaction record, which need
// not hold up the next sender. Anything that changes state goes in one
// transaction, so that the current state, the snapshot and the slot never
// disagree.
func (s *Service) commit(ctx context.Context, roomID string, h *head, evs []events.PDU, state map[events.StateKeyTuple]events.PDU, t *txn, loc *locals) (next *head, finish func(context.Context) error, err error) {
	if h != nil && len(evs) == 1 && evs[0].StateKey() == nil {
		return s.commitMessage(ctx, roomID, h, evs[0], t, loc)
	}
	var appended []Appended
	for len(evs) > 0 {
		n := min(len(evs), maxBatch)
		var done []Appended
		if h, done, err = s.commitBatch(ctx, roomID, h, evs[:n], state, t, loc); err != nil {
			return nil, nil, err
		}
		appended = append(appended, done...)
		evs = evs[n:]
	}
	return h, func(ctx context.Context) error { return s.notify(ctx, appended) }, nil
}

// headAfter is the head once ev is appended at seq.
func (s *Service) headAfter(roomID string, seq int64, ev events.PDU, stateSeq int64) *head {
	return &head{slot: s.newSlot(roomID, seq, ev, stateSeq), Seq: seq, ev: ev}
}

func (s *Service) newSlot(roomID string, seq int64, ev events.PDU, stateSeq int64) slot {
	pk, sk := slotKey(roomID, seq)
	return slot{PK: pk, SK: sk, EventID: ev.EventID(), PDU: string(ev.JSON()), Version: string(ev.Version()), StateSeq: stateSeq}
}

func newPointer(roomID string, seq int64, ev events.PDU) pointer {
	return pointer{PK: pointerPK(ev.EventID()), SK: "event", RoomID: roomID, Seq: seq}
}

// commitMessage claims the slot after h; losing the race is errMoved.
func (s *Service) commitMessage(ctx context.Context, roomID string, h *head, ev events.PDU, t *txn, loc *locals) (*head, func(context.Context) error, error) {
	seq := h.Seq + 1
	sl := s.newSlot(roomID, seq, ev, h.StateSeq)
	// The transaction record goes out beside the claim, so that no crash
	// leaves a stored event without it (a retry would send it twice). A
	// record of a lost claim names a slot that holds another event, which
	// a retry sees.
	txnErr := make(chan error, 1)
	if t != nil {
		sl.Txn = t.tag
		t.EventID, t.RoomID, t.Seq = ev.EventID(), roomID, seq
		go func() { txnErr <- s.Store.Put(ctx, *t) }()
	} else {
		txnErr <- nil
	}
	err := s.Store.Create(ctx, sl)
	terr := <-txnErr
	if errors.Is(err, store.ErrExists) {
		return nil, nil, errMoved
	}
	if err != nil {
		return nil, nil, err
	}
	finish := func(ctx context.Context) error {
		if terr != nil {
			if err := s.Store.Put(ctx, *t); err != nil {
				return err
			}
		}
		if err := s.Store.Put(ctx, newPointer(roomID, seq, ev)); err != nil {
			return err
		}
		if rel := relationOf(roomID, seq, ev); rel != nil {
			if err := s.Store.Put(ctx, *rel); err != nil {
				return err
			}
		}
		if ev.Type() == events.Redaction {
			if err := s.markRedacted(ctx, roomID, ev); err != nil {
				return err
			}
		}
		return s.notify(ctx, []Appended{{RoomID: roomID, Seq: seq, Event: ev, To: loc.joined()}})
	}
	return s.headAfter(roomID, seq, ev, h.StateSeq), finish, nil
}

// batch accumulates the writes of events appended together.
type batch struct {
	s       *Service
	roomID  string
	seq     int64
	blocks  []string
	loaded  map[string]map[string]string
	info    *info
	members map[string]*membership
	ops     []store.Op
	// locals is the room's local users, changed by member events.
	locals        *locals
	localsChanged bool
}

func (s *Service) commitBatch(ctx context.Context, roomID string, h *head, evs []events.PDU, state map[events.StateKeyTuple]events.PDU, t *txn, loc *locals) (*head, []Appended, error) {
	b := &batch{s: s, roomID: roomID, blocks: make([]string, stateBuckets), loaded: map[string]map[string]string{}, members: map[string]*membership{}}
	b.locals = &locals{PK: roomPK(roomID), SK: localsSK, Users: map[string]string{}}
	if h != nil {
		if err := b.load(ctx, h); err != nil {
			return nil, nil, err
		}
		b.locals = loc
	}
	// The cached copy changes only once the batch is stored.
	b.locals = &locals{PK: b.locals.PK, SK: b.locals.SK, Users: maps.Clone(b.locals.Users)}
	var appended []Appended
	stateSeq := int64(0)
	if h != nil {
		stateSeq = h.StateSeq
	}
	var redactions []events.PDU
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
		appended = append(appended, Appended{RoomID: roomID, Seq: b.seq, Event: ev, To: b.recipients(ev)})
		if ev.Type() == events.Redaction {
			redactions = append(redactions, ev)
		}
		sl := s.newSlot(roomID, b.seq, ev, stateSeq)
		if replaced != nil {
			sl.PrevContent = string(replaced.Content())
		}
		if t != nil && i == len(evs)-1 {
			sl.Txn = t.tag
		}
		b.ops = append(b.ops, store.CreateOp(sl), store.PutOp(newPointer(roomID, b.seq, ev)))
		if rel := relationOf(roomID, b.seq, ev); rel != nil {
			b.ops = append(b.ops, store.PutOp(*rel))
		}
	}
	b.finish(t, evs)
	if err := s.Store.Transact(ctx, b.ops...); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, nil, errMoved
		}
		return nil, nil, err
	}
	for _, ev := range redactions {
		if err := s.markRedacted(ctx, roomID, ev); err != nil {
			return nil, nil, err
		}
	}
	loc.Users = b.locals.Users
	return s.headAfter(roomID, b.seq, evs[len(evs)-1], stateSeq), appended, nil
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

func bucketOf(key string) int {
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % stateBuckets)
}

// entries returns the block of bucket i, loading it on first use.
func (b *batch) entries(ctx context.Context, i int) (map[string]string, error) {
	hash := b.blocks[i]
	if hash == "" {
		return map[string]string{}, nil
	}
	if e, ok := b.loaded[hash]; ok {
		return e, nil
	}
	var blk block
	if err := b.s.Store.Get(ctx, store.Key{PK: roomPK(b.roomID), SK: "blk|" + hash}, &blk); err != nil {
		return nil, fmt.Errorf("read state block %s of %s: %w", hash, b.roomID, err)
	}
	b.loaded[hash] = blk.Entries
	return blk.Entries, nil
}

// applyState records the state event ev at the batch's position: current
// state, a new block and snapshot, and what the room summary and the
// member's own index keep of it. It returns the state event ev replaces,
// when the state read for the append holds it.
func (b *batch) applyState(ctx context.Context, ev events.PDU, state map[events.StateKeyTuple]events.PDU) (events.PDU, error) {
	key := ev.Type() + "\x00" + *ev.StateKey()
	i := bucketOf(key)
	old, err := b.entries(ctx, i)
	if err != nil {
		return nil, err
	}
	next := make(map[string]string, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[key] = ev.EventID()
	hash := blockHash(next)
	b.blocks[i] = hash
	if _, ok := b.loaded[hash]; !ok {
		b.loaded[hash] = next
		b.ops = append(b.ops, store.PutOp(block{PK: roomPK(b.roomID), SK: "blk|" + hash, Entries: next}))
	}
	b.ops = append(b.ops, store.PutOp(snapshot{PK: roomPK(b.roomID), SK: snapSK(b.seq), Blocks: append([]string(nil), b.blocks...)}))
	cur := current{PK: roomPK(b.roomID), SK: stateSK(ev.Type(), *ev.StateKey()), EventID: ev.EventID(), Seq: b.seq, PDU: string(ev.JSON()), Version: string(ev.Version())}
	if ev.Type() == events.Member {
		cur.Membership, _ = ev.Membership()
		if err := b.member(ctx, ev, cur.Membership, state); err != nil {
			return nil, err
		}
	}
	b.ops = append(b.ops, store.PutOp(cur))
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

// finish adds the writes gathered over the batch.
func (b *batch) finish(t *txn, evs []events.PDU) {
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
	if t != nil {
		t.EventID = evs[len(evs)-1].EventID()
		b.ops = append(b.ops, store.PutOp(*t))
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

// markRedacted points the redacted event's slot at its redaction, so that
// it is served redacted. A redaction of an event this server does not hold
// is kept and applies nowhere.
func (s *Service) markRedacted(ctx context.Context, roomID string, redaction events.PDU) error {
	target := redaction.Redacts()
	var p pointer
	if err := s.Store.Get(ctx, store.Key{PK: pointerPK(target), SK: "event"}, &p); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	}
	if p.RoomID != roomID {
		return nil
	}
	var sl slot
	pk, sk := slotKey(roomID, p.Seq)
	if err := s.Store.Get(ctx, store.Key{PK: pk, SK: sk}, &sl); err != nil {
		return err
	}
	if sl.EventID != target || sl.RedactedBy != "" {
		return nil
	}
	sl.RedactedBy = redaction.EventID()
	if err := s.Store.Put(ctx, sl); err != nil {
		return err
	}
	return s.redactState(ctx, roomID, sl)
}

// redactState puts the redacted form of a state event that is still
// current in its place: the auth rules, the state endpoints and the room
// summary then see what the redaction left, as the spec has it (a
// redacted topic is no topic).
func (s *Service) redactState(ctx context.Context, roomID string, sl slot) error {
	e, err := sl.event()
	if err != nil || e.PDU.StateKey() == nil {
		return err
	}
	red, err := events.Redact(e.PDU)
	if err != nil {
		return err
	}
	entry := s.cache.entry(roomID)
	entry.mu.Lock()
	defer entry.mu.Unlock()
	entry.reset()
	var c current
	err = s.Store.Get(ctx, store.Key{PK: roomPK(roomID), SK: stateSK(red.Type(), *red.StateKey())}, &c)
	if errors.Is(err, store.ErrNotFound) || (err == nil && c.EventID != red.EventID()) {
		return nil // replaced since: nothing current to redact
	}
	if err != nil {
		return err
	}
	c.PDU = string(red.JSON())
	// Only over the same event: a state change landing meanwhile wins.
	if err := s.Store.PutIf(ctx, c, "id", red.EventID()); err != nil && !errors.Is(err, store.ErrConflict) {
		return err
	}
	if red.Type() == events.HistoryVisibility || red.Type() == events.Member {
		return nil // the redaction algorithm keeps what the summary holds of them
	}
	return s.updateInfo(ctx, roomID, func(i *info) { i.apply(red, e.Seq) })
}

// updateInfo changes the room info with change, over the revision read.
func (s *Service) updateInfo(ctx context.Context, roomID string, change func(*info)) error {
	for attempt := 0; attempt < maxAttempts; attempt++ {
		var i info
		if err := s.Store.Get(ctx, store.Key{PK: roomPK(roomID), SK: infoSK}, &i); err != nil {
			return err
		}
		change(&i)
		i.listing()
		rev := i.Rev
		i.Rev++
		err := s.Store.PutIf(ctx, i, "rev", rev)
		if !errors.Is(err, store.ErrConflict) {
			return err
		}
		backoff(attempt)
	}
	return fmt.Errorf("update info of %s: gave up after %d attempts", roomID, maxAttempts)
}
