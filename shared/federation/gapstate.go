package federation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

var _ StateEngine = RoomEngine{}

// ReceiveWithState gives pdu, whose prev_events stay missing after
// /get_missing_events, to rooms.Service.ReceiveWithState with the state
// before it as the origin gave it: the room places it above a gap that
// clients paging back through /messages fill (/backfill).
func (e RoomEngine) ReceiveWithState(ctx context.Context, pdu events.PDU, state, authChain []events.PDU) error {
	out, err := e.Rooms.ReceiveWithState(ctx, pdu, state, authChain)
	if errors.Is(err, rooms.ErrBadEvent) {
		return fmt.Errorf("%w: %v", errGiveUp, err)
	}
	if err == nil && e.Logger != nil {
		e.Logger.LogAttrs(ctx, slog.LevelInfo, "inbound PDU taken with the state given, above a gap",
			slog.String("event_id", pdu.EventID()), slog.String("status", string(out.Status)), slog.String("reason", out.Reason))
	}
	return err
}
