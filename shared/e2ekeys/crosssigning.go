package e2ekeys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// signingUploadRequest is the body of POST /keys/device_signing/upload.
type signingUploadRequest struct {
	MasterKey      json.RawMessage `json:"master_key"`
	SelfSigningKey json.RawMessage `json:"self_signing_key"`
	UserSigningKey json.RawMessage `json:"user_signing_key"`
	Auth           json.RawMessage `json:"auth"`
}

// keys returns the keys sent, by type, in canonical form; a null key is
// taken as absent.
func (req signingUploadRequest) keys() (map[string]string, error) {
	out := map[string]string{}
	for typ, raw := range map[string]json.RawMessage{Master: req.MasterKey, SelfSigning: req.SelfSigningKey, UserSigning: req.UserSigningKey} {
		if raw == nil || string(raw) == "null" {
			continue
		}
		doc, err := canonical(raw)
		if err != nil {
			return nil, httpapi.BadJSON("%s key: %v", typ, err)
		}
		out[typ] = doc
	}
	return out, nil
}

// crossSigningKeyShape is what a cross-signing key must hold.
type crossSigningKeyShape struct {
	UserID string            `json:"user_id"`
	Usage  []string          `json:"usage"`
	Keys   map[string]string `json:"keys"`
}

// csPublicKey returns the key ID and public key of a cross-signing key:
// its one ed25519 key, named ed25519:<public key>.
func csPublicKey(doc string) (keyID, pub string, err error) {
	var k crossSigningKeyShape
	if err := json.Unmarshal([]byte(doc), &k); err != nil || len(k.Keys) != 1 {
		return "", "", errInvalidKey
	}
	for id, value := range k.Keys {
		keyID, pub = id, value
	}
	if name, ok := strings.CutPrefix(keyID, "ed25519:"); !ok || name != pub {
		return "", "", errInvalidKey
	}
	if _, err := publicKey(pub); err != nil {
		return "", "", err
	}
	return keyID, pub, nil
}

// checkCrossSigningKey applies Synapse's checks to an uploaded key of type
// typ: the user's, for that usage, one ed25519 key named after itself; and
// for the self-signing and user-signing keys, signed by the master key.
func checkCrossSigningKey(doc, userID, typ, masterKeyID, masterPub string) error {
	var k crossSigningKeyShape
	err := json.Unmarshal([]byte(doc), &k)
	if err != nil || k.UserID != userID || !slices.Contains(k.Usage, typ) {
		return httpapi.InvalidParam("Invalid %s key", typ)
	}
	if _, _, err := csPublicKey(doc); err != nil {
		return httpapi.InvalidParam("Invalid %s key", typ)
	}
	if typ == Master {
		return nil
	}
	if err := verify(json.RawMessage(doc), userID, masterKeyID, masterPub); err != nil {
		return &httpapi.Error{Status: http.StatusBadRequest, Code: "M_INVALID_SIGNATURE",
			Message: fmt.Sprintf("Invalid signature on %s key", typ)}
	}
	return nil
}

// handleSigningUpload serves POST /_matrix/client/v3/keys/device_signing/upload.
// Keys equal to the stored ones change nothing and need no auth; keys that
// set up cross-signing (no master key stored) need none either; any other
// change needs user-interactive auth (401 with the flows until the client
// authenticates). Then, as Synapse: a key not of the user, not of its
// usage or not one ed25519 key is 400 M_INVALID_PARAM, no master key stored
// or sent 400 M_MISSING_PARAM, a self-signing or user-signing key not
// signed by the master key 400 M_INVALID_SIGNATURE; and, as the spec says,
// a public key equal to one of the user's device IDs 403 M_FORBIDDEN.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3keysdevice_signingupload
func (s *Service) handleSigningUpload(w http.ResponseWriter, r *http.Request) error {
	var req signingUploadRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	sent, err := req.keys()
	if err != nil {
		return err
	}
	me := accounts.Caller(r.Context()).UserID
	for {
		done, err := s.uploadSigningKeys(w, r, me, sent, req.Auth)
		if err != nil || done {
			return err
		}
	}
}

// uploadSigningKeys runs one attempt of an upload of cross-signing keys;
// it reports done when it answered, or not when another request set up
// cross-signing meanwhile and the upload must be looked at again (it is
// then a replacement).
func (s *Service) uploadSigningKeys(w http.ResponseWriter, r *http.Request, me string, sent map[string]string, auth json.RawMessage) (bool, error) {
	ctx := r.Context()
	stored, err := s.crossSigningKeys(ctx, me)
	if err != nil {
		return true, err
	}
	if !differ(sent, stored) {
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{})
		return true, nil
	}
	_, replacing := stored[Master]
	if replacing {
		if s.UIA == nil {
			return true, httpapi.Forbidden("cross-signing keys cannot be replaced on this server")
		}
		if !s.UIA(w, r, auth) {
			return true, nil // answered: a challenge or an auth failure
		}
	}
	if err := s.checkSigningKeys(ctx, me, sent, stored); err != nil {
		return true, err
	}
	err = s.putSigningKeys(ctx, me, sent, replacing)
	if errors.Is(err, store.ErrConflict) && !replacing {
		return false, nil
	}
	if err != nil {
		return true, err
	}
	if err := s.changed(ctx, me); err != nil {
		return true, err
	}
	if err := s.signingKeysChanged(ctx, me); err != nil {
		return true, err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{})
	return true, nil
}

// crossSigningKeys reads a user's cross-signing keys by type: one Query.
func (s *Service) crossSigningKeys(ctx context.Context, userID string) (map[string]string, error) {
	items, err := s.userKeys(ctx, userID, csPrefix)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, it := range items {
		out[strings.TrimPrefix(it.SK, csPrefix)] = it.Key
	}
	return out, nil
}

// differ reports whether a key sent is not the one stored (Synapse's
// has_different_keys): only then can the upload change anything.
func differ(sent, stored map[string]string) bool {
	for typ, doc := range sent {
		if stored[typ] != doc {
			return true
		}
	}
	return false
}

// checkSigningKeys validates the keys sent against the master key sent or
// stored, and against the user's device IDs.
func (s *Service) checkSigningKeys(ctx context.Context, userID string, sent, stored map[string]string) error {
	master, ok := sent[Master]
	if ok {
		if err := checkCrossSigningKey(master, userID, Master, "", ""); err != nil {
			return err
		}
	} else if master, ok = stored[Master]; !ok {
		return httpapi.MissingParam("No master key available")
	}
	masterKeyID, masterPub, err := csPublicKey(master)
	if err != nil {
		return fmt.Errorf("stored master key of %s: %w", userID, err)
	}
	for _, typ := range []string{SelfSigning, UserSigning} {
		if doc, ok := sent[typ]; ok {
			if err := checkCrossSigningKey(doc, userID, typ, masterKeyID, masterPub); err != nil {
				return err
			}
		}
	}
	devices, err := s.deviceNames(ctx, userID)
	if err != nil {
		return err
	}
	for _, doc := range sent {
		_, pub, _ := csPublicKey(doc)
		if _, taken := devices[pub]; taken {
			return httpapi.Forbidden("Key ID in use")
		}
	}
	return nil
}

// putSigningKeys stores the keys sent, all or none. A first master key is
// a conditional create: of two devices setting up cross-signing at once,
// one wins and the other gets ErrConflict, to be asked to authenticate as
// a replacement.
func (s *Service) putSigningKeys(ctx context.Context, userID string, sent map[string]string, replacing bool) error {
	var ops []store.Op
	for typ, doc := range sent {
		k := csKey(userID, typ)
		item := userKey{PK: k.PK, SK: k.SK, Key: doc}
		if typ == Master && !replacing {
			ops = append(ops, store.CreateOp(item))
		} else {
			ops = append(ops, store.PutOp(item))
		}
	}
	if err := s.Store.Transact(ctx, ops...); err != nil {
		return tooLarge(fmt.Errorf("set cross-signing keys: %w", err))
	}
	return nil
}

// failure is an entry of the failures of POST /keys/signatures/upload: the
// spec's errcode and error, and the status, as Synapse adds it.
type failure struct {
	Status int    `json:"status"`
	Code   string `json:"errcode"`
	Msg    string `json:"error"`
}

func fail(status int, code, format string, args ...any) *failure {
	return &failure{Status: status, Code: code, Msg: fmt.Sprintf(format, args...)}
}

func (f *failure) Error() string { return f.Msg }

var (
	errInvalidSignature = fail(http.StatusBadRequest, "M_INVALID_SIGNATURE", "Invalid signature")
	errKeyMismatch      = fail(http.StatusBadRequest, "M_UNKNOWN", "Key does not match")
	errUnknownDevice    = fail(http.StatusNotFound, "M_NOT_FOUND", "Unknown device")
)

// signatures is what POST /keys/signatures/upload stores and whom it tells.
type signatures struct {
	items    []any
	changed  []string
	failures map[string]map[string]*failure
}

func (sg *signatures) fail(userID, keyID string, f *failure) {
	if sg.failures[userID] == nil {
		sg.failures[userID] = map[string]*failure{}
	}
	sg.failures[userID][keyID] = f
}

// handleSignaturesUpload serves POST /_matrix/client/v3/keys/signatures/upload:
// signatures of the caller's devices by their self-signing key, of their
// master key by their devices, and of other users' master keys by their
// user-signing key. Each signature is checked against the stored key (the
// object signed must be it, signatures aside) and verified; one that fails
// is reported in failures under its user and key ID, in Synapse's terms
// (M_INVALID_SIGNATURE, M_NOT_FOUND for an unknown device or key, 400
// "Key does not match"), and the others are stored. A body whose entries
// are not objects is 400 M_INVALID_PARAM.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3keyssignaturesupload
func (s *Service) handleSignaturesUpload(w http.ResponseWriter, r *http.Request) error {
	var body map[string]json.RawMessage
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return err
	}
	req := map[string]map[string]json.RawMessage{}
	for userID, raw := range body {
		if err := checkIDLength("signatures", "user ID", userID); err != nil {
			return err
		}
		var keys map[string]json.RawMessage
		if err := json.Unmarshal(raw, &keys); err != nil || keys == nil {
			return httpapi.InvalidParam("Invalid parameter")
		}
		for keyID, obj := range keys {
			if len(obj) == 0 || obj[0] != '{' {
				return httpapi.InvalidParam("Invalid parameter")
			}
			// A device ID or a cross-signing public key.
			if err := checkIDLength("signatures", "device ID or key", keyID); err != nil {
				return err
			}
		}
		req[userID] = keys
	}
	me := accounts.Caller(r.Context()).UserID
	ctx := r.Context()
	sg := &signatures{failures: map[string]map[string]*failure{}}
	if own, ok := req[me]; ok && len(own) > 0 {
		if err := s.ownSignatures(ctx, me, own, sg); err != nil {
			return err
		}
	}
	delete(req, me)
	if len(req) > 0 {
		if err := s.otherSignatures(ctx, me, req, sg); err != nil {
			return err
		}
	}
	if err := s.Store.PutMany(ctx, sg.items); err != nil {
		return tooLarge(fmt.Errorf("store signatures: %w", err))
	}
	if err := s.changed(ctx, sg.changed...); err != nil {
		return err
	}
	if err := s.signaturesChanged(ctx, me, sg.items); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"failures": sg.failures})
	return nil
}

// ownKeys is the caller's keys, as signatures of their own keys need them.
type ownKeys struct {
	master, masterPub string
	sskKeyID, sskPub  string
	devices           map[string]string  // device ID to keys
	signed            map[[2]string]bool // (target, key ID) signed already
}

// ownSignatures checks signatures of the caller's own keys: devices signed
// by the self-signing key, the master key signed by devices. Cost: one
// Query of the caller's keys.
func (s *Service) ownSignatures(ctx context.Context, me string, keys map[string]json.RawMessage, sg *signatures) error {
	items, err := s.userKeys(ctx, me, userPrefix)
	if err != nil {
		return err
	}
	own := ownKeys{devices: map[string]string{}, signed: map[[2]string]bool{}}
	cs := map[string]string{}
	for _, it := range items {
		switch {
		case strings.HasPrefix(it.SK, csPrefix):
			cs[strings.TrimPrefix(it.SK, csPrefix)] = it.Key
		case strings.HasPrefix(it.SK, devPrefix):
			own.devices[strings.TrimPrefix(it.SK, devPrefix)] = it.Key
		case strings.HasPrefix(it.SK, sigPrefix):
			own.signed[[2]string{it.Target, it.KeyID}] = true
		}
	}
	var missing *failure
	switch {
	case cs[SelfSigning] == "":
		missing = fail(http.StatusNotFound, "M_NOT_FOUND", "No self_signing key found for %s", me)
	case cs[Master] == "":
		missing = fail(http.StatusNotFound, "M_NOT_FOUND", "No master key found for %s", me)
	case len(own.devices) == 0:
		missing = fail(http.StatusNotFound, "M_NOT_FOUND", "No device keys found")
	}
	if missing != nil {
		for keyID := range keys {
			sg.fail(me, keyID, missing)
		}
		return nil
	}
	if own.sskKeyID, own.sskPub, err = csPublicKey(cs[SelfSigning]); err != nil {
		return fmt.Errorf("self-signing key of %s: %w", me, err)
	}
	own.master = cs[Master]
	if _, own.masterPub, err = csPublicKey(own.master); err != nil {
		return fmt.Errorf("master key of %s: %w", me, err)
	}
	changed := false
	for keyID, obj := range keys {
		items, err := own.check(me, keyID, obj)
		var f *failure
		if errors.As(err, &f) {
			sg.fail(me, keyID, f)
			continue
		}
		if err != nil {
			return err
		}
		if len(items) > 0 {
			sg.items = append(sg.items, items...)
			changed = true
		}
	}
	if changed {
		sg.changed = append(sg.changed, me)
	}
	return nil
}

// check checks one signed object of the caller's own keys and returns the
// signature items to store (none for a signature already stored).
func (own ownKeys) check(me, keyID string, obj json.RawMessage) ([]any, error) {
	mine, ok := signaturesBy(obj, me)
	if !ok {
		return nil, errInvalidSignature
	}
	if keyID == own.masterPub {
		return own.checkMaster(me, obj, mine)
	}
	sig, ok := mine[own.sskKeyID]
	if !ok {
		return nil, errInvalidSignature
	}
	stored, ok := own.devices[keyID]
	if !ok {
		return nil, errUnknownDevice
	}
	if own.signed[[2]string{keyID, own.sskKeyID}] {
		return nil, nil // the same signature again
	}
	if err := checkSignature(obj, stored, me, own.sskKeyID, own.sskPub); err != nil {
		return nil, err
	}
	return []any{signatureItem(me, keyID, own.sskKeyID, sig)}, nil
}

// checkMaster checks signatures of the caller's master key by their
// devices: each signing key must be a key of one of their devices.
func (own ownKeys) checkMaster(me string, obj json.RawMessage, mine map[string]string) ([]any, error) {
	var items []any
	for signingKeyID, sig := range mine {
		_, deviceID, _ := strings.Cut(signingKeyID, ":")
		var dev deviceKeysShape
		if doc, ok := own.devices[deviceID]; !ok || json.Unmarshal([]byte(doc), &dev) != nil || dev.Keys[signingKeyID] == "" {
			return nil, errInvalidSignature
		}
		if err := checkSignature(obj, own.master, me, signingKeyID, dev.Keys[signingKeyID]); err != nil {
			return nil, err
		}
		if !own.signed[[2]string{own.masterPub, signingKeyID}] {
			items = append(items, signatureItem(me, own.masterPub, signingKeyID, sig))
		}
	}
	return items, nil
}

// checkSignature checks that obj is the stored key, signatures aside, and
// that signer's key keyID (an ed25519 public key) signed it.
func checkSignature(obj json.RawMessage, stored, signer, keyID, key string) error {
	a, err := signedPart(obj)
	if err != nil {
		return errKeyMismatch
	}
	b, err := signedPart(json.RawMessage(stored))
	if err != nil {
		return fmt.Errorf("stored key: %w", err)
	}
	if a != b {
		return errKeyMismatch
	}
	if verify(obj, signer, keyID, key) != nil {
		return errInvalidSignature
	}
	return nil
}

func signatureItem(userID, target, keyID, sig string) userKey {
	return userKey{PK: userPK(userID), SK: sigSK(target, keyID), Target: target, KeyID: keyID, Sig: sig}
}

// otherSignatures checks signatures of other users' master keys by the
// caller's user-signing key. Only a master key may be signed; other key IDs
// of the same user are M_NOT_FOUND. A user of another server's master key
// is asked of their server, and the signature is kept here, in their
// partition: only the signer ever sees it (queryRemote adds it). Cost: one
// GetItem of the caller's user-signing key, then per user two GetItems
// (their master key, or a federation request, and the signature already
// there).
func (s *Service) otherSignatures(ctx context.Context, me string, req map[string]map[string]json.RawMessage, sg *signatures) error {
	var usk userKey
	err := s.Store.Get(ctx, csKey(me, UserSigning), &usk)
	if errors.Is(err, store.ErrNotFound) {
		f := fail(http.StatusNotFound, "M_NOT_FOUND", "No user_signing key found for %s", me)
		for userID, keys := range req {
			for keyID := range keys {
				sg.fail(userID, keyID, f)
			}
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("user-signing key of %s: %w", me, err)
	}
	uskKeyID, uskPub, err := csPublicKey(usk.Key)
	if err != nil {
		return fmt.Errorf("user-signing key of %s: %w", me, err)
	}
	for target, keys := range req {
		item, err := s.otherSignature(ctx, me, target, keys, uskKeyID, uskPub, sg)
		if err != nil {
			return err
		}
		if item != nil {
			sg.items = append(sg.items, *item)
			sg.changed = append(sg.changed, target)
		}
	}
	return nil
}

// otherSignature checks the caller's signature of target's master key, and
// returns the item to store; nil when it failed or is stored already.
func (s *Service) otherSignature(ctx context.Context, me, target string, keys map[string]json.RawMessage, uskKeyID, uskPub string, sg *signatures) (*userKey, error) {
	failAll := func(f *failure) {
		for keyID := range keys {
			sg.fail(target, keyID, f)
		}
	}
	server, err := serverOf(target)
	if err != nil {
		failAll(fail(http.StatusBadRequest, "M_INVALID_PARAM", "%q is not a user ID", target))
		return nil, nil
	}
	var master userKey
	if server == s.ServerName {
		err = s.Store.Get(ctx, csKey(target, Master), &master)
	} else {
		master.Key, err = s.remoteMaster(ctx, target)
	}
	if errors.Is(err, store.ErrNotFound) {
		failAll(fail(http.StatusNotFound, "M_NOT_FOUND", "No master key found for %s", target))
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("master key of %s: %w", target, err)
	}
	_, pub, err := csPublicKey(master.Key)
	if err != nil {
		return nil, fmt.Errorf("master key of %s: %w", target, err)
	}
	obj, ok := keys[pub]
	if !ok {
		failAll(errUnknownDevice)
		return nil, nil
	}
	for keyID := range keys {
		if keyID != pub {
			sg.fail(target, keyID, errUnknownDevice)
		}
	}
	var have userKey
	err = s.Store.Get(ctx, store.Key{PK: userPK(target), SK: usigPrefix + me}, &have)
	if err == nil && have.Target == pub && have.KeyID == uskKeyID {
		return nil, nil // the same signature again
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("signature of %s: %w", target, err)
	}
	if err := checkSignature(obj, master.Key, me, uskKeyID, uskPub); err != nil {
		var f *failure
		if errors.As(err, &f) {
			sg.fail(target, pub, f)
			return nil, nil
		}
		return nil, err
	}
	mine, _ := signaturesBy(obj, me)
	return &userKey{PK: userPK(target), SK: usigPrefix + me, Target: pub, KeyID: uskKeyID, Sig: mine[uskKeyID]}, nil
}
