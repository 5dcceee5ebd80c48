package sync

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/protocol"
)

// Register adds GET /sync and GET /keys/changes (whose tokens are sync
// tokens) to rt behind requireAuth; loadFilter reads a
// filter the user stored by its ID.
func (s *Service) Register(rt *httpapi.Router, requireAuth func(http.HandlerFunc) http.HandlerFunc,
	loadFilter func(ctx context.Context, userID, filterID string) (json.RawMessage, error)) {
	rt.HandleFunc("GET /_matrix/client/v3/keys/changes", requireAuth(s.keyChanges))
	s.registerSliding(rt, requireAuth)
	rt.HandleFunc("GET /_matrix/client/v3/sync", requireAuth(func(w http.ResponseWriter, r *http.Request) {
		req, err := parseRequest(r, loadFilter)
		if err != nil {
			httpapi.WriteError(w, r, err)
			return
		}
		resp, err := s.Sync(r.Context(), req)
		if err != nil {
			httpapi.WriteError(w, r, err)
			return
		}
		httpapi.WriteJSON(w, http.StatusOK, resp)
	}))
}

func parseRequest(r *http.Request, loadFilter func(ctx context.Context, userID, filterID string) (json.RawMessage, error)) (Request, error) {
	me := accounts.Caller(r.Context())
	q := r.URL.Query()
	req := Request{UserID: me.UserID, DeviceID: me.DeviceID, Since: q.Get("since")}
	if t := q.Get("timeout"); t != "" {
		ms, err := strconv.Atoi(t)
		if err != nil || ms < 0 {
			return req, httpapi.InvalidParam("timeout must be a non-negative number of milliseconds")
		}
		req.Timeout = time.Duration(ms) * time.Millisecond
	}
	switch q.Get("full_state") {
	case "", "false":
	case "true":
		req.FullState = true
	default:
		return req, httpapi.InvalidParam(`full_state must be "true" or "false"`)
	}
	switch p := q.Get("set_presence"); p {
	case "":
		req.SetPresence = "online"
	case "online", "offline", "unavailable":
		req.SetPresence = p
	default:
		return req, httpapi.InvalidParam(`set_presence must be "online", "offline" or "unavailable"`)
	}
	for name, to := range map[string]*bool{"use_state_after": &req.StateAfter, "org.matrix.msc4222.use_state_after": &req.UnstableStateAfter} {
		switch q.Get(name) {
		case "", "false":
		case "true":
			*to = true
		default:
			return req, httpapi.InvalidParam(`%s must be "true" or "false"`, name)
		}
	}
	if req.StateAfter {
		// Both names asked: the stable one answers.
		req.UnstableStateAfter = false
	}
	f, err := filter(r, me.UserID, q.Get("filter"), loadFilter)
	req.Filter = f
	return req, err
}

// filter reads the sync filter, inline JSON or the ID of a stored one.
func filter(r *http.Request, userID, raw string, load func(ctx context.Context, userID, filterID string) (json.RawMessage, error)) (Filter, error) {
	if raw == "" {
		return Filter{}, nil
	}
	doc := json.RawMessage(raw)
	if strings.HasPrefix(strings.TrimSpace(raw), "{") {
		// An inline filter is a request body in the query: the same check
		// as every body (duplicate keys, nesting).
		if err := protocol.CheckJSON(doc, httpapi.MaxDepth); err != nil {
			return Filter{}, httpapi.BadJSON("filter: %v", err)
		}
	} else {
		stored, err := load(r.Context(), userID, raw)
		if err != nil {
			return Filter{}, err
		}
		doc = stored
	}
	return parseFilter(doc)
}

// parseFilter reads the parts of the spec's Filter that sync applies.
func parseFilter(doc json.RawMessage) (Filter, error) {
	var f struct {
		EventFields []string `json:"event_fields"`
		EventFormat string   `json:"event_format"`
		Room        struct {
			Rooms        []string        `json:"rooms"`
			NotRooms     []string        `json:"not_rooms"`
			IncludeLeave bool            `json:"include_leave"`
			Timeline     json.RawMessage `json:"timeline"`
			State        json.RawMessage `json:"state"`
		} `json:"room"`
	}
	if err := json.Unmarshal(doc, &f); err != nil {
		return Filter{}, httpapi.BadJSON("filter: %v", err)
	}
	out := Filter{IncludeLeave: f.Room.IncludeLeave, Rooms: f.Room.Rooms, NotRooms: f.Room.NotRooms, EventFields: f.EventFields}
	switch events.Format(f.EventFormat) {
	case "", events.FormatClient, events.FormatFederation:
		out.Format = events.Format(f.EventFormat)
	default:
		return Filter{}, httpapi.BadJSON(`filter: event_format must be "client" or "federation"`)
	}
	var err error
	if out.Timeline, err = roomEventFilter(f.Room.Timeline); err != nil {
		return Filter{}, err
	}
	if out.State, err = roomEventFilter(f.Room.State); err != nil {
		return Filter{}, err
	}
	if out.Timeline != nil {
		out.TimelineLimit = out.Timeline.Limit
	}
	return out, nil
}

func roomEventFilter(raw json.RawMessage) (*events.RoomEventFilter, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	f, err := events.ParseRoomEventFilter(string(raw))
	if err != nil {
		return nil, httpapi.BadJSON("%v", err)
	}
	if f.Limit < 0 {
		return nil, httpapi.BadJSON("filter: limit must not be negative")
	}
	return f, nil
}
