package accounts

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// RefreshableLifetime is how long an access token that comes with a refresh
// token lives: Synapse's default refreshable_access_token_lifetime.
const RefreshableLifetime = 5 * time.Minute

// ErrExpiredToken is an access token past its lifetime: the client should
// refresh it (soft logout) rather than log in again.
var ErrExpiredToken = errors.New("access token expired")

type refreshItem struct {
	PK       string `dynamodbav:"pk"`
	SK       string `dynamodbav:"sk"`
	UserID   string `dynamodbav:"user_id"`
	DeviceID string `dynamodbav:"device_id"`
	// Next is the hash of the refresh token issued in exchange for this one;
	// this one stays valid until Next is used (the spec lets a client retry a
	// refresh whose answer it lost).
	Next string `dynamodbav:"next,omitempty"`
	// Prev is the hash this one was issued for, deleted once this is used.
	Prev string `dynamodbav:"prev,omitempty"`
}

func refreshPK(hash string) string { return "refresh|" + hash }

// issued are the tokens of one device after login or refresh.
type issued struct {
	AccessToken, RefreshToken string
	ExpiresIn                 time.Duration // zero: the access token does not expire
}

// tokenOps writes a new access token (and refresh token when refreshable)
// for a device, and the device item pointing at them.
func (s *Service) tokenOps(userID string, dev deviceItem, refreshable bool, prevRefresh string) (issued, []store.Op) {
	now := s.now()
	out := issued{AccessToken: signedToken(s.TokenKey, userID, dev.DeviceID)}
	tok := tokenItem{PK: tokenPK(hashToken(out.AccessToken)), SK: "token", UserID: userID, DeviceID: dev.DeviceID}
	dev.TokenHash, dev.RefreshHash = hashToken(out.AccessToken), ""
	var ops []store.Op
	if refreshable {
		out.ExpiresIn = RefreshableLifetime
		tok.ValidUntil = now.Add(RefreshableLifetime).UnixMilli()
		// Kept a day past its end, so that a late use is told to refresh
		// (soft logout) rather than that the token is unknown.
		tok.Expires = now.Add(RefreshableLifetime + 24*time.Hour).Unix()
		out.RefreshToken = newToken()
		dev.RefreshHash = hashToken(out.RefreshToken)
		ops = append(ops, store.CreateOp(refreshItem{PK: refreshPK(dev.RefreshHash), SK: "refresh", UserID: userID, DeviceID: dev.DeviceID, Prev: prevRefresh}))
	}
	dev.PK, dev.SK = userPK(userID), "device|"+dev.DeviceID
	if dev.CreatedTS == 0 {
		dev.CreatedTS = now.UnixMilli()
	}
	dev.LastSeenTS = now.UnixMilli()
	ops = append(ops, store.CreateOp(tok), store.PutOp(dev))
	return out, ops
}

// Refresh exchanges a refresh token for a new access token and refresh
// token. The old refresh token keeps working until the new one is used, so
// a client that lost the answer can retry; using it again revokes what the
// earlier exchange issued.
func (s *Service) Refresh(ctx context.Context, refreshToken string) (issued, error) {
	h := hashToken(refreshToken)
	var rt refreshItem
	if err := s.Store.Get(ctx, store.Key{PK: refreshPK(h), SK: "refresh"}, &rt); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return issued{}, ErrUnknownToken
		}
		return issued{}, fmt.Errorf("refresh: %w", err)
	}
	var dev deviceItem
	if err := s.Store.Get(ctx, store.Key{PK: userPK(rt.UserID), SK: "device|" + rt.DeviceID}, &dev); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return issued{}, ErrUnknownToken
		}
		return issued{}, fmt.Errorf("refresh: %w", err)
	}
	var ops []store.Op
	if dev.TokenHash != "" {
		ops = append(ops, store.DeleteOp(store.Key{PK: tokenPK(dev.TokenHash), SK: "token"}))
	}
	if rt.Next != "" {
		// A retry: what the earlier exchange issued is revoked.
		ops = append(ops, store.DeleteOp(store.Key{PK: refreshPK(rt.Next), SK: "refresh"}))
	}
	if rt.Prev != "" {
		ops = append(ops, store.DeleteOp(store.Key{PK: refreshPK(rt.Prev), SK: "refresh"}))
	}
	out, more := s.tokenOps(rt.UserID, dev, true, h)
	rt.Next, rt.Prev = hashToken(out.RefreshToken), ""
	ops = append(ops, more...)
	ops = append(ops, store.PutOp(rt))
	if err := s.Store.Transact(ctx, ops...); err != nil {
		return issued{}, fmt.Errorf("refresh: %w", err)
	}
	return out, nil
}
