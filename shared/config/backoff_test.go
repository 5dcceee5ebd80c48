package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/config"
)

// TestLoad_FederationBackoff reads Synapse's destination backoff keys from
// the file (a duration with a unit, or milliseconds) and the environment,
// unset by default, and names the key of a bad value.
func TestLoad_FederationBackoff(t *testing.T) {
	c, err := config.Load("", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if least, most := c.Federation.RetryIntervals(); least != 0 || most != 0 || c.Federation.DestinationRetryMultiplier != 0 {
		t.Errorf("defaults: %v, %v, %d; want all unset (the sender's defaults)", least, most, c.Federation.DestinationRetryMultiplier)
	}

	path := writeFile(t, "federation:\n  destination_min_retry_interval: 30s\n  destination_retry_multiplier: 5\n  destination_max_retry_interval: 43200000\n")
	c, err = config.Load(path, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if least, most := c.Federation.RetryIntervals(); least != 30*time.Second || most != 12*time.Hour || c.Federation.DestinationRetryMultiplier != 5 {
		t.Errorf("from the file: %v, %v, %d; want 30s, 12h, 5", least, most, c.Federation.DestinationRetryMultiplier)
	}
	c, err = config.LoadLambda(env(map[string]string{"CIRRUS_SERVER_NAME": "example.org",
		"CIRRUS_FEDERATION_DESTINATION_MIN_RETRY_INTERVAL": "1m", "CIRRUS_FEDERATION_DESTINATION_RETRY_MULTIPLIER": "3"}))
	if err != nil {
		t.Fatal(err)
	}
	if least, _ := c.Federation.RetryIntervals(); least != time.Minute || c.Federation.DestinationRetryMultiplier != 3 {
		t.Errorf("from the environment: %v, %d; want 1m, 3", least, c.Federation.DestinationRetryMultiplier)
	}

	for _, tc := range []struct{ name, file, key string }{
		{"bad interval", "federation:\n  destination_min_retry_interval: ten minutes\n", "destination_min_retry_interval"},
		{"min over max", "federation:\n  destination_min_retry_interval: 2h\n  destination_max_retry_interval: 1h\n", "destination_min_retry_interval"},
		{"negative multiplier", "federation:\n  destination_retry_multiplier: -2\n", "destination_retry_multiplier"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Load(writeFile(t, tc.file), env(nil))
			if err == nil || !strings.Contains(err.Error(), tc.key) {
				t.Errorf("%q: got %v, want an error naming %s", tc.file, err, tc.key)
			}
		})
	}
}
