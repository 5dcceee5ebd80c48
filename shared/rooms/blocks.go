package rooms

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// The state of a room is a tree of content-addressed blocks. A snapshot
// names one top block per bucket (the low 4 bits of the FNV-1a hash of
// "type␀state key"). A block of at most splitAt entries is a leaf, holding
// them; a larger one is an index of 4 blocks, split by the next 2 bits of
// the hash, each a leaf or an index again. A state event then rewrites one
// leaf of at most splitAt entries (about 5 KB) and the small indexes above
// it, whatever the size of the room, and blocks of the same content are
// one item. The layout is a function of the entries alone, so that equal
// states have equal hashes. A 4-way split rather than 16 keeps leaves
// fuller (16 parts of 65 entries are 16 items of 4), so that reading a
// whole state reads fewer items.
const splitAt = 64

// fanBits is how many bits of the hash an index splits on: it lists
// 1<<fanBits blocks.
const fanBits = 2

// maxLevel is the deepest index level: the snapshot takes 4 bits of the
// 32 of the hash.
const maxLevel = (32 - 4) / fanBits

func keyHash(key string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(key))
	return h.Sum32()
}

// bucketOf is the snapshot bucket of key.
func bucketOf(key string) int { return int(keyHash(key) % stateBuckets) }

// childOf is the block of key in an index at level (from 1).
func childOf(key string, level int) int {
	return int(keyHash(key) >> (4 + fanBits*(level-1)) & (1<<fanBits - 1))
}

// indexHash names an index block by the hashes it lists.
func indexHash(children []string) string {
	h := sha256.New()
	h.Write([]byte("index\x02"))
	for _, c := range children {
		fmt.Fprintf(h, "%s\x01", c)
	}
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:18])
}

// layout lays out entries (one bucket, or one child of an index at level)
// as blocks: the hash of the top one and every block, the top one last.
func layout(roomID string, entries map[string]string, level int) (string, []block) {
	if len(entries) <= splitAt || level > maxLevel {
		h := blockHash(entries)
		return h, []block{{PK: roomPK(roomID), SK: "blk|" + h, Entries: entries}}
	}
	parts := make([]map[string]string, 1<<fanBits)
	for k, id := range entries {
		j := childOf(k, level)
		if parts[j] == nil {
			parts[j] = map[string]string{}
		}
		parts[j][k] = id
	}
	children := make([]string, 1<<fanBits)
	var blks []block
	for j, p := range parts {
		if p != nil {
			var sub []block
			children[j], sub = layout(roomID, p, level+1)
			blks = append(blks, sub...)
		}
	}
	h := indexHash(children)
	return h, append(blks, block{PK: roomPK(roomID), SK: "blk|" + h, Children: children, N: len(entries)})
}

// set returns the blocks of the tree under top (a bucket's, "" for an
// empty one) with key set to id: the new top hash, and the blocks written,
// the top one last. Only the path to key's leaf is read (through get) and
// rewritten; a leaf that grows past splitAt becomes an index.
func set(ctx context.Context, roomID, top, key, id string, level int, get func(context.Context, string) (block, error)) (string, []block, error) {
	blk, err := get(ctx, top)
	if err != nil {
		return "", nil, err
	}
	if blk.Children == nil {
		next := make(map[string]string, len(blk.Entries)+1)
		maps.Copy(next, blk.Entries)
		next[key] = id
		h, blks := layout(roomID, next, level)
		return h, blks, nil
	}
	j := childOf(key, level)
	child, err := get(ctx, blk.Children[j])
	if err != nil {
		return "", nil, err
	}
	had := child.has(ctx, key, level+1, get)
	h, blks, err := set(ctx, roomID, blk.Children[j], key, id, level+1, get)
	if err != nil {
		return "", nil, err
	}
	children := slices.Clone(blk.Children)
	children[j] = h
	n := blk.N
	if !had {
		n++
	}
	top = indexHash(children)
	return top, append(blks, block{PK: roomPK(roomID), SK: "blk|" + top, Children: children, N: n}), nil
}

// has reports whether the tree of b holds key; get reads the blocks below
// (set reads the same ones next, so they cost nothing more).
func (b block) has(ctx context.Context, key string, level int, get func(context.Context, string) (block, error)) bool {
	for b.Children != nil {
		next, err := get(ctx, b.Children[childOf(key, level)])
		if err != nil {
			return false
		}
		b, level = next, level+1
	}
	_, ok := b.Entries[key]
	return ok
}

// readBlocks reads the trees of the blocks the lists name that out does
// not hold yet into out (nil makes a new map), each block once: a hash
// maps to all the entries of its tree. One BatchGetItem per level of
// index: one for blocks of leaves only (rooms under about 1,000 state
// entries), three for 20,000 members.
func (s *Service) readBlocks(ctx context.Context, roomID string, out map[string]map[string]string, lists ...[]string) (map[string]map[string]string, error) {
	if out == nil {
		out = map[string]map[string]string{}
	}
	var want []string
	for _, l := range lists {
		want = append(want, l...)
	}
	var indexes []block // in the order read: parents before children
	for len(want) > 0 {
		var keys []store.Key
		for _, h := range want {
			if _, ok := out[h]; h != "" && !ok {
				keys = append(keys, store.Key{PK: roomPK(roomID), SK: "blk|" + h})
			}
		}
		want = nil
		err := s.Store.GetMany(ctx, keys, func(k store.Key, decode func(any) error) error {
			var b block
			if err := decode(&b); err != nil {
				return err
			}
			b.SK = k.SK
			if b.Children != nil {
				indexes = append(indexes, b)
				want = append(want, b.Children...)
				return nil
			}
			if b.Entries == nil {
				b.Entries = map[string]string{}
			}
			out[k.SK[len("blk|"):]] = b.Entries
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("read state blocks of %s: %w", roomID, err)
		}
	}
	// Children first: the last index read is the deepest.
	for i := len(indexes) - 1; i >= 0; i-- {
		b := indexes[i]
		m := make(map[string]string, b.N)
		for _, c := range b.Children {
			maps.Copy(m, out[c])
		}
		out[b.SK[len("blk|"):]] = m
	}
	return out, nil
}
