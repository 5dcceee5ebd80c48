package e2ekeys_test

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	gosync "sync"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/signatures"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

const keysPath = "/_matrix/client/v3/keys/"

// changes records the users Changed was called for.
type changes struct {
	mu    gosync.Mutex
	users []string
}

func watch(st *servertest.Stack) *changes {
	c := &changes{}
	st.Server.E2EKeys.Changed = func(_ context.Context, userID string) error {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.users = append(c.users, userID)
		return nil
	}
	return c
}

// take returns the users recorded since the last take.
func (c *changes) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.users
	c.users = nil
	return out
}

func TestUpload(t *testing.T) {
	st := servertest.Start(t)
	changed := watch(st)
	ctx := context.Background()
	alice := newDevice(t, st, st.Register(t, "alice"))

	counts := alice.upload(t, 10)
	if counts != 10 {
		t.Fatalf("counts after uploading 10 keys: %v", counts)
	}
	if got := changed.take(); !slices.Equal(got, []string{alice.user.ID}) {
		t.Fatalf("Changed after new device keys: %v", got)
	}

	// The same device keys again, and keys already uploaded: nothing changes.
	dk := alice.deviceKeys(t)
	again := alice.oneTimeKeys(t, 2)
	resp, err := alice.c.UploadKeys(ctx, &mautrix.ReqUploadKeys{DeviceKeys: dk, OneTimeKeys: again})
	if err != nil || resp.OneTimeKeyCounts.SignedCurve25519 != 12 {
		t.Fatalf("upload of 2 more keys: %v, %v", resp, err)
	}
	resp, err = alice.c.UploadKeys(ctx, &mautrix.ReqUploadKeys{DeviceKeys: dk, OneTimeKeys: again})
	if err != nil || resp.OneTimeKeyCounts.SignedCurve25519 != 12 {
		t.Fatalf("the same keys uploaded again: %v, %v", resp, err)
	}
	if got := changed.take(); len(got) != 0 {
		t.Fatalf("Changed after the same device keys: %v", got)
	}

	// A key ID uploaded again with another key is refused.
	var kid id.KeyID
	for k := range again {
		kid = k
	}
	other := alice.oneTimeKeys(t, 1)
	for _, k := range other {
		_, err = alice.c.UploadKeys(ctx, &mautrix.ReqUploadKeys{OneTimeKeys: map[id.KeyID]mautrix.OneTimeKey{kid: k}})
	}
	wantErr(t, "one-time key ID reused", err, 400, "M_UNKNOWN")
	if !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("one-time key ID reused: %v", err)
	}
	// The same key signed again is the same key.
	same := again[kid]
	same.Signatures = signatures.NewSingleSignature(id.UserID(alice.user.ID), id.KeyAlgorithmEd25519, "OTHERKEY", "c2ln")
	if _, err := alice.c.UploadKeys(ctx, &mautrix.ReqUploadKeys{OneTimeKeys: map[id.KeyID]mautrix.OneTimeKey{kid: same}}); err != nil {
		t.Fatalf("a key uploaded again with other signatures: %v", err)
	}

	// New device keys of the same device are a change.
	alice.acc = newDevice(t, st, alice.user).acc
	if _, err := alice.c.UploadKeys(ctx, &mautrix.ReqUploadKeys{DeviceKeys: alice.deviceKeys(t)}); err != nil {
		t.Fatal(err)
	}
	if got := changed.take(); !slices.Equal(got, []string{alice.user.ID}) {
		t.Fatalf("Changed after new keys of the same device: %v", got)
	}
	q, err := alice.c.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{id.UserID(alice.user.ID): {}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := q.DeviceKeys[id.UserID(alice.user.ID)][alice.id()]; got.Keys.GetEd25519(alice.id()) != alice.ed25519() {
		t.Fatalf("query after new device keys: %+v", got)
	}

	// A device uploads its own keys only.
	bob := newDevice(t, st, st.Register(t, "bob"))
	for _, tc := range []struct {
		name   string
		mutate func(*mautrix.DeviceKeys)
	}{
		{"another user", func(dk *mautrix.DeviceKeys) { dk.UserID = id.UserID(alice.user.ID) }},
		{"another device", func(dk *mautrix.DeviceKeys) { dk.DeviceID = alice.id() }},
	} {
		dk := bob.deviceKeys(t)
		tc.mutate(dk)
		_, err := bob.c.UploadKeys(ctx, &mautrix.ReqUploadKeys{DeviceKeys: dk})
		wantErr(t, "device keys of "+tc.name, err, 400, "M_BAD_JSON")
	}
	q, _ = alice.c.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{id.UserID(alice.user.ID): {}, id.UserID(bob.user.ID): {}}})
	if len(q.DeviceKeys[id.UserID(alice.user.ID)]) != 1 || len(q.DeviceKeys[id.UserID(bob.user.ID)]) != 0 {
		t.Fatalf("a refused upload left keys: %+v", q.DeviceKeys)
	}

	// Malformed bodies.
	for _, tc := range []struct {
		name, body string
		status     int
		code       string
	}{
		{"not JSON", `{"one_time_keys":`, 400, "M_NOT_JSON"},
		{"null device keys", `{"device_keys":null}`, 400, "M_BAD_JSON"},
		{"device keys without signatures", `{"device_keys":{"user_id":"` + bob.user.ID + `","device_id":"` + bob.user.DeviceID + `","algorithms":[],"keys":{}}}`, 400, "M_BAD_JSON"},
		{"key name without algorithm", `{"one_time_keys":{"AAAA":"abc"}}`, 400, "M_BAD_JSON"},
		{"key name with two colons", `{"one_time_keys":{"a:b:c":"abc"}}`, 400, "M_BAD_JSON"},
		{"key of the wrong type", `{"one_time_keys":{"curve25519:A":17}}`, 400, "M_BAD_JSON"},
		{"signed key without signatures", `{"one_time_keys":{"signed_curve25519:A":{"key":"abc"}}}`, 400, "M_BAD_JSON"},
		{"two fallback keys of an algorithm", `{"fallback_keys":{"signed_curve25519:A":"a","signed_curve25519:B":"b"}}`, 400, "M_INVALID_PARAM"},
		{"key ID too long", `{"one_time_keys":{"curve25519:` + strings.Repeat("A", 256) + `":"abc"}}`, 400, "M_INVALID_PARAM"},
	} {
		r := st.Do(t, "POST", keysPath+"upload", bob.user.AccessToken, tc.body)
		if r.Status != tc.status || r.Body["errcode"] != tc.code {
			t.Errorf("%s: got %d %v, want %d %s", tc.name, r.Status, r.Body, tc.status, tc.code)
		}
	}
	// A key over DynamoDB's 400 KB item limit, in a body under the 1 MB one.
	big := bob.deviceKeys(t)
	big.Extra = map[string]any{"padding": strings.Repeat("x", 500_000)}
	_, err = bob.c.UploadKeys(ctx, &mautrix.ReqUploadKeys{DeviceKeys: big})
	wantErr(t, "device keys over 400 KB", err, 413, "M_TOO_LARGE")
	r := st.Do(t, "POST", keysPath+"upload", "", `{}`)
	if r.Status != 401 {
		t.Fatalf("upload without a token: %d", r.Status)
	}
	// Unsigned curve25519 keys (old clients) are taken as strings.
	r = st.Do(t, "POST", keysPath+"upload", bob.user.AccessToken, `{"one_time_keys":{"curve25519:AAAAAQ":"abc"}}`)
	if r.Status != 200 || !jsonEqual(r.Body["one_time_key_counts"], map[string]any{"curve25519": 1, "signed_curve25519": 0}) {
		t.Fatalf("an unsigned key: %d %s", r.Status, r.Raw)
	}
}

func TestQuery(t *testing.T) {
	st := servertest.Start(t)
	ctx := context.Background()
	alice := newDevice(t, st, st.Register(t, "alice"))
	laptop := login(t, st, alice.user, "LAPTOP", "Alice's laptop")
	login(t, st, alice.user, "KEYLESS", "") // a device without keys is not shown
	alice.upload(t, 1)
	laptop.upload(t, 1)
	bob := newDevice(t, st, st.Register(t, "bob"))

	q, err := bob.c.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{
		id.UserID(alice.user.ID): {},
		"@carol:example.org":     {},
		"@dan:elsewhere.example": {},
		"not a user":             {},
	}})
	if err != nil {
		t.Fatal(err)
	}
	devs := q.DeviceKeys[id.UserID(alice.user.ID)]
	if len(devs) != 2 || devs[laptop.id()].Unsigned["device_display_name"] != "Alice's laptop" {
		t.Fatalf("alice's devices: %+v", devs)
	}
	if got, ok := q.DeviceKeys["@carol:example.org"]; !ok || len(got) != 0 {
		t.Fatalf("an unknown local user: %v, %v", got, ok)
	}
	if _, ok := q.Failures["elsewhere.example"]; !ok || len(q.Failures) != 1 {
		t.Fatalf("failures: %v", q.Failures)
	}
	// Each device's keys verify with its own key, as uploaded.
	for devID, dk := range devs {
		ok, err := signatures.VerifySignatureJSON(dk, dk.UserID, string(devID), dk.Keys.GetEd25519(devID))
		if !ok || err != nil {
			t.Fatalf("signature of %s as served: %v, %v", devID, ok, err)
		}
	}
	// Named devices only.
	q, _ = bob.c.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{id.UserID(alice.user.ID): {laptop.id(), "NOSUCH"}}})
	if got := slices.Collect(maps.Keys(q.DeviceKeys[id.UserID(alice.user.ID)])); !slices.Equal(got, []id.DeviceID{laptop.id()}) {
		t.Fatalf("query of one device: %v", got)
	}
	for _, tc := range []struct{ name, body string }{
		{"no device_keys", `{}`},
		{"a device list of numbers", `{"device_keys":{"@alice:example.org":[1]}}`},
	} {
		if r := st.Do(t, "POST", keysPath+"query", bob.user.AccessToken, tc.body); r.Status != 400 || r.Body["errcode"] != "M_BAD_JSON" {
			t.Errorf("%s: %d %s", tc.name, r.Status, r.Raw)
		}
	}
}

func TestClaim(t *testing.T) {
	st := servertest.Start(t)
	ctx := context.Background()
	alice := newDevice(t, st, st.Register(t, "alice"))
	bob := newDevice(t, st, st.Register(t, "bob"))
	bob.upload(t, 2)
	newer := bob.oneTimeKeys(t, 1)
	if _, err := bob.c.UploadKeys(ctx, &mautrix.ReqUploadKeys{OneTimeKeys: newer}); err != nil {
		t.Fatal(err)
	}
	fallback := bob.fallbackKey(t)
	if r := st.Do(t, "POST", keysPath+"upload", bob.user.AccessToken, map[string]any{"fallback_keys": fallback}); r.Status != 200 {
		t.Fatalf("fallback key upload: %d %s", r.Status, r.Raw)
	}
	counts, err := st.Server.E2EKeys.Counts(ctx, bob.user.ID, bob.user.DeviceID)
	if err != nil || counts.OneTimeKeys["signed_curve25519"] != 3 || !slices.Equal(counts.UnusedFallbackKeyTypes, []string{"signed_curve25519"}) {
		t.Fatalf("counts: %+v, %v", counts, err)
	}

	claim := func() (id.KeyID, mautrix.OneTimeKey) {
		t.Helper()
		resp, err := alice.c.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{
			id.UserID(bob.user.ID): {bob.id(): id.KeyAlgorithmSignedCurve25519}}})
		if err != nil {
			t.Fatal(err)
		}
		keys := resp.OneTimeKeys[id.UserID(bob.user.ID)][bob.id()]
		if len(keys) != 1 {
			t.Fatalf("claim: %+v", resp.OneTimeKeys)
		}
		for k, v := range keys {
			return k, v
		}
		return "", mautrix.OneTimeKey{}
	}
	// Oldest upload first: the two of the first upload, then the newer one.
	var got []id.KeyID
	for range 3 {
		k, key := claim()
		got = append(got, k)
		// The key is the device's, as it signed it.
		ok, err := signatures.VerifySignatureJSON(key.RawData, id.UserID(bob.user.ID), bob.user.DeviceID, bob.ed25519())
		if !ok || err != nil {
			t.Fatalf("signature of claimed key %s: %v, %v", k, ok, err)
		}
		if key.Fallback {
			t.Fatalf("claimed %s is a fallback key", k)
		}
	}
	for k := range newer {
		if got[2] != k {
			t.Fatalf("claim order %v: the newer upload %s should come last", got, k)
		}
	}
	// Then the fallback key, again and again.
	for range 2 {
		k, key := claim()
		if _, ok := fallback[string(k)]; !ok || !key.Fallback {
			t.Fatalf("claim with no one-time key left: %s %+v", k, key)
		}
	}
	counts, _ = st.Server.E2EKeys.Counts(ctx, bob.user.ID, bob.user.DeviceID)
	if counts.OneTimeKeys["signed_curve25519"] != 0 || len(counts.UnusedFallbackKeyTypes) != 0 {
		t.Fatalf("counts after claims: %+v", counts)
	}
	// The same fallback key again stays used; a new one is unused.
	st.Do(t, "POST", keysPath+"upload", bob.user.AccessToken, map[string]any{"fallback_keys": fallback})
	if counts, _ = st.Server.E2EKeys.Counts(ctx, bob.user.ID, bob.user.DeviceID); len(counts.UnusedFallbackKeyTypes) != 0 {
		t.Fatalf("the used fallback key uploaded again: %+v", counts)
	}
	st.Do(t, "POST", keysPath+"upload", bob.user.AccessToken, map[string]any{"fallback_keys": bob.fallbackKey(t)})
	if counts, _ = st.Server.E2EKeys.Counts(ctx, bob.user.ID, bob.user.DeviceID); len(counts.UnusedFallbackKeyTypes) != 1 {
		t.Fatalf("a new fallback key: %+v", counts)
	}
	// A claimed key ID uploaded again (a late retry) is not handed out again.
	if _, err := bob.c.UploadKeys(ctx, &mautrix.ReqUploadKeys{OneTimeKeys: newer}); err != nil {
		t.Fatal(err)
	}
	if k, _ := claim(); k == got[2] {
		t.Fatalf("claimed key %s handed out twice", k)
	}

	// Unknown devices and algorithms give nothing; other servers a failure.
	resp, err := alice.c.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{
		id.UserID(bob.user.ID):   {"NOSUCH": id.KeyAlgorithmSignedCurve25519, bob.id(): "unknown_algorithm"},
		"@carol:example.org":     {"X": id.KeyAlgorithmSignedCurve25519},
		"@dan:elsewhere.example": {"X": id.KeyAlgorithmSignedCurve25519},
	}})
	if err != nil || len(resp.OneTimeKeys) != 0 || len(resp.Failures) != 1 || resp.Failures["elsewhere.example"] == nil {
		t.Fatalf("claim of unknown devices: %+v, %v", resp, err)
	}
	if r := st.Do(t, "POST", keysPath+"claim", alice.user.AccessToken, `{"one_time_keys":{"nouser":{}}}`); r.Status != 400 || r.Body["errcode"] != "M_INVALID_PARAM" {
		t.Fatalf("claim for a malformed user ID: %d %s", r.Status, r.Raw)
	}
}

// TestClaim_Session starts an Olm session with a claimed key: the key the
// server hands out is one the device can use.
func TestClaim_Session(t *testing.T) {
	st := servertest.Start(t)
	ctx := context.Background()
	alice := newDevice(t, st, st.Register(t, "alice"))
	bob := newDevice(t, st, st.Register(t, "bob"))
	bob.upload(t, 5)
	resp, err := alice.c.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{
		id.UserID(bob.user.ID): {bob.id(): id.KeyAlgorithmSignedCurve25519}}})
	if err != nil {
		t.Fatal(err)
	}
	q, err := alice.c.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{id.UserID(bob.user.ID): {}}})
	if err != nil {
		t.Fatal(err)
	}
	bobCurve := id.Curve25519(q.DeviceKeys[id.UserID(bob.user.ID)][bob.id()].Keys[id.NewDeviceKeyID(id.KeyAlgorithmCurve25519, bob.id())])
	for _, key := range resp.OneTimeKeys[id.UserID(bob.user.ID)][bob.id()] {
		out, err := alice.acc.NewOutboundSession(bobCurve, key.Key)
		if err != nil {
			t.Fatal(err)
		}
		msgType, ciphertext, err := out.Encrypt([]byte("hello bob"))
		if err != nil || msgType != id.OlmMsgTypePreKey {
			t.Fatalf("encrypt: %v %v", msgType, err)
		}
		in, err := bob.acc.NewInboundSession(string(ciphertext))
		if err != nil {
			t.Fatalf("bob's account does not hold the claimed key: %v", err)
		}
		plain, err := in.Decrypt(string(ciphertext), msgType)
		if err != nil || string(plain) != "hello bob" {
			t.Fatalf("decrypt: %q %v", plain, err)
		}
		return
	}
	t.Fatalf("no key claimed: %+v", resp)
}

// TestClaim_Concurrent has claimers race for one device's keys, on two
// server instances over one table as two Lambda instances would: no key is
// handed out twice, and when the one-time keys run out the claimers get
// the fallback key.
func TestClaim_Concurrent(t *testing.T) {
	st := servertest.Start(t)
	twin := st.Twin(t)
	ctx := context.Background()
	bob := newDevice(t, st, st.Register(t, "bob"))
	var claimers []*mautrix.Client
	for i := range 14 {
		u := st.Register(t, "claimer"+string(rune('a'+i)))
		on := st
		if i%2 == 1 {
			on = twin
		}
		claimers = append(claimers, on.Client(t, u))
	}
	run := func(n int) []string {
		var (
			wg   gosync.WaitGroup
			mu   gosync.Mutex
			keys []string
		)
		for _, c := range claimers[:n] {
			wg.Go(func() {
				resp, err := c.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{
					id.UserID(bob.user.ID): {bob.id(): id.KeyAlgorithmSignedCurve25519}}})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				for k, v := range resp.OneTimeKeys[id.UserID(bob.user.ID)][bob.id()] {
					tag := ""
					if v.Fallback {
						tag = "fallback "
					}
					keys = append(keys, tag+string(k))
				}
			})
		}
		wg.Wait()
		return keys
	}

	bob.upload(t, 10)
	got := run(10)
	if len(got) != 10 || len(uniq(got)) != 10 {
		t.Fatalf("10 claimers of 10 keys got %d keys, %d different: %v", len(got), len(uniq(got)), got)
	}

	if _, err := bob.c.UploadKeys(ctx, &mautrix.ReqUploadKeys{OneTimeKeys: bob.oneTimeKeys(t, 10)}); err != nil {
		t.Fatal(err)
	}
	st.Do(t, "POST", keysPath+"upload", bob.user.AccessToken, map[string]any{"fallback_keys": bob.fallbackKey(t)})
	second := run(14)
	var otks, fallbacks []string
	for _, k := range second {
		if strings.HasPrefix(k, "fallback ") {
			fallbacks = append(fallbacks, k)
		} else {
			otks = append(otks, k)
		}
	}
	if len(otks) != 10 || len(uniq(otks)) != 10 || len(fallbacks) != 4 || len(uniq(fallbacks)) != 1 {
		t.Fatalf("14 claimers of 10 keys and a fallback key: one-time %v, fallback %v", otks, fallbacks)
	}
	if len(uniq(append(got, otks...))) != 20 {
		t.Fatalf("a key of the first round handed out again: %v, %v", got, otks)
	}
	counts, _ := st.Server.E2EKeys.Counts(ctx, bob.user.ID, bob.user.DeviceID)
	if counts.OneTimeKeys["signed_curve25519"] != 0 || len(counts.UnusedFallbackKeyTypes) != 0 {
		t.Fatalf("counts after the claims: %+v", counts)
	}
}

func uniq(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}

// jsonEqual compares a decoded JSON value with a Go value as JSON.
func jsonEqual(got any, want any) bool {
	a, _ := json.Marshal(got)
	b, _ := json.Marshal(want)
	return string(a) == string(b)
}

func TestDeleteDevice(t *testing.T) {
	st := servertest.Start(t)
	changed := watch(st)
	ctx := context.Background()
	alice := newDevice(t, st, st.Register(t, "alice"))
	phone := login(t, st, alice.user, "PHONE", "Phone")
	phone.upload(t, 5)
	st.Do(t, "POST", keysPath+"upload", phone.user.AccessToken, map[string]any{"fallback_keys": phone.fallbackKey(t)})
	changed.take()

	if _, err := phone.c.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	q, err := alice.c.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{id.UserID(alice.user.ID): {}}})
	if err != nil || len(q.DeviceKeys[id.UserID(alice.user.ID)]) != 0 {
		t.Fatalf("keys after logout: %+v, %v", q, err)
	}
	counts, err := st.Server.E2EKeys.Counts(ctx, alice.user.ID, "PHONE")
	if err != nil || counts.OneTimeKeys["signed_curve25519"] != 0 || len(counts.UnusedFallbackKeyTypes) != 0 {
		t.Fatalf("one-time keys after logout: %+v, %v", counts, err)
	}
	if got := changed.take(); !slices.Equal(got, []string{alice.user.ID}) {
		t.Fatalf("Changed after logout: %v", got)
	}
	// Logging in again with the device ID starts from nothing.
	again := login(t, st, alice.user, "PHONE", "Phone")
	if counts := again.upload(t, 1); counts != 1 {
		t.Fatalf("counts of the device logged in again: %v", counts)
	}
}
