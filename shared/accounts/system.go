package accounts

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// SystemUser makes, unless it exists, the account of a user the server
// itself speaks as, such as the server notices user: no password, so that
// nobody logs in as it, and no device or token. Its profile gets
// displayName (the localpart when empty). It returns the user ID; an
// account of that ID made before, by anyone, is taken as it is. One
// transaction of the account and profile items the first time, a failed
// one (billed as the writes) after. NewUserOps is not asked: a system
// user is nobody to find in the user directory, as Synapse's notices user,
// which has no registration at all, is not.
func (s *Service) SystemUser(ctx context.Context, localpart, displayName string) (string, error) {
	localpart = strings.ToLower(localpart)
	if err := ValidLocalpart(localpart, s.ServerName); err != nil {
		return "", fmt.Errorf("system user: %w", err)
	}
	userID := "@" + localpart + ":" + s.ServerName
	if displayName == "" {
		displayName = localpart
	}
	ops := []store.Op{store.CreateOp(accountItem{PK: userPK(userID), SK: "account", UserID: userID,
		CreatedTS: s.now().UnixMilli(), GSI1PK: accountsIndexPK, GSI1SK: userID})}
	if s.Profiles != nil {
		op, err := s.Profiles.NewProfileOp(userID, displayName)
		if err != nil {
			return "", err
		}
		ops = append(ops, op)
	}
	err := s.Store.Transact(ctx, ops...)
	if err != nil && !errors.Is(err, store.ErrConflict) {
		return "", fmt.Errorf("system user %s: %w", userID, err)
	}
	return userID, nil
}

// Exists reports whether userID has an account here, deactivated or not,
// as Synapse's admin API finds users: one strongly consistent read.
func (s *Service) Exists(ctx context.Context, userID string) (bool, error) {
	var acct accountItem
	err := s.Store.Get(ctx, store.Key{PK: userPK(userID), SK: "account"}, &acct)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("account %s: %w", userID, err)
	}
	return true, nil
}
