package serverkeys

import (
	"maps"
	"testing"
)

func TestParseXMatrix(t *testing.T) {
	for _, tc := range []struct {
		header string
		want   map[string]string // nil: not X-Matrix
		bad    bool
	}{
		{`X-Matrix origin="a.example",key="ed25519:k",sig="c2ln"`, map[string]string{"origin": "a.example", "key": "ed25519:k", "sig": "c2ln"}, false},
		{`x-matrix   ORIGIN=a.example:8448 , Key="ed25519:k",	sig=c2ln`, map[string]string{"origin": "a.example:8448", "key": "ed25519:k", "sig": "c2ln"}, false},
		{`X-Matrix origin="a\"b\\c",key="k",sig="s",unknown="x"`, map[string]string{"origin": `a"b\c`, "key": "k", "sig": "s", "unknown": "x"}, false},
		{`X-Matrix origin="a",key="k",sig="s", X-Matrix origin="a",key="k2",sig="s2"`, map[string]string{"origin": "a", "key": "k", "sig": "s"}, false},
		{`X-Matrix `, map[string]string{}, false},
		{`Bearer abc`, nil, false},
		{`X-Matrixorigin="a"`, nil, false},
		{`X-Matrix origin="a`, nil, true},
		{`X-Matrix origin`, nil, true},
		{`X-Matrix origin="a" key="k"`, nil, true},
		{`X-Matrix origin="a",origin="b"`, nil, true},
	} {
		got, ok, err := parseXMatrix(tc.header)
		switch {
		case tc.bad:
			if err == nil {
				t.Errorf("%s: got %v, want an error", tc.header, got)
			}
		case err != nil:
			t.Errorf("%s: %v", tc.header, err)
		case tc.want == nil && ok:
			t.Errorf("%s: read as X-Matrix: %v", tc.header, got)
		case tc.want != nil && (!ok || !maps.Equal(got, tc.want)):
			t.Errorf("%s: got %v, want %v", tc.header, got, tc.want)
		}
	}
}
