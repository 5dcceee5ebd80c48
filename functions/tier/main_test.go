package main

import (
	"context"
	"strings"
	"testing"
)

var tierEnv = map[string]string{
	"CIRRUS_DYNAMODB_TABLE":              "cirrus",
	"CIRRUS_TIER_CLUSTER":                "cirrus-cluster",
	"CIRRUS_TIER_SERVICE":                "sync-tier",
	"CIRRUS_TIER_API_ID":                 "a1b2c3",
	"CIRRUS_TIER_ROUTE_IDS":              "r1,r2,r3,r4",
	"CIRRUS_TIER_LAMBDA_INTEGRATION_ID":  "lam",
	"CIRRUS_TIER_FARGATE_INTEGRATION_ID": "far",
	"CIRRUS_TIER_HEALTH_URL":             "https://matrix.example.org/_cirrus/health",
}

func TestOpen(t *testing.T) {
	for k, v := range tierEnv {
		t.Setenv(k, v)
	}
	t.Setenv("AWS_REGION", "eu-west-1")
	ctl, err := open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if ctl.Store == nil || ctl.ECS == nil || ctl.Routes == nil || ctl.Logger == nil {
		t.Fatalf("controller %+v lacks a client", ctl)
	}
	if ctl.Config.Service != "sync-tier" || len(ctl.Config.RouteIDs) != 4 {
		t.Fatalf("config %+v", ctl.Config)
	}
}

func TestOpen_MissingConfig(t *testing.T) {
	for k, v := range tierEnv {
		t.Setenv(k, v)
	}
	t.Setenv("CIRRUS_TIER_API_ID", "")
	t.Setenv("CIRRUS_TIER_SERVICE", "")
	_, err := open(context.Background())
	if err == nil || !strings.Contains(err.Error(), "CIRRUS_TIER_API_ID") || !strings.Contains(err.Error(), "CIRRUS_TIER_SERVICE") {
		t.Fatalf("open: %v, want an error naming both missing variables", err)
	}
}
