package ratelimit_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/ratelimit"
	"github.com/cirrus-matrix/cirrus/shared/store"
	"github.com/cirrus-matrix/cirrus/shared/store/embedded"
)

func newStore(t *testing.T) *store.Store {
	t.Helper()
	srv, err := embedded.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ctx := context.Background()
	st, err := store.Open(ctx, store.Options{Table: "t", Endpoint: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CreateTable(ctx); err != nil {
		t.Fatal(err)
	}
	return st
}

// limited checks that err is a 429 M_LIMIT_EXCEEDED asking to wait want.
func limited(t *testing.T, what string, err error, want time.Duration) {
	t.Helper()
	var me *httpapi.Error
	if !errors.As(err, &me) || me.Status != http.StatusTooManyRequests || me.Code != "M_LIMIT_EXCEEDED" || me.RetryAfter != want {
		t.Fatalf("%s: %v, want 429 M_LIMIT_EXCEEDED with retry after %v", what, err, want)
	}
}

func TestLimiter_Allow(t *testing.T) {
	ctx := context.Background()
	// 20 s into a minute window: 40 s remain.
	now := time.Unix(1_800_000_000, 0).Truncate(time.Minute).Add(20 * time.Second)
	lim := &ratelimit.Limiter{Store: newStore(t), Now: func() time.Time { return now }}
	l := ratelimit.Limit{Name: "test", Burst: 3, Window: time.Minute}
	for i := range 3 {
		if err := lim.Allow(ctx, l, "1.2.3.4"); err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
	}
	limited(t, "fourth request", lim.Allow(ctx, l, "1.2.3.4"), 40*time.Second)
	if err := lim.Allow(ctx, l, "5.6.7.8"); err != nil {
		t.Fatalf("another key: %v", err)
	}
	now = now.Add(time.Minute)
	if err := lim.Allow(ctx, l, "1.2.3.4"); err != nil {
		t.Fatalf("next window: %v", err)
	}
	off := ratelimit.Limit{Name: "off", Window: time.Minute}
	for i := range 5 {
		if err := lim.Allow(ctx, off, "1.2.3.4"); err != nil {
			t.Fatalf("a limit of 0 refused request %d: %v", i+1, err)
		}
	}
	var none *ratelimit.Limiter
	if err := none.Allow(ctx, l, "x"); err != nil {
		t.Fatalf("nil limiter: %v", err)
	}
}

// TestLimiter_CheckAdd: Check reads without counting, Add counts without
// checking; a key holding the separator cannot reach another key's counter.
func TestLimiter_CheckAdd(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0).Truncate(time.Minute)
	lim := &ratelimit.Limiter{Store: newStore(t), Now: func() time.Time { return now }}
	pair := ratelimit.Limit{Name: "failed", Burst: 2, Window: time.Minute}
	ceiling := ratelimit.Limit{Name: "failed.all", Burst: 3, Window: 10 * time.Minute}
	a := ratelimit.Counter{Limit: pair, Key: "@carol:example.org|1.1.1.1"}
	b := ratelimit.Counter{Limit: pair, Key: "@carol:example.org|2.2.2.2"}
	all := ratelimit.Counter{Limit: ceiling, Key: "@carol:example.org"}
	for i := range 5 {
		if err := lim.Check(ctx, a, all); err != nil {
			t.Fatalf("check %d counted: %v", i+1, err)
		}
	}
	if err := lim.Add(ctx, a, all); err != nil {
		t.Fatal(err)
	}
	if err := lim.Check(ctx, a, all); err != nil {
		t.Fatalf("after one failure: %v", err)
	}
	if err := lim.Add(ctx, a, all); err != nil {
		t.Fatal(err)
	}
	limited(t, "the pair after two failures", lim.Check(ctx, a, all), time.Minute)
	if err := lim.Check(ctx, b, all); err != nil {
		t.Fatalf("the same account from another address: %v", err)
	}
	if err := lim.Add(ctx, b, all); err != nil {
		t.Fatal(err)
	}
	// The ceiling's window is 10 minutes: the longer wait is asked for.
	limited(t, "the ceiling after three failures", lim.Check(ctx, b, all), 10*time.Minute)

	// "x|y" under one limit is not "x" and "y" joined by the separator.
	sneaky := ratelimit.Counter{Limit: ceiling, Key: "@carol:example.org|1.1.1.1"}
	if err := lim.Check(ctx, ratelimit.Counter{Limit: ceiling, Key: "@carol:example.org%7C1.1.1.1"}); err != nil {
		t.Fatalf("an escaped key read another's counter: %v", err)
	}
	if err := lim.Add(ctx, sneaky, sneaky, sneaky); err != nil {
		t.Fatal(err)
	}
	if err := lim.Check(ctx, ratelimit.Counter{Limit: ceiling, Key: "@carol:example.org%7C1.1.1.1"}); err != nil {
		t.Fatalf("a key with '|' counted for another key: %v", err)
	}
	limited(t, "the key with '|' itself", lim.Check(ctx, sneaky), 10*time.Minute)

	now = now.Add(time.Minute)
	if err := lim.Check(ctx, a); err != nil {
		t.Fatalf("the pair in the next window: %v", err)
	}
	if err := lim.Check(ctx, ratelimit.Counter{Limit: ratelimit.Limit{Name: "off"}, Key: "k"}); err != nil {
		t.Fatalf("a limit that is off: %v", err)
	}
}
