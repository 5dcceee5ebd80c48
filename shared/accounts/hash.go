package accounts

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/crypto/blowfish"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
)

// Password hashes come in two forms, told apart by their prefix:
//
//   - "$2a$12$<salt><digest>" (Synapse writes "$2b$", the same algorithm):
//     bcrypt of the password itself. Cirrus writes it for passwords of at
//     most 72 bytes, all of which bcrypt reads, so that such hashes move to
//     and from Synapse unchanged.
//   - "$bcrypt-sha256$v=2,t=2b,r=12$<salt>$<digest>": passlib's
//     bcrypt_sha256 (hashcat mode 30601), for longer passwords: bcrypt of
//     base64(HMAC-SHA256(key: the salt as written, message: the password)),
//     so that every byte of a long password counts. Keying the HMAC with the
//     salt keeps a table of plain SHA-256 digests of leaked passwords from
//     being tried against the bcrypt part directly.
//
// bcrypt reads at most 72 bytes. Synapse hashed password + pepper with
// Python's bcrypt, which used the first 72 bytes and ignored the rest (and
// since bcrypt 5.0 Synapse cuts them itself): a "$2…$" hash is checked
// against the first 72 bytes of the password, as Synapse checks it, so a
// user imported from Synapse with a longer password still logs in.

// MaxPasswordLength is the longest password accepted, in bytes: Synapse's
// limit of 512.
const MaxPasswordLength = 512

// bcryptMaxInput is how much of its input bcrypt reads.
const bcryptMaxInput = 72

// ErrPasswordTooLong is a new password over MaxPasswordLength.
var ErrPasswordTooLong = fmt.Errorf("password is longer than %d bytes", MaxPasswordLength)

// errInvalidPassword is Synapse's answer to a password it will not hash:
// over 512 long, or holding a NUL byte.
var errInvalidPassword = httpapi.Errorf(http.StatusBadRequest, "M_UNKNOWN", "Invalid password")

// checkNewPassword refuses, with Synapse's error, a password that is too
// long to be set.
func checkNewPassword(password string) error {
	if len(password) > MaxPasswordLength {
		return errInvalidPassword
	}
	return nil
}

// passwordError maps HashPassword's refusal of a long password to
// Synapse's error; other errors stay as they are.
func passwordError(err error) error {
	if errors.Is(err, ErrPasswordTooLong) {
		return errInvalidPassword
	}
	return err
}

const sha256Prefix = "$bcrypt-sha256$"

// bcrypt64 is bcrypt's base64 alphabet, without padding.
var bcrypt64 = base64.NewEncoding("./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789").WithPadding(base64.NoPadding)

// HashPassword hashes a new password at Synapse's cost: plain bcrypt
// ("$2a$", Go's name for Synapse's "$2b$") for passwords of at most 72
// bytes, the "$bcrypt-sha256$" form for longer ones, up to
// MaxPasswordLength (ErrPasswordTooLong beyond).
func HashPassword(password string) (string, error) {
	switch {
	case password == "":
		return "", errors.New("hash password: the password is empty")
	case len(password) > MaxPasswordLength:
		return "", fmt.Errorf("hash password: %w", ErrPasswordTooLong)
	case len(password) <= bcryptMaxInput:
		h, err := bcrypt.GenerateFromPassword([]byte(password), BcryptCost)
		if err != nil {
			return "", fmt.Errorf("hash password: %w", err)
		}
		return string(h), nil
	}
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	salt := bcrypt64.EncodeToString(raw[:])
	digest, err := bcryptDigest(sha256Key(salt, password), BcryptCost, salt)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return fmt.Sprintf("%sv=2,t=2b,r=%d$%s$%s", sha256Prefix, BcryptCost, salt, digest), nil
}

// CheckPassword reports whether password matches hash, in either form.
// A hash of neither form matches nothing.
func CheckPassword(hash, password string) bool {
	if rest, ok := strings.CutPrefix(hash, sha256Prefix); ok {
		bc, salt, ok := parseSHA256Hash(rest)
		if !ok {
			return false
		}
		return bcrypt.CompareHashAndPassword([]byte(bc), sha256Key(salt, password)) == nil
	}
	if !strings.HasPrefix(hash, "$2") {
		return false
	}
	p := []byte(password)
	if len(p) > bcryptMaxInput {
		p = p[:bcryptMaxInput]
	}
	return bcrypt.CompareHashAndPassword([]byte(hash), p) == nil
}

// parseSHA256Hash reads "v=2,t=2b,r=12$<salt>$<digest>" into the plain
// bcrypt hash of the key ("$2b$12$<salt><digest>") and the salt.
func parseSHA256Hash(rest string) (bcryptHash, salt string, ok bool) {
	params, rest, _ := strings.Cut(rest, "$")
	salt, digest, _ := strings.Cut(rest, "$")
	var variant string
	cost := -1
	version := false
	for _, p := range strings.Split(params, ",") {
		k, v, _ := strings.Cut(p, "=")
		switch k {
		case "v":
			version = v == "2"
		case "t":
			variant = v
		case "r":
			if n, err := strconv.Atoi(v); err == nil {
				cost = n
			}
		}
	}
	if !version || (variant != "2a" && variant != "2b") || cost < bcrypt.MinCost || cost > bcrypt.MaxCost ||
		len(salt) != 22 || len(digest) != 31 {
		return "", "", false
	}
	return fmt.Sprintf("$%s$%02d$%s%s", variant, cost, salt, digest), salt, true
}

// sha256Key is what the "$bcrypt-sha256$" form hands to bcrypt: the
// standard base64 (44 bytes, no NUL) of HMAC-SHA256 keyed with the salt.
func sha256Key(salt, password string) []byte {
	mac := hmac.New(sha256.New, []byte(salt))
	mac.Write([]byte(password))
	return []byte(base64.StdEncoding.EncodeToString(mac.Sum(nil)))
}

// bcryptDigest is bcrypt's 31-character digest of key at cost with the
// given encoded salt: the one step golang.org/x/crypto/bcrypt does not
// export, since it always draws its own salt. The "$bcrypt-sha256$" form
// needs the salt first, to key its HMAC. CheckPassword verifies what this
// makes with the library's own bcrypt.
func bcryptDigest(key []byte, cost int, salt string) (string, error) {
	rawSalt, err := bcrypt64.DecodeString(salt)
	if err != nil {
		return "", fmt.Errorf("bcrypt salt: %w", err)
	}
	// bcrypt reads the key as a C string: its trailing NUL takes part.
	ckey := append(key[:len(key):len(key)], 0)
	c, err := blowfish.NewSaltedCipher(ckey, rawSalt)
	if err != nil {
		return "", fmt.Errorf("bcrypt key: %w", err)
	}
	for i := uint64(0); i < 1<<uint(cost); i++ {
		blowfish.ExpandKey(ckey, c)
		blowfish.ExpandKey(rawSalt, c)
	}
	block := []byte("OrpheanBeholderScryDoubt")
	for i := 0; i < len(block); i += 8 {
		for range 64 {
			c.Encrypt(block[i:i+8], block[i:i+8])
		}
	}
	// Of the 24 bytes, bcrypt keeps 23.
	return bcrypt64.EncodeToString(block[:23]), nil
}
