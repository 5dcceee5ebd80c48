package accounts

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
)

type sessionKey struct{}

// Caller is the session of an authenticated request.
func Caller(ctx context.Context) Session {
	s, _ := ctx.Value(sessionKey{}).(Session)
	return s
}

// RequireAuth is the one auth middleware: it takes the access token from
// the Authorization header (or the deprecated access_token query parameter),
// looks it up with one read, and answers 401 M_MISSING_TOKEN or
// M_UNKNOWN_TOKEN as the spec says.
func (s *Service) RequireAuth(next http.HandlerFunc) http.HandlerFunc {
	return httpapi.Handle(func(w http.ResponseWriter, r *http.Request) error {
		token := accessToken(r)
		if token == "" {
			return httpapi.Errorf(http.StatusUnauthorized, "M_MISSING_TOKEN", "missing access token")
		}
		sess, err := s.Authenticate(r.Context(), token)
		if errors.Is(err, ErrUnknownToken) || errors.Is(err, ErrExpiredToken) {
			return unknownToken(errors.Is(err, ErrExpiredToken))
		}
		if err != nil {
			return err
		}
		next(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, sess)))
		return nil
	})
}

func accessToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if scheme, token, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(token)
		}
		return ""
	}
	return r.URL.Query().Get("access_token")
}

// handleWhoami serves GET /_matrix/client/v3/account/whoami.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3accountwhoami
func (s *Service) handleWhoami(w http.ResponseWriter, r *http.Request) error {
	sess := Caller(r.Context())
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"user_id": sess.UserID, "device_id": sess.DeviceID, "is_guest": false})
	return nil
}

// unknownToken is 401 M_UNKNOWN_TOKEN; soft says the client may refresh
// instead of logging in again.
func unknownToken(soft bool) *httpapi.Error {
	msg := "unknown or revoked access token"
	if soft {
		msg = "access token expired: refresh it"
	}
	return &httpapi.Error{Status: http.StatusUnauthorized, Code: "M_UNKNOWN_TOKEN",
		Message: msg, Extra: map[string]any{"soft_logout": soft}}
}
