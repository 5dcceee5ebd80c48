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

// getShared is Store.Get through ctx's memo, if any: the first caller of
// a key reads it, the others wait for its answer.
func getShared[T any](ctx context.Context, st *store.Store, k store.Key, out *T) error {
	m, _ := ctx.Value(memoKey{}).(*memo)
	if m == nil {
		return st.Get(ctx, k, out)
	}
	m.mu.Lock()
	e, ok := m.entries[k]
	if !ok {
		e = &memoEntry{done: make(chan struct{})}
		m.entries[k] = e
	}
	m.mu.Unlock()
	if !ok {
		var v T
		e.err = st.Get(ctx, k, &v)
		e.val = v
		close(e.done)
	} else {
		select {
		case <-e.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if e.err != nil {
		return e.err
	}
	*out = e.val.(T)
	return nil
}
