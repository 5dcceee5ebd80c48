package e2ekeys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// uploadRequest is the body of POST /keys/upload. The keys stay raw: they
// are stored as the client signed them.
type uploadRequest struct {
	DeviceKeys   json.RawMessage            `json:"device_keys"`
	OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys"`
	FallbackKeys map[string]json.RawMessage `json:"fallback_keys"`
}

// deviceKeysShape is what the spec requires of device_keys; the object is
// stored whole, with any other fields.
type deviceKeysShape struct {
	UserID     *string                      `json:"user_id"`
	DeviceID   *string                      `json:"device_id"`
	Algorithms []string                     `json:"algorithms"`
	Keys       map[string]string            `json:"keys"`
	Signatures map[string]map[string]string `json:"signatures"`
}

// keyObjectShape is what the spec requires of a signed one-time or
// fallback key.
type keyObjectShape struct {
	Key        *string                      `json:"key"`
	Fallback   *bool                        `json:"fallback"`
	Signatures map[string]map[string]string `json:"signatures"`
}

// newKey is an uploaded one-time or fallback key.
type newKey struct {
	algorithm, id string
	json          string // canonical
}

func (k newKey) name() string { return k.algorithm + ":" + k.id }

// handleUpload serves POST /_matrix/client/v3/keys/upload: the caller's
// device keys, one-time keys and fallback keys. Everything is checked
// before anything is written (but for a key ID that another upload of the
// device stores meanwhile). device_keys for another user or device is
// 400 M_BAD_JSON, as in Synapse; so is a key name that is not
// <algorithm>:<key ID>. A one-time key ID uploaded again with other content
// is refused with Synapse's 400 M_UNKNOWN; with the same content (another
// signature allowed) it is ignored, as Synapse does.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3keysupload
func (s *Service) handleUpload(w http.ResponseWriter, r *http.Request) error {
	me := accounts.Caller(r.Context())
	if me.DeviceID == "" {
		return httpapi.Errorf(http.StatusBadRequest, "M_UNKNOWN", "To upload keys, you must pass device_id when authenticating")
	}
	var req uploadRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	dev, err := checkDeviceKeys(req.DeviceKeys, me)
	if err != nil {
		return err
	}
	otks, err := parseKeys("one_time_keys", req.OneTimeKeys)
	if err != nil {
		return err
	}
	fallbacks, err := parseKeys("fallback_keys", req.FallbackKeys)
	if err != nil {
		return err
	}
	for i := 1; i < len(fallbacks); i++ {
		if fallbacks[i].algorithm == fallbacks[i-1].algorithm {
			return httpapi.InvalidParam("fallback_keys holds more than one key of algorithm %q", fallbacks[i].algorithm)
		}
	}
	// The one-time keys first: a reused key ID refuses the upload before
	// anything is written.
	ctx := r.Context()
	if s.Uploading != nil && len(otks)+len(fallbacks) > 0 {
		defer s.Uploading(me.UserID, me.DeviceID)()
	}
	counts, err := s.addKeys(ctx, me.UserID, me.DeviceID, otks, fallbacks)
	if err != nil {
		return tooLarge(err)
	}
	if len(otks)+len(fallbacks) > 0 {
		if err := s.countsChanged(ctx, map[string][]string{me.UserID: {me.DeviceID}}); err != nil {
			return err
		}
	}
	if dev != "" {
		changed, err := s.setDeviceKeys(ctx, me.UserID, me.DeviceID, dev)
		if err != nil {
			return tooLarge(err)
		}
		if changed {
			if err := s.changed(ctx, me.UserID); err != nil {
				return err
			}
			if err := s.devicesChanged(ctx, me.UserID, []string{me.DeviceID}, false); err != nil {
				return err
			}
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"one_time_key_counts": counts.OneTimeKeys})
	return nil
}

// tooLarge answers a key over DynamoDB's 400 KB item limit with 413.
func tooLarge(err error) error {
	if errors.Is(err, store.ErrItemTooLarge) {
		return httpapi.TooLarge("a key is too large to store")
	}
	return err
}

// checkDeviceKeys validates device_keys for the caller and returns them in
// canonical form; "" when absent.
func checkDeviceKeys(raw json.RawMessage, me accounts.Session) (string, error) {
	if raw == nil {
		return "", nil
	}
	if string(raw) == "null" {
		return "", httpapi.BadJSON("device_keys must not be null")
	}
	var dk deviceKeysShape
	if err := json.Unmarshal(raw, &dk); err != nil {
		return "", httpapi.BadJSON("device_keys has the wrong shape: %v", err)
	}
	switch {
	case dk.UserID == nil || dk.DeviceID == nil || dk.Algorithms == nil || dk.Keys == nil || dk.Signatures == nil:
		return "", httpapi.BadJSON("device_keys needs user_id, device_id, algorithms, keys and signatures")
	case *dk.UserID != me.UserID:
		return "", httpapi.BadJSON("Provided `user_id` in `device_keys` does not match that of the authenticated user")
	case *dk.DeviceID != me.DeviceID:
		return "", httpapi.BadJSON("Provided `device_id` in `device_keys` does not match that of the authenticated user device")
	}
	doc, err := canonical(raw)
	if err != nil {
		return "", httpapi.BadJSON("device_keys: %v", err)
	}
	return doc, nil
}

// parseKeys validates one_time_keys or fallback_keys: names
// <algorithm>:<key ID>, values a string or a signed key object. It returns
// them sorted by name.
func parseKeys(field string, keys map[string]json.RawMessage) ([]newKey, error) {
	out := make([]newKey, 0, len(keys))
	for name, raw := range keys {
		alg, id, ok := strings.Cut(name, ":")
		if !ok || alg == "" || id == "" || strings.Contains(id, ":") {
			return nil, httpapi.BadJSON("Invalid %s key %q. Expected \"<algorithm>:<key_id>\".", field, name)
		}
		if len(alg) > maxKeyPart || len(id) > maxKeyPart {
			return nil, httpapi.InvalidParam("%s: algorithms and key IDs must be at most %d bytes", field, maxKeyPart)
		}
		if err := checkKeyValue(raw); err != nil {
			return nil, httpapi.BadJSON("%s: %s: %v", field, name, err)
		}
		doc, err := canonical(raw)
		if err != nil {
			return nil, httpapi.BadJSON("%s: %s: %v", field, name, err)
		}
		out = append(out, newKey{algorithm: alg, id: id, json: doc})
	}
	slices.SortFunc(out, func(a, b newKey) int { return strings.Compare(a.name(), b.name()) })
	return out, nil
}

// checkKeyValue accepts a key as a string (curve25519) or as a signed
// object with key and signatures.
func checkKeyValue(raw json.RawMessage) error {
	var str string
	if json.Unmarshal(raw, &str) == nil {
		return nil
	}
	var obj keyObjectShape
	if err := json.Unmarshal(raw, &obj); err != nil {
		return fmt.Errorf("a key is a string or an object with key and signatures: %w", err)
	}
	if obj.Key == nil || obj.Signatures == nil {
		return errors.New("a signed key needs key and signatures")
	}
	return nil
}

// setDeviceKeys stores a device's identity keys and reports whether they
// changed: an upload of the same keys again changes nothing, as in Synapse,
// so that clients that upload them at each start tell nobody.
func (s *Service) setDeviceKeys(ctx context.Context, userID, deviceID, doc string) (bool, error) {
	var old userKey
	err := s.Store.Get(ctx, devKey(userID, deviceID), &old)
	if err == nil && old.Key == doc {
		return false, nil
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return false, fmt.Errorf("set device keys: %w", err)
	}
	k := devKey(userID, deviceID)
	if err := s.Store.Put(ctx, userKey{PK: k.PK, SK: k.SK, Key: doc}); err != nil {
		return false, fmt.Errorf("set device keys: %w", err)
	}
	return true, nil
}

// addKeys stores new one-time keys and fallback keys of a device and
// returns its counts. It reads the device's partition once: the keys there
// decide which uploaded ones are new, and give the counts. Each new
// one-time key is a conditional create of its own item, so that two
// uploads of one key (a client's retry) store it once.
func (s *Service) addKeys(ctx context.Context, userID, deviceID string, otks, fallbacks []newKey) (Counts, error) {
	items, err := s.deviceKeys(ctx, userID, deviceID, "")
	if err != nil {
		return Counts{}, err
	}
	have := make(map[string]deviceKey, len(items))
	for _, it := range items {
		have[it.SK] = it
	}
	now := s.now().UnixMilli()
	var creates []deviceKey
	for _, k := range otks {
		sk := otkSK(k.algorithm, k.id)
		if old, ok := have[sk]; ok {
			if err := sameOneTimeKey(k, old.Key); err != nil {
				return Counts{}, err
			}
			continue
		}
		creates = append(creates, deviceKey{PK: otkPK(userID, deviceID), SK: sk, Key: k.json, Uploaded: now})
	}
	var puts []deviceKey
	for _, k := range fallbacks {
		fk := fallbackKey(userID, deviceID, k.algorithm)
		// The same key again leaves its used flag as it is (Synapse).
		if old, ok := have[fk.SK]; ok && old.KeyID == k.id && old.Key == k.json {
			continue
		}
		puts = append(puts, deviceKey{PK: fk.PK, SK: fk.SK, KeyID: k.id, Key: k.json})
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for _, k := range creates {
		g.Go(func() error { return s.createOneTimeKey(gctx, k) })
	}
	if err := g.Wait(); err != nil {
		return Counts{}, err
	}
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for _, k := range puts {
		g.Go(func() error { return s.Store.Put(gctx, k) })
	}
	if err := g.Wait(); err != nil {
		return Counts{}, fmt.Errorf("set fallback keys: %w", err)
	}
	for _, it := range append(creates, puts...) {
		have[it.SK] = it
	}
	var all []deviceKey
	for _, it := range have {
		all = append(all, it)
	}
	return countKeys(all), nil
}

// createOneTimeKey stores a new one-time key unless its ID was stored
// since the partition was read: then the stored one must be the same key.
func (s *Service) createOneTimeKey(ctx context.Context, k deviceKey) error {
	err := s.Store.Create(ctx, k)
	if !errors.Is(err, store.ErrExists) {
		return err
	}
	var old deviceKey
	if err := s.Store.Get(ctx, store.Key{PK: k.PK, SK: k.SK}, &old); err != nil {
		return fmt.Errorf("read one-time key: %w", err)
	}
	alg, id, _ := parseOTKSK(k.SK)
	return sameOneTimeKey(newKey{algorithm: alg, id: id, json: k.Key}, old.Key)
}

// sameOneTimeKey accepts a one-time key uploaded again if it is the stored
// key, signatures aside (a client may sign it again), as Synapse does.
func sameOneTimeKey(k newKey, stored string) error {
	a, err := signedPart(json.RawMessage(stored))
	if err != nil {
		return fmt.Errorf("stored one-time key %s: %w", k.name(), err)
	}
	b, err := signedPart(json.RawMessage(k.json))
	if err != nil {
		return httpapi.BadJSON("one_time_keys: %s: %v", k.name(), err)
	}
	if a != b {
		return httpapi.Errorf(http.StatusBadRequest, "M_UNKNOWN",
			"One time key %s already exists. Old key: %s; new key: %s", k.name(), stored, k.json)
	}
	return nil
}
