package rooms

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/stateres"
)

// Auth chains this server lacks. A received event's auth events, or the
// auth chains of the events whose states a fork resolves (those of a room
// joined through another server start at the state it gave), may name
// events never received here: Receive names them in a
// *MissingEventsError (AuthIDs), the caller fetches them from the
// event's origin (/event_auth, /event) and gives them to StoreAuthEvents,
// then receives the event again.

// missingAuth is err, a resolution that failed, as a *MissingEventsError
// naming the events the auth chains lacked, when that is why it failed.
func (l *graphLoader) missingAuth(ev events.PDU, err error) error {
	if !errors.Is(err, stateres.ErrMissingEvent) || len(l.missing) == 0 {
		return err
	}
	return &MissingEventsError{EventID: ev.EventID(), AuthIDs: slices.Clone(l.missing)}
}

// StoreAuthEvents stores the events of evs (of roomID, their signatures
// and hashes checked by the caller) this server does not hold as
// outliers, as the state given with a gap's event is: outside the
// timeline, there for the auth checks and state resolution of the events
// that name them, placed if they arrive as timeline events later. Each
// is checked against its own auth events first and stored rejected if
// refused (storeOutliers). Cost: one BatchGetItem of their pointers, one
// conditional PutItem for each not held.
func (s *Service) StoreAuthEvents(ctx context.Context, roomID string, evs []events.PDU) error {
	var keep []events.PDU
	for _, ev := range evs {
		if events.RoomID(ev) == roomID && ev.StateKey() != nil {
			keep = append(keep, ev) // auth events are state events
		}
	}
	if err := s.storeOutliers(ctx, roomID, newGraphLoader(s, roomID), keep); err != nil {
		return fmt.Errorf("store auth events of %s: %w", roomID, err)
	}
	return nil
}
