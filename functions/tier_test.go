package functions_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/store"
	"github.com/cirrus-matrix/cirrus/shared/store/embedded"
	"github.com/cirrus-matrix/cirrus/shared/synctier"
	"github.com/cirrus-matrix/cirrus/shared/testenv"
)

// TestReplayTier builds the sync tier's controller as Lambda runs it,
// starts it under the runtime interface emulator with a deployment's
// configuration, the embedded DynamoDB as its table, and ECS and API
// Gateway answered on the wire (their JSON 1.1 and REST JSON protocols)
// by one stand-in, and replays events/tier's schedule tick: with syncs
// waiting in Lambda, it asks for the tier; once the tier runs and reports,
// it moves every sync route to the tier once it answers through the API.
func TestReplayTier(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the function and the Lambda runtime interface emulator")
	}
	db, err := embedded.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	const table = "cirrus-tier"
	ctx := context.Background()
	st, err := store.Open(ctx, store.Options{Table: table, Endpoint: db.URL()})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CreateTable(ctx); err != nil {
		t.Fatal(err)
	}
	aws := newAWSStandIn(t)
	env := []string{
		"CIRRUS_DYNAMODB_TABLE=" + table,
		"DYNAMODB_ENDPOINT=" + db.URL(),
		"CIRRUS_TIER_CLUSTER=cirrus",
		"CIRRUS_TIER_SERVICE=sync-tier",
		"CIRRUS_TIER_API_ID=api1",
		"CIRRUS_TIER_ROUTE_IDS=r1,r2,r3,r4",
		"CIRRUS_TIER_LAMBDA_INTEGRATION_ID=lam",
		"CIRRUS_TIER_FARGATE_INTEGRATION_ID=far",
		// The tier's health through the API: the stand-in answers for it.
		"CIRRUS_TIER_HEALTH_URL=" + aws.URL + "/_cirrus/health",
		"AWS_ENDPOINT_URL=" + aws.URL,
	}
	url := testenv.StartRIE(t, testenv.BuildBootstrap(t, "./functions/tier"), env)
	tick, err := os.ReadFile(filepath.Join("..", "events", "tier", "tick.json"))
	if err != nil {
		t.Fatal(err)
	}

	// Three clients waiting in Lambda, as the client function tallies
	// them: the tier is asked for.
	for m := range 6 {
		end := time.Now().Add(-time.Duration(m) * time.Minute)
		for range 6 {
			if err := synctier.RecordWait(ctx, st, end, 30*time.Second); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := testenv.Invoke(t, url, tick); strings.TrimSpace(string(got)) != "null" {
		t.Fatalf("tick answered %s, want null", got)
	}
	aws.check(func() {
		if aws.desired != 1 || aws.targets["r1"] != "integrations/lam" {
			t.Fatalf("after the first tick: desired %d, routes %v; want 1, on Lambda", aws.desired, aws.targets)
		}
	})

	// ECS runs the task and it reports: every route moves to the tier.
	aws.set(func() { aws.running = 1 })
	if err := synctier.WriteStatus(ctx, st, "task-1", synctier.Status{Waiting: 3, Peak: 3}, time.Now()); err != nil {
		t.Fatal(err)
	}
	testenv.Invoke(t, url, tick)
	aws.check(func() {
		for id, target := range aws.targets {
			if target != "integrations/far" {
				t.Fatalf("after the second tick, route %s targets %q, want integrations/far (all: %v)", id, target, aws.targets)
			}
		}
	})
	m, err := synctier.ReadMemory(ctx, st)
	if err != nil || m.Routes != synctier.OnTier || m.Rev != 2 {
		t.Fatalf("memory %+v, %v: want the routes on the tier at revision 2", m, err)
	}
}

// awsStandIn answers the controller's ECS and API Gateway calls on their
// wire protocols, for one service and one API.
type awsStandIn struct {
	*httptest.Server
	t       *testing.T
	mu      sync.Mutex
	desired int
	running int
	targets map[string]string
}

func newAWSStandIn(t *testing.T) *awsStandIn {
	a := &awsStandIn{t: t, targets: map[string]string{}}
	for _, id := range []string{"r1", "r2", "r3", "r4"} {
		a.targets[id] = "integrations/lam"
	}
	a.Server = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.Close)
	return a
}

func (a *awsStandIn) set(f func())   { a.mu.Lock(); defer a.mu.Unlock(); f() }
func (a *awsStandIn) check(f func()) { a.mu.Lock(); defer a.mu.Unlock(); f() }

func (a *awsStandIn) serve(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	body, _ := io.ReadAll(r.Body)
	target := r.Header.Get("X-Amz-Target")
	switch {
	case r.URL.Path == "/_cirrus/health":
		w.Write([]byte(`{"waiting":3}`))
	case strings.HasPrefix(target, "AmazonEC2ContainerServiceV20141113."):
		a.ecs(w, strings.TrimPrefix(target, "AmazonEC2ContainerServiceV20141113."), body)
	case strings.HasPrefix(r.URL.Path, "/v2/apis/"):
		a.route(w, r, body)
	default:
		a.t.Errorf("stand-in: unexpected %s %s (target %q)", r.Method, r.URL.Path, target)
		http.Error(w, "unexpected request", http.StatusBadRequest)
	}
}

// ecs answers ECS's JSON 1.1 protocol.
func (a *awsStandIn) ecs(w http.ResponseWriter, op string, body []byte) {
	var in struct {
		Cluster      string   `json:"cluster"`
		Service      string   `json:"service"`
		Services     []string `json:"services"`
		DesiredCount *int     `json:"desiredCount"`
	}
	if err := json.Unmarshal(body, &in); err != nil || in.Cluster != "cirrus" {
		a.t.Errorf("ECS %s: body %s", op, body)
	}
	var out any
	switch op {
	case "DescribeServices":
		if len(in.Services) != 1 || in.Services[0] != "sync-tier" {
			a.t.Errorf("DescribeServices of %v", in.Services)
		}
		out = map[string]any{"services": []any{map[string]any{
			"serviceName": "sync-tier", "desiredCount": a.desired, "runningCount": a.running,
		}}, "failures": []any{}}
	case "UpdateService":
		if in.Service != "sync-tier" || in.DesiredCount == nil {
			a.t.Errorf("UpdateService: body %s", body)
		} else {
			a.desired = *in.DesiredCount
		}
		out = map[string]any{"service": map[string]any{"serviceName": "sync-tier", "desiredCount": a.desired}}
	default:
		a.t.Errorf("ECS %s not expected", op)
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	json.NewEncoder(w).Encode(out)
}

// route answers API Gateway v2's REST JSON GetRoute and UpdateRoute.
func (a *awsStandIn) route(w http.ResponseWriter, r *http.Request, body []byte) {
	api, id, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v2/apis/"), "/routes/")
	if _, known := a.targets[id]; !ok || api != "api1" || !known {
		w.Header().Set("X-Amzn-ErrorType", "NotFoundException")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"message":"Invalid Route identifier specified"}`)
		return
	}
	if r.Method == http.MethodPatch {
		var in struct {
			Target string `json:"target"`
		}
		if err := json.Unmarshal(body, &in); err != nil || !strings.HasPrefix(in.Target, "integrations/") {
			a.t.Errorf("UpdateRoute %s: body %s", id, body)
		}
		a.targets[id] = in.Target
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{"routeId": id, "routeKey": "ANY /_matrix/client/v3/sync", "target": a.targets[id]})
}
