package httpapi_test

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
)

// publicError is a domain error whose message is written for clients.
type publicError struct{ msg string }

func (e *publicError) Error() string                        { return e.msg }
func (e *publicError) Matrix() (status int, errcode string) { return 400, "M_BAD_JSON" }

// TestWriteError_Public: a Public error passed on unmapped, however
// wrapped, goes out with its own status, errcode and message, and none of
// the wrapping's text.
func TestWriteError_Public(t *testing.T) {
	err := fmt.Errorf("send to !room (internal detail): %w", &publicError{"content.n: 1.5 is not an integer"})
	w := httptest.NewRecorder()
	httpapi.WriteError(w, httptest.NewRequest("PUT", "/", nil), err)
	var body map[string]string
	if jerr := json.Unmarshal(w.Body.Bytes(), &body); jerr != nil {
		t.Fatal(jerr)
	}
	if w.Code != 400 || body["errcode"] != "M_BAD_JSON" || body["error"] != "content.n: 1.5 is not an integer" {
		t.Fatalf("WriteError(%v): %d %s", err, w.Code, w.Body)
	}
}
