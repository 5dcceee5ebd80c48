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
// users' memberships are recorded as member events are appended, so that
// their device list updates reach the local users who share a room with
// them. Call it once s.Sender and s.EDUs are set.
func (s *Server) federateE2EE(e2e *e2ekeys.Service, toDevice *todevice.Service, syncs *sync.Service, rms *rooms.Service) {
	e2e.Remote = s.Federation
	e2e.SendEDU = s.Sender.SendEDU
	e2e.Servers = func(ctx context.Context, userID string) ([]string, error) {
		return sharedServers(ctx, rms, userID)
	}
	e2e.RemoteChanged = syncs.DeviceListChanged
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
		return g.Wait()
	}
}

// remoteMembers are the memberships the member events among evs give
// users of other servers.
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
		m, _ := a.Event.Membership()
		out = append(out, e2ekeys.MemberChange{RoomID: a.RoomID, UserID: user, Membership: m})
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
