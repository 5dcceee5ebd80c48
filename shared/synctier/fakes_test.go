package synctier_test

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/apigatewayv2"
	apitypes "github.com/aws/aws-sdk-go-v2/service/apigatewayv2/types"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
)

// fakeECS is one ECS service in one cluster. Like ECS, it reports a
// service it does not have as a failure, not an error, and refuses to
// update one.
type fakeECS struct {
	mu               sync.Mutex
	cluster, service string
	desired, running int
}

func (f *fakeECS) DescribeServices(_ context.Context, in *ecs.DescribeServicesInput, _ ...func(*ecs.Options)) (*ecs.DescribeServicesOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if aws.ToString(in.Cluster) != f.cluster {
		return nil, &ecstypes.ClusterNotFoundException{Message: aws.String("Cluster not found.")}
	}
	out := &ecs.DescribeServicesOutput{}
	for _, name := range in.Services {
		if name != f.service {
			out.Failures = append(out.Failures, ecstypes.Failure{
				Arn:    aws.String("arn:aws:ecs:eu-west-1:123456789012:service/" + f.cluster + "/" + name),
				Reason: aws.String("MISSING"),
			})
			continue
		}
		out.Services = append(out.Services, ecstypes.Service{
			ServiceName:  aws.String(f.service),
			DesiredCount: int32(f.desired),
			RunningCount: int32(f.running),
		})
	}
	return out, nil
}

func (f *fakeECS) UpdateService(_ context.Context, in *ecs.UpdateServiceInput, _ ...func(*ecs.Options)) (*ecs.UpdateServiceOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if aws.ToString(in.Cluster) != f.cluster {
		return nil, &ecstypes.ClusterNotFoundException{Message: aws.String("Cluster not found.")}
	}
	if aws.ToString(in.Service) != f.service {
		return nil, &ecstypes.ServiceNotFoundException{Message: aws.String("Service not found.")}
	}
	if in.DesiredCount != nil {
		if *in.DesiredCount < 0 {
			return nil, &ecstypes.InvalidParameterException{Message: aws.String("desiredCount must be at least 0")}
		}
		f.desired = int(*in.DesiredCount)
	}
	return &ecs.UpdateServiceOutput{Service: &ecstypes.Service{ServiceName: in.Service, DesiredCount: int32(f.desired)}}, nil
}

func (f *fakeECS) counts() (desired, running int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.desired, f.running
}

func (f *fakeECS) setRunning(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.running = n
}

// fakeAPI is an HTTP API's routes and integrations. Like API Gateway, it
// takes only "integrations/<id>" of an integration it has as a target,
// and answers NotFound for a route or API it does not have. failNext makes
// the next UpdateRoute of a route fail.
type fakeAPI struct {
	mu           sync.Mutex
	apiID        string
	integrations []string
	targets      map[string]string
	failNext     map[string]error
}

func (f *fakeAPI) GetRoute(_ context.Context, in *apigatewayv2.GetRouteInput, _ ...func(*apigatewayv2.Options)) (*apigatewayv2.GetRouteOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.targets[aws.ToString(in.RouteId)]
	if aws.ToString(in.ApiId) != f.apiID || !ok {
		return nil, &apitypes.NotFoundException{Message: aws.String("Invalid Route identifier specified"), ResourceType: aws.String("Route")}
	}
	return &apigatewayv2.GetRouteOutput{RouteId: in.RouteId, Target: aws.String(t)}, nil
}

func (f *fakeAPI) UpdateRoute(_ context.Context, in *apigatewayv2.UpdateRouteInput, _ ...func(*apigatewayv2.Options)) (*apigatewayv2.UpdateRouteOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := aws.ToString(in.RouteId)
	if _, ok := f.targets[id]; aws.ToString(in.ApiId) != f.apiID || !ok {
		return nil, &apitypes.NotFoundException{Message: aws.String("Invalid Route identifier specified"), ResourceType: aws.String("Route")}
	}
	if err := f.failNext[id]; err != nil {
		delete(f.failNext, id)
		return nil, err
	}
	if in.Target != nil {
		integration, ok := strings.CutPrefix(*in.Target, "integrations/")
		if !ok || !contains(f.integrations, integration) {
			return nil, &apitypes.BadRequestException{Message: aws.String(fmt.Sprintf("Invalid target %q", *in.Target))}
		}
		f.targets[id] = *in.Target
	}
	return &apigatewayv2.UpdateRouteOutput{RouteId: in.RouteId, Target: aws.String(f.targets[id])}, nil
}

func (f *fakeAPI) snapshot() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]string, len(f.targets))
	for k, v := range f.targets {
		out[k] = v
	}
	return out
}

func (f *fakeAPI) set(route, target string, failNext error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if target != "" {
		f.targets[route] = target
	}
	if failNext != nil {
		f.failNext[route] = failNext
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
