package push

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
)

const (
	alice    = "@alice:example.org"
	bob      = "@bob:example.org"
	roomID   = "!room:example.org"
	quietID  = "!quiet:example.org"
	mentions = `"m.mentions": {"user_ids": ["@alice:example.org"]}`
)

// evalCase is one event evaluated against a ruleset, with what the spec
// says should come of it.
type evalCase struct {
	name   string
	event  string
	ctx    EventContext
	notify bool
	high   bool
	rule   string
}

// run evaluates every case against rs.
func run(t *testing.T, rs Ruleset, cases []evalCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := rs.Evaluate([]byte(tc.event), tc.ctx)
			if got.Notify != tc.notify || got.Highlight != tc.high || got.RuleID != tc.rule {
				t.Errorf("event %s\ngot  rule %q notify %v highlight %v\nwant rule %q notify %v highlight %v",
					tc.event, got.RuleID, got.Notify, got.Highlight, tc.rule, tc.notify, tc.high)
			}
		})
	}
}

// inRoom is alice's context in a room of n joined members where the sender has
// power level 0 and @room needs the spec's default 50.
func inRoom(n int) EventContext {
	return EventContext{UserID: alice, MemberCount: n, NotifLevels: map[string]int64{"room": 50}}
}

// withLevel is c with the sender at power level lvl.
func withLevel(c EventContext, lvl int64) EventContext {
	c.SenderLevel = lvl
	return c
}

// message is a client-format event of type typ from bob in roomID, with the
// given content (a JSON object) and, when stateKey is not nil, a state key.
func message(typ, content string, stateKey *string) string {
	sk := ""
	if stateKey != nil {
		b, _ := json.Marshal(*stateKey)
		sk = fmt.Sprintf(`, "state_key": %s`, b)
	}
	return fmt.Sprintf(`{"type": %q, "sender": %q, "room_id": %q, "event_id": "$e:example.org",
		"origin_server_ts": 1700000000000, "content": %s%s}`, typ, bob, roomID, content, sk)
}

func text(body string) string {
	b, _ := json.Marshal(body)
	return message("m.room.message", fmt.Sprintf(`{"msgtype": "m.text", "body": %s}`, b), nil)
}

func ptr(s string) *string { return &s }

// withOwn merges user rules, given by kind as the spec's JSON, into
// alice's defaults the way the store does, with changes to predefined
// rules as well.
func withOwn(t *testing.T, own map[Kind]string, changed map[Kind]map[string]change) Ruleset {
	t.Helper()
	u := userRules{Own: map[Kind][]Rule{}, Changed: changed}
	for k, list := range own {
		var rules []Rule
		if err := json.Unmarshal([]byte(list), &rules); err != nil {
			t.Fatalf("%s rules %s: %v", k, list, err)
		}
		u.Own[k] = rules
	}
	return u.merge(alice)
}

func TestEvaluate_Defaults(t *testing.T) {
	run(t, Defaults(alice), []evalCase{
		{name: "OneToOne", event: text("hello"), ctx: inRoom(2), notify: true, rule: ".m.rule.room_one_to_one"},
		{name: "Group", event: text("hello"), ctx: inRoom(5), notify: true, rule: ".m.rule.message"},
		{
			name:  "UserMention",
			event: message("m.room.message", `{"msgtype": "m.text", "body": "hi", `+mentions+`}`, nil),
			ctx:   inRoom(5), notify: true, high: true, rule: ".m.rule.is_user_mention",
		},
		{
			name:  "OtherUserMention",
			event: message("m.room.message", `{"msgtype": "m.text", "body": "hi", "m.mentions": {"user_ids": ["@carol:example.org"]}}`, nil),
			ctx:   inRoom(5), notify: true, rule: ".m.rule.message",
		},
		{
			name:  "NameInBodyIsNoMention",
			event: text("alice, @alice:example.org, look"),
			ctx:   inRoom(5), notify: true, rule: ".m.rule.message",
		},
		{
			name:  "RoomMentionByModerator",
			event: message("m.room.message", `{"msgtype": "m.text", "body": "@room hi", "m.mentions": {"room": true}}`, nil),
			ctx:   withLevel(inRoom(5), 50), notify: true, high: true, rule: ".m.rule.is_room_mention",
		},
		{
			name:  "RoomMentionBelowLevel",
			event: message("m.room.message", `{"msgtype": "m.text", "body": "@room hi", "m.mentions": {"room": true}}`, nil),
			ctx:   withLevel(inRoom(5), 49), notify: true, rule: ".m.rule.message",
		},
		{
			name:   "RoomMentionRoomLevelRaised",
			event:  message("m.room.message", `{"msgtype": "m.text", "body": "@room hi", "m.mentions": {"room": true}}`, nil),
			ctx:    EventContext{UserID: alice, MemberCount: 5, SenderLevel: 50, NotifLevels: map[string]int64{"room": 100}},
			notify: true, rule: ".m.rule.message",
		},
		{
			name:   "RoomMentionNoLevelsDefaults50",
			event:  message("m.room.message", `{"msgtype": "m.text", "body": "@room hi", "m.mentions": {"room": true}}`, nil),
			ctx:    EventContext{UserID: alice, MemberCount: 5, SenderLevel: 50},
			notify: true, high: true, rule: ".m.rule.is_room_mention",
		},
		{
			name:  "RoomMentionStringTrue",
			event: message("m.room.message", `{"msgtype": "m.text", "body": "@room hi", "m.mentions": {"room": "true"}}`, nil),
			ctx:   withLevel(inRoom(5), 100), notify: true, rule: ".m.rule.message",
		},
		{
			name:  "InviteForMe",
			event: message("m.room.member", `{"membership": "invite", "displayname": "Alice"}`, ptr(alice)),
			ctx:   inRoom(2), notify: true, rule: ".m.rule.invite_for_me",
		},
		{
			name:  "InviteForOther",
			event: message("m.room.member", `{"membership": "invite"}`, ptr("@carol:example.org")),
			ctx:   inRoom(2), rule: ".m.rule.member_event",
		},
		{
			name:  "Join",
			event: message("m.room.member", `{"membership": "join"}`, ptr(bob)),
			ctx:   inRoom(2), rule: ".m.rule.member_event",
		},
		{
			name:  "Notice",
			event: message("m.room.message", `{"msgtype": "m.notice", "body": "beep", `+mentions+`}`, nil),
			ctx:   inRoom(2), rule: ".m.rule.suppress_notices",
		},
		{
			name:  "Reaction",
			event: message("m.reaction", `{"m.relates_to": {"rel_type": "m.annotation", "event_id": "$x:example.org", "key": "👍"}}`, nil),
			ctx:   inRoom(2), rule: ".m.rule.reaction",
		},
		{
			name:  "EncryptedOneToOne",
			event: message("m.room.encrypted", `{"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA", "session_id": "s"}`, nil),
			ctx:   inRoom(2), notify: true, rule: ".m.rule.encrypted_room_one_to_one",
		},
		{
			name:  "EncryptedGroup",
			event: message("m.room.encrypted", `{"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA", "session_id": "s"}`, nil),
			ctx:   inRoom(3), notify: true, rule: ".m.rule.encrypted",
		},
		{
			name:  "Tombstone",
			event: message("m.room.tombstone", `{"body": "upgraded", "replacement_room": "!new:example.org"}`, ptr("")),
			ctx:   inRoom(5), notify: true, high: true, rule: ".m.rule.tombstone",
		},
		{
			// The tombstone rule is for the state event only (push.md's
			// warning about state_key).
			name:  "TombstoneNotState",
			event: message("m.room.tombstone", `{"body": "upgraded"}`, nil),
			ctx:   inRoom(5),
		},
		{
			name:  "ServerACL",
			event: message("m.room.server_acl", `{"allow": ["*"]}`, ptr("")),
			ctx:   inRoom(2), rule: ".m.rule.room.server_acl",
		},
		{
			name: "Edit",
			// Mentions of an edit are in m.new_content, which no rule reads.
			event: message("m.room.message", `{"msgtype": "m.text", "body": "* fixed",
				"m.new_content": {"msgtype": "m.text", "body": "fixed", `+mentions+`},
				"m.relates_to": {"rel_type": "m.replace", "event_id": "$x:example.org"}}`, nil),
			ctx: inRoom(2), rule: ".m.rule.suppress_edits",
		},
		{
			name:  "Call",
			event: message("m.call.invite", `{"call_id": "c", "lifetime": 60000, "version": "1"}`, nil),
			ctx:   inRoom(2), notify: true, rule: ".m.rule.call",
		},
		{name: "Topic", event: message("m.room.topic", `{"topic": "lunch"}`, ptr("")), ctx: inRoom(2)},
		{
			name:  "OwnMessage",
			event: `{"type": "m.room.message", "sender": "@alice:example.org", "room_id": "!room:example.org", "content": {"msgtype": "m.text", "body": "hi", ` + mentions + `}}`,
			ctx:   inRoom(2),
		},
		{name: "NotAnObject", event: `["m.room.message"]`, ctx: inRoom(2)},
		{name: "NotJSON", event: `{"type": "m.room.message"`, ctx: inRoom(2)},
	})
}

// TestEvaluate_Master checks that the enabled master rule, which has no
// conditions, matches every event before anything else, the user's own
// override rules included, and notifies of none.
func TestEvaluate_Master(t *testing.T) {
	on := true
	rs := withOwn(t,
		map[Kind]string{Override: `[{"rule_id": "everything", "enabled": true, "conditions": [], "actions": ["notify"]}]`},
		map[Kind]map[string]change{Override: {".m.rule.master": {Enabled: &on}}})
	if rs.Override[0].RuleID != ".m.rule.master" {
		t.Fatalf("first override rule is %s, want .m.rule.master", rs.Override[0].RuleID)
	}
	const master = ".m.rule.master"
	run(t, rs, []evalCase{
		{name: "OneToOne", event: text("hello"), ctx: inRoom(2), rule: master},
		{name: "UserMention", event: message("m.room.message", `{"msgtype": "m.text", "body": "hi", `+mentions+`}`, nil), ctx: inRoom(5), rule: master},
		{name: "RoomMention", event: message("m.room.message", `{"body": "@room", "m.mentions": {"room": true}}`, nil), ctx: withLevel(inRoom(5), 100), rule: master},
		{name: "Invite", event: message("m.room.member", `{"membership": "invite"}`, ptr(alice)), ctx: inRoom(2), rule: master},
		{name: "Tombstone", event: message("m.room.tombstone", `{"replacement_room": "!new:example.org"}`, ptr("")), ctx: inRoom(5), rule: master},
		{name: "Unknown", event: message("org.example.custom", `{}`, nil), ctx: inRoom(5), rule: master},
	})
}

// TestEvaluate_ContentRules checks content rules: case-insensitive globs
// over content.body that start and end at word boundaries.
func TestEvaluate_ContentRules(t *testing.T) {
	rs := withOwn(t, map[Kind]string{Content: `[
		{"rule_id": "cat", "enabled": true, "pattern": "cat", "actions": ["notify", {"set_tweak": "highlight"}]},
		{"rule_id": "example", "enabled": true, "pattern": "ex*ple", "actions": ["notify"]},
		{"rule_id": "off", "enabled": false, "pattern": "hello", "actions": ["notify", {"set_tweak": "highlight"}]},
		{"rule_id": "one", "enabled": true, "pattern": "b?g", "actions": ["notify", {"set_tweak": "highlight", "value": false}]}
	]`}, nil)
	hit := func(body string) evalCase {
		return evalCase{name: body, event: text(body), ctx: inRoom(5), notify: true, high: true, rule: "cat"}
	}
	miss := func(body string) evalCase {
		return evalCase{name: body, event: text(body), ctx: inRoom(5), notify: true, rule: ".m.rule.message"}
	}
	run(t, rs, []evalCase{
		hit("the cat sat"),
		hit("cat"),
		hit("CAT!"),
		hit("a (Cat)"),
		hit("dog-cat"),
		hit("line one\ncat"),
		hit("chat_cat cat"),
		miss("category"),
		miss("concat"),
		miss("cats"),
		miss("cat_food"),
		miss("hello world"), // the hello rule is disabled
		{name: "SpansWords", event: text("An exciting triple-whammy"), ctx: inRoom(5), notify: true, rule: "example"},
		{name: "WholeBody", event: text("exple"), ctx: inRoom(5), notify: true, rule: "example"},
		{name: "QuestionMark", event: text("a big dog"), ctx: inRoom(5), notify: true, rule: "one"},
		{name: "QuestionMarkOneChar", event: text("a bg dog"), ctx: inRoom(2), notify: true, rule: ".m.rule.room_one_to_one"},
		{name: "NoBody", event: message("m.room.message", `{"msgtype": "m.text", "formatted_body": "cat"}`, nil), ctx: inRoom(5), notify: true, rule: ".m.rule.message"},
		{name: "BodyNotString", event: message("m.room.message", `{"msgtype": "m.text", "body": ["cat"]}`, nil), ctx: inRoom(5), notify: true, rule: ".m.rule.message"},
		{name: "OverrideFirst", event: message("m.room.message", `{"msgtype": "m.notice", "body": "cat"}`, nil), ctx: inRoom(5), rule: ".m.rule.suppress_notices"},
	})
}

// TestEvaluate_RoomAndSenderRules checks that room rules match the room ID
// and sender rules the sender, both by rule ID, and that the historical
// dont_notify action means no notification.
func TestEvaluate_RoomAndSenderRules(t *testing.T) {
	rs := withOwn(t, map[Kind]string{
		Room:   `[{"rule_id": "!quiet:example.org", "enabled": true, "actions": ["dont_notify"]}]`,
		Sender: `[{"rule_id": "@bob:example.org", "enabled": true, "actions": ["notify", {"set_tweak": "sound", "value": "bob"}]}]`,
	}, nil)
	inQuiet := `{"type": "m.room.message", "sender": "@bob:example.org", "room_id": "!quiet:example.org", "content": {"msgtype": "m.text", "body": "psst"}}`
	fromCarol := `{"type": "m.room.message", "sender": "@carol:example.org", "room_id": "!room:example.org", "content": {"msgtype": "m.text", "body": "hi"}}`
	run(t, rs, []evalCase{
		{name: "QuietRoom", event: inQuiet, ctx: inRoom(2), rule: quietID},
		{name: "OtherRoomBySender", event: text("hi"), ctx: inRoom(2), notify: true, rule: bob},
		{name: "NeitherRoomNorSender", event: fromCarol, ctx: inRoom(2), notify: true, rule: ".m.rule.room_one_to_one"},
		{name: "MentionOverridesRoomRule", event: `{"type": "m.room.message", "sender": "@bob:example.org", "room_id": "!quiet:example.org", "content": {"body": "hi", ` + mentions + `}}`, ctx: inRoom(2), notify: true, high: true, rule: ".m.rule.is_user_mention"},
	})
	got := rs.Evaluate([]byte(text("hi")), inRoom(2))
	want := []json.RawMessage{json.RawMessage(`"notify"`), json.RawMessage(`{"set_tweak":"sound","value":"bob"}`)}
	if !sameActions(got.Actions, want) {
		t.Errorf("actions of the sender rule: got %s, want %s", mustJSON(got.Actions), mustJSON(want))
	}
}

// condRules is alice's defaults with one override rule per condition
// given, each named after its case and notifying, so that a case's rule ID
// shows which condition matched.
func condRules(t *testing.T, conds map[string]string) Ruleset {
	t.Helper()
	var list []string
	for id, c := range conds {
		list = append(list, fmt.Sprintf(`{"rule_id": %q, "enabled": true, "conditions": [%s], "actions": ["notify"]}`, id, c))
	}
	slices.Sort(list)
	return withOwn(t, map[Kind]string{Override: "[" + strings.Join(list, ",") + "]"}, nil)
}

// custom is an event of a type no predefined rule knows, so that only the
// test's own rules can match it.
func custom(content string) string {
	return message("org.example.test", content, nil)
}

// TestEvaluate_Conditions checks each condition kind on events that only
// the rule under test can match. A case whose rule is "" matched nothing.
func TestEvaluate_Conditions(t *testing.T) {
	rs := condRules(t, map[string]string{
		"is_true":         `{"kind": "event_property_is", "key": "content.flag", "value": true}`,
		"is_null":         `{"kind": "event_property_is", "key": "content.nothing", "value": null}`,
		"is_42":           `{"kind": "event_property_is", "key": "content.n", "value": 42}`,
		"is_str":          `{"kind": "event_property_is", "key": "content.s", "value": "Exact"}`,
		"contains_alias":  `{"kind": "event_property_contains", "key": "content.alt_aliases", "value": "#myroom:example.com"}`,
		"contains_7":      `{"kind": "event_property_contains", "key": "content.nums", "value": 7}`,
		"thread":          `{"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type", "value": "m.thread"}`,
		"backslash":       `{"kind": "event_property_is", "key": "content.m\\\\foo", "value": "bar"}`,
		"topic_glob":      `{"kind": "event_match", "key": "content.topic", "pattern": "lunc?*"}`,
		"any_kind":        `{"kind": "event_match", "key": "content.kind", "pattern": "*"}`,
		"future":          `{"kind": "org.example.future", "key": "content.future"}`,
		"display":         `{"kind": "contains_display_name"}, {"kind": "event_match", "key": "type", "pattern": "m.room.message"}`,
		"big_room":        `{"kind": "room_member_count", "is": ">=10"}, {"kind": "event_match", "key": "content.size", "pattern": "big"}`,
		"small_room":      `{"kind": "room_member_count", "is": "<3"}, {"kind": "event_match", "key": "content.size", "pattern": "small"}`,
		"exact_room":      `{"kind": "room_member_count", "is": "==4"}, {"kind": "event_match", "key": "content.size", "pattern": "four"}`,
		"custom_level":    `{"kind": "sender_notification_permission", "key": "org.example"}, {"kind": "event_match", "key": "content.level", "pattern": "custom"}`,
		"highlight_quiet": `{"kind": "event_match", "key": "content.quiet", "pattern": "yes"}`,
	})
	// A highlight without notify is no highlight.
	for i, r := range rs.Override {
		if r.RuleID == "highlight_quiet" {
			rs.Override[i].Actions = []json.RawMessage{json.RawMessage(`{"set_tweak":"highlight"}`)}
		}
	}
	display := inRoom(5)
	display.DisplayName = "Alice Smith"
	levels := inRoom(5)
	levels.NotifLevels = map[string]int64{"room": 50, "org.example": 20}
	cases := []evalCase{
		{name: "IsTrue", event: custom(`{"flag": true}`), rule: "is_true"},
		{name: "IsTrueNotString", event: custom(`{"flag": "true"}`)},
		{name: "IsTrueNotOne", event: custom(`{"flag": 1}`)},
		{name: "IsNull", event: custom(`{"nothing": null}`), rule: "is_null"},
		{name: "IsNullAbsent", event: custom(`{}`)},
		{name: "IsNullNotFalse", event: custom(`{"nothing": false}`)},
		{name: "IsNumber", event: custom(`{"n": 42}`), rule: "is_42"},
		{name: "IsNumberNotString", event: custom(`{"n": "42"}`)},
		{name: "IsNumberNotFloat", event: custom(`{"n": 42.0}`)},
		{name: "IsNumberNotOther", event: custom(`{"n": 43}`)},
		{name: "IsStringCaseSensitive", event: custom(`{"s": "exact"}`)},
		{name: "IsString", event: custom(`{"s": "Exact"}`), rule: "is_str"},
		{name: "IsNotCompound", event: custom(`{"s": ["Exact"]}`)},
		{name: "Contains", event: custom(`{"alt_aliases": ["#somewhere:example.org", "#myroom:example.com"]}`), rule: "contains_alias"},
		{name: "ContainsNotPartial", event: custom(`{"alt_aliases": [":example.com"]}`)},
		{name: "ContainsNotArray", event: custom(`{"alt_aliases": "#myroom:example.com"}`)},
		{name: "ContainsSkipsCompound", event: custom(`{"nums": [[7], {"a": 7}, 7]}`), rule: "contains_7"},
		{name: "ContainsOnlyCompound", event: custom(`{"nums": [[7], {"a": 7}, "7"]}`)},
		{name: "EscapedDot", event: custom(`{"m.relates_to": {"rel_type": "m.thread", "event_id": "$root:example.org"}}`), rule: "thread"},
		{name: "EscapedDotNotNested", event: custom(`{"m": {"relates_to": {"rel_type": "m.thread"}}}`)},
		{name: "EscapedBackslash", event: custom(`{"m\\foo": "bar"}`), rule: "backslash"},
		{name: "Glob", event: custom(`{"topic": "Lunch plans"}`), rule: "topic_glob"},
		{name: "GlobUpper", event: custom(`{"topic": "LUNCH"}`), rule: "topic_glob"},
		{name: "GlobLeadingSpace", event: custom(`{"topic": " lunch"}`)},
		{name: "GlobQuestionNeedsChar", event: custom(`{"topic": "lunc"}`)},
		{name: "GlobNull", event: custom(`{"topic": null}`)},
		{name: "StarNeedsString", event: custom(`{"kind": 3}`)},
		{name: "StarEmptyString", event: custom(`{"kind": ""}`), rule: "any_kind"},
		{name: "UnknownKind", event: custom(`{"future": "x"}`)},
		{name: "DisplayName", event: text("hey alice smith, lunch?"), ctx: display, notify: true, rule: "display"},
		{name: "DisplayNameWord", event: text("Alice Smithers"), ctx: display, notify: true, rule: ".m.rule.message"},
		{name: "DisplayNameNone", event: text("hey alice smith"), ctx: inRoom(5), notify: true, rule: ".m.rule.message"},
		{name: "CountAtLeast", event: custom(`{"size": "big"}`), ctx: inRoom(10), rule: "big_room"},
		{name: "CountBelow", event: custom(`{"size": "big"}`), ctx: inRoom(9)},
		{name: "CountLess", event: custom(`{"size": "small"}`), ctx: inRoom(2), rule: "small_room"},
		{name: "CountNotLess", event: custom(`{"size": "small"}`), ctx: inRoom(3)},
		{name: "CountEqual", event: custom(`{"size": "four"}`), ctx: inRoom(4), rule: "exact_room"},
		{name: "CountNotEqual", event: custom(`{"size": "four"}`), ctx: inRoom(5)},
		{name: "LevelReached", event: custom(`{"level": "custom"}`), ctx: withLevel(levels, 20), rule: "custom_level"},
		{name: "LevelMissed", event: custom(`{"level": "custom"}`), ctx: withLevel(levels, 19)},
		{name: "LevelUnset", event: custom(`{"level": "custom"}`), ctx: withLevel(inRoom(5), 100)},
		{name: "HighlightNeedsNotify", event: custom(`{"quiet": "yes"}`), rule: "highlight_quiet"},
	}
	for i := range cases {
		c := &cases[i]
		if c.ctx.UserID == "" {
			c.ctx = inRoom(5)
		}
		if c.rule != "" && c.rule != "highlight_quiet" {
			c.notify = true
		}
	}
	run(t, rs, cases)
}

// TestEvaluate_HighlightTweak checks how a rule's actions become an
// Outcome.
func TestEvaluate_HighlightTweak(t *testing.T) {
	for _, tc := range []struct {
		actions string
		notify  bool
		high    bool
	}{
		{`["notify"]`, true, false},
		{`["notify", {"set_tweak": "highlight"}]`, true, true},
		{`["notify", {"set_tweak": "highlight", "value": true}]`, true, true},
		{`["notify", {"set_tweak": "highlight", "value": false}]`, true, false},
		{`["notify", {"set_tweak": "highlight"}, {"set_tweak": "highlight", "value": false}]`, true, false},
		{`["notify", {"set_tweak": "sound", "value": "default"}]`, true, false},
		{`[{"set_tweak": "highlight"}]`, false, false},
		{`["dont_notify"]`, false, false},
		{`["coalesce"]`, false, false},
		{`[]`, false, false},
	} {
		var acts []json.RawMessage
		if err := json.Unmarshal([]byte(tc.actions), &acts); err != nil {
			t.Fatal(err)
		}
		got := outcome(Rule{RuleID: "r", Enabled: true, Actions: acts})
		if got.Notify != tc.notify || got.Highlight != tc.high || got.RuleID != "r" {
			t.Errorf("actions %s: got notify %v highlight %v, want %v %v", tc.actions, got.Notify, got.Highlight, tc.notify, tc.high)
		}
	}
}

func TestSplitPath(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want []string
	}{
		{`content.body`, []string{"content", "body"}},
		{`type`, []string{"type"}},
		{`content.m\.relates_to.rel_type`, []string{"content", "m.relates_to", "rel_type"}},
		{`content.m\\foo`, []string{"content", `m\foo`}},
		{`content.m\\.foo`, []string{"content", `m\`, "foo"}},
		{`content.m\xfoo`, []string{"content", `m\xfoo`}},
		{`content.trailing\`, []string{"content", `trailing\`}},
		{`a..b`, []string{"a", "", "b"}},
	} {
		if got := splitPath(tc.key); !slices.Equal(got, tc.want) {
			t.Errorf("splitPath(%q): got %q, want %q", tc.key, got, tc.want)
		}
	}
}

// TestEvaluate_PollsAndOwnEvents: polls notify as messages do (the spec's
// poll rules), and nothing the user sent notifies them, whatever rule would
// match it.
func TestEvaluate_PollsAndOwnEvents(t *testing.T) {
	poll := func(typ string) string { return message(typ, `{"m.text": [{"body": "lunch?"}]}`, nil) }
	own := strings.Replace(text("hi "+alice), `"sender": "`+bob+`"`, `"sender": "`+alice+`"`, 1)
	if !strings.Contains(own, `"sender": "`+alice+`"`) {
		t.Fatalf("own event not built: %s", own)
	}
	ownMention := strings.Replace(message("m.room.message", `{"msgtype": "m.text", "body": "me", `+mentions+`}`, nil), `"sender": "`+bob+`"`, `"sender": "`+alice+`"`, 1)
	run(t, Defaults(alice), []evalCase{
		{name: "PollStartOneToOne", event: poll("m.poll.start"), ctx: inRoom(2), notify: true, rule: ".m.rule.poll_start_one_to_one"},
		{name: "PollStart", event: poll("m.poll.start"), ctx: inRoom(5), notify: true, rule: ".m.rule.poll_start"},
		{name: "PollEndOneToOne", event: poll("m.poll.end"), ctx: inRoom(2), notify: true, rule: ".m.rule.poll_end_one_to_one"},
		{name: "PollEnd", event: poll("m.poll.end"), ctx: inRoom(5), notify: true, rule: ".m.rule.poll_end"},
		{name: "OwnMessage", event: own, ctx: inRoom(2)},
		{name: "OwnMention", event: ownMention, ctx: inRoom(5)},
	})
}

// TestDecodeScalar: the literals and plain strings read without a decoder
// decode as the decoder reads them; anything else goes to the decoder.
func TestDecodeScalar(t *testing.T) {
	for _, raw := range []string{
		`true`, `false`, `null`, `"m.room.message"`, `""`, `"héllo"`, `"a\"b"`, `"tab\there"`,
		`"\u0041"`, `42`, `-7`, `1.5`, `9007199254740992`, `[1]`, `{"a":1}`, ` true`, `"unterminated`, "\"bad \xff\"",
	} {
		got, ok := decodeScalar(json.RawMessage(raw))
		d := json.NewDecoder(strings.NewReader(raw))
		d.UseNumber()
		var want any
		wantOK := d.Decode(&want) == nil && isScalar(want)
		if ok != wantOK || (ok && !sameScalar(got, want)) || (ok && fmt.Sprintf("%T", got) != fmt.Sprintf("%T", want)) {
			t.Errorf("decodeScalar(%s) = %#v, %v; the decoder reads %#v, %v", raw, got, ok, want, wantOK)
		}
	}
}
