package spaces

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

// Register adds the hierarchy and room summary endpoints to rt. The
// hierarchy is behind requireAuth (accounts.Service.RequireAuth); the room
// summary takes an access token when one is given and serves anonymous
// callers too, as the spec allows and Synapse does.
func (s *Service) Register(rt *httpapi.Router, requireAuth func(http.HandlerFunc) http.HandlerFunc) {
	rt.HandleFunc("GET /_matrix/client/v1/rooms/{roomId}/hierarchy", requireAuth(httpapi.Handle(s.handleHierarchy)))
	summary := optionalAuth(requireAuth, httpapi.Handle(s.handleSummary))
	rt.HandleFunc("GET /_matrix/client/v1/room_summary/{roomIdOrAlias}", summary)
	// MSC3266's unstable paths, which Synapse still serves.
	rt.HandleFunc("GET /_matrix/client/unstable/im.nheko.summary/summary/{roomIdOrAlias}", summary)
	rt.HandleFunc("GET /_matrix/client/unstable/im.nheko.summary/rooms/{roomIdOrAlias}/summary", summary)
}

// optionalAuth authenticates a request that carries an access token, and
// passes one without on as anonymous.
func optionalAuth(requireAuth func(http.HandlerFunc) http.HandlerFunc, next http.HandlerFunc) http.HandlerFunc {
	authed := requireAuth(next)
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" || r.URL.Query().Has("access_token") {
			authed(w, r)
			return
		}
		next(w, r)
	}
}

// handleHierarchy serves GET /_matrix/client/v1/rooms/{roomId}/hierarchy.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1roomsroomidhierarchy
func (s *Service) handleHierarchy(w http.ResponseWriter, r *http.Request) error {
	q, err := parseHierarchy(r)
	if err != nil {
		return err
	}
	page, err := s.hierarchy(r.Context(), accounts.Caller(r.Context()).UserID, q)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, page)
	return nil
}

func parseHierarchy(r *http.Request) (hierarchyQuery, error) {
	q := hierarchyQuery{root: r.PathValue("roomId"), maxDepth: -1, limit: maxLimit}
	if !rooms.ValidRoomID(q.root) {
		return q, httpapi.InvalidParam("invalid room ID %q", q.root)
	}
	args := r.URL.Query()
	switch v := args.Get("suggested_only"); v {
	case "", "false":
	case "true":
		q.suggested = true
	default:
		return q, httpapi.InvalidParam("suggested_only must be true or false")
	}
	if v := args.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return q, httpapi.InvalidParam("limit must be an integer greater than zero")
		}
		q.limit = min(n, maxLimit)
	}
	if v := args.Get("max_depth"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return q, httpapi.InvalidParam("max_depth must be a non-negative integer")
		}
		q.maxDepth = n
	}
	q.from = args.Get("from")
	return q, nil
}

// summaryReply is the answer of the room summary endpoint.
type summaryReply struct {
	room
	// Membership is the caller's, "leave" when they have none (as Synapse
	// answers); absent for an anonymous caller.
	Membership string `json:"membership,omitempty"`
}

// handleSummary serves GET /_matrix/client/v1/room_summary/{roomIdOrAlias}
// and its unstable forms. A room this server does not hold is described as
// the via servers answer (their federation hierarchy of it), else 404.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1room_summaryroomidoralias
func (s *Service) handleSummary(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	roomID, err := s.resolve(ctx, r.PathValue("roomIdOrAlias"))
	if err != nil {
		return err
	}
	out, err := s.summarize(ctx, accounts.Caller(ctx).UserID, roomID, r.URL.Query()["via"])
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

// resolve reads a room ID or alias from the path; an alias goes through the
// room directory.
func (s *Service) resolve(ctx context.Context, target string) (string, error) {
	switch {
	case strings.HasPrefix(target, "!"):
		if !rooms.ValidRoomID(target) {
			return "", httpapi.InvalidParam("invalid room ID %q", target)
		}
		return target, nil
	case strings.HasPrefix(target, "#"):
		id, err := s.Rooms.ResolveAlias(ctx, target)
		if errors.Is(err, rooms.ErrUnknownAlias) {
			return "", httpapi.NotFound("room alias %s is not known to this server", target)
		}
		return id, err
	}
	return "", httpapi.InvalidParam("%q is neither a room ID nor a room alias", target)
}

// summarize describes roomID to userID ("" for an anonymous caller): 404 when
// neither this server nor those of via describe the room, or the caller
// may not see it, the one error the spec names, so that the answer does
// not tell the two apart.
func (s *Service) summarize(ctx context.Context, userID, roomID string, via []string) (summaryReply, error) {
	notFound := httpapi.NotFound("room %s is not known to this server, or you may not see it", roomID)
	sum, err := s.Rooms.Summary(ctx, roomID)
	var remote *room
	if errors.Is(err, rooms.ErrUnknownRoom) {
		r, ok := s.remoteRoom(ctx, newRemotes(), step{room: roomID, via: via}, true, false)
		if !ok {
			return summaryReply{}, notFound
		}
		remote, sum, err = &r.room, summaryOf(r.room), nil
	}
	if err != nil {
		return summaryReply{}, err
	}
	v := newViewer(userID, nil)
	if userID != "" {
		ms, err := s.Rooms.MembershipsIn(ctx, userID, append([]string{roomID}, sum.Allow...))
		if err != nil {
			return summaryReply{}, err
		}
		v = newViewer(userID, ms)
	}
	if !v.sees(sum) {
		return summaryReply{}, notFound
	}
	out := summaryReply{room: describe(sum)}
	if remote != nil {
		out.room = *remote
	}
	if userID != "" {
		out.Membership = v.memberships[roomID]
		if out.Membership == "" {
			out.Membership = "leave"
		}
	}
	return out, nil
}
