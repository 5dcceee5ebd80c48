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

func TestLimiter(t *testing.T) {
	srv, err := embedded.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx := context.Background()
	st, err := store.Open(ctx, store.Options{Table: "t", Endpoint: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CreateTable(ctx); err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	lim := &ratelimit.Limiter{Store: st, Now: func() time.Time { return now }}
	l := ratelimit.Limit{Name: "test", Burst: 3, Window: time.Minute}
	for i := range 3 {
		if err := lim.Allow(ctx, l, "1.2.3.4"); err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
	}
	err = lim.Allow(ctx, l, "1.2.3.4")
	var me *httpapi.Error
	if !errors.As(err, &me) || me.Status != http.StatusTooManyRequests || me.Code != "M_LIMIT_EXCEEDED" || me.RetryAfter <= 0 || me.RetryAfter > time.Minute {
		t.Fatalf("fourth request: %v", err)
	}
	if err := lim.Allow(ctx, l, "5.6.7.8"); err != nil {
		t.Fatalf("another key: %v", err)
	}
	now = now.Add(time.Minute)
	if err := lim.Allow(ctx, l, "1.2.3.4"); err != nil {
		t.Fatalf("next window: %v", err)
	}
}
