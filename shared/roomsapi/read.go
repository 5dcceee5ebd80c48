package roomsapi

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

// reading is the request's context with the caller's device as the one
// events are rendered for: the events it sent carry their transaction IDs.
func reading(r *http.Request) context.Context {
	return rooms.WithDevice(r.Context(), caller(r).DeviceID)
}

// handleMessages serves GET /_matrix/client/v3/rooms/{roomId}/messages. A
// missing dir is "b", Synapse's default, though the spec marks it required:
// clients that leave it out get what Synapse gives them, and a caller who
// may not see the room gets 403 whatever the query says.
func (a *API) handleMessages(w http.ResponseWriter, r *http.Request) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	q := rooms.MessagesQuery{From: r.URL.Query().Get("from"), To: r.URL.Query().Get("to")}
	switch r.URL.Query().Get("dir") {
	case "b", "":
		q.Backward = true
	case "f":
	default:
		return httpapi.InvalidParam(`dir must be "b" or "f"`)
	}
	if q.Limit, err = intParam(r, "limit", 10); err != nil {
		return err
	}
	if q.Filter, err = filterParam(r); err != nil {
		return err
	}
	if q.Filter != nil && q.Filter.Limit > 0 && r.URL.Query().Get("limit") == "" {
		q.Limit = q.Filter.Limit
	}
	page, err := a.Rooms.Messages(reading(r), caller(r).UserID, id, q)
	return reply(w, page, err)
}

func (a *API) handleContext(w http.ResponseWriter, r *http.Request) error {
	id, evID, err := roomAndEvent(r)
	if err != nil {
		return err
	}
	limit, err := intParam(r, "limit", 10)
	if err != nil {
		return err
	}
	f, err := filterParam(r)
	if err != nil {
		return err
	}
	c, err := a.Rooms.ContextOfFetching(reading(r), caller(r).UserID, id, evID, limit, f)
	return reply(w, c, err)
}

func (a *API) handleEvent(w http.ResponseWriter, r *http.Request) error {
	id, evID, err := roomAndEvent(r)
	if err != nil {
		return err
	}
	ev, err := a.Rooms.VisibleEventFetching(reading(r), caller(r).UserID, id, evID)
	return reply(w, ev, err)
}

// visibleState is the state of the {roomId} the caller may see.
func (a *API) visibleState(r *http.Request) ([]events.PDU, error) {
	id, err := roomID(r)
	if err != nil {
		return nil, err
	}
	return a.Rooms.VisibleState(r.Context(), caller(r).UserID, id)
}

func (a *API) handleState(w http.ResponseWriter, r *http.Request) error {
	state, err := a.visibleState(r)
	if err != nil {
		return err
	}
	out, err := a.Rooms.Render(r.Context(), state)
	return reply(w, out, err)
}

func (a *API) handleStateEvent(w http.ResponseWriter, r *http.Request) error {
	typ, err := keyPart(r, "eventType")
	if err != nil {
		return err
	}
	key, err := keyPart(r, "stateKey")
	if err != nil {
		return err
	}
	state, err := a.visibleState(r)
	if err != nil {
		return err
	}
	for _, ev := range state {
		if ev.Type() == typ && *ev.StateKey() == key {
			if r.URL.Query().Get("format") == "event" {
				out, err := a.Rooms.Render(r.Context(), []events.PDU{ev})
				if err != nil {
					return err
				}
				httpapi.WriteJSON(w, http.StatusOK, out[0])
				return nil
			}
			httpapi.WriteJSON(w, http.StatusOK, json.RawMessage(ev.Content()))
			return nil
		}
	}
	return httpapi.NotFound("no %s state with key %q in this room", typ, key)
}

func (a *API) handleMembers(w http.ResponseWriter, r *http.Request) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	mq := rooms.MembersQuery{At: q.Get("at"), Membership: q.Get("membership"), NotMembership: q.Get("not_membership")}
	for _, m := range []string{mq.Membership, mq.NotMembership} {
		switch m {
		case "", "join", "invite", "knock", "leave", "ban":
		default:
			return httpapi.InvalidParam("unknown membership %q", m)
		}
	}
	chunk, err := besideMembers(r.Context(), a, id, func() ([]json.RawMessage, error) {
		return a.Rooms.MemberEvents(r.Context(), caller(r).UserID, id, mq)
	})
	if err != nil {
		return err
	}
	if chunk == nil {
		chunk = []json.RawMessage{}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"chunk": chunk})
	return nil
}

func (a *API) handleJoinedMembers(w http.ResponseWriter, r *http.Request) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	joined, err := besideMembers(r.Context(), a, id, func() (map[string]rooms.JoinedMember, error) {
		return a.Rooms.JoinedMembers(r.Context(), caller(r).UserID, id)
	})
	return reply(w, map[string]any{"joined": joined}, err)
}

func (a *API) handleJoinedRooms(w http.ResponseWriter, r *http.Request) error {
	ids, err := a.Rooms.JoinedRooms(r.Context(), caller(r).UserID)
	if err != nil {
		return err
	}
	if ids == nil {
		ids = []string{}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"joined_rooms": ids})
	return nil
}

func (a *API) handleRelations(w http.ResponseWriter, r *http.Request) error {
	id, evID, err := roomAndEvent(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	rq := rooms.RelationsQuery{RelType: r.PathValue("relType"), EventType: r.PathValue("eventType"), From: q.Get("from"), To: q.Get("to"), Backward: q.Get("dir") != "f"}
	if d := q.Get("dir"); d != "" && d != "b" && d != "f" {
		return httpapi.InvalidParam(`dir must be "b" or "f"`)
	}
	if rq.Limit, err = intParam(r, "limit", 50); err != nil {
		return err
	}
	out, err := a.Rooms.RelationsOf(reading(r), caller(r).UserID, id, evID, rq)
	if err != nil {
		return err
	}
	if out.Chunk == nil {
		out.Chunk = []json.RawMessage{}
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

// handleThreads serves GET /_matrix/client/v1/rooms/{roomId}/threads
// (https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1roomsroomidthreads).
func (a *API) handleThreads(w http.ResponseWriter, r *http.Request) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	q := rooms.ThreadsQuery{From: r.URL.Query().Get("from")}
	switch r.URL.Query().Get("include") {
	case "", "all":
	case "participated":
		q.Participated = true
	default:
		return httpapi.InvalidParam(`include must be "all" or "participated"`)
	}
	// An absent limit is 0, the engine's default.
	if q.Limit, err = intParam(r, "limit", 0); err != nil {
		return err
	}
	if q.Limit == 0 && r.URL.Query().Get("limit") != "" {
		return httpapi.InvalidParam("limit must be greater than zero")
	}
	page, err := a.Rooms.ThreadsOf(reading(r), caller(r).UserID, id, q)
	return reply(w, page, err)
}

// besideMembers is read, a member list of roomID, once its members are
// loaded (awaitMembers): read runs at once, beside the read that tells
// whether the room is still loading them, and again after the wait only if
// it is, so that a list costs no round trip more in the common case.
func besideMembers[T any](ctx context.Context, a *API, roomID string, read func() (T, error)) (T, error) {
	var partial []string
	var partialErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		partial, partialErr = a.Rooms.PartialServers(ctx, roomID)
	}()
	out, err := read()
	<-done
	if partialErr != nil {
		var zero T
		return zero, partialErr
	}
	if partial == nil {
		return out, err
	}
	if err := a.awaitMembers(ctx, roomID); err != nil {
		var zero T
		return zero, err
	}
	return read()
}

// memberWait bounds how long a member list waits for the members of a
// room joined with partial state, memberPoll how often it looks.
const (
	memberWait = 20 * time.Second
	memberPoll = 500 * time.Millisecond
)

// awaitMembers waits, as Synapse does, while roomID is held with partial
// state (a join that left most members to load in the background), so
// that a client's member list is whole; past memberWait the list is
// what is known. One GetItem, and one more each memberPoll of the wait.
func (a *API) awaitMembers(ctx context.Context, roomID string) error {
	deadline := time.Now().Add(memberWait)
	for {
		partial, err := a.Rooms.PartialServers(ctx, roomID)
		if err != nil || partial == nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(memberPoll):
		}
	}
}
