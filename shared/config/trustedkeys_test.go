package config_test

import (
	"strings"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/config"
)

func TestLoad_TrustedKeyServers(t *testing.T) {
	c, err := config.Load("", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.TrustedKeyServers) != 0 {
		t.Fatalf("default trusted_key_servers = %+v, want none", c.TrustedKeyServers)
	}

	const key = "Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw"
	path := writeFile(t, `
trusted_key_servers:
  - server_name: "matrix.org"
    verify_keys:
      "ed25519:auto": "`+key+`"
`)
	c, err = config.Load(path, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.TrustedKeyServers) != 1 || c.TrustedKeyServers[0].ServerName != "matrix.org" || c.TrustedKeyServers[0].VerifyKeys["ed25519:auto"] != key {
		t.Fatalf("from the file: %+v", c.TrustedKeyServers)
	}

	c, err = config.Load("", env(map[string]string{"CIRRUS_TRUSTED_KEY_SERVERS": `[{"server_name": "notary.example:8448", "verify_keys": {"ed25519:a": "` + key + `="}}]`}))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.TrustedKeyServers) != 1 || c.TrustedKeyServers[0].ServerName != "notary.example:8448" {
		t.Fatalf("from the environment: %+v", c.TrustedKeyServers)
	}
	if _, err := config.DecodeVerifyKey(c.TrustedKeyServers[0].VerifyKeys["ed25519:a"]); err != nil {
		t.Fatalf("padded key: %v", err)
	}

	for _, tc := range []struct{ value, want string }{
		{`[{"server_name": "matrix.org"}]`, "needs verify_keys"},
		{`[{"server_name": "not a name", "verify_keys": {"ed25519:a": "` + key + `"}}]`, "not a valid Matrix server name"},
		{`[{"server_name": "matrix.org", "verify_keys": {"ed25519:a": "c2hvcnQ"}}]`, "not a 32-byte ed25519 key"},
		{`[{"server_name": "matrix.org", "verify_keys": {"rsa:a": "` + key + `"}}]`, "not an ed25519:... key ID"},
		{`{"server_name": "matrix.org"}`, "not a JSON list"},
	} {
		_, err := config.Load("", env(map[string]string{"CIRRUS_TRUSTED_KEY_SERVERS": tc.value}))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CIRRUS_TRUSTED_KEY_SERVERS=%s: got %v, want an error with %q", tc.value, err, tc.want)
		}
	}
}
