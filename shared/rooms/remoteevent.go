package rooms

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"log/slog"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/protocol"
)

// RemoteReads holds what the client endpoints ask of other servers through
// federation (shared/federation fills it in); a nil field never asks, and
// the endpoint answers from what this server holds.
type RemoteReads struct {
	// PublicRooms lists another server's published rooms (GET or POST
	// /_matrix/federation/v1/publicRooms): its answer as given, a JSON
	// object. An error means the server could not be asked or refused.
	PublicRooms func(ctx context.Context, server string, q DirectoryQuery) (json.RawMessage, error)
	// Event fetches one event of roomID, of room version version, from
	// the servers in the room (GET /_matrix/federation/v1/event/{eventId}),
	// its format, hashes and signatures checked and its ID the one asked
	// for. An error means no server gave it.
	Event func(ctx context.Context, roomID, version, eventID string) (events.PDU, error)
	// Logger logs what the fetches find; nil is slog.Default().
	Logger *slog.Logger
}

func (r RemoteReads) log() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return slog.Default()
}

// PublicRoomsOf lists the published rooms of another server, for GET and
// POST /publicRooms?server= (RemoteReads.PublicRooms): its answer as given.
// A server name the grammar refuses is ErrInvalid; a server that cannot be
// asked, or refuses, is a *Refusal of kind ErrRemote.
func (s *Service) PublicRoomsOf(ctx context.Context, server string, q DirectoryQuery) (json.RawMessage, error) {
	if !protocol.ValidServerName(server) {
		return nil, refuse(ErrInvalid, "%q is not a server name", server)
	}
	if s.RemoteReads.PublicRooms == nil {
		return nil, refuse(ErrNeedsFederation, "listing the rooms of %s needs federation, which this server does not do", server)
	}
	out, err := s.RemoteReads.PublicRooms(ctx, server, q)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		s.RemoteReads.log().Info("public rooms of another server failed", "server", server, "err", err)
		return nil, &Refusal{Kind: ErrRemote, Msg: "failed to fetch the room list from " + server, Cause: err}
	}
	return out, nil
}

// maxFetchRounds bounds the backfill requests one fetch of a missing event
// makes: the event is at most about maxFetchRounds*MaxFederationEvents
// events older than what this server holds, else it stays unknown.
const maxFetchRounds = 3

// VisibleEventFetching is VisibleEvent for an event this server may not
// hold: one of a room a remote join took in, older than the join (the
// server-server API's "Retrieving events"). When the user is joined to the
// room and the event is not held, it is fetched from the servers in the
// room (RemoteReads.Event) and, when it is older than what the server holds,
// the history down to it is backfilled (as /messages does), so that it is
// stored with a position and history visibility applies to it as to any
// event; one no older than that (missed: a transaction not yet worked
// through, a fork) is received as the inbound worker would, when its
// prev_events are held. An event that cannot be fetched or placed is 404
// as before.
//
// Cost: nothing more when the event is held and visible. Otherwise a
// GetItem of its pointer, the room's info, the federation request, the
// room's lowest slot (a Query) and, for the depth the backfill reaches,
// a GetItem of the user's join event; then one /backfill and
// TakeBackfilled per round, and VisibleEvent again.
func (s *Service) VisibleEventFetching(ctx context.Context, userID, roomID, eventID string) (json.RawMessage, error) {
	out, err := s.VisibleEvent(ctx, userID, roomID, eventID)
	if !isNotFound(err) {
		return out, err
	}
	if ok, ferr := s.fetchMissing(ctx, userID, roomID, eventID); ferr != nil || !ok {
		return nil, cmp.Or(ferr, err)
	}
	return s.VisibleEvent(ctx, userID, roomID, eventID)
}

// ContextOfFetching is ContextOf for an event this server may not hold,
// fetched as VisibleEventFetching does; the events around it are those
// the backfill brought in.
func (s *Service) ContextOfFetching(ctx context.Context, userID, roomID, eventID string, limit int, filter *events.RoomEventFilter) (Context, error) {
	out, err := s.ContextOf(ctx, userID, roomID, eventID, limit, filter)
	if !isNotFound(err) {
		return out, err
	}
	if ok, ferr := s.fetchMissing(ctx, userID, roomID, eventID); ferr != nil || !ok {
		return Context{}, cmp.Or(ferr, err)
	}
	return s.ContextOf(ctx, userID, roomID, eventID, limit, filter)
}

func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// fetchMissing brings eventID of roomID in from the other servers in the
// room, for userID joined to it; it reports whether the event is held now.
// A failure of the other servers is logged and reported as false.
func (s *Service) fetchMissing(ctx context.Context, userID, roomID, eventID string) (bool, error) {
	if s.RemoteReads.Event == nil || s.Backfiller == nil {
		return false, nil
	}
	v, err := s.viewerOf(ctx, userID, roomID)
	if errors.Is(err, ErrForbidden) || (err == nil && !v.joined()) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	held, err := s.pointers(ctx, []string{eventID})
	if err != nil || len(held) > 0 {
		// Held and not visible to the user, or held outside the timeline:
		// nothing to fetch.
		return false, err
	}
	info, err := s.Info(ctx, roomID)
	if err != nil {
		return false, err
	}
	ev, err := s.RemoteReads.Event(ctx, roomID, info.Version, eventID)
	if err != nil {
		s.RemoteReads.log().Info("fetching an event failed", "room", roomID, "event", eventID, "err", err)
		return false, nil
	}
	limit, err := s.depthBelow(ctx, roomID, v, ev)
	if err != nil {
		return false, err
	}
	if limit <= 0 {
		return s.receiveFetched(ctx, roomID, ev)
	}
	for range maxFetchRounds {
		more, err := s.backfillBefore(ctx, roomID, v, min(limit, MaxFederationEvents))
		if err != nil {
			return false, err
		}
		held, err := s.pointers(ctx, []string{eventID})
		if err != nil {
			return false, err
		}
		if p, ok := held[eventID]; ok {
			return p.Seq != 0, nil
		}
		if !more {
			break
		}
		limit -= MaxFederationEvents
		limit = max(limit, MaxFederationEvents/10)
	}
	s.RemoteReads.log().Info("fetched event not reached by backfill", "room", roomID, "event", eventID, "depth", ev.Depth())
	return false, nil
}

// receiveFetched takes in ev, an event no older than the history held
// that this server missed (a transaction not yet worked through, a fork
// it never heard of), as the inbound worker does: through Receive, when
// its prev_events are held; it reports whether ev is in the timeline then.
func (s *Service) receiveFetched(ctx context.Context, roomID string, ev events.PDU) (bool, error) {
	out, err := s.Receive(ctx, ev)
	var missing *MissingEventsError
	if errors.As(err, &missing) || errors.Is(err, ErrBadEvent) {
		s.RemoteReads.log().Info("fetched event not taken in", "room", roomID, "event", ev.EventID(), "err", err)
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return out.Status == Accepted, nil
}

// depthBelow is how many events the backfill is to fetch to reach ev: the
// depth between ev and where the history held begins (the lowest event
// backfilled, or the user's join in a room nothing was backfilled of yet),
// plus one; 0 or less when ev is not below it.
func (s *Service) depthBelow(ctx context.Context, roomID string, v *viewer, ev events.PDU) (int, error) {
	low, err := s.lowestSlot(ctx, roomID)
	if err != nil {
		return 0, err
	}
	if low.Seq <= 1 {
		return 0, nil // a room created here holds its whole history
	}
	top := low.PDU.Depth()
	if low.Seq >= joinBase {
		join, err := s.Event(ctx, roomID, v.membership.EventID)
		if err != nil {
			return 0, err
		}
		top = join.PDU.Depth()
	}
	return int(top - ev.Depth() + 1), nil
}
