package secrets_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/cirrus-matrix/cirrus/shared/config"
	"github.com/cirrus-matrix/cirrus/shared/secrets"
)

const (
	seedARN   = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:CirrusSigningKeySeed-AbCdEf"
	sharedARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:CirrusRegistrationSecret-GhIjKl"
	// turnARN is in another region: the operator makes it, wherever coturn is.
	turnARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:coturn-static-auth-MnOpQr"
)

// fake is Secrets Manager with a map of ARN to value.
type fake struct {
	values map[string]string
	asked  []string
}

func (f *fake) GetSecretValue(_ context.Context, in *secretsmanager.GetSecretValueInput, _ ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error) {
	f.asked = append(f.asked, *in.SecretId)
	v, ok := f.values[*in.SecretId]
	if !ok {
		return nil, errors.New("ResourceNotFoundException: Secrets Manager can't find the specified secret")
	}
	if v == "<binary>" {
		return &secretsmanager.GetSecretValueOutput{SecretBinary: []byte{1}}, nil
	}
	return &secretsmanager.GetSecretValueOutput{SecretString: &v}, nil
}

func env(m map[string]string) config.LookupFunc {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func factory(f *fake, regions *[]string) func(context.Context, string) (secrets.Getter, error) {
	return func(_ context.Context, region string) (secrets.Getter, error) {
		*regions = append(*regions, region)
		return f, nil
	}
}

func TestFill_BothSecrets(t *testing.T) {
	f := &fake{values: map[string]string{seedARN: "seed value\n", sharedARN: "shared value"}}
	var regions []string
	cfg := &config.Config{RegistrationSharedSecret: "from the environment"}
	err := secrets.Fill(context.Background(), cfg, env(map[string]string{
		secrets.SigningKeySeedARNEnv:           seedARN,
		secrets.RegistrationSharedSecretARNEnv: sharedARN,
	}), factory(f, &regions))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SigningKeySeed != "seed value" || cfg.RegistrationSharedSecret != "shared value" {
		t.Fatalf("filled %q, %q", cfg.SigningKeySeed, cfg.RegistrationSharedSecret)
	}
	if len(regions) != 1 || regions[0] != "eu-west-1" {
		t.Fatalf("clients made for regions %v, want one for eu-west-1", regions)
	}
	if len(f.asked) != 2 {
		t.Fatalf("asked for %v", f.asked)
	}
}

func TestFill_TurnSharedSecret(t *testing.T) {
	f := &fake{values: map[string]string{seedARN: "seed value", turnARN: "coturn secret\n"}}
	var regions []string
	cfg := &config.Config{}
	cfg.TurnSharedSecret = "from the environment"
	err := secrets.Fill(context.Background(), cfg, env(map[string]string{
		secrets.SigningKeySeedARNEnv:   seedARN,
		secrets.TurnSharedSecretARNEnv: turnARN,
	}), factory(f, &regions))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TurnSharedSecret != "coturn secret" || cfg.SigningKeySeed != "seed value" {
		t.Fatalf("filled turn_shared_secret %q, signing_key_seed %q", cfg.TurnSharedSecret, cfg.SigningKeySeed)
	}
	if strings.Join(regions, ",") != "eu-west-1,us-east-1" {
		t.Fatalf("clients made for regions %v, want one for eu-west-1 and one for us-east-1", regions)
	}

	err = secrets.Fill(context.Background(), &config.Config{},
		env(map[string]string{secrets.TurnSharedSecretARNEnv: turnARN}), factory(&fake{}, &regions))
	if err == nil || !strings.Contains(err.Error(), secrets.TurnSharedSecretARNEnv) {
		t.Fatalf("missing TURN secret: err = %v, want one naming %s", err, secrets.TurnSharedSecretARNEnv)
	}
}

func TestFill_NothingToDo(t *testing.T) {
	cfg := &config.Config{SigningKeySeed: "kept"}
	err := secrets.Fill(context.Background(), cfg, env(map[string]string{secrets.SigningKeySeedARNEnv: " "}),
		func(context.Context, string) (secrets.Getter, error) {
			t.Fatal("a client was made with no secret to read")
			return nil, nil
		})
	if err != nil || cfg.SigningKeySeed != "kept" {
		t.Fatalf("err %v, seed %q", err, cfg.SigningKeySeed)
	}
}

func TestFill_Errors(t *testing.T) {
	for name, tc := range map[string]struct {
		values map[string]string
		want   string
	}{
		"missing": {map[string]string{}, "ResourceNotFoundException"},
		"empty":   {map[string]string{seedARN: "  \n"}, "is empty"},
		"binary":  {map[string]string{seedARN: "<binary>"}, "no string value"},
	} {
		t.Run(name, func(t *testing.T) {
			var regions []string
			err := secrets.Fill(context.Background(), &config.Config{},
				env(map[string]string{secrets.SigningKeySeedARNEnv: seedARN}), factory(&fake{values: tc.values}, &regions))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), secrets.SigningKeySeedARNEnv) {
				t.Fatalf("err = %v, want one naming %q and the variable", err, tc.want)
			}
		})
	}
	err := secrets.Fill(context.Background(), &config.Config{},
		env(map[string]string{secrets.RegistrationSharedSecretARNEnv: sharedARN}),
		func(context.Context, string) (secrets.Getter, error) { return nil, errors.New("no credentials") })
	if err == nil || !strings.Contains(err.Error(), "no credentials") {
		t.Fatalf("client error: %v", err)
	}
}

func TestSharedSecret(t *testing.T) {
	f := &fake{values: map[string]string{sharedARN: "s3cret"}}
	var regions []string
	ctx := context.Background()
	if v, err := secrets.SharedSecret(ctx, sharedARN, env(nil), factory(f, &regions)); err != nil || v != "s3cret" {
		t.Fatalf("by flag: %q, %v", v, err)
	}
	if v, err := secrets.SharedSecret(ctx, "", env(map[string]string{secrets.RegistrationSharedSecretARNEnv: sharedARN}), factory(f, &regions)); err != nil || v != "s3cret" {
		t.Fatalf("by environment: %q, %v", v, err)
	}
	if _, err := secrets.SharedSecret(ctx, "", env(nil), factory(f, &regions)); !errors.Is(err, secrets.ErrNoSecret) {
		t.Fatalf("no ARN: %v", err)
	}
}

func TestRegion(t *testing.T) {
	for in, want := range map[string]string{
		seedARN:         "eu-west-1",
		"CirrusSecret":  "",
		"arn:aws:s3:::": "",
		"arn:aws-us-gov:secretsmanager:us-gov-west-1:1:secret:x": "us-gov-west-1",
	} {
		if got := secrets.Region(in); got != want {
			t.Errorf("Region(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestNewClient builds a real client without calling AWS: building needs no
// credentials, only a region.
func TestNewClient(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "x")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "y")
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	g, err := secrets.NewClient(context.Background(), "eu-west-1")
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := g.(*secretsmanager.Client); !ok || c.Options().Region != "eu-west-1" {
		t.Fatalf("client %T with region %v", g, g)
	}
}
