// Command tier is the sync tier's controller, run every minute by an
// EventBridge schedule: it switches the sync routes between the client
// function and the Fargate sync tier and scales the tier to zero when
// nobody is connected (synctier.Controller; its rules are in the package
// doc of shared/synctier).
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/apigatewayv2"
	"github.com/aws/aws-sdk-go-v2/service/ecs"

	"github.com/cirrus-matrix/cirrus/shared/store"
	"github.com/cirrus-matrix/cirrus/shared/synctier"
)

func main() {
	ctl, err := open(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	lambda.Start(func(ctx context.Context, _ events.EventBridgeEvent) error {
		return ctl.Run(ctx)
	})
}

// open builds the controller from the environment.
func open(ctx context.Context) (*synctier.Controller, error) {
	cfg, err := synctier.LoadConfig(os.LookupEnv)
	if err != nil {
		return nil, err
	}
	st, err := store.Open(ctx, store.Options{Table: cfg.Table, Endpoint: cfg.DynamoDBEndpoint})
	if err != nil {
		return nil, err
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("aws config: %w", err)
	}
	return &synctier.Controller{
		Config: cfg,
		Store:  st,
		ECS:    ecs.NewFromConfig(awsCfg),
		Routes: apigatewayv2.NewFromConfig(awsCfg),
		Logger: slog.New(slog.NewJSONHandler(os.Stdout, nil)),
	}, nil
}
