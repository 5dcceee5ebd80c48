package accounts

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// nonceLifetime is how long a registration nonce may be used, as in Synapse.
const nonceLifetime = 60 * time.Second

type nonceItem struct {
	PK      string `dynamodbav:"pk"`
	SK      string `dynamodbav:"sk"`
	Expires int64  `dynamodbav:"expires_at"`
}

// SharedSecret serves Synapse's shared-secret registration API, so that
// `cirrus register` and Synapse's own register_new_matrix_user create users
// while public registration is closed.
// https://element-hq.github.io/synapse/latest/admin_api/register_api.html
type SharedSecret struct {
	Accounts *Service
	// Secret is registration_shared_secret; empty disables the API.
	Secret string
}

// handleNonce serves GET /_synapse/admin/v1/register: a single-use nonce
// that expires after a minute. It counts under the address's limit of
// shared-secret requests, since each nonce is a write.
func (h *SharedSecret) handleNonce(w http.ResponseWriter, r *http.Request) error {
	if h.Secret == "" {
		return httpapi.Errorf(http.StatusBadRequest, "M_UNKNOWN", "shared secret registration is not enabled")
	}
	if err := h.Accounts.allowSharedSecret(r); err != nil {
		return err
	}
	var b [32]byte
	rand.Read(b[:])
	nonce := hex.EncodeToString(b[:])
	exp := h.Accounts.now().Add(nonceLifetime).Unix()
	if err := h.Accounts.Store.Put(r.Context(), nonceItem{PK: "nonce|" + nonce, SK: "nonce", Expires: exp}); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"nonce": nonce})
	return nil
}

type sharedSecretRequest struct {
	Nonce       string `json:"nonce"`
	Username    string `json:"username"`
	DisplayName string `json:"displayname"`
	Password    string `json:"password"`
	Admin       bool   `json:"admin"`
	UserType    string `json:"user_type"`
	MAC         string `json:"mac"`
}

// handleRegister serves POST /_synapse/admin/v1/register: it checks the
// nonce (consumed whatever follows) and the HMAC-SHA1 of nonce, username,
// password, admin flag and user type under the shared secret, then creates
// the user with a device and an access token. Each request counts under
// its address's limit; an unknown nonce or a wrong MAC counts as a failure
// too, and an address that failed too often is refused before the nonce
// is read. The fields are checked first, as Synapse checks them: a
// password over 512 bytes or holding a NUL is its 400 "Invalid password".
func (h *SharedSecret) handleRegister(w http.ResponseWriter, r *http.Request) error {
	if h.Secret == "" {
		return httpapi.Errorf(http.StatusBadRequest, "M_UNKNOWN", "shared secret registration is not enabled")
	}
	if err := h.Accounts.allowSharedSecret(r); err != nil {
		return err
	}
	var req sharedSecretRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	switch {
	case req.Nonce == "":
		return httpapi.MissingParam("nonce is missing")
	case len(req.Nonce) > maxIDLength:
		return httpapi.InvalidParam("nonce is longer than %d bytes", maxIDLength)
	case req.Username == "" || len(req.Username) > 512:
		return httpapi.Errorf(http.StatusBadRequest, "M_INVALID_USERNAME", "username must be given, at most 512 bytes")
	case req.Password == "":
		return httpapi.Errorf(http.StatusBadRequest, "M_INVALID_PARAM", "password must be given")
	case len(req.Password) > MaxPasswordLength || strings.Contains(req.Password, "\x00"):
		return errInvalidPassword
	case req.UserType != "":
		return httpapi.InvalidParam("user_type %q is not supported", req.UserType)
	}
	var n nonceItem
	if err := h.Accounts.Store.Consume(r.Context(), store.Key{PK: "nonce|" + req.Nonce, SK: "nonce"}, &n); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			if err := h.Accounts.sharedSecretFailed(r); err != nil {
				return err
			}
			return httpapi.Errorf(http.StatusBadRequest, "M_UNKNOWN", "unrecognised nonce")
		}
		return err
	}
	if !hmac.Equal([]byte(req.MAC), []byte(RegistrationMAC(h.Secret, req.Nonce, req.Username, req.Password, req.Admin))) {
		if err := h.Accounts.sharedSecretFailed(r); err != nil {
			return err
		}
		return httpapi.Forbidden("HMAC incorrect")
	}
	sess, err := h.Accounts.Register(r.Context(), NewUser{
		Localpart: req.Username, Password: req.Password, Admin: req.Admin, DisplayName: req.DisplayName,
	})
	if err := registrationError(err); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{
		"user_id": sess.UserID, "access_token": sess.AccessToken, "home_server": h.Accounts.ServerName, "device_id": sess.DeviceID,
	})
	return nil
}

// RegistrationMAC is the hex HMAC-SHA1 Synapse's register_new_matrix_user
// sends: of nonce, username, password and "admin" or "notadmin", joined by
// NUL bytes, keyed with the shared secret.
func RegistrationMAC(secret, nonce, username, password string, admin bool) string {
	mac := hmac.New(sha1.New, []byte(secret))
	role := "notadmin"
	if admin {
		role = "admin"
	}
	mac.Write([]byte(nonce + "\x00" + username + "\x00" + password + "\x00" + role))
	return hex.EncodeToString(mac.Sum(nil))
}
