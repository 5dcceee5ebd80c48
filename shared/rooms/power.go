package rooms

import (
	"context"
	"math"
	"slices"

	"github.com/cirrus-matrix/cirrus/shared/events"
)

// power is a user's level in a room and the room's levels for events.
type power struct {
	user   int64
	levels *events.PowerLevelContent
}

func (p power) event(evType string, state bool) int64 { return p.levels.EventLevel(evType, state) }

// powerOf reads the power levels of roomID and userID's level in them;
// creators of version 12 rooms outrank everyone.
func (s *Service) powerOf(ctx context.Context, roomID, userID string) (power, error) {
	state, err := s.stateFor(ctx, roomID, nil, []events.StateKeyTuple{{Type: events.Create}, {Type: events.PowerLevels}})
	if err != nil {
		return power{}, err
	}
	return powerIn(state, userID)
}

func powerIn(state map[events.StateKeyTuple]events.PDU, userID string) (power, error) {
	create := state[events.StateKeyTuple{Type: events.Create}]
	pl, err := events.PowerLevelsOf(state[events.StateKeyTuple{Type: events.PowerLevels}])
	if err != nil {
		return power{}, err
	}
	p := power{levels: pl, user: events.UserLevel(pl, userID)}
	if create != nil {
		v := string(create.Version())
		if events.PrivilegedCreators(v) && slices.Contains(events.Creators(create), userID) {
			p.user = math.MaxInt64
		} else if state[events.StateKeyTuple{Type: events.PowerLevels}] == nil && events.Sender(create) == userID {
			p.user = 100 // before any power levels, the creator has 100
		}
	}
	return p, nil
}
