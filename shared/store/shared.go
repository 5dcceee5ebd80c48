package store

import (
	"context"
	"errors"
	"sync"
)

// Shared reads. A request that reads one item several ways at once (a
// sync reads each room's info and the user's membership for its timeline,
// its unread counts and its presence) reads it once under WithShared. The
// request sees the item as of its one read, as it does its other items;
// nothing is kept past the request, so no later request is served what
// changed since.

type memoKey struct{}

// memo holds the shared reads of one request, by key.
type memo struct {
	mu      sync.Mutex
	entries map[Key]*memoEntry
}

type memoEntry struct {
	done chan struct{}
	val  any
	err  error
}

// memoOf is ctx's memo, nil outside WithShared.
func memoOf(ctx context.Context) *memo {
	m, _ := ctx.Value(memoKey{}).(*memo)
	return m
}

// WithShared returns a context in which the reads made through it (Shared,
// GetShared, Prefetch, Seed) are made once and shared, for a request that
// reads one item several ways side by side (a sync).
func WithShared(ctx context.Context) context.Context {
	return context.WithValue(ctx, memoKey{}, &memo{entries: map[Key]*memoEntry{}})
}

// Unshared returns ctx without the shared reads of WithShared: for a read
// that must see what landed since the request's first.
func Unshared(ctx context.Context) context.Context {
	return context.WithValue(ctx, memoKey{}, (*memo)(nil))
}

// GetShared is Store.Get through ctx's memo, if any: the first caller of
// a key reads it, the others wait for its answer.
func GetShared[T any](ctx context.Context, st *Store, k Key, out *T) error {
	v, err := Shared(ctx, k, func() (T, error) {
		var v T
		err := st.Get(ctx, k, &v)
		return v, err
	})
	if err == nil {
		*out = v
	}
	return err
}

// Shared is read through ctx's memo under k, if any: the first caller of
// k reads, the others wait for its answer.
func Shared[T any](ctx context.Context, k Key, read func() (T, error)) (T, error) {
	m := memoOf(ctx)
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

// Seed gives ctx's memo, if any, v as the read of k, unless k was read
// already: an item a Query of several read serves the later reads of it
// alone.
func Seed[T any](ctx context.Context, k Key, v T) {
	m := memoOf(ctx)
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

// Prefetch reads the items at keys that ctx's memo, if any, has not read,
// in BatchGetItems side by side (MaxBatchGet keys each) begun here and
// ended in the background, as the shared reads of each: a request about to
// read many rooms' items one by one waits for one round trip instead of
// making a call each.
func Prefetch[T any](ctx context.Context, st *Store, keys []Key) {
	m := memoOf(ctx)
	if m == nil {
		return
	}
	pending := map[Key]*memoEntry{}
	var todo []Key
	m.mu.Lock()
	for _, k := range keys {
		if _, ok := m.entries[k]; ok {
			continue
		}
		e := &memoEntry{done: make(chan struct{}), err: ErrNotFound}
		m.entries[k] = e
		pending[k] = e
		todo = append(todo, k)
	}
	m.mu.Unlock()
	for len(todo) > 0 {
		batch := todo[:min(len(todo), MaxBatchGet)]
		todo = todo[len(batch):]
		go func() {
			err := st.GetMany(ctx, batch, func(k Key, decode func(any) error) error {
				var v T
				if err := decode(&v); err != nil {
					return err
				}
				if e := pending[k]; e != nil {
					e.val, e.err = v, nil
				}
				return nil
			})
			for _, k := range batch {
				e := pending[k]
				if err != nil {
					e.val, e.err = nil, err
				}
				close(e.done)
			}
		}()
	}
}

// SharedMany is what ctx's memo holds of the items at keys, waited for
// where their reads are under way, items not found left out; ok is false
// unless every key's read was begun (Prefetch), and the caller reads them.
func SharedMany[T any](ctx context.Context, keys []Key) (found []T, ok bool, err error) {
	m := memoOf(ctx)
	if m == nil {
		return nil, false, nil
	}
	entries := make([]*memoEntry, 0, len(keys))
	m.mu.Lock()
	for _, k := range keys {
		e, ok := m.entries[k]
		if !ok {
			m.mu.Unlock()
			return nil, false, nil
		}
		entries = append(entries, e)
	}
	m.mu.Unlock()
	for _, e := range entries {
		v, err := wait[T](ctx, e)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return nil, true, err
		default:
			found = append(found, v)
		}
	}
	return found, true, nil
}

// SharedSoFar is what ctx's memo holds under k, waited for if its read is
// under way; ok is false when no read of k was begun.
func SharedSoFar[T any](ctx context.Context, k Key) (v T, ok bool, err error) {
	m := memoOf(ctx)
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
