package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// endpoint is one request of the workload. Federation endpoints go to the
// server's HTTPS listener, the others to its plain HTTP one.
type endpoint struct {
	// Label names the endpoint in the report instead of its method and path.
	Label string
	// Path may hold {roomId}, replaced by the server's bench room, and
	// {txnId}, replaced by a new transaction ID in every request.
	Path       string
	Federation bool
	// Method is GET unless set; Body is sent as JSON.
	Method, Body string
	// Auth sends the bench user's access token; SyncUser sends the sync
	// user's instead (see sync.go).
	Auth, SyncUser bool
	// MaxRequests caps -n for expensive endpoints (a login hashes a password).
	MaxRequests int
	// NoWarmup leaves out the warm-up requests: the first request prepare
	// sends is the only one (for endpoints that take seconds).
	NoWarmup bool
	// Concurrency, when set, is used instead of -c.
	Concurrency int
	// Fill is how many messages the bench room is sent, unmeasured, before
	// the endpoint is measured.
	Fill int
	// Setup, when set, readies the server before the endpoint is measured
	// (after Fill); an error reports the endpoint failed on that server.
	Setup func(ctx context.Context, s *server) error
	// Check, when set, checks the body of a first answer before the
	// endpoint is measured, so that an answer too short to compare is not
	// measured as a fast one.
	Check func(s *server, body []byte) error
	// Run, when set, is one measured iteration instead of one request to
	// Path: it returns the request ID to find in the server's log and the
	// time to count, which need not be the whole iteration's.
	Run func(ctx context.Context, s *server) (requestID string, took time.Duration, err error)
	// Describe, when set, says what a labelled endpoint does in the report
	// instead of its method and path.
	Describe string
	// Note, when set, is a remark on the server's answers for the report,
	// read once the endpoint is measured ("" for none).
	Note func(s *server) string
	// TwoInstances runs the endpoint on two Cirrus instances sharing one
	// DynamoDB, not on the servers of the run (see measureTwoInstances).
	TwoInstances bool
	// Modelled measures the endpoint on the Cirrus of the DynamoDB latency
	// model too (latency.go), when the run has one.
	Modelled bool
}

// token is the access token a request for ep sends to s, "" for none.
func (ep endpoint) token(s *server) string {
	switch {
	case ep.SyncUser:
		return s.sync.token
	case ep.Auth:
		return s.token
	}
	return ""
}

// method is the endpoint's HTTP method, GET unless set.
func (ep endpoint) method() string {
	if ep.Method == "" {
		return http.MethodGet
	}
	return ep.Method
}

// name labels an endpoint in the report.
func (ep endpoint) name() string {
	if ep.Label != "" {
		return ep.Label
	}
	if ep.method() != http.MethodGet {
		return ep.Method + " " + ep.Path
	}
	return ep.Path
}

// usesRoom reports whether the endpoint's path names the bench room.
func (ep endpoint) usesRoom() bool { return strings.Contains(ep.Path, "{roomId}") }

// endpointURL is the URL of ep on s, with the bench room in place of
// {roomId}; {txnId} is left for send.
func endpointURL(s *server, ep endpoint) string {
	base := s.ClientURL
	if ep.Federation {
		base = s.FederationURL
	}
	return base + strings.ReplaceAll(ep.Path, "{roomId}", url.PathEscape(s.room.ID))
}

// workload is what every server is measured on, in this order: the room
// workloads last, as they grow the servers' databases.
var workload = []endpoint{
	{Path: "/_matrix/client/versions"},
	{Path: "/.well-known/matrix/client"},
	{Path: "/.well-known/matrix/server"},
	{Path: "/_matrix/federation/v1/version", Federation: true},
	{Path: "/_matrix/key/v2/server", Federation: true},
	{Path: "/_matrix/client/v3/login", Method: http.MethodPost, MaxRequests: 40,
		Body: `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"` + benchUser + `"},"password":"` + benchPassword + `"}`},
	whoami(),
	sendMessage(1),
	sendMessage(goalConcurrency),
	screenMessages(),
	roomMessages(messagesLimit),
}

// whoami is GET /account/whoami with the bench user's token: the access
// token's lookup and little else. One client at a time, as the latency
// goal is set: at -c 4 on two cores the requests queue for the CPUs.
func whoami() endpoint {
	return endpoint{Path: "/_matrix/client/v3/account/whoami", Auth: true, Modelled: true, Concurrency: 1}
}

// syncWorkload is measured after workload, on fresh servers.
var syncWorkload = []endpoint{
	initialSync(),
	incrementalSync(),
	wakeUp(false),
	idleSync(0),
	idleSync(idleTimeout),
	wakeUp(true),
	// Sliding sync (sliding.go), on Cirrus only: Dendrite has none.
	slidingFirst(),
	slidingIncremental(),
	slidingWakeUp(),
	slidingIdle(0),
	slidingIdle(idleTimeout),
}

// allWorkloads is every endpoint of the report, in its order.
func allWorkloads() []endpoint {
	return append(append(append(slices.Clone(workload), mediaWorkload()...), syncWorkload...), fedWorkload()...)
}

// result is one endpoint measured on one server.
type result struct {
	Endpoint string `json:"endpoint"`
	Server   string `json:"server"`
	URL      string `json:"url"`
	// Failed says why the endpoint could not be measured on the server (no
	// bench room, its first request or all requests failed); the figures
	// are then zero.
	Failed      string `json:"failed,omitempty"`
	Requests    int    `json:"requests"`
	Concurrency int    `json:"concurrency"`
	// Errors are failed requests and answers other than 200; latency
	// percentiles, throughput and DynamoDB figures cover the successful
	// requests only.
	Errors     int    `json:"errors"`
	FirstError string `json:"first_error,omitempty"`
	// Note is the endpoint's remark on this server's answers.
	Note      string  `json:"note,omitempty"`
	P50MS     float64 `json:"p50_ms"`
	P99MS     float64 `json:"p99_ms"`
	PerSecond float64 `json:"req_per_s"`
	// From the server's request log, matched by X-Request-Id; null for a
	// server that logs no DynamoDB usage (Dendrite).
	LogMatched  *int     `json:"log_lines_matched,omitempty"`
	ServerP50MS *float64 `json:"server_p50_ms,omitempty"`
	Calls       *float64 `json:"dynamodb_calls_per_request"`
	RCU         *float64 `json:"rcu_per_request"`
	WCU         *float64 `json:"wcu_per_request"`
	// RoundTrips is the DynamoDB calls one after the other per request,
	// null unless every matched log line counts them.
	RoundTrips *float64 `json:"dynamodb_round_trips_per_request,omitempty"`
}

// measureEndpoint measures ep on the servers ready for it, and reports it
// as failed, with the reason, on the others; -c is c unless ep sets it.
func measureEndpoint(ctx context.Context, servers []*server, ep endpoint, n, c, warmup, rounds int) []result {
	if ep.Concurrency > 0 {
		c = ep.Concurrency
	}
	var ready []*server
	failed := make(map[*server]error)
	for _, s := range servers {
		if err := prepare(ctx, s, ep); err != nil {
			failed[s] = err
		} else {
			ready = append(ready, s)
		}
	}
	measured := measure(ctx, ready, ep, n, c, warmup, rounds)
	results := make([]result, 0, len(servers))
	for _, s := range servers {
		if err, ok := failed[s]; ok {
			results = append(results, result{Endpoint: ep.name(), Server: s.Name, Concurrency: c, Failed: err.Error()})
			continue
		}
		r := measured[0]
		if ep.Note != nil {
			r.Note = ep.Note(s)
		}
		results, measured = append(results, r), measured[1:]
	}
	return results
}

// prepare readies s for ep: it needs the bench room if ep names it, fills
// the room if ep asks, runs ep's Setup, and checks that one request (or
// one run) succeeds, so that an endpoint the server lacks is reported at
// once with its error.
func prepare(ctx context.Context, s *server, ep endpoint) error {
	if s.startErr != nil {
		return s.startErr
	}
	if ep.usesRoom() && s.room.ID == "" {
		return fmt.Errorf("no bench room: %w", s.room.Err)
	}
	if ep.Fill > 0 {
		if err := fillRoom(ctx, s, ep.Fill); err != nil {
			return err
		}
	}
	if ep.Setup != nil {
		if err := ep.Setup(ctx, s); err != nil {
			return err
		}
	}
	if ep.Run != nil {
		if _, _, err := ep.Run(ctx, s); err != nil {
			return fmt.Errorf("first run: %w", err)
		}
		return nil
	}
	url := endpointURL(s, ep)
	if _, err := send(ctx, s, ep, url); err != nil {
		return fmt.Errorf("first request: %w", err)
	}
	if ep.Check == nil {
		return nil
	}
	var body json.RawMessage
	if err := requestJSON(ctx, s, ep.method(), url, ep.token(s), nil, &body); err != nil {
		return fmt.Errorf("request to check: %w", err)
	}
	if err := ep.Check(s, body); err != nil {
		return fmt.Errorf("%s %s: %w", ep.method(), url, err)
	}
	return nil
}

// measure sends each server warmup requests to the endpoint, then n
// requests with c workers, in rounds that alternate between the servers so
// that a change in the machine's background load hits them alike; and
// summarises the successful requests.
func measure(ctx context.Context, servers []*server, ep endpoint, n, c, warmup, rounds int) []result {
	if ep.MaxRequests > 0 && n > ep.MaxRequests {
		n, warmup = ep.MaxRequests, min(warmup, ep.MaxRequests/4)
	}
	if ep.NoWarmup {
		warmup = 0
	}
	urls := make([]string, len(servers))
	for i, s := range servers {
		urls[i] = endpointURL(s, ep)
		if warmup > 0 {
			load(ctx, s, ep, urls[i], warmup, c)
		}
	}
	rounds = max(1, min(rounds, n))
	total := make([]loadResult, len(servers))
	for round := range rounds {
		size := n / rounds
		if round == 0 {
			size += n % rounds
		}
		for k := range servers {
			i := k
			if round%2 == 1 {
				i = len(servers) - 1 - k // the other one first
			}
			total[i].add(load(ctx, servers[i], ep, urls[i], size, c))
		}
	}

	results := make([]result, len(servers))
	for i, s := range servers {
		l := total[i]
		r := result{
			Endpoint: ep.name(), Server: s.Name, URL: urls[i], Requests: n, Concurrency: c, Errors: l.errors,
			P50MS:     ms(percentile(l.latencies, 0.50)),
			P99MS:     ms(percentile(l.latencies, 0.99)),
			PerSecond: float64(len(l.latencies)) / l.elapsed.Seconds(),
		}
		if l.firstErr != nil {
			r.FirstError = l.firstErr.Error()
			if line := serverError(s); line != "" {
				r.FirstError += "; the server's last error line: " + line
			}
		}
		if len(l.latencies) == 0 {
			r.Failed = fmt.Sprintf("all %d requests failed", n)
		}
		if s.Log != nil {
			entries, _ := s.Log.match(l.ids, 2*time.Second)
			sum, serverP50 := summarise(entries)
			matched := len(entries)
			r.LogMatched, r.ServerP50MS = &matched, serverP50
			if matched > 0 {
				per := func(v float64) *float64 { x := v / float64(matched); return &x }
				r.Calls, r.RCU, r.WCU = per(sum.Calls), per(sum.RCU), per(sum.WCU)
				if sum.RoundTrips != nil {
					r.RoundTrips = per(*sum.RoundTrips)
				}
			}
		}
		results[i] = r
	}
	return results
}

// serverError is the last error line in s's log, "" for none or for a
// server without a log the bench reads.
func serverError(s *server) string {
	if s.Log == nil {
		return ""
	}
	return s.Log.lastError()
}

// summarise adds up the DynamoDB usage of log entries and takes the median
// of the durations the server measured itself (nil for no entries). The
// round trips are added up only when every entry counts them.
func summarise(entries []logEntry) (usage, *float64) {
	var sum usage
	var trips float64
	counted := 0
	durations := make([]time.Duration, 0, len(entries))
	for _, e := range entries {
		sum.Calls += e.DynamoDB.Calls
		sum.RCU += e.DynamoDB.RCU
		sum.WCU += e.DynamoDB.WCU
		if e.DynamoDB.RoundTrips != nil {
			trips += *e.DynamoDB.RoundTrips
			counted++
		}
		durations = append(durations, time.Duration(e.DurationMS*float64(time.Millisecond)))
	}
	if counted > 0 && counted == len(entries) {
		sum.RoundTrips = &trips
	}
	if len(durations) == 0 {
		return sum, nil
	}
	p50 := ms(percentile(durations, 0.50))
	return sum, &p50
}

type loadResult struct {
	latencies []time.Duration // of the successful requests
	ids       []string        // X-Request-Id of the successful requests that had one
	errors    int
	firstErr  error
	elapsed   time.Duration
}

// add appends another load's figures to l.
func (l *loadResult) add(o loadResult) {
	l.latencies = append(l.latencies, o.latencies...)
	l.ids = append(l.ids, o.ids...)
	l.errors += o.errors
	if l.firstErr == nil {
		l.firstErr = o.firstErr
	}
	l.elapsed += o.elapsed
}

// load sends n requests for ep to s at url from c workers.
func load(ctx context.Context, s *server, ep endpoint, url string, n, c int) loadResult {
	lat := make([]time.Duration, n)
	ids := make([]string, n)
	errs := make([]error, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range min(c, n) {
		wg.Go(func() {
			for {
				k := int(next.Add(1)) - 1
				if k >= n {
					return
				}
				if ep.Run != nil {
					ids[k], lat[k], errs[k] = ep.Run(ctx, s)
					continue
				}
				t0 := time.Now()
				ids[k], errs[k] = send(ctx, s, ep, url)
				lat[k] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	l := loadResult{elapsed: time.Since(start)}
	for k := range n {
		if errs[k] != nil {
			l.errors++
			if l.firstErr == nil {
				l.firstErr = errs[k]
			}
			continue
		}
		l.latencies = append(l.latencies, lat[k])
		if ids[k] != "" {
			l.ids = append(l.ids, ids[k])
		}
	}
	return l
}

// send sends one request, with a new transaction ID in place of {txnId},
// reads the body, and returns the response's request ID.
func send(ctx context.Context, s *server, ep endpoint, url string) (string, error) {
	method := ep.method()
	url = strings.Replace(url, "{txnId}", "bench-"+strconv.FormatInt(s.txns.Add(1), 10), 1)
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(ep.Body))
	if err != nil {
		return "", err
	}
	if ep.Body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token := ep.token(s); token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := s.client.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return "", statusError(method, url, res.StatusCode, readSome(res.Body))
	}
	if _, err := io.Copy(io.Discard, res.Body); err != nil {
		return "", fmt.Errorf("%s %s: read the answer: %w", method, url, err)
	}
	return res.Header.Get("X-Request-Id"), nil
}

// percentile returns the nearest-rank percentile (0 < p <= 1) of d, without
// changing d; 0 for no samples.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	// The rank is ceil(p·n); the epsilon keeps 0.99·200 from becoming 199.
	k := int(math.Ceil(p*float64(len(s))-1e-9)) - 1
	return s[max(0, min(k, len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }
