package accounts

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strings"
)

// Access tokens name their session and are signed, so that a request can
// start before the token's read confirms it (RequireAuth, package gate):
//
//	cirrus_<base64url of user ID NUL device ID>.<base64url of 32 random bytes>.<base64url of 16 bytes of HMAC>
//
// The HMAC-SHA-256 is keyed from the server's signing key seed (TokenKey)
// over the first two parts. Only tokens this server issued pass it, so a
// made-up token costs one read as before, never a handler's worth of
// reads. The signature says who the token was issued to, not that it
// still holds: the read (its hash's item) stays what decides, for a logout
// or a deactivation takes effect at once. Synapse's tokens name their
// user too (syt_<base64 localpart>_...).
//
// Tokens of the older form ("cirrus_" and 43 random characters), and
// signed ones after the signing key changed, still work: they wait for
// the read.

const tokenPrefix = "cirrus_"

// tokenKeyLabel is HKDF's info for the token key, so that no other use of
// the seed derives the same key.
const tokenKeyLabel = "cirrus access token signature v1"

// TokenKey derives the key that signs access tokens from the server's
// signing key seed.
func TokenKey(seed []byte) []byte {
	k, err := hkdf.Key(sha256.New, seed, nil, tokenKeyLabel, sha256.Size)
	if err != nil {
		panic(err) // only for lengths HKDF cannot give
	}
	return k
}

// signedToken is a new access token naming userID's deviceID, signed with
// key; with no key it is random alone.
func signedToken(key []byte, userID, deviceID string) string {
	if key == nil {
		return newToken()
	}
	body := base64.RawURLEncoding.EncodeToString([]byte(userID+"\x00"+deviceID)) + "." + strings.TrimPrefix(newToken(), tokenPrefix)
	return tokenPrefix + body + "." + base64.RawURLEncoding.EncodeToString(tokenMAC(key, body))
}

func tokenMAC(key []byte, body string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(body))
	return m.Sum(nil)[:16]
}

// claimedSession is the session a signed token names, if its signature
// holds under key.
func claimedSession(key []byte, token string) (Session, bool) {
	rest, ok := strings.CutPrefix(token, tokenPrefix)
	if key == nil || !ok {
		return Session{}, false
	}
	i := strings.LastIndexByte(rest, '.')
	if i < 0 {
		return Session{}, false
	}
	body, sig := rest[:i], rest[i+1:]
	mac, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(mac, tokenMAC(key, body)) {
		return Session{}, false
	}
	who, _, ok := strings.Cut(body, ".")
	if !ok {
		return Session{}, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(who)
	if err != nil {
		return Session{}, false
	}
	userID, deviceID, ok := strings.Cut(string(raw), "\x00")
	if !ok || userID == "" || deviceID == "" {
		return Session{}, false
	}
	return Session{UserID: userID, DeviceID: deviceID}, true
}
