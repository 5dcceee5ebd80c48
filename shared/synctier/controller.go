// Package synctier holds what the sync tier and its controller share. The
// sync tier is a long-running process of the same code (`cirrus sync-tier`)
// that serves only the /sync long-polls, where one process holds thousands
// of idle polls for the price of one small task; the controller (the tier
// function) routes /sync to it while enough clients are connected for it to
// cost less than Lambda, and back to Lambda when they are gone.
//
// Each tier process writes a status item every StatusEvery; the controller
// reads them to know that the tier is up and how many polls it holds.
//
// # The controller
//
// The tier function runs every minute. It observes the state of the tier
// (the ECS service's desired and running tasks, the targets of the four
// sync routes, the mean number of syncs waiting in Lambda from the tally
// the client function keeps in the table (Concurrency), the tier's fresh
// statuses and its own memory item), decides with Decide, a pure function
// of that state, and acts: UpdateRoute Target on each sync route whose
// target differs, UpdateService desiredCount. Its rules, in this order:
//
//  1. Routes on the tier but the service scaled to zero (by hand, or a
//     deploy reset it): routes back to Lambda.
//  2. Routes on the tier and the tier not up (no task running, no status
//     within StaleAfter, or no 200 from its health check through the API,
//     /_cirrus/health: a Spot interruption, say): routes back to Lambda at
//     once. The desired count stays: ECS replaces the task, and rule 5 moves
//     the routes back when the replacement reports.
//  3. Routes on the tier and up: the tier's load is the sum over its fresh
//     statuses of max(peak, waiting). Below DownLoad the controller
//     remembers since when (low_since); once it has been low for LowWindow,
//     routes to Lambda (drain_from). Load at DownLoad or more forgets
//     low_since, so that clients coming back restart the window.
//  4. Routes on Lambda after leaving the tier (drain_from): at a run
//     DrainDelay or more later, once Lambda holds the polls the tier
//     answered, desired 0. The tier is not taken back meanwhile.
//  5. Routes on Lambda, desired 1 or more, the tier up: routes to the tier.
//  6. Routes on Lambda, desired 1 or more, the tier not up for StartTimeout
//     (no_status_since): desired 0, logged as an error: the tier cannot
//     start, cannot reach the table, or API Gateway cannot reach it. (A
//     VPC link left without traffic for 60 days goes inactive and takes
//     minutes to wake; the health checks are what wakes it.)
//  7. Routes on Lambda, desired 0, the mean number of syncs waiting in
//     Lambda over ConcurrencyWindow at UpConcurrency or more: desired 1.
//
// Each run logs its decision as one JSON line with the figures it was made
// on. The memory item ("synctier|controller") holds the route position the
// controller last chose and the three times above; it is written, with a
// conditional write on its revision, only after every action of a run
// succeeded. A run whose action failed leaves the memory as it was, so the
// next run takes the same decision from the same memory and repairs what is
// left (a route still on the old target, a desired count not set).
//
// # What it costs
//
// A connected client holds one long-poll at a time. On Lambda (arm64,
// 256 MB, $0.0000133334 per GB-second) a poll that waits bills
// 0.25 GB × 3600 s × $0.0000133334 = $0.012 per client-hour. A tier task
// (Fargate ARM64, 0.25 vCPU and 0.5 GB at $0.03238 per vCPU-hour and
// $0.00356 per GB-hour, us-east-1) costs $0.0099/h on demand, about
// $0.003/h on Spot (its discount varies, up to 70%), plus $0.005/h for its
// public IPv4 address: $0.0149/h on demand, about $0.008/h on Spot. The
// break-even is 1.2 connected clients on demand (0.7 on Spot); the tier
// starts at a mean of 2 (UpConcurrency) and leaves below a peak of 2 held
// for 30 minutes, so that a client that connects for a moment starts
// nothing and the tier is not started and stopped around the break-even.
// The figure on Lambda is the tally of sync holds of a second or more
// (RecordWait): the client function's other requests do not count, and it
// costs nothing while nobody syncs, where the client function's Duration
// in CloudWatch (GetMetricData, $0.01 per 1,000 metrics) would cost
// $0.43 a month for a query every minute and arrive minutes late.
//
// The controller itself: one 128 MB run a minute of well under a second
// (cents a month), one GetItem, two Queries and at most one PutItem on the
// table a minute (about 130,000 read and 45,000 write units a month at the
// most: well under $0.10 on demand). Prices: AWS's us-east-1 rates as
// quoted in December 2026 by third-party pages (vantage.sh and fortem.dev
// for Fargate and its Spot range, a Lambda cost note for arm64's
// GB-second, AWS's announcement of the public IPv4 charge of Feb 2024);
// Spot's actual rate is on AWS's Fargate pricing page.
package synctier

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// The controller's rules; see the package doc.
const (
	// UpConcurrency is the mean number of syncs waiting in Lambda at
	// which the tier starts.
	UpConcurrency = 2.0
	// ConcurrencyWindow is the span the mean concurrency is taken over.
	ConcurrencyWindow = 5 * time.Minute
	// DownLoad is the tier's load (polls at its peak) below which it
	// counts as idle.
	DownLoad = 2
	// LowWindow is how long the tier stays idle before the routes leave
	// it.
	LowWindow = 30 * time.Minute
	// DrainDelay is how long after the routes left the tier it is scaled
	// to zero: the polls it answered come back to Lambda meanwhile.
	DrainDelay = time.Minute
	// StartTimeout is how long the tier may take to report after it was
	// asked for before the controller gives up on it.
	StartTimeout = 15 * time.Minute
)

// Position is where the sync routes send requests.
type Position string

// The positions of the sync routes.
const (
	OnLambda Position = "lambda"
	OnTier   Position = "tier"
)

// State is what one run of the controller observed.
type State struct {
	Now time.Time
	// Desired and Running are the ECS service's task counts.
	Desired, Running int
	// Routes is where every sync route points, "" when they point to
	// different places or elsewhere (a failed flip).
	Routes Position
	// Targets is each route's target as read, by route ID.
	Targets map[string]string
	// Concurrency is the mean number of syncs waiting in Lambda over
	// ConcurrencyWindow (Concurrency).
	Concurrency float64
	// Statuses are the tier's fresh statuses (ReadStatuses).
	Statuses []Status
	// Reachable says the tier answered its health check through the API;
	// checked only when a task runs and reports. Unreachable says why not.
	Reachable   bool
	Unreachable string
	// Memory is the controller's memory item as read.
	Memory Memory
}

// Memory is what the controller remembers between runs.
type Memory struct {
	// Routes is the position the controller last chose; "" before its
	// first run.
	Routes Position
	// LowSince is when the tier's load went below DownLoad.
	LowSince time.Time
	// DrainFrom is when the routes left the tier to scale it down.
	DrainFrom time.Time
	// NoStatusSince is the first run that found the tier asked for but
	// not up.
	NoStatusSince time.Time
	// Rev is the revision of the item read, 0 when there was none.
	Rev int64
}

// Decision is what a run does: the routes' position and the desired count
// it wants, and the memory to keep.
type Decision struct {
	Routes  Position
	Desired int
	Memory  Memory
	// Reason says which rule decided, with its figures.
	Reason string
	// Failed marks a tier given up on after StartTimeout.
	Failed bool
}

// Up reports whether the tier serves: a task runs, a process reported
// within StaleAfter, and the tier answers through the API. All three,
// because a stopped task's last status stays fresh for a while, a task
// that runs but cannot reach the table does not serve, and one that API
// Gateway cannot reach (a VPC link still waking) serves nobody.
func (s State) Up() bool { return s.Running > 0 && len(s.Statuses) > 0 && s.Reachable }

// Load is the tier's load: the sum over its fresh statuses of the most
// polls each held since its last report.
func (s State) Load() int {
	n := 0
	for _, st := range s.Statuses {
		n += max(st.Peak, st.Waiting)
	}
	return n
}

// position is where the controller considers the routes to be: where it
// last put them, so that a flip that failed half-way is finished; before
// its first run, where they all point, else Lambda.
func (s State) position() Position {
	switch {
	case s.Memory.Routes != "":
		return s.Memory.Routes
	case s.Routes != "":
		return s.Routes
	}
	return OnLambda
}

// Decide applies the controller's rules (see the package doc) to s.
func Decide(s State) Decision {
	m := s.Memory
	pos := s.position()
	d := Decision{Routes: pos, Desired: s.Desired}
	up := s.Up()
	// The start clock runs while the tier is asked for and not up.
	if up || s.Desired == 0 {
		m.NoStatusSince = time.Time{}
	} else if m.NoStatusSince.IsZero() {
		m.NoStatusSince = s.Now
	}
	if pos != OnTier {
		m.LowSince = time.Time{}
	}

	switch {
	case pos == OnTier && s.Desired == 0:
		d.Routes, m.LowSince = OnLambda, time.Time{}
		d.Reason = "the tier is scaled to zero: routes to Lambda"
	case pos == OnTier && !up:
		d.Routes, m.LowSince = OnLambda, time.Time{}
		d.Reason = "the tier is not up: routes to Lambda until ECS replaces its task"
	case pos == OnTier:
		d.Reason = decideOnTier(s, &d, &m)
	case !m.DrainFrom.IsZero():
		d.Reason = decideDrain(s, &d, &m)
	case s.Desired > 0 && up:
		d.Routes = OnTier
		d.Reason = "the tier is up: routes to the tier"
	case s.Desired > 0 && s.Now.Sub(m.NoStatusSince) >= StartTimeout:
		d.Desired, d.Failed, m.NoStatusSince = 0, true, time.Time{}
		d.Reason = fmt.Sprintf("the tier has not come up in %v: scaled to zero", StartTimeout)
	case s.Desired > 0:
		d.Reason = fmt.Sprintf("waiting for the tier to come up (asked for %v ago)", s.Now.Sub(m.NoStatusSince).Round(time.Second))
	case s.Concurrency >= UpConcurrency:
		d.Desired, m.NoStatusSince = 1, s.Now
		d.Reason = fmt.Sprintf("mean concurrency %.2f at or above %.0f: starting the tier", s.Concurrency, UpConcurrency)
	default:
		d.Reason = fmt.Sprintf("mean concurrency %.2f below %.0f: the tier stays at zero", s.Concurrency, UpConcurrency)
	}
	m.Routes = d.Routes
	d.Memory = m
	return d
}

// decideOnTier applies rule 3 to a tier that is up and routed to.
func decideOnTier(s State, d *Decision, m *Memory) string {
	load := s.Load()
	switch {
	case load >= DownLoad:
		m.LowSince = time.Time{}
		return fmt.Sprintf("the tier holds %d polls at its peak: it stays", load)
	case m.LowSince.IsZero():
		m.LowSince = s.Now
		return fmt.Sprintf("the tier holds %d polls at its peak, below %d: the low window starts", load, DownLoad)
	case s.Now.Sub(m.LowSince) >= LowWindow:
		d.Routes, m.LowSince, m.DrainFrom = OnLambda, time.Time{}, s.Now
		return fmt.Sprintf("the tier has held fewer than %d polls for %v: routes to Lambda, scaled to zero in %v", DownLoad, LowWindow, DrainDelay)
	}
	return fmt.Sprintf("the tier holds %d polls at its peak, low for %v", load, s.Now.Sub(m.LowSince).Round(time.Second))
}

// decideDrain applies rule 4 to the routes back on Lambda after the tier.
func decideDrain(s State, d *Decision, m *Memory) string {
	switch {
	case s.Desired == 0:
		m.DrainFrom = time.Time{}
		return "the tier is already at zero"
	case s.Now.Sub(m.DrainFrom) >= DrainDelay:
		d.Desired, m.DrainFrom, m.NoStatusSince = 0, time.Time{}, time.Time{}
		return "Lambda holds the polls: the tier is scaled to zero"
	}
	return "waiting for Lambda to hold the polls before scaling the tier to zero"
}

// logDecision writes d as one line with the figures it was made on.
func logDecision(ctx context.Context, log *slog.Logger, s State, d Decision) {
	level := slog.LevelInfo
	if d.Failed {
		level = slog.LevelError
	}
	log.Log(ctx, level, "sync tier decision",
		"reason", d.Reason,
		"routes", string(s.position()), "routes_observed", string(s.Routes), "routes_wanted", string(d.Routes),
		"desired", s.Desired, "desired_wanted", d.Desired, "running", s.Running,
		"concurrency", s.Concurrency, "statuses", len(s.Statuses), "load", s.Load(),
		"reachable", s.Reachable, "unreachable", s.Unreachable,
		"low_since", timeAttr(d.Memory.LowSince), "drain_from", timeAttr(d.Memory.DrainFrom),
		"no_status_since", timeAttr(d.Memory.NoStatusSince),
	)
}

// timeAttr shows a remembered time, "" when unset.
func timeAttr(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
