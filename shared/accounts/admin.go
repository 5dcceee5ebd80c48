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
	return s.RequireAuth(func(w http.ResponseWriter, r *http.Request) {
		acct, err := s.account(r, Caller(r.Context()).UserID)
		if err != nil {
			httpapi.WriteError(w, r, err)
			return
		}
		if !acct.Admin {
			httpapi.WriteError(w, r, httpapi.Forbidden("you are not a server admin"))
			return
		}
		next(w, r)
	})
}

func (s *Service) account(r *http.Request, userID string) (accountItem, error) {
	var acct accountItem
	err := s.Store.Get(r.Context(), store.Key{PK: userPK(userID), SK: "account"}, &acct)
	if errors.Is(err, store.ErrNotFound) {
		return acct, httpapi.NotFound("user %s not found", userID)
	}
	return acct, err
}

// localUser checks that the path's user ID is one of this server's.
func (s *Service) localUser(r *http.Request) (string, error) {
	userID := r.PathValue("userId")
	if !strings.HasPrefix(userID, "@") || !strings.HasSuffix(userID, ":"+s.ServerName) {
		return "", httpapi.InvalidParam("%s is not a user of this server (%s)", userID, s.ServerName)
	}
	return userID, nil
}

func (s *Service) adminUserJSON(r *http.Request, acct accountItem) map[string]any {
	var prof profileItem
	s.Store.Get(r.Context(), store.Key{PK: userPK(acct.UserID), SK: "profile"}, &prof)
	return map[string]any{
		"name": acct.UserID, "displayname": prof.DisplayName, "avatar_url": nilIfEmpty(prof.AvatarURL),
		"admin": acct.Admin, "deactivated": acct.Deactivated, "is_guest": false, "user_type": nil,
		"creation_ts": acct.CreatedTS / 1000, "threepids": []any{}, "external_ids": []any{}, "erased": false,
	}
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// AdminGetUser serves GET /_synapse/admin/v2/users/{userId}.
func (s *Service) AdminGetUser(w http.ResponseWriter, r *http.Request) {
	userID, err := s.localUser(r)
	if err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	acct, err := s.account(r, userID)
	if err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, s.adminUserJSON(r, acct))
}

// AdminPutUser serves PUT /_synapse/admin/v2/users/{userId}: it creates the
// user (201) or changes password, display name, admin flag and deactivation
// of an existing one (200).
func (s *Service) AdminPutUser(w http.ResponseWriter, r *http.Request) {
	userID, err := s.localUser(r)
	if err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	var req struct {
		Password      *string `json:"password"`
		DisplayName   *string `json:"displayname"`
		Admin         *bool   `json:"admin"`
		Deactivated   *bool   `json:"deactivated"`
		LogoutDevices *bool   `json:"logout_devices"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	acct, err := s.account(r, userID)
	var nf *httpapi.Error
	if errors.As(err, &nf) && nf.Status == http.StatusNotFound {
		if req.Password == nil || *req.Password == "" {
			httpapi.WriteError(w, r, httpapi.MissingParam("password is required to create a user"))
			return
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
			httpapi.WriteError(w, r, registrationError(err))
			return
		}
		acct, _ = s.account(r, userID)
		httpapi.WriteJSON(w, http.StatusCreated, s.adminUserJSON(r, acct))
		return
	}
	if err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	if req.Password != nil {
		if err := s.SetPassword(r.Context(), userID, *req.Password, req.LogoutDevices == nil || *req.LogoutDevices, ""); err != nil {
			httpapi.WriteError(w, r, err)
			return
		}
		acct, _ = s.account(r, userID)
	}
	if req.Admin != nil || req.Deactivated != nil {
		if req.Admin != nil {
			acct.Admin = *req.Admin
		}
		deactivating := req.Deactivated != nil && *req.Deactivated && !acct.Deactivated
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
			httpapi.WriteError(w, r, err)
			return
		}
	}
	if req.DisplayName != nil {
		var prof profileItem
		s.Store.Get(r.Context(), store.Key{PK: userPK(userID), SK: "profile"}, &prof)
		prof.PK, prof.SK, prof.DisplayName = userPK(userID), "profile", *req.DisplayName
		if err := s.Store.Put(r.Context(), prof); err != nil {
			httpapi.WriteError(w, r, err)
			return
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, s.adminUserJSON(r, acct))
}

// AdminListUsers serves GET /_synapse/admin/v2/users: one index Query per
// page, in user ID order; `from` is the opaque next_token of the last page.
func (s *Service) AdminListUsers(w http.ResponseWriter, r *http.Request) {
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			httpapi.WriteError(w, r, httpapi.InvalidParam("limit must be a number from 1 to 1000"))
			return
		}
		limit = n
	}
	var page []accountItem
	next, err := s.Store.QueryPage(r.Context(), store.Query{PK: accountsIndexPK, Index: "gsi1", Limit: limit, Cursor: r.URL.Query().Get("from")}, &page)
	if err != nil {
		httpapi.WriteError(w, r, httpapi.InvalidParam("bad from token"))
		return
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
}

// AdminResetPassword serves POST /_synapse/admin/v1/reset_password/{userId}.
func (s *Service) AdminResetPassword(w http.ResponseWriter, r *http.Request) {
	userID, err := s.localUser(r)
	if err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	var req struct {
		NewPassword   string `json:"new_password"`
		LogoutDevices *bool  `json:"logout_devices"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	if req.NewPassword == "" {
		httpapi.WriteError(w, r, httpapi.MissingParam("new_password is required"))
		return
	}
	if _, err := s.account(r, userID); err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	if err := s.SetPassword(r.Context(), userID, req.NewPassword, req.LogoutDevices == nil || *req.LogoutDevices, ""); err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{})
}

// AdminDeactivate serves POST /_synapse/admin/v1/deactivate/{userId}.
func (s *Service) AdminDeactivate(w http.ResponseWriter, r *http.Request) {
	userID, err := s.localUser(r)
	if err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	var req struct {
		Erase bool `json:"erase"`
	}
	if err := decodeOptionalJSON(r, &req); err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	acct, err := s.account(r, userID)
	if err == nil {
		err = s.deactivate(r.Context(), acct)
	}
	if err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"id_server_unbind_result": "success"})
}

// IsAdmin reports whether the request's caller is a server admin.
func (s *Service) IsAdmin(r *http.Request) (bool, error) {
	acct, err := s.account(r, Caller(r.Context()).UserID)
	if err != nil {
		return false, err
	}
	return acct.Admin, nil
}
