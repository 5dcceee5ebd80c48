package events

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
)

func TestValidateContent(t *testing.T) {
	empty := ptr("")
	bob := ptr("@bob:example.org")
	long := "@" + strings.Repeat("a", 250) + ":example.org"
	tests := []struct {
		name     string
		typ      string
		stateKey *string
		content  string
		want     string // the error message, "" for none
	}{
		// Any event type.
		{"Message", "m.room.message", nil, `{"body":"hi"}`, ""},
		{"UnknownState", "org.example.state", ptr("x"), `{"anything":[1,2]}`, ""},
		{"NotJSON", "m.room.message", nil, `{"body":`, `m.room.message: content is not valid JSON: unexpected end of JSON`},
		{"NotJSONScalar", "m.room.message", nil, `nope`, `m.room.message: content is not valid JSON: unexpected character 'n' at byte 0`},
		{"Empty", "m.room.message", nil, ``, `m.room.message: content is empty, it must be a JSON object`},
		{"Array", "m.room.message", nil, `[]`, `m.room.message: content must be a JSON object, not an array`},
		{"String", "m.room.topic", empty, `"topic"`, `m.room.topic: content must be a JSON object, not a string`},
		{"Null", "m.room.message", nil, `null`, `m.room.message: content must be a JSON object, not null`},
		{"Float", "m.room.message", nil, `{"body":"hi","x":{"y":[1.5]}}`,
			`m.room.message: content.x.y[0]: 1.5 is not an integer: canonical JSON has only integers, without fraction or exponent`},
		{"Exponent", "org.example", nil, `{"n":1e5}`,
			`org.example: content.n: 1e5 is not an integer: canonical JSON has only integers, without fraction or exponent`},
		{"MinusZero", "org.example", nil, `{"n":-0}`,
			`org.example: content.n: -0 is not an integer: canonical JSON has only integers, without fraction or exponent`},
		{"BigInteger", "org.example", nil, `{"n":9007199254740992}`,
			`org.example: content.n: 9007199254740992 is out of the range of canonical JSON, -(2**53)+1 to (2**53)-1`},
		{"LoneSurrogate", "m.room.message", nil, `{"body":"\ud800"}`,
			`m.room.message: content.body: a string holds a lone UTF-16 surrogate, \ud800`},
		{"Duplicate", "m.room.member", bob, `{"membership":"join","membership":"leave"}`,
			`m.room.member: content: key "membership" appears twice`},
		{"DuplicateNested", "m.room.power_levels", empty, `{"users":{"@bob:example.org":100},"users":{"@bob:example.org":0}}`,
			`m.room.power_levels: content: key "users" appears twice`},
		{"DuplicateInUsers", "m.room.power_levels", empty, `{"users":{"@bob:example.org":0,"@bob:example.org":100}}`,
			`m.room.power_levels: content.users: key "@bob:example.org" appears twice`},
		{"DuplicateAndBadSchema", "m.room.member", bob, `{"membership":"join","membership":7}`,
			`m.room.member: content: key "membership" appears twice`},
		{"Deep", "m.room.message", nil, `{"a":` + strings.Repeat("[", MaxContentDepth) + strings.Repeat("]", MaxContentDepth) + `}`,
			`m.room.message: content: arrays and objects are nested deeper than 64 levels`},
		{"DeepEnough", "m.room.message", nil, `{"a":` + strings.Repeat("[", MaxContentDepth-1) + strings.Repeat("]", MaxContentDepth-1) + `}`, ""},
		{"VeryDeep", "m.room.message", nil, strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000),
			`m.room.message: content: arrays and objects are nested deeper than 64 levels`},

		// m.room.power_levels
		{"PowerLevelsOK", "m.room.power_levels", empty, `{"ban":50,"events":{"m.room.name":-10},"events_default":0,` +
			`"invite":0,"kick":50,"notifications":{"room":50},"redact":50,"state_default":50,` +
			`"users":{"@alice:example.org":100,"@Old_Style:example.org":1},"users_default":-9007199254740991}`, ""},
		{"PowerLevelsDigitString", "m.room.power_levels", empty, `{"ban":"50"}`,
			`m.room.power_levels: ban must be an integer, not a string`},
		{"PowerLevelsFloat", "m.room.power_levels", empty, `{"kick":50.5}`,
			`m.room.power_levels: kick must be an integer, not the number 50.5`},
		{"PowerLevelsExponent", "m.room.power_levels", empty, `{"redact":1e2}`,
			`m.room.power_levels: redact must be an integer, not the number 1e2`},
		{"PowerLevelsNull", "m.room.power_levels", empty, `{"invite":null}`,
			`m.room.power_levels: invite must be an integer, not null`},
		{"PowerLevelsTooBig", "m.room.power_levels", empty, `{"state_default":9007199254740992}`,
			`m.room.power_levels: state_default must be an integer between -(2**53)+1 and (2**53)-1, not 9007199254740992`},
		{"PowerLevelsHuge", "m.room.power_levels", empty, `{"users_default":-99999999999999999999}`,
			`m.room.power_levels: users_default must be an integer between -(2**53)+1 and (2**53)-1, not -99999999999999999999`},
		{"PowerLevelsEventsNotObject", "m.room.power_levels", empty, `{"events":[]}`,
			`m.room.power_levels: events must be a JSON object, not an array`},
		{"PowerLevelsEventsNull", "m.room.power_levels", empty, `{"events":null}`,
			`m.room.power_levels: events must be a JSON object, not null`},
		{"PowerLevelsEventsString", "m.room.power_levels", empty, `{"events":{"m.room.name":"50"}}`,
			`m.room.power_levels: events.m.room.name must be an integer, not a string`},
		{"PowerLevelsNotifications", "m.room.power_levels", empty, `{"notifications":{"room":true}}`,
			`m.room.power_levels: notifications.room must be an integer, not a boolean`},
		{"PowerLevelsUserNoServer", "m.room.power_levels", empty, `{"users":{"@bob":50}}`,
			`m.room.power_levels: users key "@bob" is not a user ID: it has no ':' before the server name`},
		{"PowerLevelsUserNoSigil", "m.room.power_levels", empty, `{"users":{"bob:example.org":50}}`,
			`m.room.power_levels: users key "bob:example.org" is not a user ID: it does not start with '@'`},
		{"PowerLevelsUserBadServer", "m.room.power_levels", empty, `{"users":{"@bob:exa mple.org":50}}`,
			`m.room.power_levels: users key "@bob:exa mple.org" is not a user ID: "exa mple.org" is not a valid server name`},
		{"PowerLevelsUserEmptyLocal", "m.room.power_levels", empty, `{"users":{"@:example.org":50}}`,
			`m.room.power_levels: users key "@:example.org" is not a user ID: its localpart is empty`},
		{"PowerLevelsUserTooLong", "m.room.power_levels", empty, `{"users":{"` + long + `":50}}`,
			`m.room.power_levels: users key "` + long + `" is not a user ID: it is 263 bytes, over the limit of 255`},
		{"PowerLevelsUserLevel", "m.room.power_levels", empty, `{"users":{"@bob:example.org":"100"}}`,
			`m.room.power_levels: users.@bob:example.org must be an integer, not a string`},

		// m.room.join_rules
		{"JoinRulesOK", "m.room.join_rules", empty, `{"join_rule":"public"}`, ""},
		{"JoinRulesRestrictedOK", "m.room.join_rules", empty, `{"join_rule":"restricted",` +
			`"allow":[{"type":"m.room_membership","room_id":"!space:example.org"},{"type":"org.example.future"}]}`, ""},
		{"JoinRulesMissing", "m.room.join_rules", empty, `{}`,
			`m.room.join_rules: join_rule is missing, it must be one of public, invite, knock, restricted, knock_restricted, private`},
		{"JoinRulesUnknown", "m.room.join_rules", empty, `{"join_rule":"open"}`,
			`m.room.join_rules: join_rule must be one of public, invite, knock, restricted, knock_restricted, private, not "open"`},
		{"JoinRulesNotString", "m.room.join_rules", empty, `{"join_rule":1}`,
			`m.room.join_rules: join_rule must be a string, not the number 1`},
		{"JoinRulesAllowNotArray", "m.room.join_rules", empty, `{"join_rule":"restricted","allow":{}}`,
			`m.room.join_rules: allow must be an array of objects, not an object`},
		{"JoinRulesAllowNotObject", "m.room.join_rules", empty, `{"join_rule":"restricted","allow":["!a:b"]}`,
			`m.room.join_rules: allow[0] must be a JSON object, not a string`},
		{"JoinRulesAllowTypeNotString", "m.room.join_rules", empty, `{"join_rule":"restricted","allow":[{"type":7}]}`,
			`m.room.join_rules: allow[0].type must be a string, not the number 7`},
		{"JoinRulesAllowRoomNotString", "m.room.join_rules", empty, `{"join_rule":"restricted","allow":[{"type":"m.room_membership","room_id":["!a:b"]}]}`,
			`m.room.join_rules: allow[0].room_id must be a string, not an array`},
		// Conditions the auth rules do not use are stored, as Synapse stores
		// them: without a type, without a room, with a room ID that names no
		// room, null, and allow lists in rooms that are not restricted.
		{"JoinRulesAllowNoType", "m.room.join_rules", empty, `{"join_rule":"restricted","allow":[{"room_id":"!a:b"}]}`, ""},
		{"JoinRulesAllowNoRoom", "m.room.join_rules", empty, `{"join_rule":"restricted","allow":[{"type":"m.room_membership"}]}`, ""},
		{"JoinRulesAllowRoomNotRoomID", "m.room.join_rules", empty, `{"join_rule":"restricted","allow":[{"type":"m.room_membership","room_id":"#a:b"}]}`, ""},
		{"JoinRulesAllowNulls", "m.room.join_rules", empty, `{"join_rule":"restricted","allow":[null,{"type":null,"room_id":null}]}`, ""},
		{"JoinRulesAllowNull", "m.room.join_rules", empty, `{"join_rule":"restricted","allow":null}`, ""},
		{"JoinRulesAllowPublic", "m.room.join_rules", empty, `{"join_rule":"public","allow":[{"type":"m.room_membership"}]}`, ""},

		// m.room.history_visibility and m.room.guest_access
		{"HistoryVisibilityOK", "m.room.history_visibility", empty, `{"history_visibility":"world_readable"}`, ""},
		{"HistoryVisibilityUnknown", "m.room.history_visibility", empty, `{"history_visibility":"everyone"}`,
			`m.room.history_visibility: history_visibility must be one of world_readable, shared, invited, joined, not "everyone"`},
		{"HistoryVisibilityMissing", "m.room.history_visibility", empty, `{}`,
			`m.room.history_visibility: history_visibility is missing, it must be one of world_readable, shared, invited, joined`},
		{"GuestAccessOK", "m.room.guest_access", empty, `{"guest_access":"can_join"}`, ""},
		{"GuestAccessUnknown", "m.room.guest_access", empty, `{"guest_access":"yes"}`,
			`m.room.guest_access: guest_access must be one of can_join, forbidden, not "yes"`},

		// m.room.member
		{"MemberOK", "m.room.member", bob, `{"membership":"invite","reason":"come"}`, ""},
		{"MemberHistoricalUser", "m.room.member", ptr("@Bob:example.org"), `{"membership":"ban"}`, ""},
		{"MemberRestrictedOK", "m.room.member", bob, `{"membership":"join","join_authorised_via_users_server":"@alice:example.org"}`, ""},
		{"MemberNoStateKey", "m.room.member", nil, `{"membership":"join"}`,
			`m.room.member: state_key is missing, it must be the user ID whose membership changes`},
		{"MemberStateKeyNotUser", "m.room.member", ptr("bob"), `{"membership":"join"}`,
			`m.room.member: state_key "bob" is not a user ID: it does not start with '@'`},
		{"MemberMissing", "m.room.member", bob, `{"displayname":"Bob"}`,
			`m.room.member: membership is missing, it must be one of join, invite, leave, ban, knock`},
		{"MemberUnknown", "m.room.member", bob, `{"membership":"kick"}`,
			`m.room.member: membership must be one of join, invite, leave, ban, knock, not "kick"`},
		{"MemberAuthorisedViaNumber", "m.room.member", bob, `{"membership":"join","join_authorised_via_users_server":7}`,
			`m.room.member: join_authorised_via_users_server must be a string, not the number 7`},
		// Values the auth rules do not use are stored, as Synapse stores
		// them; on a restricted join, the auth rules refuse a bad one.
		{"MemberAuthorisedViaNotUser", "m.room.member", bob, `{"membership":"join","join_authorised_via_users_server":"example.org"}`, ""},
		{"MemberAuthorisedViaOnLeave", "m.room.member", bob, `{"membership":"leave","join_authorised_via_users_server":"nobody"}`, ""},
		{"MemberAuthorisedViaNull", "m.room.member", bob, `{"membership":"join","join_authorised_via_users_server":null}`, ""},
		{"MemberAvatarNotMXC", "m.room.member", bob, `{"membership":"join","avatar_url":"https://example.org/a.png"}`, ""},

		// m.room.name, m.room.topic, m.room.avatar
		{"NameOK", "m.room.name", empty, `{"name":"` + strings.Repeat("é", 200) + `"}`, ""},
		{"NameNullUnsets", "m.room.name", empty, `{"name":null}`, ""},
		{"NameAbsentUnsets", "m.room.name", empty, `{}`, ""},
		{"NameNumber", "m.room.name", empty, `{"name":42}`, `m.room.name: name must be a string, not the number 42`},
		{"TopicOK", "m.room.topic", empty, `{"topic":"t","m.topic":{"m.text":[{"body":"t"}]}}`, ""},
		{"TopicObject", "m.room.topic", empty, `{"topic":{"text":"t"}}`, `m.room.topic: topic must be a string, not an object`},
		{"AvatarOK", "m.room.avatar", empty, `{"url":"mxc://example.org/abc","info":{"w":1}}`, ""},
		{"AvatarRemoved", "m.room.avatar", empty, `{}`, ""},
		{"AvatarNull", "m.room.avatar", empty, `{"url":null}`, ""},
		{"AvatarNotMXC", "m.room.avatar", empty, `{"url":"https://example.org/a.png"}`, ""},
		{"AvatarNumber", "m.room.avatar", empty, `{"url":5}`, `m.room.avatar: url must be a string, not the number 5`},

		// m.room.canonical_alias
		{"AliasOK", "m.room.canonical_alias", empty, `{"alias":"#pub:example.org","alt_aliases":["#bar:example.org","#:example.org"]}`, ""},
		{"AliasUnset", "m.room.canonical_alias", empty, `{"alias":null,"alt_aliases":[]}`, ""},
		{"AliasEmpty", "m.room.canonical_alias", empty, `{"alias":""}`, ""},
		{"AliasNoSigil", "m.room.canonical_alias", empty, `{"alias":"pub:example.org"}`,
			`m.room.canonical_alias: alias "pub:example.org" is not a room alias: it does not start with '#'`},
		{"AliasNoServer", "m.room.canonical_alias", empty, `{"alias":"#pub"}`,
			`m.room.canonical_alias: alias "#pub" is not a room alias: it has no ':' before the server name`},
		{"AliasNotString", "m.room.canonical_alias", empty, `{"alias":["#pub:example.org"]}`,
			`m.room.canonical_alias: alias must be a string, not an array`},
		{"AltAliasesNotArray", "m.room.canonical_alias", empty, `{"alt_aliases":"#pub:example.org"}`,
			`m.room.canonical_alias: alt_aliases must be an array of strings, not a string`},
		{"AltAliasesBad", "m.room.canonical_alias", empty, `{"alt_aliases":["#a:example.org","#b:bad_server!"]}`,
			`m.room.canonical_alias: alt_aliases[1] "#b:bad_server!" is not a room alias: "bad_server!" is not a valid server name`},
		{"AltAliasesNumber", "m.room.canonical_alias", empty, `{"alt_aliases":[1]}`,
			`m.room.canonical_alias: alt_aliases[0] must be a string, not the number 1`},

		// m.room.encryption
		{"EncryptionOK", "m.room.encryption", empty, `{"algorithm":"m.megolm.v1.aes-sha2","rotation_period_ms":604800000,"rotation_period_msgs":100}`, ""},
		{"EncryptionMissing", "m.room.encryption", empty, `{}`,
			`m.room.encryption: algorithm is missing, it must name the encryption algorithm, such as m.megolm.v1.aes-sha2`},
		{"EncryptionNotString", "m.room.encryption", empty, `{"algorithm":true}`,
			`m.room.encryption: algorithm must be a string, not a boolean`},
		{"EncryptionRotation", "m.room.encryption", empty, `{"algorithm":"m.megolm.v1.aes-sha2","rotation_period_msgs":"100"}`,
			`m.room.encryption: rotation_period_msgs must be an integer, not a string`},

		// m.room.server_acl
		{"ServerACLOK", "m.room.server_acl", empty, `{"allow":["*"],"deny":["evil.com"],"allow_ip_literals":false}`, ""},
		{"ServerACLAllowString", "m.room.server_acl", empty, `{"allow":"*"}`,
			`m.room.server_acl: allow must be an array of strings, not a string`},
		{"ServerACLDenyItem", "m.room.server_acl", empty, `{"deny":["a",{}]}`,
			`m.room.server_acl: deny[1] must be a string, not an object`},
		{"ServerACLIPLiterals", "m.room.server_acl", empty, `{"allow_ip_literals":"false"}`,
			`m.room.server_acl: allow_ip_literals must be a boolean, not a string`},

		// m.room.create
		{"CreateOK", "m.room.create", empty, `{"room_version":"12","additional_creators":["@bob:example.org"],"type":"m.space"}`, ""},
		{"CreateVersionNumber", "m.room.create", empty, `{"room_version":12}`,
			`m.room.create: room_version must be a string, not the number 12`},
		{"CreateCreatorsNotArray", "m.room.create", empty, `{"additional_creators":"@bob:example.org"}`,
			`m.room.create: additional_creators must be an array of strings, not a string`},
		{"CreateCreatorBad", "m.room.create", empty, `{"additional_creators":["@bob:example.org","@carol"]}`,
			`m.room.create: additional_creators[1] "@carol" is not a user ID: it has no ':' before the server name`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateContent(tc.typ, tc.stateKey, []byte(tc.content))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("ValidateContent(%s, %s): got %q, want no error", tc.typ, tc.content, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ValidateContent(%s, %s): got no error, want %q", tc.typ, tc.content, tc.want)
			}
			if err.Error() != tc.want {
				t.Errorf("ValidateContent(%s, %s):\n got  %q\n want %q", tc.typ, tc.content, err, tc.want)
			}
			if !errors.Is(err, ErrBadContent) || errors.Is(err, ErrTooLarge) {
				t.Errorf("ValidateContent(%s, %s) = %v: want it to wrap ErrBadContent only", tc.typ, tc.content, err)
			}
		})
	}
}

// TestValidateContent_PowerLevelsOfGomatrixserverlib feeds power levels
// made with gomatrixserverlib's defaults through the check. Its nil maps
// encode as null, which the auth rules of room versions 10 on refuse
// ("present and not an object"), so a caller must fill them.
func TestValidateContent_PowerLevelsOfGomatrixserverlib(t *testing.T) {
	var pl gomatrixserverlib.PowerLevelContent
	pl.Defaults()
	content, err := json.Marshal(pl)
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateContent("m.room.power_levels", ptr(""), content); err == nil {
		t.Errorf("ValidateContent(%s): got no error for null maps", content)
	}
	pl.Users = map[string]int64{"@bob:example.org": 50}
	pl.Events = map[string]int64{"m.room.tombstone": 150}
	content, err = json.Marshal(pl)
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateContent("m.room.power_levels", ptr(""), content); err != nil {
		t.Errorf("ValidateContent(%s): %v", content, err)
	}
}

func TestCheckSize(t *testing.T) {
	base := fixtureEvent(t, "11", gomatrixserverlib.ProtoEvent{
		SenderID: "@alice:example.org", RoomID: "!room:example.org", Type: "m.room.message",
		Content: []byte(`{"body":"hi"}`),
	})
	v1 := fixtureEvent(t, "1", gomatrixserverlib.ProtoEvent{
		SenderID: "@alice:example.org", RoomID: "!room:example.org", Type: "m.room.member",
		StateKey: ptr("@alice:example.org"), Content: []byte(`{"membership":"join"}`),
	})
	if err := CheckSize(base.JSON()); err != nil {
		t.Errorf("CheckSize of a v11 message: %v", err)
	}
	if err := CheckSize(v1.JSON()); err != nil {
		t.Errorf("CheckSize of a v1 member event: %v", err)
	}

	// with changes the built event, re-encoded; a built event cannot break
	// the limits since gomatrixserverlib refuses to build it.
	with := func(key string, value any) []byte {
		t.Helper()
		var m map[string]any
		if err := json.Unmarshal(base.JSON(), &m); err != nil {
			t.Fatal(err)
		}
		m[key] = value
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	big := with("content", map[string]string{"body": strings.Repeat("x", MaxPDUBytes)})
	long := strings.Repeat("x", 256)
	tests := []struct {
		name string
		pdu  []byte
		want string
	}{
		{"AtLimit", with("type", strings.Repeat("x", 255)), ""},
		{"Event", big, "event is " + itoa(len(big)) + " bytes, over the limit of 65536 bytes"},
		{"Sender", with("sender", "@"+long+":example.org"), "sender is 269 bytes, over the limit of 255 bytes"},
		{"RoomID", with("room_id", "!"+long+":example.org"), "room_id is 269 bytes, over the limit of 255 bytes"},
		{"EventID", with("event_id", "$"+long), "event_id is 257 bytes, over the limit of 255 bytes"},
		{"StateKey", with("state_key", long), "state_key is 256 bytes, over the limit of 255 bytes"},
		{"Type", with("type", long), "type is 256 bytes, over the limit of 255 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckSize(tc.pdu)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("CheckSize: got %v, want no error", err)
				}
				return
			}
			if err == nil || err.Error() != tc.want {
				t.Fatalf("CheckSize: got %v, want %q", err, tc.want)
			}
			if !errors.Is(err, ErrTooLarge) || errors.Is(err, ErrBadContent) {
				t.Errorf("CheckSize = %v: want it to wrap ErrTooLarge only", err)
			}
		})
	}

	if err := CheckSize([]byte(`[]`)); err == nil || errors.Is(err, ErrTooLarge) {
		t.Errorf("CheckSize of an array: got %v, want a plain error", err)
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestValidateContent_Keys(t *testing.T) {
	for _, c := range []struct {
		content string
		ok      bool
	}{
		{`{"body":"a\\b \"quoted\" \n"}`, true},
		{`{"a":{"b":[{"c":1}],"d":"e"},"f":[1,"x\\y"]}`, true},
		{`{"a\\b":1}`, false},
		{`{"a":{"x\ny":1}}`, false},
		{`{"a":[{"q\"":1}]}`, false},
	} {
		err := ValidateContent("m.room.message", nil, []byte(c.content))
		if (err == nil) != c.ok {
			t.Errorf("%s: err %v, want ok %v", c.content, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrBadContent) {
			t.Errorf("%s: %v does not wrap ErrBadContent", c.content, err)
		}
	}
}
