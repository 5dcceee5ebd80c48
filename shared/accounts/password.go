package accounts

import (
	"context"
	"fmt"
	"net/http"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// handleChangePassword serves POST /_matrix/client/v3/account/password,
// behind user-interactive auth with the current password. Unless
// logout_devices is false, every other device is logged out. A new password
// over 512 bytes is refused as Synapse refuses it, before the auth.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3accountpassword
//
// When this server validates email addresses, m.login.email.identity is
// offered beside the password: the validated address must be the caller's.
func (s *Service) handleChangePassword(w http.ResponseWriter, r *http.Request) error {
	var req passwordRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	if err := checkNewPassword(req.NewPassword); err != nil {
		return err
	}
	if ok, err := s.callerUIA(w, r, req.Auth, s.ThreePIDs != nil); !ok {
		return err
	}
	if req.NewPassword == "" {
		return httpapi.MissingParam("new_password is required")
	}
	caller := Caller(r.Context())
	if err := s.SetPassword(r.Context(), caller.UserID, req.NewPassword, req.logout(), caller.DeviceID); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{})
	return nil
}

// passwordRequest is the body of POST /account/password.
type passwordRequest struct {
	NewPassword   string   `json:"new_password"`
	LogoutDevices *bool    `json:"logout_devices"`
	Auth          authData `json:"auth"`
}

// logout is logout_devices, true unless the client says false.
func (req passwordRequest) logout() bool { return req.LogoutDevices == nil || *req.LogoutDevices }

// SetPassword replaces a user's password hash and, with logout, logs out
// every device but keep (empty: all of them). A password over 512 bytes is
// Synapse's 400 "Invalid password".
func (s *Service) SetPassword(ctx context.Context, userID, password string, logout bool, keep string) error {
	hash, err := HashPassword(password)
	if err != nil {
		return passwordError(err)
	}
	var acct accountItem
	if err := s.Store.Get(ctx, store.Key{PK: userPK(userID), SK: "account"}, &acct); err != nil {
		return fmt.Errorf("set password: %w", err)
	}
	acct.PasswordHash = hash
	if err := s.Store.Put(ctx, acct); err != nil {
		return fmt.Errorf("set password: %w", err)
	}
	if logout {
		return s.logoutAll(ctx, userID, keep)
	}
	return nil
}

// deactivate marks an account deactivated (its ID is never given out again)
// and logs it out everywhere.
func (s *Service) deactivate(ctx context.Context, acct accountItem) error {
	acct.Deactivated = true
	if err := s.Store.Put(ctx, acct); err != nil {
		return fmt.Errorf("deactivate: %w", err)
	}
	if s.ActiveChanged != nil {
		if err := s.ActiveChanged(ctx, acct.UserID, false); err != nil {
			return fmt.Errorf("deactivate: %w", err)
		}
	}
	// Its addresses go, as Synapse's do: they may be bound to a new
	// account, and no longer reset this one's password.
	if s.ThreePIDs != nil {
		if err := s.ThreePIDs.RemoveAll(ctx, acct.UserID); err != nil {
			return fmt.Errorf("deactivate: %w", err)
		}
	}
	return s.logoutAll(ctx, acct.UserID, "")
}

// handleDeactivate serves POST /_matrix/client/v3/account/deactivate,
// behind user-interactive auth: the account is marked deactivated (its ID is
// never given out again) and every device and token goes.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3accountdeactivate
func (s *Service) handleDeactivate(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Auth authData `json:"auth"`
	}
	if err := decodeOptionalJSON(r, &req); err != nil {
		return err
	}
	if ok, err := s.passwordUIA(w, r, req.Auth); !ok {
		return err
	}
	acct, err := s.account(r, Caller(r.Context()).UserID)
	if err != nil {
		return err
	}
	if err := s.deactivate(r.Context(), acct); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"id_server_unbind_result": "no-support"})
	return nil
}
