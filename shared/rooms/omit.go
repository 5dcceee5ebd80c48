package rooms

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// maxHeroes is how many members the client-server /sync room summary
// names in m.heroes.
const maxHeroes = 5

// OmitMembers reduces state, the room state before join, to what send_join
// answers a server that asked for omit_members (a partial-state join,
// server-server API v1.6): the state without member events but for those
// the joining server needs, and the auth chain of what is kept and of
// join, without the events already in the kept state ("redundant events
// are omitted").
//
// The member events kept are:
//   - the heroes' (up to five joined or invited members other than the
//     joiner, by stream ordering; the banned and left when there are none),
//     when the state names the room by neither m.room.name nor
//     m.room.canonical_alias, so that the joining server's clients can
//     name the room as the spec's /sync summary would;
//   - the joiner's own and the authorising user's of a restricted join,
//     and any other member event among join's auth events: the joining
//     server checks the join against the state it is given, and the auth
//     rules read exactly these.
//
// Cost: the auth chain's reads (AuthChain, most of the kept state not read
// again); for an unnamed room, one eventually consistent Query of the
// room's current member events, for their stream positions.
func (s *Service) OmitMembers(ctx context.Context, join events.PDU, state []events.PDU) (kept, authChain []events.PDU, err error) {
	roomID := events.RoomID(join)
	keep := map[string]bool{}
	for _, id := range join.AuthEventIDs() {
		keep[id] = true
	}
	users := map[string]bool{events.Sender(join): true}
	if sk := join.StateKey(); sk != nil {
		users[*sk] = true
	}
	var c struct {
		Via string `json:"join_authorised_via_users_server"`
	}
	if json.Unmarshal(join.Content(), &c) == nil && c.Via != "" {
		users[c.Via] = true
	}
	if !named(state) {
		heroes, err := s.heroes(ctx, roomID, state, events.Sender(join))
		if err != nil {
			return nil, nil, err
		}
		for _, ev := range heroes {
			keep[ev.EventID()] = true
		}
	}
	kept = make([]events.PDU, 0, len(state))
	inKept := map[string]bool{}
	for _, ev := range state {
		if ev.Type() == events.Member && !keep[ev.EventID()] && (ev.StateKey() == nil || !users[*ev.StateKey()]) {
			continue
		}
		kept = append(kept, ev)
		inKept[ev.EventID()] = true
	}
	chain, err := s.AuthChain(ctx, roomID, append(slices.Clip(kept), join))
	if err != nil {
		return nil, nil, fmt.Errorf("omit members: %w", err)
	}
	authChain = make([]events.PDU, 0, len(chain))
	for _, ev := range chain {
		if !inKept[ev.EventID()] {
			authChain = append(authChain, ev)
		}
	}
	return kept, authChain, nil
}

// named reports whether state names the room: an m.room.name with a
// name or an m.room.canonical_alias with an alias. The /sync summary
// treats an empty one as unset, and so does this.
func named(state []events.PDU) bool {
	for _, ev := range state {
		if ev.StateKey() == nil || *ev.StateKey() != "" {
			continue
		}
		var c struct {
			Name  string `json:"name"`
			Alias string `json:"alias"`
		}
		switch ev.Type() {
		case events.Name:
			if json.Unmarshal(ev.Content(), &c) == nil && c.Name != "" {
				return true
			}
		case events.CanonicalAlias:
			if json.Unmarshal(ev.Content(), &c) == nil && c.Alias != "" {
				return true
			}
		}
	}
	return false
}

// heroes picks from state the member events of the room's heroes as the
// client-server /sync summary defines them for user: the first five
// members other than user, by stream ordering, who are joined or invited,
// or, when there are none, who left or were banned. The stream ordering
// of a member event is its position in the room, read from the current
// state items; one no longer current (changed since state) sorts after
// those, by user ID.
func (s *Service) heroes(ctx context.Context, roomID string, state []events.PDU, user string) ([]events.PDU, error) {
	var present, gone []events.PDU
	for _, ev := range state {
		if ev.Type() != events.Member || ev.StateKey() == nil || *ev.StateKey() == user {
			continue
		}
		switch m, _ := ev.Membership(); m {
		case "join", "invite":
			present = append(present, ev)
		case "leave", "ban":
			gone = append(gone, ev)
		}
	}
	pick := present
	if len(pick) == 0 {
		pick = gone
	}
	if len(pick) == 0 {
		return nil, nil
	}
	seqs, err := s.memberSeqs(ctx, roomID)
	if err != nil {
		return nil, err
	}
	pos := func(ev events.PDU) int64 {
		if seq, ok := seqs[ev.EventID()]; ok {
			return seq
		}
		return 1<<63 - 1
	}
	slices.SortFunc(pick, func(a, b events.PDU) int {
		return cmp.Or(cmp.Compare(pos(a), pos(b)), cmp.Compare(*a.StateKey(), *b.StateKey()))
	})
	return pick[:min(len(pick), maxHeroes)], nil
}

// memberSeqs maps the event ID of each current member event of the room
// to its position in the room. The read is eventually consistent: a
// member event written in the last second only sorts later.
func (s *Service) memberSeqs(ctx context.Context, roomID string) (map[string]int64, error) {
	out := map[string]int64{}
	cursor := ""
	for {
		var page []current
		next, err := s.Store.QueryPage(ctx, store.Query{PK: roomPK(roomID), Prefix: stateSK(events.Member, ""), Cursor: cursor, Eventual: true}, &page)
		if err != nil {
			return nil, fmt.Errorf("read member positions of %s: %w", roomID, err)
		}
		for _, c := range page {
			out[c.EventID] = c.Seq
		}
		if next == "" {
			return out, nil
		}
		cursor = next
	}
}
