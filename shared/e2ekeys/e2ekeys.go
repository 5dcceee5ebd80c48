// Package e2ekeys holds the public keys of end-to-end encryption (the spec's
// "End-to-End Encryption" module, key distribution and cross-signing): the
// identity keys of each device, its one-time and fallback keys, and each
// user's cross-signing keys with the signatures made on them. The server
// only stores and hands out these keys; it never sees a private key. The
// server's own signing key is another matter, in shared/keys.
//
// Storage (docs/storage.md, "Device keys and cross-signing"): two kinds of
// partition.
//
// e2ekeys|<user ID>, everything /keys/query shows of a user, under k|:
//
//   - k|cs|master, k|cs|self_signing, k|cs|user_signing: the cross-signing
//     keys as uploaded (canonical JSON text);
//   - k|dev|<device ID>: a device's identity keys as uploaded;
//   - k|sig|<target>|<signing key ID>: a signature the user added later
//     (POST /keys/signatures/upload): by their self-signing key on one of
//     their devices (target: the device ID), or by one of their devices on
//     their master key (target: the master public key);
//   - k|usig|<signer>: the signature another user's user-signing key made on
//     this user's master key, shown only to that signer.
//
// So /keys/query reads a user with one Query of k|.
//
// otk|<user ID>|<device ID>, a device's keys for starting Olm sessions:
//
//   - key|<algorithm>|<key ID>: a one-time key, with its upload time; once
//     claimed it stays an hour as a tombstone (claimed, with a TTL), so that
//     a late retry of its upload cannot bring it back to be handed out again;
//   - fallback|<algorithm>: the fallback key of an algorithm and whether it
//     was handed out since it was uploaded.
//
// So the counts /sync shows a device are one Query of its partition.
//
// A one-time key is handed out by a conditional write that turns it into a
// tombstone only if it is not one yet: DynamoDB lets one claimer of a key
// win, however many processes claim at once. An upload creates each new key
// with a conditional create, so a key ID is stored once.
//
// Device IDs hold no '|' (accounts refuses them); in keys, '%' and '|' of an
// algorithm are written %25 and %7C, and the part that comes last (a key ID,
// a signer) needs no escape, so every key parses one way.
package e2ekeys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// SignedCurve25519 is the algorithm of Olm's one-time and fallback keys.
const SignedCurve25519 = "signed_curve25519"

// Cross-signing key types, as the spec names their usage.
const (
	Master      = "master"
	SelfSigning = "self_signing"
	UserSigning = "user_signing"
)

// tombstoneTTL is how long a claimed one-time key is remembered: longer
// than any request runs (API Gateway stops at 30 s), so that an upload of
// the key that started before the claim cannot store it again.
const tombstoneTTL = time.Hour

// maxKeyPart bounds an algorithm or a key ID, so that a sort key (key|, an
// algorithm escaped, at most three times longer, |, a key ID) stays within
// DynamoDB's 1,024 bytes.
const maxKeyPart = 250

// maxIDBytes bounds the user IDs and device IDs a request names: the
// spec's 255 bytes for user IDs, and as much for device IDs (no longer one
// is ever given out). They become parts of the table's keys, so they are
// checked before anything is read.
const maxIDBytes = 255

// parallel is how many users or devices one request reads or writes at
// once: the work waits on DynamoDB round trips, not on this process.
const parallel = 8

// Service stores and serves the end-to-end encryption keys of local users.
type Service struct {
	Store      *store.Store
	ServerName string
	// Devices lists a local user's devices, device ID to display name
	// (accounts.Service.DeviceNames). Keys of a device not listed are never
	// shown, as Synapse shows only keys of existing devices.
	Devices func(ctx context.Context, userID string) (map[string]string, error)
	// UIA runs user-interactive auth for the caller of r, auth being the
	// request's `auth` object; it reports whether the request may go on and,
	// when not, has answered (accounts.Service.PasswordUIA). Replacing
	// cross-signing keys needs it.
	UIA func(w http.ResponseWriter, r *http.Request, auth json.RawMessage) bool
	// Changed, when set, runs after a user's device keys or cross-signing
	// keys (or the signatures on them) changed, so that the users who share
	// a room with them hear of it (device_lists.changed in /sync): new or
	// changed device keys, a device with keys deleted, new cross-signing
	// keys, signatures of the user's devices or master key. For a signature
	// by a user's user-signing key on another user's master key it runs for
	// that other user, whose keys the signer's other devices must fetch
	// again. It may run for changes only the user can see (their
	// user-signing key); an extra device_lists entry costs a client one
	// /keys/query. An error fails the request, after the change is stored.
	Changed func(ctx context.Context, userID string) error
	// CountsChanged, when set, runs after a request changed the one-time
	// or fallback keys of devices (by user): an upload by the device, a
	// claim by anyone; so that their syncs carry the new counts, and the
	// devices upload more keys when they run low.
	CountsChanged func(ctx context.Context, devices map[string][]string) error
	// Uploading, when set, is told that a device's upload of one-time or
	// fallback keys begins, and returns the function that says it ended
	// (sync.Service.Uploading).
	Uploading func(userID, deviceID string) (done func())
	// Remote asks other servers for their users' keys (fedclient.Client);
	// nil reports those servers in failures.
	Remote Remote
	// SendEDU sends an EDU to other servers (sender.Sender.SendEDU); nil
	// keeps local users' key changes from other servers.
	SendEDU func(ctx context.Context, destinations []string, eduType string, content json.RawMessage) error
	// Servers lists the servers that share a room with a local user: where
	// changes of their keys go.
	Servers func(ctx context.Context, userID string) ([]string, error)
	// RemoteChanged, when set, tells the local users who share a room with
	// a user of another server, joined to rooms here, that its devices or
	// cross-signing keys changed (sync.Service.RemoteDeviceListChanged).
	RemoteChanged func(ctx context.Context, userID string, rooms []string) error
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// changed tells Changed about users, once each.
func (s *Service) changed(ctx context.Context, users ...string) error {
	if s.Changed == nil {
		return nil
	}
	seen := map[string]bool{}
	for _, u := range users {
		if seen[u] {
			continue
		}
		seen[u] = true
		if err := s.Changed(ctx, u); err != nil {
			return fmt.Errorf("keys of %s changed: %w", u, err)
		}
	}
	return nil
}

// userKey is an item of the partition e2ekeys|<user ID>: a device's keys or
// a cross-signing key (Key set), or a signature (Sig set).
type userKey struct {
	PK string `dynamodbav:"pk"`
	SK string `dynamodbav:"sk"`
	// Key is the uploaded JSON object in canonical form.
	Key string `dynamodbav:"key,omitempty"`
	// Sig, with KeyID and Target, is a signature added later.
	Sig    string `dynamodbav:"sig,omitempty"`
	KeyID  string `dynamodbav:"key_id,omitempty"`
	Target string `dynamodbav:"target,omitempty"`
}

func userPK(userID string) string { return "e2ekeys|" + userID }

const (
	userPrefix  = "k|"
	csPrefix    = "k|cs|"
	devPrefix   = "k|dev|"
	sigPrefix   = "k|sig|"
	usigPrefix  = "k|usig|"
	otkPrefix   = "key|"
	fbackPrefix = "fallback|"
)

func csKey(userID, keyType string) store.Key {
	return store.Key{PK: userPK(userID), SK: csPrefix + keyType}
}

func devKey(userID, deviceID string) store.Key {
	return store.Key{PK: userPK(userID), SK: devPrefix + deviceID}
}

func sigSK(target, keyID string) string { return sigPrefix + target + "|" + keyID }

// deviceKey is an item of the partition otk|<user ID>|<device ID>: a
// one-time key or a fallback key.
type deviceKey struct {
	PK string `dynamodbav:"pk"`
	SK string `dynamodbav:"sk"`
	// Key is the key as uploaded: a JSON object (signed keys) or string.
	Key string `dynamodbav:"key"`
	// Uploaded (Unix ms) orders one-time keys: the spec hands them out in
	// the order of their uploads.
	Uploaded int64 `dynamodbav:"ts,omitempty"`
	// Claimed marks a one-time key handed out; the claim's condition is
	// that it is still false, so it is always written.
	Claimed bool  `dynamodbav:"claimed"`
	Expires int64 `dynamodbav:"expires_at,omitempty"`
	// KeyID and Used belong to fallback keys.
	KeyID string `dynamodbav:"key_id,omitempty"`
	Used  bool   `dynamodbav:"used,omitempty"`
}

func otkPK(userID, deviceID string) string { return "otk|" + userID + "|" + deviceID }

func otkSK(algorithm, keyID string) string {
	return otkPrefix + escape(algorithm) + "|" + keyID
}

func fallbackKey(userID, deviceID, algorithm string) store.Key {
	return store.Key{PK: otkPK(userID, deviceID), SK: fbackPrefix + escape(algorithm)}
}

var escaper = strings.NewReplacer("%", "%25", "|", "%7C")
var unescaper = strings.NewReplacer("%7C", "|", "%25", "%")

func escape(s string) string   { return escaper.Replace(s) }
func unescape(s string) string { return unescaper.Replace(s) }

// parseOTKSK returns the algorithm and key ID of a one-time key's sort key.
func parseOTKSK(sk string) (algorithm, keyID string, ok bool) {
	alg, id, ok := strings.Cut(strings.TrimPrefix(sk, otkPrefix), "|")
	return unescape(alg), id, ok && strings.HasPrefix(sk, otkPrefix)
}

// deviceKeys reads the items of a device's partition of one-time and
// fallback keys under prefix ("" for all).
func (s *Service) deviceKeys(ctx context.Context, userID, deviceID, prefix string) ([]deviceKey, error) {
	var all []deviceKey
	q := store.Query{PK: otkPK(userID, deviceID), Prefix: prefix}
	for {
		var page []deviceKey
		next, err := s.Store.QueryPage(ctx, q, &page)
		if err != nil {
			return nil, fmt.Errorf("read one-time keys: %w", err)
		}
		all = append(all, page...)
		if next == "" {
			return all, nil
		}
		q.Cursor = next
	}
}

// userKeys reads the items of a user's partition under prefix; under
// userPrefix, everything /keys/query shows of them.
func (s *Service) userKeys(ctx context.Context, userID, prefix string) ([]userKey, error) {
	var all []userKey
	q := store.Query{PK: userPK(userID), Prefix: prefix}
	for {
		var page []userKey
		next, err := s.Store.QueryPage(ctx, q, &page)
		if err != nil {
			return nil, fmt.Errorf("read keys of %s: %w", userID, err)
		}
		all = append(all, page...)
		if next == "" {
			return all, nil
		}
		q.Cursor = next
	}
}

// Counts is what /sync tells a device about its keys on the server.
type Counts struct {
	// OneTimeKeys is the number of unclaimed one-time keys by algorithm
	// (device_one_time_keys_count); signed_curve25519 is always there, as
	// in Synapse, so that a client with none left learns it.
	OneTimeKeys map[string]int `json:"device_one_time_keys_count"`
	// UnusedFallbackKeyTypes lists the algorithms whose fallback key was not
	// handed out since it was uploaded (device_unused_fallback_key_types);
	// never nil, as the spec requires the field.
	UnusedFallbackKeyTypes []string `json:"device_unused_fallback_key_types"`
}

// Counts returns the counts /sync shows a device. Cost: one strongly
// consistent Query of the device's key partition, 1 RCU per 4 KB: about 14
// signed_curve25519 keys, so 4 RCU for the 50 keys a client usually keeps
// (tombstones of claimed keys add about 280 bytes each until DynamoDB's TTL
// removes them). Strongly consistent, because a client that is told too few
// keys uploads more and may then drop private keys the server still hands
// out. It is cheap only next to what it saves: ask for it when the device's
// keys may have changed, not at every poll.
func (s *Service) Counts(ctx context.Context, userID, deviceID string) (Counts, error) {
	items, err := s.deviceKeys(ctx, userID, deviceID, "")
	if err != nil {
		return Counts{}, err
	}
	return countKeys(items), nil
}

func countKeys(items []deviceKey) Counts {
	c := Counts{OneTimeKeys: map[string]int{SignedCurve25519: 0}, UnusedFallbackKeyTypes: []string{}}
	for _, it := range items {
		switch {
		case strings.HasPrefix(it.SK, otkPrefix):
			if alg, _, ok := parseOTKSK(it.SK); ok && !it.Claimed {
				c.OneTimeKeys[alg]++
			}
		case strings.HasPrefix(it.SK, fbackPrefix):
			if !it.Used {
				c.UnusedFallbackKeyTypes = append(c.UnusedFallbackKeyTypes, unescape(strings.TrimPrefix(it.SK, fbackPrefix)))
			}
		}
	}
	return c
}

// DeviceRenamed tells of a new display name of a device with keys: the
// local users who share a room with its user through Changed, other
// servers by an m.device_list_update (without the name, which view keeps
// from them) so that their clients read the device again, as Synapse
// does. It is accounts' DeviceRenamed hook. Cost: a GetItem of the
// device's keys; with keys, Changed and devicesChanged.
func (s *Service) DeviceRenamed(ctx context.Context, userID, deviceID string) error {
	var dev userKey
	err := s.Store.Get(ctx, devKey(userID, deviceID), &dev)
	if errors.Is(err, store.ErrNotFound) {
		return nil // no keys: nobody knows of the device
	}
	if err != nil {
		return fmt.Errorf("rename of device %s: %w", deviceID, err)
	}
	if err := s.changed(ctx, userID); err != nil {
		return err
	}
	return s.devicesChanged(ctx, userID, []string{deviceID}, false)
}

// DeleteDevice deletes a device's keys: its identity keys, the signatures
// on them, its one-time and fallback keys. It is accounts' DeviceDeleted
// hook, run after a device is deleted or logged out. When the device had
// identity keys, the users who share a room hear of it through Changed.
// Cost: a Query of the device's key partition and one of the user's
// signatures of the device, then one DeleteItem per item (1 WCU each).
func (s *Service) DeleteDevice(ctx context.Context, userID, deviceID string) error {
	keys := []store.Key{devKey(userID, deviceID)}
	var dev userKey
	err := s.Store.Get(ctx, devKey(userID, deviceID), &dev)
	hadKeys := err == nil
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("delete keys of device %s: %w", deviceID, err)
	}
	if hadKeys {
		sigs, err := s.userKeys(ctx, userID, sigPrefix+deviceID+"|")
		if err != nil {
			return fmt.Errorf("delete keys of device %s: %w", deviceID, err)
		}
		for _, sg := range sigs {
			keys = append(keys, store.Key{PK: sg.PK, SK: sg.SK})
		}
	}
	otks, err := s.deviceKeys(ctx, userID, deviceID, "")
	if err != nil {
		return fmt.Errorf("delete keys of device %s: %w", deviceID, err)
	}
	for _, k := range otks {
		keys = append(keys, store.Key{PK: k.PK, SK: k.SK})
	}
	if err := s.Store.DeleteEach(ctx, keys); err != nil {
		return fmt.Errorf("delete keys of device %s: %w", deviceID, err)
	}
	if hadKeys {
		if err := s.changed(ctx, userID); err != nil {
			return err
		}
		return s.devicesChanged(ctx, userID, []string{deviceID}, true)
	}
	return nil
}
