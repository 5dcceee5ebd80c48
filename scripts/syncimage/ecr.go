package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
	ecrtypes "github.com/aws/aws-sdk-go-v2/service/ecr/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// ecrTarget returns the ECR repository to push to, created if missing, and
// the registry credentials, from the AWS SDK's default config (the same
// credentials and region `cdk deploy` uses).
func ecrTarget(ctx context.Context, region, repository string, progress io.Writer) (name.Repository, authn.Authenticator, error) {
	cfg, err := awsConfig(ctx, region)
	if err != nil {
		return name.Repository{}, nil, err
	}
	client := ecr.NewFromConfig(cfg)
	uri, err := ensureRepository(ctx, client, repository, progress)
	if err != nil {
		return name.Repository{}, nil, err
	}
	repo, err := name.NewRepository(uri)
	if err != nil {
		return name.Repository{}, nil, fmt.Errorf("ecr repository URI %q: %w", uri, err)
	}
	auth, err := registryAuth(ctx, client)
	if err != nil {
		return name.Repository{}, nil, err
	}
	return repo, auth, nil
}

// awsConfig loads the default config and says what is missing before any
// call is made, rather than letting the first call fail obscurely.
func awsConfig(ctx context.Context, region string) (aws.Config, error) {
	var opts []func(*config.LoadOptions) error
	if region != "" {
		opts = append(opts, config.WithRegion(region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("load the AWS config: %w", err)
	}
	if cfg.Region == "" {
		return aws.Config{}, errors.New("no AWS region: give -region, or set AWS_REGION, or a region in the AWS_PROFILE's config")
	}
	if cfg.Credentials == nil {
		return aws.Config{}, errors.New("no AWS credentials: set AWS_PROFILE (aws configure, aws sso login) or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
	}
	if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
		return aws.Config{}, fmt.Errorf("no AWS credentials: set AWS_PROFILE (aws configure, aws sso login) or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY: %w", err)
	}
	return cfg, nil
}

// ensureRepository returns the URI of the repository, creating it (scan on
// push) when it does not exist.
func ensureRepository(ctx context.Context, client *ecr.Client, repository string, progress io.Writer) (string, error) {
	out, err := client.DescribeRepositories(ctx, &ecr.DescribeRepositoriesInput{RepositoryNames: []string{repository}})
	var notFound *ecrtypes.RepositoryNotFoundException
	switch {
	case err == nil && len(out.Repositories) == 1:
		return aws.ToString(out.Repositories[0].RepositoryUri), nil
	case err == nil:
		return "", fmt.Errorf("ecr DescribeRepositories %s: %d repositories in the answer", repository, len(out.Repositories))
	case !errors.As(err, &notFound):
		return "", fmt.Errorf("ecr DescribeRepositories %s: %w", repository, err)
	}
	created, err := client.CreateRepository(ctx, &ecr.CreateRepositoryInput{
		RepositoryName:             aws.String(repository),
		ImageScanningConfiguration: &ecrtypes.ImageScanningConfiguration{ScanOnPush: true},
		ImageTagMutability:         ecrtypes.ImageTagMutabilityMutable,
	})
	if err != nil {
		return "", fmt.Errorf("ecr CreateRepository %s: %w", repository, err)
	}
	uri := aws.ToString(created.Repository.RepositoryUri)
	fmt.Fprintf(progress, "created the ECR repository %s\n", uri)
	return uri, nil
}

// registryAuth turns an ECR authorization token (base64 of "AWS:<password>",
// valid 12 hours) into the registry's basic credentials.
func registryAuth(ctx context.Context, client *ecr.Client) (authn.Authenticator, error) {
	out, err := client.GetAuthorizationToken(ctx, &ecr.GetAuthorizationTokenInput{})
	if err != nil {
		return nil, fmt.Errorf("ecr GetAuthorizationToken: %w", err)
	}
	if len(out.AuthorizationData) == 0 {
		return nil, errors.New("ecr GetAuthorizationToken: no authorization data in the answer")
	}
	raw, err := base64.StdEncoding.DecodeString(aws.ToString(out.AuthorizationData[0].AuthorizationToken))
	if err != nil {
		return nil, fmt.Errorf("ecr GetAuthorizationToken: decode the token: %w", err)
	}
	user, password, ok := strings.Cut(string(raw), ":")
	if !ok {
		return nil, errors.New("ecr GetAuthorizationToken: the token is not user:password")
	}
	return &authn.Basic{Username: user, Password: password}, nil
}
