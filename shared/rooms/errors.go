package rooms

import (
	"errors"
	"fmt"
)

// The room engine's refusals. Each is a *Refusal whose message is written
// for the user who asked; errors.Is matches its kind. http.go gives each
// kind its Matrix error (Refusal.Matrix), which also holds when a handler
// of another package passes the error on (httpapi.Public).
var (
	// ErrForbidden is a request the user may not make: not in the room,
	// or refused by the auth rules or an endpoint's own rule.
	ErrForbidden = errors.New("forbidden")
	// ErrNotFound is something the user asked for that is not there, or
	// not for them to see.
	ErrNotFound = errors.New("not found")
	// ErrInvalid is a parameter that cannot be right (a user ID, a token).
	ErrInvalid = errors.New("invalid")
	// ErrTooLarge is an event over the size limits.
	ErrTooLarge = errors.New("too large")
	// ErrNeedsFederation is a request about another server's users or
	// rooms that this server cannot serve yet.
	ErrNeedsFederation = errors.New("needs federation")
	// ErrNotLeft is a room forgotten while the user is still in it.
	ErrNotLeft = errors.New("not left")
)

// Refusal is a request the room engine refuses.
type Refusal struct {
	Kind error
	Msg  string
}

func (r *Refusal) Error() string { return r.Msg }

func (r *Refusal) Unwrap() error { return r.Kind }

func refuse(kind error, format string, args ...any) error {
	return &Refusal{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}
