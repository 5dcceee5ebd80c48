// Package profile holds users' global profiles (display name and avatar)
// and serves the profile endpoints of the client-server API.
//
// Storage (docs/storage.md): the profile is the item (user|<user ID>,
// profile), with the attributes displayname and avatar_url, each absent when
// unset. This package alone reads and writes it: registration makes it
// through NewProfileOp, the admin API changes it through SetDisplayName
// (accounts.Profiles).
package profile

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/cirrus-matrix/cirrus/shared/protocol"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Synapse's limits, so that a profile moves between the two unchanged.
const (
	MaxDisplayNameLength = 256  // characters
	MaxAvatarURLLength   = 1000 // bytes
)

// Errors callers can test for with errors.Is.
var (
	// ErrNotFound is a user with no profile: unknown here, or deactivated.
	ErrNotFound = errors.New("profile not found")
	// ErrRemoteUser is a user of another server, whose profile only a
	// federation query could give.
	ErrRemoteUser = errors.New("user of another server")
	// ErrInvalidUserID is a string that is not a user ID.
	ErrInvalidUserID = errors.New("invalid user ID")
	// ErrInvalidValue is a display name or avatar URL that may not be set.
	ErrInvalidValue = errors.New("invalid profile value")
)

// Service reads and writes the profiles of one server's users.
type Service struct {
	Store      *store.Store
	ServerName string
	// Changed is told of each change, so that the user's member events in
	// their rooms follow their profile; nil does nothing.
	Changed func(ctx context.Context, userID string, p Profile) error
	// Remote fetches the profile of another server's user from that
	// server (federation.ProfileQuery); nil answers them ErrRemoteUser.
	Remote func(ctx context.Context, userID string) (Profile, error)
}

// Profile is what a user shows of themselves; an empty field is unset.
type Profile struct {
	DisplayName string
	AvatarURL   string
}

// Field names a profile field, as the spec's keyName does.
type Field string

// The fields this server stores.
const (
	DisplayName Field = "displayname"
	AvatarURL   Field = "avatar_url"
)

type profileItem struct {
	PK          string `dynamodbav:"pk"`
	SK          string `dynamodbav:"sk"`
	DisplayName string `dynamodbav:"displayname,omitempty"`
	AvatarURL   string `dynamodbav:"avatar_url,omitempty"`
}

func profileKey(userID string) store.Key { return store.Key{PK: "user|" + userID, SK: "profile"} }

// Get reads the profile of a local user: one strongly consistent read. It
// returns ErrInvalidUserID, ErrRemoteUser, or ErrNotFound for a user who
// has no profile item.
func (s *Service) Get(ctx context.Context, userID string) (Profile, error) {
	if err := s.checkLocal(userID); err != nil {
		return Profile{}, err
	}
	var it profileItem
	err := s.Store.Get(ctx, profileKey(userID), &it)
	if errors.Is(err, store.ErrNotFound) {
		return Profile{}, fmt.Errorf("get profile %s: %w", userID, ErrNotFound)
	}
	if err != nil {
		return Profile{}, fmt.Errorf("get profile %s: %w", userID, err)
	}
	return Profile{DisplayName: it.DisplayName, AvatarURL: it.AvatarURL}, nil
}

// Lookup is Get for users of any server: another server's users are
// asked of it (Remote), each time.
func (s *Service) Lookup(ctx context.Context, userID string) (Profile, error) {
	p, err := s.Get(ctx, userID)
	if errors.Is(err, ErrRemoteUser) && s.Remote != nil {
		return s.Remote(ctx, userID)
	}
	return p, err
}

// Set sets one field of a local user's profile to value, after Normalize;
// an empty value unsets it. It reads the profile, then writes it whole (one
// read, one write), since the store has no partial update: of two
// concurrent Sets of different fields of one user, the later write can
// undo the earlier.
func (s *Service) Set(ctx context.Context, userID string, field Field, value string) error {
	value, err := Normalize(field, value)
	if err != nil {
		return err
	}
	if err := s.checkLocal(userID); err != nil {
		return err
	}
	it := profileItem{PK: profileKey(userID).PK, SK: "profile"}
	err = s.Store.Get(ctx, profileKey(userID), &it)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("set %s of %s: %w", field, userID, err)
	}
	switch field {
	case DisplayName:
		it.DisplayName = value
	case AvatarURL:
		it.AvatarURL = value
	}
	if err := s.Store.Put(ctx, it); err != nil {
		return fmt.Errorf("set %s of %s: %w", field, userID, err)
	}
	if s.Changed != nil {
		if err := s.Changed(ctx, userID, Profile{DisplayName: it.DisplayName, AvatarURL: it.AvatarURL}); err != nil {
			return fmt.Errorf("set %s of %s: update rooms: %w", field, userID, err)
		}
	}
	return nil
}

// Normalize checks a new value of field and returns what is stored: a
// display name trimmed of surrounding white space, of at most 256
// characters; an avatar URL of at most 1000 bytes. Any URL is stored, as
// Synapse stores it: clients show mxc:// URIs, and a profile is no place to
// refuse what the spec does not. The empty string unsets the field.
func Normalize(field Field, value string) (string, error) {
	switch field {
	case DisplayName:
		if n := utf8.RuneCountInString(value); n > MaxDisplayNameLength {
			return "", fmt.Errorf("%w: displayname is %d characters long, over the limit of %d", ErrInvalidValue, n, MaxDisplayNameLength)
		}
		return strings.TrimSpace(value), nil
	case AvatarURL:
		if value == "" {
			return "", nil
		}
		if len(value) > MaxAvatarURLLength {
			return "", fmt.Errorf("%w: avatar_url is %d bytes long, over the limit of %d", ErrInvalidValue, len(value), MaxAvatarURLLength)
		}
		return value, nil
	}
	return "", fmt.Errorf("%w: unknown profile field %q", ErrInvalidValue, field)
}

// checkLocal refuses what is not a user ID of this server.
func (s *Service) checkLocal(userID string) error {
	server, err := ServerOf(userID)
	if err != nil {
		return err
	}
	if server != s.ServerName {
		return fmt.Errorf("%s: %w %s", userID, ErrRemoteUser, server)
	}
	return nil
}

// ServerOf returns the server name of a user ID: "@", a non-empty
// localpart, ":", a valid server name, at most 255 bytes in all (the
// spec's grammar, lenient on the localpart as for historical user IDs).
func ServerOf(userID string) (string, error) {
	localpart, server, ok := strings.Cut(strings.TrimPrefix(userID, "@"), ":")
	if !strings.HasPrefix(userID, "@") || !ok || localpart == "" || len(userID) > 255 || !protocol.ValidServerName(server) {
		return "", fmt.Errorf("%w: %q", ErrInvalidUserID, userID)
	}
	return server, nil
}
