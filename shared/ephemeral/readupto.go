package ephemeral

import (
	"context"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Mark is where a user's read receipts of one thread stand: the newest
// event they marked read, public or private.
type Mark struct {
	Seq     int64
	EventID string
}

// ReadMarks reads userID's read receipts in the room for each thread given
// ("" unthreaded, "main", or a thread root's event ID): one BatchGetItem of
// two keys per thread. A thread without receipts is absent.
func (s *Service) ReadMarks(ctx context.Context, userID, roomID string, threads []string) (map[string]Mark, error) {
	var keys []store.Key
	for _, thread := range threads {
		for _, typ := range []string{Read, ReadPrivate} {
			keys = append(keys, store.Key{PK: roomPK(roomID), SK: currentSK(typ, thread, userID)})
		}
	}
	out := map[string]Mark{}
	err := s.Store.GetMany(ctx, keys, func(_ store.Key, decode func(any) error) error {
		var it item
		if err := decode(&it); err != nil {
			return err
		}
		if m := out[it.Thread]; it.Seq > m.Seq {
			out[it.Thread] = Mark{Seq: it.Seq, EventID: it.Event}
		}
		return nil
	})
	return out, err
}

// ReadUpTo is the position of the newest event userID marked read in the
// room's main timeline (an unthreaded or "main" receipt), 0 when none.
func (s *Service) ReadUpTo(ctx context.Context, userID, roomID string) (int64, error) {
	marks, err := s.ReadMarks(ctx, userID, roomID, []string{"", "main"})
	return max(marks[""].Seq, marks["main"].Seq), err
}
