package rooms

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Joining a room this server does not hold (server-server API, "Joining
// Rooms"): the federation side (make_join, send_join, the checks of the
// answer) is Service.RemoteJoin's; this file picks the servers to ask and
// takes the checked room in.
//
// The room is taken in as a timeline: the state before the join, the
// create event first and the rest by depth, then the join, appended at
// positions joinBase to joinBase+n as a new room's first events are
// (commitFrom; the positions below are its history's, backfill.go), so that
// current state, snapshots and the blocks come out as for any room, the
// room's forward extremity is the join, and every state event can be
// fetched by its ID (a later event's prev_events and auth_events). The
// snapshots before the join are that order's prefixes, not the state the
// room had at those events: a received event that forks from before the
// join resolves against them. Auth chain events that are not state are
// not kept (an event that names one as an auth event is missing it).

// joinBase is the position of a room taken in through a remote join:
// 10^11, within the 12 digits of slot keys, leaving 10^11 - 1 positions
// below for the history backfilled before it.
const joinBase = 100_000_000_000

// RemoteJoiner joins userID to roomID, which this server does not hold,
// through one of servers, the first that answers, and takes the room in
// (TakeJoined).
type RemoteJoiner func(ctx context.Context, userID, roomID string, servers []string, reason string) error

// viaKey carries the client's via and server_name candidates to Join.
type viaKey struct{}

// withVia is ctx with the servers a join request names.
func withVia(ctx context.Context, q url.Values) context.Context {
	var via []string
	for _, k := range []string{"via", "server_name"} {
		via = append(via, q[k]...)
	}
	if len(via) == 0 {
		return ctx
	}
	return context.WithValue(ctx, viaKey{}, via)
}

// joinTarget reads the room a join or knock names, with the servers the
// request gives as candidates in the context. Another server's alias is
// resolved through it (RemoteAlias), its servers added to the candidates.
func (s *Service) joinTarget(r *http.Request, name string) (string, context.Context, error) {
	ctx := withVia(r.Context(), r.URL.Query())
	v := r.PathValue(name)
	_, server, _ := strings.Cut(v, ":")
	if !strings.HasPrefix(v, "#") || server == s.Signer.ServerName || s.RemoteAlias == nil {
		id, err := s.resolve(r, name)
		return id, ctx, err
	}
	if err := ValidAlias(v); err != nil {
		return "", nil, httpapi.InvalidParam("invalid room alias %q", v)
	}
	id, servers, err := s.RemoteAlias(ctx, v)
	if err != nil {
		return "", nil, err
	}
	via, _ := ctx.Value(viaKey{}).([]string)
	return id, context.WithValue(ctx, viaKey{}, append(slices.Clone(via), append(servers, server)...)), nil
}

// joinCandidates are the servers to ask for a join of roomID: those the
// client named, the server of the inviter when userID holds a remote
// invite, and the room ID's server (rooms before version 12), in that
// order, once each, never this server.
func (s *Service) joinCandidates(ctx context.Context, userID, roomID string) []string {
	via, _ := ctx.Value(viaKey{}).([]string)
	var inv remoteInvite
	if err := s.Store.Get(ctx, store.Key{PK: userPK(userID), SK: membershipPrefix + roomID}, &inv); err == nil && inv.Membership == "invite" && inv.PDU != "" {
		if ev, err := events.Parse(inv.Version, inv.EventID, []byte(inv.PDU)); err == nil {
			via = append(via, senderServer(ev))
		}
	}
	if _, server, ok := strings.Cut(roomID, ":"); ok {
		via = append(via, server)
	}
	var out []string
	seen := map[string]bool{s.Signer.ServerName: true}
	for _, v := range via {
		if v != "" && !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// joinRemote joins a room this server does not hold, through RemoteJoin:
// 404 when no server is known to ask.
func (s *Service) joinRemote(ctx context.Context, userID, roomID, reason string) error {
	servers := s.joinCandidates(ctx, userID, roomID)
	if len(servers) == 0 {
		return refuse(ErrNotFound, "room %s is not known to this server and no server to join it through was given (via)", roomID)
	}
	return s.RemoteJoin(ctx, userID, roomID, servers, reason)
}

// TakeJoined takes in roomID, which this server does not hold, after a
// local user's join through another server: state is the state before
// join as send_join answered it, checked (events.CheckSendJoin). The
// state and the join are appended as the room's first events; the local
// users concerned are told as for any append. A room held already (two
// local users joining it at once) is ErrExists: the caller then sends the
// join into the room as it stands.
func (s *Service) TakeJoined(ctx context.Context, join events.PDU, state []events.PDU) error {
	roomID := events.RoomID(join)
	evs, err := joinedTimeline(join, state)
	if err != nil {
		return err
	}
	// The room runs to several batches: the later ones write the locals
	// item they carry, so it needs its key.
	loc := &locals{PK: roomPK(roomID), SK: localsSK, Users: map[string]string{}}
	_, finish, err := s.commitFrom(ctx, roomID, joinBase-1, nil, evs, map[events.StateKeyTuple]events.PDU{}, nil, loc)
	if errors.Is(err, errMoved) {
		return fmt.Errorf("take in %s: %w", roomID, store.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("take in %s: %w", roomID, err)
	}
	return finish(ctx)
}

// joinedTimeline orders the state before a join and the join: the create
// event, the rest by depth (then ID, so that every server holding the
// same state orders it alike), the join last.
func joinedTimeline(join events.PDU, state []events.PDU) ([]events.PDU, error) {
	roomID := events.RoomID(join)
	var create events.PDU
	rest := make([]events.PDU, 0, len(state))
	for _, ev := range state {
		switch {
		case events.RoomID(ev) != roomID || ev.StateKey() == nil:
			return nil, fmt.Errorf("take in %s: state event %s is not a state event of the room", roomID, ev.EventID())
		case ev.EventID() == join.EventID():
		case ev.Type() == events.Create && *ev.StateKey() == "":
			create = ev
		default:
			rest = append(rest, ev)
		}
	}
	if create == nil {
		return nil, fmt.Errorf("take in %s: the state lacks the create event", roomID)
	}
	sort.SliceStable(rest, func(i, j int) bool {
		if rest[i].Depth() != rest[j].Depth() {
			return rest[i].Depth() < rest[j].Depth()
		}
		return rest[i].EventID() < rest[j].EventID()
	})
	out := append([]events.PDU{create}, rest...)
	return append(out, join), nil
}

// JoinContent is the content of userID's join event: their profile, and
// the reason given.
func (s *Service) JoinContent(ctx context.Context, userID, reason string) map[string]any {
	return s.memberContent(ctx, userID, "join", reason, false)
}

// Refuse is a refusal of the room engine's kind (ErrForbidden,
// ErrNotFound ...), for the federation side of a remote join, whose
// errors reach the client through the rooms handlers.
func Refuse(kind error, format string, args ...any) error { return refuse(kind, format, args...) }
