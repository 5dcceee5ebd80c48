// Package ratelimit counts requests per key in fixed windows kept in the
// table, so that every Lambda instance sees the same counts. A counter is
// one item per key and window, written with one UpdateItem and expiring with
// the table's TTL.
//
// Two ways of counting: Allow counts a request and refuses it past the
// limit (every request counts, as for the attempts of one address); Check
// and Add split that in two, so that only failures count and a counter is
// read before the work it guards (failed passwords: a stranger's wrong
// guesses must not use up the owner's tries).
package ratelimit

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Limit allows Burst requests per Window for each key. A Burst of 0 turns
// the limit off: nothing is counted or read.
type Limit struct {
	// Name keeps the counters of different limits apart ("login.address").
	Name   string
	Burst  int64
	Window time.Duration
}

// Off reports whether the limit counts nothing.
func (l Limit) Off() bool { return l.Burst <= 0 || l.Window <= 0 }

// Counter is one key under one limit.
type Counter struct {
	Limit Limit
	Key   string
}

// Limiter checks limits against the table.
type Limiter struct {
	Store *store.Store
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

type counterItem struct {
	PK      string `dynamodbav:"pk"`
	SK      string `dynamodbav:"sk"`
	Count   int64  `dynamodbav:"count"`
	Expires int64  `dynamodbav:"expires_at"`
}

// keyEscaper keeps a key from reading as another: a key holding "|" (the
// separator of key parts) cannot make the counter of another key.
var keyEscaper = strings.NewReplacer("%", "%25", "|", "%7C")

// window is the counter item of c in the window that holds now, and when
// that window ends.
func (c Counter) window(now time.Time) (store.Key, time.Time) {
	start := now.Truncate(c.Limit.Window)
	return store.Key{PK: fmt.Sprintf("rl|%s|%s|%d", c.Limit.Name, keyEscaper.Replace(c.Key), start.Unix()), SK: "rl"},
		start.Add(c.Limit.Window)
}

func (lim *Limiter) now() time.Time {
	if lim != nil && lim.Now != nil {
		return lim.Now()
	}
	return time.Now()
}

// Allow counts one request for key under l. Past the limit it returns a 429
// M_LIMIT_EXCEEDED error saying when the window ends. A nil Limiter or a
// limit that is off allows everything.
//
// Cost: one UpdateItem (1 WCU).
func (lim *Limiter) Allow(ctx context.Context, l Limit, key string) error {
	if lim == nil || l.Off() {
		return nil
	}
	now := lim.now()
	c := Counter{Limit: l, Key: key}
	k, end := c.window(now)
	n, err := lim.increment(ctx, k, end)
	if err != nil {
		return fmt.Errorf("rate limit %s: %w", l.Name, err)
	}
	if n > l.Burst {
		return httpapi.LimitExceeded(end.Sub(now))
	}
	return nil
}

// Check reads counters without counting: it returns a 429 M_LIMIT_EXCEEDED
// error when any of them has reached its limit in the current window (the
// wait is the latest end among those), else nil. Counters whose limit is
// off are skipped.
//
// Cost: one BatchGetItem of all the counters, 1 RCU each (found or not).
func (lim *Limiter) Check(ctx context.Context, counters ...Counter) error {
	if lim == nil {
		return nil
	}
	now := lim.now()
	ends := map[store.Key]time.Time{}
	bursts := map[store.Key]int64{}
	var keys []store.Key
	for _, c := range counters {
		if c.Limit.Off() {
			continue
		}
		k, end := c.window(now)
		keys = append(keys, k)
		ends[k], bursts[k] = end, c.Limit.Burst
	}
	if len(keys) == 0 {
		return nil
	}
	var wait time.Duration
	err := lim.Store.GetMany(ctx, keys, func(k store.Key, decode func(any) error) error {
		var it counterItem
		if err := decode(&it); err != nil {
			return err
		}
		if it.Count >= bursts[k] {
			wait = max(wait, ends[k].Sub(now))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("rate limit check: %w", err)
	}
	if wait > 0 {
		return httpapi.LimitExceeded(wait)
	}
	return nil
}

// Add counts one more under each counter whose limit is on, without
// checking any: what Check reads next.
//
// Cost: one UpdateItem per counter (1 WCU each).
func (lim *Limiter) Add(ctx context.Context, counters ...Counter) error {
	if lim == nil {
		return nil
	}
	now := lim.now()
	for _, c := range counters {
		if c.Limit.Off() {
			continue
		}
		k, end := c.window(now)
		if _, err := lim.increment(ctx, k, end); err != nil {
			return fmt.Errorf("rate limit %s: %w", c.Limit.Name, err)
		}
	}
	return nil
}

// increment adds one to a counter; the item outlives its window a little,
// for the TTL sweeper's slack.
func (lim *Limiter) increment(ctx context.Context, k store.Key, end time.Time) (int64, error) {
	return lim.Store.Increment(ctx, k, "count", end.Add(time.Minute))
}
