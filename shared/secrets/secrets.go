// Package secrets reads the deployment's secrets from AWS Secrets Manager:
// the registration shared secret and the signing key seed that the CDK stack
// generates, and the TURN shared secret that the operator stores, so that
// none is ever in the CloudFormation template nor in a function's
// environment. A function's environment names the secrets by ARN:
//
//	CIRRUS_SIGNING_KEY_SEED_SECRET_ARN           -> signing_key_seed
//	CIRRUS_REGISTRATION_SHARED_SECRET_SECRET_ARN -> registration_shared_secret
//	CIRRUS_TURN_SHARED_SECRET_SECRET_ARN         -> turn_shared_secret
//
// and Fill reads them once, at the function's start.
package secrets

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/cirrus-matrix/cirrus/shared/config"
)

// The environment variables that name the secrets by ARN.
const (
	SigningKeySeedARNEnv           = "CIRRUS_SIGNING_KEY_SEED_SECRET_ARN"
	RegistrationSharedSecretARNEnv = "CIRRUS_REGISTRATION_SHARED_SECRET_SECRET_ARN"
	TurnSharedSecretARNEnv         = "CIRRUS_TURN_SHARED_SECRET_SECRET_ARN"
)

// Getter is the one Secrets Manager call used; *secretsmanager.Client is one,
// and tests pass a fake.
type Getter interface {
	GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, opts ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error)
}

// Get returns the current string value of the secret arn, trimmed of
// surrounding white space. An empty or binary-only secret is an error.
func Get(ctx context.Context, g Getter, arn string) (string, error) {
	out, err := g.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(arn)})
	if err != nil {
		return "", fmt.Errorf("secrets: read %s: %w", arn, err)
	}
	if out == nil || out.SecretString == nil {
		return "", fmt.Errorf("secrets: %s has no string value", arn)
	}
	v := strings.TrimSpace(*out.SecretString)
	if v == "" {
		return "", fmt.Errorf("secrets: %s is empty", arn)
	}
	return v, nil
}

// Fill sets the config's secrets from the secrets whose ARNs the environment
// (lookup) names; a secret named there wins over a value already in the
// config. With no ARN in the environment it does nothing and calls newGetter
// not at all, so a function without secrets never builds an AWS client. The
// getters are made by newGetter, one per region the ARNs name: the TURN
// secret is the operator's and may live in another region than the stack's,
// and Secrets Manager answers for its own region only.
func Fill(ctx context.Context, cfg *config.Config, lookup config.LookupFunc, newGetter func(ctx context.Context, region string) (Getter, error)) error {
	targets := []struct {
		env string
		dst *string
	}{
		{SigningKeySeedARNEnv, &cfg.SigningKeySeed},
		{RegistrationSharedSecretARNEnv, &cfg.RegistrationSharedSecret},
		{TurnSharedSecretARNEnv, &cfg.TurnSharedSecret},
	}
	getters := map[string]Getter{}
	for _, t := range targets {
		arn, ok := lookup(t.env)
		arn = strings.TrimSpace(arn)
		if !ok || arn == "" {
			continue
		}
		region := Region(arn)
		g := getters[region]
		if g == nil {
			var err error
			if g, err = newGetter(ctx, region); err != nil {
				return fmt.Errorf("secrets: %s: %w", t.env, err)
			}
			getters[region] = g
		}
		v, err := Get(ctx, g, arn)
		if err != nil {
			return fmt.Errorf("%w (from %s)", err, t.env)
		}
		*t.dst = v
	}
	return nil
}

// FillFromEnv is Fill with a real Secrets Manager client.
func FillFromEnv(ctx context.Context, cfg *config.Config, lookup config.LookupFunc) error {
	return Fill(ctx, cfg, lookup, NewClient)
}

// NewClient makes a Secrets Manager client from the default AWS config
// (environment, profile, or the Lambda role). region, when not empty, wins
// over the configured one, so that an ARN alone is enough for `cirrus
// register` on an operator's machine.
func NewClient(ctx context.Context, region string) (Getter, error) {
	var opts []func(*awsconfig.LoadOptions) error
	if region != "" {
		opts = append(opts, awsconfig.WithRegion(region))
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("aws config: %w", err)
	}
	return secretsmanager.NewFromConfig(awsCfg), nil
}

// Region is the region field of an ARN (arn:aws:secretsmanager:REGION:...),
// or "" when arn is not an ARN, such as a secret's name.
func Region(arn string) string {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) < 6 || parts[0] != "arn" {
		return ""
	}
	return parts[3]
}

// ErrNoSecret is returned by SharedSecret when no ARN is given.
var ErrNoSecret = errors.New("secrets: no secret ARN given")

// SharedSecret reads the registration shared secret from the secret arn, or,
// when arn is empty, from the one CIRRUS_REGISTRATION_SHARED_SECRET_SECRET_ARN
// names; ErrNoSecret when neither is set. `cirrus register -secret-arn` uses it.
func SharedSecret(ctx context.Context, arn string, lookup config.LookupFunc, newGetter func(ctx context.Context, region string) (Getter, error)) (string, error) {
	if arn == "" {
		arn, _ = lookup(RegistrationSharedSecretARNEnv)
		arn = strings.TrimSpace(arn)
	}
	if arn == "" {
		return "", ErrNoSecret
	}
	g, err := newGetter(ctx, Region(arn))
	if err != nil {
		return "", fmt.Errorf("secrets: %w", err)
	}
	return Get(ctx, g, arn)
}
