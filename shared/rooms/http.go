package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
)

// Routes adds the room endpoints to rt, each behind requireAuth; isAdmin
// tells whether the caller is a server admin.
func (s *Service) Routes(rt *httpapi.Router, requireAuth func(http.HandlerFunc) http.HandlerFunc, isAdmin func(*http.Request) (bool, error)) {
	h := func(pattern string, f func(http.ResponseWriter, *http.Request) error) {
		rt.HandleFunc(pattern, requireAuth(httpapi.Handle(f)))
	}
	const v3 = "/_matrix/client/v3"
	h("POST "+v3+"/createRoom", s.handleCreate)
	h("POST "+v3+"/join/{roomIdOrAlias}", s.enter(s.Join))
	h("POST "+v3+"/rooms/{roomId}/join", s.enter(s.Join))
	h("POST "+v3+"/knock/{roomIdOrAlias}", s.enter(s.Knock))
	h("POST "+v3+"/rooms/{roomId}/invite", s.target(s.inviteTarget))
	h("POST "+v3+"/rooms/{roomId}/kick", s.target(s.Kick))
	h("POST "+v3+"/rooms/{roomId}/ban", s.target(s.Ban))
	h("POST "+v3+"/rooms/{roomId}/unban", s.target(s.Unban))
	h("POST "+v3+"/rooms/{roomId}/leave", s.self(s.Leave))
	h("POST "+v3+"/rooms/{roomId}/forget", s.handleForget)
	h("PUT "+v3+"/rooms/{roomId}/send/{eventType}/{txnId}", s.sendEvent(false))
	h("PUT "+v3+"/rooms/{roomId}/state/{eventType}", s.sendEvent(true))
	h("PUT "+v3+"/rooms/{roomId}/state/{eventType}/{stateKey...}", s.sendEvent(true))
	h("PUT "+v3+"/rooms/{roomId}/redact/{eventId}/{txnId}", s.handleRedact)
	h("GET "+v3+"/rooms/{roomId}/messages", s.handleMessages)
	h("GET "+v3+"/rooms/{roomId}/context/{eventId}", s.handleContext)
	h("GET "+v3+"/rooms/{roomId}/event/{eventId}", s.handleEvent)
	h("GET "+v3+"/rooms/{roomId}/state", s.handleState)
	h("GET "+v3+"/rooms/{roomId}/state/{eventType}", s.handleStateEvent)
	h("GET "+v3+"/rooms/{roomId}/state/{eventType}/{stateKey...}", s.handleStateEvent)
	h("GET "+v3+"/rooms/{roomId}/members", s.handleMembers)
	h("GET "+v3+"/rooms/{roomId}/joined_members", s.handleJoinedMembers)
	h("GET "+v3+"/joined_rooms", s.handleJoinedRooms)
	h("GET "+v3+"/rooms/{roomId}/aliases", s.handleAliases)
	rv1 := "/_matrix/client/v1/rooms/{roomId}/relations/{eventId}"
	h("GET "+rv1, s.handleRelations)
	h("GET "+rv1+"/{relType}", s.handleRelations)
	h("GET "+rv1+"/{relType}/{eventType}", s.handleRelations)
	h("GET /_matrix/client/v1/rooms/{roomId}/threads", s.handleThreads)
	h("PUT "+v3+"/directory/room/{roomAlias}", s.handleSetAlias)
	rt.HandleFunc("GET "+v3+"/directory/room/{roomAlias}", httpapi.Handle(s.handleGetAlias))
	h("DELETE "+v3+"/directory/room/{roomAlias}", func(w http.ResponseWriter, r *http.Request) error {
		admin, err := isAdmin(r)
		if err != nil {
			return err
		}
		return s.handleDeleteAlias(w, r, admin)
	})
	rt.HandleFunc("GET "+v3+"/directory/list/room/{roomId}", httpapi.Handle(s.handleGetListing))
	h("PUT "+v3+"/directory/list/room/{roomId}", s.handleSetListing)
	rt.HandleFunc("GET "+v3+"/publicRooms", httpapi.Handle(s.handlePublicRooms))
	h("POST "+v3+"/publicRooms", s.handlePublicRooms)
	h("POST "+v3+"/rooms/{roomId}/upgrade", s.handleUpgrade)
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
	if !ValidRoomID(id) {
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
	if !ValidEventID(id) {
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
	if !ValidKeyPart(v) {
		return "", httpapi.InvalidParam("%s must be valid UTF-8 without NUL", name)
	}
	if len(v) > MaxKeyPart {
		if name == "txnId" {
			return "", httpapi.InvalidParam("%s is %d bytes, over the limit of %d", name, len(v), MaxKeyPart)
		}
		return "", httpapi.TooLarge("%s is %d bytes, over the limit of %d", name, len(v), MaxKeyPart)
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

func (s *Service) handleCreate(w http.ResponseWriter, r *http.Request) error {
	var req CreateRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	id, err := s.CreateRoom(r.Context(), caller(r).UserID, req)
	if errors.Is(err, ErrAliasInUse) {
		// createRoom's answer to a taken room_alias_name is a 400.
		return httpapi.Errorf(http.StatusBadRequest, "M_ROOM_IN_USE", "%s", err.Error())
	}
	if err != nil {
		return s.sendError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"room_id": id})
	return nil
}

// resolve turns a room ID or alias from the path into a room ID.
func (s *Service) resolve(r *http.Request, name string) (string, error) {
	v := r.PathValue(name)
	if v == "" {
		return "", httpapi.MissingParam("missing room")
	}
	if v[0] == '#' {
		id, err := s.ResolveAlias(r.Context(), v)
		if errors.Is(err, ErrUnknownAlias) {
			return "", httpapi.NotFound("room alias %s not found", v)
		}
		return id, err
	}
	if !ValidRoomID(v) {
		return "", httpapi.InvalidParam("invalid room ID or alias %q", v)
	}
	return v, nil
}

type reasonBody struct {
	Reason string `json:"reason"`
	UserID string `json:"user_id"`
}

// enter serves join and knock: the room by ID or alias, an optional reason.
func (s *Service) enter(act func(ctx context.Context, userID, roomID, reason string) error) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		name := "roomIdOrAlias"
		if r.PathValue("roomId") != "" {
			name = "roomId"
		}
		id, ctx, err := s.joinTarget(r, name)
		if err != nil {
			return err
		}
		var body reasonBody
		if err := optionalBody(r, &body); err != nil {
			return err
		}
		err = act(ctx, caller(r).UserID, id, body.Reason)
		return reply(w, map[string]string{"room_id": id}, err)
	}
}

// inviteTarget adapts Invite to the shape of the other targeted actions.
func (s *Service) inviteTarget(ctx context.Context, sender, roomID, target, reason string) error {
	return s.Invite(ctx, sender, roomID, target, reason, false)
}

// target serves the endpoints that act on another user: invite, kick, ban,
// unban.
func (s *Service) target(act func(ctx context.Context, sender, roomID, target, reason string) error) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		id, err := roomID(r)
		if err != nil {
			return err
		}
		var body reasonBody
		if err := httpapi.DecodeJSON(r, &body); err != nil {
			return err
		}
		if body.UserID == "" {
			return httpapi.MissingParam("user_id is required")
		}
		return reply(w, struct{}{}, act(r.Context(), caller(r).UserID, id, body.UserID, body.Reason))
	}
}

func (s *Service) self(act func(ctx context.Context, userID, roomID, reason string) error) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		id, err := roomID(r)
		if err != nil {
			return err
		}
		var body reasonBody
		if err := optionalBody(r, &body); err != nil {
			return err
		}
		return reply(w, struct{}{}, act(r.Context(), caller(r).UserID, id, body.Reason))
	}
}

func (s *Service) handleForget(w http.ResponseWriter, r *http.Request) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	return reply(w, struct{}{}, s.Forget(r.Context(), caller(r).UserID, id))
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

// sendEvent serves PUT send/{eventType}/{txnId} and, with state set,
// PUT state/{eventType}/{stateKey}.
func (s *Service) sendEvent(state bool) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		id, err := roomID(r)
		if err != nil {
			return err
		}
		evType, err := keyPart(r, "eventType")
		if err != nil {
			return err
		}
		who := Sent{Sender: caller(r).UserID, Device: caller(r).DeviceID}
		var key *string
		if state {
			k, err := keyPart(r, "stateKey")
			if err != nil {
				return err
			}
			key = &k
		} else if who.TxnID, err = keyPart(r, "txnId"); err != nil {
			return err
		}
		c, err := content(r)
		if err != nil {
			return err
		}
		evID, err := s.Send(r.Context(), who, id, evType, key, c)
		return reply(w, map[string]string{"event_id": evID}, err)
	}
}

func (s *Service) handleRedact(w http.ResponseWriter, r *http.Request) error {
	id, target, err := roomAndEvent(r)
	if err != nil {
		return err
	}
	txnID, err := keyPart(r, "txnId")
	if err != nil {
		return err
	}
	var body reasonBody
	if err := optionalBody(r, &body); err != nil {
		return err
	}
	who := Sent{Sender: caller(r).UserID, Device: caller(r).DeviceID, TxnID: txnID}
	evID, err := s.Redact(r.Context(), who, id, target, body.Reason)
	return reply(w, map[string]string{"event_id": evID}, err)
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

// handleMessages serves GET /_matrix/client/v3/rooms/{roomId}/messages. A
// missing dir is "b", Synapse's default, though the spec marks it required:
// clients that leave it out get what Synapse gives them, and a caller who
// may not see the room gets 403 whatever the query says.
func (s *Service) handleMessages(w http.ResponseWriter, r *http.Request) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	q := MessagesQuery{From: r.URL.Query().Get("from"), To: r.URL.Query().Get("to")}
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
	page, err := s.Messages(r.Context(), caller(r).UserID, id, q)
	return reply(w, page, err)
}

func (s *Service) handleContext(w http.ResponseWriter, r *http.Request) error {
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
	c, err := s.ContextOf(r.Context(), caller(r).UserID, id, evID, limit, f)
	return reply(w, c, err)
}

func (s *Service) handleEvent(w http.ResponseWriter, r *http.Request) error {
	id, evID, err := roomAndEvent(r)
	if err != nil {
		return err
	}
	ev, err := s.VisibleEvent(r.Context(), caller(r).UserID, id, evID)
	return reply(w, ev, err)
}

// visibleState is the state of the {roomId} the caller may see.
func (s *Service) visibleState(r *http.Request) ([]events.PDU, error) {
	id, err := roomID(r)
	if err != nil {
		return nil, err
	}
	return s.VisibleState(r.Context(), caller(r).UserID, id)
}

func (s *Service) handleState(w http.ResponseWriter, r *http.Request) error {
	state, err := s.visibleState(r)
	if err != nil {
		return err
	}
	out, err := s.renderPDUs(r.Context(), state)
	return reply(w, out, err)
}

func (s *Service) handleStateEvent(w http.ResponseWriter, r *http.Request) error {
	typ, err := keyPart(r, "eventType")
	if err != nil {
		return err
	}
	key, err := keyPart(r, "stateKey")
	if err != nil {
		return err
	}
	state, err := s.visibleState(r)
	if err != nil {
		return err
	}
	for _, ev := range state {
		if ev.Type() == typ && *ev.StateKey() == key {
			if r.URL.Query().Get("format") == "event" {
				out, err := s.renderPDUs(r.Context(), []events.PDU{ev})
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

func (s *Service) handleMembers(w http.ResponseWriter, r *http.Request) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	mq := MembersQuery{At: q.Get("at"), Membership: q.Get("membership"), NotMembership: q.Get("not_membership")}
	for _, m := range []string{mq.Membership, mq.NotMembership} {
		switch m {
		case "", "join", "invite", "knock", "leave", "ban":
		default:
			return httpapi.InvalidParam("unknown membership %q", m)
		}
	}
	chunk, err := s.MemberEvents(r.Context(), caller(r).UserID, id, mq)
	if err != nil {
		return err
	}
	if chunk == nil {
		chunk = []json.RawMessage{}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"chunk": chunk})
	return nil
}

func (s *Service) handleJoinedMembers(w http.ResponseWriter, r *http.Request) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	joined, err := s.JoinedMembers(r.Context(), caller(r).UserID, id)
	return reply(w, map[string]any{"joined": joined}, err)
}

func (s *Service) handleJoinedRooms(w http.ResponseWriter, r *http.Request) error {
	ids, err := s.JoinedRooms(r.Context(), caller(r).UserID)
	if err != nil {
		return err
	}
	if ids == nil {
		ids = []string{}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"joined_rooms": ids})
	return nil
}

func (s *Service) handleAliases(w http.ResponseWriter, r *http.Request) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	if _, err := s.viewerOf(r.Context(), caller(r).UserID, id); err != nil {
		return err
	}
	aliases, err := s.Aliases(r.Context(), id)
	return reply(w, map[string]any{"aliases": aliases}, err)
}

func (s *Service) handleRelations(w http.ResponseWriter, r *http.Request) error {
	id, evID, err := roomAndEvent(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	rq := RelationsQuery{RelType: r.PathValue("relType"), EventType: r.PathValue("eventType"), From: q.Get("from"), To: q.Get("to"), Backward: q.Get("dir") != "f"}
	if d := q.Get("dir"); d != "" && d != "b" && d != "f" {
		return httpapi.InvalidParam(`dir must be "b" or "f"`)
	}
	if rq.Limit, err = intParam(r, "limit", 50); err != nil {
		return err
	}
	out, err := s.RelationsOf(r.Context(), caller(r).UserID, id, evID, rq)
	if err != nil {
		return err
	}
	if out.Chunk == nil {
		out.Chunk = []json.RawMessage{}
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (s *Service) handleSetAlias(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		RoomID string `json:"room_id"`
	}
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return err
	}
	return reply(w, struct{}{}, s.SetAlias(r.Context(), caller(r).UserID, r.PathValue("roomAlias"), body.RoomID))
}

func (s *Service) handleGetAlias(w http.ResponseWriter, r *http.Request) error {
	alias := r.PathValue("roomAlias")
	id, err := s.ResolveAlias(r.Context(), alias)
	if errors.Is(err, ErrUnknownAlias) {
		return httpapi.NotFound("room alias %s not found", alias)
	}
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"room_id": id, "servers": []string{s.Signer.ServerName}})
	return nil
}

func (s *Service) handleDeleteAlias(w http.ResponseWriter, r *http.Request, admin bool) error {
	return reply(w, struct{}{}, s.RemoveAlias(r.Context(), caller(r).UserID, admin, r.PathValue("roomAlias")))
}

func (s *Service) handleGetListing(w http.ResponseWriter, r *http.Request) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	info, err := s.Info(r.Context(), id)
	if errors.Is(err, ErrUnknownRoom) {
		return httpapi.NotFound("room %s not found", id)
	}
	if err != nil {
		return err
	}
	vis := "private"
	if info.Public {
		vis = "public"
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"visibility": vis})
	return nil
}

func (s *Service) handleSetListing(w http.ResponseWriter, r *http.Request) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	var body struct {
		Visibility string `json:"visibility"`
	}
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return err
	}
	if body.Visibility == "" {
		body.Visibility = "public" // the spec's default
	}
	if body.Visibility != "public" && body.Visibility != "private" {
		return httpapi.InvalidParam(`visibility must be "public" or "private"`)
	}
	// An unknown room is 404, before the permission check refuses it.
	if _, err := s.Info(r.Context(), id); errors.Is(err, ErrUnknownRoom) {
		return httpapi.NotFound("room %s not found", id)
	} else if err != nil {
		return err
	}
	ok, err := s.canSendState(r.Context(), caller(r).UserID, id, events.CanonicalAlias)
	if err != nil {
		return err
	}
	if !ok {
		return httpapi.Forbidden("only room moderators can change whether the room is listed")
	}
	return reply(w, struct{}{}, s.SetPublished(r.Context(), id, body.Visibility == "public"))
}

func (s *Service) handlePublicRooms(w http.ResponseWriter, r *http.Request) error {
	q := DirectoryQuery{Since: r.URL.Query().Get("since")}
	var err error
	if q.Limit, err = intParam(r, "limit", 0); err != nil {
		return err
	}
	if server := r.URL.Query().Get("server"); server != "" && server != s.Signer.ServerName {
		return httpapi.Errorf(400, "M_UNRECOGNIZED", "listing rooms of %s needs federation, which this server does not support yet", server)
	}
	if r.Method == http.MethodPost {
		var body struct {
			Limit  int    `json:"limit"`
			Since  string `json:"since"`
			Filter struct {
				Term      string    `json:"generic_search_term"`
				RoomTypes []*string `json:"room_types"`
			} `json:"filter"`
		}
		if err := httpapi.DecodeJSON(r, &body); err != nil {
			return err
		}
		q = DirectoryQuery{Limit: body.Limit, Since: body.Since, Search: body.Filter.Term, RoomTypes: body.Filter.RoomTypes}
	}
	out, err := s.ListPublic(r.Context(), q)
	return reply(w, out, err)
}

var _ httpapi.Public = (*Refusal)(nil)
