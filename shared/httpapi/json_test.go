package httpapi_test

import (
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
)

func TestDecodeJSON_Refused(t *testing.T) {
	deep := func(n int) string { return `{"a":` + strings.Repeat("[", n-1) + strings.Repeat("]", n-1) + `}` }
	for _, tc := range []struct {
		name, body    string
		errcode, want string
	}{
		{"Duplicate", `{"name":"a","name":"b"}`, "M_BAD_JSON", `request body: key "name" appears twice`},
		{"DuplicateEscaped", `{"name":"a","\u006eame":"b"}`, "M_BAD_JSON", `request body: key "name" appears twice`},
		{"DuplicateNested", `{"content":{"users":{"@a:x":100},"users":{"@b:x":100}}}`, "M_BAD_JSON",
			`request body: content: key "users" appears twice`},
		{"DuplicateInArray", `{"initial_state":[{"type":"m.room.name"},{"type":"x","type":"y"}]}`, "M_BAD_JSON",
			`request body: initial_state[1]: key "type" appears twice`},
		{"DuplicateThenSyntax", `{"a":1,"a":2`, "M_NOT_JSON", `request body is not valid JSON: unexpected end of JSON`},
		{"Deep", deep(httpapi.MaxDepth + 1), "M_BAD_JSON",
			fmt.Sprintf("request body: arrays and objects are nested deeper than %d levels", httpapi.MaxDepth)},
		{"VeryDeep", deep(10000), "M_BAD_JSON",
			fmt.Sprintf("request body: arrays and objects are nested deeper than %d levels", httpapi.MaxDepth)},
		{"DeepUnclosed", strings.Repeat("[", 1<<20), "M_BAD_JSON",
			fmt.Sprintf("request body: arrays and objects are nested deeper than %d levels", httpapi.MaxDepth)},
		{"Syntax", `{"name":"a",}`, "M_NOT_JSON", `request body is not valid JSON: unexpected character '}' at byte 12`},
		// A body that is JSON but for a number JSON does not allow is JSON
		// with an invalid value: M_BAD_JSON.
		{"NumberLeadingZero", `{"a": 01}`, "M_BAD_JSON", `request body: "01" at byte 6 is not a number JSON allows`},
		{"NumberNoFraction", `{"a": 1.}`, "M_BAD_JSON", `request body: "1." at byte 6 is not a number JSON allows`},
		{"NumberMinusAlone", `-`, "M_BAD_JSON", `request body: "-" at byte 0 is not a number JSON allows`},
		{"NumberMinusInObject", `{"a": -}`, "M_BAD_JSON", `request body: "-" at byte 6 is not a number JSON allows`},
		{"NumberPlus", `{"a": +1}`, "M_BAD_JSON", `request body: "+1" at byte 6 is not a number JSON allows`},
		{"NumberNoInteger", `{"a": .5}`, "M_BAD_JSON", `request body: ".5" at byte 6 is not a number JSON allows`},
		{"NaN", `{"a": NaN}`, "M_BAD_JSON", `request body: "NaN" at byte 6 is not a number JSON allows`},
		{"Infinity", `{"a": -Infinity}`, "M_BAD_JSON", `request body: "-Infinity" at byte 6 is not a number JSON allows`},
		// A body cut off mid-number is not JSON.
		{"NumberCutOff", `{"a": 1.`, "M_NOT_JSON", `request body is not valid JSON: unexpected end of JSON`},
		// JSON whose top level is not an object is JSON of the wrong shape.
		{"Array", `[]`, "M_BAD_JSON", `request body must be a JSON object`},
		{"String", `"x"`, "M_BAD_JSON", `request body must be a JSON object`},
		{"Number", `1`, "M_BAD_JSON", `request body must be a JSON object`},
		{"Null", `null`, "M_BAD_JSON", `request body must be a JSON object`},
		{"NotJSON", `nope`, "M_NOT_JSON", `request body is not valid JSON: unexpected character 'n' at byte 0`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/", strings.NewReader(tc.body))
			var v map[string]any
			err := httpapi.DecodeJSON(r, &v)
			var me *httpapi.Error
			if !errors.As(err, &me) || me.Status != 400 || me.Code != tc.errcode || me.Message != tc.want {
				t.Fatalf("DecodeJSON(%.60q) = %v; want 400 %s: %s", tc.body, err, tc.errcode, tc.want)
			}
		})
	}
	// The deepest body allowed still decodes.
	r := httptest.NewRequest("POST", "/", strings.NewReader(deep(httpapi.MaxDepth)))
	var v map[string]any
	if err := httpapi.DecodeJSON(r, &v); err != nil {
		t.Fatalf("DecodeJSON of a body %d deep: %v", httpapi.MaxDepth, err)
	}
}

// BenchmarkDecodeJSON64K decodes a 64 KiB body as /keys/upload does; the
// duplicate-key and depth check is a part of it.
func BenchmarkDecodeJSON64K(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"one_time_keys":{`)
	for i := 0; sb.Len() < 64<<10-200; i++ {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `"signed_curve25519:AAAAAAAA%04d":{"key":"zKbLg+NrIjpnagy+pIY6uPL4ZwEG2v+8F9lmgsnlZzs","signatures":{"@alice:example.org":{"ed25519:JLAFKJWSCS":"FLWxXqGbwrb8SM3Y795eB6OA8bwBcoMZFXBqnTn58AYWZSqiD45tlBVcDa2L7RwdKXebW/VzDlnfVJ+9jok1Bw"}}}`, i)
	}
	sb.WriteString(`}}`)
	body := sb.String()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		r := httptest.NewRequest("POST", "/", strings.NewReader(body))
		var v struct {
			OneTimeKeys map[string]any `json:"one_time_keys"`
		}
		if err := httpapi.DecodeJSON(r, &v); err != nil {
			b.Fatal(err)
		}
	}
}
