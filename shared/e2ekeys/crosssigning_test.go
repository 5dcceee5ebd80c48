package e2ekeys_test

import (
	"context"
	"slices"
	gosync "sync"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/signatures"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

func TestDeviceSigningUpload(t *testing.T) {
	st := servertest.Start(t)
	changed := watch(st)
	ctx := context.Background()
	alice := newDevice(t, st, st.Register(t, "alice"))
	bob := newDevice(t, st, st.Register(t, "bob"))
	cs := newCrossSigning(alice.user.ID)

	// The first upload needs no auth.
	if err := alice.c.UploadCrossSigningKeys(ctx, cs.upload(t), nil); err != nil {
		t.Fatalf("first upload: %v", err)
	}
	if got := changed.take(); !slices.Equal(got, []string{alice.user.ID}) {
		t.Fatalf("Changed after the first upload: %v", got)
	}
	query := func(c *mautrix.Client) *mautrix.RespQueryKeys {
		t.Helper()
		q, err := c.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{id.UserID(alice.user.ID): {}}})
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	a := id.UserID(alice.user.ID)
	if q := query(alice.c); firstKey(q.MasterKeys[a]) != id.Ed25519(pub(cs.master)) ||
		firstKey(q.SelfSigningKeys[a]) != id.Ed25519(pub(cs.self)) || firstKey(q.UserSigningKeys[a]) != id.Ed25519(pub(cs.userSigning)) {
		t.Fatalf("alice's own query: %+v %+v %+v", q.MasterKeys, q.SelfSigningKeys, q.UserSigningKeys)
	}
	if q := query(bob.c); firstKey(q.MasterKeys[a]) == "" || firstKey(q.SelfSigningKeys[a]) == "" || len(q.UserSigningKeys) != 0 {
		t.Fatalf("bob's query of alice: master %+v, self-signing %+v, user-signing %+v (only alice may see it)", q.MasterKeys, q.SelfSigningKeys, q.UserSigningKeys)
	}
	// The self-signing key as served verifies with the master key.
	ssk := query(bob.c).SelfSigningKeys[a]
	if ok, err := signatures.VerifySignatureJSON(ssk, a, pub(cs.master), id.Ed25519(pub(cs.master))); !ok || err != nil {
		t.Fatalf("self-signing key's signature: %v %v", ok, err)
	}

	// The same keys again: no auth, no change.
	if err := alice.c.UploadCrossSigningKeys(ctx, cs.upload(t), nil); err != nil {
		t.Fatalf("the same keys again: %v", err)
	}
	if got := changed.take(); len(got) != 0 {
		t.Fatalf("Changed after the same keys: %v", got)
	}

	// Other keys need user-interactive auth: a 401 with the password flow.
	next := newCrossSigning(alice.user.ID)
	r := st.Do(t, "POST", keysPath+"device_signing/upload", alice.user.AccessToken, next.upload(t))
	flows, _ := r.Body["flows"].([]any)
	if r.Status != 401 || r.Body["session"] == nil || len(flows) == 0 || !jsonEqual(flows[0], map[string]any{"stages": []string{"m.login.password"}}) {
		t.Fatalf("replacement without auth: %d %s", r.Status, r.Raw)
	}
	wrong := func(*mautrix.RespUserInteractive) any {
		return &mautrix.ReqUIAuthLogin{BaseAuthData: mautrix.BaseAuthData{Type: mautrix.AuthTypePassword}, User: alice.user.ID, Password: "wrong"}
	}
	wantErr(t, "replacement with a wrong password", alice.c.UploadCrossSigningKeys(ctx, next.upload(t), wrong), 401, "M_FORBIDDEN")
	if q := query(alice.c); firstKey(q.MasterKeys[a]) != id.Ed25519(pub(cs.master)) {
		t.Fatal("keys replaced without auth")
	}
	if err := alice.c.UploadCrossSigningKeys(ctx, next.upload(t), passwordAuth(alice.user.ID)); err != nil {
		t.Fatalf("replacement with the password: %v", err)
	}
	if q := query(bob.c); firstKey(q.MasterKeys[a]) != id.Ed25519(pub(next.master)) {
		t.Fatalf("master key after the replacement: %+v", q.MasterKeys[a])
	}
	if got := changed.take(); !slices.Equal(got, []string{alice.user.ID}) {
		t.Fatalf("Changed after the replacement: %v", got)
	}

	// Refusals, for a user without keys so that no auth comes first.
	carol := newDevice(t, st, st.Register(t, "carol"))
	ccs := newCrossSigning(carol.user.ID)
	withKey := func(k mautrix.CrossSigningKeys, mutate func(*mautrix.CrossSigningKeys)) mautrix.CrossSigningKeys {
		mutate(&k)
		return k
	}
	full := ccs.upload(t)
	forged := ccs.key(t, ccs.self, id.XSUsageSelfSigning)
	forged.Signatures = signatures.Signatures{id.UserID(carol.user.ID): {keyID(ccs.master): signWith(t, ccs.self, forged)}}
	for _, tc := range []struct {
		name   string
		body   map[string]any
		status int
		code   string
	}{
		{"no master key", map[string]any{"self_signing_key": full.SelfSigning}, 400, "M_MISSING_PARAM"},
		{"a master key of another user", map[string]any{"master_key": withKey(full.Master, func(k *mautrix.CrossSigningKeys) { k.UserID = a })}, 400, "M_INVALID_PARAM"},
		{"a master key of the wrong usage", map[string]any{"master_key": withKey(full.Master, func(k *mautrix.CrossSigningKeys) { k.Usage = []id.CrossSigningUsage{id.XSUsageSelfSigning} })}, 400, "M_INVALID_PARAM"},
		{"a master key of two keys", map[string]any{"master_key": withKey(full.Master, func(k *mautrix.CrossSigningKeys) {
			k.Keys = map[id.KeyID]id.Ed25519{keyID(ccs.master): id.Ed25519(pub(ccs.master)), keyID(ccs.self): id.Ed25519(pub(ccs.self))}
		})}, 400, "M_INVALID_PARAM"},
		{"a key named after another key", map[string]any{"master_key": withKey(full.Master, func(k *mautrix.CrossSigningKeys) {
			k.Keys = map[id.KeyID]id.Ed25519{keyID(ccs.self): id.Ed25519(pub(ccs.master))}
		})}, 400, "M_INVALID_PARAM"},
		{"a self-signing key not signed by the master key", map[string]any{"master_key": full.Master, "self_signing_key": forged}, 400, "M_INVALID_SIGNATURE"},
		{"a user-signing key signed by no one", map[string]any{"master_key": full.Master, "user_signing_key": withKey(full.UserSigning, func(k *mautrix.CrossSigningKeys) { k.Signatures = nil })}, 400, "M_INVALID_SIGNATURE"},
		{"not JSON", nil, 400, "M_NOT_JSON"},
	} {
		var body any = tc.body
		if tc.body == nil {
			body = `{"master_key":`
		}
		r := st.Do(t, "POST", keysPath+"device_signing/upload", carol.user.AccessToken, body)
		if r.Status != tc.status || r.Body["errcode"] != tc.code {
			t.Errorf("%s: got %d %s, want %d %s", tc.name, r.Status, r.Raw, tc.status, tc.code)
		}
	}
	// A public key equal to one of the user's device IDs: the spec keeps
	// the two apart, as signatures name both the same way.
	login(t, st, carol.user, pub(ccs.master), "")
	r = st.Do(t, "POST", keysPath+"device_signing/upload", carol.user.AccessToken, full)
	if r.Status != 403 || r.Body["errcode"] != "M_FORBIDDEN" {
		t.Fatalf("a master key named like a device: %d %s", r.Status, r.Raw)
	}
	// Nothing of the refused uploads was stored: a first upload needs no auth yet.
	if err := carol.c.UploadCrossSigningKeys(ctx, newCrossSigning(carol.user.ID).upload(t), nil); err != nil {
		t.Fatalf("carol's first upload after refusals: %v", err)
	}
}

// TestDeviceSigningUpload_Concurrent has two devices of a user set up
// cross-signing at once with different keys, on two server instances: one
// wins, the other is asked to authenticate, as for a replacement.
func TestDeviceSigningUpload_Concurrent(t *testing.T) {
	st := servertest.Start(t)
	twin := st.Twin(t)
	u := st.Register(t, "alice")
	other := login(t, twin, u, "OTHER", "")
	for round := range 3 {
		if round > 0 {
			// Start again from nothing: delete the keys as a reset would.
			for _, typ := range []string{"master", "self_signing", "user_signing"} {
				if err := st.Server.Store.Delete(context.Background(), store.Key{PK: "e2ekeys|" + u.ID, SK: "k|cs|" + typ}); err != nil {
					t.Fatal(err)
				}
			}
		}
		var (
			wg       gosync.WaitGroup
			statuses [2]int
		)
		for i, tok := range []string{u.AccessToken, other.user.AccessToken} {
			on := []*servertest.Stack{st, twin}[i]
			body := newCrossSigning(u.ID).upload(t)
			wg.Go(func() { statuses[i] = on.Do(t, "POST", keysPath+"device_signing/upload", tok, body).Status })
		}
		wg.Wait()
		if slices.Sort(statuses[:]); statuses != [2]int{200, 401} {
			t.Fatalf("round %d: two first uploads at once: %v, want one 200 and one 401", round, statuses)
		}
	}
}

// TestSignaturesUpload signs, as clients do after a verification: a device
// by its user's self-signing key, the master key by a device, and another
// user's master key by the user-signing key; and checks who sees what.
func TestSignaturesUpload(t *testing.T) {
	st := servertest.Start(t)
	changed := watch(st)
	ctx := context.Background()
	alice := newDevice(t, st, st.Register(t, "alice"))
	laptop := login(t, st, alice.user, "LAPTOP", "Laptop")
	bob := newDevice(t, st, st.Register(t, "bob"))
	carol := newDevice(t, st, st.Register(t, "carol"))
	a, b := id.UserID(alice.user.ID), id.UserID(bob.user.ID)
	acs, bcs := newCrossSigning(alice.user.ID), newCrossSigning(bob.user.ID)
	for _, d := range []*device{alice, laptop, bob} {
		d.upload(t, 1)
	}
	if err := alice.c.UploadCrossSigningKeys(ctx, acs.upload(t), nil); err != nil {
		t.Fatal(err)
	}
	if err := bob.c.UploadCrossSigningKeys(ctx, bcs.upload(t), nil); err != nil {
		t.Fatal(err)
	}
	changed.take()

	// The laptop's keys as a signed object, signed by the self-signing key.
	signedDevice := func(d *device, k func(mautrix.ReqKeysSignatures) string) mautrix.ReqKeysSignatures {
		dk := d.deviceKeys(t)
		keys := map[id.KeyID]string{}
		for kid, v := range dk.Keys {
			keys[id.KeyID(kid)] = v
		}
		obj := mautrix.ReqKeysSignatures{UserID: dk.UserID, DeviceID: dk.DeviceID, Algorithms: dk.Algorithms, Keys: keys}
		obj.Signatures = signatures.Signatures{dk.UserID: {keyID(acs.self): k(obj)}}
		return obj
	}
	bySSK := func(o mautrix.ReqKeysSignatures) string { return signWith(t, acs.self, o) }
	master := acs.key(t, acs.master, id.XSUsageMaster)
	masterObj := mautrix.ReqKeysSignatures{UserID: a, Usage: master.Usage, Keys: map[id.KeyID]string{keyID(acs.master): pub(acs.master)}}
	masterObj.Signatures = signatures.Signatures{a: {id.KeyID("ed25519:" + alice.user.DeviceID): alice.sign(t, masterObj)}}
	resp, err := alice.c.UploadSignatures(ctx, &mautrix.ReqUploadSignatures{a: {
		"LAPTOP":        signedDevice(laptop, bySSK),
		pub(acs.master): masterObj,
	}})
	if err != nil || len(resp.Failures) != 0 {
		t.Fatalf("alice's signatures: %+v, %v", resp, err)
	}
	if got := changed.take(); !slices.Equal(got, []string{alice.user.ID}) {
		t.Fatalf("Changed after alice's signatures: %v", got)
	}

	// Bob signs alice's master key with his user-signing key.
	bobsView := mautrix.ReqKeysSignatures{UserID: a, Usage: master.Usage, Keys: masterObj.Keys}
	bobsView.Signatures = signatures.Signatures{b: {keyID(bcs.userSigning): signWith(t, bcs.userSigning, bobsView)}}
	resp, err = bob.c.UploadSignatures(ctx, &mautrix.ReqUploadSignatures{a: {pub(acs.master): bobsView}})
	if err != nil || len(resp.Failures) != 0 {
		t.Fatalf("bob's signature of alice: %+v, %v", resp, err)
	}
	if got := changed.take(); !slices.Equal(got, []string{alice.user.ID}) {
		t.Fatalf("Changed after bob's signature: %v", got)
	}
	// Again: nothing new.
	if resp, err = bob.c.UploadSignatures(ctx, &mautrix.ReqUploadSignatures{a: {pub(acs.master): bobsView}}); err != nil || len(resp.Failures) != 0 || len(changed.take()) != 0 {
		t.Fatalf("the same signature again: %+v, %v", resp, err)
	}

	query := func(d *device) *mautrix.RespQueryKeys {
		t.Helper()
		q, err := d.c.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{a: {}}})
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	for _, tc := range []struct {
		name    string
		viewer  *device
		bobSigs bool
	}{{"alice", alice, false}, {"bob", bob, true}, {"carol", carol, false}} {
		q := query(tc.viewer)
		lap := q.DeviceKeys[a]["LAPTOP"]
		if ok, err := signatures.VerifySignatureJSON(lap, a, pub(acs.self), id.Ed25519(pub(acs.self))); !ok || err != nil {
			t.Errorf("%s's view: laptop's signature by the self-signing key: %v %v (%+v)", tc.name, ok, err, lap.Signatures)
		}
		if ok, err := signatures.VerifySignatureJSON(lap, a, "LAPTOP", laptop.ed25519()); !ok || err != nil {
			t.Errorf("%s's view: laptop's own signature: %v %v", tc.name, ok, err)
		}
		m := q.MasterKeys[a]
		if ok, err := signatures.VerifySignatureJSON(m, a, alice.user.DeviceID, alice.ed25519()); !ok || err != nil {
			t.Errorf("%s's view: the master key's signature by alice's device: %v %v (%+v)", tc.name, ok, err, m.Signatures)
		}
		_, has := m.Signatures[b]
		if has != tc.bobSigs {
			t.Errorf("%s's view: bob's signature on alice's master key shown %v, want %v", tc.name, has, tc.bobSigs)
		}
		if has {
			if ok, err := signatures.VerifySignatureJSON(m, b, pub(bcs.userSigning), id.Ed25519(pub(bcs.userSigning))); !ok || err != nil {
				t.Errorf("bob's signature as served: %v %v", ok, err)
			}
		}
	}

	// Failures are per key; the good ones are stored.
	wrongKey := signedDevice(alice, func(o mautrix.ReqKeysSignatures) string { return signWith(t, acs.master, o) })
	changedKeys := signedDevice(alice, bySSK)
	changedKeys.Algorithms = []id.Algorithm{id.AlgorithmOlmV1}
	changedKeys.Signatures = signatures.Signatures{a: {keyID(acs.self): bySSK(changedKeys)}}
	noSig := signedDevice(alice, bySSK)
	noSig.Signatures = nil
	resp, err = alice.c.UploadSignatures(ctx, &mautrix.ReqUploadSignatures{a: {alice.user.DeviceID: wrongKey, "NOSUCH": signedDevice(alice, bySSK)}})
	if err != nil {
		t.Fatal(err)
	}
	wantFailure(t, resp, a, alice.user.DeviceID, "M_INVALID_SIGNATURE")
	wantFailure(t, resp, a, "NOSUCH", "M_NOT_FOUND")
	for _, tc := range []struct {
		name string
		obj  mautrix.ReqKeysSignatures
		code string
	}{{"keys that are not the stored ones", changedKeys, "M_UNKNOWN"}, {"no signature", noSig, "M_INVALID_SIGNATURE"}} {
		resp, err = alice.c.UploadSignatures(ctx, &mautrix.ReqUploadSignatures{a: {alice.user.DeviceID: tc.obj}})
		if err != nil {
			t.Fatal(err)
		}
		wantFailure(t, resp, a, alice.user.DeviceID, tc.code)
	}

	// Carol has no user-signing key; bob signs a key of alice that is not
	// her master key, and users without keys, here or elsewhere.
	resp, _ = carol.c.UploadSignatures(ctx, &mautrix.ReqUploadSignatures{a: {pub(acs.master): bobsView}})
	wantFailure(t, resp, a, pub(acs.master), "M_NOT_FOUND")
	resp, _ = bob.c.UploadSignatures(ctx, &mautrix.ReqUploadSignatures{
		a:                        {pub(acs.master): bobsView, pub(acs.self): bobsView},
		id.UserID(carol.user.ID): {"X": bobsView},
		"@dan:elsewhere.example": {"X": bobsView},
	})
	wantFailure(t, resp, a, pub(acs.self), "M_NOT_FOUND")
	wantFailure(t, resp, id.UserID(carol.user.ID), "X", "M_NOT_FOUND")
	wantFailure(t, resp, "@dan:elsewhere.example", "X", "M_NOT_FOUND")
	if r := st.Do(t, "POST", keysPath+"signatures/upload", bob.user.AccessToken, `{"@alice:example.org":{"X":"not an object"}}`); r.Status != 400 || r.Body["errcode"] != "M_INVALID_PARAM" {
		t.Fatalf("a signed key that is not an object: %d %s", r.Status, r.Raw)
	}
	// Bob's self-signatures fail without device keys... he has some; a user
	// without a self-signing key gets M_NOT_FOUND for each.
	resp, _ = carol.c.UploadSignatures(ctx, &mautrix.ReqUploadSignatures{id.UserID(carol.user.ID): {"X": bobsView}})
	wantFailure(t, resp, id.UserID(carol.user.ID), "X", "M_NOT_FOUND")
}

// wantFailure fails unless resp reports errcode for (userID, keyID).
func wantFailure(t *testing.T, resp *mautrix.RespUploadSignatures, userID id.UserID, keyID, code string) {
	t.Helper()
	if resp == nil {
		t.Fatalf("no response; want failure %s for %s %s", code, userID, keyID)
	}
	byKey, _ := resp.Failures[string(userID)].(map[string]any)
	f, _ := byKey[keyID].(map[string]any)
	if f["errcode"] != code || f["error"] == nil {
		t.Fatalf("failure of %s %s: got %v, want %s (all: %v)", userID, keyID, f, code, resp.Failures)
	}
}

// firstKey is the public key of a cross-signing key.
func firstKey(k mautrix.CrossSigningKeys) id.Ed25519 { return k.FirstKey() }
