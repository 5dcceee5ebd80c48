package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/store/embedded"
)

// The DynamoDB latency model (issue 19): in AWS a DynamoDB call from Lambda
// takes a few milliseconds, against about 0.1 ms for the embedded store on
// loopback, so what decides a request's latency there is how many calls it
// makes one after the other. With -dynamodb-latency D the bench runs one
// more `cirrus serve`, named "cirrus+D", whose DynamoDB is an embedded store
// in the bench process behind latencyProxy, which holds every call D before
// handing it to the store's handler: in the same process, so that the
// model adds D and not a second loopback exchange (two more wake-ups of
// both processes' threads per call, a few tenths of a millisecond on a
// loaded machine). It is measured beside the plain Cirrus and Dendrite, in the
// same alternating rounds, on the workloads whose endpoints set Modelled.

// defaultDynamoDBLatency is -dynamodb-latency's default, the per-call
// latency the goals are set for.
const defaultDynamoDBLatency = 4 * time.Millisecond

// latencyGoal is one of the p50 goals for the modelled server.
type latencyGoal struct {
	short    string // the goal's name in the report
	endpoint string // the workload's name in the results
	maxMS    float64
}

// latencyGoals are the p50 targets at +defaultDynamoDBLatency per
// DynamoDB call.
func latencyGoals() []latencyGoal {
	return []latencyGoal{
		{"send c=1", sendMessage(1).name(), 12},
		{"incremental sync", incrementalSync().name(), 15},
		{"messages 20", screenMessages().name(), 12},
		{"whoami", whoami().name(), 6},
		{"initial sync (50 rooms)", initialSync().name(), 250},
	}
}

// modelledName is the report's name of the Cirrus whose DynamoDB calls are
// delayed by latency.
func modelledName(latency time.Duration) string {
	return "cirrus+" + latency.String()
}

// isModelled reports whether a server name is a modelled Cirrus's.
func isModelled(name string) bool { return strings.HasPrefix(name, "cirrus+") }

// latencyProxy holds every request for delay before handing it to the
// backend, a handler in the same process, each in its own handler
// goroutine, so that concurrent calls wait side by side as they would on a
// network. A DynamoDB call is a small JSON request and answer: each is
// read whole before it is passed on, and the backend's work, once started,
// is not cut short by the caller going away, so that no answer reaches the
// caller truncated.
type latencyProxy struct {
	backend http.Handler
	delay   time.Duration
	// wait holds a request for d; it returns early with ctx's error when
	// the caller goes away. It is sleep in the bench, a stand-in in tests.
	wait func(ctx context.Context, d time.Duration) error
	// held, when not nil, counts how long wait really held each call, for
	// the report.
	held *holdMeter
}

// holdMeter counts the holds of a run's latency proxies by length, in
// holdBucket steps: the model is only as good as its holds are close to
// the latency it says it adds.
type holdMeter struct {
	mu      sync.Mutex
	buckets [holdBuckets]int64 // the last one holds all longer holds
	calls   int64
}

const (
	holdBucket  = 10 * time.Microsecond
	holdBuckets = 10_000 // up to 100 ms
)

func (m *holdMeter) add(d time.Duration) {
	i := min(max(int(d/holdBucket), 0), holdBuckets-1)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.buckets[i]++
	m.calls++
}

// quantile is the hold that a share q of the holds are no longer than, to
// the bucket's upper end; 0 before any hold.
func (m *holdMeter) quantile(q float64) time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.calls == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(m.calls)))
	var seen int64
	for i, n := range m.buckets {
		if seen += n; seen >= max(rank, 1) {
			return time.Duration(i+1) * holdBucket
		}
	}
	return holdBuckets * holdBucket
}

// hopHeaders are the headers of one connection, not passed on (RFC 9110,
// section 7.6.1).
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// newLatencyProxy hands requests to backend after wait(delay); a nil wait
// sleeps. held, when not nil, counts the holds.
func newLatencyProxy(backend http.Handler, delay time.Duration, wait func(context.Context, time.Duration) error, held *holdMeter) *latencyProxy {
	if wait == nil {
		wait = sleep
	}
	return &latencyProxy{backend: backend, delay: delay, wait: wait, held: held}
}

// ServeHTTP reads the request, waits, hands it to the backend with its
// method, path, query, headers (the SDK's signature, Host) and body as they
// came, and answers with the backend's status, headers and body.
func (p *latencyProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "latency proxy: read the request: "+err.Error(), http.StatusBadRequest)
		return
	}
	start := time.Now()
	if err := p.wait(r.Context(), p.delay); err != nil {
		return // the caller is gone
	}
	if p.held != nil {
		p.held.add(time.Since(start))
	}
	out := r.Clone(context.WithoutCancel(r.Context()))
	out.Body = io.NopCloser(bytes.NewReader(body))
	out.ContentLength = int64(len(body))
	for _, h := range hopHeaders {
		out.Header.Del(h)
	}
	rec := httptest.NewRecorder()
	p.backend.ServeHTTP(rec, out)
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	for _, h := range hopHeaders {
		w.Header().Del(h)
	}
	w.Header().Set("Content-Length", strconv.Itoa(rec.Body.Len()))
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
}

// timerSleep waits d on a Go timer, or until ctx is done.
func timerSleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// modelledDynamoDB is an embedded DynamoDB in the bench process with a
// latencyProxy in front of it on a loopback port.
type modelledDynamoDB struct {
	db    *embedded.Server
	proxy *latencyProxy
	srv   *http.Server
	url   string
}

// startModelledDynamoDB starts the embedded store and the proxy in front,
// which holds each call with wait (nil: sleep) for latency and counts the
// holds in held (when not nil).
func startModelledDynamoDB(latency time.Duration, wait func(context.Context, time.Duration) error, held *holdMeter) (*modelledDynamoDB, error) {
	db, err := embedded.Start("127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("embedded DynamoDB: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("latency proxy: %w", err)
	}
	m := &modelledDynamoDB{db: db, proxy: newLatencyProxy(db.Handler(), latency, wait, held), url: "http://" + ln.Addr().String()}
	m.srv = &http.Server{Handler: m.proxy, ReadHeaderTimeout: time.Minute}
	go func() { _ = m.srv.Serve(ln) }() // ErrServerClosed once close is called
	return m, nil
}

func (m *modelledDynamoDB) close() {
	m.srv.Close()
	m.db.Close()
}

// startModelledCirrus starts a `cirrus serve` on a modelled DynamoDB with
// latency added to every call, the holds counted in held; the store and the
// proxy stop with it.
func startModelledCirrus(ctx context.Context, bin string, pollInterval, latency time.Duration, held *holdMeter) (*server, error) {
	ddb, err := startModelledDynamoDB(latency, nil, held)
	if err != nil {
		return nil, err
	}
	env := append([]string{"DYNAMODB_ENDPOINT=" + ddb.url}, mediaEnv...)
	s, err := startRetrying(func() (*server, error) { return startCirrus(ctx, bin, pollInterval, env...) })
	if err != nil {
		ddb.close()
		return nil, err
	}
	s.Name, s.latency, s.release = modelledName(latency), latency, ddb.close
	return s, nil
}

// serversFor is the servers ep is measured on: the modelled Cirrus only
// for the endpoints that ask for it.
func serversFor(servers []*server, ep endpoint) []*server {
	if ep.Modelled {
		return servers
	}
	var out []*server
	for _, s := range servers {
		if s.latency == 0 {
			out = append(out, s)
		}
	}
	return out
}

// modelledGoals checks the modelled Cirrus's p50 against the goals,
// which are set at +defaultDynamoDBLatency per call; and the plain Cirrus's
// /messages of 100 and initial sync of 50 rooms against Dendrite's p50.
func modelledGoals(results []result, latency time.Duration) []goal {
	var out []goal
	name := modelledName(defaultDynamoDBLatency)
	for _, lg := range latencyGoals() {
		g := goal{Name: fmt.Sprintf("%s: p50 ms (%s)", lg.short, name), Target: fmt.Sprintf("<= %g", lg.maxMS)}
		switch {
		case latency == 0:
			g.Missing = "-dynamodb-latency 0 (no latency model)"
		case latency != defaultDynamoDBLatency:
			g.Missing = fmt.Sprintf("the goal is set at +%s, this run models +%s", defaultDynamoDBLatency, latency)
		default:
			r, ok := findResult(results, lg.endpoint, name)
			if g.Missing = unmeasured(r, ok, name); g.Missing == "" {
				v := r.P50MS
				g.Value, g.Met = &v, v <= lg.maxMS
			}
		}
		out = append(out, g)
	}
	for _, ep := range []string{roomMessages(messagesLimit).name(), initialSync().name()} {
		g := goal{Name: ep + ": p50 cirrus / dendrite", Target: "<= 1x"}
		c, okC := findResult(results, ep, "cirrus")
		d, okD := findResult(results, ep, "dendrite")
		if g.Missing = unmeasured(c, okC, "cirrus"); g.Missing == "" {
			g.Missing = unmeasured(d, okD, "dendrite")
		}
		if g.Missing == "" && d.P50MS <= 0 {
			g.Missing = "dendrite: p50 0 ms"
		}
		if g.Missing == "" {
			v := c.P50MS / d.P50MS
			g.Value, g.Met = &v, v <= 1
		}
		out = append(out, g)
	}
	return out
}

// printLatency writes the modelled workloads side by side: p50 of the plain
// Cirrus, of the modelled one and of Dendrite, and the DynamoDB round trips
// per request that make the difference.
func printLatency(w io.Writer, r *report) {
	if r.DynamoDBLatencyMS <= 0 {
		return
	}
	latency := time.Duration(r.DynamoDBLatencyMS * float64(time.Millisecond))
	name := modelledName(latency)
	held := ""
	if r.DynamoDBHeldP50MS > 0 {
		held = fmt.Sprintf(" (as measured: p50 %.2f ms, p99 %.2f ms; a hold ends late when the machine is busy, as under send c=8 and the initial syncs)", r.DynamoDBHeldP50MS, r.DynamoDBHeldP99MS)
	}
	fmt.Fprintf(w, "\nDynamoDB latency model (-dynamodb-latency %s): %s is cirrus serve on an embedded DynamoDB behind a proxy that holds every DynamoDB call %s%s before handing it to the store in its process (its own goroutine each, so parallel calls overlap); p50 ms, and DynamoDB calls and round trips (calls one after the other) per request:\n",
		latency, name, latency, held)
	cell := func(endpoint, server string) string {
		x, ok := findResult(r.Results, endpoint, server)
		if m := unmeasured(x, ok, server); m != "" {
			return "-"
		}
		return fmt.Sprintf("%.1f", x.P50MS)
	}
	for _, ep := range allWorkloads() {
		if !ep.Modelled {
			continue
		}
		m, ok := findResult(r.Results, ep.name(), name)
		if !ok {
			continue
		}
		costs := ""
		if m.Calls != nil {
			costs = fmt.Sprintf("; %s calls, %s round trips", perRequest(m.Calls), roundTrips(m))
		}
		fmt.Fprintf(w, "  %-34s cirrus %8s   %s %8s   dendrite %8s%s\n", ep.name(), cell(ep.name(), "cirrus"), name, cell(ep.name(), name), cell(ep.name(), "dendrite"), costs)
	}
}

// roundTrips is a result's DynamoDB round trips per request: n/a for a
// server without a DynamoDB log, "—" when Cirrus's log does not count them.
func roundTrips(x result) string {
	switch {
	case x.RoundTrips != nil:
		return fmt.Sprintf("%.2f", *x.RoundTrips)
	case x.Calls == nil:
		return "n/a"
	}
	return "—"
}
