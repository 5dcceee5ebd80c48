package main

import (
	"fmt"
	"io"
	"text/tabwriter"
)

func printTable(w io.Writer, results []result, n, c int, cirrusRSS, dendriteRSS int64) {
	fmt.Fprintf(w, "\n%d requests per endpoint and server, %d concurrent, loopback\n\n", n, c)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "endpoint\tserver\terrors\tp50 ms\tp99 ms\treq/s\tddb calls/req\tRCU/req\tWCU/req\t")
	base := map[string]result{}
	for _, r := range results {
		if r.Server == "dendrite" {
			base[r.Endpoint] = r
		}
	}
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.3f\t%.3f\t%.0f\t%s\t%s\t%s\t\n", r.Endpoint, r.Server, r.Errors,
			r.P50ms, r.P99ms, r.PerSec, perRequest(r.Calls), perRequest(r.RCU), perRequest(r.WCU))
	}
	tw.Flush()
	if len(base) > 0 {
		fmt.Fprintln(w, "\nCirrus / Dendrite (below 1 means Cirrus is faster)")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "endpoint\tp50 ratio\tp99 ratio\tthroughput ratio\t")
		for _, r := range results {
			b, ok := base[r.Endpoint]
			if r.Server != "cirrus" || !ok {
				continue
			}
			fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t\n", r.Endpoint, ratio(r.P50ms, b.P50ms), ratio(r.P99ms, b.P99ms), ratio(r.PerSec, b.PerSec))
		}
		tw.Flush()
	}
	fmt.Fprintf(w, "\npeak RSS: cirrus %.1f MB", float64(cirrusRSS)/(1<<20))
	if dendriteRSS > 0 {
		fmt.Fprintf(w, ", dendrite %.1f MB (ratio %.2f)", float64(dendriteRSS)/(1<<20), ratio(float64(cirrusRSS), float64(dendriteRSS)))
	}
	fmt.Fprintln(w)
}

func perRequest(v float64) string {
	if v < 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", v)
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
