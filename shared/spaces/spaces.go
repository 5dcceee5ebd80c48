// Package spaces serves what clients learn of rooms they may not be in: the
// space hierarchy, a walk of a space's m.space.child events, and the room
// summary. Both show a room only to those the spec lets see it.
//
// A room held elsewhere is described as other servers tell (GET
// /_matrix/federation/v1/hierarchy): in the hierarchy, those of its child
// event's via list; in the summary, those of the request's.
package spaces

import (
	"encoding/json"
	"log/slog"
	"strconv"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/fedclient"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Service serves the hierarchy and room summary endpoints over the rooms of
// this server.
type Service struct {
	Rooms *rooms.Service
	// Store holds the hierarchy's pagination sessions.
	Store *store.Store
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// Client asks other servers for the hierarchy of rooms this server
	// does not hold; nil leaves such rooms out.
	Client *fedclient.Client
	// ServerName is this server's, never asked through Client.
	ServerName string
	// Logger logs what other servers answer; nil is slog.Default().
	Logger *slog.Logger
}

func (s *Service) log() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// room is a room as both endpoints describe it (the spec's RoomSummary).
type room struct {
	RoomID         string   `json:"room_id"`
	Name           string   `json:"name,omitempty"`
	Topic          string   `json:"topic,omitempty"`
	CanonicalAlias string   `json:"canonical_alias,omitempty"`
	AvatarURL      string   `json:"avatar_url,omitempty"`
	Joined         int64    `json:"num_joined_members"`
	JoinRule       string   `json:"join_rule,omitempty"`
	WorldReadable  bool     `json:"world_readable"`
	GuestCanJoin   bool     `json:"guest_can_join"`
	RoomType       string   `json:"room_type,omitempty"`
	Encryption     string   `json:"encryption,omitempty"`
	RoomVersion    string   `json:"room_version,omitempty"`
	AllowedRoomIDs []string `json:"allowed_room_ids,omitempty"`
}

func describe(sum rooms.Summary) room {
	r := room{
		RoomID: sum.RoomID, Name: sum.Name, Topic: sum.Topic, CanonicalAlias: sum.Alias,
		AvatarURL: sum.Avatar, Joined: sum.Joined, JoinRule: sum.JoinRule,
		WorldReadable: sum.WorldReadable, GuestCanJoin: sum.Guests, RoomType: sum.RoomType,
		Encryption: sum.Encryption, RoomVersion: sum.Version,
	}
	if restricted(sum) {
		r.AllowedRoomIDs = sum.Allow
	}
	return r
}

// viewer is who asks, with their memberships of the rooms that decide what
// they see.
type viewer struct {
	// userID is "" for a request without an access token.
	userID string
	// memberships maps room IDs to the user's membership of them.
	memberships map[string]string
}

func newViewer(userID string, ms []rooms.Membership) *viewer {
	v := &viewer{userID: userID, memberships: make(map[string]string, len(ms))}
	for _, m := range ms {
		v.memberships[m.RoomID] = m.Membership
	}
	return v
}

// sees reports whether v may see the summary of sum: the spec's rule for
// the hierarchy (and the room summary, which refers to it), as Synapse
// applies it. Members and invitees see a room; so does anyone when it is
// world readable or anyone may join or knock; and in a restricted room,
// members of a room its join rules allow.
func (v *viewer) sees(sum rooms.Summary) bool {
	if sum.WorldReadable || sum.JoinRule == "public" {
		return true
	}
	if (sum.JoinRule == "knock" && from(sum.Version, 7)) || (sum.JoinRule == "knock_restricted" && from(sum.Version, 10)) {
		return true
	}
	if v.userID == "" {
		return false
	}
	if m := v.memberships[sum.RoomID]; m == "join" || m == "invite" {
		return true
	}
	if restricted(sum) {
		for _, id := range sum.Allow {
			if v.memberships[id] == "join" {
				return true
			}
		}
	}
	return false
}

// restricted reports whether the room's join rule lets members of other
// rooms join in its version: restricted from version 8, knock_restricted
// from 10.
func restricted(sum rooms.Summary) bool {
	return (sum.JoinRule == "restricted" && from(sum.Version, 8)) ||
		(sum.JoinRule == "knock_restricted" && from(sum.Version, 10))
}

// from reports whether the room version is first or later; versions that
// are not numbers are no stable version and have none of these features.
func from(version string, first int) bool {
	n, err := strconv.Atoi(version)
	return err == nil && n >= first && events.Supported(version)
}

// child is an m.space.child event as the hierarchy lists it: stripped state
// with origin_server_ts.
type child struct {
	Type           string          `json:"type"`
	StateKey       string          `json:"state_key"`
	Content        json.RawMessage `json:"content"`
	Sender         string          `json:"sender"`
	OriginServerTS int64           `json:"origin_server_ts"`

	order     string // "" when absent or invalid
	suggested bool
	via       []string
}

// childOf reads a space's child event; ok is false when it names no child:
// the spec ignores a child event without a valid via list, which is how a
// child is removed.
func childOf(ev events.PDU) (child, bool) {
	return childContent(child{
		Type: ev.Type(), StateKey: *ev.StateKey(), Content: json.RawMessage(ev.Content()),
		Sender: events.Sender(ev), OriginServerTS: int64(ev.OriginServerTS()),
	})
}

// validVia reports whether via is a non-empty list of strings, as Synapse
// requires.
func validVia(via any) bool {
	list, ok := via.([]any)
	if !ok || len(list) == 0 {
		return false
	}
	for _, v := range list {
		if _, ok := v.(string); !ok {
			return false
		}
	}
	return true
}

// validOrder reports whether an order key is one the spec sorts by: 1 to
// 50 characters from \x20 to \x7E.
func validOrder(o string) bool {
	if o == "" || len(o) > 50 {
		return false
	}
	for i := 0; i < len(o); i++ {
		if o[i] < 0x20 || o[i] > 0x7e {
			return false
		}
	}
	return true
}

// before orders children as the spec's "Ordering of children within a
// space" does: by valid order key, those without one after; then by the
// event's origin_server_ts; then by room ID.
func before(a, b child) bool {
	if (a.order == "") != (b.order == "") {
		return a.order != ""
	}
	if a.order != b.order {
		return a.order < b.order
	}
	if a.OriginServerTS != b.OriginServerTS {
		return a.OriginServerTS < b.OriginServerTS
	}
	return a.StateKey < b.StateKey
}
