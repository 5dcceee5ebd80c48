package accounts

import (
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

type registerRequest struct {
	Username                 string   `json:"username"`
	Password                 string   `json:"password"`
	DeviceID                 string   `json:"device_id"`
	InitialDeviceDisplayName string   `json:"initial_device_display_name"`
	InhibitLogin             bool     `json:"inhibit_login"`
	RefreshToken             bool     `json:"refresh_token"`
	Auth                     authData `json:"auth"`
}

// Registration serves the public registration API.
type Registration struct {
	Accounts *Service
	// Open is enable_registration: closed, only operators create users.
	Open bool
	// RequireToken is registration_requires_token: the stage is then
	// m.login.registration_token instead of m.login.dummy.
	RequireToken bool
}

// Register serves POST /_matrix/client/v3/register with user-interactive
// auth m.login.dummy.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3register
func (h *Registration) Register(w http.ResponseWriter, r *http.Request) {
	if kind := r.URL.Query().Get("kind"); kind == "guest" {
		httpapi.WriteError(w, r, httpapi.Errorf(http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN", "guest access is disabled on this server"))
		return
	} else if kind != "" && kind != "user" {
		httpapi.WriteError(w, r, httpapi.InvalidParam("kind must be user or guest"))
		return
	}
	if !h.Open {
		httpapi.WriteError(w, r, httpapi.Forbidden("registration is disabled on this server: ask its operator for an account"))
		return
	}
	if err := h.Accounts.allow(r, h.Accounts.Limits.RegisterAddress, clientAddress(r)); err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	var req registerRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	// Synapse folds the requested name to lower case rather than refusing it.
	req.Username = strings.ToLower(req.Username)
	if req.Username == "" {
		req.Username = generatedLocalpart()
	}
	if err := h.available(r, req.Username); err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	if err := checkDeviceID(req.DeviceID); err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	stage := "m.login.dummy"
	if h.RequireToken {
		stage = "m.login.registration_token"
	}
	flows := []uiaFlow{{Stages: []string{stage}}}
	if req.Auth.Session != "" {
		if _, err := h.Accounts.session(r.Context(), r, req.Auth.Session); err != nil {
			httpapi.WriteError(w, r, err)
			return
		}
	}
	if req.Auth.Type != stage {
		var failure *httpapi.Error
		if req.Auth.Type != "" {
			failure = httpapi.Errorf(http.StatusUnauthorized, "M_UNRECOGNIZED", "auth type %q is not offered here: use %s", req.Auth.Type, stage)
		}
		h.Accounts.challenge(w, r, flows, req.Auth.Session, "", failure)
		return
	}
	if h.RequireToken {
		ok, err := h.Accounts.validToken(r.Context(), req.Auth.Token)
		if err != nil {
			httpapi.WriteError(w, r, err)
			return
		}
		if !ok {
			h.Accounts.challenge(w, r, flows, req.Auth.Session, "",
				httpapi.Errorf(http.StatusUnauthorized, "M_UNAUTHORIZED", "invalid registration token"))
			return
		}
	}
	if req.Password == "" {
		httpapi.WriteError(w, r, httpapi.MissingParam("password is required"))
		return
	}
	sess, err := h.Accounts.Register(r.Context(), NewUser{
		Localpart: req.Username, Password: req.Password, DeviceID: req.DeviceID,
		DeviceDisplayName: req.InitialDeviceDisplayName, InhibitLogin: req.InhibitLogin, Refreshable: req.RefreshToken,
	})
	if err := registrationError(err); err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	if h.RequireToken {
		if err := h.Accounts.useToken(r.Context(), req.Auth.Token); err != nil {
			httpapi.WriteError(w, r, err)
			return
		}
	}
	if req.Auth.Session != "" {
		h.Accounts.Store.Delete(r.Context(), uiaKey(req.Auth.Session))
	}
	if req.InhibitLogin {
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"user_id": sess.UserID, "home_server": h.Accounts.ServerName})
		return
	}
	h.Accounts.writeSession(w, sess, false)
}

// Available serves GET /_matrix/client/v3/register/available, which works
// whether registration is open or not.
func (h *Registration) Available(w http.ResponseWriter, r *http.Request) {
	username := r.URL.Query().Get("username")
	if username == "" {
		httpapi.WriteError(w, r, httpapi.MissingParam("username is required"))
		return
	}
	if err := h.available(r, strings.ToLower(username)); err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]bool{"available": true})
}

func (h *Registration) available(r *http.Request, username string) error {
	if err := ValidLocalpart(username, h.Accounts.ServerName); err != nil {
		return registrationError(err)
	}
	var acct accountItem
	err := h.Accounts.Store.Get(r.Context(), store.Key{PK: userPK("@" + username + ":" + h.Accounts.ServerName), SK: "account"}, &acct)
	if err == nil {
		return registrationError(ErrUserInUse)
	}
	if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return nil
}

// registrationError maps account errors to the spec's errcodes.
func registrationError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrInvalidUsername):
		return httpapi.Errorf(http.StatusBadRequest, "M_INVALID_USERNAME", "%v", err)
	case errors.Is(err, ErrUserInUse):
		return httpapi.Errorf(http.StatusBadRequest, "M_USER_IN_USE", "user ID already taken")
	}
	return err
}

// generatedLocalpart names a user who asked for no name.
func generatedLocalpart() string {
	n, _ := rand.Int(rand.Reader, big.NewInt(1e10))
	return fmt.Sprintf("user%010d", n)
}
