package events

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
)

func TestFilterMatchWildcard(t *testing.T) {
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"m.room.message", "m.room.message", true},
		{"m.room.message", "m.room.messages", false},
		{"m.room.message", "m.room.messag", false},
		{"*", "", true},
		{"*", "m.room.message", true},
		{"m.*", "m.room.message", true},
		{"m.room.*", "m.room.", true},
		{"m.room.*", "m.room", false},
		{"*.message", "m.room.message", true},
		{"*.message", "m.room.messages", false},
		{"m.*.message", "m.room.message", true},
		{"m.*.message", "m.message", false},
		{"a*b*c", "aXbYbZc", true},
		{"a*b*c", "aXbYbZ", false},
		{"a**b", "ab", true},
		{"a*b", "abab", true},
		{"a*b", "abc", false},
		{"m.room.?", "m.room.x", false}, // only * is special
		{"m.room.?", "m.room.?", true},
		{"", "", true},
		{"", "x", false},
	}
	for _, tc := range tests {
		if got := matchWildcard(tc.pattern, tc.s); got != tc.want {
			t.Errorf("matchWildcard(%q, %q) = %v, want %v", tc.pattern, tc.s, got, tc.want)
		}
	}
}

func TestRoomEventFilter_Match(t *testing.T) {
	create := fixtureCreateV12(t)
	v12Room := create.RoomID().String()
	msg := fixtureEvent(t, "11", gomatrixserverlib.ProtoEvent{
		SenderID: "@alice:example.org", RoomID: "!room:example.org", Type: "m.room.message",
		Content: []byte(`{"body":"hi","msgtype":"m.text"}`),
	})
	image := fixtureEvent(t, "1", gomatrixserverlib.ProtoEvent{
		SenderID: "@bob:example.org", RoomID: "!room:example.org", Type: "m.room.message",
		Content: []byte(`{"body":"cat.png","msgtype":"m.image","url":"mxc://example.org/cat"}`),
	})
	notURL := fixtureEvent(t, "11", gomatrixserverlib.ProtoEvent{
		SenderID: "@bob:example.org", RoomID: "!room:example.org", Type: "org.example.link",
		Content: []byte(`{"url":{"href":"https://example.org"}}`),
	})
	tests := []struct {
		name   string
		filter string
		pdu    gomatrixserverlib.PDU
		want   bool
	}{
		{"Empty", `{}`, msg, true},
		{"Types", `{"types":["m.room.message"]}`, msg, true},
		{"TypesOther", `{"types":["m.room.member"]}`, msg, false},
		{"TypesEmptyMatchesNothing", `{"types":[]}`, msg, false},
		{"TypesWildcard", `{"types":["m.room.*"]}`, create, true},
		{"TypesWildcardMiddle", `{"types":["m.*.create"]}`, create, true},
		{"TypesWildcardNoMatch", `{"types":["m.room.*"]}`, notURL, false},
		{"NotTypes", `{"not_types":["m.room.message"]}`, msg, false},
		{"NotTypesEmpty", `{"not_types":[]}`, msg, true},
		{"NotTypesWinOverTypes", `{"types":["*"],"not_types":["m.room.mes*"]}`, msg, false},
		{"Senders", `{"senders":["@alice:example.org"]}`, msg, true},
		{"SendersOther", `{"senders":["@alice:example.org"]}`, image, false},
		{"SendersNoWildcard", `{"senders":["@*"]}`, msg, false},
		{"NotSendersWin", `{"senders":["@alice:example.org"],"not_senders":["@alice:example.org"]}`, msg, false},
		{"NotSendersOther", `{"not_senders":["@bob:example.org"]}`, msg, true},
		{"Rooms", `{"rooms":["!room:example.org"]}`, image, true},
		{"RoomsOther", `{"rooms":["!other:example.org"]}`, image, false},
		{"RoomsV12Create", `{"rooms":["` + v12Room + `"]}`, create, true},
		{"NotRoomsV12Create", `{"not_rooms":["` + v12Room + `"]}`, create, false},
		{"NotRoomsWin", `{"rooms":["!room:example.org"],"not_rooms":["!room:example.org"]}`, msg, false},
		{"ContainsURL", `{"contains_url":true}`, image, true},
		{"ContainsURLMissing", `{"contains_url":true}`, msg, false},
		{"ContainsURLNotString", `{"contains_url":true}`, notURL, false},
		{"NotContainsURL", `{"contains_url":false}`, image, false},
		{"NotContainsURLMissing", `{"contains_url":false}`, msg, true},
		{"LazyLoadingChangesNothing", `{"lazy_load_members":true,"include_redundant_members":true,"limit":1}`, msg, true},
		{"All", `{"types":["m.room.message"],"senders":["@bob:example.org"],"rooms":["!room:example.org"],"contains_url":true}`, image, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := ParseRoomEventFilter(tc.filter)
			if err != nil {
				t.Fatalf("ParseRoomEventFilter(%s): %v", tc.filter, err)
			}
			if got := f.Match(tc.pdu); got != tc.want {
				t.Errorf("filter %s matches %s %s from %s: got %v, want %v",
					tc.filter, tc.pdu.Type(), tc.pdu.Content(), tc.pdu.SenderID(), got, tc.want)
			}
		})
	}

	var none *RoomEventFilter
	if !none.Match(msg) {
		t.Error("a nil filter does not match")
	}
}

func TestParseRoomEventFilter(t *testing.T) {
	f, err := ParseRoomEventFilter(`{"limit":20,"types":["m.room.message"],"not_types":["m.room.member"],` +
		`"senders":["@a:x"],"not_senders":["@b:x"],"rooms":["!r:x"],"not_rooms":["!s:x"],"contains_url":true,` +
		`"lazy_load_members":true,"include_redundant_members":true,"unread_thread_notifications":true,"org.example":1}`)
	if err != nil {
		t.Fatalf("ParseRoomEventFilter: %v", err)
	}
	want := &RoomEventFilter{
		Limit: 20, Types: []string{"m.room.message"}, NotTypes: []string{"m.room.member"},
		Senders: []string{"@a:x"}, NotSenders: []string{"@b:x"}, Rooms: []string{"!r:x"}, NotRooms: []string{"!s:x"},
		ContainsURL: ptr(true), LazyLoadMembers: true, IncludeRedundantMembers: true, UnreadThreadNotifications: true,
	}
	if !reflect.DeepEqual(f, want) {
		t.Errorf("got  %+v\nwant %+v", f, want)
	}

	for _, raw := range []string{"", "  ", "null"} {
		f, err := ParseRoomEventFilter(raw)
		if err != nil || !reflect.DeepEqual(f, &RoomEventFilter{}) {
			t.Errorf("ParseRoomEventFilter(%q) = %+v, %v, want the empty filter", raw, f, err)
		}
	}
}

func TestParseRoomEventFilter_Errors(t *testing.T) {
	tests := []struct {
		name, raw, want string
	}{
		{"NotJSON", `{"limit":`, "filter: not valid JSON: unexpected end of JSON"},
		{"KeyTwice", `{"types":["m.room.message"],"types":[]}`, `filter: key "types" appears twice`},
		{"Deep", `{"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, "filter: arrays and objects are nested deeper than 100 levels"},
		{"NotObject", `[]`, "filter: must be a JSON object, not array"},
		{"NegativeLimit", `{"limit":-1}`, "filter: limit must not be negative, got -1"},
		{"LimitString", `{"limit":"10"}`, "filter: limit: got string where an integer was expected"},
		{"LimitFloat", `{"limit":1.5}`, "filter: limit: got number 1.5 where an integer was expected"},
		{"TypesString", `{"types":"m.room.message"}`, "filter: types: got string where an array of strings was expected"},
		{"TypesNumber", `{"not_types":[1]}`, "filter: not_types: got number where a string was expected"},
		{"ContainsURLString", `{"contains_url":"true"}`, "filter: contains_url: got string where a boolean was expected"},
		{"LazyNumber", `{"lazy_load_members":1}`, "filter: lazy_load_members: got number where a boolean was expected"},
		{"Sender", `{"senders":["@a:x","bob"]}`, `filter: senders[1] "bob" does not start with "@"`},
		{"NotSender", `{"not_senders":["bob"]}`, `filter: not_senders[0] "bob" does not start with "@"`},
		{"Room", `{"rooms":["#alias:x"]}`, `filter: rooms[0] "#alias:x" does not start with "!"`},
		{"NotRoom", `{"not_rooms":["r"]}`, `filter: not_rooms[0] "r" does not start with "!"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := ParseRoomEventFilter(tc.raw)
			if err == nil {
				t.Fatalf("ParseRoomEventFilter(%s) = %+v, want error %q", tc.raw, f, tc.want)
			}
			if err.Error() != tc.want {
				t.Errorf("ParseRoomEventFilter(%s):\n got  %q\n want %q", tc.raw, err, tc.want)
			}
			if !errors.Is(err, ErrBadFilter) {
				t.Errorf("ParseRoomEventFilter(%s) = %v, want it to wrap ErrBadFilter", tc.raw, err)
			}
		})
	}
}

func TestFilterFields(t *testing.T) {
	pdu := fixtureEvent(t, "11", gomatrixserverlib.ProtoEvent{
		SenderID: "@alice:example.org", RoomID: "!room:example.org", Type: "m.room.message",
		Content: []byte(`{"a.b":2,"body":"hi","list":[{"x":1}],"m.relates_to":{"event_id":"$root","rel_type":"m.thread"}}`),
	})
	event := mustClientEvent(t, pdu, FormatClient)
	tests := []struct {
		name   string
		fields []string
		want   string
	}{
		{"Top", []string{"type", "sender"}, `{"sender":"@alice:example.org","type":"m.room.message"}`},
		{"Nested", []string{"content.body", "unsigned.age"}, `{"content":{"body":"hi"},"unsigned":{"age":1234}}`},
		{"EscapedDot", []string{`content.m\.relates_to.rel_type`}, `{"content":{"m.relates_to":{"rel_type":"m.thread"}}}`},
		{"DotKey", []string{`content.a\.b`}, `{"content":{"a.b":2}}`},
		{"ShorterPathWins", []string{"content.body", "content", `content.m\.relates_to`},
			`{"content":` + string(pdu.Content()) + `}`},
		{"Missing", []string{"content.nope", "redacts"}, `{}`},
		{"ThroughNonObject", []string{"content.body.x", "content.list.x"}, `{}`},
		{"Merged", []string{"content.body", `content.m\.relates_to.event_id`, "event_id"},
			`{"content":{"body":"hi","m.relates_to":{"event_id":"$root"}},"event_id":"` + pdu.EventID() + `"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FilterFields(event, tc.fields)
			if err != nil {
				t.Fatalf("FilterFields(%q): %v", tc.fields, err)
			}
			equalJSON(t, got, tc.want)
		})
	}

	for _, fields := range [][]string{nil, {}} {
		got, err := FilterFields(event, fields)
		if err != nil || string(got) != string(event) {
			t.Errorf("FilterFields(%#v) = %s, %v, want the event unchanged", fields, got, err)
		}
	}
	if _, err := FilterFields([]byte(`[1]`), []string{"type"}); err == nil {
		t.Error("FilterFields of an array: got no error")
	}
}

// TestFilterFields_Backslashes uses a hand-written event: gomatrixserverlib
// (c9c468727353) writes object keys unescaped in canonical JSON, so it cannot
// build an event whose content has a backslash in a key.
func TestFilterFields_Backslashes(t *testing.T) {
	// Keys a\b, a.b and a\.b, JSON-escaped.
	event := []byte(`{"content":{"a\\b":1,"a.b":2,"a\\.b":3},"type":"m.room.message"}`)
	tests := []struct {
		name, field, want string
	}{
		{"EscapedBackslash", `content.a\\b`, `{"content":{"a\\b":1}}`},
		{"OtherEscapeIsLiteral", `content.a\b`, `{"content":{"a\\b":1}}`},
		{"Dot", `content.a\.b`, `{"content":{"a.b":2}}`},
		{"BackslashThenDot", `content.a\\\.b`, `{"content":{"a\\.b":3}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FilterFields(event, []string{tc.field})
			if err != nil {
				t.Fatalf("FilterFields(%q): %v", tc.field, err)
			}
			equalJSON(t, got, tc.want)
		})
	}
}

func TestFilterFieldsSplitPath(t *testing.T) {
	tests := []struct {
		path string
		want []string
	}{
		{"content.body", []string{"content", "body"}},
		{`content.m\.relates_to`, []string{"content", "m.relates_to"}},
		{`content.m\\foo`, []string{"content", `m\foo`}},
		{`content.m\xfoo`, []string{"content", `m\xfoo`}},
		{`trailing\`, []string{`trailing\`}},
		{"a..b", []string{"a", "", "b"}},
		{"", []string{""}},
	}
	for _, tc := range tests {
		if got := splitFieldPath(tc.path); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("splitFieldPath(%q) = %q, want %q", tc.path, got, tc.want)
		}
	}
	if got := strings.Join(splitFieldPath(`a\.b.c`), "|"); got != "a.b|c" {
		t.Errorf(`splitFieldPath("a\.b.c") joined = %q, want "a.b|c"`, got)
	}
}
