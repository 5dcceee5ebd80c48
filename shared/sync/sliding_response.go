package sync

import (
	"encoding/json"
	"net/http"
	"slices"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
)

// SlidingResponse is the body of a sliding sync answer.
type SlidingResponse struct {
	Pos        string                       `json:"pos"`
	Lists      map[string]SlidingListResult `json:"lists"`
	Rooms      map[string]*SlidingRoom      `json:"rooms"`
	Extensions SlidingExtResult             `json:"extensions"`
}

// SlidingListResult is a list's size; the unstable path adds Synapse's
// SYNC operation with the room IDs of each range.
type SlidingListResult struct {
	Count int         `json:"count"`
	Ops   []SlidingOp `json:"ops,omitempty"`
}

// SlidingOp is one operation of a list (unstable path only).
type SlidingOp struct {
	Op      string   `json:"op"`
	Range   [2]int   `json:"range"`
	RoomIDs []string `json:"room_ids"`
}

// Hero is a member a client can name a room after.
type Hero struct {
	UserID      string `json:"user_id"`
	DisplayName string `json:"displayname,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// SlidingRoom is one room of a response. Name and Avatar are JSON: null
// (v4) says the room's name or avatar was removed.
type SlidingRoom struct {
	Name    json.RawMessage `json:"name,omitempty"`
	Avatar  json.RawMessage `json:"avatar,omitempty"`
	Heroes  []Hero          `json:"heroes,omitempty"`
	IsDM    bool            `json:"is_dm,omitempty"`
	Initial bool            `json:"initial,omitempty"`
	// UnstableExpanded is the unstable name, Expanded v4's.
	UnstableExpanded bool              `json:"unstable_expanded_timeline,omitempty"`
	Expanded         bool              `json:"expanded_timeline,omitempty"`
	Membership       string            `json:"membership,omitempty"`
	Lists            []string          `json:"lists,omitempty"`
	RequiredState    []json.RawMessage `json:"required_state,omitempty"`
	// Timeline is the unstable name, TimelineEvents v4's.
	Timeline          []json.RawMessage `json:"timeline,omitempty"`
	TimelineEvents    []json.RawMessage `json:"timeline_events,omitempty"`
	PrevBatch         string            `json:"prev_batch,omitempty"`
	Limited           bool              `json:"limited,omitempty"`
	NumLive           *int              `json:"num_live,omitempty"`
	JoinedCount       *int              `json:"joined_count,omitempty"`
	InvitedCount      *int              `json:"invited_count,omitempty"`
	NotificationCount *int              `json:"notification_count,omitempty"`
	HighlightCount    *int              `json:"highlight_count,omitempty"`
	BumpStamp         *int64            `json:"bump_stamp,omitempty"`
	// InviteState and KnockState are the unstable names, StrippedState
	// v4's.
	InviteState   []events.StrippedStateEvent `json:"invite_state,omitempty"`
	KnockState    []events.StrippedStateEvent `json:"knock_state,omitempty"`
	StrippedState []events.StrippedStateEvent `json:"stripped_state,omitempty"`
}

// SlidingExtResult holds the extensions' answers; an extension not asked
// for is left out.
type SlidingExtResult struct {
	ToDevice    *ToDeviceExt    `json:"to_device,omitempty"`
	E2EE        *E2EEExt        `json:"e2ee,omitempty"`
	AccountData *AccountDataExt `json:"account_data,omitempty"`
	Receipts    *RoomEventsExt  `json:"receipts,omitempty"`
	Typing      *RoomEventsExt  `json:"typing,omitempty"`
}

// ToDeviceExt is the to_device extension's answer.
type ToDeviceExt struct {
	NextBatch string            `json:"next_batch"`
	Events    []json.RawMessage `json:"events"`
}

// E2EEExt is the e2ee extension's answer.
type E2EEExt struct {
	DeviceLists            *DeviceLists   `json:"device_lists,omitempty"`
	OneTimeKeysCount       map[string]int `json:"device_one_time_keys_count"`
	UnusedFallbackKeyTypes []string       `json:"device_unused_fallback_key_types"`
}

// AccountDataExt is the account_data extension's answer.
type AccountDataExt struct {
	Global []json.RawMessage            `json:"global"`
	Rooms  map[string][]json.RawMessage `json:"rooms"`
}

// RoomEventsExt is the receipts or typing extension's answer: one event
// per room.
type RoomEventsExt struct {
	Rooms map[string]json.RawMessage `json:"rooms"`
}

// registerSliding serves the unstable and v4 paths.
func (s *Service) registerSliding(rt *httpapi.Router, requireAuth func(http.HandlerFunc) http.HandlerFunc) {
	for path, v4 := range map[string]bool{
		"POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync": false,
		"POST /_matrix/client/v4/sync":                                     true,
	} {
		rt.HandleFunc(path, requireAuth(func(w http.ResponseWriter, r *http.Request) {
			req, err := parseSliding(r, v4)
			if err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			resp, err := s.SlidingSync(r.Context(), req)
			if err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			httpapi.WriteJSON(w, http.StatusOK, resp)
		}))
	}
}

// render turns the /sync-shaped rooms of resp into the sliding response.
func (s *Service) render(sr SlidingRequest, c *conn, sel map[string]*selection, lists map[string][]string, resp *Response, pos position, box *inbox) *SlidingResponse {
	out := &SlidingResponse{Lists: map[string]SlidingListResult{}, Rooms: map[string]*SlidingRoom{}}
	for name, l := range sr.Lists {
		all := lists[name]
		res := SlidingListResult{Count: len(all)}
		if !sr.V4 {
			ranges := l.Ranges
			if ranges == nil && len(all) > 0 {
				ranges = [][2]int{{0, len(all) - 1}}
			}
			for _, rg := range ranges {
				ids := []string{}
				for i := rg[0]; i <= rg[1] && i < len(all); i++ {
					ids = append(ids, all[i])
				}
				res.Ops = append(res.Ops, SlidingOp{Op: "SYNC", Range: rg, RoomIDs: ids})
			}
		}
		out.Lists[name] = res
	}
	for id, j := range resp.Rooms.Join {
		if x := sel[id]; x != nil {
			out.Rooms[id] = s.renderJoined(sr, c, id, x, j.Timeline, stateOf(j.State, j.stateAfter), j.Summary, j.Unread, "join", pos)
		}
	}
	for id, l := range resp.Rooms.Leave {
		if x := sel[id]; x != nil {
			out.Rooms[id] = s.renderJoined(sr, c, id, x, l.Timeline, stateOf(l.State, l.stateAfter), nil, nil, c.rooms[id].M, pos)
		}
	}
	for id, inv := range resp.Rooms.Invite {
		if x := sel[id]; x != nil {
			r := s.baseRoom(sr, c, id, x, "invite")
			if sr.V4 {
				r.StrippedState = inv.InviteState.Events
			} else {
				r.InviteState = inv.InviteState.Events
			}
			out.Rooms[id] = r
		}
	}
	for id, k := range resp.Rooms.Knock {
		if x := sel[id]; x != nil {
			r := s.baseRoom(sr, c, id, x, "knock")
			if sr.V4 {
				r.StrippedState = k.KnockState.Events
			} else {
				r.KnockState = k.KnockState.Events
			}
			out.Rooms[id] = r
		}
	}
	out.Extensions = extensions(sr, sel, resp, box)
	return out
}

// stateOf is the state a room came with: state_after, as asked.
func stateOf(state EventList, after stateAfter) []json.RawMessage {
	if after.StateAfter != nil {
		return after.StateAfter.Events
	}
	return state.Events
}

func (s *Service) baseRoom(sr SlidingRequest, c *conn, id string, x *selection, membership string) *SlidingRoom {
	r := c.rooms[id]
	bump := r.Bump
	out := &SlidingRoom{BumpStamp: &bump, IsDM: c.dms[id], Initial: !r.Sent}
	if c.expanded[id] {
		out.Expanded, out.UnstableExpanded = sr.V4, !sr.V4
	}
	if sr.V4 {
		out.Membership = membership
		out.Lists = x.lists
	}
	return out
}

// renderJoined renders a room the user is or was in.
func (s *Service) renderJoined(sr SlidingRequest, c *conn, id string, x *selection, tl Timeline, state []json.RawMessage, sum *Summary, unread *Unread, membership string, pos position) *SlidingRoom {
	out := s.baseRoom(sr, c, id, x, membership)
	type stateEv struct {
		Type     string          `json:"type"`
		StateKey *string         `json:"state_key"`
		Sender   string          `json:"sender"`
		TS       int64           `json:"origin_server_ts"`
		Content  json.RawMessage `json:"content"`
	}
	members := map[string]Hero{}
	look := func(raw json.RawMessage, keep bool) {
		var ev stateEv
		if json.Unmarshal(raw, &ev) != nil || ev.StateKey == nil {
			return
		}
		var content struct {
			Name        *string `json:"name"`
			URL         *string `json:"url"`
			DisplayName string  `json:"displayname"`
			AvatarURL   string  `json:"avatar_url"`
		}
		_ = json.Unmarshal(ev.Content, &content)
		switch {
		case ev.Type == events.Name && *ev.StateKey == "":
			out.Name = nameJSON(content.Name, sr.V4)
		case ev.Type == events.Avatar && *ev.StateKey == "":
			out.Avatar = nameJSON(content.URL, sr.V4)
		case ev.Type == events.Member:
			members[*ev.StateKey] = Hero{UserID: *ev.StateKey, DisplayName: content.DisplayName, AvatarURL: content.AvatarURL}
		}
		if keep && (x.config.State.matches(ev.Type, *ev.StateKey) || (x.config.State.Lazy && ev.Type == events.Member)) {
			out.RequiredState = append(out.RequiredState, raw)
		}
	}
	for _, raw := range state {
		look(raw, true)
	}
	for _, raw := range tl.Events {
		look(raw, false)
	}
	if out.RequiredState == nil && out.Initial {
		out.RequiredState = []json.RawMessage{}
	}
	timeline := tl.Events
	out.PrevBatch, out.Limited = tl.PrevBatch, tl.Limited
	if timeline == nil || x.config.TimelineLimit == 0 {
		// timeline_limit 0 sends no events (they are read, one at least,
		// for the room's name and heroes). The prev_batch of the events
		// read would skip them: without it, /messages pages back from
		// the room's end.
		if len(timeline) > 0 {
			out.PrevBatch, out.Limited = "", true
		}
		timeline = []json.RawMessage{}
	}
	if sr.V4 {
		out.TimelineEvents = timeline
	} else {
		out.Timeline = timeline
	}
	live := len(timeline)
	if out.Initial {
		// Events after the connection's position are live; a first
		// request has none.
		live = 0
		for _, raw := range timeline {
			var ev stateEv
			if sr.Pos != "" && json.Unmarshal(raw, &ev) == nil && ev.TS > pos.Time {
				live++
			}
		}
	}
	out.NumLive = &live
	if sum != nil {
		out.JoinedCount, out.InvitedCount = &sum.Joined, &sum.Invited
		if out.Name == nil || string(out.Name) == "null" {
			for _, h := range sum.Heroes {
				hero, ok := members[h]
				if !ok {
					hero = Hero{UserID: h}
				}
				out.Heroes = append(out.Heroes, hero)
			}
		}
	}
	if unread != nil {
		out.NotificationCount, out.HighlightCount = &unread.Notifications, &unread.Highlights
	}
	return out
}

// nameJSON is a name or avatar as the response carries it; removed: null
// on v4, "" on the unstable path, as Synapse has no null.
func nameJSON(v *string, v4 bool) json.RawMessage {
	if v == nil || *v == "" {
		if v4 {
			return json.RawMessage("null")
		}
		return nil
	}
	b, _ := json.Marshal(*v)
	return b
}

// inScope reports whether an extension's lists and rooms take a room.
func inScope(sr SlidingRequest, ext, id string, x *selection) bool {
	sc, ok := sr.Extensions.Scope[ext]
	if !ok {
		return true
	}
	if slices.Contains(sc.Rooms, "*") || slices.Contains(sc.Rooms, id) {
		return true
	}
	if x.sub && sc.Rooms == nil {
		return true
	}
	for _, l := range x.lists {
		if slices.Contains(sc.Lists, "*") || slices.Contains(sc.Lists, l) {
			return true
		}
	}
	return false
}

func extensions(sr SlidingRequest, sel map[string]*selection, resp *Response, box *inbox) SlidingExtResult {
	var out SlidingExtResult
	ext := sr.Extensions
	if ext.ToDevice {
		evs := box.events
		if evs == nil {
			evs = []json.RawMessage{}
		}
		out.ToDevice = &ToDeviceExt{Events: evs}
	}
	if ext.E2EE {
		out.E2EE = &E2EEExt{DeviceLists: resp.DeviceLists, OneTimeKeysCount: resp.OneTimeKeysCount, UnusedFallbackKeyTypes: resp.UnusedFallbackKeyTypes}
	}
	if ext.AccountData {
		out.AccountData = &AccountDataExt{Global: []json.RawMessage{}, Rooms: map[string][]json.RawMessage{}}
		if resp.AccountData != nil {
			out.AccountData.Global = resp.AccountData.Events
		}
	}
	if ext.Receipts {
		out.Receipts = &RoomEventsExt{Rooms: map[string]json.RawMessage{}}
	}
	if ext.Typing {
		out.Typing = &RoomEventsExt{Rooms: map[string]json.RawMessage{}}
	}
	for id, j := range resp.Rooms.Join {
		x := sel[id]
		if x == nil {
			continue
		}
		if ext.AccountData && len(j.AccountData.Events) > 0 && inScope(sr, "account_data", id, x) {
			out.AccountData.Rooms[id] = j.AccountData.Events
		}
		for _, raw := range j.Ephemeral.Events {
			var ev struct {
				Type string `json:"type"`
			}
			_ = json.Unmarshal(raw, &ev)
			switch {
			case ev.Type == "m.receipt" && ext.Receipts && inScope(sr, "receipts", id, x):
				out.Receipts.Rooms[id] = raw
			case ev.Type == "m.typing" && ext.Typing && inScope(sr, "typing", id, x):
				out.Typing.Rooms[id] = raw
			}
		}
	}
	return out
}
