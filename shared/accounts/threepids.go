package accounts

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
)

// ThreePIDs is what accounts asks of the package that validates and binds
// third-party identifiers (shared/threepid): accounts never sends mail, it
// only reads what a validation session proved and who an address belongs to.
type ThreePIDs interface {
	// UserOf returns the user the address is bound to, "" if none.
	UserOf(ctx context.Context, medium, address string) (string, error)
	// Validated returns the address a validated session proved; an unknown,
	// unvalidated or expired session is a 400 M_THREEPID_AUTH_FAILED *httpapi.Error.
	Validated(ctx context.Context, sid, clientSecret string) (medium, address string, err error)
	// Consume ends a validation session once it did what it proved the
	// address for (a password reset), so that it cannot do it again.
	Consume(ctx context.Context, sid string) error
	// Bind binds the address to the user (400 M_THREEPID_IN_USE if another has it).
	Bind(ctx context.Context, userID, medium, address string) error
	// RemoveAll unbinds every address of the user (deactivation).
	RemoveAll(ctx context.Context, userID string) error
}

// The UIA stage of a validated email address, and the medium it proves.
const (
	emailStage  = "m.login.email.identity"
	mediumEmail = "email"
)

// threePIDCreds names a validation session: threepid_creds of the
// m.login.email.identity stage.
type threePIDCreds struct {
	SID          string `json:"sid"`
	ClientSecret string `json:"client_secret"`
}

// CanonicalAddress is an address in the form it is bound and looked up
// in: trimmed, and an email address in lower case, as Synapse stores them.
func CanonicalAddress(medium, address string) string {
	address = strings.TrimSpace(address)
	if medium == mediumEmail {
		address = strings.ToLower(address)
	}
	return address
}

// thirdPartyUser is the account a login's third-party identifier names, as
// accountOf makes one from a user ID. An address bound to nobody (or any
// address, when this server binds none) is local false under a key of its
// own, so that it is counted and answered as an unknown user is: the same
// 403 after the same work, never saying which of the two was wrong. An
// address longer than any this server binds is refused before the read.
func (s *Service) thirdPartyUser(ctx context.Context, medium, address string) (userID string, local bool, err error) {
	address = CanonicalAddress(medium, address)
	if medium == "" || address == "" {
		return "", false, httpapi.MissingParam("a third-party identifier needs a medium and an address")
	}
	if len(medium)+len(address) > maxIDLength || strings.ContainsAny(medium+address, "|\x00") {
		return "", false, httpapi.InvalidParam("the third-party address is longer than %d bytes or holds '|'", maxIDLength)
	}
	if s.ThreePIDs != nil {
		userID, err = s.ThreePIDs.UserOf(ctx, medium, address)
		// A medium or address that cannot be bound is one bound to
		// nobody: the spec's 403 for an unknown 3PID, not a 400 that
		// would tell it apart.
		var bad *httpapi.Error
		if errors.As(err, &bad) && bad.Status == http.StatusBadRequest {
			err, userID = nil, ""
		}
		if err != nil {
			return "", false, err
		}
		if userID != "" {
			return userID, true, nil
		}
	}
	return medium + ":" + address, false, nil
}

// creds is the stage's threepid_creds, or the legacy threepidCreds that
// old clients (Riot, Synapse before 1.0) send.
func (a authData) creds() *threePIDCreds {
	if a.ThreePIDCreds != nil {
		return a.ThreePIDCreds
	}
	return a.LegacyThreePIDCreds
}

// emailStageAddress checks an m.login.email.identity stage and returns the
// address its validation session proved. A failure of the stage itself
// (missing creds, a session not validated) is a *httpapi.Error for the
// UIA answer's errcode, as Synapse merges it into the 401; anything else is
// an error of the request. Its callers count the request under a limit of
// the caller's address first (a session ID and client secret are guessed
// no faster than passwords are).
func (s *Service) emailStageAddress(r *http.Request, auth authData) (string, *httpapi.Error, error) {
	creds := auth.creds()
	if creds == nil {
		return "", httpapi.MissingParam("Missing threepid_creds"), nil
	}
	if creds.SID == "" || creds.ClientSecret == "" {
		return "", httpapi.MissingParam("threepid_creds needs sid and client_secret"), nil
	}
	if err := checkID("threepid_creds.sid", creds.SID); err != nil {
		return "", nil, err
	}
	if err := checkID("threepid_creds.client_secret", creds.ClientSecret); err != nil {
		return "", nil, err
	}
	medium, address, err := s.ThreePIDs.Validated(r.Context(), creds.SID, creds.ClientSecret)
	var failure *httpapi.Error
	if errors.As(err, &failure) && failure.Code == "M_THREEPID_AUTH_FAILED" {
		return "", failure, nil
	}
	if err != nil {
		return "", nil, err
	}
	if medium != mediumEmail {
		return "", httpapi.Errorf(http.StatusUnauthorized, "M_THREEPID_AUTH_FAILED",
			"expecting a validated email address, got a %s", medium), nil
	}
	return CanonicalAddress(medium, address), nil, nil
}

// handlePassword serves POST /_matrix/client/v3/account/password: with an
// access token, a change of the caller's password (handleChangePassword);
// without one, the reset of a forgotten password by a validated email
// address (handleResetPassword) when this server validates addresses, and
// else the usual 401 for a missing token.
func (s *Service) handlePassword(w http.ResponseWriter, r *http.Request) {
	if accessToken(r) != "" || r.Header.Get("Authorization") != "" || s.ThreePIDs == nil {
		s.RequireAuth(httpapi.Handle(s.handleChangePassword))(w, r)
		return
	}
	httpapi.Handle(s.handleResetPassword)(w, r)
}

// handleResetPassword resets a forgotten password, behind user-interactive
// auth with one stage, m.login.email.identity: the address the validation
// session proved names the account. Unless logout_devices is false, every
// device of the account is logged out. An address bound to nobody is
// Synapse's 404 M_NOT_FOUND "Email address not found" (requestToken has
// normally refused it, or pretended to send a mail that never validates).
//
// Every request counts under the login limit of the caller's address, as
// a password check does: it is anonymous, and may write a UIA session.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3accountpassword
func (s *Service) handleResetPassword(w http.ResponseWriter, r *http.Request) error {
	if err := s.Limiter.Allow(r.Context(), s.Limits.LoginAddress, clientAddress(r)); err != nil {
		return err
	}
	var req passwordRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	if err := checkNewPassword(req.NewPassword); err != nil {
		return err
	}
	flows := []uiaFlow{{Stages: []string{emailStage}}}
	if req.Auth.Session != "" {
		if _, err := s.session(r.Context(), r, req.Auth.Session); err != nil {
			return err
		}
	}
	switch req.Auth.Type {
	case emailStage:
	case "":
		return s.challenge(w, r, flows, req.Auth.Session, "", nil)
	default:
		return s.challenge(w, r, flows, req.Auth.Session, "",
			httpapi.Errorf(http.StatusUnauthorized, "M_UNRECOGNIZED", "auth type %q is not offered here: use %s", req.Auth.Type, emailStage))
	}
	address, failure, err := s.emailStageAddress(r, req.Auth)
	if err != nil {
		return err
	}
	if failure != nil {
		return s.challenge(w, r, flows, req.Auth.Session, "", failure)
	}
	userID, err := s.ThreePIDs.UserOf(r.Context(), mediumEmail, address)
	if err != nil {
		return err
	}
	if userID == "" {
		return httpapi.NotFound("Email address not found")
	}
	if req.NewPassword == "" {
		return httpapi.MissingParam("new_password is required")
	}
	if req.Auth.Session != "" {
		if err := s.Store.Delete(r.Context(), uiaKey(req.Auth.Session)); err != nil {
			return err
		}
	}
	if err := s.SetPassword(r.Context(), userID, req.NewPassword, req.logout(), ""); err != nil {
		return err
	}
	if err := s.ThreePIDs.Consume(r.Context(), req.Auth.creds().SID); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{})
	return nil
}

// satisfied reports whether the completed stages make up one of the flows.
func satisfied(flows []uiaFlow, completed []string) bool {
	for _, f := range flows {
		if !slices.ContainsFunc(f.Stages, func(st string) bool { return !slices.Contains(completed, st) }) {
			return true
		}
	}
	return false
}

// offered reports whether a stage is in one of the flows.
func offered(flows []uiaFlow, stage string) bool {
	for _, f := range flows {
		if slices.Contains(f.Stages, stage) {
			return true
		}
	}
	return false
}
