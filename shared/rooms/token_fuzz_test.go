package rooms_test

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

// FuzzParseToken feeds the pagination token parser (from and to of
// /messages, /relations, /members?at=) any string: it never panics, refuses
// with rooms.ErrInvalid (400 M_INVALID_PARAM), accepts only positions that are not negative,
// and reads back every token Token writes.
func FuzzParseToken(f *testing.F) {
	for _, seed := range []string{"t0", "t42", "t9223372036854775807", "t9223372036854775808", "t-1", "t+1",
		"t", "", "42", "s42", "t 1", "t0x10", "t1_000", "t٣"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, token string) {
		n, err := rooms.ParseToken(token)
		if err != nil {
			if !errors.Is(err, rooms.ErrInvalid) {
				t.Fatalf("ParseToken(%q): %v, want rooms.ErrInvalid", token, err)
			}
			w := httptest.NewRecorder()
			httpapi.WriteError(w, httptest.NewRequest("GET", "/", nil), err)
			if w.Code != 400 || !strings.Contains(w.Body.String(), `"M_INVALID_PARAM"`) {
				t.Fatalf("ParseToken(%q): %v goes out as %d %s, want 400 M_INVALID_PARAM", token, err, w.Code, w.Body)
			}
			return
		}
		if n < 0 {
			t.Fatalf("ParseToken(%q) = %d, a negative position", token, n)
		}
		again, err := rooms.ParseToken(rooms.Token(n))
		if err != nil || again != n {
			t.Fatalf("ParseToken(%q) = %d, but Token(%d) = %q reads back as %d, %v", token, n, n, rooms.Token(n), again, err)
		}
	})
}
