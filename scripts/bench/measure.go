package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// endpoint is one request of the workload. Federation endpoints go to the
// server's HTTPS listener, the others to its plain HTTP one.
type endpoint struct {
	Path       string
	Federation bool
	// Method is GET unless set; Body is sent as JSON.
	Method, Body string
	// Auth sends the bench user's access token.
	Auth bool
	// MaxRequests caps -n for expensive endpoints (a login hashes a password).
	MaxRequests int
}

// name labels an endpoint in the report.
func (ep endpoint) name() string {
	if ep.Method != "" && ep.Method != http.MethodGet {
		return ep.Method + " " + ep.Path
	}
	return ep.Path
}

// workload is what every server is measured on.
var workload = []endpoint{
	{Path: "/_matrix/client/versions"},
	{Path: "/.well-known/matrix/client"},
	{Path: "/.well-known/matrix/server"},
	{Path: "/_matrix/federation/v1/version", Federation: true},
	{Path: "/_matrix/key/v2/server", Federation: true},
	{Path: "/_matrix/client/v3/login", Method: http.MethodPost, MaxRequests: 40,
		Body: `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"` + benchUser + `"},"password":"` + benchPassword + `"}`},
	{Path: "/_matrix/client/v3/account/whoami", Auth: true},
}

// result is one endpoint measured on one server.
type result struct {
	Endpoint string `json:"endpoint"`
	Server   string `json:"server"`
	URL      string `json:"url"`
	Requests int    `json:"requests"`
	// Errors are failed requests and answers other than 200; latency
	// percentiles and DynamoDB figures cover the successful requests only.
	Errors     int     `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	P50MS      float64 `json:"p50_ms"`
	P99MS      float64 `json:"p99_ms"`
	PerSecond  float64 `json:"req_per_s"`
	// From the server's request log, matched by X-Request-Id; null for a
	// server that logs no DynamoDB usage (Dendrite).
	LogMatched  *int     `json:"log_lines_matched,omitempty"`
	ServerP50MS *float64 `json:"server_p50_ms,omitempty"`
	Calls       *float64 `json:"dynamodb_calls_per_request"`
	RCU         *float64 `json:"rcu_per_request"`
	WCU         *float64 `json:"wcu_per_request"`
}

// measure sends each server warmup requests to the endpoint, then n
// requests with c workers, in rounds that alternate between the servers so
// that a change in the machine's background load hits them alike; and
// summarises the successful requests.
func measure(ctx context.Context, servers []*server, ep endpoint, n, c, warmup, rounds int) []result {
	if ep.MaxRequests > 0 && n > ep.MaxRequests {
		n, warmup = ep.MaxRequests, min(warmup, ep.MaxRequests/4)
	}
	urls := make([]string, len(servers))
	for i, s := range servers {
		urls[i] = s.ClientURL + ep.Path
		if ep.Federation {
			urls[i] = s.FederationURL + ep.Path
		}
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
			Endpoint: ep.name(), Server: s.Name, URL: urls[i], Requests: n, Errors: l.errors,
			P50MS:     ms(percentile(l.latencies, 0.50)),
			P99MS:     ms(percentile(l.latencies, 0.99)),
			PerSecond: float64(n) / l.elapsed.Seconds(),
		}
		if l.firstErr != nil {
			r.FirstError = l.firstErr.Error()
		}
		if s.Log != nil {
			entries, _ := s.Log.match(l.ids, 2*time.Second)
			sum, serverP50 := summarise(entries)
			matched := len(entries)
			r.LogMatched, r.ServerP50MS = &matched, serverP50
			if matched > 0 {
				per := func(v float64) *float64 { x := v / float64(matched); return &x }
				r.Calls, r.RCU, r.WCU = per(sum.Calls), per(sum.RCU), per(sum.WCU)
			}
		}
		results[i] = r
	}
	return results
}

// summarise adds up the DynamoDB usage of log entries and takes the median
// of the durations the server measured itself (nil for no entries).
func summarise(entries []logEntry) (usage, *float64) {
	var sum usage
	durations := make([]time.Duration, 0, len(entries))
	for _, e := range entries {
		sum.Calls += e.DynamoDB.Calls
		sum.RCU += e.DynamoDB.RCU
		sum.WCU += e.DynamoDB.WCU
		durations = append(durations, time.Duration(e.DurationMS*float64(time.Millisecond)))
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

// send sends one request, reads the body, and returns the response's
// request ID.
func send(ctx context.Context, s *server, ep endpoint, url string) (string, error) {
	method := ep.Method
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(ep.Body))
	if err != nil {
		return "", err
	}
	if ep.Body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if ep.Auth {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	res, err := s.client.Do(req)
	if err != nil {
		return "", err
	}
	_, err = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if err != nil {
		return "", err
	}
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s %s: status %d", method, url, res.StatusCode)
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
