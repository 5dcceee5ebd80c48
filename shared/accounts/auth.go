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
	return func(w http.ResponseWriter, r *http.Request) {
		token := accessToken(r)
		if token == "" {
			httpapi.WriteError(w, r, httpapi.Errorf(http.StatusUnauthorized, "M_MISSING_TOKEN", "missing access token"))
			return
		}
		sess, err := s.Authenticate(r.Context(), token)
		if errors.Is(err, ErrUnknownToken) || errors.Is(err, ErrExpiredToken) {
			writeUnknownToken(w, r, errors.Is(err, ErrExpiredToken))
			return
		}
		if err != nil {
			httpapi.WriteError(w, r, err)
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, sess)))
	}
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

// Whoami serves GET /_matrix/client/v3/account/whoami.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3accountwhoami
func (s *Service) Whoami(w http.ResponseWriter, r *http.Request) {
	sess := Caller(r.Context())
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"user_id": sess.UserID, "device_id": sess.DeviceID, "is_guest": false})
}

// writeUnknownToken answers 401 M_UNKNOWN_TOKEN; soft says the client may
// refresh instead of logging in again.
func writeUnknownToken(w http.ResponseWriter, r *http.Request, soft bool) {
	msg := "unknown or revoked access token"
	if soft {
		msg = "access token expired: refresh it"
	}
	httpapi.WriteError(w, r, &httpapi.Error{Status: http.StatusUnauthorized, Code: "M_UNKNOWN_TOKEN",
		Message: msg, Extra: map[string]any{"soft_logout": soft}})
}
