package unread

import (
	"cmp"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

// perRoom bounds the recent events read in each room for /notifications.
const perRoom = 50

// Notification is one entry of GET /notifications.
type Notification struct {
	Actions []json.RawMessage `json:"actions"`
	Event   json.RawMessage   `json:"event"`
	Read    bool              `json:"read"`
	RoomID  string            `json:"room_id"`
	TS      int64             `json:"ts"`
}

// Notifications lists the events of the user's joined rooms that their push
// rules notify them of, newest first, older than the token from (a time in
// Unix ms, "" for now), at most limit; only "highlight" keeps highlights.
// It reads the last perRoom events of each room: older ones are not listed.
func (s *Service) Notifications(ctx context.Context, userID, from string, limit int, only string) ([]Notification, string, error) {
	before := int64(1 << 62)
	if from != "" {
		n, err := strconv.ParseInt(strings.TrimPrefix(from, "n"), 10, 64)
		if err != nil || !strings.HasPrefix(from, "n") {
			return nil, "", httpapi.InvalidParam("invalid from token %q", from)
		}
		before = n
	}
	joined, err := s.Rooms.JoinedRooms(ctx, userID)
	if err != nil {
		return nil, "", err
	}
	rules, err := s.rulesOf(ctx, userID)
	if err != nil {
		return nil, "", err
	}
	var out []Notification
	for _, roomID := range joined {
		c, err := s.context(ctx, userID, roomID)
		if err != nil {
			return nil, "", err
		}
		upTo, err := s.Receipts.ReadUpTo(ctx, userID, roomID)
		if err != nil {
			return nil, "", err
		}
		for _, read := range []bool{false, true} {
			q := rooms.MessagesQuery{Backward: true, Limit: perRoom, To: rooms.Token(upTo)}
			if read {
				q = rooms.MessagesQuery{Backward: true, Limit: perRoom, From: rooms.Token(upTo)}
				if upTo == 0 {
					continue
				}
			}
			page, err := s.Rooms.Messages(ctx, userID, roomID, q)
			if err != nil {
				return nil, "", err
			}
			for _, raw := range page.Chunk {
				o := rules.Evaluate(raw, c.forSender(raw))
				ts := originTS(raw)
				if !o.Notify || ts >= before || (only == "highlight" && !o.Highlight) {
					continue
				}
				out = append(out, Notification{Actions: o.Actions, Event: raw, Read: read, RoomID: roomID, TS: ts})
			}
		}
	}
	slices.SortStableFunc(out, func(a, b Notification) int { return cmp.Compare(b.TS, a.TS) })
	next := ""
	if len(out) > limit {
		out = out[:limit]
		next = "n" + strconv.FormatInt(out[limit-1].TS, 10)
	}
	return out, next, nil
}

func originTS(raw json.RawMessage) int64 {
	var ev struct {
		TS int64 `json:"origin_server_ts"`
	}
	_ = json.Unmarshal(raw, &ev)
	return ev.TS
}

// Register adds GET /notifications behind requireAuth.
func (s *Service) Register(rt *httpapi.Router, requireAuth func(http.HandlerFunc) http.HandlerFunc) {
	rt.HandleFunc("GET /_matrix/client/v3/notifications", requireAuth(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		limit := 20
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				httpapi.WriteError(w, r, httpapi.InvalidParam("limit must be a positive integer"))
				return
			}
			limit = min(n, 100)
		}
		only := q.Get("only")
		if only != "" && only != "highlight" {
			httpapi.WriteError(w, r, httpapi.InvalidParam(`only must be "highlight"`))
			return
		}
		// The events the asking device sent carry their transaction IDs.
		me := accounts.Caller(r.Context())
		list, next, err := s.Notifications(rooms.WithDevice(r.Context(), me.DeviceID), me.UserID, q.Get("from"), limit, only)
		if err != nil {
			httpapi.WriteError(w, r, err)
			return
		}
		if list == nil {
			list = []Notification{}
		}
		body := map[string]any{"notifications": list}
		if next != "" {
			body["next_token"] = next
		}
		httpapi.WriteJSON(w, http.StatusOK, body)
	}))
}
