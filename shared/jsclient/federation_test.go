package jsclient_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
	"github.com/cirrus-matrix/cirrus/shared/testenv"
)

// TestFederatedEncryptionWithRustCrypto: alice on Cirrus A and bob on
// Cirrus B, both with matrix-js-sdk's Rust crypto, share an encrypted
// room; a message each way decrypts on the other server, and bob verifies
// alice's device by SAS, alice accepting and both confirming: each ends
// with the other's device verified (scripts/jsclient/federated_e2ee.mjs).
// Every /keys/query, /keys/claim and to-device message between them goes
// from one server to the other: the test also checks that each server
// answered the other's key queries, and B alice's claim.
func TestFederatedEncryptionWithRustCrypto(t *testing.T) {
	const timeout = 90 * time.Second
	a, _ := servertest.StartNamed(t)
	a.RunQueue(t)
	b, _ := servertest.StartNamed(t)
	b.RunQueue(t)
	alice := a.Register(t, "alice")
	bob := b.Register(t, "bob")

	began := time.Now()
	out, err := testenv.RunJS(t, timeout+30*time.Second, "federated_e2ee.mjs",
		"CIRRUS_URL="+a.URL,
		"CIRRUS_URL_B="+b.URL,
		"CIRRUS_SERVER_A="+a.Name(),
		"CIRRUS_USERS="+alice.ID+","+bob.ID,
		"CIRRUS_PASSWORD="+password,
		"CIRRUS_TIMEOUT_MS="+strconv.FormatInt(timeout.Milliseconds(), 10),
	)
	if err != nil {
		t.Fatalf("matrix-js-sdk federated_e2ee.mjs: %v; its output:\n%s", err, out)
	}
	if !strings.Contains(out, "\nPASS in ") {
		t.Fatalf("matrix-js-sdk federated_e2ee.mjs exited 0 without PASS; its output:\n%s", out)
	}
	t.Logf("matrix-js-sdk federated_e2ee.mjs in %v:\n%s", time.Since(began).Round(time.Millisecond), out)
	checkServed(t, a)
	checkServed(t, b)
	// Each client fetched the other's keys through its own server, which
	// asked the other; alice, who sent first, claimed a one-time key of
	// bob's device (through B), and bob answered over the Olm session her
	// message started, so A serves no claim.
	served := func(st *servertest.Stack, path string) int {
		n := 0
		for _, r := range st.Requests(t) {
			if r.Path == path && r.Status == 200 {
				n++
			}
		}
		return n
	}
	const query, claim = "/_matrix/federation/v1/user/keys/query", "/_matrix/federation/v1/user/keys/claim"
	for _, st := range []*servertest.Stack{a, b} {
		if served(st, query) == 0 {
			t.Errorf("%s never served %s", st.Name(), query)
		}
	}
	if served(b, claim) == 0 {
		t.Errorf("B never served %s", claim)
	}
}
