// Package jsclient_test runs matrix-js-sdk, the library under Element Web,
// against the real local stack: scripts/jsclient/*.mjs in Node 22, pinned by
// scripts/jsclient/package-lock.json and installed by shared/testenv.
package jsclient_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
	"github.com/cirrus-matrix/cirrus/shared/testenv"
)

// password is the one servertest.Register gives every user.
const password = "correct horse battery staple"

// TestTwoClientsTalkThroughSync: alice and bob log in with their passwords,
// sync, meet in a room and exchange a message each way, every step seen
// through the other client's sync loop (scripts/jsclient/scenario.mjs).
func TestTwoClientsTalkThroughSync(t *testing.T) {
	runScenario(t, "scenario.mjs", 30*time.Second)
}

// TestEncryptedRoomWithRustCrypto: Element Web's encryption flows with
// matrix-js-sdk's Rust crypto: cross-signing, secret storage with a
// recovery key, key backup, an encrypted exchange, a new device restoring
// history from the backup, and a logout seen by the other user
// (scripts/jsclient/e2ee.mjs).
func TestEncryptedRoomWithRustCrypto(t *testing.T) {
	runScenario(t, "e2ee.mjs", 60*time.Second)
}

// TestKeyCountsWithRustCrypto: two matrix-js-sdk clients with Rust crypto
// sync for 30 seconds with traffic in an encrypted room; each uploads its
// 50 one-time keys at first, then only single keys to replace the claimed
// one, and the server holds the 50 the SDK keeps there
// (scripts/jsclient/keycounts.mjs). A sync without the counts made the SDK
// upload 50 more each time.
func TestKeyCountsWithRustCrypto(t *testing.T) {
	runScenario(t, "keycounts.mjs", 90*time.Second)
}

// TestLargeResponsesWithRustCrypto: with lambda_response_limit at 16 KB,
// a new device's initial sync and its restore of a key backup of 60
// sessions are larger than the limit, even gzipped; matrix-js-sdk follows
// the redirect to the bucket (the embedded S3 API, on another origin) and
// gets them whole (scripts/jsclient/largebody.mjs).
func TestLargeResponsesWithRustCrypto(t *testing.T) {
	runScenario(t, "largebody.mjs", 90*time.Second, "CIRRUS_LAMBDA_RESPONSE_LIMIT=16384")
}

// runScenario runs a scenario for alice and bob on a fresh server and fails
// the test when it does not print PASS, or when the server answered any of
// its requests with a 5xx. env configures the server and is passed to the
// scenario too.
func runScenario(t *testing.T, script string, timeout time.Duration, env ...string) {
	st := servertest.Start(t, env...)
	runScenarioOn(t, st, st.URL, script, timeout, env...)
}

// runScenarioOn is runScenario on st, whose clients talk to url.
func runScenarioOn(t *testing.T, st *servertest.Stack, url, script string, timeout time.Duration, env ...string) {
	alice := st.Register(t, "alice")
	bob := st.Register(t, "bob")

	began := time.Now()
	out, err := testenv.RunJS(t, timeout+30*time.Second, script, append([]string{
		"CIRRUS_URL=" + url,
		"CIRRUS_USERS=" + alice.ID + "," + bob.ID,
		"CIRRUS_PASSWORD=" + password,
		"CIRRUS_TIMEOUT_MS=" + strconv.FormatInt(timeout.Milliseconds(), 10),
	}, env...)...,
	)
	if err != nil {
		t.Fatalf("matrix-js-sdk %s: %v; its output:\n%s", script, err, out)
	}
	if !strings.Contains(out, "\nPASS in ") {
		t.Fatalf("matrix-js-sdk %s exited 0 without PASS; its output:\n%s", script, out)
	}
	t.Logf("matrix-js-sdk %s in %v:\n%s", script, time.Since(began).Round(time.Millisecond), out)
	checkServed(t, st)
}

// checkServed fails the test when the server answered any request with a
// 5xx, a server bug, and lists the 4xx answers: matrix-js-sdk probes
// optional and unstable endpoints, such as MSC4143's rtc/transports.
func checkServed(t *testing.T, st *servertest.Stack) {
	t.Helper()
	for _, r := range st.Requests(t) {
		switch {
		case r.Status >= 500:
			t.Errorf("%s %s: %d; the server's log:\n%s", r.Method, r.Path, r.Status, st.Logs())
		case r.Status >= 400:
			t.Logf("%s %s: %d", r.Method, r.Path, r.Status)
		}
	}
}
