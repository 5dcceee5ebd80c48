// Package todevice holds send-to-device messaging (the spec's "Send-to-Device
// messaging" module): messages a client sends to other devices, kept for
// each recipient device until its /sync acknowledges them.
//
// Storage (docs/storage.md, "To-device messages"): one partition per device,
// pk todevice|<user ID>|<device ID>. In it:
//
//   - msg|<Unix µs, 16 digits>|<id>: a message waiting for the device, its
//     event ({"content","sender","type"}) as compact JSON text;
//   - txn|<event type>|<transaction ID>: a transaction this device sent
//     (TTL 24 h), so that a retry sends nothing twice. It is claimed by a
//     conditional create before anything is sent, so that identical
//     requests, at once or later, on any instance, send once.
//
// A send writes one item per recipient device, then tells the recipients'
// syncs through Notify. A sync reads the inbox only when its stream or its
// token says so (Deliver), never at each poll.
//
// Which messages a sync delivered is told by its next_batch token, not
// written anywhere: the cursor Deliver returns names the newest message
// delivered, and the IDs of those delivered that are younger than
// lateWrites before it. A message whose key sorts before the newest
// delivered one but landed after the inbox was read (its sender took its
// time before a slow write) is then not taken for delivered.
package todevice

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// MaxPerSync is how many messages one sync response carries, as Synapse
// (and the spec) recommend; the rest come with the next sync.
const MaxPerSync = 100

// MaxEventBytes bounds one message as the client receives it (type, sender
// and content): the spec's size of a room event, and of the federation EDU
// they travel in.
const MaxEventBytes = 65536

// txnTTL is how long a transaction ID is remembered: clients retry within
// seconds, and a day covers a phone that slept through its retry (as rooms).
const txnTTL = 24 * time.Hour

// txnLease is how long a request that claimed a transaction has to store
// its messages before another request with the same transaction ID takes
// it over: a client Lambda lives at most 30 s, so an owner older than that
// died. Taking over from a live owner would send twice; from a dead one,
// it sends what the dead one may not have.
const txnLease = 35 * time.Second

// lateWrites bounds how long after its key's time a message can land in
// the table (a slow write, clocks of two hosts). The sync stream assumes
// the same bound for its entries.
const lateWrites = 10 * time.Second

// parallel is how many reads or deletes one request runs at once: they wait
// on DynamoDB round trips, not on this process.
const parallel = 8

// Service stores and delivers to-device messages of local users.
type Service struct {
	Store      *store.Store
	ServerName string
	// Devices lists a local user's device IDs (accounts.Service.DeviceIDs).
	Devices func(ctx context.Context, userID string) ([]string, error)
	// Notify tells the syncs of the given devices, by user, that messages
	// wait for them; "*" stands for every device of the user
	// (sync.Service.TouchDevices). nil: syncs find them when they next read
	// the inbox for another reason.
	Notify func(ctx context.Context, devices map[string][]string) error
	// SendEDU sends an EDU to other servers (sender.Sender.SendEDU): the
	// messages for their users, as m.direct_to_device. nil drops them.
	SendEDU func(ctx context.Context, destinations []string, eduType string, content json.RawMessage) error
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// message is one to-device message waiting in a device's inbox.
type message struct {
	PK    string `dynamodbav:"pk"` // todevice|<user ID>|<device ID>
	SK    string `dynamodbav:"sk"` // msg|<Unix µs, 16 digits>|<id>
	Event string `dynamodbav:"ev"` // {"content","sender","type"}, compact JSON
}

// txnRecord says that a device sent a transaction. While the request that
// claimed it stores the messages, Owner names that request and At says
// since when; once the messages are stored and their syncs told, the
// record is written again without them.
type txnRecord struct {
	PK      string `dynamodbav:"pk"` // todevice|<sender>|<sender's device>
	SK      string `dynamodbav:"sk"` // txn|<event type, escaped>|<txn ID>
	Expires int64  `dynamodbav:"expires_at"`
	Owner   string `dynamodbav:"owner,omitempty"`
	At      int64  `dynamodbav:"at,omitempty"` // Unix ms
}

// Device IDs hold no '|' (accounts refuses them), so the user ID and the
// device ID part one way.
func inboxPK(userID, deviceID string) string { return "todevice|" + userID + "|" + deviceID }

const msgPrefix = "msg|"

func msgSK(at time.Time, id string) string {
	return fmt.Sprintf("%s%016d|%s", msgPrefix, at.UnixMicro(), id)
}

// parseMsgSK returns a message key's time (Unix µs) and ID.
func parseMsgSK(sk string) (int64, string, error) {
	ts, id, ok := strings.Cut(strings.TrimPrefix(sk, msgPrefix), "|")
	us, err := strconv.ParseInt(ts, 10, 64)
	if !ok || err != nil || id == "" {
		return 0, "", fmt.Errorf("bad to-device message key %q", sk)
	}
	return us, id, nil
}

// txnSK escapes '%' and '|' in the event type so that the transaction ID,
// last, needs none and every key parses one way.
func txnSK(eventType, txnID string) string {
	esc := strings.NewReplacer("%", "%25", "|", "%7C").Replace(eventType)
	return "txn|" + esc + "|" + txnID
}

// newID is a message's ID: random, so that messages of one microsecond
// have distinct keys. Its alphabet (base64url) has no '.', the cursor's
// separator.
func newID() string {
	var b [6]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Outgoing is one send: a transaction of a client's device, with one
// message content per recipient device ("*": every device of the user).
type Outgoing struct {
	Sender, SenderDevice string
	Type, TxnID          string
	// Messages maps user ID to device ID to content (a JSON object).
	Messages map[string]map[string]json.RawMessage
}

// Send stores the messages of out for their local recipients and tells
// their syncs. A transaction ID the sending device used before for this
// type sends nothing. Devices that do not exist are skipped, as Synapse
// does. Messages for users of other servers go to their servers as
// m.direct_to_device EDUs, one per server (sendRemote).
//
// The transaction is claimed first, by a conditional create of its record
// naming this request as its owner: of any number of identical requests,
// at once or later, on any instance, one sends, and the others wait until
// its record says the messages are stored and told. A request that fails
// hands the transaction back, so that the retry sends again (at least
// once: what was stored before the failure may arrive twice, nothing is
// lost); one whose process died leaves it to be taken over after txnLease.
func (s *Service) Send(ctx context.Context, out Outgoing) error {
	rec, err := s.claim(ctx, txnRecord{PK: inboxPK(out.Sender, out.SenderDevice), SK: txnSK(out.Type, out.TxnID)})
	if err != nil || rec == nil {
		return err
	}
	if err := s.sendMessages(ctx, out); err != nil {
		released := *rec
		released.At = 1 // long past: the next request takes it over at once
		_ = s.Store.PutIf(context.WithoutCancel(ctx), released, "owner", rec.Owner)
		return err
	}
	done := txnRecord{PK: rec.PK, SK: rec.SK, Expires: rec.Expires}
	// Over this request's claim only: one that took over after a stall
	// marks the transaction sent itself.
	if err := s.Store.PutIf(ctx, done, "owner", rec.Owner); err != nil && !errors.Is(err, store.ErrConflict) {
		return fmt.Errorf("send to device: record transaction: %w", err)
	}
	return nil
}

// claim claims the transaction whose record has key rec's key for this
// request, and returns the record it wrote; nil when the transaction was
// sent already (another request's, waited for if it is in progress).
func (s *Service) claim(ctx context.Context, rec txnRecord) (*txnRecord, error) {
	rec.Owner = newOwner()
	for {
		rec.At, rec.Expires = s.now().UnixMilli(), s.now().Add(txnTTL).Unix()
		err := s.Store.Create(ctx, rec)
		if err == nil {
			return &rec, nil
		}
		if !errors.Is(err, store.ErrExists) {
			return nil, fmt.Errorf("send to device: claim transaction: %w", err)
		}
		sent, took, err := s.await(ctx, &rec)
		if err != nil || sent {
			return nil, err
		}
		if took {
			return &rec, nil
		}
	}
}

// await waits on a transaction record another request holds until it says
// the messages were sent (sent), or its owner let it go or stalled past
// txnLease, when this request takes it over (took, and rec is what it
// wrote). Neither means the record is gone: the caller creates it again.
func (s *Service) await(ctx context.Context, rec *txnRecord) (sent, took bool, err error) {
	wait := 2 * time.Millisecond
	for {
		var cur txnRecord
		err := s.Store.Get(ctx, store.Key{PK: rec.PK, SK: rec.SK}, &cur)
		if errors.Is(err, store.ErrNotFound) {
			return false, false, nil
		}
		if err != nil {
			return false, false, fmt.Errorf("send to device: read transaction: %w", err)
		}
		if cur.Owner == "" {
			return true, false, nil
		}
		if s.now().UnixMilli()-cur.At >= txnLease.Milliseconds() {
			rec.At = s.now().UnixMilli()
			err := s.Store.PutIf(ctx, *rec, "owner", cur.Owner)
			if err == nil {
				return false, true, nil
			}
			if !errors.Is(err, store.ErrConflict) {
				return false, false, fmt.Errorf("send to device: take over transaction: %w", err)
			}
			continue // another request took it first
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false, false, ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
}

// newOwner names a request that claims a transaction.
func newOwner() string {
	var b [12]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// sendMessages stores the messages of out for local users and tells their
// syncs, then queues those for other servers' users.
func (s *Service) sendMessages(ctx context.Context, out Outgoing) error {
	items, told, err := s.messages(ctx, out)
	if err != nil {
		return err
	}
	if len(items) > 0 {
		if err := s.Store.PutMany(ctx, items); err != nil {
			return fmt.Errorf("send to device: %w", err)
		}
	}
	if len(told) > 0 && s.Notify != nil {
		if err := s.Notify(ctx, told); err != nil {
			return fmt.Errorf("send to device: %w", err)
		}
	}
	return s.sendRemote(ctx, out)
}

// messages builds the inbox items of out and, by user, the devices to tell:
// "*" when every device of the user gets a message, so that one stream
// entry wakes them all.
func (s *Service) messages(ctx context.Context, out Outgoing) ([]any, map[string][]string, error) {
	var users []string
	for u := range out.Messages {
		// Other servers' users get theirs through sendRemote.
		if s.isLocal(u) {
			users = append(users, u)
		}
	}
	slices.Sort(users)
	devices := make([][]string, len(users))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for i := range users {
		g.Go(func() error {
			ids, err := s.Devices(gctx, users[i])
			if err != nil {
				return fmt.Errorf("send to device: devices of %s: %w", users[i], err)
			}
			devices[i] = ids
			return nil
		})
	}
	err := g.Wait()
	if err != nil {
		return nil, nil, err
	}
	at := s.now()
	var items []any
	told := map[string][]string{}
	for i, u := range users {
		evs := map[string]string{}
		for d, content := range out.Messages[u] {
			ev, err := Event(out.Type, out.Sender, content)
			if err != nil {
				return nil, nil, err
			}
			evs[d] = string(ev)
		}
		var sent []string
		for _, d := range devices[i] {
			ev, ok := evs[d]
			if !ok {
				ev, ok = evs["*"]
			}
			if !ok {
				continue
			}
			items = append(items, message{PK: inboxPK(u, d), SK: msgSK(at, newID()), Event: ev})
			sent = append(sent, d)
		}
		switch {
		case len(sent) == 0:
		case len(sent) == len(devices[i]) && len(sent) > 1:
			told[u] = []string{"*"}
		default:
			told[u] = sent
		}
	}
	return items, told, nil
}

func (s *Service) isLocal(userID string) bool {
	_, server, _ := strings.Cut(userID, ":")
	return server == s.ServerName
}

// Event is a to-device message as the recipient's sync shows it.
func Event(eventType, sender string, content json.RawMessage) (json.RawMessage, error) {
	ev, err := json.Marshal(struct {
		Content json.RawMessage `json:"content"`
		Sender  string          `json:"sender"`
		Type    string          `json:"type"`
	}{content, sender, eventType})
	if err != nil {
		return nil, fmt.Errorf("to-device event: %w", err)
	}
	return ev, nil
}

// Deliver is /sync's side of the inbox of one device. It deletes the
// messages that cursor (from the since token; "" for none) says a sync
// delivered, and returns the next ones in order of arrival, at most
// MaxPerSync, with the cursor that says these were delivered ("" when there
// are none).
func (s *Service) Deliver(ctx context.Context, userID, deviceID, cursor string) ([]json.RawMessage, string, error) {
	return s.DeliverAtMost(ctx, userID, deviceID, cursor, MaxPerSync)
}

// DeliverAtMost is Deliver returning at most limit messages (1 to
// MaxPerSync), for sliding sync's to_device limit (MSC3885).
func (s *Service) DeliverAtMost(ctx context.Context, userID, deviceID, cursor string, limit int) ([]json.RawMessage, string, error) {
	limit = min(max(limit, 1), MaxPerSync)
	acked, err := parseCursor(cursor)
	if err != nil {
		return nil, "", err
	}
	pk := inboxPK(userID, deviceID)
	var done []store.Key
	var fresh []message
	// The messages delivered last come first: reading as many more as a
	// response carries usually takes one page.
	q := store.Query{PK: pk, Prefix: msgPrefix, Limit: limit + acked.count}
	for {
		var page []message
		next, err := s.Store.QueryPage(ctx, q, &page)
		if err != nil {
			return nil, "", fmt.Errorf("read to-device inbox of %s %s: %w", userID, deviceID, err)
		}
		for _, m := range page {
			us, id, err := parseMsgSK(m.SK)
			if err != nil {
				return nil, "", err
			}
			switch {
			case acked.has(us, id):
				done = append(done, store.Key{PK: m.PK, SK: m.SK})
			case len(fresh) < limit:
				fresh = append(fresh, m)
			}
		}
		if next == "" || len(fresh) == limit {
			break
		}
		q.Cursor = next
	}
	if err := s.Store.DeleteEach(ctx, done); err != nil {
		return nil, "", fmt.Errorf("acknowledge to-device messages of %s %s: %w", userID, deviceID, err)
	}
	evs := make([]json.RawMessage, len(fresh))
	for i, m := range fresh {
		evs[i] = json.RawMessage(m.Event)
	}
	return evs, delivered(fresh).encode(), nil
}

// DeleteDevice removes what a device's partition holds: its pending
// messages and its transaction records. It is accounts' DeviceDeleted hook:
// a deleted device never syncs again, and a new device of the same ID must
// not receive what was meant for the old one.
func (s *Service) DeleteDevice(ctx context.Context, userID, deviceID string) error {
	q := store.Query{PK: inboxPK(userID, deviceID)}
	for {
		var page []store.Key
		next, err := s.Store.QueryPage(ctx, q, &page)
		if err != nil {
			return fmt.Errorf("delete to-device inbox of %s %s: %w", userID, deviceID, err)
		}
		if err := s.Store.DeleteEach(ctx, page); err != nil {
			return fmt.Errorf("delete to-device inbox of %s %s: %w", userID, deviceID, err)
		}
		if next == "" {
			return nil
		}
		q.Cursor = next
	}
}
