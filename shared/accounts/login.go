package accounts

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// dummyHash is compared against when a user does not exist, so that a
// failed login takes as long for a missing user as for a wrong password.
// It is made on first use, not at cold start.
var dummyHash = sync.OnceValue(func() string {
	h, _ := HashPassword("not a password")
	return h
})

// errBadLogin is the one answer to unknown users and wrong passwords: the
// spec lets a server say no more.
var errBadLogin = httpapi.Forbidden("invalid username or password")

type identifier struct {
	Type string `json:"type"`
	User string `json:"user"`
	// Medium and Address are an m.id.thirdparty identifier.
	Medium  string `json:"medium"`
	Address string `json:"address"`
}

type loginRequest struct {
	Type       string     `json:"type"`
	Identifier identifier `json:"identifier"`
	User       string     `json:"user"` // deprecated, still sent by old clients
	// Medium and Address are the deprecated form of m.id.thirdparty.
	Medium                   string `json:"medium"`
	Address                  string `json:"address"`
	Password                 string `json:"password"`
	DeviceID                 string `json:"device_id"`
	InitialDeviceDisplayName string `json:"initial_device_display_name"`
	RefreshToken             bool   `json:"refresh_token"`
}

// handleLoginFlows serves GET /_matrix/client/v3/login.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3login
func (s *Service) handleLoginFlows(w http.ResponseWriter, r *http.Request) error {
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"flows": []map[string]string{{"type": "m.login.password"}}})
	return nil
}

// handleLogin serves POST /_matrix/client/v3/login with m.login.password.
// The identifier and device ID are checked before anything is read, the
// password through verifyPassword and its rate limits.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3login
func (s *Service) handleLogin(w http.ResponseWriter, r *http.Request) error {
	var req loginRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.Type != "m.login.password" {
		return httpapi.Errorf(http.StatusBadRequest, "M_UNKNOWN", "unknown login type %q: this server offers m.login.password", req.Type)
	}
	userID, local, err := s.loginUser(r.Context(), req)
	if err != nil {
		return err
	}
	if err := checkDeviceID(req.DeviceID); err != nil {
		return err
	}
	acct, err := s.verifyPassword(r, userID, local, req.Password)
	if err != nil {
		return err
	}
	sess, err := s.login(r.Context(), acct.UserID, req.DeviceID, req.InitialDeviceDisplayName, req.RefreshToken)
	if err != nil {
		return err
	}
	s.writeSession(w, sess, true)
	return nil
}

// loginUser is the account a login names, as accountOf makes it: by a user
// ID or localpart (m.id.user, or the deprecated user), or by a bound
// address (m.id.thirdparty, or the deprecated medium and address; the
// spec's own example of it has no type). An unknown address is answered
// as an unknown user is, by verifyPassword.
func (s *Service) loginUser(ctx context.Context, req loginRequest) (string, bool, error) {
	id := req.Identifier
	switch {
	case id.Type == "m.id.thirdparty" || id.Type == "" && id.Address != "":
		if req.Password == "" {
			return "", false, httpapi.MissingParam("a password is required")
		}
		return s.thirdPartyUser(ctx, id.Medium, id.Address)
	case id.Type == "m.id.user":
	case id.Type != "":
		return "", false, httpapi.Errorf(http.StatusBadRequest, "M_UNKNOWN", "identifier type %q is not supported: use m.id.user or m.id.thirdparty", id.Type)
	case req.Address != "" && req.User == "":
		if req.Password == "" {
			return "", false, httpapi.MissingParam("a password is required")
		}
		return s.thirdPartyUser(ctx, req.Medium, req.Address)
	default:
		id.User = req.User
	}
	if id.User == "" || req.Password == "" {
		return "", false, httpapi.MissingParam("a user identifier and a password are required")
	}
	return s.accountOf(id.User)
}

// writeSession answers a login or registration.
func (s *Service) writeSession(w http.ResponseWriter, sess Session, wellKnown bool) {
	body := map[string]any{
		"user_id": sess.UserID, "access_token": sess.AccessToken, "device_id": sess.DeviceID, "home_server": s.ServerName,
	}
	if sess.RefreshToken != "" {
		body["refresh_token"] = sess.RefreshToken
		body["expires_in_ms"] = sess.ExpiresIn.Milliseconds()
	}
	if wellKnown && s.BaseURL != "" {
		body["well_known"] = map[string]any{"m.homeserver": map[string]string{"base_url": s.BaseURL}}
	}
	httpapi.WriteJSON(w, http.StatusOK, body)
}

// checkPassword reads the account of userID (as accountOf makes it) and
// checks its password (CheckPassword: either hash form, Synapse's as
// Synapse checks it). Unknown users, users of other servers and wrong
// passwords get the same answer, errBadLogin, after the same work.
func (s *Service) checkPassword(ctx context.Context, userID string, local bool, password string) (accountItem, error) {
	var acct accountItem
	err := store.ErrNotFound
	if local {
		err = s.Store.Get(ctx, store.Key{PK: userPK(userID), SK: "account"}, &acct)
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return accountItem{}, fmt.Errorf("login: %w", err)
	}
	if err != nil || acct.PasswordHash == "" {
		CheckPassword(dummyHash(), password)
		return accountItem{}, errBadLogin
	}
	if !CheckPassword(acct.PasswordHash, password) {
		return accountItem{}, errBadLogin
	}
	if acct.Deactivated {
		return accountItem{}, httpapi.Errorf(http.StatusForbidden, "M_USER_DEACTIVATED", "this account has been deactivated")
	}
	return acct, nil
}

// login makes a session on a new device, or on an existing one of the user
// (whose old tokens are revoked, as the spec asks of a reused device_id).
func (s *Service) login(ctx context.Context, userID, deviceID, displayName string, refreshable bool) (Session, error) {
	dev := deviceItem{DeviceID: deviceID, DisplayName: displayName}
	var ops []store.Op
	if deviceID == "" {
		dev.DeviceID = newDeviceID()
	} else {
		var old deviceItem
		err := s.Store.Get(ctx, store.Key{PK: userPK(userID), SK: "device|" + deviceID}, &old)
		switch {
		case err == nil:
			ops = append(ops, revokeOps(old)...)
			if displayName == "" {
				dev.DisplayName = old.DisplayName
			}
			dev.CreatedTS = old.CreatedTS
		case !errors.Is(err, store.ErrNotFound):
			return Session{}, fmt.Errorf("login: %w", err)
		}
	}
	tokens, more := s.tokenOps(userID, dev, refreshable, "")
	if err := s.Store.Transact(ctx, append(ops, more...)...); err != nil {
		return Session{}, fmt.Errorf("login: %w", err)
	}
	return Session{UserID: userID, DeviceID: dev.DeviceID, AccessToken: tokens.AccessToken,
		RefreshToken: tokens.RefreshToken, ExpiresIn: tokens.ExpiresIn}, nil
}

// revokeOps delete a device's tokens.
func revokeOps(d deviceItem) []store.Op {
	var ops []store.Op
	if d.TokenHash != "" {
		ops = append(ops, store.DeleteOp(store.Key{PK: tokenPK(d.TokenHash), SK: "token"}))
	}
	if d.RefreshHash != "" {
		ops = append(ops, store.DeleteOp(store.Key{PK: refreshPK(d.RefreshHash), SK: "refresh"}))
	}
	return ops
}

// checkDeviceID keeps client-chosen device IDs to the spec's 255 bytes,
// which fit in a key, before anything is read.
func checkDeviceID(id string) error {
	if len(id) > maxIDLength || strings.ContainsAny(id, "|\x00") {
		return httpapi.InvalidParam("device_id must be at most %d bytes and contain no '|'", maxIDLength)
	}
	return nil
}

// handleRefresh serves POST /_matrix/client/v3/refresh.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3refresh
func (s *Service) handleRefresh(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.RefreshToken == "" {
		return httpapi.MissingParam("refresh_token is required")
	}
	out, err := s.Refresh(r.Context(), req.RefreshToken)
	if errors.Is(err, ErrUnknownToken) {
		return unknownToken(false)
	}
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{
		"access_token": out.AccessToken, "refresh_token": out.RefreshToken, "expires_in_ms": out.ExpiresIn.Milliseconds(),
	})
	return nil
}
