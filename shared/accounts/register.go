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

// handleRegister serves POST /_matrix/client/v3/register with
// user-interactive auth m.login.dummy (or m.login.registration_token). A
// password over 512 bytes is refused as Synapse refuses it.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3register
func (h *Registration) handleRegister(w http.ResponseWriter, r *http.Request) error {
	if kind := r.URL.Query().Get("kind"); kind == "guest" {
		return httpapi.Errorf(http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN", "guest access is disabled on this server")
	} else if kind != "" && kind != "user" {
		return httpapi.InvalidParam("kind must be user or guest")
	}
	if !h.Open {
		return httpapi.Forbidden("registration is disabled on this server: ask its operator for an account")
	}
	if err := h.Accounts.Limiter.Allow(r.Context(), h.Accounts.Limits.RegisterAddress, clientAddress(r)); err != nil {
		return err
	}
	var req registerRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	if err := checkNewPassword(req.Password); err != nil {
		return err
	}
	if err := checkID("auth.session", req.Auth.Session); err != nil {
		return err
	}
	// Synapse folds the requested name to lower case rather than refusing it.
	req.Username = strings.ToLower(req.Username)
	if req.Username == "" {
		req.Username = generatedLocalpart()
	}
	if err := checkDeviceID(req.DeviceID); err != nil {
		return err
	}
	if err := h.available(r, req.Username); err != nil {
		return err
	}
	stage := "m.login.dummy"
	if h.RequireToken {
		stage = "m.login.registration_token"
	}
	flows := []uiaFlow{{Stages: []string{stage}}}
	if req.Auth.Session != "" {
		if _, err := h.Accounts.session(r.Context(), r, req.Auth.Session); err != nil {
			return err
		}
	}
	if req.Auth.Type != stage {
		var failure *httpapi.Error
		if req.Auth.Type != "" {
			failure = httpapi.Errorf(http.StatusUnauthorized, "M_UNRECOGNIZED", "auth type %q is not offered here: use %s", req.Auth.Type, stage)
		}
		return h.Accounts.challenge(w, r, flows, req.Auth.Session, "", failure)
	}
	if h.RequireToken {
		ok, err := h.Accounts.validToken(r.Context(), req.Auth.Token)
		if err != nil {
			return err
		}
		if !ok {
			return h.Accounts.challenge(w, r, flows, req.Auth.Session, "",
				httpapi.Errorf(http.StatusUnauthorized, "M_UNAUTHORIZED", "invalid registration token"))
		}
	}
	if req.Password == "" {
		return httpapi.MissingParam("password is required")
	}
	sess, err := h.Accounts.Register(r.Context(), NewUser{
		Localpart: req.Username, Password: req.Password, DeviceID: req.DeviceID,
		DeviceDisplayName: req.InitialDeviceDisplayName, InhibitLogin: req.InhibitLogin, Refreshable: req.RefreshToken,
	})
	if err := registrationError(err); err != nil {
		return err
	}
	if h.RequireToken {
		if err := h.Accounts.useToken(r.Context(), req.Auth.Token); err != nil {
			return err
		}
	}
	if req.Auth.Session != "" {
		if err := h.Accounts.Store.Delete(r.Context(), uiaKey(req.Auth.Session)); err != nil {
			return err
		}
	}
	if req.InhibitLogin {
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"user_id": sess.UserID, "home_server": h.Accounts.ServerName})
		return nil
	}
	h.Accounts.writeSession(w, sess, false)
	return nil
}

// handleAvailable serves GET /_matrix/client/v3/register/available, which
// works whether registration is open or not.
func (h *Registration) handleAvailable(w http.ResponseWriter, r *http.Request) error {
	username := r.URL.Query().Get("username")
	if username == "" {
		return httpapi.MissingParam("username is required")
	}
	if err := h.available(r, strings.ToLower(username)); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]bool{"available": true})
	return nil
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
	return passwordError(err)
}

// generatedLocalpart names a user who asked for no name.
func generatedLocalpart() string {
	n, _ := rand.Int(rand.Reader, big.NewInt(1e10))
	return fmt.Sprintf("user%010d", n)
}
