package search

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

// Register adds POST /search to rt behind requireAuth
// (accounts.Service.RequireAuth).
func (s *Service) Register(rt *httpapi.Router, requireAuth func(http.HandlerFunc) http.HandlerFunc) {
	rt.HandleFunc("POST /_matrix/client/v3/search", requireAuth(httpapi.Handle(s.handleSearch)))
}

// Bounds of a request.
const (
	defaultLimit   = 10
	maxLimit       = 100
	defaultContext = 5
	maxContext     = 50
)

// searchRequest is the body of POST /search.
type searchRequest struct {
	SearchCategories map[string]json.RawMessage `json:"search_categories"`
}

// roomEventsCriteria is search_categories.room_events.
type roomEventsCriteria struct {
	SearchTerm   *string         `json:"search_term"`
	Keys         []string        `json:"keys"`
	Filter       json.RawMessage `json:"filter"`
	OrderBy      string          `json:"order_by"`
	EventContext *struct {
		BeforeLimit    *int `json:"before_limit"`
		AfterLimit     *int `json:"after_limit"`
		IncludeProfile bool `json:"include_profile"`
	} `json:"event_context"`
	IncludeState bool `json:"include_state"`
	Groupings    *struct {
		GroupBy []struct {
			Key string `json:"key"`
		} `json:"group_by"`
	} `json:"groupings"`
}

// request is a checked search.
type request struct {
	query
	order          string
	limit          int
	before, after  int
	withContext    bool
	includeProfile bool
	includeState   bool
	groupBy        []string
	batch          *batch
}

// parseRequest reads and checks the body and the next_batch parameter.
func parseRequest(r *http.Request) (*request, error) {
	var body searchRequest
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.SearchCategories == nil {
		return nil, httpapi.BadJSON("search_categories is required")
	}
	raw, ok := body.SearchCategories["room_events"]
	if !ok {
		// room_events is the only category the spec defines.
		return nil, httpapi.InvalidParam("no search category this server knows: room_events is the only one")
	}
	var c roomEventsCriteria
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, httpapi.BadJSON("search_categories.room_events: %v", err)
	}
	if c.SearchTerm == nil {
		return nil, httpapi.BadJSON("search_categories.room_events.search_term is required")
	}
	req := &request{order: byRank, limit: defaultLimit}
	req.terms = parseTerms(*c.SearchTerm)
	if len(req.terms) > maxTerms {
		return nil, httpapi.InvalidParam("search_term has %d words; at most %d are searched together", len(req.terms), maxTerms)
	}
	req.keys = allKeys
	if len(c.Keys) > 0 { // [] is taken as absent: all keys
		req.keys = 0
		for _, k := range c.Keys {
			bit, ok := keyNames[k]
			if !ok {
				return nil, httpapi.InvalidParam("keys: %q is not content.body, content.name or content.topic", k)
			}
			req.keys |= bit
		}
	}
	if len(c.Filter) > 0 {
		f, err := events.ParseRoomEventFilter(string(c.Filter))
		if err != nil {
			return nil, httpapi.BadJSON("%v", err)
		}
		req.filter = f
		if f.Limit > 0 {
			req.limit = min(f.Limit, maxLimit)
		}
	}
	switch c.OrderBy {
	case "", byRank:
	case byRecent:
		req.order = byRecent
	default:
		return nil, httpapi.InvalidParam("order_by must be rank or recent, not %q", c.OrderBy)
	}
	if ec := c.EventContext; ec != nil {
		req.withContext, req.includeProfile = true, ec.IncludeProfile
		req.before, req.after = defaultContext, defaultContext
		if ec.BeforeLimit != nil {
			req.before = *ec.BeforeLimit
		}
		if ec.AfterLimit != nil {
			req.after = *ec.AfterLimit
		}
		if req.before < 0 || req.after < 0 {
			return nil, httpapi.InvalidParam("event_context: before_limit and after_limit must not be negative")
		}
		req.before, req.after = min(req.before, maxContext), min(req.after, maxContext)
	}
	req.includeState = c.IncludeState
	if c.Groupings != nil {
		for _, g := range c.Groupings.GroupBy {
			if g.Key != "room_id" && g.Key != "sender" {
				return nil, httpapi.InvalidParam("groupings: group_by key must be room_id or sender, not %q", g.Key)
			}
			if !slices.Contains(req.groupBy, g.Key) {
				req.groupBy = append(req.groupBy, g.Key)
			}
		}
	}
	var err error
	if req.batch, err = parseBatch(r.URL.Query().Get("next_batch")); err != nil {
		return nil, err
	}
	if req.batch != nil && req.batch.Order != req.order {
		return nil, httpapi.InvalidParam("next_batch is of a search ordered by %s, not %s", req.batch.Order, req.order)
	}
	return req, nil
}

// roomEvents is search_categories.room_events of the response.
type roomEvents struct {
	Count      int                          `json:"count"`
	Highlights []string                     `json:"highlights"`
	NextBatch  string                       `json:"next_batch,omitempty"`
	Results    []result                     `json:"results"`
	State      map[string][]json.RawMessage `json:"state,omitempty"`
	Groups     map[string]map[string]*group `json:"groups,omitempty"`
}

type result struct {
	Rank    float64         `json:"rank"`
	Result  json.RawMessage `json:"result"`
	Context *eventContext   `json:"context,omitempty"`
}

type eventContext struct {
	Start        string                 `json:"start"`
	End          string                 `json:"end"`
	EventsBefore []json.RawMessage      `json:"events_before"`
	EventsAfter  []json.RawMessage      `json:"events_after"`
	ProfileInfo  map[string]profileInfo `json:"profile_info,omitempty"`
}

// profileInfo leaves out what the member event does not set: the spec
// types both as strings, where Synapse writes null.
type profileInfo struct {
	DisplayName *string `json:"displayname,omitempty"`
	AvatarURL   *string `json:"avatar_url,omitempty"`
}

type group struct {
	NextBatch string   `json:"next_batch,omitempty"`
	Order     int      `json:"order"`
	Results   []string `json:"results"`
}

// handleSearch serves POST /_matrix/client/v3/search.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3search
func (s *Service) handleSearch(w http.ResponseWriter, r *http.Request) error {
	if s.Disabled {
		return httpapi.Errorf(http.StatusBadRequest, "M_UNKNOWN", "search is disabled on this homeserver")
	}
	req, err := parseRequest(r)
	if err != nil {
		return err
	}
	// The events the searching device sent come back with their
	// transaction IDs.
	me := accounts.Caller(r.Context())
	res, err := s.search(rooms.WithDevice(r.Context(), me.DeviceID), me.UserID, req)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"search_categories": map[string]any{"room_events": res}})
	return nil
}

// search runs req for userID over the rooms they are joined to.
func (s *Service) search(ctx context.Context, userID string, req *request) (*roomEvents, error) {
	res := &roomEvents{Highlights: []string{}, Results: []result{}}
	roomIDs, err := s.joinedRooms(ctx, userID, req)
	if err != nil || len(roomIDs) == 0 || len(req.terms) == 0 {
		return res, err
	}
	hits, err := s.find(ctx, roomIDs, req.query)
	if err != nil {
		return nil, err
	}
	hits = slices.DeleteFunc(hits, func(h hit) bool { return !req.batch.inGroup(h) })
	views := map[string]*rooms.SearchView{}
	if hits, err = s.visible(ctx, userID, views, hits); err != nil {
		return nil, err
	}
	sortHits(hits, req.order)
	res.Count = len(hits)
	if req.batch != nil {
		at := req.batch.hit()
		i, _ := slices.BinarySearchFunc(hits, at, func(h, at hit) int {
			if before(h, at, req.order) || (h.room == at.room && h.seq == at.seq) {
				return -1
			}
			return 1
		})
		hits = hits[i:]
	}
	found, last, err := s.load(ctx, views, hits, req)
	if err != nil {
		return nil, err
	}
	if last+1 < len(hits) && len(found) == req.limit {
		res.NextBatch = withGroup(batchAt(hits[last], req.order), req.batch).encode()
	}
	highlights := map[string]bool{}
	for _, f := range found {
		out := result{Rank: f.hit.rank, Result: f.Client}
		if req.withContext {
			if out.Context, err = s.context(ctx, views[f.hit.room], f, req); err != nil {
				return nil, err
			}
		}
		res.Results = append(res.Results, out)
		for _, t := range f.hit.tokens {
			highlights[t] = true
		}
	}
	for t := range highlights {
		res.Highlights = append(res.Highlights, t)
	}
	slices.Sort(res.Highlights)
	if req.includeState {
		if res.State, err = s.states(ctx, views, found); err != nil {
			return nil, err
		}
	}
	res.Groups = groups(found, hits[:min(last+1, len(hits))], hits, req)
	return res, nil
}

// withGroup keeps the group a batch token was of.
func withGroup(b batch, of *batch) batch {
	if of != nil {
		b.GroupBy, b.Group = of.GroupBy, of.Group
	}
	return b
}

// joinedRooms lists the rooms userID is joined to that the filter keeps
// (one Query of the user's memberships); a group's next_batch narrows it to
// the group's room.
func (s *Service) joinedRooms(ctx context.Context, userID string, req *request) ([]string, error) {
	ms, err := s.Rooms.Memberships(ctx, userID)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		if m.Membership != "join" || !roomKept(req.filter, m.RoomID) {
			continue
		}
		if b := req.batch; b != nil && b.GroupBy == "room_id" && b.Group != m.RoomID {
			continue
		}
		out = append(out, m.RoomID)
	}
	return out, nil
}

// roomKept applies the filter's rooms and not_rooms alone.
func roomKept(f *events.RoomEventFilter, roomID string) bool {
	if f == nil {
		return true
	}
	return !slices.Contains(f.NotRooms, roomID) && (f.Rooms == nil || slices.Contains(f.Rooms, roomID))
}

// visible keeps the hits userID may see by history visibility, reading
// what decides it once per room with hits (two GetItems, parallel rooms
// at once) into views. A room left since the memberships were read has
// none.
func (s *Service) visible(ctx context.Context, userID string, views map[string]*rooms.SearchView, hits []hit) ([]hit, error) {
	var roomIDs []string
	for _, h := range hits {
		if _, ok := views[h.room]; !ok {
			views[h.room] = nil
			roomIDs = append(roomIDs, h.room)
		}
	}
	got := make([]*rooms.SearchView, len(roomIDs))
	err := each(len(roomIDs), func(i int) error {
		v, err := s.Rooms.SearchView(ctx, userID, roomIDs[i])
		if errors.Is(err, rooms.ErrForbidden) {
			return nil
		}
		got[i] = v
		return err
	})
	if err != nil {
		return nil, err
	}
	for i, r := range roomIDs {
		views[r] = got[i]
	}
	return slices.DeleteFunc(hits, func(h hit) bool {
		v := views[h.room]
		return v == nil || !v.Sees(h.seq)
	}), nil
}

// foundHit is a result: the event as the user sees it and its index hit.
type foundHit struct {
	rooms.Found
	hit hit
}

// load walks the ordered hits, loading their events a window at a time
// (one BatchGetItem per room in the window), and keeps those not redacted
// that pass the whole filter, until limit are found. It
// returns them and the index in hits of the last one looked at.
func (s *Service) load(ctx context.Context, views map[string]*rooms.SearchView, hits []hit, req *request) ([]foundHit, int, error) {
	var out []foundHit
	last := -1
	for start := 0; start < len(hits) && len(out) < req.limit; {
		// Visibility is settled: only redacted events and contains_url
		// leave a window short, so it is as long as what is missing.
		end := min(start+req.limit-len(out), len(hits))
		window := hits[start:end]
		want := map[string]map[int64]string{}
		for _, h := range window {
			if want[h.room] == nil {
				want[h.room] = map[int64]string{}
			}
			want[h.room][h.seq] = h.eventID
		}
		loaded := map[string]map[int64]rooms.Found{}
		for room, seqs := range want {
			got, err := views[room].Load(ctx, seqs)
			if err != nil {
				return nil, 0, err
			}
			loaded[room] = got
		}
		for i, h := range window {
			last = start + i
			f, ok := loaded[h.room][h.seq]
			if ok && req.filter.Match(f.PDU) {
				out = append(out, foundHit{Found: f, hit: h})
				if len(out) == req.limit {
					break
				}
			}
		}
		start = end
	}
	return out, last, nil
}

// context reads a result's event_context.
func (s *Service) context(ctx context.Context, v *rooms.SearchView, f foundHit, req *request) (*eventContext, error) {
	c, err := v.Context(ctx, f.Found, req.before, req.after)
	if err != nil {
		return nil, err
	}
	out := &eventContext{Start: c.Start, End: c.End, EventsBefore: c.Before, EventsAfter: c.After}
	if out.EventsBefore == nil {
		out.EventsBefore = []json.RawMessage{}
	}
	if out.EventsAfter == nil {
		out.EventsAfter = []json.RawMessage{}
	}
	if !req.includeProfile {
		return out, nil
	}
	members, err := v.Profiles(ctx, c)
	if err != nil {
		return nil, err
	}
	out.ProfileInfo = map[string]profileInfo{}
	for user, ev := range members {
		var p struct {
			DisplayName *string `json:"displayname"`
			AvatarURL   *string `json:"avatar_url"`
		}
		json.Unmarshal(ev.Content(), &p)
		out.ProfileInfo[user] = profileInfo{DisplayName: p.DisplayName, AvatarURL: p.AvatarURL}
	}
	return out, nil
}

// states reads the state of each room with results (include_state).
func (s *Service) states(ctx context.Context, views map[string]*rooms.SearchView, found []foundHit) (map[string][]json.RawMessage, error) {
	out := map[string][]json.RawMessage{}
	for _, f := range found {
		if _, ok := out[f.hit.room]; ok {
			continue
		}
		st, err := views[f.hit.room].State(ctx)
		if err != nil {
			return nil, err
		}
		out[f.hit.room] = st
	}
	return out, nil
}

// groups groups the results by room and by sender as asked. A group's
// next_batch is there when hits of the group remain past the ones looked
// at (seen); its order is where its first result stands.
func groups(found []foundHit, seen, hits []hit, req *request) map[string]map[string]*group {
	if len(req.groupBy) == 0 {
		return nil
	}
	out := map[string]map[string]*group{}
	for _, by := range req.groupBy {
		value := func(h hit) string {
			if by == "room_id" {
				return h.room
			}
			return h.sender
		}
		gs := map[string]*group{}
		lastOf := map[string]hit{}
		for i, f := range found {
			v := value(f.hit)
			g := gs[v]
			if g == nil {
				g = &group{Order: i + 1}
				gs[v] = g
			}
			g.Results = append(g.Results, f.PDU.EventID())
			lastOf[v] = f.hit
		}
		for _, h := range hits[len(seen):] {
			v := value(h)
			if g := gs[v]; g != nil && g.NextBatch == "" {
				b := batchAt(lastOf[v], req.order)
				b.GroupBy, b.Group = by, v
				g.NextBatch = b.encode()
			}
		}
		out[by] = gs
	}
	return out
}
