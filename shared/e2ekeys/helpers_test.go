package e2ekeys_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/crypto/goolm/account"
	"maunium.net/go/mautrix/crypto/signatures"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// password is the password servertest gives every user.
const password = "correct horse battery staple"

// device is a logged-in device with a real Olm account (goolm, pure Go):
// its keys are made and signed as a client makes them.
type device struct {
	user servertest.User
	c    *mautrix.Client
	acc  *account.Account
}

func newDevice(t *testing.T, st *servertest.Stack, u servertest.User) *device {
	t.Helper()
	acc, err := account.NewAccount()
	if err != nil {
		t.Fatal(err)
	}
	return &device{user: u, c: st.Client(t, u), acc: acc}
}

// login makes another device of u.
func login(t *testing.T, st *servertest.Stack, u servertest.User, deviceID, name string) *device {
	t.Helper()
	c, err := mautrix.NewClient(st.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Login(context.Background(), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: u.ID}, Password: password,
		DeviceID: id.DeviceID(deviceID), InitialDeviceDisplayName: name})
	if err != nil {
		t.Fatalf("login %s: %v", u.ID, err)
	}
	return newDevice(t, st, servertest.User{ID: u.ID, DeviceID: string(resp.DeviceID), AccessToken: resp.AccessToken})
}

func (d *device) id() id.DeviceID { return id.DeviceID(d.user.DeviceID) }

func (d *device) ed25519() id.Ed25519 {
	ed, _, _ := d.acc.IdentityKeys()
	return ed
}

// sign signs v as the spec's Signing JSON says, with the device's key.
func (d *device) sign(t *testing.T, v any) string {
	t.Helper()
	sig, err := d.acc.Sign(signable(t, v))
	if err != nil {
		t.Fatal(err)
	}
	return string(sig)
}

// signable is v in canonical JSON without signatures and unsigned.
func signable(t *testing.T, v any) []byte {
	t.Helper()
	doc, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(doc, &obj); err != nil {
		t.Fatal(err)
	}
	delete(obj, "signatures")
	delete(obj, "unsigned")
	doc, _ = json.Marshal(obj)
	out, err := canonicaljson.CanonicalJSON(doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// deviceKeys are the device's identity keys, signed by itself.
func (d *device) deviceKeys(t *testing.T) *mautrix.DeviceKeys {
	t.Helper()
	ed, curve, _ := d.acc.IdentityKeys()
	dk := &mautrix.DeviceKeys{
		UserID: id.UserID(d.user.ID), DeviceID: d.id(),
		Algorithms: []id.Algorithm{id.AlgorithmOlmV1, id.AlgorithmMegolmV1},
		Keys: mautrix.KeyMap{
			id.NewDeviceKeyID(id.KeyAlgorithmEd25519, d.id()):    string(ed),
			id.NewDeviceKeyID(id.KeyAlgorithmCurve25519, d.id()): string(curve),
		},
	}
	dk.Signatures = signatures.NewSingleSignature(dk.UserID, id.KeyAlgorithmEd25519, string(d.id()), d.sign(t, dk))
	return dk
}

// oneTimeKeys makes n new signed one-time keys.
func (d *device) oneTimeKeys(t *testing.T, n int) map[id.KeyID]mautrix.OneTimeKey {
	t.Helper()
	if err := d.acc.GenOneTimeKeys(uint(n)); err != nil {
		t.Fatal(err)
	}
	keys, _ := d.acc.OneTimeKeys()
	d.acc.MarkKeysAsPublished()
	out := map[id.KeyID]mautrix.OneTimeKey{}
	for keyID, key := range keys {
		out[id.NewKeyID(id.KeyAlgorithmSignedCurve25519, keyID)] = d.signedKey(t, key, false)
	}
	return out
}

// fallbackKey makes a new signed fallback key, as a raw upload body's
// fallback_keys (mautrix's request type has none).
func (d *device) fallbackKey(t *testing.T) map[string]any {
	t.Helper()
	if err := d.acc.GenFallbackKey(); err != nil {
		t.Fatal(err)
	}
	out := map[string]any{}
	for keyID, key := range d.acc.FallbackKeyUnpublished() {
		out["signed_curve25519:"+keyID] = d.signedKey(t, key, true)
	}
	d.acc.MarkKeysAsPublished()
	return out
}

func (d *device) signedKey(t *testing.T, key id.Curve25519, fallback bool) mautrix.OneTimeKey {
	k := mautrix.OneTimeKey{Key: key, Fallback: fallback, IsSigned: true}
	k.Signatures = signatures.NewSingleSignature(id.UserID(d.user.ID), id.KeyAlgorithmEd25519, string(d.id()), d.sign(t, k))
	return k
}

// upload uploads the device's keys and n one-time keys, and returns the
// signed_curve25519 count.
func (d *device) upload(t *testing.T, n int) int {
	t.Helper()
	resp, err := d.c.UploadKeys(context.Background(), &mautrix.ReqUploadKeys{DeviceKeys: d.deviceKeys(t), OneTimeKeys: d.oneTimeKeys(t, n)})
	if err != nil {
		t.Fatalf("upload keys of %s: %v", d.user.DeviceID, err)
	}
	return resp.OneTimeKeyCounts.SignedCurve25519
}

// crossSigning is a user's three cross-signing key pairs.
type crossSigning struct {
	userID                    id.UserID
	master, self, userSigning ed25519.PrivateKey
}

func newCrossSigning(userID string) *crossSigning {
	key := func() ed25519.PrivateKey { _, k, _ := ed25519.GenerateKey(rand.Reader); return k }
	return &crossSigning{userID: id.UserID(userID), master: key(), self: key(), userSigning: key()}
}

func pub(k ed25519.PrivateKey) string {
	return base64.RawStdEncoding.EncodeToString(k.Public().(ed25519.PublicKey))
}

func keyID(k ed25519.PrivateKey) id.KeyID { return id.KeyID("ed25519:" + pub(k)) }

// signWith signs v with a cross-signing key.
func signWith(t *testing.T, k ed25519.PrivateKey, v any) string {
	t.Helper()
	return base64.RawStdEncoding.EncodeToString(ed25519.Sign(k, signable(t, v)))
}

func (cs *crossSigning) key(t *testing.T, k ed25519.PrivateKey, usage id.CrossSigningUsage) mautrix.CrossSigningKeys {
	t.Helper()
	out := mautrix.CrossSigningKeys{UserID: cs.userID, Usage: []id.CrossSigningUsage{usage},
		Keys: map[id.KeyID]id.Ed25519{keyID(k): id.Ed25519(pub(k))}}
	if usage != id.XSUsageMaster {
		out.Signatures = signatures.Signatures{cs.userID: {id.KeyID(keyID(cs.master)): signWith(t, cs.master, out)}}
	}
	return out
}

// upload is the body of POST /keys/device_signing/upload.
func (cs *crossSigning) upload(t *testing.T) *mautrix.UploadCrossSigningKeysReq[any] {
	t.Helper()
	return &mautrix.UploadCrossSigningKeysReq[any]{
		Master:      cs.key(t, cs.master, id.XSUsageMaster),
		SelfSigning: cs.key(t, cs.self, id.XSUsageSelfSigning),
		UserSigning: cs.key(t, cs.userSigning, id.XSUsageUserSigning),
	}
}

// passwordAuth answers a user-interactive auth challenge with the password.
func passwordAuth(userID string) mautrix.UIACallback {
	return func(resp *mautrix.RespUserInteractive) any {
		return &mautrix.ReqUIAuthLogin{BaseAuthData: mautrix.BaseAuthData{Type: mautrix.AuthTypePassword, Session: resp.Session},
			User: userID, Password: password}
	}
}

// errcode is the Matrix errcode and status of a client error.
func errcode(err error) (int, string) {
	var he mautrix.HTTPError
	if errors.As(err, &he) && he.RespError != nil {
		return he.Response.StatusCode, he.RespError.ErrCode
	}
	if errors.As(err, &he) && he.Response != nil {
		return he.Response.StatusCode, ""
	}
	return 0, fmt.Sprint(err)
}

// wantErr fails unless err is a Matrix error with that status and errcode.
func wantErr(t *testing.T, what string, err error, status int, code string) {
	t.Helper()
	if gotStatus, gotCode := errcode(err); gotStatus != status || gotCode != code {
		t.Fatalf("%s: got %d %s, want %d %s", what, gotStatus, gotCode, status, code)
	}
}
