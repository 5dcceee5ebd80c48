package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// report is everything a run found; -json writes it as is.
type report struct {
	Started     time.Time     `json:"started"`
	Requests    int           `json:"requests"`
	Warmup      int           `json:"warmup"`
	Concurrency int           `json:"concurrency"`
	Rounds      int           `json:"rounds"`
	Go          string        `json:"go"`
	CPUs        int           `json:"cpus"`
	Servers     []serverInfo  `json:"servers"`
	Results     []result      `json:"results"`
	Ratios      []ratio       `json:"ratios,omitempty"`
	Baseline    baselineState `json:"baseline"`
}

type serverInfo struct {
	Name         string `json:"name"`
	Version      string `json:"version,omitempty"`
	PeakRSSBytes int64  `json:"peak_rss_bytes"`
}

type baselineState struct {
	Module       string  `json:"module"`
	Missing      string  `json:"missing,omitempty"` // why there is no baseline
	CacheDir     string  `json:"cache_dir,omitempty"`
	Cached       bool    `json:"cached"`
	BuildSeconds float64 `json:"build_seconds,omitempty"`
}

// ratio is Cirrus's latency over Dendrite's for one endpoint: below 1 means
// Cirrus is faster.
type ratio struct {
	Endpoint string  `json:"endpoint"`
	P50      float64 `json:"p50"`
	P99      float64 `json:"p99"`
}

// ratios pairs the cirrus and dendrite results of each endpoint.
func ratios(results []result) []ratio {
	var out []ratio
	for _, c := range results {
		if c.Server != "cirrus" {
			continue
		}
		for _, d := range results {
			if d.Server == "dendrite" && d.Endpoint == c.Endpoint && d.P50MS > 0 && d.P99MS > 0 {
				out = append(out, ratio{Endpoint: c.Endpoint, P50: c.P50MS / d.P50MS, P99: c.P99MS / d.P99MS})
			}
		}
	}
	return out
}

// printTable writes the results grouped by endpoint, Cirrus first.
func printTable(w io.Writer, r *report) {
	fmt.Fprintf(w, "\n%d requests per endpoint and server after %d warm-up, %d concurrent, in %d rounds alternating between the servers; %s, %d CPUs\n",
		r.Requests, r.Warmup, r.Concurrency, r.Rounds, r.Go, r.CPUs)
	fmt.Fprintf(w, "client endpoints over HTTP/1.1, federation endpoints over HTTPS (h2, self-signed); latency measured by the client\n\n")
	header := fmt.Sprintf("%-40s %-9s %8s %6s %8s %8s %9s %10s %8s %8s %8s %8s",
		"endpoint", "server", "requests", "errors", "p50 ms", "p99 ms", "req/s", "DDB calls", "RCU", "WCU", "p50 C/D", "p99 C/D")
	fmt.Fprintln(w, header)
	fmt.Fprintln(w, strings.Repeat("-", len(header)))
	rs := ratios(r.Results)
	for _, ep := range workload {
		for _, server := range []string{"cirrus", "dendrite"} {
			for _, x := range r.Results {
				if x.Endpoint != ep.name() || x.Server != server {
					continue
				}
				p50r, p99r := "", ""
				for _, q := range rs {
					if q.Endpoint == ep.name() && server == "cirrus" {
						p50r, p99r = fmt.Sprintf("%.2fx", q.P50), fmt.Sprintf("%.2fx", q.P99)
					}
				}
				fmt.Fprintf(w, "%-40s %-9s %8d %6d %8.3f %8.3f %9.0f %10s %8s %8s %8s %8s\n",
					x.Endpoint, x.Server, x.Requests, x.Errors, x.P50MS, x.P99MS, x.PerSecond,
					perRequest(x.Calls), perRequest(x.RCU), perRequest(x.WCU), p50r, p99r)
			}
		}
	}
	fmt.Fprintln(w, "DDB calls, RCU, WCU: DynamoDB calls and capacity units per request, from Cirrus's request log")
	fmt.Fprintln(w, "p50 C/D, p99 C/D: Cirrus latency / Dendrite latency (below 1: Cirrus faster)")

	fmt.Fprintln(w)
	for _, s := range r.Servers {
		note := ""
		if s.Name == "cirrus" {
			note = " (embedded DynamoDB included)"
		}
		fmt.Fprintf(w, "peak RSS (VmHWM) %-9s %-16s %7.1f MiB%s\n", s.Name, s.Version, float64(s.PeakRSSBytes)/(1<<20), note)
	}
	for _, x := range r.Results {
		if x.FirstError != "" {
			fmt.Fprintf(w, "errors on %s %s, first: %s\n", x.Server, x.Endpoint, x.FirstError)
		}
		if x.LogMatched != nil && *x.LogMatched < x.Requests-x.Errors {
			fmt.Fprintf(w, "warning: %s %s: only %d of %d responses matched a log line\n", x.Server, x.Endpoint, *x.LogMatched, x.Requests-x.Errors)
		}
	}
	b := r.Baseline
	switch {
	case b.Missing != "":
		fmt.Fprintf(w, "\nNO BASELINE: Dendrite was not measured: %s\n", b.Missing)
	case b.Cached:
		fmt.Fprintf(w, "baseline %s: cached build in %s\n", b.Module, b.CacheDir)
	default:
		fmt.Fprintf(w, "baseline %s: built in %.0fs, cached in %s\n", b.Module, b.BuildSeconds, b.CacheDir)
	}
}

func perRequest(v *float64) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", *v)
}
