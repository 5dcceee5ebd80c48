// Command bench runs the same workload against Cirrus (`cirrus serve`) and
// against the baseline, Dendrite v0.13.8, in one run, and prints latency
// percentiles, throughput, peak memory and, for Cirrus, the DynamoDB calls
// and capacity units each request cost (read from the server's request log).
//
// Usage: go run ./scripts/bench [-n 500] [-c 4] [-json out.json] [-require-baseline]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"
)

// endpoint is one request of the workload. Federation endpoints go to the
// federation listener (HTTPS) of Cirrus.
type endpoint struct {
	Name       string
	Path       string
	Federation bool
}

// workload is what every server is measured on. Later issues add to it.
var workload = []endpoint{
	{Name: "client versions", Path: "/_matrix/client/versions"},
	{Name: "well-known client", Path: "/.well-known/matrix/client"},
	{Name: "well-known server", Path: "/.well-known/matrix/server"},
	{Name: "federation version", Path: "/_matrix/federation/v1/version", Federation: true},
	{Name: "server keys", Path: "/_matrix/key/v2/server", Federation: true},
}

func main() {
	n := flag.Int("n", 500, "measured requests per endpoint and server")
	c := flag.Int("c", 4, "concurrent requests")
	jsonOut := flag.String("json", "", "also write the results to this `file`")
	requireBaseline := flag.Bool("require-baseline", false, "fail when Dendrite cannot be built or run")
	flag.Parse()
	if err := run(*n, *c, *jsonOut, *requireBaseline); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(n, c int, jsonOut string, requireBaseline bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	var results []result

	cirrus, err := startCirrus(ctx)
	if err != nil {
		return fmt.Errorf("cirrus: %w", err)
	}
	for _, ep := range workload {
		results = append(results, measure(ctx, cirrus, ep, n, c))
	}
	cirrusRSS := cirrus.stop()

	var dendriteRSS int64
	dendrite, err := startDendrite(ctx)
	if err != nil {
		if requireBaseline {
			return fmt.Errorf("baseline: %w", err)
		}
		fmt.Fprintf(os.Stderr, "bench: no baseline, Cirrus alone: %v\n", err)
	} else {
		for _, ep := range workload {
			results = append(results, measure(ctx, dendrite, ep, n, c))
		}
		dendriteRSS = dendrite.stop()
	}

	printTable(os.Stdout, results, n, c, cirrusRSS, dendriteRSS)
	if jsonOut != "" {
		data, _ := json.MarshalIndent(map[string]any{
			"requests": n, "concurrency": c, "results": results,
			"peak_rss_bytes": map[string]int64{"cirrus": cirrusRSS, "dendrite": dendriteRSS},
		}, "", "  ")
		if err := os.WriteFile(jsonOut, data, 0o644); err != nil {
			return err
		}
	}
	return nil
}
