package sync

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

// SlidingRequest is one simplified sliding sync request (MSC4186), read
// from either the unstable path (Synapse's shapes) or /v4/sync (the
// accepted MSC's names).
type SlidingRequest struct {
	UserID, DeviceID string
	ConnID, Pos      string
	Timeout          time.Duration
	SetPresence      string
	Lists            map[string]SlidingList
	Subscriptions    map[string]RoomConfig
	Extensions       SlidingExtensions
	// V4 answers under the accepted MSC's names.
	V4 bool
}

// SlidingList is one list of a request: the filtered, ordered rooms and
// the inclusive index ranges of it the client wants.
type SlidingList struct {
	RoomConfig
	// Ranges are inclusive; nil is the whole list.
	Ranges  [][2]int
	Filters ListFilters
}

// RoomConfig is what a list or subscription asks of each room.
type RoomConfig struct {
	TimelineLimit int
	State         RequiredState
}

// RequiredState says which state events a room comes with.
type RequiredState struct {
	Include, Exclude []StateMatch
	// Lazy sends the member events of the timeline's senders and targets.
	Lazy bool
}

// StateMatch matches state by type and key; "" matches any.
type StateMatch struct{ Type, Key string }

// ListFilters are a list's filters; nil fields do not filter.
type ListFilters struct {
	IsDM, IsEncrypted, IsInvite *bool
	// RoomTypes and NotRoomTypes hold "" for rooms without a type.
	RoomTypes, NotRoomTypes []string
	HasRoomTypes            bool
	// Spaces keeps the rooms that are children (m.space.child) of any of
	// these spaces the user is joined to; nil does not filter.
	Spaces []string
	// Tags keeps the rooms with any of these tags (m.tag room account
	// data), NotTags drops those with any of these; it wins. Empty: no
	// filter.
	Tags, NotTags []string
}

// SlidingExtensions are the extensions asked for.
type SlidingExtensions struct {
	ToDevice, E2EE, AccountData, Receipts, Typing bool
	// ToDeviceSince is the to_device extension's since: the next_batch
	// whose messages the client processed ("" for none). ToDeviceLimit is
	// how many messages an answer carries at most.
	ToDeviceSince string
	ToDeviceLimit int
	// Scope limits account_data, receipts and typing to rooms of these
	// lists and these rooms (nil: all the response's rooms).
	Scope map[string]extScope
}

type extScope struct {
	Lists, Rooms []string
}

// maxSlidingLists bounds the lists of a request, as the MSC does.
const maxSlidingLists = 100

type rawStateElem struct {
	Type     *string `json:"type"`
	StateKey *string `json:"state_key"`
}

type rawConfig struct {
	TimelineLimit *int            `json:"timeline_limit"`
	RequiredState json.RawMessage `json:"required_state"`
}

type rawList struct {
	rawConfig
	Ranges  [][]int         `json:"ranges"`
	Range   []int           `json:"range"`
	Filters json.RawMessage `json:"filters"`
}

type rawFilters struct {
	IsDM         *bool             `json:"is_dm"`
	IsEncrypted  *bool             `json:"is_encrypted"`
	IsInvite     *bool             `json:"is_invite"`
	IsInvited    *bool             `json:"is_invited"`
	RoomTypes    []json.RawMessage `json:"room_types"`
	NotRoomTypes []json.RawMessage `json:"not_room_types"`
	Spaces       []string          `json:"spaces"`
	Tags         []string          `json:"tags"`
	NotTags      []string          `json:"not_tags"`
}

type rawExt struct {
	Enabled *bool    `json:"enabled"`
	Lists   []string `json:"lists"`
	Rooms   []string `json:"rooms"`
	// Since and Limit are the to_device extension's (MSC3885).
	Since *string `json:"since"`
	Limit *int    `json:"limit"`
}

type rawSliding struct {
	ConnID        *string              `json:"conn_id"`
	Pos           *string              `json:"pos"`
	Timeout       *int64               `json:"timeout"`
	SetPresence   *string              `json:"set_presence"`
	Lists         map[string]rawList   `json:"lists"`
	Subscriptions map[string]rawConfig `json:"room_subscriptions"`
	Extensions    map[string]rawExt    `json:"extensions"`
}

// parseSliding reads a sliding sync request. The unstable path takes pos,
// timeout and set_presence as query parameters (as Synapse does); v4 takes
// them in the body, and the query parameters too when the body has none.
func parseSliding(r *http.Request, v4 bool) (SlidingRequest, error) {
	me := accounts.Caller(r.Context())
	req := SlidingRequest{UserID: me.UserID, DeviceID: me.DeviceID, V4: v4}
	var raw rawSliding
	if err := httpapi.DecodeJSON(r, &raw); err != nil {
		return req, err
	}
	q := r.URL.Query()
	req.Pos = q.Get("pos")
	if raw.Pos != nil {
		req.Pos = *raw.Pos
	}
	if raw.ConnID != nil {
		req.ConnID = *raw.ConnID
	}
	if len(req.ConnID) > 255 {
		return req, httpapi.InvalidParam("conn_id is longer than 255 characters")
	}
	ms := int64(0)
	if t := q.Get("timeout"); t != "" {
		n, err := strconv.ParseInt(t, 10, 64)
		if err != nil || n < 0 {
			return req, httpapi.InvalidParam("timeout must be a non-negative number of milliseconds")
		}
		ms = n
	}
	if raw.Timeout != nil {
		if *raw.Timeout < 0 {
			return req, httpapi.InvalidParam("timeout must be a non-negative number of milliseconds")
		}
		ms = *raw.Timeout
	}
	req.Timeout = time.Duration(min(ms, int64(time.Hour/time.Millisecond))) * time.Millisecond
	presence := q.Get("set_presence")
	if raw.SetPresence != nil {
		presence = *raw.SetPresence
	}
	switch presence {
	case "":
		req.SetPresence = "online"
	case "online", "offline", "unavailable":
		req.SetPresence = presence
	default:
		return req, httpapi.InvalidParam("set_presence must be online, offline or unavailable")
	}
	if len(raw.Lists) > maxSlidingLists {
		return req, httpapi.InvalidParam("at most %d lists", maxSlidingLists)
	}
	req.Lists = map[string]SlidingList{}
	for name, l := range raw.Lists {
		list, err := parseList(name, l, req.UserID, v4)
		if err != nil {
			return req, err
		}
		req.Lists[name] = list
	}
	req.Subscriptions = map[string]RoomConfig{}
	for roomID, c := range raw.Subscriptions {
		if !rooms.ValidRoomID(roomID) {
			return req, httpapi.InvalidParam("room_subscriptions: %q is not a room ID", roomID)
		}
		conf, err := parseConfig("room_subscriptions."+roomID, c, req.UserID, v4)
		if err != nil {
			return req, err
		}
		req.Subscriptions[roomID] = conf
	}
	ext, err := parseExtensions(raw.Extensions)
	if err != nil {
		return req, err
	}
	req.Extensions = ext
	return req, nil
}

func parseList(name string, l rawList, userID string, v4 bool) (SlidingList, error) {
	conf, err := parseConfig("lists."+name, l.rawConfig, userID, v4)
	if err != nil {
		return SlidingList{}, err
	}
	list := SlidingList{RoomConfig: conf}
	ranges := l.Ranges
	if l.Range != nil {
		ranges = append(ranges, l.Range)
	}
	for _, rg := range ranges {
		if len(rg) != 2 || rg[0] < 0 || rg[1] < rg[0] {
			return list, httpapi.InvalidParam("lists.%s: a range is two indexes, the first not above the second", name)
		}
		list.Ranges = append(list.Ranges, [2]int{rg[0], rg[1]})
	}
	if len(l.Filters) > 0 && string(l.Filters) != "null" {
		var f rawFilters
		if err := json.Unmarshal(l.Filters, &f); err != nil {
			return list, httpapi.BadJSON("lists.%s.filters: %v", name, err)
		}
		list.Filters = ListFilters{IsDM: f.IsDM, IsEncrypted: f.IsEncrypted, IsInvite: f.IsInvite, Spaces: f.Spaces, Tags: f.Tags, NotTags: f.NotTags}
		if f.IsInvited != nil {
			list.Filters.IsInvite = f.IsInvited
		}
		var err1, err2 error
		list.Filters.RoomTypes, err1 = roomTypes(f.RoomTypes)
		list.Filters.NotRoomTypes, err2 = roomTypes(f.NotRoomTypes)
		if err1 != nil || err2 != nil {
			return list, httpapi.BadJSON("lists.%s.filters: room types are strings or null", name)
		}
		list.Filters.HasRoomTypes = f.RoomTypes != nil
	}
	return list, nil
}

func roomTypes(raw []json.RawMessage) ([]string, error) {
	var out []string
	for _, r := range raw {
		if string(r) == "null" {
			out = append(out, "")
			continue
		}
		var s string
		if err := json.Unmarshal(r, &s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// maxTimelineLimit caps timeline_limit, as the MSC lets a server.
const maxTimelineLimit = 100

func parseConfig(where string, c rawConfig, userID string, v4 bool) (RoomConfig, error) {
	conf := RoomConfig{TimelineLimit: 0}
	if c.TimelineLimit != nil {
		if *c.TimelineLimit < 0 {
			return conf, httpapi.InvalidParam("%s.timeline_limit must not be negative", where)
		}
		conf.TimelineLimit = min(*c.TimelineLimit, maxTimelineLimit)
	}
	if len(c.RequiredState) == 0 || string(c.RequiredState) == "null" {
		return conf, nil
	}
	var err error
	if c.RequiredState[0] == '[' {
		conf.State, err = unstableState(c.RequiredState, userID)
	} else {
		conf.State, err = v4State(c.RequiredState, userID)
	}
	if err != nil {
		return conf, httpapi.BadJSON("%s.required_state: %v", where, err)
	}
	return conf, nil
}

// unstableState reads Synapse's required_state: [type, state_key] pairs,
// "*" for any, "$LAZY" as a member key for lazy members, "$ME" for the
// user.
func unstableState(raw json.RawMessage, userID string) (RequiredState, error) {
	var pairs [][]string
	var rs RequiredState
	if err := json.Unmarshal(raw, &pairs); err != nil {
		return rs, err
	}
	for _, p := range pairs {
		if len(p) != 2 {
			return rs, errPair
		}
		t, k := p[0], p[1]
		if t == "*" {
			t = ""
		}
		switch k {
		case "*":
			k = ""
		case "$ME":
			k = userID
		case "$LAZY":
			if t == events.Member {
				rs.Lazy = true
				continue
			}
		}
		rs.Include = append(rs.Include, StateMatch{Type: t, Key: k})
	}
	return rs, nil
}

type pairError struct{}

func (pairError) Error() string { return "each element is a [type, state_key] pair" }

var errPair = pairError{}

// v4State reads the accepted MSC's required_state object.
func v4State(raw json.RawMessage, userID string) (RequiredState, error) {
	var doc struct {
		Include []rawStateElem `json:"include"`
		Exclude []rawStateElem `json:"exclude"`
		Lazy    bool           `json:"lazy_members"`
	}
	var rs RequiredState
	if err := json.Unmarshal(raw, &doc); err != nil {
		return rs, err
	}
	conv := func(in []rawStateElem) []StateMatch {
		var out []StateMatch
		for _, e := range in {
			var m StateMatch
			if e.Type != nil {
				m.Type = *e.Type
			}
			if e.StateKey != nil {
				m.Key = *e.StateKey
				if m.Key == "$ME" {
					m.Key = userID
				}
			}
			out = append(out, m)
		}
		return out
	}
	rs.Include, rs.Exclude, rs.Lazy = conv(doc.Include), conv(doc.Exclude), doc.Lazy
	return rs, nil
}

// defaultToDeviceLimit is the to_device extension's limit when the client
// gives none, as Synapse's; it is also the most an answer carries.
const defaultToDeviceLimit = 100

func parseExtensions(raw map[string]rawExt) (SlidingExtensions, error) {
	on := func(name string) bool {
		e, ok := raw[name]
		return ok && e.Enabled != nil && *e.Enabled
	}
	ext := SlidingExtensions{
		ToDevice: on("to_device"), E2EE: on("e2ee"), AccountData: on("account_data"),
		Receipts: on("receipts"), Typing: on("typing"), Scope: map[string]extScope{},
	}
	for _, name := range []string{"account_data", "receipts", "typing"} {
		if e, ok := raw[name]; ok && (e.Lists != nil || e.Rooms != nil) {
			ext.Scope[name] = extScope{Lists: e.Lists, Rooms: e.Rooms}
		}
	}
	ext.ToDeviceLimit = defaultToDeviceLimit
	if td := raw["to_device"]; ext.ToDevice {
		if td.Since != nil {
			ext.ToDeviceSince = *td.Since
		}
		if td.Limit != nil {
			if *td.Limit < 1 {
				return ext, httpapi.InvalidParam("extensions.to_device.limit must be a positive number")
			}
			ext.ToDeviceLimit = min(*td.Limit, defaultToDeviceLimit)
		}
	}
	return ext, nil
}

// matches reports whether the state event of type t and key k is asked for.
func (rs RequiredState) matches(t, k string) bool {
	in := false
	for _, m := range rs.Include {
		if (m.Type == "" || m.Type == t) && (m.Key == "" || m.Key == k) {
			in = true
			break
		}
	}
	if !in {
		return false
	}
	for _, m := range rs.Exclude {
		if (m.Type == "" || m.Type == t) && (m.Key == "" || m.Key == k) {
			return false
		}
	}
	return true
}

// allMembers reports whether the config asks for every member event.
func (rs RequiredState) allMembers() bool {
	for _, m := range rs.Include {
		if (m.Type == "" || m.Type == events.Member) && m.Key == "" {
			return true
		}
	}
	return false
}

// combine is the superset of two configs, as the MSC combines them.
func (c RoomConfig) combine(o RoomConfig) RoomConfig {
	return RoomConfig{
		TimelineLimit: max(c.TimelineLimit, o.TimelineLimit),
		State:         c.State.union(o.State),
	}
}

// union keeps what either asks for. Excludes apply per config, so a union
// keeps only the excludes both share.
func (rs RequiredState) union(o RequiredState) RequiredState {
	out := RequiredState{Lazy: rs.Lazy || o.Lazy}
	out.Include = append(append(out.Include, rs.Include...), o.Include...)
	for _, e := range rs.Exclude {
		for _, f := range o.Exclude {
			if e == f {
				out.Exclude = append(out.Exclude, e)
			}
		}
	}
	if len(rs.Include) == 0 {
		out.Exclude = o.Exclude
	} else if len(o.Include) == 0 {
		out.Exclude = rs.Exclude
	}
	return out
}
