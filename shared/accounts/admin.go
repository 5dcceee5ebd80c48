package accounts

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// The admin API is Synapse's, so that operators' scripts and tools (such as
// synapse-admin) work unchanged: https://element-hq.github.io/synapse/latest/usage/administration/admin_api/

// RequireAdmin is RequireAuth for server admins: anyone else gets 403.
func (s *Service) RequireAdmin(next http.HandlerFunc) http.HandlerFunc {
	return s.RequireAuth(httpapi.Handle(func(w http.ResponseWriter, r *http.Request) error {
		acct, err := s.account(r, Caller(r.Context()).UserID)
		if err != nil {
			return err
		}
		if !acct.Admin {
			return httpapi.Forbidden("you are not a server admin")
		}
		next(w, r)
		return nil
	}))
}

func (s *Service) account(r *http.Request, userID string) (accountItem, error) {
	var acct accountItem
	err := s.Store.Get(r.Context(), store.Key{PK: userPK(userID), SK: "account"}, &acct)
	if errors.Is(err, store.ErrNotFound) {
		return acct, httpapi.NotFound("user %s not found", userID)
	}
	return acct, err
}

// localUser checks that the path's user ID is one of this server's, and no
// longer than the spec's 255 bytes, before anything is read.
func (s *Service) localUser(r *http.Request) (string, error) {
	userID := r.PathValue("userId")
	if err := checkID("the user ID", userID); err != nil {
		return "", err
	}
	if !strings.HasPrefix(userID, "@") || !strings.HasSuffix(userID, ":"+s.ServerName) {
		return "", httpapi.InvalidParam("%s is not a user of this server (%s)", userID, s.ServerName)
	}
	return userID, nil
}

// writeAdminUser answers with a user as Synapse's admin API shows one; its
// profile comes from the Profiles hook.
func (s *Service) writeAdminUser(w http.ResponseWriter, r *http.Request, status int, acct accountItem) error {
	var display, avatar string
	if s.Profiles != nil {
		var err error
		if display, avatar, err = s.Profiles.Names(r.Context(), acct.UserID); err != nil {
			return err
		}
	}
	httpapi.WriteJSON(w, status, map[string]any{
		"name": acct.UserID, "displayname": display, "avatar_url": nilIfEmpty(avatar),
		"admin": acct.Admin, "deactivated": acct.Deactivated, "is_guest": false, "user_type": nil,
		"creation_ts": acct.CreatedTS / 1000, "threepids": []any{}, "external_ids": []any{}, "erased": false,
	})
	return nil
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// handleAdminGetUser serves GET /_synapse/admin/v2/users/{userId}.
func (s *Service) handleAdminGetUser(w http.ResponseWriter, r *http.Request) error {
	userID, err := s.localUser(r)
	if err != nil {
		return err
	}
	acct, err := s.account(r, userID)
	if err != nil {
		return err
	}
	return s.writeAdminUser(w, r, http.StatusOK, acct)
}

// handleAdminPutUser serves PUT /_synapse/admin/v2/users/{userId}: it
// creates the user (201) or changes display name, password, admin flag and
// deactivation of an existing one (200), in that order, as Synapse does. The
// display name goes through the profile package, which tells the user's
// rooms. A password over 512 bytes is Synapse's 400 "Invalid password".
func (s *Service) handleAdminPutUser(w http.ResponseWriter, r *http.Request) error {
	userID, err := s.localUser(r)
	if err != nil {
		return err
	}
	var req struct {
		Password      *string `json:"password"`
		DisplayName   *string `json:"displayname"`
		Admin         *bool   `json:"admin"`
		Deactivated   *bool   `json:"deactivated"`
		LogoutDevices *bool   `json:"logout_devices"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.Password != nil {
		if err := checkNewPassword(*req.Password); err != nil {
			return err
		}
	}
	acct, err := s.account(r, userID)
	var nf *httpapi.Error
	if errors.As(err, &nf) && nf.Status == http.StatusNotFound {
		if req.Password == nil || *req.Password == "" {
			return httpapi.MissingParam("password is required to create a user")
		}
		localpart := strings.TrimSuffix(strings.TrimPrefix(userID, "@"), ":"+s.ServerName)
		u := NewUser{Localpart: localpart, Password: *req.Password, InhibitLogin: true}
		if req.Admin != nil {
			u.Admin = *req.Admin
		}
		if req.DisplayName != nil {
			u.DisplayName = *req.DisplayName
		}
		if _, err := s.Register(r.Context(), u); err != nil {
			return registrationError(err)
		}
		if acct, err = s.account(r, userID); err != nil {
			return err
		}
		return s.writeAdminUser(w, r, http.StatusCreated, acct)
	}
	if err != nil {
		return err
	}
	if req.DisplayName != nil && s.Profiles != nil {
		if err := s.Profiles.SetDisplayName(r.Context(), userID, *req.DisplayName); err != nil {
			return err
		}
	}
	if req.Password != nil {
		if err := s.SetPassword(r.Context(), userID, *req.Password, req.LogoutDevices == nil || *req.LogoutDevices, ""); err != nil {
			return err
		}
		if acct, err = s.account(r, userID); err != nil {
			return err
		}
	}
	if req.Admin != nil || req.Deactivated != nil {
		if req.Admin != nil {
			acct.Admin = *req.Admin
		}
		deactivating := req.Deactivated != nil && *req.Deactivated && !acct.Deactivated
		reactivating := req.Deactivated != nil && !*req.Deactivated && acct.Deactivated
		if req.Deactivated != nil && !*req.Deactivated {
			acct.Deactivated = false
		}
		var err error
		if deactivating {
			err = s.deactivate(r.Context(), acct)
			acct.Deactivated = true
		} else {
			err = s.Store.Put(r.Context(), acct)
		}
		if err != nil {
			return err
		}
		if reactivating && s.ActiveChanged != nil {
			if err := s.ActiveChanged(r.Context(), userID, true); err != nil {
				return err
			}
		}
	}
	return s.writeAdminUser(w, r, http.StatusOK, acct)
}

// handleAdminListUsers serves GET /_synapse/admin/v2/users: one index Query
// per page, in user ID order; `from` is the opaque next_token of the last
// page.
func (s *Service) handleAdminListUsers(w http.ResponseWriter, r *http.Request) error {
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return httpapi.InvalidParam("limit must be a number from 1 to 1000")
		}
		limit = n
	}
	var page []accountItem
	next, err := s.Store.QueryPage(r.Context(), store.Query{PK: accountsIndexPK, Index: "gsi1", Limit: limit, Cursor: r.URL.Query().Get("from")}, &page)
	if err != nil {
		return httpapi.InvalidParam("bad from token")
	}
	users := make([]map[string]any, 0, len(page))
	for _, a := range page {
		if a.Deactivated && r.URL.Query().Get("deactivated") != "true" {
			continue
		}
		users = append(users, map[string]any{"name": a.UserID, "admin": a.Admin, "deactivated": a.Deactivated,
			"is_guest": false, "user_type": nil, "creation_ts": a.CreatedTS / 1000})
	}
	body := map[string]any{"users": users, "total": len(users)}
	if next != "" {
		body["next_token"] = next
	}
	httpapi.WriteJSON(w, http.StatusOK, body)
	return nil
}

// handleAdminResetPassword serves POST
// /_synapse/admin/v1/reset_password/{userId}. A password over 512 bytes is
// Synapse's 400 "Invalid password".
func (s *Service) handleAdminResetPassword(w http.ResponseWriter, r *http.Request) error {
	userID, err := s.localUser(r)
	if err != nil {
		return err
	}
	var req struct {
		NewPassword   string `json:"new_password"`
		LogoutDevices *bool  `json:"logout_devices"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.NewPassword == "" {
		return httpapi.MissingParam("new_password is required")
	}
	if err := checkNewPassword(req.NewPassword); err != nil {
		return err
	}
	if _, err := s.account(r, userID); err != nil {
		return err
	}
	if err := s.SetPassword(r.Context(), userID, req.NewPassword, req.LogoutDevices == nil || *req.LogoutDevices, ""); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{})
	return nil
}

// handleAdminDeactivate serves POST /_synapse/admin/v1/deactivate/{userId}.
func (s *Service) handleAdminDeactivate(w http.ResponseWriter, r *http.Request) error {
	userID, err := s.localUser(r)
	if err != nil {
		return err
	}
	var req struct {
		Erase bool `json:"erase"`
	}
	if err := decodeOptionalJSON(r, &req); err != nil {
		return err
	}
	acct, err := s.account(r, userID)
	if err != nil {
		return err
	}
	if err := s.deactivate(r.Context(), acct); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"id_server_unbind_result": "success"})
	return nil
}

// IsAdmin reports whether the request's caller is a server admin.
func (s *Service) IsAdmin(r *http.Request) (bool, error) {
	acct, err := s.account(r, Caller(r.Context()).UserID)
	if err != nil {
		return false, err
	}
	return acct.Admin, nil
}
