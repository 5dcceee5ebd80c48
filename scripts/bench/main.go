// Command bench measures the endpoints of `cirrus serve` and of the baseline,
// Dendrite v0.13.8 on SQLite, with the same workload: client-side latency
// percentiles, throughput, peak memory and, for Cirrus, the DynamoDB calls
// and capacity units per request, read from its request log by X-Request-Id.
//
// The room workloads send plain messages into a two-member room, from one
// client and from eight at once, and read the last 100 of them back; the
// report checks them against the project's goals for sending. The sync
// workloads measure /sync for a user in 50 rooms: an initial sync, an
// incremental one after a message, how soon a waiting sync answers a
// message (in one process, and for Cirrus across two instances, where it
// waits for a poll), and what an idle waiting sync costs per poll. A workload
// that a server cannot run (an endpoint it lacks) is reported as failed on
// that server, with the error, and the bench goes on.
//
// The media workloads (media.go; -media=false skips them, -media-only runs
// them alone) upload, download and thumbnail a megabyte on the servers of
// the room workloads, after them.
//
// The federation workloads (-federation=false skips them) run last, on two
// servers of each kind named by their federation listeners: a fake remote
// server in the bench process joins a room and sends transactions of 50
// PDUs (PDUs per second until the last is in /messages; for Cirrus the
// DynamoDB units per PDU of the /send requests and of the queue jobs, whose
// log lines shared/queue writes), and a message sent on one server is timed
// until the other server's user sees it in a waiting /sync, Cirrus to Cirrus
// beside Dendrite to Dendrite.
//
// The DynamoDB latency model (latency.go; -dynamodb-latency, 4 ms unless
// set, 0 turns it off) runs a third server beside them, "cirrus+4ms": a
// `cirrus serve` whose DynamoDB calls each wait 4 ms in a proxy before they
// reach an embedded store, as a call from Lambda takes a few milliseconds
// in AWS. It is measured in the same rounds on the workloads that decide
// how fast a client feels (whoami, send, /messages, initial and
// incremental /sync, the wake-up), and checked against the p50
// goals at +4 ms. Cirrus's log lines count the round trips of a request
// (its DynamoDB calls one after the other) when it has them.
//
// The sync tier workload (tier.go; -tier=false skips it, -tier-only runs it
// alone) runs last: -tier-polls idle long-polls held by one `cirrus
// sync-tier` process beside a writer `cirrus serve` on one DynamoDB, woken
// through an SQS news queue (fauxqs): the tier's memory, CPU and DynamoDB
// units per minute while idle, and the wake-up from the writer.
//
// Both servers run at once on loopback ports in temp folders; each endpoint
// is measured in rounds that alternate between them, so that the background
// load of a shared machine weighs on both alike. They are stopped (SIGTERM,
// SIGKILL after 10 s) and their folders removed before the bench exits.
// Dendrite is built once with `go build` in a throwaway module under the
// user cache folder and reused by later runs.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"
)

const usageText = `Usage: go run ./scripts/bench [flags]    (or: make bench ARGS="...")

Measures Cirrus (cirrus serve, embedded DynamoDB) and Dendrite %s on the
same endpoints, room workloads (send c=1, send c=8, messages 100), sync
workloads (initial, incremental, wake-up, idle) and federation workloads
(inbound /send from a fake remote, delivery to another server's waiting
/sync: Cirrus to Cirrus, Dendrite to Dendrite, Cirrus to Dendrite and back),
and prints latency, req/s, DynamoDB cost per request, peak memory and the
send and sync goals. Without a Dendrite build, Cirrus is measured alone.
A third server, cirrus+4ms, is Cirrus with 4 ms added to every DynamoDB
call (-dynamodb-latency; 0 leaves it out), on the workloads a user waits
for, against the latency goals at +4 ms.

Examples:
  make bench
  make bench ARGS="-n 200 -c 8 -json bench.json"
  go run ./scripts/bench -baseline=false
  go run ./scripts/bench -federation=false
  go run ./scripts/bench -federation-only -n 20
  make bench ARGS="-media-only"
  go run ./scripts/bench -tier-only -tier-polls 1000 -tier-window 60s
  go run ./scripts/bench -n 100 -sync-poll 500ms
  go run ./scripts/bench -n 50 -warmup 10 -federation=false -media=false -tier=false
  go run ./scripts/bench -dynamodb-latency 8ms

Flags:
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("n", 500, "measured requests per endpoint and server")
	c := fs.Int("c", 4, "concurrent requests, for the endpoints that do not set their own (send c=1, send c=8)")
	warmup := fs.Int("warmup", 50, "unmeasured requests per endpoint and server before the measured ones")
	rounds := fs.Int("rounds", 5, "split the measured requests into this many rounds, alternating between the servers")
	jsonOut := fs.String("json", "", "also write the results to this `file`")
	baseline := fs.Bool("baseline", true, "measure Dendrite too")
	requireBaseline := fs.Bool("require-baseline", false, "exit non-zero when Dendrite cannot be built or run")
	cacheDir := fs.String("cache", defaultCacheDir(), "`folder` for the Dendrite build, kept between runs")
	timeout := fs.Duration("timeout", 20*time.Minute, "give up after this long (the first Dendrite build takes minutes)")
	federation := fs.Bool("federation", true, "measure the federation workloads (inbound /send, outbound delivery) on servers of their own; false skips them (about a minute)")
	federationOnly := fs.Bool("federation-only", false, "measure the federation workloads alone")
	media := fs.Bool("media", true, "measure the media workloads (upload, download and a thumbnail of a megabyte)")
	mediaOnly := fs.Bool("media-only", false, "measure the media workloads alone")
	tier := fs.Bool("tier", true, "measure the sync tier workload: idle long-polls held by one cirrus sync-tier process (memory, CPU, DynamoDB units per minute) and the wake-up from a writer in another process")
	tierOnly := fs.Bool("tier-only", false, "measure the sync tier workload alone")
	tierPolls := fs.Int("tier-polls", 1000, "idle long-polls the sync tier holds in the tier workload")
	tierWindow := fs.Duration("tier-window", time.Minute, "how long the tier workload measures the idle polls")
	syncPoll := fs.Duration("sync-poll", time.Second, "Cirrus's sync poll `interval` (CIRRUS_SYNC_POLL_INTERVAL_MS), 50ms to 10s")
	ddbLatency := fs.Duration("dynamodb-latency", defaultDynamoDBLatency, "also measure a Cirrus whose every DynamoDB call is held this `long` by a proxy, as a DynamoDB call in AWS takes a few ms (the latency goals are set at 4ms); 0 leaves it out")
	fs.Usage = func() {
		fmt.Fprintf(stderr, usageText, dendriteVersion)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *n < 1 || *c < 1 || *rounds < 1 || *warmup < 0 {
		return errors.New("-n, -c and -rounds must be at least 1, -warmup at least 0")
	}
	if *syncPoll < 50*time.Millisecond || *syncPoll > 10*time.Second || *syncPoll%time.Millisecond != 0 {
		return errors.New("-sync-poll must be whole milliseconds from 50ms to 10s")
	}
	if *federationOnly && !*federation {
		return errors.New("-federation-only and -federation=false contradict each other")
	}
	if *mediaOnly && (!*media || *federationOnly) {
		return errors.New("-media-only contradicts -media=false and -federation-only")
	}
	if *tierOnly && (!*tier || *mediaOnly || *federationOnly || *requireBaseline) {
		return errors.New("-tier-only contradicts -tier=false, -media-only, -federation-only and -require-baseline")
	}
	if *tierPolls < 1 || *tierWindow < 5*time.Second {
		return errors.New("-tier-polls must be at least 1, -tier-window at least 5s")
	}
	if *ddbLatency < 0 || *ddbLatency > time.Second {
		return errors.New("-dynamodb-latency must be from 0 to 1s")
	}
	if *requireBaseline && !*baseline {
		return errors.New("-require-baseline and -baseline=false contradict each other")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	rep := &report{
		Started: time.Now().UTC(), Requests: *n, Warmup: *warmup, Concurrency: *c, Rounds: max(1, min(*rounds, *n)),
		Go: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH, CPUs: runtime.NumCPU(),
		Baseline:          baselineState{Module: dendriteModule + "@" + dendriteVersion},
		DynamoDBLatencyMS: ms(*ddbLatency),
		held:              &holdMeter{},
	}

	tmp, err := os.MkdirTemp("", "cirrus-bench-bin-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	cirrusBin, err := buildCirrus(ctx, tmp)
	if err != nil {
		return err
	}

	// Build the baseline before measuring anything, so the build does not
	// compete with the servers for the CPUs.
	var dendrite dendriteBuild
	switch {
	case *tierOnly:
		rep.Baseline.Missing = "-tier-only (the sync tier workload is Cirrus's alone)"
	case !*baseline:
		rep.Baseline.Missing = "-baseline=false"
	default:
		dendrite, err = buildDendrite(ctx, *cacheDir)
		rep.Baseline.CacheDir, rep.Baseline.Cached = dendrite.Dir, dendrite.Cached
		rep.Baseline.BuildSeconds = dendrite.Took.Seconds()
		if err != nil {
			if *requireBaseline || ctx.Err() != nil {
				return fmt.Errorf("baseline: building Dendrite: %w", err)
			}
			rep.Baseline.Missing = "building it failed: " + err.Error()
			fmt.Fprintf(stderr, "bench: NO BASELINE, measuring Cirrus alone: %s\n", rep.Baseline.Missing)
		} else if dendrite.Cached {
			fmt.Fprintf(stderr, "bench: Dendrite %s cached in %s\n", dendriteVersion, dendrite.Dir)
		} else {
			fmt.Fprintf(stderr, "bench: Dendrite %s built in %s\n", dendriteVersion, dendrite.Took.Round(time.Second))
		}
	}

	// Both servers run at once and are measured in alternating rounds; the
	// deferred stops also run on an error, a timeout or Ctrl-C.
	var started []*server
	defer func() {
		for _, s := range started {
			s.stop()
		}
	}()
	if !*federationOnly && !*tierOnly {
		servers, err := startServers(ctx, cirrusBin, dendrite, *syncPoll, *ddbLatency, rep, *requireBaseline, stderr)
		started = append(started, servers...)
		if err != nil {
			return err
		}
		for _, s := range servers {
			rep.Servers = append(rep.Servers, serverInfo{Name: s.Name, Version: serverVersion(ctx, s)})
			fmt.Fprintf(stderr, "bench: %s %s (pid %d) on %s and %s\n", s.Name, rep.Servers[len(rep.Servers)-1].Version, s.cmd.Process.Pid, s.ClientURL, s.FederationURL)
			s.room.ID, s.room.Err = setupRoom(ctx, s)
			if s.room.Err != nil {
				fmt.Fprintf(stderr, "bench: %s: no bench room, its room workloads will fail: %v\n", s.Name, s.room.Err)
			}
		}
		measureAll := func(servers []*server, eps []endpoint) error {
			for _, ep := range eps {
				var rs []result
				if ep.TwoInstances {
					rs = measureTwoInstances(ctx, cirrusBin, *syncPoll, ep, rep.Requests, rep.Concurrency, rep.Warmup, rep.Rounds, stderr)
				} else {
					rs = measureEndpoint(ctx, serversFor(servers, ep), ep, rep.Requests, rep.Concurrency, rep.Warmup, rep.Rounds)
				}
				if err := ctx.Err(); err != nil {
					return err
				}
				for _, r := range rs {
					fmt.Fprintln(stderr, "bench:", progressLine(r))
				}
				rep.Results = append(rep.Results, rs...)
			}
			return nil
		}
		// stopAll stops servers and keeps the peak RSS of each name's largest.
		stopAll := func(servers []*server) {
			for _, s := range servers {
				s.stop()
				for i := range rep.Servers {
					if rep.Servers[i].Name == s.Name {
						rep.Servers[i].PeakRSSBytes = max(rep.Servers[i].PeakRSSBytes, s.peakRSS)
					}
				}
			}
		}
		if !*mediaOnly {
			if err := measureAll(servers, workload); err != nil {
				return err
			}
		}
		if *media {
			if err := measureAll(servers, mediaWorkload()); err != nil {
				return err
			}
		}
		stopAll(servers)
		if !*mediaOnly {
			// The sync workloads run on fresh servers, so that they find the same
			// data on both, whatever the room workloads stored (more with a larger
			// -n).
			servers, err = startServers(ctx, cirrusBin, dendrite, *syncPoll, *ddbLatency, rep, *requireBaseline, stderr)
			started = append(started, servers...)
			if err != nil {
				return err
			}
			for _, s := range servers {
				if s.cmd != nil {
					fmt.Fprintf(stderr, "bench: fresh %s for the sync workloads (pid %d) on %s\n", s.Name, s.cmd.Process.Pid, s.ClientURL)
				}
			}
			if err := measureAll(servers, syncWorkload); err != nil {
				return err
			}
			stopAll(servers)
		}
	}

	if *federation && !*mediaOnly && !*tierOnly {
		fed, rs, err := runFederation(ctx, cirrusBin, dendrite, *syncPoll, rep, *n, stderr)
		started = append(started, fed...)
		if err != nil {
			return err
		}
		rep.Results = append(rep.Results, rs...)
		for _, s := range fed {
			s.stop()
		}
	}
	if *tier && !*mediaOnly && !*federationOnly {
		rep.Tier = runTier(ctx, cirrusBin, tierOptions{Polls: *tierPolls, Window: *tierWindow, WakeUps: tierWakeUps}, stderr)
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	rep.Ratios = ratios(rep.Results)
	rep.DynamoDBHeldP50MS, rep.DynamoDBHeldP99MS = ms(rep.held.quantile(0.5)), ms(rep.held.quantile(0.99))
	rep.Sync = summariseSync(rep.Results, *syncPoll)
	rep.Goals = append(goals(rep.Results), syncGoals(rep.Results, rep.Sync)...)
	if !*federationOnly && !*mediaOnly && !*tierOnly {
		rep.Goals = append(rep.Goals, modelledGoals(rep.Results, *ddbLatency)...)
	}

	printTable(stdout, rep)
	if *jsonOut != "" {
		data, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*jsonOut, append(data, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// startServers starts Cirrus; the Cirrus of the DynamoDB latency model
// unless latency is 0; and Dendrite unless the baseline is missing; and
// registers the bench user on each. The first time Dendrite cannot be
// started the baseline is missing (an error with -require-baseline); a
// later time, Dendrite is a server that failed to start, on which every
// workload fails.
func startServers(ctx context.Context, cirrusBin string, dendrite dendriteBuild, syncPoll, latency time.Duration, rep *report, requireBaseline bool, stderr io.Writer) ([]*server, error) {
	var servers []*server
	cirrus, err := startRetrying(func() (*server, error) { return startCirrus(ctx, cirrusBin, syncPoll, mediaEnv...) })
	if err != nil {
		return servers, fmt.Errorf("cirrus: %w", err)
	}
	servers = append(servers, cirrus)
	if latency > 0 {
		m, err := startModelledCirrus(ctx, cirrusBin, syncPoll, latency, rep.held)
		if err != nil {
			return servers, fmt.Errorf("%s: %w", modelledName(latency), err)
		}
		servers = append(servers, m)
	}
	if rep.Baseline.Missing == "" {
		d, err := startRetrying(func() (*server, error) { return startDendrite(ctx, dendrite, false) })
		switch {
		case err != nil && (requireBaseline || ctx.Err() != nil):
			return servers, fmt.Errorf("baseline: %w", err)
		case err != nil && len(rep.Servers) == 0:
			rep.Baseline.Missing = "running it failed: " + err.Error()
			fmt.Fprintf(stderr, "bench: NO BASELINE: %s\n", rep.Baseline.Missing)
		case err != nil:
			servers = append(servers, &server{Name: "dendrite", startErr: fmt.Errorf("start dendrite: %w", err)})
		default:
			servers = append(servers, d)
		}
	}
	for _, s := range servers {
		if s.startErr != nil {
			continue
		}
		if err := setupUser(ctx, s); err != nil {
			return servers, fmt.Errorf("%s: %w", s.Name, err)
		}
	}
	return servers, nil
}

// serverVersion reads server.name and server.version from the federation
// version endpoint.
func serverVersion(ctx context.Context, s *server) string {
	res, err := probe(ctx, s.client, s.FederationURL+"/_matrix/federation/v1/version", "")
	if err != nil {
		return ""
	}
	var v struct {
		Server struct{ Name, Version string } `json:"server"`
	}
	if json.Unmarshal(res.body, &v) != nil {
		return ""
	}
	return v.Server.Version
}
