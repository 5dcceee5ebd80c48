package main

import (
	"fmt"
	"io"
	"slices"
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
	Goals       []goal        `json:"goals"`
	Sync        *syncSummary  `json:"sync,omitempty"`
	Tier        *tierReport   `json:"tier,omitempty"`
	Baseline    baselineState `json:"baseline"`
	// DynamoDBLatencyMS is what the latency model adds to every DynamoDB
	// call of its Cirrus (-dynamodb-latency), 0 when there is none.
	DynamoDBLatencyMS float64 `json:"dynamodb_latency_ms"`
	// DynamoDBHeldP50MS and P99 are how long the proxy held a call, as
	// measured: the latency the model really added.
	DynamoDBHeldP50MS float64 `json:"dynamodb_held_p50_ms,omitempty"`
	DynamoDBHeldP99MS float64 `json:"dynamodb_held_p99_ms,omitempty"`
	held              *holdMeter
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

// ratio is Cirrus's figure over Dendrite's for one endpoint: latencies
// below 1 and throughput above 1 mean Cirrus is faster.
type ratio struct {
	Endpoint  string  `json:"endpoint"`
	P50       float64 `json:"p50"`
	P99       float64 `json:"p99"`
	PerSecond float64 `json:"req_per_s"`
}

// ratios pairs the cirrus and dendrite results of each endpoint that both
// measured.
func ratios(results []result) []ratio {
	var out []ratio
	for _, c := range results {
		if c.Server != "cirrus" || !hasFigures(c) {
			continue
		}
		if d, ok := findResult(results, c.Endpoint, "dendrite"); ok && hasFigures(d) {
			out = append(out, ratio{Endpoint: c.Endpoint, P50: c.P50MS / d.P50MS, P99: c.P99MS / d.P99MS, PerSecond: c.PerSecond / d.PerSecond})
		}
	}
	return out
}

// hasFigures reports whether r measured successful requests.
func hasFigures(r result) bool {
	return r.Failed == "" && r.P50MS > 0 && r.P99MS > 0 && r.PerSecond > 0
}

// progressLine is the line bench writes to stderr for a result.
func progressLine(r result) string {
	if r.Failed != "" {
		return fmt.Sprintf("%-10s %-31s FAILED: %s", r.Server, r.Endpoint, failure(r))
	}
	return fmt.Sprintf("%-10s %-31s p50 %.3f ms, p99 %.3f ms, %.0f req/s, %d errors",
		r.Server, r.Endpoint, r.P50MS, r.P99MS, r.PerSecond, r.Errors)
}

// failure is why r failed, with the first error when requests were sent.
func failure(r result) string {
	if r.FirstError != "" {
		return r.Failed + ", the first: " + r.FirstError
	}
	return r.Failed
}

// printTable writes the results grouped by endpoint, Cirrus first, then
// the goals.
func printTable(w io.Writer, r *report) {
	if len(r.Results) == 0 && r.Tier != nil { // -tier-only
		fmt.Fprintf(w, "\n%s, %d CPUs\n", r.Go, r.CPUs)
		printTier(w, r)
		return
	}
	fmt.Fprintf(w, "\n%d requests per endpoint and server after %d warm-up, %d concurrent unless column c says otherwise, in %d rounds alternating between the servers; %s, %d CPUs\n",
		r.Requests, r.Warmup, r.Concurrency, r.Rounds, r.Go, r.CPUs)
	fmt.Fprintf(w, "client endpoints over HTTP/1.1, federation endpoints over HTTPS (h2, self-signed); latency measured by the client\n\n")
	header := fmt.Sprintf("%-40s %-10s %3s %8s %6s %8s %8s %9s %10s %7s %8s %8s %8s %8s %10s",
		"endpoint", "server", "c", "requests", "errors", "p50 ms", "p99 ms", "req/s", "DDB calls", "DDB RT", "RCU", "WCU", "p50 C/D", "p99 C/D", "req/s C/D")
	fmt.Fprintln(w, header)
	fmt.Fprintln(w, strings.Repeat("-", len(header)))
	rs := ratios(r.Results)
	servers := tableServers(r.Results)
	for _, ep := range allWorkloads() {
		for _, server := range servers {
			if x, ok := findResult(r.Results, ep.name(), server); ok {
				fmt.Fprintln(w, tableRow(x, rs))
			}
		}
	}
	fmt.Fprintln(w, "DDB calls, RCU, WCU: DynamoDB calls and capacity units per request, from Cirrus's request log; DDB RT: DynamoDB round trips per request, the calls one after the other on its critical path (— when the log does not count them)")
	fmt.Fprintln(w, "p50 C/D, p99 C/D: Cirrus latency / Dendrite latency (below 1: Cirrus faster); req/s C/D: Cirrus throughput / Dendrite throughput (above 1: Cirrus faster); plain Cirrus only")
	for _, name := range servers {
		if isModelled(name) {
			fmt.Fprintf(w, "%s: cirrus serve with every DynamoDB call held %s by a proxy in front of an embedded DynamoDB (-dynamodb-latency), measured in the same rounds and with as many requests, on the endpoints a user waits for only (see the latency model below)\n",
				name, strings.TrimPrefix(name, "cirrus+"))
		}
	}
	for _, ep := range allWorkloads() {
		if ep.Label != "" {
			fmt.Fprintf(w, "%s: %s\n", ep.Label, describe(ep))
		}
	}
	for _, x := range r.Results {
		if x.Note != "" {
			fmt.Fprintf(w, "%s on %s: %s\n", x.Endpoint, x.Server, x.Note)
		}
	}

	fmt.Fprintln(w)
	for _, s := range r.Servers {
		note := ""
		switch {
		case s.Name == "cirrus":
			note = " (embedded DynamoDB included)"
		case isModelled(s.Name):
			note = " (its DynamoDB runs in the bench process, not included)"
		}
		fmt.Fprintf(w, "peak RSS (VmHWM) %-10s %-16s %7.1f MiB%s\n", s.Name, s.Version, float64(s.PeakRSSBytes)/(1<<20), note)
	}
	if len(r.Servers) > 0 {
		fmt.Fprintln(w, "peak RSS: the larger of each server's two processes, the first for the endpoints and room workloads, the second (fresh) for the sync workloads")
	}
	for _, x := range r.Results {
		switch {
		case x.Failed != "":
			fmt.Fprintf(w, "FAILED on %s %s: %s\n", x.Server, x.Endpoint, failure(x))
		case x.FirstError != "":
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
	printSync(w, r)
	printSliding(w, r)
	printTier(w, r)
	printLatency(w, r)
	printGoals(w, r.Goals)
}

// tableServers is the order of the servers in the results table: Cirrus,
// the modelled Cirrus, Dendrite.
func tableServers(results []result) []string {
	names := []string{"cirrus"}
	for _, x := range results {
		if isModelled(x.Server) && !slices.Contains(names, x.Server) {
			names = append(names, x.Server)
		}
	}
	return append(names, "dendrite")
}

// tableRow is the row of one result, with its ratios when it is Cirrus's.
func tableRow(x result, rs []ratio) string {
	if x.Failed != "" {
		return fmt.Sprintf("%-40s %-10s %3d %8s", x.Endpoint, x.Server, x.Concurrency, "FAILED (see below)")
	}
	p50r, p99r, rater := "", "", ""
	for _, q := range rs {
		if q.Endpoint == x.Endpoint && x.Server == "cirrus" {
			p50r, p99r, rater = fmt.Sprintf("%.2fx", q.P50), fmt.Sprintf("%.2fx", q.P99), fmt.Sprintf("%.2fx", q.PerSecond)
		}
	}
	return fmt.Sprintf("%-40s %-10s %3d %8d %6d %8.3f %8.3f %9.0f %10s %7s %8s %8s %8s %8s %10s",
		x.Endpoint, x.Server, x.Concurrency, x.Requests, x.Errors, x.P50MS, x.P99MS, x.PerSecond,
		perRequest(x.Calls), roundTrips(x), perRequest(x.RCU), perRequest(x.WCU), p50r, p99r, rater)
}

// describe says what a labelled endpoint sends.
func describe(ep endpoint) string {
	if ep.Describe != "" {
		return ep.Describe
	}
	d := ep.method() + " " + ep.Path
	if ep.usesRoom() {
		d += " in a private room of two members, with the bench user's token"
	}
	if ep.Fill > 0 {
		d += fmt.Sprintf(", after %d more messages are sent into it", ep.Fill)
	}
	return d
}

// printGoals writes the project's goals for sending and for sync, and
// whether this run met them.
func printGoals(w io.Writer, gs []goal) {
	if len(gs) == 0 {
		return
	}
	fmt.Fprintln(w, "\ngoals (send: a plain message into a two-member room, its room WCU the table's WCU less the 2 WCU of telling both members' syncs and the search index's 1 WCU a distinct word; sync: the sync user's long-poll; p50 ms (cirrus+4ms): latency with 4 ms added to every DynamoDB call, as in AWS):")
	for _, g := range gs {
		value, verdict := "n/a", "NOT MEASURED: "+g.Missing
		if g.Value != nil {
			value, verdict = fmt.Sprintf("%.2f", *g.Value), "NOT MET"
			if g.Met {
				verdict = "met"
			}
		}
		fmt.Fprintf(w, "  %-44s %8s   target %-7s %s\n", g.Name, value, g.Target, verdict)
	}
}

func perRequest(v *float64) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", *v)
}
