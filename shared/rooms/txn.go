package rooms

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/gate"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Transaction IDs. Any number of requests with one transaction ID (the same
// user, device, room and endpoint), at once or later, through one instance
// or many on one table, store one event and all answer its ID. What
// decides is a conditional write of the transaction's record, never a read
// followed by a write. A request does not read the record first: almost
// every transaction ID is new, so the request builds its event and writes
// the record as it appends it, and reads the record only when that write
// finds it taken (or when the request fails before writing it: a retry of
// a request that succeeded answers its event even if it would be refused
// now). Retries this process served are answered from memory (sentTxns).
//
//   - A message creates its record, naming the event and the slot it is to
//     take, before it claims that slot; the event is stored once the slot
//     holds it. After a lost race the sender rebuilds the event on the new
//     head and rewrites the record over the event it named (PutIf), then
//     claims the new slot. A request that finds the record taken waits
//     until the slot it names holds its event, and answers its ID.
//   - Anything appended in a transaction (redactions, state events) creates
//     its record in that transaction: a failed transaction whose record is
//     there lost to another request, which stored the event.
//
// A record that names no stored event and was not rewritten for txnLease
// belongs to a request that stopped (its process died between the record
// and the slot, or it failed). A waiting request takes it over with a PutIf
// and sends the event itself. Should the stopped owner's event land after
// all, it can only be at the slot its record named: the taker, once the
// room's head has passed that slot, looks there before it claims any slot,
// and if the event is there puts the record back and answers it.

// txnTTLSeconds is how long a transaction ID keeps its event; clients retry
// within seconds, and a day covers a phone that slept through its retry.
const txnTTLSeconds = 24 * 60 * 60

// txnLease is how long a record that names no stored event is left to its
// owner before a request with the same transaction ID takes it over. An
// owner holds it for a round trip or two; a client Lambda lives at most
// 30 s, and taking over from a live owner is safe, only wasteful.
const txnLease = 10 * time.Second

// errTxnTaken means another request holds the transaction's record.
var errTxnTaken = errors.New("transaction ID claimed by another request")

// sentBefore ends a request whose transaction ID stored its event already.
type sentBefore struct{ eventID string }

func (e *sentBefore) Error() string { return "transaction ID used before for " + e.eventID }

// keyEscaper writes '%' and '|' of a key part so that the parts of a key,
// joined by '|', read back one way.
var keyEscaper = strings.NewReplacer("%", "%25", "|", "%7C")

// txnClaim follows one request's hold on its transaction record.
type txnClaim struct {
	rec *txn // the record's key, and the tag its event's slot carries
	// owned: the record in the table names this request's event prev.
	owned bool
	prev  string
	// taken is the record as it was when this request took it over from an
	// owner that stopped, while that owner's event may still land.
	taken *txn
	// checked: this request has read the record, or written (or tried to
	// write) it; until then it does not know whether the transaction ID
	// was used before.
	checked bool
	// overwrote is the relation item this request wrote beside a record
	// it then found taken (commitMessage), to be put back from the event
	// at its position once the transaction's event is stored.
	overwrote *relation
}

// claimFor is the transaction of a request, nil without a transaction ID.
// Redactions have their own transaction IDs, apart from sends.
func claimFor(who Sent, roomID string, redaction bool) *txnClaim {
	if who.TxnID == "" {
		return nil
	}
	sk := keyEscaper.Replace(roomID) + "|"
	if redaction {
		sk += "redact|"
	}
	return &txnClaim{rec: &txn{
		PK:  "txn|" + who.Sender + "|" + who.Device,
		SK:  sk + keyEscaper.Replace(who.TxnID),
		tag: who.Device + "|" + who.TxnID,
	}}
}

func (c *txnClaim) key() store.Key { return store.Key{PK: c.rec.PK, SK: c.rec.SK} }

// record is the transaction's record naming ev; a message's also names
// the slot (roomID, seq) it is to take.
func (s *Service) record(c *txnClaim, eventID, roomID string, seq int64) txn {
	r := txn{PK: c.rec.PK, SK: c.rec.SK, EventID: eventID, Expires: s.now().Unix() + txnTTLSeconds}
	if seq > 0 {
		r.RoomID, r.Seq, r.At = roomID, seq, s.now().UnixMilli()
	}
	return r
}

// recordOp writes the record in a transaction: created, or over the event
// this request named in it before.
func (c *txnClaim) recordOp(r txn) store.Op {
	c.checked = true
	if c.owned {
		return store.PutIfOp(r, "id", c.prev)
	}
	return store.CreateOp(r)
}

// writeRecord writes a message's record before its slot is claimed: a
// create, or a PutIf over the event this request named before. Finding
// it taken is errTxnTaken.
func (s *Service) writeRecord(ctx context.Context, c *txnClaim, r txn) error {
	c.checked = true
	var err error
	if c.owned {
		err = s.Store.PutIf(ctx, r, "id", c.prev)
	} else {
		err = s.Store.Create(ctx, r)
	}
	if errors.Is(err, store.ErrExists) || errors.Is(err, store.ErrConflict) {
		c.owned = false
		return errTxnTaken
	}
	if err != nil {
		return err
	}
	c.owned, c.prev = true, r.EventID
	return nil
}

// lost tells, after a failed transaction that held the record, whether
// another request holds it (errTxnTaken) or the slot was taken (errMoved).
func (s *Service) lost(ctx context.Context, c *txnClaim) error {
	if c == nil {
		return errMoved
	}
	var r txn
	err := s.Store.Get(ctx, c.key(), &r)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errMoved
	case err != nil:
		return err
	case c.owned && r.EventID == c.prev:
		return errMoved
	}
	c.owned = false
	return errTxnTaken
}

// checkTaken is called before an event of a request that took its record
// over is appended at seq. Once the room's head has passed the slot the
// stopped owner's event was to take, that slot is settled: if it holds that
// event, the record is put back and the request ends with errTxnTaken (the
// wait then finds the event stored).
func (s *Service) checkTaken(ctx context.Context, c *txnClaim, seq int64) error {
	if c == nil || c.taken == nil || seq <= c.taken.Seq {
		return nil
	}
	taken := *c.taken
	stored, err := s.slotHolds(ctx, taken.RoomID, taken.Seq, taken.EventID)
	if err != nil {
		return err
	}
	c.taken = nil
	if !stored {
		return nil
	}
	if c.owned && c.prev != taken.EventID {
		if err := s.Store.PutIf(ctx, taken, "id", c.prev); err != nil && !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
	c.owned = false
	return errTxnTaken
}

// release hands the record back when the request that holds it fails: it
// is marked as not renewed, so that a retry takes it over at once instead
// of waiting for the lease. Only over this request's own event. A request
// whose access token was refused wrote its record beside the token's read
// (gate.Ahead), and hands it back so too: its client retries the
// transaction once it has refreshed the token.
func (s *Service) release(ctx context.Context, c *txnClaim) {
	if c == nil || !c.owned {
		return
	}
	ctx = gate.Ahead(context.WithoutCancel(ctx))
	var r txn
	if err := s.Store.Get(ctx, c.key(), &r); err != nil || r.EventID != c.prev || r.Seq == 0 {
		return
	}
	r.At = 1
	_ = s.Store.PutIf(ctx, r, "id", c.prev)
	c.owned = false
}

// awaitTxn reads the transaction's record until it names a stored event,
// and returns that event's ID (which requests of this process queued for
// the room then answer without a read). It returns "" when the request is
// to send its event itself: there is no record (none yet, or it expired),
// or its owner stopped, and c now holds the takeover.
func (s *Service) awaitTxn(ctx context.Context, c *txnClaim) (string, error) {
	id, expires, err := s.readTxn(ctx, c)
	if id != "" {
		s.sent.add(c.key(), id, expires)
	}
	return id, err
}

func (s *Service) readTxn(ctx context.Context, c *txnClaim) (string, int64, error) {
	wait := 2 * time.Millisecond
	for {
		var r txn
		err := s.Store.Get(ctx, c.key(), &r)
		if err == nil || errors.Is(err, store.ErrNotFound) {
			c.checked = true
		}
		if errors.Is(err, store.ErrNotFound) {
			c.owned, c.prev, c.taken = false, "", nil
			return "", 0, nil
		}
		if err != nil {
			return "", 0, err
		}
		if r.Seq == 0 {
			return r.EventID, r.Expires, nil // written with its event
		}
		stored, err := s.slotHolds(ctx, r.RoomID, r.Seq, r.EventID)
		if err != nil {
			return "", 0, err
		}
		if stored {
			if r.At == 0 {
				// An older layout wrote the pointer after the slot.
				if err := s.repairPointer(ctx, r); err != nil {
					return "", 0, err
				}
			}
			return r.EventID, r.Expires, nil
		}
		if s.now().UnixMilli()-r.At >= txnLease.Milliseconds() {
			c.owned, c.prev, c.taken = true, r.EventID, &r
			return "", 0, nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", 0, ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
}

// slotHolds reports whether the slot at seq of roomID holds eventID.
func (s *Service) slotHolds(ctx context.Context, roomID string, seq int64, eventID string) (bool, error) {
	var sl slot
	pk, sk := slotKey(roomID, seq)
	err := s.Store.Get(ctx, store.Key{PK: pk, SK: sk}, &sl)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return sl.EventID == eventID, nil
}

// repairPointer writes the pointer of the event a record of the older
// layout names, if a crash came before it.
func (s *Service) repairPointer(ctx context.Context, r txn) error {
	var p pointer
	err := s.Store.Get(ctx, store.Key{PK: pointerPK(r.EventID), SK: "event"}, &p)
	if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return s.Store.Put(ctx, pointer{PK: pointerPK(r.EventID), SK: "event", RoomID: r.RoomID, Seq: r.Seq})
}

// sentTxns remembers, per room, the transactions this process stored
// events for: requests queued behind the one that stored the event answer
// it without building another. Only a shortcut: the record decides.
type sentTxns struct {
	mu  sync.Mutex
	ids map[store.Key]sentTxn
}

type sentTxn struct {
	eventID string
	expires int64
}

// maxSentTxns bounds the memory of sentTxns; past it, it starts afresh.
const maxSentTxns = 4096

func (m *sentTxns) add(k store.Key, eventID string, expires int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ids == nil || len(m.ids) >= maxSentTxns {
		m.ids = map[store.Key]sentTxn{}
	}
	m.ids[k] = sentTxn{eventID, expires}
}

func (m *sentTxns) get(k store.Key, now int64) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t, ok := m.ids[k]; ok && t.expires > now {
		return t.eventID
	}
	return ""
}
