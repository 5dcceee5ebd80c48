// Package refusal names the kinds of request that the domain packages
// refuse: the room engine speaks in them, knowing nothing of HTTP, and only
// the HTTP layer (httpapi.WriteError) gives each kind its Matrix error, as
// net/http gives fs.ErrNotExist its 404.
package refusal

import (
	"errors"
	"fmt"
)

// The kinds. errors.Is matches an *Error against its kind.
var (
	// Forbidden is a request the user may not make: not in the room, or
	// refused by the auth rules or an endpoint's own rule.
	Forbidden = errors.New("forbidden")
	// NotFound is something asked for that is not there, or not for the
	// asker to see.
	NotFound = errors.New("not found")
	// Invalid is a parameter that cannot be right (a user ID, a token).
	Invalid = errors.New("invalid")
	// Malformed is content that cannot be right: an event's content,
	// createRoom's initial state, a redaction without its target.
	Malformed = errors.New("malformed")
	// TooLarge is an event over the size limits.
	TooLarge = errors.New("too large")
	// UnsupportedVersion is a room version this server cannot serve.
	UnsupportedVersion = errors.New("unsupported room version")
	// InvalidState is createRoom's initial state that the auth rules
	// refuse: the request, not the user, is at fault.
	InvalidState = errors.New("invalid room state")
	// AliasInUse is a room alias that is already taken.
	AliasInUse = errors.New("alias in use")
	// BadAlias is an alias that m.room.canonical_alias names but that does
	// not point to the room.
	BadAlias = errors.New("bad alias")
	// Unsupported is a feature this server does not have (invite_3pid:
	// there is no identity server).
	Unsupported = errors.New("unsupported")
	// NeedsFederation is a request about another server's users or rooms
	// that this server cannot serve.
	NeedsFederation = errors.New("needs federation")
	// NotLeft is a room forgotten while the user is still in it.
	NotLeft = errors.New("not left")
	// UnableToAuthorise is a restricted join this server cannot decide: it
	// is in none of the rooms the join rules allow.
	UnableToAuthorise = errors.New("unable to authorise join")
	// Unavailable is another server that could not be asked, or that
	// refused.
	Unavailable = errors.New("remote server unavailable")
)

// Error is a refused request: its kind, a message written for the user who
// asked, and the cause, if any, which is for logs, never for the user.
type Error struct {
	Kind  error
	Msg   string
	Cause error
}

func (e *Error) Error() string { return e.Msg }

// Unwrap gives the kind and the cause, so that errors.Is matches either.
func (e *Error) Unwrap() []error {
	if e.Cause == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Cause}
}

// New returns an *Error of kind with a formatted message.
func New(kind error, format string, args ...any) error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}
