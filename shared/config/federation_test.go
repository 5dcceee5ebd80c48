package config_test

import (
	"strings"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/config"
)

// TestLoad_OutboundFederation reads the outbound federation keys from the
// file and from the environment (lists separated by commas, the hosts map
// as name=host:port pairs), with certificate checks on by default.
func TestLoad_OutboundFederation(t *testing.T) {
	c, err := config.Load("", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !c.FederationVerifyCertificates || c.IPRangeBlacklist != nil || c.FederationDomainWhitelist != nil || c.FederationHosts != nil {
		t.Fatalf("defaults: verify %v, blacklist %v, domains %v, hosts %v; want verify on and the rest unset",
			c.FederationVerifyCertificates, c.IPRangeBlacklist, c.FederationDomainWhitelist, c.FederationHosts)
	}
	lambda, err := config.LoadLambda(env(map[string]string{"CIRRUS_SERVER_NAME": "example.org"}))
	if err != nil || !lambda.FederationVerifyCertificates {
		t.Fatalf("LoadLambda: verify %v, %v; want on", lambda != nil && lambda.FederationVerifyCertificates, err)
	}

	path := writeFile(t, `
federation_verify_certificates: false
federation_custom_ca_list: [/etc/ca1.pem, /etc/ca2.pem]
ip_range_blacklist: []
ip_range_whitelist: [127.0.0.0/8]
federation_domain_whitelist: []
federation_hosts:
  hs1.test: 127.0.0.1:8449
`)
	c, err = config.Load(path, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	// An empty list in the file is a choice (nothing refused, no one
	// allowed), not an unset key.
	if c.FederationVerifyCertificates || len(c.FederationCustomCAList) != 2 || c.IPRangeBlacklist == nil || len(c.IPRangeBlacklist) != 0 ||
		c.FederationDomainWhitelist == nil || len(c.FederationDomainWhitelist) != 0 || c.FederationHosts["hs1.test"] != "127.0.0.1:8449" {
		t.Fatalf("from the file: %+v", c)
	}

	c, err = config.Load(path, env(map[string]string{
		"CIRRUS_FEDERATION_VERIFY_CERTIFICATES": "true",
		"CIRRUS_IP_RANGE_WHITELIST":             " 127.0.0.0/8 , ::1/128,192.168.1.1",
		"CIRRUS_FEDERATION_DOMAIN_WHITELIST":    "hs1.test,hs2.test:8448",
		"CIRRUS_FEDERATION_HOSTS":               "hs1.test=127.0.0.1:9001, hs2.test:8448=[::1]:9002",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if !c.FederationVerifyCertificates || strings.Join(c.IPRangeWhitelist, " ") != "127.0.0.0/8 ::1/128 192.168.1.1" ||
		strings.Join(c.FederationDomainWhitelist, " ") != "hs1.test hs2.test:8448" ||
		len(c.FederationHosts) != 2 || c.FederationHosts["hs1.test"] != "127.0.0.1:9001" || c.FederationHosts["hs2.test:8448"] != "[::1]:9002" {
		t.Fatalf("from the environment: whitelist %q, domains %q, hosts %v", c.IPRangeWhitelist, c.FederationDomainWhitelist, c.FederationHosts)
	}
}

func TestLoad_OutboundFederationInvalid(t *testing.T) {
	for _, tc := range []struct{ key, value, want string }{
		{"CIRRUS_IP_RANGE_BLACKLIST", "10.0.0.0/8,10.0.0.0/33", "ip_range_blacklist"},
		{"CIRRUS_IP_RANGE_WHITELIST", "localhost", "ip_range_whitelist"},
		{"CIRRUS_FEDERATION_DOMAIN_WHITELIST", "bad name", "federation_domain_whitelist"},
		{"CIRRUS_FEDERATION_HOSTS", "hs1.test=127.0.0.1", "federation_hosts"},
		{"CIRRUS_FEDERATION_HOSTS", "hs1.test", "key=value"},
		{"CIRRUS_FEDERATION_HOSTS", "bad name=127.0.0.1:1", "federation_hosts"},
		{"CIRRUS_FEDERATION_VERIFY_CERTIFICATES", "maybe", "boolean"},
	} {
		_, err := config.Load("", env(map[string]string{tc.key: tc.value}))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s=%q: err = %v, want one naming %s", tc.key, tc.value, err, tc.want)
		}
	}
}
