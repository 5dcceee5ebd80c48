package server

import (
	"context"
	"slices"
	"strings"
	gosync "sync"

	"golang.org/x/sync/errgroup"

	"github.com/cirrus-matrix/cirrus/shared/e2ekeys"
	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/sync"
	"github.com/cirrus-matrix/cirrus/shared/todevice"
)

// federateE2EE connects end-to-end encryption to other servers: keys of
// their users are asked of them, local users' key changes and to-device
// messages go to them as EDUs, theirs come in through s.EDUs, and remote
// users' memberships are recorded as member events are appended (and, the
// first time a local user joins a room taken in through a remote join,
// from its member list: the take-in tells of the join alone), so that their device
// list updates reach the local users who share a room with them. Call it once s.Sender and s.EDUs are set.
func (s *Server) federateE2EE(e2e *e2ekeys.Service, toDevice *todevice.Service, syncs *sync.Service, rms *rooms.Service) {
	e2e.Remote = s.Federation
	e2e.SendEDU = s.Sender.SendEDU
	e2e.Servers = func(ctx context.Context, userID string) ([]string, error) {
		return sharedServers(ctx, rms, userID)
	}
	e2e.RemoteChanged = syncs.RemoteDeviceListChanged
	syncs.RemoteRooms = e2e.RemoteRooms
	toDevice.SendEDU = s.Sender.SendEDU
	s.EDUs.Handle(e2ekeys.DeviceListUpdate, e2e.HandleDeviceListUpdate)
	s.EDUs.Handle(e2ekeys.SigningKeyUpdate, e2e.HandleSigningKeyUpdate)
	s.EDUs.Handle(todevice.DirectToDevice, toDevice.HandleDirectToDevice)

	appended := rms.Appended
	rms.Appended = func(ctx context.Context, evs []rooms.Appended) error {
		var g errgroup.Group
		if appended != nil {
			g.Go(func() error { return appended(ctx, evs) })
		}
		g.Go(func() error { return e2e.MembersChanged(ctx, remoteMembers(evs, s.Config.ServerName)) })
		for _, join := range localJoins(evs, s.Config.ServerName) {
			roomID := join.RoomID
			g.Go(func() error {
				return e2e.RoomJoined(ctx, roomID, func(ctx context.Context) ([]e2ekeys.MemberChange, error) {
					// The join that took the room in carries its members.
					members := join.Members
					if members == nil {
						var err error
						if members, err = rms.Members(ctx, roomID); err != nil {
							return nil, err
						}
					}
					var out []e2ekeys.MemberChange
					for _, ev := range members {
						if m, _ := ev.Membership(); m == "join" && ev.StateKey() != nil && serverOf(*ev.StateKey()) != s.Config.ServerName {
							out = append(out, e2ekeys.MemberChange{RoomID: roomID, UserID: *ev.StateKey(), Membership: m})
						}
					}
					return out, nil
				})
			})
		}
		return g.Wait()
	}
}

// remoteMembers are the joins, leaves and bans the member events among evs
// give users of other servers.
func remoteMembers(evs []rooms.Appended, serverName string) []e2ekeys.MemberChange {
	var out []e2ekeys.MemberChange
	for _, a := range evs {
		if a.Event.Type() != events.Member || a.Event.StateKey() == nil {
			continue
		}
		user := *a.Event.StateKey()
		if serverOf(user) == serverName {
			continue
		}
		// Only joins count (RemoteRooms); an invite or a knock changes
		// nothing that was recorded, and costs no write.
		if m, _ := a.Event.Membership(); m == "join" || m == "leave" || m == "ban" {
			out = append(out, e2ekeys.MemberChange{RoomID: a.RoomID, UserID: user, Membership: m})
		}
	}
	return out
}

// localJoins lists the local users' joins among evs of rooms taken in
// through a remote join, one per room: rooms created here had every
// member appended.
func localJoins(evs []rooms.Appended, serverName string) []rooms.Appended {
	var out []rooms.Appended
	for _, a := range evs {
		if !rooms.TakenIn(a.Seq) || a.Event.Type() != events.Member || a.Event.StateKey() == nil || serverOf(*a.Event.StateKey()) != serverName {
			continue
		}
		seen := slices.ContainsFunc(out, func(j rooms.Appended) bool { return j.RoomID == a.RoomID })
		if m, _ := a.Event.Membership(); m == "join" && !seen {
			out = append(out, a)
		}
	}
	return out
}

// sharedServers lists the servers with a joined member in any room a local
// user is joined to. Cost: one Query of the user's rooms, and one Query of
// each room's member state.
func sharedServers(ctx context.Context, rms *rooms.Service, userID string) ([]string, error) {
	joined, err := rms.JoinedRooms(ctx, userID)
	if err != nil {
		return nil, err
	}
	var mu gosync.Mutex
	set := map[string]bool{}
	var g errgroup.Group
	g.SetLimit(8)
	for _, roomID := range joined {
		g.Go(func() error {
			servers, err := rms.JoinedServers(ctx, roomID)
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			for _, srv := range servers {
				set[srv] = true
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out := make([]string, 0, len(set))
	for srv := range set {
		out = append(out, srv)
	}
	slices.Sort(out)
	return out, nil
}

// serverOf is the server name of a user ID (after the first colon).
func serverOf(userID string) string {
	_, server, _ := strings.Cut(userID, ":")
	return server
}
