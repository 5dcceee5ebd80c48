package synctier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/apigatewayv2"
	"github.com/aws/aws-sdk-go-v2/service/ecs"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// ECS is the part of the ECS API the controller uses (*ecs.Client).
type ECS interface {
	DescribeServices(ctx context.Context, in *ecs.DescribeServicesInput, opts ...func(*ecs.Options)) (*ecs.DescribeServicesOutput, error)
	UpdateService(ctx context.Context, in *ecs.UpdateServiceInput, opts ...func(*ecs.Options)) (*ecs.UpdateServiceOutput, error)
}

// Routes is the part of the API Gateway v2 API the controller uses
// (*apigatewayv2.Client).
type Routes interface {
	GetRoute(ctx context.Context, in *apigatewayv2.GetRouteInput, opts ...func(*apigatewayv2.Options)) (*apigatewayv2.GetRouteOutput, error)
	UpdateRoute(ctx context.Context, in *apigatewayv2.UpdateRouteInput, opts ...func(*apigatewayv2.Options)) (*apigatewayv2.UpdateRouteOutput, error)
}

// Config says what the controller controls. LoadConfig reads it from the
// tier function's environment.
type Config struct {
	// Table is the DynamoDB table; DynamoDBEndpoint another DynamoDB API
	// than AWS's, for local runs.
	Table, DynamoDBEndpoint string
	// Cluster and Service name the tier's ECS service.
	Cluster, Service string
	// APIID is the HTTP API; RouteIDs its sync routes.
	APIID    string
	RouteIDs []string
	// LambdaIntegrationID and TierIntegrationID are the integrations the
	// sync routes switch between: the client function's and the tier's.
	LambdaIntegrationID, TierIntegrationID string
	// HealthURL is the tier's health check through the API
	// (https://<domain>/_cirrus/health, a route always on the tier): it
	// answers 200 only when the whole path works, API Gateway, VPC link,
	// Cloud Map and task, and a request through it wakes a VPC link that
	// went inactive after 60 days without traffic.
	HealthURL string
}

// LoadConfig reads the tier function's configuration through lookup
// (os.LookupEnv). It names every variable missing.
func LoadConfig(lookup func(string) (string, bool)) (Config, error) {
	var missing []string
	get := func(name string) string {
		v, _ := lookup(name)
		v = strings.TrimSpace(v)
		if v == "" {
			missing = append(missing, name)
		}
		return v
	}
	c := Config{
		Table:               get("CIRRUS_DYNAMODB_TABLE"),
		Cluster:             get("CIRRUS_TIER_CLUSTER"),
		Service:             get("CIRRUS_TIER_SERVICE"),
		APIID:               get("CIRRUS_TIER_API_ID"),
		LambdaIntegrationID: get("CIRRUS_TIER_LAMBDA_INTEGRATION_ID"),
		TierIntegrationID:   get("CIRRUS_TIER_FARGATE_INTEGRATION_ID"),
		HealthURL:           get("CIRRUS_TIER_HEALTH_URL"),
	}
	for _, id := range strings.Split(get("CIRRUS_TIER_ROUTE_IDS"), ",") {
		if id = strings.TrimSpace(id); id != "" {
			c.RouteIDs = append(c.RouteIDs, id)
		}
	}
	if len(c.RouteIDs) == 0 && !slices.Contains(missing, "CIRRUS_TIER_ROUTE_IDS") {
		missing = append(missing, "CIRRUS_TIER_ROUTE_IDS")
	}
	c.DynamoDBEndpoint, _ = lookup("DYNAMODB_ENDPOINT")
	if len(missing) > 0 {
		return Config{}, fmt.Errorf("sync tier controller: missing configuration: %s", strings.Join(missing, ", "))
	}
	if c.LambdaIntegrationID == c.TierIntegrationID {
		return Config{}, fmt.Errorf("sync tier controller: CIRRUS_TIER_LAMBDA_INTEGRATION_ID and CIRRUS_TIER_FARGATE_INTEGRATION_ID are both %q", c.TierIntegrationID)
	}
	return c, nil
}

// target is the route target of an integration, as API Gateway spells it.
func target(integrationID string) string { return "integrations/" + integrationID }

// Controller switches the sync routes between Lambda and the tier and
// scales the tier; see the package doc.
type Controller struct {
	Config Config
	Store  *store.Store
	ECS    ECS
	Routes Routes
	Logger *slog.Logger
	// HTTP checks the tier's health through the API; nil means a client
	// with healthTimeout.
	HTTP *http.Client
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// healthTimeout bounds the health check: a run takes well under the
// function's minute.
const healthTimeout = 10 * time.Second

// Run is one run: observe, decide, act, and remember the decision once
// every action succeeded.
func (c *Controller) Run(ctx context.Context) error {
	s, err := c.Observe(ctx)
	if err != nil {
		return err
	}
	d := Decide(s)
	logDecision(ctx, c.Logger, s, d)
	if err := c.Act(ctx, s, d); err != nil {
		// The memory stays as it was: the next run decides the same and
		// finishes what failed.
		c.Logger.ErrorContext(ctx, "sync tier action failed", "error", err)
		return err
	}
	return WriteMemory(ctx, c.Store, d.Memory, s.Now)
}

func (c *Controller) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Observe reads the state the controller decides on.
func (c *Controller) Observe(ctx context.Context) (State, error) {
	s := State{Now: c.now()}
	var err error
	if s.Memory, err = ReadMemory(ctx, c.Store); err != nil {
		return State{}, err
	}
	if s.Statuses, err = ReadStatuses(ctx, c.Store, s.Now); err != nil {
		return State{}, err
	}
	if err := c.observeService(ctx, &s); err != nil {
		return State{}, err
	}
	if err := c.observeRoutes(ctx, &s); err != nil {
		return State{}, err
	}
	if s.Concurrency, err = Concurrency(ctx, c.Store, s.Now, ConcurrencyWindow); err != nil {
		return State{}, err
	}
	if s.Running > 0 && len(s.Statuses) > 0 {
		s.Unreachable = c.checkHealth(ctx)
		s.Reachable = s.Unreachable == ""
	}
	return s, nil
}

// checkHealth asks the tier's health through the API and says why it is
// not reachable, "" when it answered 200.
func (c *Controller) checkHealth(ctx context.Context) string {
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: healthTimeout}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.Config.HealthURL, nil)
	if err != nil {
		return err.Error()
	}
	res, err := hc.Do(req)
	if err != nil {
		return err.Error()
	}
	defer res.Body.Close()
	io.Copy(io.Discard, io.LimitReader(res.Body, 1<<16))
	if res.StatusCode != http.StatusOK {
		return "health check answered " + res.Status
	}
	return ""
}

// observeService reads the tier service's task counts.
func (c *Controller) observeService(ctx context.Context, s *State) error {
	out, err := c.ECS.DescribeServices(ctx, &ecs.DescribeServicesInput{
		Cluster:  &c.Config.Cluster,
		Services: []string{c.Config.Service},
	})
	if err != nil {
		return fmt.Errorf("describe sync tier service %s: %w", c.Config.Service, err)
	}
	if len(out.Services) != 1 {
		reason := "not found"
		if len(out.Failures) > 0 {
			reason = aws.ToString(out.Failures[0].Reason)
		}
		return fmt.Errorf("describe sync tier service %s in cluster %s: %s", c.Config.Service, c.Config.Cluster, reason)
	}
	s.Desired = int(out.Services[0].DesiredCount)
	s.Running = int(out.Services[0].RunningCount)
	return nil
}

// observeRoutes reads each sync route's target and where they all point.
func (c *Controller) observeRoutes(ctx context.Context, s *State) error {
	s.Targets = make(map[string]string, len(c.Config.RouteIDs))
	onLambda, onTier := 0, 0
	for _, id := range c.Config.RouteIDs {
		out, err := c.Routes.GetRoute(ctx, &apigatewayv2.GetRouteInput{ApiId: &c.Config.APIID, RouteId: aws.String(id)})
		if err != nil {
			return fmt.Errorf("get sync route %s: %w", id, err)
		}
		t := aws.ToString(out.Target)
		s.Targets[id] = t
		switch t {
		case target(c.Config.LambdaIntegrationID):
			onLambda++
		case target(c.Config.TierIntegrationID):
			onTier++
		}
	}
	switch len(c.Config.RouteIDs) {
	case onLambda:
		s.Routes = OnLambda
	case onTier:
		s.Routes = OnTier
	}
	return nil
}

// Act does what d says against what s observed: the routes first, each
// that points elsewhere than d wants, then the desired count. A scale-down
// is left undone when a route failed to move, as it may still point at
// the tier.
func (c *Controller) Act(ctx context.Context, s State, d Decision) error {
	want := target(c.Config.LambdaIntegrationID)
	if d.Routes == OnTier {
		want = target(c.Config.TierIntegrationID)
	}
	var errs []error
	for _, id := range c.Config.RouteIDs {
		if s.Targets[id] == want {
			continue
		}
		_, err := c.Routes.UpdateRoute(ctx, &apigatewayv2.UpdateRouteInput{
			ApiId:   &c.Config.APIID,
			RouteId: aws.String(id),
			Target:  aws.String(want),
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("route %s to %s: %w", id, want, err))
		}
	}
	if d.Desired == s.Desired {
		return errors.Join(errs...)
	}
	if d.Desired < s.Desired && len(errs) > 0 {
		errs = append(errs, fmt.Errorf("sync tier left at %d tasks while a route may point to it", s.Desired))
		return errors.Join(errs...)
	}
	_, err := c.ECS.UpdateService(ctx, &ecs.UpdateServiceInput{
		Cluster:      &c.Config.Cluster,
		Service:      &c.Config.Service,
		DesiredCount: aws.Int32(int32(d.Desired)),
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("sync tier service %s to %d tasks: %w", c.Config.Service, d.Desired, err))
	}
	return errors.Join(errs...)
}
