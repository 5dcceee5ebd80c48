package rooms

import (
	"context"
	"fmt"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/stateres"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// AddStateEntries adds n member entries (BulkMember(from) on) to the current state snapshot of the room, laid
// out as the engine lays out any state (blocksOf) and written in bulk, so
// that a test builds a room of 20,000 members without 20,000 joins. Only
// the snapshot and its blocks hold them: current state items, slots and
// events do not exist, so they serve the cost of the next state event and
// reads of the tree, not /members.
func AddStateEntries(ctx context.Context, s *Service, roomID string, from, n int) error {
	h, err := s.readHead(ctx, roomID)
	if err != nil {
		return err
	}
	var snap snapshot
	if err := s.Store.Get(ctx, store.Key{PK: roomPK(roomID), SK: snapSK(h.StateSeq)}, &snap); err != nil {
		return err
	}
	m, err := StateTree(ctx, s, roomID)
	if err != nil {
		return err
	}
	state := stateres.StateMap{}
	for k, id := range m {
		typ, key, _ := cutTuple(k)
		state[stateres.Key{Type: typ, StateKey: key}] = id
	}
	for i := from; i < from+n; i++ {
		user, id := BulkMember(i)
		state[stateres.Key{Type: events.Member, StateKey: user}] = id
	}
	hashes, blks := blocksOf(roomID, state)
	items := make([]any, 0, len(blks)+1)
	for _, b := range blks {
		items = append(items, b)
	}
	if err := s.Store.PutMany(ctx, items); err != nil {
		return err
	}
	snap.Blocks = hashes
	if err := s.Store.Put(ctx, snap); err != nil {
		return err
	}
	return nil
}

// StateTree reads the current state snapshot's tree: "type␀state key" to
// event ID.
func StateTree(ctx context.Context, s *Service, roomID string) (map[string]string, error) {
	h, err := s.readHead(ctx, roomID)
	if err != nil {
		return nil, err
	}
	var snap snapshot
	if err := s.Store.Get(ctx, store.Key{PK: roomPK(roomID), SK: snapSK(h.StateSeq)}, &snap); err != nil {
		return nil, err
	}
	blocks, err := s.readBlocks(ctx, roomID, nil, snap.Blocks)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, b := range snap.Blocks {
		for k, id := range blocks[b] {
			out[k] = id
		}
	}
	return out, nil
}

// BlockCount is how many blocks of each kind the current snapshot's tree
// holds, and the largest leaf's entries.
func BlockCount(ctx context.Context, s *Service, roomID string) (leaves, indexes, largest int, err error) {
	h, err := s.readHead(ctx, roomID)
	if err != nil {
		return 0, 0, 0, err
	}
	var snap snapshot
	if err := s.Store.Get(ctx, store.Key{PK: roomPK(roomID), SK: snapSK(h.StateSeq)}, &snap); err != nil {
		return 0, 0, 0, err
	}
	want := snap.Blocks
	for len(want) > 0 {
		h := want[0]
		want = want[1:]
		if h == "" {
			continue
		}
		var b block
		if err := s.Store.Get(ctx, store.Key{PK: roomPK(roomID), SK: "blk|" + h}, &b); err != nil {
			return 0, 0, 0, err
		}
		if b.Children != nil {
			indexes++
			want = append(want, b.Children...)
			continue
		}
		leaves++
		largest = max(largest, len(b.Entries))
	}
	return leaves, indexes, largest, nil
}

// BulkMember is the user ID and made-up event ID of AddStateEntries' i-th
// member, as long as real ones (an event ID of a version 12 room is "$"
// and 43 characters).
func BulkMember(i int) (user, eventID string) {
	return fmt.Sprintf("@member%d:example.org", i), fmt.Sprintf("$bulk%038d", i)
}
