package rooms

import (
	"context"
	"encoding/json"

	"github.com/cirrus-matrix/cirrus/shared/events"
)

// SetHalt makes s ask halt at the points where a process can die during
// an append; true stops the append there as a death would.
func SetHalt(s *Service, halt func(point string) bool) { s.halt = halt }

// AppendBatch appends protos to the room in one batch, each after the one
// before, as one transaction, and returns their event IDs. A redaction
// whose Redacts is "#<i>" redacts the batch's event i (its content's
// redacts too, where the room version has it).
func AppendBatch(ctx context.Context, s *Service, roomID string, protos []events.Proto) ([]string, error) {
	e := s.cache.entry(roomID)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.reset()
	h, err := s.readHead(ctx, roomID)
	if err != nil {
		return nil, err
	}
	e.head, e.state = h, map[events.StateKeyTuple]events.PDU{}
	if e.locals, err = s.readLocals(ctx, roomID); err != nil {
		return nil, err
	}
	graph := h.graph()
	var evs []events.PDU
	var ids []string
	for _, p := range protos {
		p.RoomID = roomID
		if len(p.Redacts) > 1 && p.Redacts[0] == '#' {
			i := int(p.Redacts[1] - '0')
			p.Redacts = ids[i]
			if redactsInContent(h.Version) {
				p.Content, _ = json.Marshal(map[string]string{"redacts": ids[i]})
			}
		}
		tuples, err := events.AuthStateNeeded(h.Version, p)
		if err != nil {
			return nil, err
		}
		if err := s.fill(ctx, roomID, e, tuples); err != nil {
			return nil, err
		}
		auth, err := events.NewState(authOnly(e.state, tuples))
		if err != nil {
			return nil, err
		}
		ev, err := s.Signer.Build(h.Version, p, graph, auth, s.now())
		if err != nil {
			return nil, err
		}
		evs = append(evs, ev)
		ids = append(ids, ev.EventID())
		graph = events.Graph{PrevEvents: []string{ev.EventID()}, Depth: ev.Depth() + 1}
	}
	next, finish, err := s.commit(ctx, roomID, h, evs, e.state, nil, e.locals)
	if err != nil {
		e.reset()
		return nil, err
	}
	e.head = next
	return ids, finish(ctx)
}
