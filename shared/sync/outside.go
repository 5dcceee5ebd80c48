package sync

import (
	"context"
	"encoding/json"
)

// outsideLeave adds the room to resp when the user's leave of it was made
// outside its graph here (a rejected invite or withdrawn knock of a room
// this server does not hold, rooms.Service.OutsideLeave): the leave alone
// is its timeline, as Synapse shows such "out-of-band" memberships.
func (s *Service) outsideLeave(ctx context.Context, userID, roomID string, resp *Response) (bool, error) {
	ev, err := s.Rooms.OutsideLeave(ctx, userID, roomID)
	if err != nil || ev == nil {
		return false, err
	}
	none := EventList{Events: []json.RawMessage{}}
	resp.Rooms.Leave[roomID] = &LeftRoom{Timeline: Timeline{Events: []json.RawMessage{ev}}, State: none, AccountData: none}
	return true, nil
}
