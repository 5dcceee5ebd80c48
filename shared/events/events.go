// Package events holds Matrix room events: building and signing new ones,
// parsing stored ones, the auth rules and redaction of every room version.
// It wraps gomatrixserverlib so that the rest of the homeserver speaks these
// types and never imports the library itself.
package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/keys"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// PDU is a room event as servers exchange it: signed, hashed, with its place
// in the graph.
type PDU = gomatrixserverlib.PDU

// DefaultVersion is the room version of new rooms, the spec's default.
const DefaultVersion = "12"

// Event types the server itself acts on.
const (
	Create            = "m.room.create"
	Member            = "m.room.member"
	PowerLevels       = "m.room.power_levels"
	JoinRules         = "m.room.join_rules"
	HistoryVisibility = "m.room.history_visibility"
	GuestAccess       = "m.room.guest_access"
	Name              = "m.room.name"
	Topic             = "m.room.topic"
	Avatar            = "m.room.avatar"
	CanonicalAlias    = "m.room.canonical_alias"
	Redaction         = "m.room.redaction"
	Tombstone         = "m.room.tombstone"
	Encryption        = "m.room.encryption"
	ServerACL         = "m.room.server_acl"
	ThirdPartyInvite  = "m.room.third_party_invite"
)

// ErrUnsupportedVersion is returned for a room version this server cannot hold.
var ErrUnsupportedVersion = errors.New("unsupported room version")

// Versions lists the stable room versions, for capabilities.
func Versions() []string {
	var out []string
	for v := range gomatrixserverlib.StableRoomVersions() {
		if Supported(string(v)) {
			out = append(out, string(v))
		}
	}
	sort.Slice(out, func(i, j int) bool { return versionLess(out[i], out[j]) })
	return out
}

func versionLess(a, b string) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}

// Supported reports whether rooms of version v can be created and held:
// the spec's stable versions. The library also calls some experimental
// versions (MSC identifiers) stable; those are left out.
func Supported(v string) bool {
	if v == "" || strings.TrimLeft(v, "0123456789") != "" {
		return false
	}
	return gomatrixserverlib.StableRoomVersion(gomatrixserverlib.RoomVersion(v))
}

func version(v string) (gomatrixserverlib.IRoomVersion, error) {
	if !Supported(v) {
		return nil, fmt.Errorf("%w %q", ErrUnsupportedVersion, v)
	}
	return gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(v))
}

// DomainlessRoomIDs reports whether room IDs of version v come from the
// create event's hash (version 12 on) rather than the creating server.
func DomainlessRoomIDs(v string) bool {
	impl, err := version(v)
	return err == nil && impl.DomainlessRoomIDs()
}

// Proto is what a local user asks to send: the server adds the graph fields.
type Proto struct {
	RoomID   string
	Sender   string
	Type     string
	StateKey *string
	Content  json.RawMessage
	// Redacts is the target of an m.room.redaction.
	Redacts string
}

// Graph is where a new event goes: its parents and depth.
type Graph struct {
	PrevEvents []string
	Depth      int64
}

// Signer signs events as this server.
type Signer struct {
	ServerName string
	Key        keys.Key
}

// Build makes and signs the event p of a room of version v, after prev, with
// the auth events chosen from state (the room's current state, or nil for a
// create event). Content that cannot be signed as it is (CheckContent) is
// an error wrapping ErrBadContent, whatever path it came by.
func (s Signer) Build(v string, p Proto, g Graph, state *State, now time.Time) (PDU, error) {
	impl, err := version(v)
	if err != nil {
		return nil, err
	}
	if err := CheckContent(p.Content); err != nil {
		return nil, &clientError{kind: ErrBadContent, msg: p.Type + ": " + err.Error()}
	}
	b := impl.NewEventBuilderFromProtoEvent(&gomatrixserverlib.ProtoEvent{
		SenderID:   p.Sender,
		RoomID:     p.RoomID,
		Type:       p.Type,
		StateKey:   p.StateKey,
		Content:    spec.RawJSON(p.Content),
		Redacts:    p.Redacts,
		PrevEvents: g.PrevEvents,
		Depth:      g.Depth,
	})
	if g.PrevEvents == nil {
		b.PrevEvents = []string{}
	}
	b.AuthEvents = []string{}
	if state != nil {
		if err := b.AddAuthEvents(state.auth); err != nil {
			return nil, fmt.Errorf("choose auth events: %w", err)
		}
	}
	ev, err := b.Build(now, spec.ServerName(s.ServerName), gomatrixserverlib.KeyID(s.Key.ID), s.Key.Private)
	var invalid gomatrixserverlib.EventValidationError
	if errors.As(err, &invalid) && invalid.Code == gomatrixserverlib.EventValidationTooLarge {
		return nil, fmt.Errorf("%w: %s", ErrTooLarge, invalid.Message)
	}
	if err != nil {
		return nil, fmt.Errorf("build %s event: %w", p.Type, err)
	}
	return ev, nil
}

// Parse reads a stored PDU of a room of version v. Stored events were checked
// when they arrived, so they are trusted; eventID is known from the key.
func Parse(v, eventID string, pdu []byte) (PDU, error) {
	impl, err := version(v)
	if err != nil {
		return nil, err
	}
	ev, err := impl.NewEventFromTrustedJSONWithEventID(eventID, pdu, false)
	if err != nil {
		return nil, fmt.Errorf("parse event %s: %w", eventID, err)
	}
	return ev, nil
}

// ParseUntrusted checks a PDU received from elsewhere: canonical JSON, hashes,
// sizes; a redacted copy is returned when the content hash does not match.
func ParseUntrusted(v string, pdu []byte) (PDU, error) {
	impl, err := version(v)
	if err != nil {
		return nil, err
	}
	return impl.NewEventFromUntrustedJSON(pdu)
}

// Redact applies the room version's redaction algorithm to ev, returning the
// redacted copy; ev is left as it was.
func Redact(ev PDU) (PDU, error) {
	c, err := Parse(string(ev.Version()), ev.EventID(), ev.JSON())
	if err != nil {
		return nil, err
	}
	c.Redact()
	return c, nil
}

// RoomID is the room an event belongs to; for a version 12 create event it
// is derived from the event's own ID.
func RoomID(ev PDU) string { return ev.RoomID().String() }

// Sender is the sender's user ID (rooms here use user IDs as sender IDs).
func Sender(ev PDU) string { return string(ev.SenderID()) }

// userIDForSender maps sender IDs to user IDs: the same string in every room
// version this server holds (pseudonymous IDs are not supported).
func userIDForSender(_ spec.RoomID, s spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(s), true)
}

// NotAllowedError is an event the auth rules refuse; its message says why.
type NotAllowedError struct{ Reason string }

func (e *NotAllowedError) Error() string { return e.Reason }

// Allowed checks ev against the auth rules of its room version, given the
// room state it is sent into.
func Allowed(ev PDU, state *State) error {
	if err := gomatrixserverlib.Allowed(ev, state.auth, userIDForSender); err != nil {
		var na *gomatrixserverlib.NotAllowed
		if errors.As(err, &na) {
			return &NotAllowedError{Reason: na.Message}
		}
		return &NotAllowedError{Reason: err.Error()}
	}
	return nil
}

// StateKeyTuple names one piece of room state.
type StateKeyTuple struct{ Type, StateKey string }

// AuthStateNeeded lists the state an event of p needs for its auth check in
// a room of version v.
func AuthStateNeeded(v string, p Proto) ([]StateKeyTuple, error) {
	impl, err := version(v)
	if err != nil {
		return nil, err
	}
	needed, err := gomatrixserverlib.StateNeededForProtoEvent(&gomatrixserverlib.ProtoEvent{
		SenderID: p.Sender, RoomID: p.RoomID, Type: p.Type, StateKey: p.StateKey,
		Content: spec.RawJSON(p.Content), Version: impl,
	})
	if err != nil {
		return nil, fmt.Errorf("auth state for %s: %w", p.Type, err)
	}
	var out []StateKeyTuple
	for _, t := range needed.Tuples() {
		out = append(out, StateKeyTuple{Type: t.EventType, StateKey: t.StateKey})
	}
	return out, nil
}

// State is a set of state events keyed by type and state key, usable for
// auth checks.
type State struct {
	auth *gomatrixserverlib.AuthEvents
}

// NewState builds a State from events; later events replace earlier ones
// with the same type and state key.
func NewState(evs []PDU) (*State, error) {
	a, err := gomatrixserverlib.NewAuthEvents(nil)
	if err != nil {
		return nil, err
	}
	s := &State{auth: a}
	for _, ev := range evs {
		if err := s.Add(ev); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Add sets ev in the state, replacing what held its type and state key.
func (s *State) Add(ev PDU) error {
	if err := s.auth.AddEvent(ev); err != nil {
		return fmt.Errorf("state: add %s: %w", ev.EventID(), err)
	}
	return nil
}

// PowerLevels parses the content of an m.room.power_levels event with the
// defaults the spec gives absent keys.
type PowerLevelContent = gomatrixserverlib.PowerLevelContent

// PowerLevelsOf reads ev's power levels; a nil ev gives the defaults a room
// has before its first power levels event.
func PowerLevelsOf(ev PDU) (*PowerLevelContent, error) {
	if ev == nil {
		var c PowerLevelContent
		c.Defaults()
		return &c, nil
	}
	return ev.PowerLevels()
}

// Creators lists the users with unlimited power in a room whose create event
// is ev: the sender and additional_creators from version 12 on.
func Creators(create PDU) []string {
	return gomatrixserverlib.CreatorsFromCreateEvent(create)
}

// PrivilegedCreators reports whether creators of version v rooms have
// unlimited power (version 12 on).
func PrivilegedCreators(v string) bool {
	impl, err := version(v)
	return err == nil && impl.PrivilegedCreators()
}

// Knocking reports whether version v allows knock membership.
func Knocking(v string) bool {
	switch v {
	case "1", "2", "3", "4", "5", "6":
		return false
	}
	return Supported(v)
}

// UserLevel is userID's level in pl (creators' unlimited power aside).
func UserLevel(pl *PowerLevelContent, userID string) int64 {
	return pl.UserLevel(spec.SenderID(userID))
}
