// Package roomsapi is the client-server API of rooms: the HTTP endpoints
// of createRoom, membership, sending and reading events, relations,
// threads, aliases, the public room directory and upgrades, over the room
// engine (shared/rooms). It reads requests (path, query and body, checked
// before the engine is asked), passes the engine the acting user and
// typed options, and writes the answers. The engine's refusals carry their
// Matrix errors (httpapi.WriteError, from shared/refusal's kinds); the few
// answers an endpoint words otherwise are said where they are made.
package roomsapi

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

// API serves the room endpoints over Rooms.
type API struct {
	Rooms *rooms.Service
}

// Routes adds the room endpoints to rt, each behind requireAuth but the
// directory reads; isAdmin tells whether the caller is a server admin.
func (a *API) Routes(rt *httpapi.Router, requireAuth func(http.HandlerFunc) http.HandlerFunc, isAdmin func(*http.Request) (bool, error)) {
	h := func(pattern string, f func(http.ResponseWriter, *http.Request) error) {
		rt.HandleFunc(pattern, requireAuth(httpapi.Handle(f)))
	}
	const v3 = "/_matrix/client/v3"
	h("POST "+v3+"/createRoom", a.handleCreate)
	h("POST "+v3+"/join/{roomIdOrAlias}", a.enter(a.Rooms.JoinRoom))
	h("POST "+v3+"/rooms/{roomId}/join", a.enter(a.Rooms.JoinRoom))
	h("POST "+v3+"/knock/{roomIdOrAlias}", a.enter(a.Rooms.KnockRoom))
	h("POST "+v3+"/rooms/{roomId}/invite", a.target(a.invite))
	h("POST "+v3+"/rooms/{roomId}/kick", a.target(a.Rooms.Kick))
	h("POST "+v3+"/rooms/{roomId}/ban", a.target(a.Rooms.Ban))
	h("POST "+v3+"/rooms/{roomId}/unban", a.target(a.Rooms.Unban))
	h("POST "+v3+"/rooms/{roomId}/leave", a.handleLeave)
	h("POST "+v3+"/rooms/{roomId}/forget", a.handleForget)
	h("PUT "+v3+"/rooms/{roomId}/send/{eventType}/{txnId}", a.sendEvent(false))
	h("PUT "+v3+"/rooms/{roomId}/state/{eventType}", a.sendEvent(true))
	h("PUT "+v3+"/rooms/{roomId}/state/{eventType}/{stateKey...}", a.sendEvent(true))
	h("PUT "+v3+"/rooms/{roomId}/redact/{eventId}/{txnId}", a.handleRedact)
	h("GET "+v3+"/rooms/{roomId}/messages", a.handleMessages)
	h("GET "+v3+"/rooms/{roomId}/context/{eventId}", a.handleContext)
	h("GET "+v3+"/rooms/{roomId}/event/{eventId}", a.handleEvent)
	h("GET "+v3+"/rooms/{roomId}/state", a.handleState)
	h("GET "+v3+"/rooms/{roomId}/state/{eventType}", a.handleStateEvent)
	h("GET "+v3+"/rooms/{roomId}/state/{eventType}/{stateKey...}", a.handleStateEvent)
	h("GET "+v3+"/rooms/{roomId}/members", a.handleMembers)
	h("GET "+v3+"/rooms/{roomId}/joined_members", a.handleJoinedMembers)
	h("GET "+v3+"/joined_rooms", a.handleJoinedRooms)
	h("GET "+v3+"/rooms/{roomId}/aliases", a.handleAliases)
	rv1 := "/_matrix/client/v1/rooms/{roomId}/relations/{eventId}"
	h("GET "+rv1, a.handleRelations)
	h("GET "+rv1+"/{relType}", a.handleRelations)
	h("GET "+rv1+"/{relType}/{eventType}", a.handleRelations)
	h("GET /_matrix/client/v1/rooms/{roomId}/threads", a.handleThreads)
	h("PUT "+v3+"/directory/room/{roomAlias}", a.handleSetAlias)
	rt.HandleFunc("GET "+v3+"/directory/room/{roomAlias}", httpapi.Handle(a.handleGetAlias))
	h("DELETE "+v3+"/directory/room/{roomAlias}", func(w http.ResponseWriter, r *http.Request) error {
		admin, err := isAdmin(r)
		if err != nil {
			return err
		}
		return a.handleDeleteAlias(w, r, admin)
	})
	rt.HandleFunc("GET "+v3+"/directory/list/room/{roomId}", httpapi.Handle(a.handleGetListing))
	h("PUT "+v3+"/directory/list/room/{roomId}", a.handleSetListing)
	rt.HandleFunc("GET "+v3+"/publicRooms", authForRemote(requireAuth, httpapi.Handle(a.handlePublicRooms)))
	h("POST "+v3+"/publicRooms", a.handlePublicRooms)
	h("POST "+v3+"/rooms/{roomId}/upgrade", a.handleUpgrade)
}

func caller(r *http.Request) accounts.Session { return accounts.Caller(r.Context()) }

// reply writes v as the answer, unless err is to be answered instead.
func reply(w http.ResponseWriter, v any, err error) error {
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, v)
	return nil
}

// roomID reads and checks the {roomId} path parameter.
func roomID(r *http.Request) (string, error) {
	id := r.PathValue("roomId")
	if !rooms.ValidRoomID(id) {
		return "", httpapi.InvalidParam("invalid room ID %q", id)
	}
	return id, nil
}

// roomAndEvent reads and checks the {roomId} and {eventId} path parameters.
func roomAndEvent(r *http.Request) (string, string, error) {
	room, err := roomID(r)
	if err != nil {
		return "", "", err
	}
	id := r.PathValue("eventId")
	if !rooms.ValidEventID(id) {
		return "", "", httpapi.InvalidParam("invalid event ID %q", id)
	}
	return room, id, nil
}

// keyPart checks a path parameter that becomes part of a table key: an
// event type or a state key (over 255 bytes is M_TOO_LARGE, as the spec
// bounds them in events), or a transaction ID (M_INVALID_PARAM). Checked
// before anything is read.
func keyPart(r *http.Request, name string) (string, error) {
	v := r.PathValue(name)
	if !rooms.ValidKeyPart(v) {
		return "", httpapi.InvalidParam("%s must be valid UTF-8 without NUL", name)
	}
	if len(v) > rooms.MaxKeyPart {
		if name == "txnId" {
			return "", httpapi.InvalidParam("%s is %d bytes, over the limit of %d", name, len(v), rooms.MaxKeyPart)
		}
		return "", httpapi.TooLarge("%s is %d bytes, over the limit of %d", name, len(v), rooms.MaxKeyPart)
	}
	return v, nil
}

// optionalBody decodes a JSON body that may be absent.
func optionalBody(r *http.Request, v any) error {
	if r.ContentLength == 0 {
		return nil
	}
	return httpapi.DecodeJSON(r, v)
}

// intParam reads an optional non-negative integer query parameter.
func intParam(r *http.Request, name string, def int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, httpapi.InvalidParam("%s must be a non-negative integer", name)
	}
	return n, nil
}

func filterParam(r *http.Request) (*events.RoomEventFilter, error) {
	raw := r.URL.Query().Get("filter")
	if raw == "" {
		return nil, nil
	}
	f, err := events.ParseRoomEventFilter(raw)
	if err != nil {
		return nil, httpapi.InvalidParam("%v", err)
	}
	return f, nil
}

// content reads an event's content from the body: a JSON object, which
// cannot be larger than the event that carries it.
func content(r *http.Request) (json.RawMessage, error) {
	var raw json.RawMessage
	if err := httpapi.DecodeJSON(r, &raw); err != nil {
		return nil, err
	}
	if len(raw) == 0 || raw[0] != '{' {
		return nil, httpapi.BadJSON("event content must be a JSON object")
	}
	if len(raw) > events.MaxPDUBytes {
		return nil, httpapi.TooLarge("content is %d bytes; an event is at most %d", len(raw), events.MaxPDUBytes)
	}
	return raw, nil
}
