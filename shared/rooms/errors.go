package rooms

import "github.com/cirrus-matrix/cirrus/shared/refusal"

// The room engine's refusals. Each is a *Refusal whose message is written
// for the user who asked; errors.Is matches its kind. The engine knows
// nothing of HTTP: the kinds are shared/refusal's, and only the HTTP layer
// (httpapi.WriteError) gives each its Matrix error, for the client API
// (shared/roomsapi) and any other handler that passes a refusal on.
var (
	ErrForbidden          = refusal.Forbidden
	ErrNotFound           = refusal.NotFound
	ErrInvalid            = refusal.Invalid
	ErrMalformed          = refusal.Malformed
	ErrTooLarge           = refusal.TooLarge
	ErrUnsupportedVersion = refusal.UnsupportedVersion
	ErrInvalidState       = refusal.InvalidState
	ErrAliasInUse         = refusal.AliasInUse
	ErrBadAlias           = refusal.BadAlias
	ErrUnsupported        = refusal.Unsupported
	ErrNeedsFederation    = refusal.NeedsFederation
	ErrNotLeft            = refusal.NotLeft
	// ErrUnableToAuthorise is a restricted join this server cannot
	// decide: it is in none of the rooms the join rules allow, so it
	// cannot tell whether the user is.
	ErrUnableToAuthorise = refusal.UnableToAuthorise
	// ErrRemote is another server that could not be asked, or that
	// refused (*Refusal with the cause, which only logs see).
	ErrRemote = refusal.Unavailable
)

// Refusal is a request the room engine refuses.
type Refusal = refusal.Error

func refuse(kind error, format string, args ...any) error {
	return refusal.New(kind, format, args...)
}
