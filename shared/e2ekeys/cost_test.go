package e2ekeys_test

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// TestCosts pins the costs docs/storage.md gives for the key endpoints,
// with keys of the sizes real clients make (goolm's), 50 one-time keys a
// device as Element keeps.
func TestCosts(t *testing.T) {
	st := servertest.Start(t)
	ctx := context.Background()
	alice := newDevice(t, st, st.Register(t, "alice"))
	bob := newDevice(t, st, st.Register(t, "bob"))

	want := servertest.Want
	check := func(what string, u store.Usage, w servertest.Cost) {
		t.Helper()
		servertest.CheckUsage(t, what, u, w)
	}
	last := func(route string) store.Usage { return st.LastRequestTo(t, route).DynamoDB }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}

	// auth; GetItem of the device's keys; PutItem; Query of the device's
	// partition (empty); one conditional PutItem per one-time key; the
	// device's stream entry, so that its syncs read the new counts. Every
	// upload reads the device's partition, for the counts it answers.
	//
	// A change of keys then tells the syncs (sync.DeviceListChanged): a
	// Query of the user's rooms (1 RCU, none here) and one stream entry per
	// user told (1 WCU each; bob alone here, whose other devices must
	// know). A claim tells the claimed device: one stream entry. And the
	// servers sharing a room with the user are looked for, to send them
	// the change (Servers: a Query of the user's rooms, 1 RCU, none here).
	bob.upload(t, 50)
	check("upload of new device keys and 50 one-time keys", last("/keys/upload"), want(58, 5, 53))
	_, err := bob.c.UploadKeys(ctx, &mautrix.ReqUploadKeys{OneTimeKeys: bob.oneTimeKeys(t, 50)})
	must(err)
	check("upload of 50 more one-time keys", last("/keys/upload"), want(53, 5, 51))
	_, err = bob.c.UploadKeys(ctx, &mautrix.ReqUploadKeys{DeviceKeys: bob.deviceKeys(t)})
	must(err)
	check("upload of the same device keys (at each start)", last("/keys/upload"), want(3, 9, 0))

	cctx, meter := store.WithMeter(ctx)
	_, err = st.Server.E2EKeys.Counts(cctx, bob.user.ID, bob.user.DeviceID)
	must(err)
	check("Counts of a device with 100 one-time keys", meter.Usage(), want(1, 7, 0))
	half := login(t, st, bob.user, "HALF", "")
	half.upload(t, 50)
	cctx, meter = store.WithMeter(ctx)
	_, err = st.Server.E2EKeys.Counts(cctx, bob.user.ID, "HALF")
	must(err)
	check("Counts of a device with 50 one-time keys", meter.Usage(), want(1, 4, 0))

	claim := func() {
		t.Helper()
		_, err := alice.c.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{
			id.UserID(bob.user.ID): {bob.id(): id.KeyAlgorithmSignedCurve25519}}})
		must(err)
	}
	// auth; Query of the algorithm's keys; the conditional PutItem.
	claim()
	check("claim of a one-time key, 100 on the server", last("/keys/claim"), want(4, 8, 2))

	alice.upload(t, 0)
	q := func() {
		t.Helper()
		_, err := alice.c.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{id.UserID(bob.user.ID): {}}})
		must(err)
	}
	// auth; Query of the user's keys; Query of the user's devices.
	q()
	check("query of a user with two devices", last("/keys/query"), want(3, 3, 0))

	// auth; Query of the cross-signing keys; Query of the devices; one
	// TransactWriteItems of the three keys.
	cs := newCrossSigning(bob.user.ID)
	must(bob.c.UploadCrossSigningKeys(ctx, cs.upload(t), nil))
	check("first cross-signing upload", last("/device_signing/upload"), want(7, 5, 7))
	must(bob.c.UploadCrossSigningKeys(ctx, cs.upload(t), nil))
	check("the same cross-signing keys again", last("/device_signing/upload"), want(2, 2, 0))
	q()
	check("query of a user with two devices and cross-signing keys", last("/keys/query"), want(3, 3, 0))

	// auth; Query of the caller's keys; BatchWriteItem of the signatures.
	dk := bob.deviceKeys(t)
	keys := map[id.KeyID]string{}
	for k, v := range dk.Keys {
		keys[id.KeyID(k)] = v
	}
	obj := mautrix.ReqKeysSignatures{UserID: dk.UserID, DeviceID: dk.DeviceID, Algorithms: dk.Algorithms, Keys: keys}
	obj.Signatures = map[id.UserID]map[id.KeyID]string{dk.UserID: {keyID(cs.self): signWith(t, cs.self, obj)}}
	_, err = bob.c.UploadSignatures(ctx, &mautrix.ReqUploadSignatures{dk.UserID: {bob.user.DeviceID: obj}})
	must(err)
	check("signature of a device by the self-signing key", last("/signatures/upload"), want(6, 4, 2))

	// auth; GetItem of the caller's user-signing key; GetItem of the
	// master key signed and of the signature there; BatchWriteItem.
	acs := newCrossSigning(alice.user.ID)
	must(alice.c.UploadCrossSigningKeys(ctx, acs.upload(t), nil))
	bm := cs.key(t, cs.master, id.XSUsageMaster)
	signed := mautrix.ReqKeysSignatures{UserID: bm.UserID, Usage: bm.Usage, Keys: map[id.KeyID]string{keyID(cs.master): pub(cs.master)}}
	signed.Signatures = map[id.UserID]map[id.KeyID]string{id.UserID(alice.user.ID): {keyID(acs.userSigning): signWith(t, acs.userSigning, signed)}}
	_, err = alice.c.UploadSignatures(ctx, &mautrix.ReqUploadSignatures{bm.UserID: {pub(cs.master): signed}})
	must(err)
	check("signature of another user's master key", last("/signatures/upload"), want(7, 5, 2))

	// A replacement: the challenge writes a session; the retry reads it and
	// the account, deletes it, then uploads as the first time.
	next := newCrossSigning(bob.user.ID)
	wantErr(t, "replacement without auth", bob.c.UploadCrossSigningKeys(ctx, next.upload(t), nil), 401, "")
	check("replacement without auth (the challenge)", last("/device_signing/upload"), want(3, 2, 1))
	must(bob.c.UploadCrossSigningKeys(ctx, next.upload(t), passwordAuth(bob.user.ID)))
	// The password check goes through the rate limits (shared/accounts).
	check("replacement with the password", last("/device_signing/upload"), want(12, 9, 9))

	// With no one-time key left: the Query finds none (tombstones only),
	// GetItem and conditional PutItem of the fallback key; the next claims
	// of the used fallback key write nothing.
	phone := login(t, st, alice.user, "PHONE", "")
	phone.upload(t, 1)
	st.Do(t, "POST", keysPath+"upload", phone.user.AccessToken, map[string]any{"fallback_keys": phone.fallbackKey(t)})
	// auth; Query of the device's partition; PutItem; the stream entry.
	check("upload of a fallback key", last("/keys/upload"), want(4, 2, 2))
	claimPhone := func() {
		t.Helper()
		_, err := bob.c.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{
			id.UserID(alice.user.ID): {phone.id(): id.KeyAlgorithmSignedCurve25519}}})
		must(err)
	}
	claimPhone()
	claimPhone()
	check("claim of a fallback key", last("/keys/claim"), want(5, 3, 2))
	claimPhone()
	check("claim of a used fallback key", last("/keys/claim"), want(4, 3, 1))

	// GetItem of the device's keys; Query of their signatures; Query of the
	// device's partition; one DeleteItem per item.
	dctx, meter := store.WithMeter(ctx)
	must(st.Server.E2EKeys.DeleteDevice(dctx, bob.user.ID, bob.user.DeviceID))
	check("DeleteDevice with 99 one-time keys, a tombstone and a signature", meter.Usage(), want(108, 11, 103))
}
