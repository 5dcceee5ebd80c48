package synctier_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/synctier"
)

// world is what the controller observes in a decision test. Its routes
// and desired count follow the controller's decisions; the test moves
// the rest (tasks running, the tier's load, Lambda's concurrency) and the
// clock, as ECS, clients and time would.
type world struct {
	t           *testing.T
	now         time.Time
	routes      synctier.Position
	desired     int
	running     int
	load        int // the tier's peak; -1: no fresh status
	concurrency float64
	mem         synctier.Memory
	failed      bool // the last decision gave up on the tier
	unreachable bool // the tier's health check through the API fails
}

func newWorld(t *testing.T) *world {
	return &world{t: t, now: time.Unix(1_800_000_000, 0), routes: synctier.OnLambda, load: -1}
}

// run advances the clock by after, decides, checks that the decision's
// actions are exactly want ("routes tier", "routes lambda", "desired N",
// in that order), and applies them.
func (w *world) run(after time.Duration, want ...string) synctier.Decision {
	w.t.Helper()
	w.now = w.now.Add(after)
	s := synctier.State{
		Now:         w.now,
		Desired:     w.desired,
		Running:     w.running,
		Routes:      w.routes,
		Concurrency: w.concurrency,
		Memory:      w.mem,
	}
	if w.load >= 0 {
		s.Statuses = []synctier.Status{{SK: "task-1", Peak: w.load, Waiting: w.load / 2, At: w.now.UnixMilli()}}
		// The adapter checks the health only of a tier that runs and reports.
		s.Reachable = w.running > 0 && !w.unreachable
	}
	d := synctier.Decide(s)
	var got []string
	if d.Routes != w.routes {
		got = append(got, "routes "+string(d.Routes))
	}
	if d.Desired != w.desired {
		got = append(got, fmt.Sprintf("desired %d", d.Desired))
	}
	if !slices.Equal(got, want) {
		w.t.Fatalf("at +%v (routes %s, desired %d, running %d, load %d, concurrency %.2f, memory %+v): actions %q, want %q (reason: %s)",
			w.now.Sub(time.Unix(1_800_000_000, 0)), w.routes, w.desired, w.running, w.load, w.concurrency, w.mem, got, want, d.Reason)
	}
	w.routes, w.desired, w.mem, w.failed = d.Routes, d.Desired, d.Memory, d.Failed
	return d
}

// startTier takes the world from idle to the tier serving the routes.
func (w *world) startTier() {
	w.t.Helper()
	w.concurrency = 3
	w.run(time.Minute, "desired 1")
	w.running, w.load = 1, 4
	w.run(time.Minute, "routes tier")
	w.concurrency = 0.1 // the polls went to the tier
}

func TestDecide_ScaleUp(t *testing.T) {
	w := newWorld(t)
	for _, c := range []float64{0, 0.5, 1.99} {
		w.concurrency = c
		w.run(time.Minute) // below the threshold: nothing
	}
	w.concurrency = 2
	w.run(time.Minute, "desired 1")
	// ECS starts the task; until it reports, the routes stay on Lambda.
	w.run(time.Minute)
	w.running = 1
	w.run(time.Minute)
	w.load = 0
	w.run(time.Minute, "routes tier")
	w.run(time.Minute)
	if w.mem.Routes != synctier.OnTier || !w.mem.NoStatusSince.IsZero() {
		t.Fatalf("memory %+v, want routes on the tier and no start clock", w.mem)
	}
}

func TestDecide_Interruption(t *testing.T) {
	w := newWorld(t)
	w.startTier()
	w.run(time.Minute)
	// Spot takes the task back: no task runs (its last status is still
	// fresh): back to Lambda at once, the desired count stays.
	w.running = 0
	w.run(time.Minute, "routes lambda")
	w.load = -1
	w.run(time.Minute)
	w.run(time.Minute)
	// The replacement reports: back to the tier.
	w.running, w.load = 1, 5
	w.run(time.Minute, "routes tier")
}

func TestDecide_StatusGoneWhileRunning(t *testing.T) {
	w := newWorld(t)
	w.startTier()
	// The task runs but has stopped reporting (cannot reach the table).
	w.load = -1
	w.run(time.Minute, "routes lambda")
}

func TestDecide_ScaleDown(t *testing.T) {
	w := newWorld(t)
	w.startTier()
	w.load = 1
	w.run(time.Minute) // the low window starts
	start := w.mem.LowSince
	for range 29 {
		w.run(time.Minute)
	}
	if w.now.Sub(start) != 29*time.Minute || w.mem.LowSince != start {
		t.Fatalf("low since %v, now %v: want the window 29 minutes old", w.mem.LowSince, w.now)
	}
	w.run(time.Minute, "routes lambda")
	// The tier still runs and reports, but is not taken back; it is
	// scaled to zero only a minute after the routes left it.
	w.load = 0
	w.run(30 * time.Second)
	w.run(30*time.Second, "desired 0")
	w.running, w.load = 0, -1
	for range 10 {
		w.run(time.Minute)
	}
	if w.mem != (synctier.Memory{Routes: synctier.OnLambda}) {
		t.Fatalf("memory %+v after scaling down, want only the routes on Lambda", w.mem)
	}
}

func TestDecide_Hysteresis(t *testing.T) {
	w := newWorld(t)
	w.startTier()
	w.load = 1
	for range 20 {
		w.run(time.Minute)
	}
	// Clients come back for a minute: the window starts again.
	w.load = 2
	w.run(time.Minute)
	if !w.mem.LowSince.IsZero() {
		t.Fatalf("low since %v with a load of 2, want reset", w.mem.LowSince)
	}
	w.load = 1
	w.run(time.Minute) // the window starts again here
	for range 29 {
		w.run(time.Minute) // 50 minutes low in all, but not 30 in a row
	}
	w.run(time.Minute, "routes lambda")
}

func TestDecide_FailedStart(t *testing.T) {
	for _, running := range []int{0, 1} { // never placed; runs without reporting
		t.Run(fmt.Sprintf("running %d", running), func(t *testing.T) {
			w := newWorld(t)
			w.concurrency = 2.5
			w.run(time.Minute, "desired 1")
			w.running = running
			for range 14 {
				w.run(time.Minute)
			}
			if w.failed {
				t.Fatal("given up on before the timeout")
			}
			w.run(time.Minute, "desired 0")
			if !w.failed {
				t.Fatal("the decision to give up is not marked failed (logged as an error)")
			}
			// Still busy on Lambda: it tries again.
			w.running = 0
			w.run(time.Minute, "desired 1")
		})
	}
}

func TestDecide_ReplacementThatNeverComes(t *testing.T) {
	w := newWorld(t)
	w.startTier()
	w.running, w.load = 0, -1
	w.run(time.Minute, "routes lambda")
	for range 14 {
		w.run(time.Minute)
	}
	w.run(time.Minute, "desired 0")
}

func TestDecide_ScaledToZeroFromOutside(t *testing.T) {
	w := newWorld(t)
	w.startTier()
	w.desired = 0 // a deploy reset the count; the task still reports
	w.run(time.Minute, "routes lambda")
	w.running, w.load = 0, -1
	w.run(time.Minute)
}

func TestDecide_FirstRunFollowsTheRoutes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		routes synctier.Position
		want   []string
	}{
		{"on the tier", synctier.OnTier, nil},
		{"on Lambda", synctier.OnLambda, []string{"routes tier"}},
		// Half-flipped, no memory: Lambda always serves, and the tier is
		// up, so the flip is finished towards the tier.
		{"mixed", "", []string{"routes tier"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			w.routes, w.desired, w.running, w.load = tc.routes, 1, 1, 5
			w.run(time.Minute, tc.want...)
		})
	}
}

func TestDecide_MemoryFinishesAHalfFlip(t *testing.T) {
	// The last run chose the tier but one route stayed on Lambda: the
	// controller still considers the routes on the tier, and wants them
	// all there.
	s := synctier.State{
		Now: time.Unix(1_800_000_000, 0), Desired: 1, Running: 1, Routes: "",
		Statuses: []synctier.Status{{SK: "task-1", Peak: 3}}, Reachable: true,
		Memory: synctier.Memory{Routes: synctier.OnTier, Rev: 7},
	}
	d := synctier.Decide(s)
	if d.Routes != synctier.OnTier || d.Desired != 1 || d.Memory.Rev != 7 {
		t.Fatalf("decision %+v, want routes on the tier, desired 1, memory at revision 7", d)
	}
}

// A tier that runs and reports but that API Gateway cannot reach (a VPC
// link waking after 60 days without traffic, a security group that shuts
// it out) gets no routes; once reachable it gets them, and losing the
// path while routed sends them back to Lambda at once. Unreachable for
// StartTimeout, it is given up on.
func TestDecide_RoutesOnlyToAReachableTier(t *testing.T) {
	w := newWorld(t)
	w.concurrency = 3
	w.run(time.Minute, "desired 1")
	w.running, w.load, w.unreachable = 1, 4, true
	w.run(time.Minute)
	w.run(3 * time.Minute)
	w.unreachable = false
	w.run(time.Minute, "routes tier")
	w.unreachable = true
	w.run(time.Minute, "routes lambda")
	w.run(5 * time.Minute)
	w.run(10*time.Minute, "desired 0")
	if !w.failed {
		t.Fatal("a tier unreachable for the start timeout was not reported as failed")
	}
}
