package filters_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/filters"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/protocol"
)

// FuzzValidate feeds filters.Validate the bodies POST /user/{userId}/filter
// lets through (those httpapi.DecodeJSON takes): it never panics, refuses
// with ErrInvalid, and a filter it accepts has a canonical form (what is
// stored and hashed into its ID) that it accepts too and that means the
// same.
func FuzzValidate(f *testing.F) {
	for _, seed := range []string{
		specExample, `{}`, `{"org.example.x":{"y":1},"room":{"timeline":{"limit":0,"org.matrix.msc":true}}}`,
		`{"room":{"timeline":{"limit":"ten"}}}`, `{"presence":{"limit":1.5}}`, `{"room":{"rooms":["r"]}}`,
		`{"event_format":"federation","event_fields":["content.a\\.b"]}`, `{"room":{"state":null,"timeline":{"limit":null}}}`,
		`{"account_data":{"senders":["@a:example.org"],"not_senders":["b"]}}`, `{"room":{"timeline":{"limit":-1}}}`,
		`{"a":-0.0,"b":1e400,"c":"\ud800"}`, `{"room":{"timeline":{"limit":9223372036854775808}}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		if len(doc) == 0 || doc[0] != '{' || protocol.CheckJSON(doc, httpapi.MaxDepth) != nil {
			return // DecodeJSON refuses it first
		}
		err := filters.Validate(doc)
		if err != nil {
			if !errors.Is(err, filters.ErrInvalid) {
				t.Fatalf("Validate(%q): %v, want ErrInvalid", doc, err)
			}
			return
		}
		canonical, err := protocol.CanonicalJSON(doc)
		if err != nil {
			t.Fatalf("Validate(%q) accepts a filter without canonical form: %v", doc, err)
		}
		if err := filters.Validate(canonical); err != nil {
			t.Fatalf("Validate(%q) accepts it, but not its canonical form %q: %v", doc, canonical, err)
		}
		var a, b any
		decode(t, doc, &a)
		decode(t, canonical, &b)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("filter %q is stored as %q", doc, canonical)
		}
	})
}

// decode reads doc with its numbers kept as written, but -0, which
// canonical JSON writes 0.
func decode(t *testing.T, doc []byte, v *any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %q: %v", doc, err)
	}
	*v = zeroSign(*v)
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
