package store

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"
)

// event is a call's beginning or end in a scripted order of events.
type event struct {
	call  int
	begin bool
}

// play runs the events in order against the meters of ctx, as the SDK
// middleware would for calls whose beginnings and ends fall in that order.
func play(ctx context.Context, events []event) {
	depths := map[int][]int64{}
	for _, e := range events {
		if e.begin {
			depths[e.call] = callBegins(ctx)
		} else {
			callEnds(ctx, depths[e.call])
		}
	}
}

func b(call int) event { return event{call, true} }
func e(call int) event { return event{call, false} }

func TestMeter_RoundTrips(t *testing.T) {
	for _, tc := range []struct {
		name   string
		events []event
		want   int64
	}{
		{"none", nil, 0},
		{"one call", []event{b(1), e(1)}, 1},
		{"sequential", []event{b(1), e(1), b(2), e(2), b(3), e(3)}, 3},
		{"overlapping", []event{b(1), b(2), e(1), e(2)}, 1},
		{"nested", []event{b(1), b(2), b(3), e(3), e(2), e(1)}, 1},
		// 3 begins after 1 ended, while 2 runs: 3 waited for 1.
		{"chained", []event{b(1), b(2), e(1), b(3), e(2), e(3)}, 2},
		// Two chains of two side by side: two, not four.
		{"two chains side by side", []event{b(1), b(3), e(1), b(2), e(3), b(4), e(2), e(4)}, 2},
		{"parallel then sequential", []event{b(1), b(2), e(2), e(1), b(3), e(3)}, 2},
		{"sequential then parallel", []event{b(1), e(1), b(2), b(3), b(4), e(3), e(4), e(2)}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, m := WithMeter(context.Background())
			play(ctx, tc.events)
			if got := m.Usage().RoundTrips; got != tc.want {
				t.Errorf("round trips %d, want %d", got, tc.want)
			}
			if got := m.Usage().RoundTrips; got != sweep(intervals(tc.events)) {
				t.Errorf("round trips %d, the sweep of the intervals %d", got, sweep(intervals(tc.events)))
			}
		})
	}
}

// TestMeter_RoundTripsParent has a job's meter inside a test's: the test's
// meter sees the job's calls beside its own, the job's only its own.
func TestMeter_RoundTripsParent(t *testing.T) {
	testCtx, test := WithMeter(context.Background())
	jobCtx, job := WithMeter(testCtx)

	play(jobCtx, []event{b(1), e(1)})
	// The test's call overlaps the job's second one.
	job2 := callBegins(jobCtx)
	own := callBegins(testCtx)
	callEnds(jobCtx, job2)
	callEnds(testCtx, own)
	play(testCtx, []event{b(3), e(3)})

	if got := job.Usage().RoundTrips; got != 2 {
		t.Errorf("job: %d round trips, want 2", got)
	}
	if got := test.Usage().RoundTrips; got != 3 {
		t.Errorf("test: %d round trips, want 3 (the job's two, the second overlapping the test's own, then one)", got)
	}
	// Calls are what record counts, unchanged: none here.
	if got := test.Usage().Calls; got != 0 {
		t.Errorf("test: %d calls recorded, want 0", got)
	}
}

// TestMeter_RoundTripsSweep checks the meter's count against the sweep of
// the definition on random sets of intervals.
func TestMeter_RoundTripsSweep(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 2026))
	for range 500 {
		n := 1 + rng.IntN(12)
		// Distinct instants 0..2n-1; call i begins at the smaller of its
		// two and ends at the larger.
		at := rng.Perm(2 * n)
		events := make([]event, 2*n)
		for i := range n {
			s, f := at[2*i], at[2*i+1]
			if s > f {
				s, f = f, s
			}
			events[s], events[f] = b(i), e(i)
		}
		ctx, m := WithMeter(context.Background())
		play(ctx, events)
		if got, want := m.Usage().RoundTrips, sweep(intervals(events)); got != want {
			t.Fatalf("events %v: %d round trips, the sweep says %d", events, got, want)
		}
	}
}

// intervals are the calls' [begin, end] in the positions of events.
func intervals(events []event) [][2]int {
	byCall := map[int]*[2]int{}
	for i, ev := range events {
		if byCall[ev.call] == nil {
			byCall[ev.call] = &[2]int{}
		}
		if ev.begin {
			byCall[ev.call][0] = i
		} else {
			byCall[ev.call][1] = i
		}
	}
	var out [][2]int
	for _, iv := range byCall {
		out = append(out, *iv)
	}
	return out
}

// sweep is the definition of Meter: a call's depth is one more than the
// deepest call that ended before it began; the round trips are the
// deepest depth.
func sweep(calls [][2]int) int64 {
	var deepest int64
	depth := make([]int64, len(calls))
	slices.SortFunc(calls, func(a, b [2]int) int { return a[0] - b[0] })
	for i, c := range calls {
		depth[i] = 1
		for j := range i {
			if calls[j][1] < c[0] {
				depth[i] = max(depth[i], depth[j]+1)
			}
		}
		deepest = max(deepest, depth[i])
	}
	return deepest
}
