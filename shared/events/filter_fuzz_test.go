package events

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/keys"
)

// fuzzPDU is a signed message event for the filter fuzz targets to match.
func fuzzPDU(f *testing.F) PDU {
	signer := Signer{ServerName: "example.org", Key: keys.Key{
		ID: "ed25519:a", Private: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))}}
	ev, err := signer.Build("10", Proto{RoomID: "!r:example.org", Sender: "@alice:example.org", Type: "m.room.message",
		Content: []byte(`{"body":"hi","url":"mxc://a/b","a.b":{"c":[1]},"m.relates_to":{"rel_type":"m.thread"}}`)},
		Graph{Depth: 1}, nil, time.UnixMilli(fixtureMillis))
	if err != nil {
		f.Fatal(err)
	}
	return ev
}

// FuzzParseRoomEventFilter feeds the filter query parameter of /messages
// and /context any string: it never panics, refuses with ErrBadFilter, and
// a filter it accepts has no negative limit and matches events without
// panicking.
func FuzzParseRoomEventFilter(f *testing.F) {
	for _, seed := range []string{
		``, `null`, `{}`, `{"limit":10,"types":["m.room.*","*.message"],"not_types":["**"]}`,
		`{"senders":["@alice:example.org"],"not_senders":["@bob:example.org"],"rooms":["!r:example.org"],"contains_url":true}`,
		`{"limit":-1}`, `{"limit":1.5}`, `{"types":"x"}`, `{"types":[],"types":["*"]}`, `[]`, `{"rooms":["r"]}`,
		`{"types":["*a*a*a*a*a*a*a*a*b"]}`, `{"lazy_load_members":true,"x":{"y":[[[{}]]]}}`,
	} {
		f.Add(seed)
	}
	ev := fuzzPDU(f)
	f.Fuzz(func(t *testing.T, raw string) {
		filter, err := ParseRoomEventFilter(raw)
		if err != nil {
			if !errors.Is(err, ErrBadFilter) || !strings.HasPrefix(err.Error(), "filter: ") {
				t.Fatalf("ParseRoomEventFilter(%q): %v, want ErrBadFilter", raw, err)
			}
			return
		}
		if filter.Limit < 0 {
			t.Fatalf("ParseRoomEventFilter(%q): limit %d", raw, filter.Limit)
		}
		filter.Match(ev)
	})
}

// FuzzMatchWildcard checks the wildcard matcher of filter types against
// the textbook dynamic programme for '*'.
func FuzzMatchWildcard(f *testing.F) {
	for _, seed := range [][2]string{{"m.room.*", "m.room.message"}, {"*", ""}, {"a*b*c", "aXbYc"}, {"**a", "ba"},
		{"*a*a*a*b", "aaaaaaaaaaaaaaaaaaaa"}, {"", ""}, {"x", ""}} {
		f.Add(seed[0], seed[1])
	}
	// match[i][j]: pattern[i:] matches s[j:].
	match := func(p, s string) bool {
		m := make([][]bool, len(p)+1)
		for i := range m {
			m[i] = make([]bool, len(s)+1)
		}
		m[len(p)][len(s)] = true
		for i := len(p) - 1; i >= 0; i-- {
			for j := len(s); j >= 0; j-- {
				if p[i] == '*' {
					m[i][j] = m[i+1][j] || j < len(s) && m[i][j+1]
				} else {
					m[i][j] = j < len(s) && p[i] == s[j] && m[i+1][j+1]
				}
			}
		}
		return m[0][0]
	}
	f.Fuzz(func(t *testing.T, pattern, s string) {
		if len(pattern) > 512 || len(s) > 512 {
			return // types are at most 255 bytes
		}
		if got, want := matchWildcard(pattern, s), match(pattern, s); got != want {
			t.Fatalf("matchWildcard(%q, %q) = %v, want %v", pattern, s, got, want)
		}
	})
}

// FuzzFilterFields applies event_fields (one path a line) to an event: it
// never panics, gives valid JSON, and keeps only what the event had.
func FuzzFilterFields(f *testing.F) {
	for _, seed := range []string{"type\ncontent.body", "content.a\\.b.c", "unsigned.\n.\n\\", "content", "content.body.x",
		"content.m\\.relates_to.rel_type\ncontent.m\\\\.relates_to"} {
		f.Add(seed)
	}
	ev := fuzzPDU(f).JSON()
	var whole map[string]any
	if err := json.Unmarshal(ev, &whole); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, fields string) {
		kept, err := FilterFields(ev, strings.Split(fields, "\n"))
		if err != nil {
			t.Fatalf("FilterFields(%q): %v", fields, err)
		}
		var got map[string]any
		if err := json.Unmarshal(kept, &got); err != nil {
			t.Fatalf("FilterFields(%q) = %q: %v", fields, kept, err)
		}
		if !subset(got, whole) {
			t.Fatalf("FilterFields(%q) = %s, not a part of the event", fields, kept)
		}
	})
}

// subset reports whether every key of a is in b with the same value, or,
// for objects, a subset of it.
func subset(a, b map[string]any) bool {
	for k, va := range a {
		vb, ok := b[k]
		if !ok {
			return false
		}
		ma, aObj := va.(map[string]any)
		mb, bObj := vb.(map[string]any)
		switch {
		case aObj && bObj:
			if !subset(ma, mb) {
				return false
			}
		case aObj != bObj:
			return false
		default:
			ja, _ := json.Marshal(va)
			jb, _ := json.Marshal(vb)
			if !bytes.Equal(ja, jb) {
				return false
			}
		}
	}
	return true
}
