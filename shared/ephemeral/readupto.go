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
	keys := markKeys(userID, roomID, threads)
	out := map[string]Mark{}
	add := func(it item) {
		if m := out[it.Thread]; it.Seq > m.Seq {
			out[it.Thread] = Mark{Seq: it.Seq, EventID: it.Event}
		}
	}
	if items, ok, err := store.SharedMany[item](ctx, keys); ok {
		for _, it := range items {
			add(it)
		}
		return out, err
	}
	err := s.Store.GetMany(ctx, keys, func(_ store.Key, decode func(any) error) error {
		var it item
		if err := decode(&it); err != nil {
			return err
		}
		add(it)
		return nil
	})
	return out, err
}

// ShareReadMarks begins reading userID's main-timeline read receipts
// (ReadMarks of "" and "main") of the rooms for ctx's shared reads
// (store.WithShared), 25 rooms to a BatchGetItem, side by side: a sync
// about to count each of many rooms reads them in one round trip instead
// of a call each.
func (s *Service) ShareReadMarks(ctx context.Context, userID string, roomIDs []string) {
	var keys []store.Key
	for _, roomID := range roomIDs {
		keys = append(keys, markKeys(userID, roomID, []string{"", "main"})...)
	}
	store.Prefetch[item](ctx, s.Store, keys)
}

// markKeys are the keys of userID's read receipts in the room, of both
// kinds, for each thread.
func markKeys(userID, roomID string, threads []string) []store.Key {
	var keys []store.Key
	for _, thread := range threads {
		for _, typ := range []string{Read, ReadPrivate} {
			keys = append(keys, store.Key{PK: roomPK(roomID), SK: currentSK(typ, thread, userID)})
		}
	}
	return keys
}

// ReadUpTo is the position of the newest event userID marked read in the
// room's main timeline (an unthreaded or "main" receipt), 0 when none.
func (s *Service) ReadUpTo(ctx context.Context, userID, roomID string) (int64, error) {
	marks, err := s.ReadMarks(ctx, userID, roomID, []string{"", "main"})
	return max(marks[""].Seq, marks["main"].Seq), err
}
