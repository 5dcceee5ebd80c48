package httpapi

import (
	"net/http"

	"github.com/cirrus-matrix/cirrus/shared/refusal"
)

// refusalError is the Matrix error each kind of refusal goes out as: the
// one mapping of the domain packages' refusals to Matrix errors.
func refusalError(r *refusal.Error) *Error {
	status, code := http.StatusBadRequest, "M_UNKNOWN"
	switch r.Kind {
	case refusal.Forbidden:
		status, code = http.StatusForbidden, "M_FORBIDDEN"
	case refusal.NotFound:
		status, code = http.StatusNotFound, "M_NOT_FOUND"
	case refusal.Invalid:
		code = "M_INVALID_PARAM"
	case refusal.Malformed:
		code = "M_BAD_JSON"
	case refusal.TooLarge:
		status, code = http.StatusRequestEntityTooLarge, "M_TOO_LARGE"
	case refusal.UnsupportedVersion:
		code = "M_UNSUPPORTED_ROOM_VERSION"
	case refusal.InvalidState:
		code = "M_INVALID_ROOM_STATE"
	case refusal.AliasInUse:
		// PUT /directory/room's answer; createRoom's is 400 (roomsapi).
		status, code = http.StatusConflict, "M_ROOM_IN_USE"
	case refusal.BadAlias:
		code = "M_BAD_ALIAS"
	case refusal.Unsupported, refusal.NeedsFederation:
		code = "M_UNRECOGNIZED"
	case refusal.UnableToAuthorise:
		code = "M_UNABLE_TO_AUTHORISE_JOIN"
	case refusal.Unavailable:
		// As Synapse answers a server it could not ask.
		status = http.StatusBadGateway
	}
	// refusal.NotLeft: /forget of a room the user is still in, 400
	// M_UNKNOWN as the spec has it.
	return Errorf(status, code, "%s", r.Msg)
}
