package synctier_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/synctier"
)

// The tally of sync waits reads back as the mean number of syncs waiting
// over the whole minutes of the span: the current minute, still growing,
// and minutes before the span count for nothing, nor do holds under
// MinWait.
func TestDemand_Concurrency(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	// Twenty seconds into the current minute: the tally's items expire
	// (store TTL) by the wall clock, so the test's time is today's.
	now := time.Now().UTC().Truncate(time.Minute).Add(20 * time.Second)
	at := func(minutesAgo int) time.Time {
		return now.Truncate(time.Minute).Add(time.Duration(-minutesAgo)*time.Minute + 10*time.Second)
	}
	record := func(end time.Time, held time.Duration) {
		t.Helper()
		if err := synctier.RecordWait(ctx, st, end, held); err != nil {
			t.Fatal(err)
		}
	}
	// Two clients, each always waiting, over the five minutes before now's.
	for m := 1; m <= 5; m++ {
		for range 2 {
			record(at(m), 25*time.Second)
			record(at(m), 25*time.Second)
			record(at(m), 10*time.Second)
		}
	}
	record(at(0), time.Hour)                         // this minute: not yet whole
	record(at(6), time.Hour)                         // before the span
	record(at(3), synctier.MinWait-time.Millisecond) // an answer at once
	got, err := synctier.Concurrency(ctx, st, now, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(got-2) > 1e-9 {
		t.Fatalf("concurrency = %v, want 2", got)
	}
	if got, err := synctier.Concurrency(ctx, st, now.Add(time.Hour), 5*time.Minute); err != nil || got != 0 {
		t.Fatalf("an hour later: concurrency = %v, %v; want 0", got, err)
	}
	if _, err := synctier.Concurrency(ctx, st, now, 30*time.Second); err == nil {
		t.Fatal("a span under a minute was taken")
	}
}
