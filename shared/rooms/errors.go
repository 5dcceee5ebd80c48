package rooms

import (
	"errors"
	"fmt"
)

// The room engine's refusals. Each is a *Refusal whose message is written
// for the user who asked; errors.Is matches its kind. The engine knows
// nothing of HTTP: Refusal.Matrix names the Matrix error of each kind, the
// one table from which every handler answers, the client API's
// (shared/roomsapi) and any other package's that passes a refusal on
// (httpapi.Public).
var (
	// ErrForbidden is a request the user may not make: not in the room,
	// or refused by the auth rules or an endpoint's own rule.
	ErrForbidden = errors.New("forbidden")
	// ErrNotFound is something the user asked for that is not there, or
	// not for them to see.
	ErrNotFound = errors.New("not found")
	// ErrInvalid is a parameter that cannot be right (a user ID, a token).
	ErrInvalid = errors.New("invalid")
	// ErrMalformed is content that cannot be right: an event's content,
	// createRoom's initial state, a redaction without its target.
	ErrMalformed = errors.New("malformed")
	// ErrTooLarge is an event over the size limits.
	ErrTooLarge = errors.New("too large")
	// ErrUnsupportedVersion is a room version this server cannot create.
	ErrUnsupportedVersion = errors.New("unsupported room version")
	// ErrInvalidState is createRoom's initial state that the auth rules
	// refuse: the request, not the user, is at fault.
	ErrInvalidState = errors.New("invalid room state")
	// ErrAliasInUse is a room alias that is already taken.
	ErrAliasInUse = errors.New("alias in use")
	// ErrBadAlias is an alias that m.room.canonical_alias names but that
	// does not point to the room.
	ErrBadAlias = errors.New("bad alias")
	// ErrUnsupported is a feature this server does not have (invite_3pid:
	// there is no identity server).
	ErrUnsupported = errors.New("unsupported")
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

// Matrix gives each kind of refusal its HTTP status and errcode
// (httpapi.Public), whichever handler passes it on: the client API's, or
// federation's (make_join refused by the auth rules). It is the one
// mapping of the engine's errors to Matrix errors.
func (r *Refusal) Matrix() (int, string) {
	switch r.Kind {
	case ErrForbidden:
		return 403, "M_FORBIDDEN"
	case ErrNotFound:
		return 404, "M_NOT_FOUND"
	case ErrInvalid:
		return 400, "M_INVALID_PARAM"
	case ErrMalformed:
		return 400, "M_BAD_JSON"
	case ErrTooLarge:
		return 413, "M_TOO_LARGE"
	case ErrUnsupportedVersion:
		return 400, "M_UNSUPPORTED_ROOM_VERSION"
	case ErrInvalidState:
		return 400, "M_INVALID_ROOM_STATE"
	case ErrAliasInUse:
		// PUT /directory/room's answer; createRoom's is 400 (roomsapi).
		return 409, "M_ROOM_IN_USE"
	case ErrBadAlias:
		return 400, "M_BAD_ALIAS"
	case ErrUnsupported, ErrNeedsFederation:
		return 400, "M_UNRECOGNIZED"
	}
	// ErrNotLeft: /forget of a room the user is still in, 400 M_UNKNOWN
	// as the spec has it.
	return 400, "M_UNKNOWN"
}
