package rooms

import (
	"context"
	"sync"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// A sync reads each room several ways at once: its timeline, and its
// unread counts, which page the room again and read its info for the push
// rules. Each of those reads the room's info and the user's membership,
// and a sync of 50 rooms read them three times over: 150 calls of its 760.
// WithReadsShared makes the reads of those two items within one request
// share one call each. A request sees the room as of its one read, as it
// does its other items; nothing is kept past the request, so no later
// request is served what changed since.

type memoKey struct{}

// memo holds the shared reads of one request, by key.
type memo struct {
	mu      sync.Mutex
	entries map[store.Key]*memoEntry
}

type memoEntry struct {
	done chan struct{}
	val  any
	err  error
}

// WithReadsShared returns a context in which the reads of room info and
// membership items are made once and shared, for a request that reads
// rooms several ways side by side (sync).
func WithReadsShared(ctx context.Context) context.Context {
	return context.WithValue(ctx, memoKey{}, &memo{entries: map[store.Key]*memoEntry{}})
}

// Fresh returns ctx without the shared reads of WithReadsShared: for a
// read that must see what landed since the request's first.
func Fresh(ctx context.Context) context.Context {
	return context.WithValue(ctx, memoKey{}, (*memo)(nil))
}

// getShared is Store.Get through ctx's memo, if any: the first caller of
// a key reads it, the others wait for its answer.
func getShared[T any](ctx context.Context, st *store.Store, k store.Key, out *T) error {
	v, err := shared(ctx, k, func() (T, error) {
		var v T
		err := st.Get(ctx, k, &v)
		return v, err
	})
	if err == nil {
		*out = v
	}
	return err
}

// shared is read through ctx's memo under k, if any: the first caller of
// k reads, the others wait for its answer.
func shared[T any](ctx context.Context, k store.Key, read func() (T, error)) (T, error) {
	m, _ := ctx.Value(memoKey{}).(*memo)
	if m == nil {
		return read()
	}
	m.mu.Lock()
	e, ok := m.entries[k]
	if !ok {
		e = &memoEntry{done: make(chan struct{})}
		m.entries[k] = e
	}
	m.mu.Unlock()
	if !ok {
		e.val, e.err = read()
		close(e.done)
	}
	return wait[T](ctx, e)
}

// seed gives ctx's memo, if any, v as the read of k, unless k was read
// already: an item a Query of several read serves the later reads of it
// alone.
func seed[T any](ctx context.Context, k store.Key, v T) {
	m, _ := ctx.Value(memoKey{}).(*memo)
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.entries[k]; ok {
		return
	}
	e := &memoEntry{done: make(chan struct{}), val: v}
	close(e.done)
	m.entries[k] = e
}

// sharedSoFar is what ctx's memo holds under k, waited for if its read is
// under way; ok is false when no read of k was begun.
func sharedSoFar[T any](ctx context.Context, k store.Key) (v T, ok bool, err error) {
	m, _ := ctx.Value(memoKey{}).(*memo)
	if m == nil {
		return v, false, nil
	}
	m.mu.Lock()
	e, ok := m.entries[k]
	m.mu.Unlock()
	if !ok {
		return v, false, nil
	}
	v, err = wait[T](ctx, e)
	return v, true, err
}

func wait[T any](ctx context.Context, e *memoEntry) (T, error) {
	var zero T
	select {
	case <-e.done:
	case <-ctx.Done():
		return zero, ctx.Err()
	}
	if e.err != nil {
		return zero, e.err
	}
	return e.val.(T), nil
}

// currentStateKey names a room's whole current state in the memo: the
// unread counts' few state events come from it when the sync read it.
func currentStateKey(roomID string) store.Key {
	return store.Key{PK: roomPK(roomID), SK: "memo|current"}
}
