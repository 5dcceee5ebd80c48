package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestLatencyProxy: every request through the proxy is held once, for the
// proxy's delay, before it reaches the backend, with its method, path,
// query, headers and body as sent; the backend's answer comes back as is.
func TestLatencyProxy(t *testing.T) {
	var mu sync.Mutex
	var events []string // in order: "wait <d>" and "backend <body>"
	record := func(e string) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, e)
	}
	backend := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		record("backend " + string(body))
		for _, h := range []string{"Authorization", "X-Amz-Target", "X-Amz-Date", "Content-Type"} {
			w.Header().Set("Echo-"+h, r.Header.Get(h))
		}
		w.Header().Set("Echo-Host", r.Host)
		w.Header().Set("Echo-Forwarded", r.Header.Get("X-Forwarded-For"))
		w.WriteHeader(http.StatusTeapot)
		fmt.Fprintf(w, "%s %s?%s %s", r.Method, r.URL.Path, r.URL.RawQuery, body)
	})
	p := newLatencyProxy(backend, 4*time.Millisecond, func(_ context.Context, d time.Duration) error {
		record("wait " + d.String())
		return nil
	}, nil)
	front := httptest.NewServer(p)
	defer front.Close()

	for i := range 3 {
		body := fmt.Sprintf(`{"TableName":"cirrus","n":%d}`, i)
		req, _ := http.NewRequest(http.MethodPost, front.URL+"/db/path?q=1", strings.NewReader(body))
		req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=x/20260101/us-east-1/dynamodb/aws4_request, Signature=abc")
		req.Header.Set("X-Amz-Target", "DynamoDB_20120810.GetItem")
		req.Header.Set("X-Amz-Date", "20260101T000000Z")
		req.Header.Set("Content-Type", "application/x-amz-json-1.0")
		res, err := front.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if want := "POST /db/path?q=1 " + body; res.StatusCode != http.StatusTeapot || string(got) != want {
			t.Errorf("answer %d %q, want 418 %q", res.StatusCode, got, want)
		}
		for h, want := range map[string]string{
			"Authorization": req.Header.Get("Authorization"), "X-Amz-Target": "DynamoDB_20120810.GetItem",
			"X-Amz-Date": "20260101T000000Z", "Content-Type": "application/x-amz-json-1.0",
			"Host": strings.TrimPrefix(front.URL, "http://"), "Forwarded": "",
		} {
			if v := res.Header.Get("Echo-" + h); v != want {
				t.Errorf("the backend saw %s %q, want %q", h, v, want)
			}
		}
	}
	var want []string
	for i := range 3 {
		want = append(want, "wait 4ms", fmt.Sprintf(`backend {"TableName":"cirrus","n":%d}`, i))
	}
	if strings.Join(events, "\n") != strings.Join(want, "\n") {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(events, "\n"), strings.Join(want, "\n"))
	}
}

// TestLatencyProxy_Concurrent: concurrent requests wait side by side, not
// one after the other: every request's wait returns only once all of them
// are waiting, so a proxy that held one request at a time would hang.
func TestLatencyProxy_Concurrent(t *testing.T) {
	const n = 8
	backend := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(w, r.Body)
	})
	var mu sync.Mutex
	waiting := 0
	all := make(chan struct{})
	p := newLatencyProxy(backend, time.Millisecond, func(ctx context.Context, _ time.Duration) error {
		mu.Lock()
		if waiting++; waiting == n {
			close(all)
		}
		mu.Unlock()
		select {
		case <-all:
			return nil
		case <-time.After(time.Minute): // only bounds a hang
			return fmt.Errorf("not all %d requests waited at once", n)
		case <-ctx.Done():
			return ctx.Err()
		}
	}, nil)
	front := httptest.NewServer(p)
	defer front.Close()
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: n, MaxIdleConnsPerHost: n}}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			res, err := client.Post(front.URL, "text/plain", strings.NewReader(fmt.Sprint(i)))
			if err != nil {
				errs[i] = err
				return
			}
			defer res.Body.Close()
			if b, _ := io.ReadAll(res.Body); string(b) != fmt.Sprint(i) {
				errs[i] = fmt.Errorf("request %d: answer %d %q", i, res.StatusCode, b)
			}
		})
	}
	wg.Wait()
	if err := firstError(errs); err != nil {
		t.Fatal(err)
	}
}

// TestModelledDynamoDB_Cirrus runs a Cirrus stack on the modelled DynamoDB
// (the real SDK through the proxy to the embedded store): its requests
// succeed, and each of their DynamoDB calls was held once, for the model's
// latency.
func TestModelledDynamoDB_Cirrus(t *testing.T) {
	var mu sync.Mutex
	var waits []time.Duration
	held := &holdMeter{}
	ddb, err := startModelledDynamoDB(defaultDynamoDBLatency, func(_ context.Context, d time.Duration) error {
		mu.Lock()
		defer mu.Unlock()
		waits = append(waits, d)
		return nil
	}, held)
	if err != nil {
		t.Fatal(err)
	}
	defer ddb.close()
	st := servertest.Start(t, "CIRRUS_DYNAMODB_ENDPOINT="+ddb.url, "CIRRUS_REGISTRATION_SHARED_SECRET="+benchSecret)
	ctx := context.Background()
	s := &server{Name: modelledName(defaultDynamoDBLatency), ClientURL: st.URL, client: newHTTPClient()}
	if err := setupUser(ctx, s); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	before := len(waits)
	mu.Unlock()
	ep := whoami()
	l := load(ctx, s, ep, endpointURL(s, ep), 5, 1)
	if l.errors != 0 {
		t.Fatalf("whoami through the modelled DynamoDB: %d errors, the first: %v", l.errors, l.firstErr)
	}
	var calls int64
	for _, r := range st.Requests(t) {
		if strings.Contains(r.Route, "whoami") {
			calls += r.DynamoDB.Calls
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if calls == 0 || int64(len(waits)-before) < calls {
		t.Errorf("5 whoami made %d DynamoDB calls by their log; the proxy held %d requests meanwhile", calls, len(waits)-before)
	}
	for i, d := range waits {
		if d != defaultDynamoDBLatency {
			t.Fatalf("wait %d was for %s, want %s", i, d, defaultDynamoDBLatency)
		}
	}
	held.mu.Lock()
	defer held.mu.Unlock()
	if held.calls != int64(len(waits)) {
		t.Errorf("the hold meter counted %d holds, the proxy held %d requests", held.calls, len(waits))
	}
}

// TestSleep: the proxy's hold lasts at least what it is asked for, and
// ends early, with the context's error, once the caller goes away.
func TestSleep(t *testing.T) {
	for range 3 {
		start := time.Now()
		if err := sleep(context.Background(), 2*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < 2*time.Millisecond {
			t.Fatalf("a 2ms hold ended after %s", d)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(10*time.Millisecond, cancel)
	if err := sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("a hold whose caller went away: %v, want context.Canceled", err)
	}
}

func TestSummarise_RoundTrips(t *testing.T) {
	l := newRequestLog("")
	line := func(id, trips string) string {
		return fmt.Sprintf(`{"msg":"request","request_id":%q,"status":200,"duration_ms":1,"dynamodb":{"calls":4,"rcu":2,"wcu":1%s}}`+"\n", id, trips)
	}
	l.Write([]byte(line("a", `,"round_trips":2`) + line("b", `,"round_trips":3`) + line("c", "")))
	for _, tt := range []struct {
		ids  []string
		want string
	}{
		{[]string{"a", "b"}, "5"},
		{[]string{"a", "c"}, "nil"}, // not every line counts them
		{[]string{"c"}, "nil"},
	} {
		found, _ := l.match(tt.ids, 0)
		sum, _ := summarise(found)
		got := "nil"
		if sum.RoundTrips != nil {
			got = fmt.Sprint(*sum.RoundTrips)
		}
		if got != tt.want || sum.Calls != float64(4*len(tt.ids)) {
			t.Errorf("summarise(%v): round trips %s, calls %v; want %s, %d", tt.ids, got, sum.Calls, tt.want, 4*len(tt.ids))
		}
	}
}

// modelledResults is a run with the plain Cirrus, the modelled one and
// Dendrite on the latency goals' workloads.
func modelledResults() []result {
	f := func(v float64) *float64 { return &v }
	m := modelledName(defaultDynamoDBLatency)
	row := func(ep, server string, p50 float64, calls, trips *float64) result {
		r := result{Endpoint: ep, Server: server, Concurrency: 1, Requests: 50, P50MS: p50, P99MS: 2 * p50, PerSecond: 100, Calls: calls, RCU: calls, RoundTrips: trips}
		if calls != nil {
			r.WCU = f(0)
		}
		return r
	}
	return []result{
		row("/_matrix/client/v3/account/whoami", "cirrus", 0.9, f(1), nil),
		row("/_matrix/client/v3/account/whoami", m, 5.3, f(1), nil),
		row("/_matrix/client/v3/account/whoami", "dendrite", 0.3, nil, nil),
		row("send c=1", "cirrus", 3.4, f(12), f(6)),
		row("send c=1", m, 11.5, f(12), f(2)),
		row("send c=1", "dendrite", 9.5, nil, nil),
		row("messages 20", "cirrus", 4, f(5), nil),
		row("messages 20", m, 21.8, f(5), nil),
		row("messages 100", "cirrus", 6, f(5), nil),
		row("messages 100", "dendrite", 5, nil, nil),
		{Endpoint: "incremental sync", Server: m, Concurrency: 1, Failed: "first run: boom"},
		row("initial sync (50 rooms)", "cirrus", 400, f(500), nil),
		row("initial sync (50 rooms)", m, 240, f(500), nil),
		row("initial sync (50 rooms)", "dendrite", 500, nil, nil),
	}
}

func TestModelledGoals(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	results := modelledResults()
	want := []goal{
		{Name: "send c=1: p50 ms (cirrus+4ms)", Target: "<= 12", Value: f(11.5), Met: true},
		{Name: "incremental sync: p50 ms (cirrus+4ms)", Target: "<= 15", Missing: "cirrus+4ms failed"},
		{Name: "messages 20: p50 ms (cirrus+4ms)", Target: "<= 12", Value: f(21.8)},
		{Name: "whoami: p50 ms (cirrus+4ms)", Target: "<= 6", Value: f(5.3), Met: true},
		{Name: "initial sync (50 rooms): p50 ms (cirrus+4ms)", Target: "<= 250", Value: f(240), Met: true},
		{Name: "messages 100: p50 cirrus / dendrite", Target: "<= 1x", Value: f(1.2)},
		{Name: "initial sync (50 rooms): p50 cirrus / dendrite", Target: "<= 1x", Value: f(0.8), Met: true},
	}
	check := func(t *testing.T, got, want []goal) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("modelledGoals = %d goals, want %d: %+v", len(got), len(want), got)
		}
		for i := range got {
			g, w := got[i], want[i]
			if g.Name != w.Name || g.Target != w.Target || g.Met != w.Met || g.Missing != w.Missing ||
				(g.Value == nil) != (w.Value == nil) || (g.Value != nil && math.Abs(*g.Value-*w.Value) > 1e-9) {
				t.Errorf("goal %d = %s, want %s", i, goalString(g), goalString(w))
			}
		}
	}
	check(t, modelledGoals(results, defaultDynamoDBLatency), want)

	// At another latency, or none, the +4 ms goals are not measured.
	for latency, missing := range map[time.Duration]string{
		8 * time.Millisecond: "the goal is set at +4ms, this run models +8ms",
		0:                    "-dynamodb-latency 0 (no latency model)",
	} {
		other := modelledGoals(results, latency)
		for i := range 5 {
			want[i].Value, want[i].Met, want[i].Missing = nil, false, missing
		}
		check(t, other, want)
	}
}

func TestPrintTable_Latency(t *testing.T) {
	rep := &report{Requests: 50, Concurrency: 4, Rounds: 5, Results: modelledResults(), DynamoDBLatencyMS: 4,
		Servers: []serverInfo{{Name: "cirrus", PeakRSSBytes: 40 << 20}, {Name: "cirrus+4ms", PeakRSSBytes: 30 << 20}, {Name: "dendrite", PeakRSSBytes: 50 << 20}}}
	rep.Goals = modelledGoals(rep.Results, defaultDynamoDBLatency)
	var b strings.Builder
	printTable(&b, rep)
	out := b.String()
	// Cirrus, the modelled Cirrus, Dendrite; the ratios on the plain
	// Cirrus's row only.
	at := -1
	for _, row := range []string{
		"send c=1                                 cirrus       1       50      0    3.400    6.800       100      12.00    6.00    12.00     0.00    0.36x    0.36x      1.00x\n",
		"send c=1                                 cirrus+4ms   1       50      0   11.500   23.000       100      12.00    2.00    12.00     0.00                             \n",
		"send c=1                                 dendrite     1       50      0    9.500   19.000       100        n/a     n/a      n/a      n/a                             \n",
	} {
		i := strings.Index(out, row)
		if i <= at {
			t.Errorf("printTable output lacks %q after the row before; it is:\n%s", row, out)
		}
		at = i
	}
	for _, want := range []string{
		"/_matrix/client/v3/account/whoami        cirrus+4ms   1       50      0    5.300   10.600       100       1.00       —     1.00     0.00",
		"incremental sync                         cirrus+4ms   1 FAILED (see below)",
		"cirrus+4ms: cirrus serve with every DynamoDB call held 4ms by a proxy",
		"peak RSS (VmHWM) cirrus+4ms                     30.0 MiB (its DynamoDB runs in the bench process, not included)",
		"DynamoDB latency model (-dynamodb-latency 4ms): cirrus+4ms is cirrus serve on an embedded DynamoDB behind a proxy that holds every DynamoDB call 4ms",
		"  send c=1                           cirrus      3.4   cirrus+4ms     11.5   dendrite      9.5; 12.00 calls, 2.00 round trips",
		"  /_matrix/client/v3/account/whoami  cirrus      0.9   cirrus+4ms      5.3   dendrite      0.3; 1.00 calls, — round trips",
		"  send c=1: p50 ms (cirrus+4ms)                   11.50   target <= 12   met",
		"  incremental sync: p50 ms (cirrus+4ms)             n/a   target <= 15   NOT MEASURED: cirrus+4ms failed",
		"  messages 20: p50 ms (cirrus+4ms)                21.80   target <= 12   NOT MET",
		"  whoami: p50 ms (cirrus+4ms)                      5.30   target <= 6    met",
		"  initial sync (50 rooms): p50 ms (cirrus+4ms)   240.00   target <= 250  met",
		"  messages 100: p50 cirrus / dendrite              1.20   target <= 1x   NOT MET",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("printTable output lacks %q; it is:\n%s", want, out)
		}
	}
	if strings.Contains(out, "messages 100                             cirrus+4ms") {
		t.Errorf("a row for a workload the modelled Cirrus did not run:\n%s", out)
	}
}

// TestServersFor: the modelled Cirrus runs only the endpoints that ask for
// it; the room and sync workloads the goals name do.
func TestServersFor(t *testing.T) {
	plain, modelled, dendrite := &server{Name: "cirrus"}, &server{Name: "cirrus+4ms", latency: 4 * time.Millisecond}, &server{Name: "dendrite"}
	all := []*server{plain, modelled, dendrite}
	if got := serversFor(all, endpoint{Path: "/_matrix/client/versions"}); len(got) != 2 || got[0] != plain || got[1] != dendrite {
		t.Errorf("serversFor(versions) = %v", got)
	}
	if got := serversFor(all, whoami()); len(got) != 3 {
		t.Errorf("serversFor(whoami) = %d servers, want 3", len(got))
	}
	named := map[string]bool{}
	for _, ep := range allWorkloads() {
		if ep.Modelled {
			named[ep.name()] = true
		}
	}
	for _, g := range latencyGoals() {
		if !named[g.endpoint] {
			t.Errorf("the goal %q names %q, which no modelled workload measures", g.short, g.endpoint)
		}
	}
}

// TestHoldMeter: the report's hold percentiles come from the holds
// counted, to the upper end of their 10 µs bucket; a hold past the last
// bucket counts in it.
func TestHoldMeter(t *testing.T) {
	var m holdMeter
	if got := m.quantile(0.5); got != 0 {
		t.Fatalf("p50 before any hold: %s, want 0", got)
	}
	for range 97 {
		m.add(4010 * time.Microsecond)
	}
	m.add(9 * time.Millisecond)
	m.add(9 * time.Millisecond)
	m.add(time.Second)
	for _, tt := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 4020 * time.Microsecond}, {0.97, 4020 * time.Microsecond}, {0.99, 9010 * time.Microsecond}, {1, 100 * time.Millisecond}} {
		if got := m.quantile(tt.q); got != tt.want {
			t.Errorf("quantile(%v) = %s, want %s", tt.q, got, tt.want)
		}
	}
}
