package rooms

import (
	"context"
	"fmt"
	"maps"
	"testing"
)

// TestSet_Canonical: setting entries one at a time, through the path to
// each leaf only, gives the blocks layout gives for the whole state, so
// equal states have equal hashes whatever their history; a leaf of the
// layout before (one block per bucket, any size) is split on its next
// write.
func TestSet_Canonical(t *testing.T) {
	ctx := context.Background()
	stored := map[string]block{}
	get := func(_ context.Context, h string) (block, error) {
		if h == "" {
			return block{}, nil
		}
		b, ok := stored[h]
		if !ok {
			return block{}, fmt.Errorf("block %s not stored", h)
		}
		return b, nil
	}
	put := func(blks []block) {
		for _, b := range blks {
			stored[b.SK[len("blk|"):]] = b
		}
	}
	all := map[string]string{}
	top := ""
	for i := range 3000 {
		key := fmt.Sprintf("m.room.member\x00@u%d:example.org", i)
		id := fmt.Sprintf("$e%d", i)
		var blks []block
		var err error
		if top, blks, err = set(ctx, "!r", top, key, id, 1, get); err != nil {
			t.Fatal(err)
		}
		put(blks)
		all[key] = id
		if i%499 == 0 || i == 2999 {
			if want, _ := layout("!r", all, 1); top != want {
				t.Fatalf("after %d entries: top %s, layout gives %s", i+1, top, want)
			}
		}
	}
	// Replacing an entry keeps the count.
	if top, _, _ = set(ctx, "!r", top, "m.room.member\x00@u7:example.org", "$other", 1, get); top != func() string {
		all["m.room.member\x00@u7:example.org"] = "$other"
		h, _ := layout("!r", all, 1)
		return h
	}() {
		t.Fatal("replacing an entry: not the layout of the state")
	}

	// The layout before: one leaf of 200 entries.
	old := map[string]string{}
	for i := range 200 {
		old[fmt.Sprintf("k%d", i)] = fmt.Sprintf("$o%d", i)
	}
	h := blockHash(old)
	stored[h] = block{SK: "blk|" + h, Entries: old}
	top, blks, err := set(ctx, "!r", h, "k200", "$o200", 1, get)
	if err != nil {
		t.Fatal(err)
	}
	put(blks)
	next := maps.Clone(old)
	next["k200"] = "$o200"
	if want, _ := layout("!r", next, 1); top != want {
		t.Fatal("a large leaf of before: not split as layout splits it")
	}
	for _, b := range blks {
		if len(b.Entries) > splitAt {
			t.Fatalf("a leaf of %d entries written", len(b.Entries))
		}
	}
}
