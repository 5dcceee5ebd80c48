// Package ephemeral holds what a room shows for a moment and never puts in
// its timeline: typing notifications and receipts (the spec's "Typing
// Notifications" and "Receipts" modules), and the fully read marker that
// goes with receipts ("Fully read markers").
//
// Storage (docs/storage.md, "Typing and receipts"): one partition per room,
// pk eph|<room ID>, apart from the room's own partition so that chatter
// never competes with the timeline's writes. In it:
//
//   - cur|<type>|<thread>|<user ID>: the user's current receipt of a type
//     (m.read, m.read.private) for a thread ("" unthreaded, "main", or a
//     thread root's event ID);
//   - recent|<ts, 13 digits>|<type>|<thread>|<user ID>: a copy of each
//     receipt as it is set, kept for an hour (TTL);
//   - recent|typing|<user ID>: the user is typing until `until` (Unix ms).
//
// So an incremental /sync reads, in one Query from recent|<since>, the
// receipts set since its token and then the typing items, which sort after
// the digits; an initial one reads cur| and recent|typing|.
//
// In keys, '%' and '|' of a thread ID are written %25 and %7C, so that
// every key parses one way (the user ID is last).
//
// Every change that others must see writes ephemeral news into the sync
// streams of the room's joined local users (Touch); /sync then asks Events
// for the room's ephemeral events. A typing notification that times out by
// itself writes no news: nothing runs at that moment. Events leaves it out
// from then on, and clients hear of it with the room's next news.
//
// Local users' typing and public receipts go to the other servers in the
// room as EDUs, and theirs come in through the same items (federation.go).
package ephemeral

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cirrus-matrix/cirrus/shared/accountdata"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Receipt types of the spec. FullyRead is a read marker, kept as room
// account data rather than as a receipt.
const (
	Read        = "m.read"
	ReadPrivate = "m.read.private"
	FullyRead   = "m.fully_read"
	// MainThread is the thread ID of a room's main timeline.
	MainThread = "main"
)

// Typing timeouts, as Synapse has them: a client that gives none types for
// 30 seconds, and none types for longer than 2 minutes without saying so
// again.
const (
	DefaultTypingTimeout = 30 * time.Second
	MaxTypingTimeout     = 2 * time.Minute
)

// recentKeep is how long a receipt's recent| copy is kept. A sync whose
// since is older reads the current receipts of the room instead, which
// costs more in a large room but gives the same answer.
const recentKeep = time.Hour

// maxSortKey is DynamoDB's limit on the bytes of a sort key.
const maxSortKey = 1024

// Errors callers can test for with errors.Is.
var (
	// ErrNotJoined is a user who is not joined to the room.
	ErrNotJoined = errors.New("not joined to the room")
	// ErrUnknownEvent is an event the room does not hold.
	ErrUnknownEvent = errors.New("event not found in the room")
	// ErrUnknownType is a receipt type other than m.read, m.read.private
	// and m.fully_read.
	ErrUnknownType = errors.New("unknown receipt type")
	// ErrInvalidThread is a thread ID that does not fit the receipt: given
	// with m.fully_read, too long, or one the event is not in.
	ErrInvalidThread = errors.New("invalid thread ID")
)

// Service keeps typing notifications and receipts.
type Service struct {
	Store *store.Store
	// Rooms tells membership, the room's local users and its events.
	Rooms *rooms.Service
	// AccountData keeps m.fully_read, which is room account data.
	AccountData *accountdata.Service
	// Touch writes ephemeral news of the room into the users' sync streams
	// (sync.Service.Touch); nil tells no one.
	Touch func(ctx context.Context, roomID string, users []string) error
	// Federate sends an EDU to the other servers in the room
	// (sender.Sender.SendRoomEDU); nil sends nothing. Only this server's
	// users' typing and public receipts go out (federation.go).
	Federate func(ctx context.Context, roomID, eduType string, content json.RawMessage) error
	// ACLAllows reports whether the room's server ACL lets a server in
	// (federation.Service.ACLAllows): the typing and receipts of a server
	// it denies are refused. Nil lets every server in.
	ACLAllows func(ctx context.Context, roomID, serverName string) (bool, error)
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// item is every kind of item of the partition; each uses some attributes.
type item struct {
	PK string `dynamodbav:"pk"`
	SK string `dynamodbav:"sk"`
	// User is the typing or receipting user.
	User string `dynamodbav:"user"`
	// Until is when typing stops (Unix ms).
	Until int64 `dynamodbav:"until,omitempty"`
	// Sent is when a local user's typing was last sent to the other
	// servers (Unix ms), so that renewals go out once per typingPing.
	Sent int64 `dynamodbav:"sent,omitempty"`
	// Type is the receipt type; Thread its thread ID, "" when unthreaded.
	Type   string `dynamodbav:"type,omitempty"`
	Thread string `dynamodbav:"thread,omitempty"`
	// Event is the event acknowledged, Seq its position in the room.
	Event string `dynamodbav:"event,omitempty"`
	Seq   int64  `dynamodbav:"seq,omitempty"`
	// TS is when the receipt was set here (Unix ms): the spec's ts, and
	// the position of its recent| copy.
	TS int64 `dynamodbav:"ts,omitempty"`
	// RemoteTS is the ts another server gave its user's receipt, shown
	// instead of TS; TS stays the time it arrived, so that syncs since
	// then find it whatever the other server's clock says.
	RemoteTS int64 `dynamodbav:"rts,omitempty"`
	Expires  int64 `dynamodbav:"expires_at,omitempty"`
}

var escaper = strings.NewReplacer("%", "%25", "|", "%7C")

func roomPK(roomID string) string { return "eph|" + roomID }

const (
	currentPrefix = "cur|"
	recentPrefix  = "recent|"
	typingPrefix  = recentPrefix + "typing|"
)

func typingSK(userID string) string { return typingPrefix + userID }

// currentSK is the key of a user's current receipt of a type and thread.
func currentSK(typ, thread, userID string) string {
	return currentPrefix + typ + "|" + escaper.Replace(thread) + "|" + userID
}

func recentFrom(ts int64) string { return fmt.Sprintf("%s%013d", recentPrefix, max(ts, 0)) }

func recentSK(ts int64, typ, thread, userID string) string {
	return recentFrom(ts) + "|" + typ + "|" + escaper.Replace(thread) + "|" + userID
}

// joined checks that the user is joined to the room: one GetItem.
func (s *Service) joined(ctx context.Context, userID, roomID string) error {
	m, err := s.Rooms.Membership(ctx, userID, roomID)
	if err != nil {
		return fmt.Errorf("membership of %s in %s: %w", userID, roomID, err)
	}
	if m != "join" {
		return fmt.Errorf("%s in %s: %w", userID, roomID, ErrNotJoined)
	}
	return nil
}

// tell writes ephemeral news of the room for users, or for all its joined
// local users when users is nil.
func (s *Service) tell(ctx context.Context, roomID string, users []string) error {
	if s.Touch == nil {
		return nil
	}
	if users == nil {
		all, err := s.Rooms.LocalJoined(ctx, roomID)
		if err != nil {
			return fmt.Errorf("local users of %s: %w", roomID, err)
		}
		users = all
	}
	if len(users) == 0 {
		return nil
	}
	if err := s.Touch(ctx, roomID, users); err != nil {
		return fmt.Errorf("tell of news in %s: %w", roomID, err)
	}
	return nil
}

// query reads every page of q.
func (s *Service) query(ctx context.Context, q store.Query) ([]item, error) {
	var all []item
	for {
		var page []item
		next, err := s.Store.QueryPage(ctx, q, &page)
		if err != nil {
			return nil, fmt.Errorf("read ephemeral data of %s: %w", strings.TrimPrefix(q.PK, "eph|"), err)
		}
		all = append(all, page...)
		if next == "" {
			return all, nil
		}
		q.Cursor = next
	}
}

// Events is the room's ephemeral events for the user in a sync, as the
// spec's rooms.join.<room>.ephemeral.events: its receipts set at or after
// since (all current ones at the zero time), without other users'
// m.read.private, in one m.receipt event per thread; and m.typing with the
// users typing now. An initial sync (since zero) gets m.typing only when
// someone types; an incremental one always, so that a client also learns
// of typing that timed out by itself. It also returns when the first of
// the users typing stops by timeout (typingEnds).
//
// Cost: for a since less than an hour old, one strongly consistent Query
// (the receipts set since, then the typing items); otherwise, and for an
// initial sync, two (the current receipts of the room, the typing items).
func (s *Service) Events(ctx context.Context, userID, roomID string, since time.Time) ([]json.RawMessage, time.Time, error) {
	now := s.now()
	from := int64(0)
	if !since.IsZero() {
		from = since.UnixMilli()
	}
	pk := roomPK(roomID)
	var typing, receipts []item
	if since.IsZero() || since.Before(now.Add(-recentKeep+time.Minute)) {
		// The receipts and the typing are read side by side.
		var current []item
		var g errgroup.Group
		g.Go(func() (err error) {
			current, err = s.query(ctx, store.Query{PK: pk, Prefix: currentPrefix})
			return err
		})
		g.Go(func() (err error) { typing, err = s.query(ctx, store.Query{PK: pk, Prefix: typingPrefix}); return err })
		if err := g.Wait(); err != nil {
			return nil, time.Time{}, err
		}
		for _, it := range current {
			if it.TS >= from && (it.Type != ReadPrivate || it.User == userID) {
				receipts = append(receipts, it)
			}
		}
	} else {
		all, err := s.query(ctx, store.Query{PK: pk, Prefix: recentPrefix, From: recentFrom(from)})
		if err != nil {
			return nil, time.Time{}, err
		}
		latest := map[[3]string]item{}
		for _, it := range all {
			if strings.HasPrefix(it.SK, typingPrefix) {
				typing = append(typing, it)
				continue
			}
			if it.Type == ReadPrivate && it.User != userID {
				continue
			}
			k := [3]string{it.Type, it.Thread, it.User}
			if old, ok := latest[k]; !ok || it.TS >= old.TS {
				latest[k] = it
			}
		}
		for _, it := range latest {
			receipts = append(receipts, it)
		}
	}
	out := receiptEvents(receipts)
	typers := typingUsers(typing, now)
	if len(typers) > 0 || !since.IsZero() {
		out = append(out, typingEvent(typers))
	}
	return out, typingEnds(typing, now), nil
}

// receiptTarget is the spec's receipt of one user: {ts, thread_id?}.
type receiptTarget struct {
	TS       int64  `json:"ts"`
	ThreadID string `json:"thread_id,omitempty"`
}

// receiptEvents are the m.receipt events of receipts, one per thread as
// the spec suggests ("unthreaded" first, then by thread ID), each
// {event ID: {receipt type: {user ID: {ts, thread_id}}}}. Apart, a user's
// receipts of two threads on one event never meet in one map.
func receiptEvents(receipts []item) []json.RawMessage {
	threads := map[string]map[string]map[string]map[string]receiptTarget{}
	for _, it := range receipts {
		content := threads[it.Thread]
		if content == nil {
			content = map[string]map[string]map[string]receiptTarget{}
			threads[it.Thread] = content
		}
		byType := content[it.Event]
		if byType == nil {
			byType = map[string]map[string]receiptTarget{}
			content[it.Event] = byType
		}
		if byType[it.Type] == nil {
			byType[it.Type] = map[string]receiptTarget{}
		}
		ts := it.TS
		if it.RemoteTS != 0 {
			ts = it.RemoteTS
		}
		byType[it.Type][it.User] = receiptTarget{TS: ts, ThreadID: it.Thread}
	}
	var out []json.RawMessage
	for _, thread := range slices.Sorted(maps.Keys(threads)) {
		out = append(out, mustJSON(map[string]any{"type": "m.receipt", "content": threads[thread]}))
	}
	return out
}

// typingUsers lists the users of items still typing at now, sorted.
func typingUsers(items []item, now time.Time) []string {
	users := []string{}
	for _, it := range items {
		if it.Until > now.UnixMilli() {
			users = append(users, it.User)
		}
	}
	slices.Sort(users)
	return users
}

// typingEnds is when the first of the users typing now stops, unless they
// type again: a sync that delivered them typing must then say they stopped,
// though no write announces it. The zero time when nobody types.
func typingEnds(items []item, now time.Time) time.Time {
	var first int64
	for _, it := range items {
		if it.Until > now.UnixMilli() && (first == 0 || it.Until < first) {
			first = it.Until
		}
	}
	if first == 0 {
		return time.Time{}
	}
	return time.UnixMilli(first)
}

func typingEvent(users []string) json.RawMessage {
	return mustJSON(map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": users}})
}

// mustJSON encodes values this package built, which always encode.
func mustJSON(v any) json.RawMessage {
	doc, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("encode %T: %v", v, err))
	}
	return doc
}
