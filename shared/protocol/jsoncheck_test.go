package protocol_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/cirrus-matrix/cirrus/shared/protocol"
)

func TestCheckJSON(t *testing.T) {
	manyKeys := func(dup string) string {
		var b strings.Builder
		b.WriteString("{")
		for i := range 40 {
			fmt.Fprintf(&b, `"k%d":%d,`, i, i)
		}
		b.WriteString(`"` + dup + `":true}`)
		return b.String()
	}
	tests := []struct {
		name  string
		doc   string
		depth int   // 0 is 100
		kind  error // nil when valid
		msg   string
	}{
		{"Object", ` {"a" : [1, {"b":null}], "A": true, "c": -1.5e+3} `, 0, nil, ""},
		{"Scalar", `"x"`, 0, nil, ""},
		{"EmptyKey", `{"":1,"a":{"":2}}`, 0, nil, ""},
		{"SameKeyInOtherObjects", `{"a":{"a":1},"b":[{"a":1},{"a":2}]}`, 0, nil, ""},
		{"ManyKeys", manyKeys("k40"), 0, nil, ""},
		{"Escapes", `{"\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00":"\ud800"}`, 0, nil, ""},

		{"Empty", ``, 0, protocol.ErrSyntax, "unexpected end of JSON"},
		{"Unclosed", `{"a":[1`, 0, protocol.ErrSyntax, "unexpected end of JSON"},
		{"NoValue", `{"a":}`, 0, protocol.ErrSyntax, "unexpected character '}' at byte 5"},
		{"NoColon", `{"a" 1}`, 0, protocol.ErrSyntax, "unexpected character '1' at byte 5"},
		{"TrailingComma", `[1,]`, 0, protocol.ErrSyntax, "unexpected character ']' at byte 3"},
		{"TrailingCommaObject", `{"a":1,}`, 0, protocol.ErrSyntax, "unexpected character '}' at byte 7"},
		{"Mismatched", `[1}`, 0, protocol.ErrSyntax, "unexpected character '}' at byte 2"},
		// Numbers JSON does not allow are ErrBadNumber, and ErrSyntax too.
		{"LeadingZero", `01`, 0, protocol.ErrBadNumber, `"01" at byte 0 is not a number JSON allows`},
		{"LeadingZeroSyntax", `[01]`, 0, protocol.ErrSyntax, `"01" at byte 1 is not a number JSON allows`},
		{"BareDot", `1.`, 0, protocol.ErrBadNumber, `"1." at byte 0 is not a number JSON allows`},
		{"Plus", `+1`, 0, protocol.ErrBadNumber, `"+1" at byte 0 is not a number JSON allows`},
		{"Exponent", `1e`, 0, protocol.ErrBadNumber, `"1e" at byte 0 is not a number JSON allows`},
		{"NaN", `{"a":NaN}`, 0, protocol.ErrBadNumber, `"NaN" at byte 5 is not a number JSON allows`},
		{"Infinity", `[-Infinity,1]`, 0, protocol.ErrBadNumber, `"-Infinity" at byte 1 is not a number JSON allows`},
		{"CutMidNumber", `{"a":1.`, 0, protocol.ErrSyntax, "unexpected end of JSON"},
		{"Literal", `tru`, 0, protocol.ErrSyntax, "unexpected character 't' at byte 0"},
		{"Control", "\"a\x01\"", 0, protocol.ErrSyntax, "control character 0x01 in a string at byte 2"},
		{"BadEscape", `"\q"`, 0, protocol.ErrSyntax, `invalid escape \q in a string at byte 1`},
		{"ShortEscape", `"\u12"`, 0, protocol.ErrSyntax, `invalid \u escape in a string at byte 1`},
		{"BadUTF8", "\"\xff\"", 0, protocol.ErrSyntax, "invalid UTF-8 in a string at byte 1"},
		{"TwoValues", `{} {}`, 0, protocol.ErrSyntax, "unexpected character '{' after the JSON value"},
		{"KeyNotString", `{1:2}`, 0, protocol.ErrSyntax, "unexpected character '1' at byte 1"},

		{"Duplicate", `{"a":1,"a":2}`, 0, protocol.ErrDuplicateKey, `key "a" appears twice`},
		{"DuplicateEscaped", `{"a":1,"\u0061":2}`, 0, protocol.ErrDuplicateKey, `key "a" appears twice`},
		{"DuplicateNested", `{"content":{"users":{},"users":{}}}`, 0, protocol.ErrDuplicateKey, `content: key "users" appears twice`},
		{"DuplicateInArray", `[{"a":1},{"b":1,"b":2}]`, 0, protocol.ErrDuplicateKey, `[1]: key "b" appears twice`},
		{"DuplicateOddKey", `{"users":{"@a:x":{"k":1,"k":2}}}`, 0, protocol.ErrDuplicateKey, `users["@a:x"]: key "k" appears twice`},
		{"DuplicateMany", manyKeys("k7"), 0, protocol.ErrDuplicateKey, `key "k7" appears twice`},
		{"DuplicateSurrogates", `{"\ud800":1,"\udc00":2}`, 0, protocol.ErrDuplicateKey, "key \"\ufffd\" appears twice"},

		{"DeepEnough", `[[{"a":[]}]]`, 4, nil, ""},
		{"TooDeep", `[[{"a":[[]]}]]`, 4, protocol.ErrTooDeep, "arrays and objects are nested deeper than 4 levels"},
		{"VeryDeep", strings.Repeat("[", 100000), 0, protocol.ErrTooDeep, "arrays and objects are nested deeper than 100 levels"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			depth := tc.depth
			if depth == 0 {
				depth = 100
			}
			err := protocol.CheckJSON([]byte(tc.doc), depth)
			checkJSONError(t, tc.doc, err, tc.kind, tc.msg)
		})
	}
}

func TestCheckCanonicalJSON(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		kind error
		msg  string
	}{
		{"Integers", `{"a":0,"b":-1,"c":9007199254740991,"d":-9007199254740991,"e":[1,2]}`, nil, ""},
		{"Pair", `{"a":"\ud83d\ude00"}`, nil, ""},
		{"EscapedKey", `{"\u00e9\/":1}`, nil, ""},
		{"Float", `{"a":1.5}`, protocol.ErrNotCanonical, `a: 1.5 is not an integer: canonical JSON has only integers, without fraction or exponent`},
		{"FloatZero", `{"a":1.0}`, protocol.ErrNotCanonical, `a: 1.0 is not an integer: canonical JSON has only integers, without fraction or exponent`},
		{"Exponent", `{"a":[1e5]}`, protocol.ErrNotCanonical, `a[0]: 1e5 is not an integer: canonical JSON has only integers, without fraction or exponent`},
		{"MinusZero", `{"a":-0}`, protocol.ErrNotCanonical, `a: -0 is not an integer: canonical JSON has only integers, without fraction or exponent`},
		{"TooBig", `{"users":{"@a:x":9007199254740992}}`, protocol.ErrNotCanonical, `users["@a:x"]: 9007199254740992 is out of the range of canonical JSON, -(2**53)+1 to (2**53)-1`},
		{"TooSmall", `{"a":-9007199254740992}`, protocol.ErrNotCanonical, `a: -9007199254740992 is out of the range of canonical JSON, -(2**53)+1 to (2**53)-1`},
		{"Huge", `{"a":123456789012345678901234567890}`, protocol.ErrNotCanonical, `a: 123456789012345678901234567890 is out of the range of canonical JSON, -(2**53)+1 to (2**53)-1`},
		{"LoneHigh", `{"a":"x\ud800y"}`, protocol.ErrNotCanonical, `a: a string holds a lone UTF-16 surrogate, \ud800`},
		{"LoneLow", `{"a":"\udc00"}`, protocol.ErrNotCanonical, `a: a string holds a lone UTF-16 surrogate, \udc00`},
		{"HighHigh", `{"a":"\ud800\ud800"}`, protocol.ErrNotCanonical, `a: a string holds a lone UTF-16 surrogate, \ud800`},
		{"QuoteInKey", `{"a\"b":1}`, protocol.ErrNotCanonical, `key "a\"b" holds a quote, a backslash or a control character`},
		{"BackslashInKey", `{"x":{"a\\b":1}}`, protocol.ErrNotCanonical, `x: key "a\\b" holds a quote, a backslash or a control character`},
		{"ControlInKey", `{"a\nb":1}`, protocol.ErrNotCanonical, `key "a\nb" holds a quote, a backslash or a control character`},
		{"Duplicate", `{"membership":"join","membership":"leave"}`, protocol.ErrDuplicateKey, `key "membership" appears twice`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := protocol.CheckCanonicalJSON([]byte(tc.doc), 100)
			checkJSONError(t, tc.doc, err, tc.kind, tc.msg)
			if tc.kind == nil {
				if _, err := protocol.CanonicalJSON([]byte(tc.doc)); err != nil {
					t.Errorf("CanonicalJSON(%s): %v", tc.doc, err)
				}
			}
		})
	}
}

func checkJSONError(t *testing.T, doc string, err, kind error, msg string) {
	t.Helper()
	if kind == nil {
		if err != nil {
			t.Fatalf("check %.80q: got %v, want no error", doc, err)
		}
		return
	}
	var je *protocol.JSONError
	if !errors.As(err, &je) || !errors.Is(err, kind) {
		t.Fatalf("check %.80q: got %v, want a *JSONError of %v", doc, err, kind)
	}
	if err.Error() != msg {
		t.Errorf("check %.80q: got %q, want %q", doc, err.Error(), msg)
	}
}

// duplicateKey finds a duplicate key with encoding/json's tokenizer: the
// reference CheckJSON is fuzzed against. doc must be valid JSON.
func duplicateKey(doc []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	type level struct {
		keys      map[string]bool
		expectKey bool
	}
	var stack []*level
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return false
		}
		if err != nil {
			panic(fmt.Sprintf("reference tokenizer on valid JSON %q: %v", doc, err))
		}
		var top *level
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		isKey := top != nil && top.keys != nil && top.expectKey
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			if len(stack) > 0 && stack[len(stack)-1].keys != nil {
				stack[len(stack)-1].expectKey = true
			}
			continue
		}
		if isKey {
			k := tok.(string)
			if top.keys[k] {
				return true
			}
			top.keys[k] = true
			top.expectKey = false
			continue
		}
		if top != nil && top.keys != nil {
			top.expectKey = true
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &level{keys: map[string]bool{}, expectKey: true})
		case json.Delim('['):
			stack = append(stack, &level{})
		}
	}
}

// FuzzCheckJSON checks CheckJSON against encoding/json: the same documents
// are valid JSON (encoding/json's depth limit is 10,000; it lets invalid
// UTF-8 through, CheckJSON does not), the same hold a duplicate key; a lower
// depth limit only adds ErrTooDeep; and CheckCanonicalJSON is stricter.
func FuzzCheckJSON(f *testing.F) {
	for _, seed := range []string{
		`{"a":1,"b":[true,false,null],"c":{"d":"e"}}`, `{"a":1,"a":2}`, `{"a":1,"\u0061":2}`,
		`[1.5,-0,1e5,9007199254740992]`, `"\ud800"`, `{"\ud800":1,"\udc00":2}`, "{\"a\":\"\xff\"}",
		`[[[[[[[[[[]]]]]]]]]]`, `{"a":{"b":{"c":{}}},"a":0}`, ` 0 `, `{} x`, `{"users":{"@a:x":50,"@a:x":100}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		err := protocol.CheckJSON(doc, 10000)
		var je *protocol.JSONError
		if err != nil && !errors.As(err, &je) {
			t.Fatalf("CheckJSON(%q): %T %v, not a *JSONError", doc, err, err)
		}
		valid := json.Valid(doc) && utf8.Valid(doc)
		switch {
		case err == nil || errors.Is(err, protocol.ErrDuplicateKey):
			if !valid {
				t.Fatalf("CheckJSON(%q) = %v, but encoding/json says it is not valid JSON", doc, err)
			}
			if dup := duplicateKey(doc); dup != (err != nil) {
				t.Fatalf("CheckJSON(%q) = %v, but the reference finds a duplicate key: %v", doc, err, dup)
			}
		case errors.Is(err, protocol.ErrSyntax):
			if valid {
				t.Fatalf("CheckJSON(%q) = %v, but encoding/json says it is valid JSON", doc, err)
			}
		case errors.Is(err, protocol.ErrTooDeep):
			if json.Valid(doc) {
				t.Fatalf("CheckJSON(%q) = %v, but encoding/json takes it", doc, err)
			}
		default:
			t.Fatalf("CheckJSON(%q): error of no known kind: %v", doc, err)
		}
		if shallow := protocol.CheckJSON(doc, 3); shallow != nil && !errors.Is(shallow, protocol.ErrTooDeep) &&
			(err == nil || shallow.Error() != err.Error()) {
			t.Fatalf("CheckJSON(%q, 3) = %v, but with depth 10000: %v", doc, shallow, err)
		}
		if cerr := protocol.CheckCanonicalJSON(doc, 10000); err != nil && cerr == nil {
			t.Fatalf("CheckCanonicalJSON(%q) accepts what CheckJSON refuses: %v", doc, err)
		}
	})
}

// FuzzCanonicalJSON checks CanonicalJSON, gomatrixserverlib's canonical
// JSON behind the check of what it would not encode faithfully: what it
// encodes comes out valid, meaning what the input meant, as its own
// canonical form; and what CheckCanonicalJSON accepts (what gets signed)
// it encodes, into something CheckCanonicalJSON accepts too.
func FuzzCanonicalJSON(f *testing.F) {
	for _, seed := range []string{
		`{"b":1,"a":[{"d":"\u00e9","c":"\ud83d\ude00"}]}`, `{"a":"\u0000\u001f\"\\\/\u2028"}`, `{"a":-0}`,
		`{"a":-0.5}`, `{"a":"\ud800x"}`, `{"a\"":1}`, `{ "a" : [ 1 , 2 ] }`, `{"a":"\ud800\u0041"}`,
		`{"a":9007199254740991,"b":-9007199254740991}`, `{"\u00e9":1,"e":2,"é":3}`, `{"a":1.50,"b":1E5,"c":-0e1}`,
		`{"a":1,"a":2}`, ` [ -0 , 0.0 ] `,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		signable := protocol.CheckCanonicalJSON(doc, 100) == nil
		out, err := protocol.CanonicalJSON(doc)
		if err != nil {
			if signable {
				t.Fatalf("CanonicalJSON(%q) fails on what CheckCanonicalJSON accepts: %v", doc, err)
			}
			return
		}
		if err := protocol.CheckJSON(out, 10000); err != nil || !json.Valid(out) {
			t.Fatalf("CanonicalJSON(%q) = %q, which is not valid JSON: %v", doc, out, err)
		}
		if err := protocol.CheckCanonicalJSON(out, 100); signable && err != nil {
			t.Fatalf("CanonicalJSON(%q) = %q, which is not canonical: %v", doc, out, err)
		}
		again, err := protocol.CanonicalJSON(out)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("CanonicalJSON(%q) = %q, but that gives %q, %v", doc, out, again, err)
		}
		if a, b := decode(t, doc), decode(t, out); !reflect.DeepEqual(a, b) {
			t.Fatalf("CanonicalJSON(%q) = %q, which means %#v, not %#v", doc, out, b, a)
		}
	})
}

// decode reads doc with its numbers kept as written, but -0, which
// canonical JSON writes 0.
func decode(t *testing.T, doc []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %q: %v", doc, err)
	}
	return zeroSign(v)
}

func zeroSign(v any) any {
	switch v := v.(type) {
	case json.Number:
		if v == "-0" {
			return json.Number("0")
		}
	case map[string]any:
		for k, e := range v {
			v[k] = zeroSign(e)
		}
	case []any:
		for i, e := range v {
			v[i] = zeroSign(e)
		}
	}
	return v
}

func TestCanonicalJSON_Unfaithful(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{`{"a":1,"a":2}`, `canonical json: key "a" appears twice`},
		{`{"a\"b":1}`, `canonical json: key "a\"b" holds a quote, a backslash or a control character`},
		{`{"a":"\ud800x"}`, `canonical json: a: a string holds a lone UTF-16 surrogate, \ud800`},
		{`{"a":[-0.5]}`, `canonical json: a[0]: -0.5 would lose a minus sign in canonical JSON`},
		{`{"a":1e-05}`, `canonical json: a: 1e-05 would lose a minus sign in canonical JSON`},
	} {
		if _, err := protocol.CanonicalJSON([]byte(tc.doc)); err == nil || err.Error() != tc.want {
			t.Errorf("CanonicalJSON(%s): got %v, want %q", tc.doc, err, tc.want)
		}
	}
	for doc, want := range map[string]string{
		` {"b":[1.50, 1E5, -0], "a":"\u00e9\/"} `: `{"a":"é/","b":[1.50,1E5,0]}`,
	} {
		if out, err := protocol.CanonicalJSON([]byte(doc)); err != nil || string(out) != want {
			t.Errorf("CanonicalJSON(%s) = %s, %v; want %s", doc, out, err, want)
		}
	}
}

// body64K is a 64 KiB request body shaped like a /keys/upload: many small
// objects of strings.
func body64K() []byte {
	var b strings.Builder
	b.WriteString(`{"one_time_keys":{`)
	for i := 0; b.Len() < 64<<10-200; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"signed_curve25519:AAAAAAAA%04d":{"key":"zKbLg+NrIjpnagy+pIY6uPL4ZwEG2v+8F9lmgsnlZzs","signatures":{"@alice:example.org":{"ed25519:JLAFKJWSCS":"FLWxXqGbwrb8SM3Y795eB6OA8bwBcoMZFXBqnTn58AYWZSqiD45tlBVcDa2L7RwdKXebW/VzDlnfVJ+9jok1Bw"}}}`, i)
	}
	b.WriteString(`}}`)
	return []byte(b.String())
}

func BenchmarkCheckJSON64K(b *testing.B) {
	doc := body64K()
	b.SetBytes(int64(len(doc)))
	b.Run("CheckJSON", func(b *testing.B) {
		for b.Loop() {
			if err := protocol.CheckJSON(doc, 100); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("CheckCanonicalJSON", func(b *testing.B) {
		for b.Loop() {
			if err := protocol.CheckCanonicalJSON(doc, 100); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json.Valid", func(b *testing.B) {
		for b.Loop() {
			if !json.Valid(doc) {
				b.Fatal("invalid")
			}
		}
	})
	b.Run("json.Unmarshal", func(b *testing.B) {
		for b.Loop() {
			var v struct {
				OneTimeKeys map[string]json.RawMessage `json:"one_time_keys"`
			}
			if err := json.Unmarshal(doc, &v); err != nil {
				b.Fatal(err)
			}
		}
	})
}
