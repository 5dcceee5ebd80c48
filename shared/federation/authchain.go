package federation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"golang.org/x/sync/errgroup"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

// Auth events a PDU, or the resolution of the fork it makes, needs and
// this server lacks ("Checks performed on receipt of a PDU": fetch the
// missing auth events): a server that bans a user while the user's server
// sends messages makes a fork whose resolution reads the auth chains of
// both sides, which a server that joined through another may not hold.

// AuthEngine is an Engine that names the auth events it lacks and stores
// those fetched; the worker fetches them when the Engine has it.
type AuthEngine interface {
	Engine
	// MissingAuthEvents returns the auth events err says are missing when
	// the prev events are all held, nil otherwise.
	MissingAuthEvents(err error) []string
	// StoreAuthEvents keeps fetched auth events of roomID (checked) for
	// the auth checks and resolutions that need them.
	StoreAuthEvents(ctx context.Context, roomID string, evs []events.PDU) error
}

// AuthRemote is a Remote that can also fetch an event's auth chain
// (/event_auth); fedclient's is one. Without it the worker fetches the
// missing events one by one (/event).
type AuthRemote interface {
	GetEventAuth(ctx context.Context, origin, s spec.ServerName, roomVersion gomatrixserverlib.RoomVersion, roomID, eventID string) (fclient.RespEventAuth, error)
}

// authRounds bounds how often one PDU's missing auth events are fetched:
// each round brings what the last one's named, a level of the chain when
// the origin has no /event_auth.
const authRounds = 4

var _ AuthEngine = RoomEngine{}

// receiveAuth gives ev to the engine and, while the engine lacks auth events
// of it or of the resolution it makes, fetches them from origin (within
// fctx) and gives it again; a fetch that brings nothing new ends it.
func (in *Inbox) receiveAuth(ctx, fctx context.Context, origin string, ev events.PDU) error {
	err := in.Engine.Receive(ctx, ev)
	ae, ok := in.Engine.(AuthEngine)
	if !ok || in.Remote == nil {
		return err
	}
	for round := 0; round < authRounds; round++ {
		ids := ae.MissingAuthEvents(err)
		if ids == nil {
			return err
		}
		got := in.fetchAuth(fctx, origin, ev, ids, round == 0)
		if !slices.ContainsFunc(got, func(x events.PDU) bool { return slices.Contains(ids, x.EventID()) }) {
			in.logger().LogAttrs(ctx, slog.LevelInfo, "missing auth events not fetched",
				slog.String("event_id", ev.EventID()), slog.String("origin", origin), slog.Any("missing", ids))
			return err
		}
		if serr := ae.StoreAuthEvents(ctx, events.RoomID(ev), got); serr != nil {
			return serr
		}
		err = in.Engine.Receive(ctx, ev)
	}
	return err
}

// fetchAuth asks origin for the events ids (at most MaxEventFetches of
// them) and their auth chains, and, first, for ev's auth chain: the
// events that check, of ev's room.
func (in *Inbox) fetchAuth(ctx context.Context, origin string, ev events.PDU, ids []string, first bool) []events.PDU {
	roomID, v := events.RoomID(ev), string(ev.Version())
	me, dest := spec.ServerName(in.ServerName), spec.ServerName(origin)
	ar, hasChain := in.Remote.(AuthRemote)
	var chainOf []string
	if hasChain && first {
		chainOf = append(chainOf, ev.EventID())
	}
	ids = ids[:min(len(ids), MaxEventFetches)]
	if hasChain {
		chainOf = append(chainOf, ids...)
	}
	raws := make([][]spec.RawJSON, len(ids)+len(chainOf))
	var g errgroup.Group
	g.SetLimit(fetchParallel)
	for i, id := range ids {
		g.Go(func() error {
			if txn, err := in.Remote.GetEvent(ctx, me, dest, id); err == nil {
				for _, raw := range txn.PDUs {
					raws[i] = append(raws[i], spec.RawJSON(raw))
				}
			}
			return nil // what cannot be had stays missing
		})
	}
	for j, id := range chainOf {
		g.Go(func() error {
			if res, err := ar.GetEventAuth(ctx, me, dest, gomatrixserverlib.RoomVersion(v), roomID, id); err == nil {
				raws[len(ids)+j] = res.AuthEvents
			}
			return nil
		})
	}
	g.Wait()
	var out []events.PDU
	seen := map[string]bool{}
	for _, r := range raws {
		for _, x := range in.verifyAll(ctx, v, roomID, r) {
			if !seen[x.EventID()] {
				seen[x.EventID()] = true
				out = append(out, x)
			}
		}
	}
	return out
}

// MissingAuthEvents reads a rooms.MissingEventsError that names auth
// events alone.
func (RoomEngine) MissingAuthEvents(err error) []string {
	var m *rooms.MissingEventsError
	if !errors.As(err, &m) || len(m.IDs) > 0 || len(m.AuthIDs) == 0 {
		return nil
	}
	return slices.Clone(m.AuthIDs)
}

// StoreAuthEvents gives fetched auth events to
// rooms.Service.StoreAuthEvents.
func (e RoomEngine) StoreAuthEvents(ctx context.Context, roomID string, evs []events.PDU) error {
	if err := e.Rooms.StoreAuthEvents(ctx, roomID, evs); err != nil {
		return fmt.Errorf("auth events: %w", err)
	}
	return nil
}

// eventAuthOf is the event id of roomID whose auth chain server may have:
// a server in the room, or one whose user the event removed from it (a
// kick or ban of the server's last user is sent to it, and checking it,
// or resolving the fork it makes, needs its auth chain, which the room's
// current state no longer lets the server ask for). The server ACL
// applies either way.
func (s *Service) eventAuthOf(ctx context.Context, roomID, server, id string) (rooms.Event, error) {
	inRoom := s.checkRoom(ctx, roomID, server)
	var refused *httpapi.Error
	if inRoom != nil && (!errors.As(inRoom, &refused) || refused.Status != http.StatusForbidden) {
		return rooms.Event{}, inRoom
	}
	ev, err := s.Rooms.Event(ctx, roomID, id)
	if inRoom != nil {
		if err != nil || !removes(ev.PDU, server) {
			return rooms.Event{}, inRoom
		}
		ok, err := s.ACLAllows(ctx, roomID, server)
		if err != nil {
			return rooms.Event{}, err
		}
		if !ok {
			return rooms.Event{}, inRoom
		}
		return ev, nil
	}
	if err != nil {
		return rooms.Event{}, notFoundEvent(err, id)
	}
	return ev, nil
}

// removes reports whether ev is a member event that takes a user of
// server out of the room.
func removes(ev events.PDU, server string) bool {
	if ev.Type() != events.Member || ev.StateKey() == nil {
		return false
	}
	_, host, _ := strings.Cut(*ev.StateKey(), ":")
	m, _ := ev.Membership()
	return host == server && (m == "leave" || m == "ban")
}
