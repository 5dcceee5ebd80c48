package accounts

import (
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"slices"
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

// handleRegister serves POST /_matrix/client/v3/register behind
// user-interactive auth with the flows of Registration.flows: stages may
// be completed one request at a time, the session keeping them. A
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
	flows := h.flows()
	var it uiaItem
	if req.Auth.Session != "" {
		var err error
		if it, err = h.Accounts.session(r.Context(), r, req.Auth.Session); err != nil {
			return err
		}
	}
	if req.Auth.Type == "" {
		return h.Accounts.progress(w, r, flows, it, false, nil)
	}
	if !offered(flows, req.Auth.Type) {
		return h.Accounts.progress(w, r, flows, it, false, httpapi.Errorf(http.StatusUnauthorized, "M_UNRECOGNIZED",
			"auth type %q is not offered here: complete one of the flows", req.Auth.Type))
	}
	failure, err := h.stage(r, req.Auth, &it)
	if err != nil {
		return err
	}
	if failure != nil || !satisfied(flows, it.Completed) {
		return h.Accounts.progress(w, r, flows, it, failure == nil, failure)
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
	if err := h.finish(r, sess.UserID, it); err != nil {
		return err
	}
	if req.InhibitLogin {
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"user_id": sess.UserID, "home_server": h.Accounts.ServerName})
		return nil
	}
	h.Accounts.writeSession(w, sess, false)
	return nil
}

// flows are the registration flows offered, as Synapse makes them: the
// dummy stage unless an email address is required, an email stage when
// addresses are validated, each after the registration token when one is
// required (the token alone stands for the dummy stage here).
func (h *Registration) flows() []uiaFlow {
	var flows []uiaFlow
	email := h.Accounts.ThreePIDs != nil
	if !email || !h.Accounts.RegistrationRequiresEmail {
		if h.RequireToken {
			flows = append(flows, uiaFlow{Stages: []string{"m.login.registration_token"}})
		} else {
			flows = append(flows, uiaFlow{Stages: []string{"m.login.dummy"}})
		}
	}
	if email {
		f := uiaFlow{Stages: []string{emailStage}}
		if h.RequireToken {
			f.Stages = []string{"m.login.registration_token", emailStage}
		}
		flows = append(flows, f)
	}
	return flows
}

// stage checks the stage the request completes and records it in the
// session. A failed stage is the *httpapi.Error for the 401's errcode; a
// validated address already bound to an account is Synapse's 400
// M_THREEPID_IN_USE.
func (h *Registration) stage(r *http.Request, auth authData, it *uiaItem) (*httpapi.Error, error) {
	switch auth.Type {
	case "m.login.registration_token":
		ok, err := h.Accounts.validToken(r.Context(), auth.Token)
		if err != nil {
			return nil, err
		}
		if !ok {
			return httpapi.Errorf(http.StatusUnauthorized, "M_UNAUTHORIZED", "invalid registration token"), nil
		}
		it.RegToken = auth.Token
	case emailStage:
		address, failure, err := h.Accounts.emailStageAddress(r, auth)
		if err != nil || failure != nil {
			return failure, err
		}
		owner, err := h.Accounts.ThreePIDs.UserOf(r.Context(), mediumEmail, address)
		if err != nil {
			return nil, err
		}
		if owner != "" {
			return nil, httpapi.Errorf(http.StatusBadRequest, "M_THREEPID_IN_USE", "this email address is already in use")
		}
		it.Email = address
	}
	if !slices.Contains(it.Completed, auth.Type) {
		it.Completed = append(it.Completed, auth.Type)
	}
	return nil, nil
}

// finish does what a registration's stages asked once the account exists:
// the token counts one use, the validated address is bound (and
// EmailBound told), the session goes.
func (h *Registration) finish(r *http.Request, userID string, it uiaItem) error {
	ctx := r.Context()
	if it.RegToken != "" {
		if err := h.Accounts.useToken(ctx, it.RegToken); err != nil {
			return err
		}
	}
	if it.Email != "" {
		if err := h.Accounts.ThreePIDs.Bind(ctx, userID, mediumEmail, it.Email); err != nil {
			return fmt.Errorf("register %s: bind its address: %w", userID, err)
		}
		if h.Accounts.EmailBound != nil {
			if err := h.Accounts.EmailBound(ctx, userID, it.Email); err != nil {
				return fmt.Errorf("register %s: %w", userID, err)
			}
		}
	}
	if it.PK != "" {
		return h.Accounts.Store.Delete(ctx, store.Key{PK: it.PK, SK: it.SK})
	}
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
