// Package accountdata holds users' account data, global and per room: the
// client config the spec's "Client Config" module describes, which /sync
// delivers in its account_data sections.
//
// Storage (docs/storage.md): one item per (user, room, type) in the user's
// partition, pk user|<user ID>, sk account_data|<room ID>|<type>, the room ID
// empty for global data and escaped ('%' as %25, '|' as %7C) so that the sort
// key parses one way. So /sync reads all global account data of a user with
// one Query, prefix "account_data||" (GlobalPrefix), and all per-room account
// data with one Query, prefix "account_data|!" (RoomsPrefix). The content is
// kept as the JSON text the client sent, compacted, in the attribute content.
package accountdata

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Key prefixes of the user's partition, for /sync.
const (
	// GlobalPrefix begins the sort key of every global account data item.
	GlobalPrefix = "account_data||"
	// RoomsPrefix begins the sort key of every per-room account data item.
	RoomsPrefix = "account_data|!"
)

// Limits on the parts of a key. DynamoDB allows sort keys of 1024 bytes.
const (
	MaxTypeLength   = 255 // bytes, as event types
	MaxRoomIDLength = 255 // bytes, as room IDs
	maxSortKey      = 1024
)

// Errors callers can test for with errors.Is.
var (
	ErrNotFound = errors.New("account data not found")
	// ErrServerManaged is a type only the server may write through this API's
	// clients: m.fully_read (read markers) and m.push_rules (push rules).
	ErrServerManaged = errors.New("account data type is managed by the server")
	ErrInvalidRoomID = errors.New("invalid room ID")
	ErrInvalidType   = errors.New("invalid account data type")
	// ErrNotObject is content that is not a JSON object.
	ErrNotObject = errors.New("account data content must be a JSON object")
	// ErrTooLarge is content that does not fit in one item (400 KB).
	ErrTooLarge = errors.New("account data is too large")
)

// ServerManaged lists the types clients may read but not write here
// ("Server Behaviour" of the Client Config module). The code that owns each
// writes it with Service.Set, so that GET and /sync read it as any other.
var ServerManaged = map[string]bool{"m.fully_read": true, "m.push_rules": true}

// Service reads and writes account data.
type Service struct {
	Store *store.Store
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Computed serves global types another package keeps in its own items
	// (m.push_rules from the push rules), so that GET reads them as clients
	// expect.
	Computed map[string]func(ctx context.Context, userID string) (any, error)
	// Changed is told after each write, so that the user's syncs bring it;
	// roomID is "" for global data. nil does nothing.
	Changed func(ctx context.Context, userID, roomID string) error
}

// Event is one account data event as /sync delivers it.
type Event struct {
	Type    string          `json:"type"`
	Content json.RawMessage `json:"content"`
}

type dataItem struct {
	PK     string `dynamodbav:"pk"`
	SK     string `dynamodbav:"sk"`
	RoomID string `dynamodbav:"room_id,omitempty"`
	Type   string `dynamodbav:"type"`
	// Content is the JSON object as text: it comes back byte for byte, which
	// a DynamoDB map would not promise for numbers.
	Content string `dynamodbav:"content"`
	// UpdatedTS (Unix ms) lets /sync tell what changed since a position.
	UpdatedTS int64 `dynamodbav:"updated_ts"`
	// Deleted marks data a client deleted (MSC3391, Service.Remove): the
	// item stays, with content {}, so that incremental syncs tell clients
	// the type is now empty; GET and initial syncs see nothing.
	Deleted bool `dynamodbav:"deleted,omitempty"`
}

var roomEscaper = strings.NewReplacer("%", "%25", "|", "%7C")

// SortKey is the sort key of (roomID, typ) in the user's partition; roomID
// is "" for global data.
func SortKey(roomID, typ string) string {
	return "account_data|" + roomEscaper.Replace(roomID) + "|" + typ
}

// RoomPrefix begins the sort keys of one room's account data.
func RoomPrefix(roomID string) string { return "account_data|" + roomEscaper.Replace(roomID) + "|" }

func userPK(userID string) string { return "user|" + userID }

// Get returns the content of type typ in roomID ("" for global): one
// strongly consistent read, ErrNotFound when none was set.
func (s *Service) Get(ctx context.Context, userID, roomID, typ string) (json.RawMessage, error) {
	if err := checkKey(roomID, typ); err != nil {
		return nil, err
	}
	var it dataItem
	err := s.Store.Get(ctx, store.Key{PK: userPK(userID), SK: SortKey(roomID, typ)}, &it)
	if errors.Is(err, store.ErrNotFound) || (err == nil && it.Deleted) {
		return nil, fmt.Errorf("get %s of %s: %w", typ, userID, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get %s of %s: %w", typ, userID, err)
	}
	return json.RawMessage(it.Content), nil
}

// Put is what a client may do: Set, except for the server-managed types
// (ErrServerManaged).
func (s *Service) Put(ctx context.Context, userID, roomID, typ string, content json.RawMessage) error {
	if ServerManaged[typ] {
		return fmt.Errorf("put %s: %w", typ, ErrServerManaged)
	}
	return s.Set(ctx, userID, roomID, typ, content)
}

// Set writes content, a JSON object, as type typ in roomID ("" for global),
// replacing what was there: one write of 1 WCU per KB. Content that makes
// the item larger than DynamoDB's 400 KB gives ErrTooLarge.
func (s *Service) Set(ctx context.Context, userID, roomID, typ string, content json.RawMessage) error {
	if err := checkKey(roomID, typ); err != nil {
		return err
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, content); err != nil || compact.Len() == 0 || compact.Bytes()[0] != '{' {
		return fmt.Errorf("set %s: %w", typ, ErrNotObject)
	}
	it := dataItem{
		PK: userPK(userID), SK: SortKey(roomID, typ), RoomID: roomID, Type: typ,
		Content: compact.String(), UpdatedTS: s.now().UnixMilli(),
	}
	err := s.Store.Put(ctx, it)
	if errors.Is(err, store.ErrItemTooLarge) {
		return fmt.Errorf("set %s of %s: %w: %d bytes of content", typ, userID, ErrTooLarge, compact.Len())
	}
	if err != nil {
		return fmt.Errorf("set %s of %s: %w", typ, userID, err)
	}
	if s.Changed != nil {
		if err := s.Changed(ctx, userID, roomID); err != nil {
			return fmt.Errorf("set %s of %s: %w", typ, userID, err)
		}
	}
	return nil
}

// Delete removes type typ of roomID ("" for global) without a trace: one
// DeleteItem, 1 WCU per KB of what was there (1 WCU when nothing was).
// Deleting what was never set is not an error. Syncs are not told, so this
// is for data no client shows (a deleted device's); clients' deletes go
// through Remove.
func (s *Service) Delete(ctx context.Context, userID, roomID, typ string) error {
	if err := checkKey(roomID, typ); err != nil {
		return err
	}
	if err := s.Store.Delete(ctx, store.Key{PK: userPK(userID), SK: SortKey(roomID, typ)}); err != nil {
		return fmt.Errorf("delete %s of %s: %w", typ, userID, err)
	}
	return nil
}

// Remove is a client's delete (MSC3391, as Synapse serves it): the
// content becomes {} and is marked deleted, so that the user's next
// incremental sync brings the type with content {}, while GET answers
// ErrNotFound and initial syncs leave it out. Removing what is not there
// (never set, or removed already) writes nothing and is not an error. It
// costs one strongly consistent GetItem and, when there was data, one
// conditional PutItem of 1 WCU and the sync news (Changed).
func (s *Service) Remove(ctx context.Context, userID, roomID, typ string) error {
	if ServerManaged[typ] {
		return fmt.Errorf("remove %s: %w", typ, ErrServerManaged)
	}
	if err := checkKey(roomID, typ); err != nil {
		return err
	}
	key := store.Key{PK: userPK(userID), SK: SortKey(roomID, typ)}
	// A Set between the read and the write makes the write fail: read
	// again, so the delete lands after it, as it came after it.
	for range 3 {
		var it dataItem
		err := s.Store.Get(ctx, key, &it)
		if errors.Is(err, store.ErrNotFound) || (err == nil && it.Deleted) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("remove %s of %s: %w", typ, userID, err)
		}
		was := it.UpdatedTS
		it.Content, it.Deleted = "{}", true
		it.UpdatedTS = max(s.now().UnixMilli(), was+1)
		err = s.Store.PutIf(ctx, it, "updated_ts", was)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return fmt.Errorf("remove %s of %s: %w", typ, userID, err)
		}
		if s.Changed != nil {
			if err := s.Changed(ctx, userID, roomID); err != nil {
				return fmt.Errorf("remove %s of %s: %w", typ, userID, err)
			}
		}
		return nil
	}
	return fmt.Errorf("remove %s of %s: %w", typ, userID, store.ErrConflict)
}

// LocalNotificationSettingsPrefix begins the type of a device's local
// notification settings (MSC3890): the prefix, then the device ID.
const LocalNotificationSettingsPrefix = "org.matrix.msc3890.local_notification_settings."

// DeleteDevice removes what account data belongs to one device, as
// Synapse does when the device is deleted: its local notification settings
// (MSC3890). One DeleteItem.
func (s *Service) DeleteDevice(ctx context.Context, userID, deviceID string) error {
	return s.Delete(ctx, userID, "", LocalNotificationSettingsPrefix+deviceID)
}

// Since returns the account data of roomID ("" for global) written at or
// after since; the zero time gives all of it. Data removed since comes
// with content {} (MSC3391); the zero time (an initial sync) leaves out
// what was removed.
func (s *Service) Since(ctx context.Context, userID, roomID string, since time.Time) ([]Event, error) {
	prefix := GlobalPrefix
	if roomID != "" {
		prefix = RoomPrefix(roomID)
	}
	items, err := s.query(ctx, userID, prefix)
	if err != nil {
		return nil, err
	}
	var out []Event
	for _, it := range items {
		if it.Deleted && since.IsZero() {
			continue
		}
		if it.UpdatedTS >= since.UnixMilli() {
			out = append(out, Event{Type: it.Type, Content: json.RawMessage(it.Content)})
		}
	}
	return out, nil
}

// Global returns every global account data event of the user, in type
// order: one Query per MB (prefix GlobalPrefix).
func (s *Service) Global(ctx context.Context, userID string) ([]Event, error) {
	items, err := s.query(ctx, userID, GlobalPrefix)
	if err != nil {
		return nil, err
	}
	out := make([]Event, 0, len(items))
	for _, it := range items {
		if it.Deleted {
			continue
		}
		out = append(out, Event{Type: it.Type, Content: json.RawMessage(it.Content)})
	}
	return out, nil
}

// Rooms returns the per-room account data of the user, by room ID: one
// Query per MB (prefix RoomsPrefix).
func (s *Service) Rooms(ctx context.Context, userID string) (map[string][]Event, error) {
	items, err := s.query(ctx, userID, RoomsPrefix)
	if err != nil {
		return nil, err
	}
	out := map[string][]Event{}
	for _, it := range items {
		if it.Deleted {
			continue
		}
		out[it.RoomID] = append(out[it.RoomID], Event{Type: it.Type, Content: json.RawMessage(it.Content)})
	}
	return out, nil
}

func (s *Service) query(ctx context.Context, userID, prefix string) ([]dataItem, error) {
	var all []dataItem
	q := store.Query{PK: userPK(userID), Prefix: prefix}
	for {
		var page []dataItem
		next, err := s.Store.QueryPage(ctx, q, &page)
		if err != nil {
			return nil, fmt.Errorf("account data of %s: %w", userID, err)
		}
		all = append(all, page...)
		if next == "" {
			return all, nil
		}
		q.Cursor = next
	}
}

// checkKey refuses room IDs and types that cannot make a key.
func checkKey(roomID, typ string) error {
	if typ == "" || len(typ) > MaxTypeLength {
		return fmt.Errorf("%w: the type must be 1 to %d bytes long", ErrInvalidType, MaxTypeLength)
	}
	if roomID != "" && (!strings.HasPrefix(roomID, "!") || len(roomID) < 2 || len(roomID) > MaxRoomIDLength) {
		return fmt.Errorf("%w: %q is not a room ID", ErrInvalidRoomID, roomID)
	}
	if len(SortKey(roomID, typ)) > maxSortKey {
		return fmt.Errorf("%w: room ID and type are too long together", ErrInvalidRoomID)
	}
	return nil
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}
