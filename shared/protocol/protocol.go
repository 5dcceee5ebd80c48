// Package protocol is Cirrus's one door to gomatrixserverlib: canonical JSON,
// signing and server-name grammar. Other packages call these functions and
// never import the library, so a change of library version touches one place.
package protocol

import (
	"crypto/ed25519"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// ValidServerName reports whether name follows the server name grammar of the
// spec (appendix "Server Name"): a DNS name, an IPv4 literal or a bracketed
// IPv6 literal, with an optional port.
func ValidServerName(name string) bool {
	_, _, ok := spec.ParseAndValidateServerName(spec.ServerName(name))
	return ok
}

// CanonicalJSON re-encodes a JSON document in the spec's canonical form,
// which is what signatures and hashes are computed over. Numbers that are
// not integers are kept as written. A document the library would not
// encode faithfully is an error wrapping ErrDuplicateKey or
// ErrNotCanonical: a key twice, a key with a quote, backslash or control
// character, a lone UTF-16 surrogate, a number such as -0.5 or 1e-05 whose
// minus sign it would drop.
func CanonicalJSON(doc []byte) ([]byte, error) {
	if err := checkFaithful(doc); err != nil {
		return nil, fmt.Errorf("canonical json: %w", err)
	}
	out, err := gomatrixserverlib.CanonicalJSON(doc)
	if err != nil {
		return nil, fmt.Errorf("canonical json: %w", err)
	}
	return out, nil
}

// SignJSON adds a signature by (serverName, keyID) to the JSON object in
// message and returns the signed object in canonical form.
func SignJSON(serverName, keyID string, key ed25519.PrivateKey, message []byte) ([]byte, error) {
	out, err := gomatrixserverlib.SignJSON(serverName, gomatrixserverlib.KeyID(keyID), key, message)
	if err != nil {
		return nil, fmt.Errorf("sign json: %w", err)
	}
	return out, nil
}

// VerifyJSON checks the signature by (serverName, keyID) on a signed JSON object.
func VerifyJSON(serverName, keyID string, key ed25519.PublicKey, message []byte) error {
	if err := gomatrixserverlib.VerifyJSON(serverName, gomatrixserverlib.KeyID(keyID), key, message); err != nil {
		return fmt.Errorf("verify json: %w", err)
	}
	return nil
}
