package sync

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/filters"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/keys"
	"github.com/cirrus-matrix/cirrus/shared/protocol"
)

// FuzzParseFilter feeds the sync filter parser what a client may put in
// ?filter= (inline JSON): it never panics, refuses with 400 M_BAD_JSON, and
// what it accepts can be applied: event_fields to an event, the timeline
// and state filters to the room they name.
func FuzzParseFilter(f *testing.F) {
	for _, seed := range []string{
		`{}`,
		`{"room":{"timeline":{"limit":10,"types":["m.room.*"],"not_senders":["@bob:example.org"]},"state":{"lazy_load_members":true}}}`,
		`{"event_fields":["type","content.body","content.m\\.relates_to","unsigned.","\\"],"event_format":"federation"}`,
		`{"room":{"rooms":["!r:example.org"],"not_rooms":[],"include_leave":true,"timeline":{"limit":-1}}}`,
		`{"room":{"timeline":{"contains_url":true,"types":["*"],"not_types":["**a*b*"]}}}`,
		`{"room":{"timeline":{"limit":1.5}}}`, `{"room":{"timeline":[]}}`, `{"event_format":"x"}`, `[]`, `{"room":null}`,
		`{"room":{"timeline":{"limit":1e400}}}`, `{"room":{"timeline":{"rooms":["x"]}}}`,
		`{"room":{"timeline":{"x":[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]}}}`,
	} {
		f.Add([]byte(seed))
	}
	signer := events.Signer{ServerName: "example.org", Key: keys.Key{
		ID: "ed25519:a", Private: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))}}
	pdu, err := signer.Build("10", events.Proto{RoomID: "!r:example.org", Sender: "@alice:example.org", Type: "m.room.message",
		Content: []byte(`{"body":"hi","m.relates_to":{"rel_type":"m.thread"},"url":"mxc://a/b"}`)},
		events.Graph{Depth: 1}, nil, time.UnixMilli(1700000000000))
	if err != nil {
		f.Fatal(err)
	}
	ev := pdu.JSON()
	f.Fuzz(func(t *testing.T, doc []byte) {
		filter, err := parseFilter(doc)
		// A filter stored by POST /user/{userId}/filter (a body that
		// DecodeJSON took, which filters.Validate accepts) is read back
		// in canonical form by every sync that names it.
		if protocol.CheckJSON(doc, httpapi.MaxDepth) == nil && filters.Validate(doc) == nil {
			canonical, cerr := protocol.CanonicalJSON(doc)
			if cerr != nil {
				t.Fatalf("filter %q is stored, yet has no canonical form: %v", doc, cerr)
			}
			if _, serr := parseFilter(canonical); serr != nil {
				t.Fatalf("filter %q is stored as %q, which sync refuses: %v", doc, canonical, serr)
			}
		}
		if err != nil {
			var me *httpapi.Error
			if !errors.As(err, &me) || me.Status != 400 || me.Code != "M_BAD_JSON" {
				t.Fatalf("parseFilter(%q): %v, want 400 M_BAD_JSON", doc, err)
			}
			return
		}
		if filter.TimelineLimit < 0 {
			t.Fatalf("parseFilter(%q): timeline limit %d", doc, filter.TimelineLimit)
		}
		switch filter.Format {
		case "", events.FormatClient, events.FormatFederation:
		default:
			t.Fatalf("parseFilter(%q): event format %q", doc, filter.Format)
		}
		kept, err := events.FilterFields(ev, filter.EventFields)
		if err != nil || !json.Valid(kept) {
			t.Fatalf("event_fields %q of %q: %q, %v", filter.EventFields, doc, kept, err)
		}
		filter.wants("!r:example.org")
		for _, ef := range []*events.RoomEventFilter{filter.Timeline, filter.State} {
			if ef == nil {
				continue
			}
			ef.Match(pdu)
		}
	})
}
