// Package ratelimit counts requests per key in fixed windows kept in the
// table, so that every Lambda instance sees the same counts. A counter is
// one item per key and window, written with one UpdateItem and expiring with
// the table's TTL.
package ratelimit

import (
	"context"
	"fmt"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Limit allows Burst requests per Window for each key.
type Limit struct {
	// Name keeps the counters of different limits apart ("login.address").
	Name   string
	Burst  int64
	Window time.Duration
}

// Limiter checks limits against the table.
type Limiter struct {
	Store *store.Store
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Allow counts one request for key under l. Past the limit it returns a 429
// M_LIMIT_EXCEEDED error saying when the window ends.
func (lim *Limiter) Allow(ctx context.Context, l Limit, key string) error {
	now := time.Now()
	if lim.Now != nil {
		now = lim.Now()
	}
	start := now.Truncate(l.Window)
	end := start.Add(l.Window)
	k := store.Key{PK: fmt.Sprintf("rl|%s|%s|%d", l.Name, key, start.Unix()), SK: "rl"}
	// The item outlives its window a little, for the TTL sweeper's slack.
	n, err := lim.Store.Increment(ctx, k, "count", end.Add(time.Minute))
	if err != nil {
		return fmt.Errorf("rate limit %s: %w", l.Name, err)
	}
	if n > l.Burst {
		return httpapi.LimitExceeded(end.Sub(now))
	}
	return nil
}
