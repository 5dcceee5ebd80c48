package httpapi_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/refusal"
)

// TestWriteError_Refusal: each kind of refusal goes out as the Matrix
// error the spec names, however wrapped, with its message and never its
// cause.
func TestWriteError_Refusal(t *testing.T) {
	for _, tc := range []struct {
		kind   error
		status int
		code   string
	}{
		{refusal.Forbidden, 403, "M_FORBIDDEN"},
		{refusal.NotFound, 404, "M_NOT_FOUND"},
		{refusal.Invalid, 400, "M_INVALID_PARAM"},
		{refusal.Malformed, 400, "M_BAD_JSON"},
		{refusal.TooLarge, 413, "M_TOO_LARGE"},
		{refusal.UnsupportedVersion, 400, "M_UNSUPPORTED_ROOM_VERSION"},
		{refusal.InvalidState, 400, "M_INVALID_ROOM_STATE"},
		{refusal.AliasInUse, 409, "M_ROOM_IN_USE"},
		{refusal.BadAlias, 400, "M_BAD_ALIAS"},
		{refusal.Unsupported, 400, "M_UNRECOGNIZED"},
		{refusal.NeedsFederation, 400, "M_UNRECOGNIZED"},
		{refusal.NotLeft, 400, "M_UNKNOWN"},
		{refusal.UnableToAuthorise, 400, "M_UNABLE_TO_AUTHORISE_JOIN"},
		{refusal.Unavailable, 502, "M_UNKNOWN"},
	} {
		ref := &refusal.Error{Kind: tc.kind, Msg: "no, because " + tc.kind.Error(), Cause: errors.New("secret cause")}
		err := fmt.Errorf("handler: %w", ref)
		if !errors.Is(err, tc.kind) {
			t.Errorf("%v: errors.Is misses the kind", tc.kind)
		}
		w := httptest.NewRecorder()
		httpapi.WriteError(w, httptest.NewRequest("GET", "/", nil), err)
		var body struct{ Errcode, Error string }
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
			t.Fatalf("%v: %v", tc.kind, err)
		}
		if w.Code != tc.status || body.Errcode != tc.code || body.Error != ref.Msg {
			t.Errorf("%v goes out as %d %s %q, want %d %s %q", tc.kind, w.Code, body.Errcode, body.Error, tc.status, tc.code, ref.Msg)
		}
	}
}
