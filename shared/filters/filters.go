// Package filters stores the event filters clients upload for /sync and the
// room message APIs (POST /user/{userId}/filter), and gives them back by ID.
//
// Storage (docs/storage.md): one item per filter in the user's partition,
// pk user|<user ID>, sk filter|<filter ID>, the filter as canonical JSON
// text in the attribute filter. A filter's ID is derived from its canonical
// JSON (SHA-256, 96 bits, base64url), so uploading the same filter again,
// as clients do at every start, returns the same ID and rewrites the same
// item instead of adding one.
package filters

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/protocol"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// MaxIDLength bounds the filter IDs worth looking up; every ID this server
// makes is 16 characters.
const MaxIDLength = 255

// Errors callers can test for with errors.Is.
var (
	ErrNotFound = errors.New("filter not found")
	// ErrInvalid is a filter that breaks the spec's Filter schema.
	ErrInvalid = errors.New("invalid filter")
	// ErrTooLarge is a filter that does not fit in one item (400 KB).
	ErrTooLarge = errors.New("filter is too large")
)

// Service stores filters.
type Service struct {
	Store *store.Store
}

type filterItem struct {
	PK     string `dynamodbav:"pk"`
	SK     string `dynamodbav:"sk"`
	Filter string `dynamodbav:"filter"`
}

func filterKey(userID, filterID string) store.Key {
	return store.Key{PK: "user|" + userID, SK: "filter|" + filterID}
}

// Create stores filter, a JSON object following the spec's Filter schema,
// for the user and returns its ID: one write of 1 WCU per KB. It returns
// ErrInvalid, or ErrTooLarge past 400 KB.
func (s *Service) Create(ctx context.Context, userID string, filter json.RawMessage) (string, error) {
	if err := Validate(filter); err != nil {
		return "", err
	}
	canonical, err := protocol.CanonicalJSON(filter)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	sum := sha256.Sum256(canonical)
	id := base64.RawURLEncoding.EncodeToString(sum[:12])
	k := filterKey(userID, id)
	err = s.Store.Put(ctx, filterItem{PK: k.PK, SK: k.SK, Filter: string(canonical)})
	if errors.Is(err, store.ErrItemTooLarge) {
		return "", fmt.Errorf("create filter of %s: %w: %d bytes", userID, ErrTooLarge, len(canonical))
	}
	if err != nil {
		return "", fmt.Errorf("create filter of %s: %w", userID, err)
	}
	return id, nil
}

// Get returns the user's filter filterID: one strongly consistent read,
// ErrNotFound when the user has no such filter.
func (s *Service) Get(ctx context.Context, userID, filterID string) (json.RawMessage, error) {
	if filterID == "" || len(filterID) > MaxIDLength {
		return nil, fmt.Errorf("get filter %q: %w", filterID, ErrNotFound)
	}
	var it filterItem
	err := s.Store.Get(ctx, filterKey(userID, filterID), &it)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("get filter %s of %s: %w", filterID, userID, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get filter %s of %s: %w", filterID, userID, err)
	}
	return json.RawMessage(it.Filter), nil
}

// Filter is the spec's Filter schema (definitions/sync_filter.yaml), used
// to check the types of an uploaded filter. Unknown keys are kept in the
// stored filter, as Synapse does.
type Filter struct {
	EventFields []string     `json:"event_fields"`
	EventFormat *string      `json:"event_format"`
	Presence    *EventFilter `json:"presence"`
	AccountData *EventFilter `json:"account_data"`
	Room        *RoomFilter  `json:"room"`
}

// EventFilter is the spec's EventFilter.
type EventFilter struct {
	Limit      *int64   `json:"limit"`
	NotSenders []string `json:"not_senders"`
	NotTypes   []string `json:"not_types"`
	Senders    []string `json:"senders"`
	Types      []string `json:"types"`
}

// RoomEventFilter is the spec's RoomEventFilter: an EventFilter and more.
type RoomEventFilter struct {
	Limit                     *int64   `json:"limit"`
	NotSenders                []string `json:"not_senders"`
	NotTypes                  []string `json:"not_types"`
	Senders                   []string `json:"senders"`
	Types                     []string `json:"types"`
	UnreadThreadNotifications *bool    `json:"unread_thread_notifications"`
	LazyLoadMembers           *bool    `json:"lazy_load_members"`
	IncludeRedundantMembers   *bool    `json:"include_redundant_members"`
	NotRooms                  []string `json:"not_rooms"`
	Rooms                     []string `json:"rooms"`
	ContainsURL               *bool    `json:"contains_url"`
}

// RoomFilter is the spec's RoomFilter.
type RoomFilter struct {
	NotRooms     []string         `json:"not_rooms"`
	Rooms        []string         `json:"rooms"`
	Ephemeral    *RoomEventFilter `json:"ephemeral"`
	IncludeLeave *bool            `json:"include_leave"`
	State        *RoomEventFilter `json:"state"`
	Timeline     *RoomEventFilter `json:"timeline"`
	AccountData  *RoomEventFilter `json:"account_data"`
}

// Validate checks filter against the Filter schema: the type of every known
// key, event_format one of "client" and "federation", sender lists of user
// IDs, room lists of room IDs, limits that are not negative; and that its
// canonical form, which is stored, means what it says (protocol.CanonicalJSON).
// Errors wrap ErrInvalid and name the key.
func Validate(filter json.RawMessage) error {
	var f Filter
	if err := json.Unmarshal(filter, &f); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return fmt.Errorf("%w: %s must be %s, not %s", ErrInvalid, typeErr.Field, jsonType(typeErr.Type), typeErr.Value)
		}
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	// The filter is stored in canonical form, which must mean what was sent.
	if _, err := protocol.CanonicalJSON(filter); err != nil {
		var je *protocol.JSONError
		if errors.As(err, &je) {
			return fmt.Errorf("%w: %v", ErrInvalid, je)
		}
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if f.EventFormat != nil && *f.EventFormat != "client" && *f.EventFormat != "federation" {
		return fmt.Errorf("%w: event_format must be \"client\" or \"federation\", not %q", ErrInvalid, *f.EventFormat)
	}
	checks := []error{checkEvent("presence", f.Presence), checkEvent("account_data", f.AccountData)}
	if f.Room != nil {
		checks = append(checks,
			checkIDs("room.rooms", f.Room.Rooms, "!"), checkIDs("room.not_rooms", f.Room.NotRooms, "!"),
			checkRoomEvent("room.ephemeral", f.Room.Ephemeral), checkRoomEvent("room.state", f.Room.State),
			checkRoomEvent("room.timeline", f.Room.Timeline), checkRoomEvent("room.account_data", f.Room.AccountData))
	}
	return first(checks...)
}

// jsonType names the JSON type that decodes into t.
func jsonType(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Pointer:
		return jsonType(t.Elem())
	case reflect.Int64:
		return "an integer"
	case reflect.Bool:
		return "a boolean"
	case reflect.String:
		return "a string"
	case reflect.Slice:
		return "an array"
	case reflect.Struct:
		return "an object"
	}
	return t.String()
}

// first returns the first error that is not nil.
func first(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func checkRoomEvent(name string, f *RoomEventFilter) error {
	if f == nil {
		return nil
	}
	events := EventFilter{Limit: f.Limit, NotSenders: f.NotSenders, NotTypes: f.NotTypes, Senders: f.Senders, Types: f.Types}
	return first(checkEvent(name, &events),
		checkIDs(name+".rooms", f.Rooms, "!"), checkIDs(name+".not_rooms", f.NotRooms, "!"))
}

func checkEvent(name string, f *EventFilter) error {
	if f == nil {
		return nil
	}
	if f.Limit != nil && *f.Limit < 0 {
		return fmt.Errorf("%w: %s.limit must not be negative", ErrInvalid, name)
	}
	return first(checkIDs(name+".senders", f.Senders, "@"), checkIDs(name+".not_senders", f.NotSenders, "@"))
}

// checkIDs refuses an ID list with an entry that lacks the sigil.
func checkIDs(name string, ids []string, sigil string) error {
	for _, id := range ids {
		if !strings.HasPrefix(id, sigil) {
			return fmt.Errorf("%w: %s holds %q, which does not start with %q", ErrInvalid, name, id, sigil)
		}
	}
	return nil
}
