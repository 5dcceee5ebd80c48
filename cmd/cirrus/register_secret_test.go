package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/cirrus-matrix/cirrus/shared/secrets"
)

// fakeSecrets is Secrets Manager holding one secret.
type fakeSecrets struct{ arn, value, region string }

func (f *fakeSecrets) GetSecretValue(_ context.Context, in *secretsmanager.GetSecretValueInput, _ ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error) {
	if *in.SecretId != f.arn {
		return nil, errors.New("ResourceNotFoundException")
	}
	return &secretsmanager.GetSecretValueOutput{SecretString: &f.value}, nil
}

// TestRegister_SecretARN creates the first admin the way a deployed stack's
// output says: the shared secret read from Secrets Manager (a fake here),
// with no config or data folder on the operator's machine.
func TestRegister_SecretARN(t *testing.T) {
	const arn = "arn:aws:secretsmanager:eu-central-1:123456789012:secret:CirrusRegistration-AbCdEf"
	t.Setenv("CIRRUS_SERVER_NAME", "localhost:8008")
	t.Setenv("CIRRUS_REGISTRATION_SHARED_SECRET", "generated-by-secrets-manager")
	at, _ := startServe(t, t.TempDir())
	// The operator's machine knows neither the secret nor a data folder.
	os.Unsetenv("CIRRUS_REGISTRATION_SHARED_SECRET")
	t.Setenv("CIRRUS_DATA_DIR", t.TempDir())

	fake := &fakeSecrets{arn: arn, value: "generated-by-secrets-manager\n"}
	old := newSecretGetter
	newSecretGetter = func(_ context.Context, region string) (secrets.Getter, error) {
		fake.region = region
		return fake, nil
	}
	t.Cleanup(func() { newSecretGetter = old })

	ctx := context.Background()
	var out bytes.Buffer
	if err := register(ctx, []string{"-u", "nobody", at.ClientURL}, registerIO{in: strings.NewReader("pw\n"), out: &out}); err == nil {
		t.Fatal("register without a secret succeeded")
	}
	err := register(ctx, []string{"-secret-arn", arn, "-admin", "-u", "admin", at.ClientURL}, registerIO{in: strings.NewReader("s3cret pass\n"), out: &out})
	if err != nil || !strings.Contains(out.String(), "Created @admin:localhost:8008 (admin)") {
		t.Fatalf("register -secret-arn: %v\n%s", err, out.String())
	}
	if fake.region != "eu-central-1" {
		t.Fatalf("client made for region %q, want the ARN's", fake.region)
	}
	// The environment variable names the secret as the flag does.
	t.Setenv(secrets.RegistrationSharedSecretARNEnv, arn)
	if err := register(ctx, []string{"-u", "bob", at.ClientURL}, registerIO{in: strings.NewReader("pw\n"), out: &out}); err != nil {
		t.Fatalf("register with %s: %v", secrets.RegistrationSharedSecretARNEnv, err)
	}
	// Another secret's value is refused by the server.
	fake.value = "not the server's"
	if err := register(ctx, []string{"-u", "carol", at.ClientURL}, registerIO{in: strings.NewReader("pw\n"), out: &out}); err == nil || !strings.Contains(err.Error(), "M_FORBIDDEN") {
		t.Fatalf("register with a wrong secret: %v", err)
	}
	if err := register(ctx, []string{"-secret-arn", arn + "x", "-u", "dave", at.ClientURL}, registerIO{in: strings.NewReader("pw\n"), out: &out}); err == nil || !strings.Contains(err.Error(), "ResourceNotFoundException") {
		t.Fatalf("register with a missing secret: %v", err)
	}
}
