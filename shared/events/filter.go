package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/cirrus-matrix/cirrus/shared/protocol"
)

// RoomEventFilter is the spec's RoomEventFilter, as the filter query
// parameter of /messages and /context carries it. A nil list means the key
// was absent and filters nothing; an empty list is kept apart from it,
// since "types": [] asks for no events at all.
type RoomEventFilter struct {
	// Limit is the number of events wanted, 0 when absent.
	Limit      int      `json:"limit"`
	Types      []string `json:"types"`
	NotTypes   []string `json:"not_types"`
	Senders    []string `json:"senders"`
	NotSenders []string `json:"not_senders"`
	Rooms      []string `json:"rooms"`
	NotRooms   []string `json:"not_rooms"`
	// ContainsURL is nil when absent: the url key is then not considered.
	ContainsURL *bool `json:"contains_url"`
	// LazyLoadMembers, IncludeRedundantMembers and UnreadThreadNotifications
	// change what comes with the events, not which events match.
	LazyLoadMembers           bool `json:"lazy_load_members"`
	IncludeRedundantMembers   bool `json:"include_redundant_members"`
	UnreadThreadNotifications bool `json:"unread_thread_notifications"`
}

// maxFilterDepth bounds the nesting of a filter as request bodies are
// bounded (httpapi.MaxDepth): a stored filter was one, with unknown keys
// kept, and every sync that names it reads it again.
const maxFilterDepth = 100

// ParseRoomEventFilter reads raw, the URL-decoded filter query parameter; an
// empty raw is the empty filter, which matches every event. Unknown keys
// are ignored; a key twice, as in a request body, is refused. The error
// wraps ErrBadFilter and names the faulty key.
func ParseRoomEventFilter(raw string) (*RoomEventFilter, error) {
	f := &RoomEventFilter{}
	if strings.TrimSpace(raw) == "" {
		return f, nil
	}
	if err := protocol.CheckJSON([]byte(raw), maxFilterDepth); err != nil {
		if errors.Is(err, protocol.ErrSyntax) {
			return nil, &clientError{kind: ErrBadFilter, msg: "filter: not valid JSON: " + err.Error()}
		}
		return nil, &clientError{kind: ErrBadFilter, msg: "filter: " + err.Error()}
	}
	if err := json.Unmarshal([]byte(raw), f); err != nil {
		return nil, &clientError{kind: ErrBadFilter, msg: "filter: " + describeDecodeError(err)}
	}
	if err := f.check(); err != nil {
		return nil, &clientError{kind: ErrBadFilter, msg: "filter: " + err.Error()}
	}
	return f, nil
}

// describeDecodeError turns an encoding/json error into a message for the
// client that names the key.
func describeDecodeError(err error) string {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		if typeErr.Field == "" {
			return "must be a JSON object, not " + typeErr.Value
		}
		return fmt.Sprintf("%s: got %s where %s was expected", typeErr.Field, typeErr.Value, jsonKindOf(typeErr.Type.String()))
	}
	return "not valid JSON: " + err.Error()
}

// jsonKindOf names the JSON type that decodes into the Go type named t.
func jsonKindOf(t string) string {
	switch t {
	case "int":
		return "an integer"
	case "bool", "*bool":
		return "a boolean"
	case "string":
		return "a string"
	case "[]string":
		return "an array of strings"
	}
	return t
}

func (f *RoomEventFilter) check() error {
	if f.Limit < 0 {
		return fmt.Errorf("limit must not be negative, got %d", f.Limit)
	}
	for _, l := range [...]struct {
		name  string
		ids   []string
		sigil string
	}{
		{"senders", f.Senders, "@"}, {"not_senders", f.NotSenders, "@"},
		{"rooms", f.Rooms, "!"}, {"not_rooms", f.NotRooms, "!"},
	} {
		for i, id := range l.ids {
			if !strings.HasPrefix(id, l.sigil) {
				return fmt.Errorf("%s[%d] %q does not start with %q", l.name, i, id, l.sigil)
			}
		}
	}
	return nil
}

// Match reports whether pdu passes the filter's types, not_types, senders,
// not_senders, rooms, not_rooms and contains_url; a nil filter matches
// everything. The not_ lists win over the lists they negate.
func (f *RoomEventFilter) Match(pdu gomatrixserverlib.PDU) bool {
	if f == nil {
		return true
	}
	return f.matchType(pdu.Type()) &&
		included(f.Senders, f.NotSenders, string(pdu.SenderID())) &&
		f.matchRoom(pdu) &&
		f.matchURL(pdu.Content())
}

func (f *RoomEventFilter) matchType(typ string) bool {
	for _, p := range f.NotTypes {
		if matchWildcard(p, typ) {
			return false
		}
	}
	if f.Types == nil {
		return true
	}
	for _, p := range f.Types {
		if matchWildcard(p, typ) {
			return true
		}
	}
	return false
}

// matchRoom only works out the room ID when a room list is set: for a
// version 12 create event it is derived from the event ID.
func (f *RoomEventFilter) matchRoom(pdu gomatrixserverlib.PDU) bool {
	if f.Rooms == nil && f.NotRooms == nil {
		return true
	}
	return included(f.Rooms, f.NotRooms, pdu.RoomID().String())
}

// matchURL counts a url only when it is a string, as Synapse does: media
// events carry it so, and a url of another type links to nothing.
func (f *RoomEventFilter) matchURL(content []byte) bool {
	if f.ContainsURL == nil {
		return true
	}
	var c struct {
		URL json.RawMessage `json:"url"`
	}
	hasURL := json.Unmarshal(content, &c) == nil && len(c.URL) > 0 && c.URL[0] == '"'
	return hasURL == *f.ContainsURL
}

// included applies an include list (nil: everything) and an exclude list.
func included(include, exclude []string, v string) bool {
	if slices.Contains(exclude, v) {
		return false
	}
	return include == nil || slices.Contains(include, v)
}

// matchWildcard reports whether s matches pattern, in which '*' stands for
// any sequence of characters, the empty one too, and every other character
// for itself. On a mismatch it backtracks to the last star only, which is
// enough for '*' patterns and keeps the match linear in practice.
func matchWildcard(pattern, s string) bool {
	p, i := 0, 0
	star, resume := -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, resume = p, i
			p++
		case p < len(pattern) && pattern[p] == s[i]:
			p++
			i++
		case star >= 0:
			resume++
			p, i = star+1, resume
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// FilterFields keeps only fields of eventJSON, a serialized event, for a
// filter's event_fields. Each field is a dot-separated path (appendix
// "Dot-separated property paths"): `\.` is a dot and `\\` a backslash inside
// a key, any other backslash is itself. A path missing from the event adds
// nothing. With no fields the event is returned whole, as the spec lets a
// server send more than asked.
func FilterFields(eventJSON []byte, fields []string) ([]byte, error) {
	if len(fields) == 0 {
		return eventJSON, nil
	}
	tree := fieldTree{}
	for _, f := range fields {
		tree.add(splitFieldPath(f))
	}
	kept, err := tree.keep(eventJSON)
	if err != nil {
		return nil, fmt.Errorf("event fields: %w", err)
	}
	return json.Marshal(kept)
}

// fieldTree holds the paths to keep, key by key; a nil subtree keeps the
// whole value.
type fieldTree map[string]fieldTree

func (t fieldTree) add(path []string) {
	for i, key := range path {
		sub, seen := t[key]
		if seen && sub == nil {
			return // a shorter path keeps all of it already
		}
		if i == len(path)-1 {
			t[key] = nil
			return
		}
		if sub == nil {
			sub = fieldTree{}
			t[key] = sub
		}
		t = sub
	}
}

// keep returns the kept part of raw, an object; keys whose paths lead
// nowhere in raw are left out.
func (t fieldTree) keep(raw json.RawMessage) (map[string]json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	out := make(map[string]json.RawMessage, len(t))
	for key, sub := range t {
		v, ok := obj[key]
		if !ok {
			continue
		}
		if sub == nil {
			out[key] = v
			continue
		}
		if len(v) == 0 || v[0] != '{' {
			continue // a path through a non-object leads nowhere
		}
		inner, err := sub.keep(v)
		if err != nil {
			return nil, err
		}
		if len(inner) > 0 {
			if out[key], err = json.Marshal(inner); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// splitFieldPath splits a dot-separated path into keys, undoing the `\.`
// and `\\` escapes.
func splitFieldPath(path string) []string {
	var keys []string
	key := make([]byte, 0, len(path))
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case c == '\\' && i+1 < len(path) && (path[i+1] == '.' || path[i+1] == '\\'):
			key = append(key, path[i+1])
			i++
		case c == '.':
			keys = append(keys, string(key))
			key = key[:0]
		default:
			key = append(key, c)
		}
	}
	return append(keys, string(key))
}
