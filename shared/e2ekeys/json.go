package e2ekeys

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/protocol"
)

// errInvalidKey is a key whose public part is not an ed25519 key in
// unpadded base64.
var errInvalidKey = errors.New("not an ed25519 public key")

// canonical is raw in the spec's canonical JSON form: what is stored, so
// that two uploads of one key compare equal however the client spaced
// or ordered them.
func canonical(raw json.RawMessage) (string, error) {
	out, err := protocol.CanonicalJSON(raw)
	if err != nil {
		return "", err
	}
	return string(out), nil
}

// signedPart is a JSON object without its signatures and unsigned, in
// canonical form: what a signature covers, so what an object sent with a
// new signature must share with the stored copy. A value that is not an
// object is compared whole.
func signedPart(raw json.RawMessage) (string, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return canonical(raw)
	}
	delete(obj, "signatures")
	delete(obj, "unsigned")
	doc, err := json.Marshal(obj)
	if err != nil {
		return "", fmt.Errorf("encode key: %w", err)
	}
	return canonical(doc)
}

// publicKey decodes an ed25519 public key in unpadded base64 (padding is
// tolerated).
func publicKey(b64 string) (ed25519.PublicKey, error) {
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(b64, "="))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, errInvalidKey
	}
	return ed25519.PublicKey(b), nil
}

// verify checks the signature that userID's key keyID (an ed25519 key in
// unpadded base64) made on the JSON object signed.
func verify(signed json.RawMessage, userID, keyID, key string) error {
	pub, err := publicKey(key)
	if err != nil {
		return err
	}
	return protocol.VerifyJSON(userID, keyID, pub, signed)
}

// signaturesBy returns the signatures userID made on a JSON object, key ID
// to signature, and whether the object has a signatures entry for userID.
func signaturesBy(raw json.RawMessage, userID string) (map[string]string, bool) {
	var obj struct {
		Signatures map[string]map[string]json.RawMessage `json:"signatures"`
	}
	if json.Unmarshal(raw, &obj) != nil {
		return nil, false
	}
	mine, ok := obj.Signatures[userID]
	out := map[string]string{}
	for keyID, sig := range mine {
		var s string
		if json.Unmarshal(sig, &s) == nil {
			out[keyID] = s
		}
	}
	return out, ok
}

// withSignatures adds signatures (signer to key ID to signature) and
// unsigned to a stored JSON object, for /keys/query. Values it does not
// touch go out byte for byte.
func withSignatures(stored string, sigs map[string]map[string]string, unsigned map[string]any) (json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(stored), &obj); err != nil {
		return nil, fmt.Errorf("decode stored key: %w", err)
	}
	if len(sigs) > 0 {
		var all map[string]map[string]json.RawMessage
		if raw, ok := obj["signatures"]; ok {
			if err := json.Unmarshal(raw, &all); err != nil {
				return nil, fmt.Errorf("decode stored signatures: %w", err)
			}
		}
		if all == nil {
			all = map[string]map[string]json.RawMessage{}
		}
		for signer, byKey := range sigs {
			if all[signer] == nil {
				all[signer] = map[string]json.RawMessage{}
			}
			for keyID, sig := range byKey {
				all[signer][keyID] = mustJSON(sig)
			}
		}
		obj["signatures"] = mustJSON(all)
	}
	if unsigned != nil {
		obj["unsigned"] = mustJSON(unsigned)
	}
	return mustJSON(obj), nil
}

// mustJSON encodes values this package built, which always encode.
func mustJSON(v any) json.RawMessage {
	doc, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("encode %T: %v", v, err))
	}
	return doc
}
