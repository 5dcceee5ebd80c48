package serverkeys

import (
	"context"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// deadlineFetcher records the deadline of each FetchKeys call.
type deadlineFetcher struct{ deadlines []time.Time }

func (f *deadlineFetcher) FetcherName() string { return "deadline" }

func (f *deadlineFetcher) FetchKeys(ctx context.Context, _ map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	d, _ := ctx.Deadline()
	f.deadlines = append(f.deadlines, d)
	return nil, nil
}

// TestTimed: every fetcher of one check runs until the one deadline set
// for the check, not a timeout each.
func TestTimed(t *testing.T) {
	k := &Keys{timeout: time.Hour}
	f := &deadlineFetcher{}
	ctx := k.withFetchDeadline(context.Background())
	want, _ := ctx.Value(deadlineKey{}).(time.Time)
	if want.IsZero() {
		t.Fatal("withFetchDeadline set no deadline")
	}
	if again, _ := k.withFetchDeadline(ctx).Value(deadlineKey{}).(time.Time); !again.Equal(want) {
		t.Fatalf("a second withFetchDeadline moved the deadline from %v to %v", want, again)
	}
	// Requests for this server's own keys only: no fetch marks to read.
	g := guarded{f, &Database{}, "local.example", &flights{}}
	reqs := map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{{ServerName: "local.example", KeyID: "ed25519:a"}: 0}
	for range 2 {
		g.FetchKeys(ctx, reqs)
	}
	g.FetchKeys(context.Background(), reqs)
	if len(f.deadlines) != 3 || !f.deadlines[0].Equal(want) || !f.deadlines[1].Equal(want) {
		t.Fatalf("deadlines %v, want %v twice", f.deadlines, want)
	}
	if d := f.deadlines[2]; d.IsZero() || d.After(time.Now().Add(DefaultFetchTimeout)) {
		t.Fatalf("without a deadline set: %v, want at most %v from now", d, DefaultFetchTimeout)
	}
}
