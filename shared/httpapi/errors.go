// Package httpapi holds what every Cirrus endpoint shares: the one writer of
// Matrix error JSON, the body decoder, the router that answers unknown paths
// the Matrix way, and the middleware for logs, CORS and body limits.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/refusal"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Error is a Matrix error response: an HTTP status, an errcode and a
// sentence for people. Handlers return one; WriteError sends it.
type Error struct {
	Status  int
	Code    string
	Message string
	// RetryAfter, when set, fills Retry-After and retry_after_ms (rate limits).
	RetryAfter time.Duration
	// Extra holds further keys some errcodes define, such as room_version.
	Extra map[string]any
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message) }

// Errorf makes an Error with a formatted message.
func Errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// The errors the spec names for every endpoint.
func BadJSON(format string, args ...any) *Error {
	return Errorf(http.StatusBadRequest, "M_BAD_JSON", format, args...)
}
func NotJSON(format string, args ...any) *Error {
	return Errorf(http.StatusBadRequest, "M_NOT_JSON", format, args...)
}
func Forbidden(format string, args ...any) *Error {
	return Errorf(http.StatusForbidden, "M_FORBIDDEN", format, args...)
}
func NotFound(format string, args ...any) *Error {
	return Errorf(http.StatusNotFound, "M_NOT_FOUND", format, args...)
}
func MissingParam(format string, args ...any) *Error {
	return Errorf(http.StatusBadRequest, "M_MISSING_PARAM", format, args...)
}
func InvalidParam(format string, args ...any) *Error {
	return Errorf(http.StatusBadRequest, "M_INVALID_PARAM", format, args...)
}
func TooLarge(format string, args ...any) *Error {
	return Errorf(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", format, args...)
}

// LimitExceeded is a 429 telling the client when to try again.
func LimitExceeded(retryAfter time.Duration) *Error {
	return &Error{Status: http.StatusTooManyRequests, Code: "M_LIMIT_EXCEEDED",
		Message: "too many requests: wait and try again", RetryAfter: retryAfter}
}

// Unrecognized is the spec's answer to an endpoint the server does not have
// (404) or a method an endpoint does not take (405).
func Unrecognized(status int, r *http.Request) *Error {
	if status == http.StatusMethodNotAllowed {
		return Errorf(status, "M_UNRECOGNIZED", "%s is not supported on %s", r.Method, r.URL.EscapedPath())
	}
	return Errorf(http.StatusNotFound, "M_UNRECOGNIZED", "unrecognized request: %s %s", r.Method, r.URL.EscapedPath())
}

// WriteJSON sends v as a JSON body with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		// Only a programming error gets here; say so without the value.
		status, body = http.StatusInternalServerError, []byte(`{"errcode":"M_UNKNOWN","error":"internal error encoding the response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(body)
}

// Handle adapts a handler that returns its error to net/http: the error
// goes out through WriteError, the one place Matrix errors are written.
func Handle(f func(http.ResponseWriter, *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := f(w, r); err != nil {
			WriteError(w, r, err)
		}
	}
}

// Public is an error of a domain package whose message is written for
// clients, such as the content errors of shared/events. A handler that
// passes one on unmapped, however wrapped, still answers with its status,
// errcode and message, not with a 500; the text of the wrapping is left
// out.
type Public interface {
	error
	// Matrix returns the HTTP status and errcode the error goes out with.
	Matrix() (status int, errcode string)
}

// WriteError sends err as a Matrix error. An *Error goes out as it is, a
// *refusal.Error as its kind's Matrix error with its message (refusal.go),
// a Public error with its status, errcode and message; any other error is
// logged and answered with 500 M_UNKNOWN, so that internals never reach a
// client.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	var me *Error
	var public Public
	var ref *refusal.Error
	switch {
	case errors.As(err, &me):
	case errors.As(err, &ref):
		me = refusalError(ref)
	case errors.As(err, &public):
		status, code := public.Matrix()
		me = Errorf(status, code, "%s", public.Error())
	case errors.Is(err, store.ErrKeyTooLong):
		// An identifier the client chose (a room alias, a state key, a
		// transaction ID) makes a key longer than DynamoDB stores.
		me = InvalidParam("an identifier in the request is too long to store")
	case errors.Is(err, store.ErrItemTooLarge):
		me = TooLarge("the request's data is too large to store")
	case errors.Is(r.Context().Err(), context.Canceled):
		// The client went away (a stopped sync loop, a closed tab) and
		// the work it started was cut short: nobody reads this answer
		// and no server fault happened. 499, as nginx logs it.
		me = Errorf(499, "M_UNKNOWN", "the client closed the request")
	default:
		Logger(r.Context()).ErrorContext(r.Context(), "request failed", "err", err)
		me = Errorf(http.StatusInternalServerError, "M_UNKNOWN", "internal server error")
	}
	body := map[string]any{"errcode": me.Code, "error": me.Message}
	for k, v := range me.Extra {
		body[k] = v
	}
	if me.RetryAfter > 0 {
		body["retry_after_ms"] = me.RetryAfter.Milliseconds()
		secs := int64((me.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	WriteJSON(w, me.Status, body)
}

type loggerKey struct{}

// Logger returns the request's logger (carrying its request ID), or the
// default one outside a request.
func Logger(ctx interface{ Value(any) any }) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok {
		return l
	}
	return slog.Default()
}
