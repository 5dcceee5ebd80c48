// Package keys holds the server's ed25519 signing key, in the file format
// Synapse uses ("ed25519 <version> <unpadded base64 seed>"), so that a key can
// move between the two, and publishes it as the spec's server keys document.
package keys

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/protocol"
)

// Key is a signing key and its key ID, such as "ed25519:a_Xy12".
type Key struct {
	ID      string
	Private ed25519.PrivateKey
}

// Public returns the verify key.
func (k Key) Public() ed25519.PublicKey { return k.Private.Public().(ed25519.PublicKey) }

// Generate makes a new key with a random version.
func Generate() (Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Key{}, fmt.Errorf("generate signing key: %w", err)
	}
	var v [3]byte
	rand.Read(v[:])
	version := "a_" + base64.RawURLEncoding.EncodeToString(v[:])
	return Key{ID: "ed25519:" + version, Private: priv}, nil
}

// Parse reads the first key of a Synapse-format signing key file.
func Parse(text string) (Key, error) {
	for _, line := range strings.Split(text, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		if len(fields) != 3 || fields[0] != "ed25519" {
			return Key{}, errors.New("signing key: want a line \"ed25519 <version> <base64 seed>\"")
		}
		seed, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(fields[2], "="))
		if err != nil || len(seed) != ed25519.SeedSize {
			return Key{}, errors.New("signing key: the seed is not 32 bytes of base64")
		}
		return Key{ID: "ed25519:" + fields[1], Private: ed25519.NewKeyFromSeed(seed)}, nil
	}
	return Key{}, errors.New("signing key: no key in the text")
}

// Format writes k the way Parse reads it.
func (k Key) Format() string {
	version := strings.TrimPrefix(k.ID, "ed25519:")
	return fmt.Sprintf("ed25519 %s %s\n", version, base64.RawStdEncoding.EncodeToString(k.Private.Seed()))
}

// LoadOrCreate reads the key file at path, or creates it (mode 0600, parent
// folders too) with a new key on first start. The key must then be kept:
// other servers cache it, and events signed with it are verified against it.
func LoadOrCreate(path string) (Key, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		k, err := Parse(string(data))
		if err != nil {
			return Key{}, fmt.Errorf("%s: %w", path, err)
		}
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return Key{}, fmt.Errorf("read signing key: %w", err)
	}
	k, err := Generate()
	if err != nil {
		return Key{}, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return Key{}, fmt.Errorf("create signing key folder: %w", err)
	}
	// O_EXCL: if two processes start at once, one key wins and the other reads it.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return LoadOrCreate(path)
	}
	if err != nil {
		return Key{}, fmt.Errorf("create signing key: %w", err)
	}
	if _, err := f.WriteString(k.Format()); err != nil {
		f.Close()
		return Key{}, fmt.Errorf("write signing key: %w", err)
	}
	if err := f.Close(); err != nil {
		return Key{}, fmt.Errorf("write signing key: %w", err)
	}
	return k, nil
}

// Validity is how long other servers may use a published key without asking
// again: Synapse's default key refresh interval.
const Validity = 24 * time.Hour

// ServerKeys is the signed response of GET /_matrix/key/v2/server: the verify
// key, its validity and the server's signature over the document.
func ServerKeys(serverName string, k Key, now time.Time) ([]byte, error) {
	doc := map[string]any{
		"server_name":     serverName,
		"valid_until_ts":  now.Add(Validity).UnixMilli(),
		"verify_keys":     map[string]any{k.ID: map[string]string{"key": base64.RawStdEncoding.EncodeToString(k.Public())}},
		"old_verify_keys": map[string]any{},
	}
	unsigned, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("server keys: %w", err)
	}
	return protocol.SignJSON(serverName, k.ID, k.Private, unsigned)
}

// FromSeed derives a key from any secret string, so that a deployment can
// keep the key as one generated secret (Secrets Manager) rather than a key
// file: the ed25519 seed is SHA-256 of the string, and the key ID is
// "ed25519:a_" followed by the first four characters of the unpadded
// base64url SHA-256 of "keyid" and the string. The same string always gives
// the same key and ID; another string gives another key and, almost surely,
// another ID.
func FromSeed(secret string) (Key, error) {
	if secret == "" {
		return Key{}, errors.New("signing key seed is empty")
	}
	seed := sha256.Sum256([]byte(secret))
	id := sha256.Sum256([]byte("keyid" + secret))
	version := "a_" + base64.RawURLEncoding.EncodeToString(id[:])[:4]
	return Key{ID: "ed25519:" + version, Private: ed25519.NewKeyFromSeed(seed[:])}, nil
}
