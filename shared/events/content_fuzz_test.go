package events

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/keys"
)

// FuzzValidateContent checks ValidateContent against what is done with the
// content it lets through: Build signs it (only the size limits may still
// refuse it), the signed event parses back as a receiving server parses it
// (canonical JSON, hashes), its content means what the client sent, and
// what the server reads of a member event is what the content says.
func FuzzValidateContent(f *testing.F) {
	for _, seed := range []struct {
		typ, stateKey string
		state         bool
		content       string
	}{
		{"m.room.message", "", false, `{"body":"hi","msgtype":"m.text"}`},
		{"m.room.member", "@bob:example.org", true, `{"membership":"join","displayname":"Bob"}`},
		{"m.room.member", "@bob:example.org", true, `{"membership":"join","membership":"leave"}`},
		{"m.room.power_levels", "", true, `{"users":{"@alice:example.org":100},"users":{"@bob:example.org":100}}`},
		{"m.room.power_levels", "", true, `{"ban":50,"events":{"m.room.name":100},"users_default":-9007199254740991}`},
		{"m.room.power_levels", "", true, `{"kick":1e2,"redact":-0}`},
		{"m.room.join_rules", "", true, `{"join_rule":"restricted","allow":[{"type":"m.room_membership","room_id":"!r:example.org"}]}`},
		{"m.room.message", "", false, `{"a":1.5,"b":9007199254740992,"c":"\ud800","d\"":1}`},
		{"m.room.canonical_alias", "", true, `{"alias":"#a:example.org","alt_aliases":["#b:example.org"]}`},
		{"m.room.create", "", true, `{"room_version":"10","additional_creators":["@bob:example.org"]}`},
		{"org.example", "", false, `{"a":{"b":{"c":[[[{}]]]}},"\u00e9":"\u0000"}`},
		{"m.room.server_acl", "", true, `{"allow":["*"],"allow_ip_literals":false}`},
	} {
		f.Add(seed.typ, seed.stateKey, seed.state, []byte(seed.content))
	}
	signer := Signer{ServerName: "example.org", Key: keys.Key{
		ID: "ed25519:a", Private: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))}}
	now := time.UnixMilli(fixtureMillis)
	f.Fuzz(func(t *testing.T, typ, stateKey string, state bool, content []byte) {
		var sk *string
		if state {
			sk = &stateKey
		}
		err := ValidateContent(typ, sk, content)
		if err != nil {
			if !errors.Is(err, ErrBadContent) || !strings.HasPrefix(err.Error(), typ+": ") {
				t.Fatalf("ValidateContent(%q, %q): %v: want ErrBadContent, the message starting with the type", typ, content, err)
			}
			return
		}
		ev, err := signer.Build("10", Proto{RoomID: "!room:example.org", Sender: "@alice:example.org",
			Type: typ, StateKey: sk, Content: content}, Graph{Depth: 1}, nil, now)
		if errors.Is(err, ErrTooLarge) {
			return
		}
		if err != nil {
			t.Fatalf("ValidateContent(%q, %q) accepts what Build refuses: %v", typ, content, err)
		}
		if _, err := ParseUntrusted("10", ev.JSON()); err != nil {
			t.Fatalf("the event signed from %q does not parse as a received PDU: %v", content, err)
		}
		var sent, signed any
		if err := unmarshalNumbers(content, &sent); err != nil {
			t.Fatalf("content %q: %v", content, err)
		}
		if err := unmarshalNumbers(ev.Content(), &signed); err != nil {
			t.Fatalf("signed content %q: %v", ev.Content(), err)
		}
		if !reflect.DeepEqual(sent, signed) {
			t.Fatalf("content %q was signed as %q", content, ev.Content())
		}
		if typ == Member {
			var c struct {
				Membership string `json:"membership"`
			}
			json.Unmarshal(content, &c)
			if m, err := ev.Membership(); err != nil || m != c.Membership {
				t.Fatalf("member content %q: the server reads membership %q (%v), the content says %q", content, m, err, c.Membership)
			}
		}
	})
}

func unmarshalNumbers(doc []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	return dec.Decode(v)
}
