package notify

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// TestSplit: a batch whose recipients do not fit one message goes in
// several, each under the limit, every recipient of every event once.
func TestSplit(t *testing.T) {
	var big []string
	for i := range 20000 {
		big = append(big, fmt.Sprintf("@user%05d:example.org", i))
	}
	for _, tc := range []struct {
		name string
		evs  []jobEvent
		jobs int
	}{
		{"one small event", []jobEvent{{RoomID: "!r:example.org", EventID: "$a", Seq: 1, To: []string{"@a:example.org"}}}, 1},
		{"a room of 20,000", []jobEvent{{RoomID: "!r:example.org", EventID: "$a", Seq: 1, To: big}}, 3},
		{"two events there", []jobEvent{{RoomID: "!r:example.org", EventID: "$a", Seq: 1, To: big}, {RoomID: "!r:example.org", EventID: "$b", Seq: 2, To: big}}, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			jobs := split(tc.evs, maxJobBytes)
			if len(jobs) != tc.jobs {
				t.Errorf("%d jobs, want %d", len(jobs), tc.jobs)
			}
			seen := map[string]int{}
			for _, j := range jobs {
				body, err := json.Marshal(j)
				if err != nil {
					t.Fatal(err)
				}
				if len(body) > maxJobBytes {
					t.Errorf("job of %d bytes, over %d", len(body), maxJobBytes)
				}
				for _, e := range j.Events {
					for _, u := range e.To {
						seen[e.EventID+" "+u]++
					}
				}
			}
			want := 0
			for _, e := range tc.evs {
				want += len(e.To)
				for _, u := range e.To {
					if seen[e.EventID+" "+u] != 1 {
						t.Fatalf("%s for %s in %d jobs", e.EventID, u, seen[e.EventID+" "+u])
					}
				}
			}
			if len(seen) != want {
				t.Errorf("%d (event, recipient) pairs, want %d", len(seen), want)
			}
		})
	}
}

// TestBackoff: 1 s doubling to an hour, and about a day of tries.
func TestBackoff(t *testing.T) {
	s := &Service{}
	for attempt, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 5: 16 * time.Second,
		12: 2048 * time.Second, 13: time.Hour, 40: time.Hour} {
		if got := s.Backoff(attempt); got != want {
			t.Errorf("Backoff(%d) = %v, want %v", attempt, got, want)
		}
	}
	var total time.Duration
	n := 0
	for n = 1; total < DefaultGiveUpAfter; n++ {
		total += s.Backoff(n)
	}
	if n > maxAttempts {
		t.Errorf("a day of backoff takes %d tries, over maxAttempts %d", n, maxAttempts)
	}
	t.Logf("a day of failures: %d tries", n-1)
}
