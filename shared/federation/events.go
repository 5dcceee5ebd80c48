package federation

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

// The room endpoints: events, state, auth chains, history. Each answers
// only a server in the room that its ACL allows (checkRoom), and shows
// events under invited or joined history visibility whole only to a
// server whose users could see them (rooms.ServerView), redacted to
// others.

func pdusJSON(pdus []events.PDU) []any {
	out := make([]any, len(pdus))
	for i, p := range pdus {
		out[i] = json.RawMessage(p.JSON())
	}
	return out
}

// handleEvent serves GET /_matrix/federation/v1/event/{eventId}: the event
// in a transaction of one PDU.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1eventeventid
func (s *Service) handleEvent(w http.ResponseWriter, r *http.Request) error {
	id, err := eventParam("eventId", r.PathValue("eventId"))
	if err != nil {
		return err
	}
	ctx := r.Context()
	ev, err := s.Rooms.Event(ctx, "", id)
	if err != nil {
		return notFoundEvent(err, id)
	}
	roomID := events.RoomID(ev.PDU)
	if err := s.checkRoom(ctx, roomID, origin(r)); err != nil {
		return err
	}
	view, err := s.Rooms.ServerView(ctx, roomID, origin(r))
	if err != nil {
		return err
	}
	pdus, err := view.Filter(ctx, []rooms.Event{ev})
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, transaction{Origin: s.ServerName, OriginServerTS: s.now().UnixMilli(), PDUs: pdusJSON(pdus)})
	return nil
}

// stateAt reads the room and event_id of a /state or /state_ids request
// and returns the state before that event and its auth chain. The event
// must be one the origin may see (403 M_FORBIDDEN otherwise), as the
// state at it tells as much as the event.
func (s *Service) stateAt(r *http.Request) (state, chain []events.PDU, err error) {
	roomID, err := roomParam(r)
	if err != nil {
		return nil, nil, err
	}
	id, err := eventParam("event_id", r.URL.Query().Get("event_id"))
	if err != nil {
		return nil, nil, err
	}
	ctx := r.Context()
	if err := s.checkRoom(ctx, roomID, origin(r)); err != nil {
		return nil, nil, err
	}
	if err := partialRefusal(ctx, s.Rooms, roomID); err != nil {
		return nil, nil, err
	}
	ev, err := s.Rooms.Event(ctx, roomID, id)
	if err != nil {
		return nil, nil, notFoundEvent(err, id)
	}
	view, err := s.Rooms.ServerView(ctx, roomID, origin(r))
	if err != nil {
		return nil, nil, err
	}
	if ok, err := view.Sees(ctx, ev); err != nil || !ok {
		if err != nil {
			return nil, nil, err
		}
		return nil, nil, httpapi.Forbidden("%s may not see event %s, nor the state at it", origin(r), id)
	}
	if state, err = s.Rooms.StateBefore(ctx, roomID, ev); err != nil {
		return nil, nil, notFoundEvent(err, id)
	}
	if chain, err = s.Rooms.AuthChain(ctx, roomID, state); err != nil {
		return nil, nil, err
	}
	return state, chain, nil
}

// handleState serves GET /_matrix/federation/v1/state/{roomId}: the state
// before the event, and its auth chain.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1stateroomid
func (s *Service) handleState(w http.ResponseWriter, r *http.Request) error {
	state, chain, err := s.stateAt(r)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"pdus": pdusJSON(state), "auth_chain": pdusJSON(chain)})
	return nil
}

// handleStateIDs serves GET /_matrix/federation/v1/state_ids/{roomId}: as
// /state, by event ID.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1state_idsroomid
func (s *Service) handleStateIDs(w http.ResponseWriter, r *http.Request) error {
	state, chain, err := s.stateAt(r)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"pdu_ids": eventIDs(state), "auth_chain_ids": eventIDs(chain)})
	return nil
}

func eventIDs(pdus []events.PDU) []string {
	out := make([]string, len(pdus))
	for i, p := range pdus {
		out[i] = p.EventID()
	}
	return out
}

// handleEventAuth serves GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}:
// the event's auth chain, which servers need to check the room's graph
// whatever its history visibility.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1event_authroomideventid
func (s *Service) handleEventAuth(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomParam(r)
	if err != nil {
		return err
	}
	id, err := eventParam("eventId", r.PathValue("eventId"))
	if err != nil {
		return err
	}
	ctx := r.Context()
	ev, err := s.eventAuthOf(ctx, roomID, origin(r), id)
	if err != nil {
		return err
	}
	chain, err := s.Rooms.AuthChain(ctx, roomID, []events.PDU{ev.PDU})
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"auth_chain": pdusJSON(chain)})
	return nil
}

// handleBackfill serves GET /_matrix/federation/v1/backfill/{roomId}: the
// events named by v and those before them, newest first, up to limit
// (at most 100).
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1backfillroomid
func (s *Service) handleBackfill(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomParam(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	ids := q["v"]
	if len(ids) == 0 {
		return httpapi.MissingParam("v is required: the events to backfill from")
	}
	for _, id := range ids {
		if _, err := eventParam("v", id); err != nil {
			return err
		}
	}
	if len(ids) > rooms.MaxFederationEvents {
		return httpapi.InvalidParam("v names %d events, over the limit of %d", len(ids), rooms.MaxFederationEvents)
	}
	if q.Get("limit") == "" {
		return httpapi.MissingParam("limit is required")
	}
	limit, err := strconv.Atoi(q.Get("limit"))
	if err != nil || limit < 0 {
		return httpapi.InvalidParam("limit must be a non-negative integer")
	}
	ctx := r.Context()
	if err := s.checkRoom(ctx, roomID, origin(r)); err != nil {
		return err
	}
	evs, err := s.Rooms.Backfill(ctx, roomID, ids, limit)
	if err != nil {
		return notFoundEvent(err, ids[0])
	}
	pdus, err := s.filter(r, roomID, evs)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, transaction{Origin: s.ServerName, OriginServerTS: s.now().UnixMilli(), PDUs: pdusJSON(pdus)})
	return nil
}

// filter applies the origin's history visibility to evs.
func (s *Service) filter(r *http.Request, roomID string, evs []rooms.Event) ([]events.PDU, error) {
	view, err := s.Rooms.ServerView(r.Context(), roomID, origin(r))
	if err != nil {
		return nil, err
	}
	return view.Filter(r.Context(), evs)
}

// missingEventsRequest is the body of POST /get_missing_events.
type missingEventsRequest struct {
	Limit    *int      `json:"limit"`
	MinDepth *int64    `json:"min_depth"`
	Earliest *[]string `json:"earliest_events"`
	Latest   *[]string `json:"latest_events"`
}

// handleMissingEvents serves POST /_matrix/federation/v1/get_missing_events/{roomId}:
// the prev_events walk back from latest_events to earliest_events, oldest
// first; limit defaults to 10 (at most 100), min_depth to 0.
// https://spec.matrix.org/v1.19/server-server-api/#post_matrixfederationv1get_missing_eventsroomid
func (s *Service) handleMissingEvents(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomParam(r)
	if err != nil {
		return err
	}
	var req missingEventsRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.Latest == nil || req.Earliest == nil {
		return httpapi.BadJSON("earliest_events and latest_events are required")
	}
	// A room has a handful of forward extremities; more latest events than
	// an answer may hold events only make work.
	if len(*req.Latest) > rooms.MaxFederationEvents {
		return httpapi.InvalidParam("latest_events names %d events, over the limit of %d", len(*req.Latest), rooms.MaxFederationEvents)
	}
	// IDs that are no event IDs name nothing this server holds.
	latest := slices.DeleteFunc(slices.Clone(*req.Latest), func(id string) bool { return !rooms.ValidEventID(id) })
	limit, minDepth := 10, int64(0)
	if req.Limit != nil {
		if *req.Limit < 0 {
			return httpapi.InvalidParam("limit must not be negative")
		}
		limit = *req.Limit
	}
	if req.MinDepth != nil {
		minDepth = *req.MinDepth
	}
	ctx := r.Context()
	if err := s.checkRoom(ctx, roomID, origin(r)); err != nil {
		return err
	}
	evs, err := s.Rooms.MissingEvents(ctx, roomID, *req.Earliest, latest, limit, minDepth)
	if err != nil {
		return err
	}
	pdus, err := s.filter(r, roomID, evs)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"events": pdusJSON(pdus)})
	return nil
}
