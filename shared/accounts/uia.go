package accounts

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// uiaLifetime bounds a user-interactive auth session; the item carries it as
// its TTL, so abandoned sessions disappear.
const uiaLifetime = 15 * time.Minute

// authData is the `auth` object of a request behind user-interactive auth.
type authData struct {
	Type       string     `json:"type"`
	Session    string     `json:"session"`
	Identifier identifier `json:"identifier"`
	User       string     `json:"user"`
	Password   string     `json:"password"`
	Token      string     `json:"token"` // m.login.registration_token
	// ThreePIDCreds name the validation session of m.login.email.identity;
	// LegacyThreePIDCreds is the name old clients send it under.
	ThreePIDCreds       *threePIDCreds `json:"threepid_creds"`
	LegacyThreePIDCreds *threePIDCreds `json:"threepidCreds"`
}

type uiaItem struct {
	PK string `dynamodbav:"pk"`
	SK string `dynamodbav:"sk"`
	// Request is the method and path the session was started for: a session
	// cannot authorise another operation.
	Request string `dynamodbav:"request"`
	UserID  string `dynamodbav:"user_id,omitempty"`
	Expires int64  `dynamodbav:"expires_at"`
	// Completed are the stages done so far, for flows of more than one
	// stage (registration with a token and an email address); Email is
	// the address m.login.email.identity proved and RegToken the token
	// m.login.registration_token gave, used when the flow is done.
	Completed []string `dynamodbav:"completed,omitempty"`
	Email     string   `dynamodbav:"email,omitempty"`
	RegToken  string   `dynamodbav:"reg_token,omitempty"`
}

func uiaKey(session string) store.Key { return store.Key{PK: "uia|" + session, SK: "uia"} }

// uiaFlow is one set of stages the client may complete.
type uiaFlow struct {
	Stages []string `json:"stages"`
}

// challenge answers 401 with the flows and a session, starting one if
// needed; with a failed stage, errcode and error say why. It returns an
// error, and has answered nothing, only when the session cannot be stored.
func (s *Service) challenge(w http.ResponseWriter, r *http.Request, flows []uiaFlow, session, userID string, failure *httpapi.Error) error {
	if session == "" {
		return s.progress(w, r, flows, uiaItem{UserID: userID}, false, failure)
	}
	writeChallenge(w, flows, session, nil, failure)
	return nil
}

// progress answers 401 with the flows, the stages completed so far and,
// with a failed stage, why. A session without a key yet is made and
// stored; an existing one is stored again only when changed says a stage
// was just completed.
func (s *Service) progress(w http.ResponseWriter, r *http.Request, flows []uiaFlow, it uiaItem, changed bool, failure *httpapi.Error) error {
	if it.PK == "" {
		var b [18]byte
		rand.Read(b[:])
		it.PK, it.SK, it.Request = uiaKey(base64.RawURLEncoding.EncodeToString(b[:])).PK, "uia", r.Method+" "+r.URL.Path
		changed = true
	}
	if changed {
		it.Expires = s.now().Add(uiaLifetime).Unix()
		if err := s.Store.Put(r.Context(), it); err != nil {
			return err
		}
	}
	writeChallenge(w, flows, strings.TrimPrefix(it.PK, "uia|"), it.Completed, failure)
	return nil
}

// writeChallenge answers 401 with the flows and the session.
func writeChallenge(w http.ResponseWriter, flows []uiaFlow, session string, completed []string, failure *httpapi.Error) {
	body := map[string]any{"flows": flows, "params": map[string]any{}, "session": session}
	if len(completed) > 0 || failure != nil {
		body["completed"] = append([]string{}, completed...)
	}
	if failure != nil {
		body["errcode"], body["error"] = failure.Code, failure.Message
	}
	httpapi.WriteJSON(w, http.StatusUnauthorized, body)
}

// session loads a UIA session and checks it is for this request. A
// session ID longer than any this server makes is refused before the read.
func (s *Service) session(ctx context.Context, r *http.Request, id string) (uiaItem, error) {
	var it uiaItem
	if err := checkID("auth.session", id); err != nil {
		return it, err
	}
	err := s.Store.Get(ctx, uiaKey(id), &it)
	if errors.Is(err, store.ErrNotFound) {
		return it, httpapi.Errorf(http.StatusBadRequest, "M_UNKNOWN", "unknown or expired auth session %q", id)
	}
	if err != nil {
		return it, err
	}
	if it.Request != r.Method+" "+r.URL.Path {
		return it, httpapi.Forbidden("the auth session was started for another request")
	}
	return it, nil
}

// passwordUIA runs user-interactive auth with m.login.password for the
// caller. It reports whether the request may go on. When it may not, it
// has either answered (401 with the flows) and returns a nil error, or
// returns the error to answer with (a bad session, 429, a failure).
//
// The password is checked by verifyPassword, under the same rate limits
// as logins: the caller's account, and the caller's address.
func (s *Service) passwordUIA(w http.ResponseWriter, r *http.Request, auth authData) (bool, error) {
	return s.callerUIA(w, r, auth, false)
}

// callerUIA is passwordUIA that, with email, also offers
// m.login.email.identity: an address validated now that is bound to the
// caller passes, another is 403 as another user's password is.
func (s *Service) callerUIA(w http.ResponseWriter, r *http.Request, auth authData, email bool) (bool, error) {
	caller := Caller(r.Context())
	flows := []uiaFlow{{Stages: []string{"m.login.password"}}}
	if email {
		flows = append(flows, uiaFlow{Stages: []string{emailStage}})
	}
	if auth.Session != "" {
		if _, err := s.session(r.Context(), r, auth.Session); err != nil {
			return false, err
		}
	}
	if auth.Type == "" {
		return false, s.challenge(w, r, flows, auth.Session, caller.UserID, nil)
	}
	if !offered(flows, auth.Type) {
		return false, s.challenge(w, r, flows, auth.Session, caller.UserID,
			httpapi.Errorf(http.StatusUnauthorized, "M_UNRECOGNIZED", "auth type %q is not offered here", auth.Type))
	}
	if auth.Type == emailStage {
		return s.callerEmail(w, r, flows, auth)
	}
	userID := caller.UserID
	var err error
	switch {
	case auth.Identifier.Type == "m.id.thirdparty":
		userID, _, err = s.thirdPartyUser(r.Context(), auth.Identifier.Medium, auth.Identifier.Address)
	case auth.Identifier.User != "":
		userID, _, err = s.accountOf(auth.Identifier.User)
	case auth.User != "":
		userID, _, err = s.accountOf(auth.User)
	}
	if err != nil {
		return false, err
	}
	if userID != caller.UserID {
		// Only the caller's own password can pass, so another user's is
		// not checked (this is no oracle of it): Synapse's 403 "Invalid
		// auth" for auth of another user.
		return false, httpapi.Forbidden("Invalid auth: it names %s, not the user making the request", userID)
	}
	_, err = s.verifyPassword(r, caller.UserID, true, auth.Password)
	if errors.Is(err, errBadLogin) {
		return false, s.challenge(w, r, flows, auth.Session, caller.UserID, errBadLogin)
	}
	if err != nil {
		return false, err
	}
	if auth.Session != "" {
		// Done: the session cannot authorise a second request.
		if err := s.Store.Delete(r.Context(), uiaKey(auth.Session)); err != nil {
			return false, err
		}
	}
	return true, nil
}

// callerEmail checks callerUIA's m.login.email.identity stage.
func (s *Service) callerEmail(w http.ResponseWriter, r *http.Request, flows []uiaFlow, auth authData) (bool, error) {
	caller := Caller(r.Context())
	if err := s.Limiter.Allow(r.Context(), s.Limits.LoginAddress, clientAddress(r)); err != nil {
		return false, err
	}
	address, failure, err := s.emailStageAddress(r, auth)
	if err != nil {
		return false, err
	}
	if failure != nil {
		return false, s.challenge(w, r, flows, auth.Session, caller.UserID, failure)
	}
	owner, err := s.ThreePIDs.UserOf(r.Context(), mediumEmail, address)
	if err != nil {
		return false, err
	}
	if owner != caller.UserID {
		// Synapse's 403 "Invalid auth" for auth of another user.
		return false, httpapi.Forbidden("Invalid auth: the validated address is not one of the caller's")
	}
	if auth.Session != "" {
		if err := s.Store.Delete(r.Context(), uiaKey(auth.Session)); err != nil {
			return false, err
		}
	}
	return true, nil
}

// PasswordUIA puts another package's endpoint behind user-interactive auth
// with m.login.password for the caller of r; auth is the request's `auth`
// object, nil when absent. It reports whether the request may go on; when
// not, it has answered (401 with the flows, or the error). The password
// check counts under the same rate limits as logins.
func (s *Service) PasswordUIA(w http.ResponseWriter, r *http.Request, auth json.RawMessage) bool {
	var a authData
	if len(auth) > 0 && string(auth) != "null" {
		if err := json.Unmarshal(auth, &a); err != nil {
			httpapi.WriteError(w, r, httpapi.BadJSON("auth has the wrong shape: %v", err))
			return false
		}
	}
	ok, err := s.passwordUIA(w, r, a)
	if err != nil {
		httpapi.WriteError(w, r, err)
	}
	return ok
}

// decodeOptionalJSON reads a JSON body that may be absent entirely (DELETE).
func decodeOptionalJSON(r *http.Request, v any) error {
	if r.ContentLength == 0 {
		peek := make([]byte, 1)
		n, _ := io.ReadFull(r.Body, peek)
		if n == 0 {
			return nil
		}
		r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(peek[:n]), r.Body))
	}
	return httpapi.DecodeJSON(r, v)
}
