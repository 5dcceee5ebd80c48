package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// What shared/spaces reads of rooms: a room's summary with the state the
// hierarchy and room summary endpoints show, and a space's child events.

// SpaceChild is the event type that makes a room a child of a space.
const SpaceChild = "m.space.child"

// Summary is a room as the space hierarchy and room summary endpoints
// describe it: its Info and the state those endpoints add to it.
type Summary struct {
	Info
	WorldReadable bool
	// Encryption is the algorithm of the room's m.room.encryption event;
	// "" when the room is not encrypted.
	Encryption string
	// Allow lists the rooms whose members may join under a restricted join
	// rule: its m.room_membership conditions, in their order.
	Allow []string
}

// Summary reads the room's summary: ErrUnknownRoom when the server holds
// no such room. See Summaries.
func (s *Service) Summary(ctx context.Context, roomID string) (Summary, error) {
	sums, err := s.Summaries(ctx, []string{roomID})
	if err != nil {
		return Summary{}, err
	}
	sum, ok := sums[roomID]
	if !ok {
		return Summary{}, fmt.Errorf("%w %s", ErrUnknownRoom, roomID)
	}
	return sum, nil
}

// Summaries reads the summaries of rooms: each room's info, join rules and
// encryption event, three keys a room in BatchGetItems of 100 keys. Rooms
// the server does not hold are absent from the map.
func (s *Service) Summaries(ctx context.Context, roomIDs []string) (map[string]Summary, error) {
	rulesSK, encSK := stateSK(events.JoinRules, ""), stateSK(events.Encryption, "")
	keys := make([]store.Key, 0, 3*len(roomIDs))
	for _, id := range roomIDs {
		pk := roomPK(id)
		keys = append(keys, store.Key{PK: pk, SK: infoSK}, store.Key{PK: pk, SK: rulesSK}, store.Key{PK: pk, SK: encSK})
	}
	found := map[string]bool{}
	sums := make(map[string]Summary, len(roomIDs))
	err := s.Store.GetMany(ctx, keys, func(k store.Key, decode func(any) error) error {
		roomID := strings.TrimPrefix(k.PK, "room|")
		sum := sums[roomID]
		defer func() { sums[roomID] = sum }()
		if k.SK == infoSK {
			var i info
			if err := decode(&i); err != nil {
				return err
			}
			found[roomID] = true
			sum.Info = i.public(roomID)
			sum.WorldReadable = at(i.Visibility, 1<<62) == "world_readable"
			return nil
		}
		var c current
		if err := decode(&c); err != nil {
			return err
		}
		// The content as clients sent it, which the auth rules let through
		// whatever its shape: a field of the wrong type reads as absent.
		var content struct {
			Algorithm any `json:"algorithm"`
			Allow     []struct {
				Type   any `json:"type"`
				RoomID any `json:"room_id"`
			} `json:"allow"`
		}
		ev, err := events.Parse(c.Version, c.EventID, []byte(c.PDU))
		if err != nil {
			return err
		}
		if json.Unmarshal(ev.Content(), &content) != nil {
			return nil
		}
		if k.SK == encSK {
			sum.Encryption, _ = content.Algorithm.(string)
			return nil
		}
		for _, a := range content.Allow {
			id, _ := a.RoomID.(string)
			if a.Type == "m.room_membership" && id != "" {
				sum.Allow = append(sum.Allow, id)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read room summaries: %w", err)
	}
	for id := range sums {
		if !found[id] {
			delete(sums, id)
		}
	}
	return sums, nil
}

// SpaceChildren reads the room's current m.space.child events, in no
// particular order: one query of its state items of that type, so that a
// space with many members costs no more than one with few.
func (s *Service) SpaceChildren(ctx context.Context, roomID string) ([]events.PDU, error) {
	evs, err := s.currentWithPrefix(ctx, roomID, stateSK(SpaceChild, ""))
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	return evs, nil
}
