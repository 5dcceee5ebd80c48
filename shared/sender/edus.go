package sender

import (
	"context"
	"encoding/json"
	"errors"
	"slices"

	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

// SendRoomEDU enqueues an EDU of eduType for every other server with a
// joined member in the room: typing notifications and receipts, which the
// servers in the room are to see.
//
// Cost: one Query of the room's member events (the room's state snapshot
// is not known here, so joinedCache is not used), then per destination
// what SendEDU costs.
func (s *Sender) SendRoomEDU(ctx context.Context, roomID, eduType string, content json.RawMessage) error {
	return s.SendRoomsEDU(ctx, []string{roomID}, eduType, content)
}

// SendRoomsEDU enqueues one EDU of eduType for every other server with a
// joined member in any of the rooms: a user's presence, which the servers
// sharing a room with them are to see. Each server gets it once.
//
// Cost: one Query of each room's member events, then per destination what
// SendEDU costs (an UpdateItem of its counter, a BatchWriteItem of the
// entry, a queue message).
func (s *Sender) SendRoomsEDU(ctx context.Context, roomIDs []string, eduType string, content json.RawMessage) error {
	if s.queue() == nil {
		return nil
	}
	set := map[string]bool{}
	var errs []error
	for _, roomID := range roomIDs {
		// A StateSeq of 0 reads the members, whatever the cache holds.
		servers, err := s.joinedServers(ctx, roomID, []rooms.Appended{{RoomID: roomID}})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, srv := range servers {
			set[srv] = true
		}
	}
	delete(set, s.ServerName)
	dests := make([]string, 0, len(set))
	for d := range set {
		dests = append(dests, d)
	}
	slices.Sort(dests)
	if len(dests) > 0 {
		errs = append(errs, s.SendEDU(ctx, dests, eduType, content))
	}
	return errors.Join(errs...)
}
