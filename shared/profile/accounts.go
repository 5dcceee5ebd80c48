package profile

import (
	"context"
	"errors"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// The profile item has one owner, this package: accounts makes a new
// user's profile and changes display names for the admin API through the
// methods below (the accounts.Profiles hook), never by writing the item.
var _ accounts.Profiles = (*Service)(nil)

// NewProfileOp is the write that makes a new user's profile with the given
// display name (after Normalize), for the transaction that registers the
// user. An invalid name is a 400 M_INVALID_PARAM.
func (s *Service) NewProfileOp(userID, displayName string) (store.Op, error) {
	name, err := Normalize(DisplayName, displayName)
	if err != nil {
		return store.Op{}, httpError(err)
	}
	k := profileKey(userID)
	return store.PutOp(profileItem{PK: k.PK, SK: k.SK, DisplayName: name}), nil
}

// Names reads a local user's display name and avatar URL: "" when unset,
// and both "" for a user with no profile. One read.
func (s *Service) Names(ctx context.Context, userID string) (displayName, avatarURL string, err error) {
	p, err := s.Get(ctx, userID)
	if errors.Is(err, ErrNotFound) {
		return "", "", nil
	}
	if err != nil {
		return "", "", httpError(err)
	}
	return p.DisplayName, p.AvatarURL, nil
}

// SetDisplayName sets a local user's display name as Set does, so the
// Changed hook sends new member events into the user's rooms; for the admin
// API, which may change anyone's. Errors are Matrix errors (400 for an
// invalid name).
func (s *Service) SetDisplayName(ctx context.Context, userID, displayName string) error {
	return httpError(s.Set(ctx, userID, DisplayName, displayName))
}
