package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"
)

// result is one endpoint measured on one server.
type result struct {
	Endpoint string  `json:"endpoint"`
	Server   string  `json:"server"`
	Requests int     `json:"requests"`
	Errors   int     `json:"errors"`
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
	PerSec   float64 `json:"req_per_s"`
	// DynamoDB figures per request; negative when the server has none to report.
	Calls float64 `json:"dynamodb_calls"`
	RCU   float64 `json:"rcu"`
	WCU   float64 `json:"wcu"`
}

// target is a running server under measurement.
type target interface {
	name() string
	url(ep endpoint) string
	// metered says whether the server logs DynamoDB usage per request.
	metered() bool
	// usage returns the DynamoDB usage logged for a request ID, if any.
	usage(requestID string) (u usage, ok bool)
	stop() (peakRSS int64)
}

type usage struct {
	Calls float64 `json:"calls"`
	RCU   float64 `json:"rcu"`
	WCU   float64 `json:"wcu"`
}

var client = &http.Client{
	Timeout: 30 * time.Second,
	Transport: &http.Transport{
		MaxIdleConnsPerHost: 64,
		// The local federation listener has a self-signed certificate.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
	},
}

// measure warms up, then sends n GETs with c workers and summarises them.
func measure(ctx context.Context, t target, ep endpoint, n, c int) result {
	url := t.url(ep)
	for range 20 {
		get(ctx, url)
	}
	lat := make([]time.Duration, n)
	ids := make([]string, n)
	errs := make([]bool, n)
	var next sync.Mutex
	i := 0
	start := time.Now()
	var wg sync.WaitGroup
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				next.Lock()
				k := i
				i++
				next.Unlock()
				if k >= n {
					return
				}
				t0 := time.Now()
				id, err := get(ctx, url)
				lat[k], ids[k], errs[k] = time.Since(t0), id, err != nil
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	r := result{Endpoint: ep.Name, Server: t.name(), Requests: n, PerSec: float64(n) / elapsed.Seconds(),
		P50ms: ms(percentile(lat, 0.50)), P99ms: ms(percentile(lat, 0.99)), Calls: -1, RCU: -1, WCU: -1}
	for _, e := range errs {
		if e {
			r.Errors++
		}
	}
	if sum, found := sumUsage(t, ids); found > 0 {
		r.Calls, r.RCU, r.WCU = sum.Calls/float64(found), sum.RCU/float64(found), sum.WCU/float64(found)
	}
	return r
}

// sumUsage adds up the logged usage of the request IDs. The server logs a
// request just after answering it, so it waits a moment for the last lines.
func sumUsage(t target, ids []string) (usage, int) {
	if !t.metered() {
		return usage{}, 0
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		var sum usage
		found := 0
		for _, id := range ids {
			if u, ok := t.usage(id); ok {
				sum.Calls, sum.RCU, sum.WCU = sum.Calls+u.Calls, sum.RCU+u.RCU, sum.WCU+u.WCU
				found++
			}
		}
		if found == len(ids) || time.Now().After(deadline) {
			return sum, found
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func get(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	res, err := client.Do(req)
	if err != nil {
		return "", err
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: status %d", url, res.StatusCode)
	}
	return res.Header.Get("X-Request-Id"), nil
}

// percentile is the nearest-rank percentile of d (which it sorts).
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	k := int(math.Ceil(p*float64(len(d)))) - 1
	return d[max(0, min(k, len(d)-1))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
