package synctier_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apitypes "github.com/aws/aws-sdk-go-v2/service/apigatewayv2/types"

	"github.com/cirrus-matrix/cirrus/shared/store"
	"github.com/cirrus-matrix/cirrus/shared/store/embedded"
	"github.com/cirrus-matrix/cirrus/shared/synctier"
)

const (
	lambdaTarget = "integrations/lambda-int"
	tierTarget   = "integrations/tier-int"
)

var routeIDs = []string{"r-v3", "r-r0", "r-msc3575", "r-v4"}

func newStore(t *testing.T) *store.Store {
	t.Helper()
	srv, err := embedded.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ctx := context.Background()
	st, err := store.Open(ctx, store.Options{Table: "t", Endpoint: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CreateTable(ctx); err != nil {
		t.Fatal(err)
	}
	return st
}

// stack is a controller over a real store and fake AWS services, on a
// clock the test moves.
type stack struct {
	t   *testing.T
	ctl *synctier.Controller
	st  *store.Store
	ecs *fakeECS
	api *fakeAPI
	log *syncBuffer
	now time.Time
	// health is the status the tier's health route answers through the
	// API; 200 unless a test breaks the path.
	health atomic.Int32
}

func newStack(t *testing.T) *stack {
	s := &stack{
		t:   t,
		st:  newStore(t),
		ecs: &fakeECS{cluster: "cirrus", service: "sync-tier"},
		api: &fakeAPI{apiID: "api1", integrations: []string{"lambda-int", "tier-int"}, targets: map[string]string{}, failNext: map[string]error{}},
		log: &syncBuffer{},
		// 12:00:20, so that a run's minute is plain.
		now: time.Unix(1_800_000_000, 0).Truncate(time.Hour).Add(20 * time.Second),
	}
	for _, id := range routeIDs {
		s.api.targets[id] = lambdaTarget
	}
	s.health.Store(http.StatusOK)
	health := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(s.health.Load()))
		io.WriteString(w, `{"waiting":0}`)
	}))
	t.Cleanup(health.Close)
	s.ctl = &synctier.Controller{
		Config: synctier.Config{
			Cluster: "cirrus", Service: "sync-tier",
			APIID: "api1", RouteIDs: routeIDs,
			LambdaIntegrationID: "lambda-int", TierIntegrationID: "tier-int",
			HealthURL: health.URL + "/_cirrus/health",
		},
		Store:  s.st,
		ECS:    s.ecs,
		Routes: s.api,
		Logger: slog.New(slog.NewJSONHandler(s.log, nil)),
		Now:    func() time.Time { return s.now },
	}
	return s
}

// busyLambda tallies, as the client function does, n clients waiting in
// Lambda through the minutes before the next run.
func (s *stack) busyLambda(n int) {
	s.t.Helper()
	for m := range 7 {
		end := s.now.Truncate(time.Minute).Add(time.Duration(1-m) * time.Minute)
		for range n * 2 {
			if err := synctier.RecordWait(context.Background(), s.st, end, 30*time.Second); err != nil {
				s.t.Fatal(err)
			}
		}
	}
}

// report writes the tier's status as its process does.
func (s *stack) report(peak int) {
	s.t.Helper()
	if err := synctier.WriteStatus(context.Background(), s.st, "task-1", synctier.Status{Waiting: peak, Peak: peak}, s.now); err != nil {
		s.t.Fatal(err)
	}
}

// run advances the clock and runs the controller once.
func (s *stack) run(after time.Duration) error {
	s.now = s.now.Add(after)
	return s.ctl.Run(context.Background())
}

func (s *stack) mustRun(after time.Duration) {
	s.t.Helper()
	if err := s.run(after); err != nil {
		s.t.Fatalf("run at %v: %v", s.now, err)
	}
}

// wantRoutes checks every sync route's target.
func (s *stack) wantRoutes(want string) {
	s.t.Helper()
	for id, got := range s.api.snapshot() {
		if got != want {
			s.t.Fatalf("route %s targets %q, want %q (all: %v)", id, got, want, s.api.snapshot())
		}
	}
}

func (s *stack) wantDesired(want int) {
	s.t.Helper()
	if got, _ := s.ecs.counts(); got != want {
		s.t.Fatalf("desired count %d, want %d", got, want)
	}
}

func (s *stack) memory() synctier.Memory {
	s.t.Helper()
	m, err := synctier.ReadMemory(context.Background(), s.st)
	if err != nil {
		s.t.Fatal(err)
	}
	return m
}

// syncBuffer is a log sink safe for the handler's writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// decisions returns the decision lines logged, decoded.
func (b *syncBuffer) decisions(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("log line %s is not JSON: %v", sc.Bytes(), err)
		}
		if line["msg"] == "sync tier decision" {
			out = append(out, line)
		}
	}
	return out
}

func TestController_Lifecycle(t *testing.T) {
	s := newStack(t)
	s.mustRun(0)
	s.wantDesired(0)
	s.wantRoutes(lambdaTarget)

	// Three clients poll through Lambda: the tier starts.
	s.busyLambda(3)

	s.mustRun(time.Minute)
	s.wantDesired(1)
	s.wantRoutes(lambdaTarget)
	if m := s.memory(); !m.NoStatusSince.Equal(s.now) || m.Rev != 2 {
		t.Fatalf("memory %+v, want the start clock at %v, revision 2", m, s.now)
	}

	// ECS runs the task; it reports: every route moves to the tier.
	s.ecs.setRunning(1)
	s.report(3)
	s.mustRun(time.Minute)
	s.wantRoutes(tierTarget)
	if m := s.memory(); m.Routes != synctier.OnTier || !m.NoStatusSince.IsZero() {
		t.Fatalf("memory %+v, want the routes on the tier, no start clock", m)
	}

	// The clients leave; the tier reports one poll at most for 30
	// minutes; then the routes leave it, and a minute later it stops.
	s.report(1)
	s.mustRun(time.Minute)
	lowFrom := s.now
	for s.now.Sub(lowFrom) < synctier.LowWindow-time.Minute {
		s.report(1)
		s.mustRun(time.Minute)
		s.wantRoutes(tierTarget)
	}
	s.report(1)
	s.mustRun(time.Minute)
	s.wantRoutes(lambdaTarget)
	s.wantDesired(1)
	s.report(0)
	s.mustRun(time.Minute)
	s.wantDesired(0)
	s.wantRoutes(lambdaTarget)

	// One JSON line a run, with the figures.
	lines := s.log.decisions(t)
	if want := 3 + 1 + int(synctier.LowWindow/time.Minute) + 1; len(lines) != want {
		t.Fatalf("%d decision lines, want %d (one a run)", len(lines), want)
	}
	first, last := lines[1], lines[len(lines)-1]
	if first["concurrency"] != 3.0 || first["desired_wanted"] != 1.0 || first["level"] != "INFO" {
		t.Errorf("scale-up line %v, want concurrency 3, desired_wanted 1, INFO", first)
	}
	if last["routes"] != "lambda" || last["desired"] != 1.0 || last["desired_wanted"] != 0.0 || last["load"] != 0.0 {
		t.Errorf("scale-down line %v", last)
	}
}

func TestController_FailedRouteUpdateIsRepaired(t *testing.T) {
	s := newStack(t)
	s.busyLambda(3)
	s.mustRun(0)
	s.ecs.setRunning(1)
	s.report(4)
	before := s.memory()

	// The flip to the tier fails on one route.
	s.api.set("r-msc3575", "", &apitypes.TooManyRequestsException{Message: ptr("Too Many Requests")})
	err := s.run(time.Minute)
	var throttled *apitypes.TooManyRequestsException
	if !errors.As(err, &throttled) || !strings.Contains(err.Error(), "r-msc3575") {
		t.Fatalf("run: %v, want the route's throttling error naming it", err)
	}
	got := s.api.snapshot()
	for _, id := range routeIDs {
		want := tierTarget
		if id == "r-msc3575" {
			want = lambdaTarget
		}
		if got[id] != want {
			t.Fatalf("after the failed run, route %s targets %q, want %q", id, got[id], want)
		}
	}
	if m := s.memory(); m != before {
		t.Fatalf("memory %+v after a failed run, want it as before, %+v", m, before)
	}

	// The next run finishes the flip.
	s.report(4)
	s.mustRun(time.Minute)
	s.wantRoutes(tierTarget)
	if m := s.memory(); m.Routes != synctier.OnTier || m.Rev != before.Rev+1 {
		t.Fatalf("memory %+v, want the routes on the tier at revision %d", m, before.Rev+1)
	}
}

func TestController_NoScaleDownWhileARouteMayPointAtTheTier(t *testing.T) {
	s := newStack(t)
	s.busyLambda(3)
	s.mustRun(0)
	s.ecs.setRunning(1)
	s.report(1)
	s.mustRun(time.Minute)                         // routes to the tier; the low window starts
	for range synctier.LowWindow/time.Minute + 1 { // the first starts the window
		s.report(1)
		s.mustRun(time.Minute)
	}
	s.wantRoutes(lambdaTarget)

	// Someone points a route back at the tier during the drain, and
	// moving it back fails at first: the tier keeps its task.
	s.api.set("r-v4", tierTarget, &apitypes.TooManyRequestsException{Message: ptr("Too Many Requests")})
	if err := s.run(time.Minute); err == nil {
		t.Fatal("run succeeded with a route left on the tier")
	}
	s.wantDesired(1)
	if got := s.api.snapshot()["r-v4"]; got != tierTarget {
		t.Fatalf("r-v4 targets %q", got)
	}
	s.mustRun(time.Minute)
	s.wantRoutes(lambdaTarget)
	s.wantDesired(0)
}

func TestController_Interruption(t *testing.T) {
	s := newStack(t)
	s.busyLambda(3)
	s.mustRun(0)
	s.ecs.setRunning(1)
	s.report(5)
	s.mustRun(time.Minute)
	s.wantRoutes(tierTarget)

	// Spot stops the task; its last status is still fresh.
	s.ecs.setRunning(0)
	s.mustRun(time.Minute)
	s.wantRoutes(lambdaTarget)
	s.wantDesired(1)

	s.mustRun(time.Minute)
	s.wantRoutes(lambdaTarget)

	// ECS places a replacement, which reports under its own ID.
	s.ecs.setRunning(1)
	if err := synctier.WriteStatus(context.Background(), s.st, "task-2", synctier.Status{Waiting: 4, Peak: 5}, s.now); err != nil {
		t.Fatal(err)
	}
	s.mustRun(time.Minute)
	s.wantRoutes(tierTarget)
	s.wantDesired(1)
}

func TestController_Observe(t *testing.T) {
	s := newStack(t)
	ctx := context.Background()
	s.now = time.Date(2027, 1, 15, 12, 7, 30, 0, time.UTC)
	// 450 s of waits over the five whole minutes before now's: 1.5.
	for m, held := range map[int]time.Duration{2: 30 * time.Second, 3: 90 * time.Second, 4: 2 * time.Minute, 6: 210 * time.Second, 7: time.Hour} {
		if err := synctier.RecordWait(ctx, s.st, time.Date(2027, 1, 15, 12, m, 40, 0, time.UTC), held); err != nil {
			t.Fatal(err)
		}
	}
	// Two processes: one fresh, one that stopped reporting 4 minutes ago.
	if err := synctier.WriteStatus(ctx, s.st, "task-old", synctier.Status{Waiting: 9, Peak: 9}, s.now.Add(-4*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := synctier.WriteStatus(ctx, s.st, "task-new", synctier.Status{Waiting: 3, Peak: 2}, s.now.Add(-30*time.Second)); err != nil {
		t.Fatal(err)
	}
	s.ecs.desired, s.ecs.running = 1, 1
	s.api.targets["r-v4"] = tierTarget

	st, err := s.ctl.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Concurrency != 1.5 { // 450 s of polls in 300 s
		t.Errorf("concurrency %v, want 1.5", st.Concurrency)
	}
	if len(st.Statuses) != 1 || st.Statuses[0].SK != "task-new" || st.Load() != 3 || !st.Up() {
		t.Errorf("statuses %+v (load %d, up %v), want task-new alone, load 3, up", st.Statuses, st.Load(), st.Up())
	}
	if st.Desired != 1 || st.Running != 1 || st.Routes != "" || st.Targets["r-v4"] != tierTarget || st.Targets["r-v3"] != lambdaTarget {
		t.Errorf("state %+v, want desired 1, running 1, routes mixed", st)
	}

	// The path through the API broken: the tier runs and reports, but is
	// not up.
	s.health.Store(http.StatusServiceUnavailable)
	st, err = s.ctl.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Reachable || st.Up() || !strings.Contains(st.Unreachable, "503") {
		t.Errorf("with the health check answering 503: reachable %v, up %v, unreachable %q", st.Reachable, st.Up(), st.Unreachable)
	}
}

func TestController_ObserveUnknownService(t *testing.T) {
	s := newStack(t)
	s.ctl.Config.Service = "sync-tierr"
	_, err := s.ctl.Observe(context.Background())
	if err == nil || !strings.Contains(err.Error(), "sync-tierr") || !strings.Contains(err.Error(), "MISSING") {
		t.Fatalf("observe: %v, want an error naming the service and ECS's reason", err)
	}
}

func TestMemory(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 123_000_000)
	m, err := synctier.ReadMemory(ctx, st)
	if err != nil || m != (synctier.Memory{}) {
		t.Fatalf("memory before any run: %+v, %v; want zero", m, err)
	}
	want := synctier.Memory{Routes: synctier.OnTier, LowSince: now.Add(-time.Minute), DrainFrom: time.Time{}, NoStatusSince: now}
	if err := synctier.WriteMemory(ctx, st, want, now); err != nil {
		t.Fatal(err)
	}
	got, err := synctier.ReadMemory(ctx, st)
	want.Rev = 1
	if err != nil || !got.LowSince.Equal(want.LowSince) || !got.NoStatusSince.Equal(want.NoStatusSince) || got.Routes != want.Routes || !got.DrainFrom.IsZero() || got.Rev != 1 {
		t.Fatalf("read back %+v, %v; want %+v", got, err, want)
	}

	// Two runs read revision 1; the second to write loses.
	if err := synctier.WriteMemory(ctx, st, synctier.Memory{Routes: synctier.OnLambda, Rev: 1}, now); err != nil {
		t.Fatal(err)
	}
	err = synctier.WriteMemory(ctx, st, synctier.Memory{Routes: synctier.OnTier, Rev: 1}, now)
	if !errors.Is(err, synctier.ErrMemoryConflict) {
		t.Fatalf("stale write: %v, want ErrMemoryConflict", err)
	}
	// A first run racing one that already wrote loses too.
	if err := synctier.WriteMemory(ctx, st, synctier.Memory{Routes: synctier.OnTier}, now); !errors.Is(err, synctier.ErrMemoryConflict) {
		t.Fatalf("write of a first run over an existing item: %v, want ErrMemoryConflict", err)
	}
	if got, _ := synctier.ReadMemory(ctx, st); got.Routes != synctier.OnLambda || got.Rev != 2 {
		t.Fatalf("memory %+v, want the first writer's, revision 2", got)
	}
}

func TestLoadConfig(t *testing.T) {
	env := map[string]string{
		"CIRRUS_DYNAMODB_TABLE":              "cirrus",
		"CIRRUS_TIER_CLUSTER":                "cirrus-cluster",
		"CIRRUS_TIER_SERVICE":                "sync-tier",
		"CIRRUS_TIER_API_ID":                 "a1b2c3",
		"CIRRUS_TIER_ROUTE_IDS":              " r1, r2,,r3 ,r4",
		"CIRRUS_TIER_LAMBDA_INTEGRATION_ID":  "lam",
		"CIRRUS_TIER_FARGATE_INTEGRATION_ID": "far",
		"CIRRUS_TIER_HEALTH_URL":             "https://matrix.example.org/_cirrus/health",
	}
	lookup := func(env map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	}
	c, err := synctier.LoadConfig(lookup(env))
	if err != nil {
		t.Fatal(err)
	}
	if c.Table != "cirrus" || c.Cluster != "cirrus-cluster" || c.Service != "sync-tier" || c.APIID != "a1b2c3" ||
		strings.Join(c.RouteIDs, "|") != "r1|r2|r3|r4" || c.LambdaIntegrationID != "lam" || c.TierIntegrationID != "far" ||
		c.HealthURL != "https://matrix.example.org/_cirrus/health" {
		t.Fatalf("config %+v", c)
	}

	delete(env, "CIRRUS_TIER_SERVICE")
	env["CIRRUS_TIER_ROUTE_IDS"] = " , "
	_, err = synctier.LoadConfig(lookup(env))
	if err == nil || !strings.Contains(err.Error(), "CIRRUS_TIER_SERVICE") || !strings.Contains(err.Error(), "CIRRUS_TIER_ROUTE_IDS") {
		t.Fatalf("missing service and routes: %v, want both named", err)
	}
	env["CIRRUS_TIER_SERVICE"], env["CIRRUS_TIER_ROUTE_IDS"] = "sync-tier", "r1"
	env["CIRRUS_TIER_FARGATE_INTEGRATION_ID"] = "lam"
	if _, err := synctier.LoadConfig(lookup(env)); err == nil {
		t.Fatal("the same integration for Lambda and the tier: no error")
	}
}

func ptr[T any](v T) *T { return &v }
