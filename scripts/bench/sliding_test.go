package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestSlidingWorkloads_Cirrus runs each sliding sync workload against a
// Cirrus stack for a sync user in three rooms, a few requests each, beside
// a Dendrite, which has no sliding sync: each measures on Cirrus with every
// request successful, and is reported failed on Dendrite with the reason.
func TestSlidingWorkloads_Cirrus(t *testing.T) {
	st := servertest.Start(t, "CIRRUS_REGISTRATION_SHARED_SECRET="+benchSecret)
	if r := st.Do(t, http.MethodGet, "/_matrix/client/versions", "", nil); !strings.Contains(string(r.Raw), `"org.matrix.simplified_msc3575":true`) {
		t.Skip("the server does not serve simplified sliding sync yet (no org.matrix.simplified_msc3575 in /versions)")
	}
	defer func(q time.Duration) { idleQuiet = q }(idleQuiet)
	idleQuiet = 0
	ctx := context.Background()
	s := &server{Name: "cirrus", ClientURL: st.URL, client: newHTTPClient()}
	if err := setupUser(ctx, s); err != nil {
		t.Fatal(err)
	}
	s.sync.done = true
	if s.sync.err = setupSync(ctx, s, 3, 2); s.sync.err != nil {
		t.Fatal(s.sync.err)
	}
	// As in the bench, the /sync workloads come first: the last message of
	// a room is then a wake-up's.
	if _, _, err := runWakeUp(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	dendrite := &server{Name: "dendrite", client: newHTTPClient()}
	for _, ep := range []endpoint{slidingFirst(), slidingIncremental(), slidingWakeUp(), slidingIdle(0), slidingIdle(200 * time.Millisecond)} {
		rs := measureEndpoint(ctx, []*server{s, dendrite}, ep, 3, 1, 1, 1)
		if len(rs) != 2 || rs[1].Failed != noSlidingSync.Error() {
			t.Fatalf("%s: results %+v, want cirrus's and dendrite's failure", ep.name(), rs)
		}
		if r := rs[0]; r.Failed != "" || r.Errors != 0 || r.P50MS <= 0 && ep.Label != slidingWakeUp().Label {
			t.Errorf("%s on cirrus: %+v", ep.name(), r)
		}
	}
	if got := slidingOf(s).first; !strings.HasPrefix(got, "3 rooms, 3 timeline events;") {
		t.Errorf("the first request's note %q, want 3 rooms with one event each", got)
	}
}

func TestPrintSliding(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	rep := &report{Requests: 50, Concurrency: 4, Rounds: 5, Results: []result{
		{Endpoint: "initial sync (50 rooms)", Server: "cirrus", Concurrency: 1, Requests: 5, P50MS: 900, P99MS: 1000, PerSecond: 1, Calls: f(504), RCU: f(955), WCU: f(0)},
		{Endpoint: "sliding sync first (50 rooms)", Server: "cirrus", Concurrency: 1, Requests: 5, P50MS: 300, P99MS: 400, PerSecond: 3, Calls: f(120), RCU: f(191), WCU: f(2)},
		{Endpoint: "sliding sync first (50 rooms)", Server: "dendrite", Concurrency: 1, Failed: noSlidingSync.Error()},
		{Endpoint: "sliding idle timeout=0", Server: "cirrus", Concurrency: 1, Requests: 100, P50MS: 5, P99MS: 6, PerSecond: 150, Calls: f(3), RCU: f(2), WCU: f(1)},
		{Endpoint: "sliding idle timeout=3000", Server: "cirrus", Concurrency: 1, Requests: 4, P50MS: 3050, P99MS: 3060, PerSecond: 0.3, Calls: f(6), RCU: f(3.5), WCU: f(1)},
	}}
	var b strings.Builder
	printTable(&b, rep)
	out := b.String()
	for _, want := range []string{
		"sliding sync first (50 rooms)            cirrus       1        5      0  300.000  400.000         3     120.00       —   191.00     2.00",
		"FAILED on dendrite sliding sync first (50 rooms): Dendrite v0.13.8 has no sliding sync (MSC4186)",
		"sliding sync (MSC4186, Element X's room list request) beside /sync, both on Cirrus",
		"sliding sync first (50 rooms): p50 300.0 ms, p99 400.0 ms, 120.00 calls, 191.00 RCU, 2.00 WCU; initial sync (50 rooms): p50 900.0 ms, 504.00 calls, 955.00 RCU, 0.00 WCU; p50 sliding/sync 0.33x, RCU sliding/sync 0.20x",
		"sliding sync incremental:    cirrus not measured",
		"idle sliding sync, timeout 3000 ms: 0.50 RCU per poll (3.00 polls beyond the first read)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("printTable output lacks %q; it is:\n%s", want, out)
		}
	}
}
