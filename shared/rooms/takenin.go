package rooms

import (
	"slices"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/events"
)

// TakenIn reports whether seq is a position in a room taken in through a
// remote join (TakeJoined), whose members from before the join were never
// appended one by one: what keeps track of members must take them in once,
// from the join's Appended.Members.
func TakenIn(seq int64) bool { return seq >= joinBase }

// memberEvents are the member events among state, the events of a take-in
// by state key: what Members reads of the room once it is taken in,
// sorted by state key.
func memberEvents(state map[events.StateKeyTuple]events.PDU) []events.PDU {
	var out []events.PDU
	for k, ev := range state {
		if k.Type == events.Member {
			out = append(out, ev)
		}
	}
	slices.SortFunc(out, func(a, b events.PDU) int { return strings.Compare(*a.StateKey(), *b.StateKey()) })
	return out
}
