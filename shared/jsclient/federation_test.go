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

// TestFederatedEncryptionWithDendrite: the same exchange with bob on
// Dendrite 0.13.8, another implementation of both sides of federation:
// Dendrite asks Cirrus for alice's keys and one-time keys, Cirrus asks
// Dendrite for bob's, to-device messages and device list updates go both
// ways, in a version 10 room (Dendrite predates 12).
func TestFederatedEncryptionWithDendrite(t *testing.T) {
	const timeout = 90 * time.Second
	a, _ := servertest.StartNamed(t)
	a.RunQueue(t)
	d := servertest.StartDendrite(t, nil)
	alice := a.Register(t, "alice")
	d.Register(t, "bob", password)
	bob := "@bob:" + d.Name

	out, err := testenv.RunJS(t, timeout+30*time.Second, "federated_e2ee.mjs",
		"CIRRUS_URL="+a.URL,
		"CIRRUS_URL_B="+d.ClientURL,
		"CIRRUS_SERVER_A="+a.Name(),
		"CIRRUS_USERS="+alice.ID+","+bob,
		"CIRRUS_PASSWORD="+password,
		"CIRRUS_ROOM_VERSION=10",
		"CIRRUS_TIMEOUT_MS="+strconv.FormatInt(timeout.Milliseconds(), 10),
	)
	if err != nil || !strings.Contains(out, "\nPASS in ") {
		t.Fatalf("matrix-js-sdk federated_e2ee.mjs with Dendrite: %v; its output:\n%s\nDendrite's log:\n%s", err, out, d.LogTail())
	}
	t.Logf("matrix-js-sdk federated_e2ee.mjs with Dendrite:\n%s", out)
	checkServed(t, a)
	// Dendrite fetched alice's keys from Cirrus (alice, who sent first,
	// claimed bob's one-time key from Dendrite).
	n := 0
	for _, r := range a.Requests(t) {
		if r.Path == "/_matrix/federation/v1/user/keys/query" && r.Status == 200 {
			n++
		}
	}
	if n == 0 {
		t.Error("Dendrite never asked Cirrus for alice's keys")
	}
}
