package accounts

import (
	"bytes"
	"io"
	"net/http"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// ChangePassword serves POST /_matrix/client/v3/account/password, behind
// user-interactive auth with the current password. Unless logout_devices is
// false, every other device is logged out.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3accountpassword
func (s *Service) ChangePassword(w http.ResponseWriter, r *http.Request) {
	var req struct {
		NewPassword   string   `json:"new_password"`
		LogoutDevices *bool    `json:"logout_devices"`
		Auth          authData `json:"auth"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	if !s.passwordUIA(w, r, req.Auth) {
		return
	}
	if req.NewPassword == "" {
		httpapi.WriteError(w, r, httpapi.MissingParam("new_password is required"))
		return
	}
	caller := Caller(r.Context())
	if err := s.SetPassword(r, caller.UserID, req.NewPassword); err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	if req.LogoutDevices == nil || *req.LogoutDevices {
		if err := s.logoutAll(r.Context(), caller.UserID, caller.DeviceID); err != nil {
			httpapi.WriteError(w, r, err)
			return
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{})
}

// SetPassword replaces a user's password hash.
func (s *Service) SetPassword(r *http.Request, userID, password string) error {
	var acct accountItem
	if err := s.Store.Get(r.Context(), store.Key{PK: userPK(userID), SK: "account"}, &acct); err != nil {
		return err
	}
	hash, err := HashPassword(password)
	if err != nil {
		return err
	}
	acct.PasswordHash = hash
	return s.Store.Put(r.Context(), acct)
}

// Deactivate serves POST /_matrix/client/v3/account/deactivate, behind
// user-interactive auth: the account is marked deactivated (its ID is never
// given out again) and every device and token goes.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3accountdeactivate
func (s *Service) Deactivate(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Auth authData `json:"auth"`
	}
	if err := decodeOptionalJSON(r, &req); err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	if !s.passwordUIA(w, r, req.Auth) {
		return
	}
	caller := Caller(r.Context())
	var acct accountItem
	if err := s.Store.Get(r.Context(), store.Key{PK: userPK(caller.UserID), SK: "account"}, &acct); err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	acct.Deactivated = true
	if err := s.Store.Put(r.Context(), acct); err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	if err := s.logoutAll(r.Context(), caller.UserID, ""); err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"id_server_unbind_result": "no-support"})
}
