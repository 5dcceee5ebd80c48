package ephemeral

import (
	"context"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// ReadUpTo is the position of the newest event userID marked read in the
// room's main timeline (an unthreaded or "main" receipt, public or
// private), 0 when none: what notification counts start after. One
// BatchGetItem of four keys.
func (s *Service) ReadUpTo(ctx context.Context, userID, roomID string) (int64, error) {
	var keys []store.Key
	for _, typ := range []string{Read, ReadPrivate} {
		for _, thread := range []string{"", "main"} {
			keys = append(keys, store.Key{PK: roomPK(roomID), SK: currentSK(typ, thread, userID)})
		}
	}
	var upTo int64
	err := s.Store.GetMany(ctx, keys, func(_ store.Key, decode func(any) error) error {
		var it item
		if err := decode(&it); err != nil {
			return err
		}
		upTo = max(upTo, it.Seq)
		return nil
	})
	return upTo, err
}
