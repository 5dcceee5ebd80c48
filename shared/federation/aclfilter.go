package federation

import (
	"context"
	"errors"

	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

// ACLFilter reads the server ACL in the room's current state once and
// returns what it allows (ACLContentAllows), for the sender, which sends a
// room's events to none of the servers it denies; a room without one (or
// one this server does not hold) allows every server. Cost: one GetItem.
func (s *Service) ACLFilter(ctx context.Context, roomID string) (func(serverName string) bool, error) {
	ev, err := s.Rooms.StateEvent(ctx, roomID, ServerACL, "")
	if errors.Is(err, rooms.ErrUnknownEvent) {
		return func(string) bool { return true }, nil
	}
	if err != nil {
		return nil, err
	}
	content := ev.Content()
	return func(serverName string) bool { return ACLContentAllows(content, serverName) }, nil
}
