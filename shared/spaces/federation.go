package spaces

import (
	"context"
	"errors"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

// ServerHierarchy is the answer of GET /_matrix/federation/v1/hierarchy/{roomId}:
// the space and its direct children, unpaginated.
type ServerHierarchy struct {
	Room         hierarchyRoom `json:"room"`
	Children     []room        `json:"children"`
	Inaccessible []string      `json:"inaccessible_children"`
}

// HierarchyForServer describes a space and its children to another
// server, as the federation hierarchy endpoint asks and Synapse answers
// it: the root must be a room this server holds and server may peek or
// join, else 404 M_NOT_FOUND; its children this server holds are listed
// in children when server may peek or join them, in inaccessible_children
// otherwise; children held elsewhere are left out. With suggested, only
// suggested children count. At most 50 children are read, as Synapse
// caps them.
//
// A server may peek or join a room that is world readable, public, open
// to knocking, where one of its users is joined or invited, or, under a
// restricted join rule, where one of its users is joined in a room the
// rule allows. Cost: the summaries (rooms.Summaries: three keys a room,
// one BatchGetItem), the root's child events (one Query) and, for rooms
// no rule opens, one Query of each deciding room's member events.
func (s *Service) HierarchyForServer(ctx context.Context, roomID, server string, suggested bool) (ServerHierarchy, error) {
	notFound := httpapi.NotFound("room %s is not known to this server, or %s may not peek or join it", roomID, server)
	root, err := s.Rooms.Summary(ctx, roomID)
	if errors.Is(err, rooms.ErrUnknownRoom) {
		return ServerHierarchy{}, notFound
	}
	if err != nil {
		return ServerHierarchy{}, err
	}
	if ok, err := s.serverSees(ctx, root, server); err != nil || !ok {
		return ServerHierarchy{}, errors.Join(err, notFound)
	}
	out := ServerHierarchy{Room: hierarchyRoom{room: describe(root), ChildrenState: []child{}},
		Children: []room{}, Inaccessible: []string{}}
	if root.RoomType == "m.space" {
		if out.Room.ChildrenState, err = s.children(ctx, roomID, suggested); err != nil {
			return ServerHierarchy{}, err
		}
	}
	var ids []string
	for _, c := range out.Room.ChildrenState {
		if rooms.ValidRoomID(c.StateKey) && len(ids) < maxLimit {
			ids = append(ids, c.StateKey)
		}
	}
	sums, err := s.Rooms.Summaries(ctx, ids)
	if err != nil {
		return ServerHierarchy{}, err
	}
	for _, id := range ids {
		sum, ok := sums[id]
		if !ok {
			continue
		}
		sees, err := s.serverSees(ctx, sum, server)
		if err != nil {
			return ServerHierarchy{}, err
		}
		if sees {
			out.Children = append(out.Children, describe(sum))
		} else {
			out.Inaccessible = append(out.Inaccessible, id)
		}
	}
	return out, nil
}

// serverSees reports whether server may peek or join the room of sum.
func (s *Service) serverSees(ctx context.Context, sum rooms.Summary, server string) (bool, error) {
	if (&viewer{}).sees(sum) {
		return true, nil // open to anyone
	}
	m, err := s.Rooms.ServerMembership(ctx, sum.RoomID, server)
	if err != nil || m == "join" || m == "invite" {
		return err == nil, err
	}
	if !restricted(sum) {
		return false, nil
	}
	for _, id := range sum.Allow {
		if m, err := s.Rooms.ServerMembership(ctx, id, server); err != nil || m == "join" {
			return err == nil, err
		}
	}
	return false, nil
}
