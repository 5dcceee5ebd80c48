package config_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/config"
)

func env(m map[string]string) config.LookupFunc {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cirrus.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoad_Defaults(t *testing.T) {
	c, err := config.Load("", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.ServerName != "localhost:8008" || c.EnableRegistration || c.ClientListen != "127.0.0.1:8008" ||
		c.FederationListen != "127.0.0.1:8448" || c.PublicBaseURL != "http://127.0.0.1:8008/" || c.SigningKeyPath != "data/signing.key" {
		t.Fatalf("defaults = %+v", c)
	}
	if got := c.WellKnownServer(); got != "localhost:8448" {
		t.Fatalf("WellKnownServer() = %q, want localhost:8448", got)
	}
	if c.WebClientLocation != config.DefaultWebClient {
		t.Fatalf("web_client_location = %q, want %q", c.WebClientLocation, config.DefaultWebClient)
	}
	// An empty value is the operator's choice of no link, not a missing one.
	c, err = config.Load("", env(map[string]string{"CIRRUS_WEB_CLIENT_LOCATION": ""}))
	if err != nil {
		t.Fatal(err)
	}
	if c.WebClientLocation != "" {
		t.Fatalf("web_client_location set empty: %q, want no link", c.WebClientLocation)
	}
}

// TestLoad_FederationListenFromServerName: a server name with an explicit
// port is reached over TLS at that port, so with no federation_listen the
// federation listener takes it; a set one is kept.
func TestLoad_FederationListenFromServerName(t *testing.T) {
	for _, tc := range []struct{ name, listen, want, wellKnown string }{
		{"127.0.0.1:9448", "", "127.0.0.1:9448", "127.0.0.1:9448"},
		{"[::1]:9448", "", "[::1]:9448", "[::1]:9448"},
		{"hs1.test:9448", "", "127.0.0.1:9448", "hs1.test:9448"},
		{"hs1.test", "", "127.0.0.1:8448", "hs1.test:8448"},
		// The client listener's port: federation stays on 8448.
		{"localhost:8008", "", "127.0.0.1:8448", "localhost:8448"},
		{"127.0.0.1:9448", "127.0.0.1:7000", "127.0.0.1:7000", "127.0.0.1:7000"},
	} {
		vars := map[string]string{"CIRRUS_SERVER_NAME": tc.name}
		if tc.listen != "" {
			vars["CIRRUS_FEDERATION_LISTEN"] = tc.listen
		}
		c, err := config.Load("", env(vars))
		if err != nil {
			t.Fatal(err)
		}
		if c.FederationListen != tc.want || c.WellKnownServer() != tc.wellKnown {
			t.Errorf("server_name %s, federation_listen %q: listen %s, m.server %s; want %s, %s",
				tc.name, tc.listen, c.FederationListen, c.WellKnownServer(), tc.want, tc.wellKnown)
		}
	}
}

func TestLoad_FileThenEnvironment(t *testing.T) {
	path := writeFile(t, `
server_name: example.org
public_baseurl: https://matrix.example.org
enable_registration: true
registration_shared_secret: from-file
email:
  notif_from: "Cirrus <noreply@example.org>"
`)
	c, err := config.Load(path, env(map[string]string{
		"CIRRUS_REGISTRATION_SHARED_SECRET":    "from-env",
		"CIRRUS_ENABLE_REGISTRATION":           "false",
		"CIRRUS_EMAIL_APP_NAME":                "Example Chat",
		"DYNAMODB_ENDPOINT":                    "http://127.0.0.1:8000",
		"CIRRUS_RATE_LIMITS_LOGIN_PER_ADDRESS": "0",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.ServerName != "example.org" || c.RegistrationSharedSecret != "from-env" || c.EnableRegistration ||
		c.Email == nil || c.Email.NotifFrom == "" || c.Email.AppName != "Example Chat" || c.DynamoDBEndpoint != "http://127.0.0.1:8000" {
		t.Fatalf("loaded %+v (email %+v)", c, c.Email)
	}
	if c.RateLimits.LoginPerAddress != 0 || c.RateLimits.LoginPerAccount != 10 {
		t.Fatalf("rate limits %+v: want login_per_address off from the environment, the rest default", c.RateLimits)
	}
	if c.PublicBaseURL != "https://matrix.example.org/" {
		t.Fatalf("public_baseurl = %q, want a trailing slash added", c.PublicBaseURL)
	}
	if got := c.WellKnownServer(); got != "matrix.example.org:443" {
		t.Fatalf("WellKnownServer() = %q, want matrix.example.org:443", got)
	}
}

func TestLoad_ErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		env        map[string]string
		want       string
	}{
		{"bad server name", "server_name: 'exa mple.org'\n", nil, "server_name"},
		{"server name from env", "", map[string]string{"CIRRUS_SERVER_NAME": "bad_name!"}, "server_name"},
		{"email without public_baseurl", "", map[string]string{"CIRRUS_EMAIL_NOTIF_FROM": "a@b.org"}, "public_baseurl"},
		{"bad notif_from", "email:\n  notif_from: nobody\n", nil, "email.notif_from"},
		{"misspelt key", "server_nme: example.org\n", nil, "server_nme"},
		{"bad boolean", "", map[string]string{"CIRRUS_ENABLE_REGISTRATION": "maybe"}, "CIRRUS_ENABLE_REGISTRATION"},
		{"bad public_baseurl", "public_baseurl: matrix.example.org\n", nil, "public_baseurl"},
		{"web client without scheme", "web_client_location: app.element.io\n", nil, "web_client_location"},
		{"web client as a script", "", map[string]string{"CIRRUS_WEB_CLIENT_LOCATION": "javascript:alert(1)"}, "web_client_location"},
		{"half a certificate", "tls_certificate_path: /x.crt\n", nil, "tls_private_key_path"},
		{"bad listen", "client_listen: 8008\n", nil, "client_listen"},
		{"bad log level", "log_level: loud\n", nil, "log_level"},
		{"negative rate limit", "rate_limits:\n  login_per_address: -1\n", nil, "rate_limits.login_per_address"},
		{"rate limit from env", "", map[string]string{"CIRRUS_RATE_LIMITS_LOGIN_PER_ACCOUNT": "ten"}, "CIRRUS_RATE_LIMITS_LOGIN_PER_ACCOUNT"},
		{"bad TURN lifetime", "turn_user_lifetime: 1 hour\n", nil, "turn_user_lifetime"},
		{"TURN lifetime of nothing", "", map[string]string{"CIRRUS_TURN_USER_LIFETIME": "0"}, "turn_user_lifetime"},
		{"TURN URI without scheme", "turn_uris: [turn.example.org]\n", nil, "turn_uris"},
		{"TURN username alone", "turn_username: alice\n", nil, "turn_password"},
		{"response limit too low", "lambda_response_limit: 1000\n", nil, "lambda_response_limit"},
		{"response limit over Lambda's", "", map[string]string{"CIRRUS_LAMBDA_RESPONSE_LIMIT": "7000000"}, "lambda_response_limit"},
		{"S3 endpoint without a bucket", "s3_endpoint: http://127.0.0.1:9000\n", nil, "large_response_bucket"},
		{"bad S3 endpoint", "s3_endpoint: minio\nlarge_response_bucket: b\n", nil, "s3_endpoint"},
		{"unknown room version", "default_room_version: '13'\n", nil, "default_room_version"},
		{"experimental room version", "", map[string]string{"CIRRUS_DEFAULT_ROOM_VERSION": "org.matrix.msc2176"}, "default_room_version"},
		{"empty room version", "default_room_version: ''\n", nil, "default_room_version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := ""
			if tc.file != "" {
				path = writeFile(t, tc.file)
			}
			_, err := config.Load(path, env(tc.env))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load error = %v, want one naming %q", err, tc.want)
			}
		})
	}
}

// TestLoad_TURN: Synapse's TURN keys, from a file as Synapse writes them
// and from the environment, where the URIs are one comma-separated value.
func TestLoad_TURN(t *testing.T) {
	file := writeFile(t, "turn_uris: [\"turn:turn.example.org?transport=udp\", \"turns:turn.example.org:5349\"]\n"+
		"turn_shared_secret: s3cret\nturn_user_lifetime: 86400000\n")
	c, err := config.Load(file, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.TurnURIs) != 2 || c.TurnURIs[1] != "turns:turn.example.org:5349" || c.TurnSharedSecret != "s3cret" || c.TurnLifetime() != 24*time.Hour {
		t.Fatalf("TURN from the file: %+v, lifetime %v", c.TURN, c.TurnLifetime())
	}
	c, err = config.Load("", env(map[string]string{"CIRRUS_TURN_URIS": "turn:a.example.org, stun:b.example.org:3478",
		"CIRRUS_TURN_USERNAME": "u", "CIRRUS_TURN_PASSWORD": "p", "CIRRUS_TURN_USER_LIFETIME": "2w"}))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.TurnURIs, []string{"turn:a.example.org", "stun:b.example.org:3478"}) || c.TurnUsername != "u" || c.TurnLifetime() != 14*24*time.Hour {
		t.Fatalf("TURN from the environment: %+v, lifetime %v", c.TURN, c.TurnLifetime())
	}
	if c, _ := config.Load("", env(nil)); len(c.TurnURIs) != 0 || c.TurnLifetime() != time.Hour {
		t.Fatalf("TURN by default: %+v, lifetime %v; want none, 1h", c.TURN, c.TurnLifetime())
	}
}

func TestLoadLambda(t *testing.T) {
	if _, err := config.LoadLambda(env(nil)); err == nil || !strings.Contains(err.Error(), "CIRRUS_SERVER_NAME") {
		t.Fatalf("LoadLambda with no server name: %v", err)
	}
	c, err := config.LoadLambda(env(map[string]string{"CIRRUS_SERVER_NAME": "example.org"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.PublicBaseURL != "https://example.org/" || c.ClientListen != "" || c.SigningKeyPath != "" {
		t.Fatalf("lambda config = %+v", c)
	}
	if c.LambdaResponseLimit != config.LambdaPayloadLimit || c.LargeResponseBucket != "" {
		t.Errorf("lambda response limit %d, bucket %q; want %d and none until the stack names one", c.LambdaResponseLimit, c.LargeResponseBucket, config.LambdaPayloadLimit)
	}
	if c, _ := config.Load("", env(nil)); c.LambdaResponseLimit != 0 {
		t.Errorf("local lambda_response_limit %d, want 0 (off)", c.LambdaResponseLimit)
	}
	_, err = config.LoadLambda(env(map[string]string{"CIRRUS_SERVER_NAME": "example.org",
		"CIRRUS_EMAIL_NOTIF_FROM": "Cirrus <noreply@example.org>"}))
	if err == nil || !strings.Contains(err.Error(), "public_baseurl") {
		t.Fatalf("email block with a guessed public_baseurl: %v", err)
	}
}

// TestLoad_QueueURLs: the queues are the stack's, given in the environment
// (or the file); unset, there are none and long jobs share the one queue.
func TestLoad_QueueURLs(t *testing.T) {
	c, err := config.LoadLambda(env(map[string]string{"CIRRUS_SERVER_NAME": "example.org"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.QueueURL != "" || c.LongQueueURL != "" {
		t.Fatalf("queue_url %q, long_queue_url %q; want both empty by default", c.QueueURL, c.LongQueueURL)
	}
	const fed, long = "https://sqs.eu-west-1.amazonaws.com/1/fed", "https://sqs.eu-west-1.amazonaws.com/1/load"
	c, err = config.LoadLambda(env(map[string]string{"CIRRUS_SERVER_NAME": "example.org",
		"CIRRUS_QUEUE_URL": fed, "CIRRUS_LONG_QUEUE_URL": long}))
	if err != nil {
		t.Fatal(err)
	}
	if c.QueueURL != fed || c.LongQueueURL != long {
		t.Fatalf("queue_url %q, long_queue_url %q; want %q and %q", c.QueueURL, c.LongQueueURL, fed, long)
	}
	c, err = config.Load(writeFile(t, "long_queue_url: "+long+"\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.QueueURL != "" || c.LongQueueURL != long {
		t.Fatalf("from the file: queue_url %q, long_queue_url %q; want none and %q", c.QueueURL, c.LongQueueURL, long)
	}
}

// TestLoad_DefaultRoomVersion: Synapse's default_room_version, 12 unless
// set, from the file or the environment, locally and in Lambda.
func TestLoad_DefaultRoomVersion(t *testing.T) {
	c, err := config.Load("", env(nil))
	if err != nil || c.DefaultRoomVersion != "12" {
		t.Fatalf("local default_room_version %+v, %v; want 12", c, err)
	}
	c, err = config.LoadLambda(env(map[string]string{"CIRRUS_SERVER_NAME": "example.org"}))
	if err != nil || c.DefaultRoomVersion != "12" {
		t.Fatalf("lambda default_room_version %+v, %v; want 12", c, err)
	}
	c, err = config.Load(writeFile(t, "default_room_version: 10\n"), env(nil))
	if err != nil || c.DefaultRoomVersion != "10" {
		t.Fatalf("default_room_version from the file: %+v, %v; want 10", c, err)
	}
	c, err = config.LoadLambda(env(map[string]string{"CIRRUS_SERVER_NAME": "example.org", "CIRRUS_DEFAULT_ROOM_VERSION": "1"}))
	if err != nil || c.DefaultRoomVersion != "1" {
		t.Fatalf("default_room_version from the environment: %+v, %v; want 1", c, err)
	}
}
