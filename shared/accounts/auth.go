package accounts

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/gate"
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
//
// A signed token (signedtoken.go) names its session, so the handler need
// not wait for the read: it runs at once as that session, the read beside
// its first reads (speculate).
func (s *Service) RequireAuth(next http.HandlerFunc) http.HandlerFunc {
	return httpapi.Handle(func(w http.ResponseWriter, r *http.Request) error {
		token := accessToken(r)
		if token == "" {
			return httpapi.Errorf(http.StatusUnauthorized, "M_MISSING_TOKEN", "missing access token")
		}
		if claimed, ok := claimedSession(s.TokenKey, token); ok {
			return s.speculate(w, r, token, claimed, next)
		}
		sess, err := s.authenticate(r.Context(), token)
		if err != nil {
			return err
		}
		next(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, sess)))
		return nil
	})
}

// authenticate is Authenticate with its refusals as the Matrix errors
// RequireAuth answers.
func (s *Service) authenticate(ctx context.Context, token string) (Session, error) {
	sess, err := s.Authenticate(ctx, token)
	if errors.Is(err, ErrUnknownToken) || errors.Is(err, ErrExpiredToken) {
		return Session{}, unknownToken(errors.Is(err, ErrExpiredToken))
	}
	return sess, err
}

// speculate runs next as the session a signed token claims while the
// token's read runs beside it. Until the read confirms the session, next
// may read but not act: its writes, queued messages, mail and requests to
// other servers wait on the request's gate, and its response is held
// (heldWriter). When the read refuses the token (a logout, an expiry),
// next's context is cancelled, whatever it would have written is dropped,
// and the answer is the 401 a plain read gives.
func (s *Service) speculate(w http.ResponseWriter, r *http.Request, token string, claimed Session, next http.HandlerFunc) error {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	v := &verdict{done: make(chan struct{})}
	// The read has its own context: it must end with a verdict even when
	// the handler is done early, for the response waits on it.
	readCtx := context.WithoutCancel(ctx)
	go func() {
		defer close(v.done)
		sess, err := s.authenticate(readCtx, token)
		if err == nil && sess != claimed {
			// Only a token this server signed gets here, and it signs
			// what it stores: a mismatch is a fault, not a client's.
			err = fmt.Errorf("access token signed for %s %s is stored for %s %s", claimed.UserID, claimed.DeviceID, sess.UserID, sess.DeviceID)
		}
		v.err = err
		if err != nil {
			cancel()
		}
	}()
	ctx = gate.With(context.WithValue(ctx, sessionKey{}, claimed), v.open)
	hw := &heldWriter{w: w, v: v, header: http.Header{}}
	next(hw, r.WithContext(ctx))
	<-v.done
	if v.err != nil {
		return v.err
	}
	hw.release()
	return nil
}

// verdict is the outcome of a speculative request's token read.
type verdict struct {
	done chan struct{}
	err  error // set before done closes
}

// open is the request's gate (package gate): it waits for the verdict.
func (v *verdict) open(ctx context.Context) error {
	select {
	case <-v.done:
	case <-ctx.Done():
		// The handler's context ends when the token is refused, or
		// when the client went away; either way, no side effect.
		<-v.done
	}
	if v.err != nil {
		return fmt.Errorf("%w: %w", gate.ErrShut, v.err)
	}
	return nil
}

// heldWriter holds a speculative handler's response until the verdict:
// headers are kept apart, and the first WriteHeader, Write or Flush waits.
// A response of a refused token is dropped, so nothing read as the
// claimed user leaves. Waiting at the first write, not buffering the
// body, keeps a streamed download streaming.
type heldWriter struct {
	w      http.ResponseWriter
	v      *verdict
	header http.Header
	// passed is set once the verdict let the response through; dropped
	// once it refused it.
	passed, dropped bool
	status          int
}

func (h *heldWriter) Header() http.Header { return h.header }

// wait waits for the verdict at the first write and reports whether the
// response goes out.
func (h *heldWriter) wait() bool {
	if h.passed || h.dropped {
		return h.passed
	}
	<-h.v.done
	if h.v.err != nil {
		h.dropped = true
		return false
	}
	h.passed = true
	maps.Copy(h.w.Header(), h.header)
	h.header = h.w.Header()
	return true
}

func (h *heldWriter) WriteHeader(status int) {
	if h.wait() && h.status == 0 {
		h.status = status
		h.w.WriteHeader(status)
	}
}

func (h *heldWriter) Write(b []byte) (int, error) {
	if !h.wait() {
		return 0, gate.ErrShut
	}
	h.status = max(h.status, http.StatusOK)
	return h.w.Write(b)
}

// Flush lets a streaming handler push what it wrote.
func (h *heldWriter) Flush() {
	if h.wait() {
		http.NewResponseController(h.w).Flush()
	}
}

// release sends what a handler that wrote nothing set: its headers, with
// the 200 net/http would have sent.
func (h *heldWriter) release() {
	if h.wait() && h.status == 0 {
		h.WriteHeader(http.StatusOK)
	}
}

// Unwrap lets http.ResponseController reach the underlying writer, once
// the verdict let the response through.
func (h *heldWriter) Unwrap() http.ResponseWriter {
	if h.wait() {
		return h.w
	}
	return nil
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
