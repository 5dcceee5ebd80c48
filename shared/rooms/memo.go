package rooms

import (
	"context"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// A sync reads each room several ways at once: its timeline, and its
// unread counts, which page the room again and read its info for the push
// rules. Each of those reads the room's info and the user's membership,
// and a sync of 50 rooms read them three times over: 150 calls of its 760.
// WithReadsShared makes the reads of those items within one request share
// one call each (store.WithShared). A request sees the room as of its one
// read, as it does its other items; nothing is kept past the request, so
// no later request is served what changed since.

// WithReadsShared returns a context in which the reads of room info,
// membership items and current state are made once and shared, for a
// request that reads rooms several ways side by side (sync).
func WithReadsShared(ctx context.Context) context.Context { return store.WithShared(ctx) }

// Fresh returns ctx without the shared reads of WithReadsShared: for a
// read that must see what landed since the request's first.
func Fresh(ctx context.Context) context.Context { return store.Unshared(ctx) }

// currentStateKey names a room's whole current state in the memo: the
// unread counts' few state events come from it when the sync read it.
func currentStateKey(roomID string) store.Key {
	return store.Key{PK: roomPK(roomID), SK: "memo|current"}
}
