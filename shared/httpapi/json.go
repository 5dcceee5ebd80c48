package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"unicode/utf8"

	"github.com/cirrus-matrix/cirrus/shared/protocol"
)

// MaxDepth bounds how deep arrays and objects nest in a request body. No
// Matrix request comes near it; an event's content is held to less
// (events.MaxContentDepth), so that the event fits inside the bodies that
// carry it on.
const MaxDepth = 100

// DecodeJSON reads the request body into v. It answers the spec's way:
// M_TOO_LARGE past the body limit, M_NOT_JSON for a body that is not JSON
// in UTF-8, M_BAD_JSON for JSON of the wrong shape, a top level that is
// not an object among them, as Synapse answers both. A body that is JSON
// but for a number JSON does not allow (01, 1., a lone -, NaN, Infinity)
// is M_BAD_JSON too: JSON with an invalid value. Unknown keys are
// allowed, as the spec lets clients send extra fields. A key twice in any
// object of the body, or nesting deeper than MaxDepth, is M_BAD_JSON: the
// copies would mean one thing to this server and another to a reader that
// keeps the other copy, and events carry bodies on to other servers.
func DecodeJSON(r *http.Request, v any) error {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return TooLarge("request body is over the %d byte limit", tooBig.Limit)
		}
		return BadJSON("could not read the request body: %v", err)
	}
	body = bytes.TrimSpace(body)
	if !utf8.Valid(body) {
		return NotJSON("request body is not valid UTF-8")
	}
	if err := protocol.CheckJSON(body, MaxDepth); err != nil {
		if errors.Is(err, protocol.ErrSyntax) && !errors.Is(err, protocol.ErrBadNumber) {
			return NotJSON("request body is not valid JSON: %v", err)
		}
		return BadJSON("request body: %v", err)
	}
	if body[0] != '{' {
		return BadJSON("request body must be a JSON object")
	}
	if err := json.Unmarshal(body, v); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return BadJSON("field %q must be %s, not %s", typeErr.Field, typeErr.Type, typeErr.Value)
		}
		return BadJSON("request body has the wrong shape: %v", err)
	}
	return nil
}
