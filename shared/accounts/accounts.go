// Package accounts holds users, their devices and their access tokens, and
// the endpoints that create and authenticate them.
//
// Storage (docs/storage.md): an account is the item (user|<user ID>,
// account), each device (user|<user ID>, device|<device ID>); an access
// token is stored only as its SHA-256, in the item (token|<hash>, token), so
// that authenticating a request is one GetItem. The profile (user|<user ID>,
// profile) belongs to shared/profile: registration writes it in its
// transaction through the Profiles hook, and the admin API changes it
// through the same hook, which tells the user's rooms.
package accounts

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/ratelimit"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// BcryptCost is Synapse's default bcrypt_rounds, so hashes move both ways.
const BcryptCost = 12

// Errors callers can test for with errors.Is.
var (
	ErrUserInUse       = errors.New("user ID already taken")
	ErrInvalidUsername = errors.New("invalid username")
	ErrUnknownToken    = errors.New("unknown access token")
)

// Service manages the accounts of one server.
type Service struct {
	Store      *store.Store
	ServerName string
	// BaseURL is public_baseurl, returned as well_known at login.
	BaseURL string
	// Limiter and Limits rate-limit login and registration; a nil Limiter
	// limits nothing.
	Limiter *ratelimit.Limiter
	Limits  Limits
	// DeviceDeleted, when set, runs after a device is deleted or logged out,
	// for what other packages keep per device (pushers).
	DeviceDeleted func(ctx context.Context, userID, deviceID string) error
	// DeviceRenamed, when set, runs after a device's display name is
	// changed, which is part of its user's device list (e2ekeys).
	DeviceRenamed func(ctx context.Context, userID, deviceID string) error
	// Profiles reads and writes profiles (shared/profile, their one
	// owner); nil makes and shows no profile.
	Profiles Profiles
	// NewUserOps, when set, gives more writes for the transaction that
	// registers a user, for what other packages index by user (the user
	// directory), so that no user exists without them.
	NewUserOps func(userID, displayName string) ([]store.Op, error)
	// ActiveChanged, when set, runs after an account is deactivated
	// (active false) or an admin reactivates it (active true).
	ActiveChanged func(ctx context.Context, userID string, active bool) error
	// ThreePIDs validates and binds email addresses (shared/threepid); nil
	// means no email support: no login, reset or registration by address.
	ThreePIDs ThreePIDs
	// RegistrationRequiresEmail is registrations_require_3pid naming
	// email: open registration then offers only flows that validate an
	// address. It needs ThreePIDs.
	RegistrationRequiresEmail bool
	// EmailBound, when set, runs after registration binds an address, for
	// the email pusher of notif_for_new_users.
	EmailBound func(ctx context.Context, userID, address string) error
	// TokenKey signs the access tokens issued (TokenKey, signedtoken.go),
	// so that their requests start before the token's read confirms them;
	// nil issues unsigned tokens, whose requests wait for the read.
	TokenKey []byte
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Session is an authenticated device of a user.
type Session struct {
	UserID   string
	DeviceID string
	// Set only when the session was just created.
	AccessToken, RefreshToken string
	ExpiresIn                 time.Duration
}

type accountItem struct {
	PK           string `dynamodbav:"pk"`
	SK           string `dynamodbav:"sk"`
	UserID       string `dynamodbav:"user_id"`
	PasswordHash string `dynamodbav:"password_hash"`
	Admin        bool   `dynamodbav:"admin"`
	Deactivated  bool   `dynamodbav:"deactivated"`
	CreatedTS    int64  `dynamodbav:"created_ts"`
	// Every account is in the index partition "accounts", sorted by user ID,
	// so that the admin API lists users with a Query, not a Scan.
	GSI1PK string `dynamodbav:"gsi1pk,omitempty"`
	GSI1SK string `dynamodbav:"gsi1sk,omitempty"`
}

// accountsIndexPK is the index partition that lists all accounts.
const accountsIndexPK = "accounts"

// Profiles is what accounts asks of the package that owns profiles. Its
// errors for a value that may not be set are *httpapi.Error (400).
type Profiles interface {
	// NewProfileOp is the write that makes a new user's profile with a
	// display name, for the registration's transaction.
	NewProfileOp(userID, displayName string) (store.Op, error)
	// Names reads a local user's display name and avatar URL, "" when
	// unset or when the user has no profile.
	Names(ctx context.Context, userID string) (displayName, avatarURL string, err error)
	// SetDisplayName changes a local user's display name and tells the
	// rooms they are in (new member events).
	SetDisplayName(ctx context.Context, userID, displayName string) error
}

type deviceItem struct {
	PK          string `dynamodbav:"pk"`
	SK          string `dynamodbav:"sk"`
	DeviceID    string `dynamodbav:"device_id"`
	DisplayName string `dynamodbav:"display_name,omitempty"`
	// TokenHash and RefreshHash name the device's current tokens, so that
	// deleting the device revokes them at once.
	TokenHash   string `dynamodbav:"token_hash,omitempty"`
	RefreshHash string `dynamodbav:"refresh_hash,omitempty"`
	CreatedTS   int64  `dynamodbav:"created_ts"`
	LastSeenTS  int64  `dynamodbav:"last_seen_ts,omitempty"`
}

type tokenItem struct {
	PK       string `dynamodbav:"pk"`
	SK       string `dynamodbav:"sk"`
	UserID   string `dynamodbav:"user_id"`
	DeviceID string `dynamodbav:"device_id"`
	// ValidUntil (Unix ms) ends a refreshable token; zero means never.
	ValidUntil int64 `dynamodbav:"valid_until_ms,omitempty"`
	Expires    int64 `dynamodbav:"expires_at,omitempty"`
}

func userPK(userID string) string     { return "user|" + userID }
func tokenPK(tokenHash string) string { return "token|" + tokenHash }

// NewUser says what Register creates.
type NewUser struct {
	Localpart, Password string
	Admin               bool
	DisplayName         string
	// DeviceID and DeviceDisplayName name the first device; an empty
	// DeviceID gets a generated one.
	DeviceID, DeviceDisplayName string
	// InhibitLogin creates no device and no token.
	InhibitLogin bool
	// Refreshable asks for an expiring access token and a refresh token.
	Refreshable bool
}

// Register creates an account, its profile and, unless InhibitLogin, a first
// device with an access token, all in one transaction: a taken user ID
// leaves nothing behind and gives ErrUserInUse. A password over 512 bytes
// gives ErrPasswordTooLong.
func (s *Service) Register(ctx context.Context, u NewUser) (Session, error) {
	localpart := strings.ToLower(u.Localpart)
	if err := ValidLocalpart(localpart, s.ServerName); err != nil {
		return Session{}, err
	}
	hash, err := HashPassword(u.Password)
	if err != nil {
		return Session{}, fmt.Errorf("register: %w", err)
	}
	userID := "@" + localpart + ":" + s.ServerName
	now := s.now()
	display := u.DisplayName
	if display == "" {
		display = localpart
	}
	ops := []store.Op{
		store.CreateOp(accountItem{PK: userPK(userID), SK: "account", UserID: userID, PasswordHash: hash, Admin: u.Admin,
			CreatedTS: now.UnixMilli(), GSI1PK: accountsIndexPK, GSI1SK: userID}),
	}
	if s.Profiles != nil {
		op, err := s.Profiles.NewProfileOp(userID, display)
		if err != nil {
			return Session{}, err
		}
		ops = append(ops, op)
	}
	if s.NewUserOps != nil {
		more, err := s.NewUserOps(userID, display)
		if err != nil {
			return Session{}, err
		}
		ops = append(ops, more...)
	}
	sess := Session{UserID: userID}
	if !u.InhibitLogin {
		sess.DeviceID = u.DeviceID
		if sess.DeviceID == "" {
			sess.DeviceID = newDeviceID()
		}
		tokens, more := s.tokenOps(userID, deviceItem{DeviceID: sess.DeviceID, DisplayName: u.DeviceDisplayName}, u.Refreshable, "")
		sess.AccessToken, sess.RefreshToken, sess.ExpiresIn = tokens.AccessToken, tokens.RefreshToken, tokens.ExpiresIn
		ops = append(ops, more...)
	}
	if err := s.Store.Transact(ctx, ops...); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return Session{}, fmt.Errorf("register %s: %w", userID, ErrUserInUse)
		}
		return Session{}, fmt.Errorf("register %s: %w", userID, err)
	}
	return sess, nil
}

// Authenticate finds the session of an access token: one read.
func (s *Service) Authenticate(ctx context.Context, token string) (Session, error) {
	var t tokenItem
	err := s.Store.Get(ctx, store.Key{PK: tokenPK(hashToken(token)), SK: "token"}, &t)
	if errors.Is(err, store.ErrNotFound) {
		return Session{}, ErrUnknownToken
	}
	if err != nil {
		return Session{}, fmt.Errorf("authenticate: %w", err)
	}
	if t.ValidUntil > 0 && s.now().UnixMilli() >= t.ValidUntil {
		return Session{}, ErrExpiredToken
	}
	return Session{UserID: t.UserID, DeviceID: t.DeviceID}, nil
}

// ValidLocalpart checks a localpart for registration: the spec's user ID
// grammar (lower case a-z, digits, ._=-/+), not all digits (Synapse keeps
// those for guests), not starting with "_" (kept for application services),
// and a user ID of at most 255 bytes.
func ValidLocalpart(localpart, serverName string) error {
	if localpart == "" {
		return fmt.Errorf("%w: the username is empty", ErrInvalidUsername)
	}
	for _, r := range localpart {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || strings.ContainsRune("._=-/+", r)) {
			return fmt.Errorf("%w: user ID can only contain characters a-z, 0-9, or '=_-./+'", ErrInvalidUsername)
		}
	}
	if strings.Trim(localpart, "0123456789") == "" {
		return fmt.Errorf("%w: numeric user IDs are reserved for guest users", ErrInvalidUsername)
	}
	if strings.HasPrefix(localpart, "_") {
		return fmt.Errorf("%w: user ID may not begin with '_'", ErrInvalidUsername)
	}
	if len("@"+localpart+":"+serverName) > 255 {
		return fmt.Errorf("%w: user ID is longer than 255 bytes", ErrInvalidUsername)
	}
	return nil
}

// newToken is 256 random bits; only its hash is stored.
func newToken() string {
	var b [32]byte
	rand.Read(b[:])
	return "cirrus_" + base64.RawURLEncoding.EncodeToString(b[:])
}

func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// newDeviceID is ten capital letters, as Synapse makes them.
func newDeviceID() string {
	const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	var b [10]byte
	rand.Read(b[:])
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return string(b[:])
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}
