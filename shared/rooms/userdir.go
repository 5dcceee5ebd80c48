package rooms

import (
	"context"
	"fmt"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// PublicRooms reports which of the rooms show their members to everyone in
// the user directory: those anyone may join (join rule public) or read
// (history visibility world_readable), as Synapse's user directory counts
// them. One BatchGetItem of the rooms' info items; unknown rooms are not
// public.
func (s *Service) PublicRooms(ctx context.Context, roomIDs []string) (map[string]bool, error) {
	keys := make([]store.Key, 0, len(roomIDs))
	for _, r := range roomIDs {
		keys = append(keys, store.Key{PK: roomPK(r), SK: infoSK})
	}
	out := make(map[string]bool, len(roomIDs))
	err := s.Store.GetMany(ctx, keys, func(k store.Key, decode func(any) error) error {
		var i info
		if err := decode(&i); err != nil {
			return err
		}
		if i.JoinRule == "public" || at(i.Visibility, 1<<62) == "world_readable" {
			out[strings.TrimPrefix(k.PK, roomPK(""))] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read public rooms: %w", err)
	}
	return out, nil
}
