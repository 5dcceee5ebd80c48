package push

import (
	"bytes"
	"encoding/json"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Evaluation follows content/client-server-api/modules/push.md of the
// matrix-spec repository ("Push Rules", "Conditions", "Actions") and the
// appendices on glob-style matching and dot-separated property paths.

// defaultRoomNotifLevel is the power level an @room notification needs when
// the room's power levels do not say (m.room.power_levels, notifications.room).
const defaultRoomNotifLevel = 50

// maxCanonicalInt bounds the integers that event_property_is and
// event_property_contains compare: canonical JSON's [-(2^53)+1, (2^53)-1].
const maxCanonicalInt = 1<<53 - 1

// EventContext is what evaluation needs beyond the event: facts about the
// user and the room that the event itself does not carry.
type EventContext struct {
	// UserID is the user whose rules these are.
	UserID string
	// DisplayName is their display name in the room, "" if none. Only the
	// deprecated contains_display_name condition reads it.
	DisplayName string
	// MemberCount is the number of joined members of the room.
	MemberCount int
	// SenderLevel is the sender's power level in the room.
	SenderLevel int64
	// NotifLevels is the notifications object of the room's power levels,
	// defaults applied. A missing "room" is still taken as the spec's 50.
	NotifLevels map[string]int64
}

// Outcome is what the first matching rule asks for. The zero Outcome means
// that nothing matched: no notification.
type Outcome struct {
	// Notify reports whether the rule's actions include "notify".
	Notify bool
	// Highlight reports whether the notification is highlighted: a
	// highlight tweak with the value true or no value. It is only set with
	// Notify, because a tweak describes a notification and there is none
	// without "notify" (so highlight counts stay within notification counts).
	Highlight bool
	// RuleID is the ID of the rule that matched, "" if none did.
	RuleID string
	// Actions are that rule's actions as stored, tweaks included, for a
	// push gateway.
	Actions []json.RawMessage
}

// Evaluate runs the rules over an event given as client-format JSON (type,
// content, sender, state_key, room_id, ...). As the spec orders it, kinds
// go override, content, room, sender, underride, rules go in their order
// within a kind, disabled rules are skipped, and the first rule that
// matches decides.
//
// The user's own events give the zero Outcome without any rule being
// tried, because the spec forbids notifying users of what they sent. So
// does an event that is not a JSON object: it has nothing to match.
func (rs Ruleset) Evaluate(eventJSON []byte, c EventContext) Outcome {
	ev, ok := DecodeEvent(eventJSON)
	if !ok {
		return Outcome{}
	}
	return rs.EvaluateDecoded(ev, c)
}

// EvaluateDecoded is Evaluate of an event DecodeEvent read: a caller that
// reads the event's fields too decodes it once.
func (rs Ruleset) EvaluateDecoded(ev map[string]any, c EventContext) Outcome {
	if sender, _ := ev["sender"].(string); c.UserID != "" && sender == c.UserID {
		return Outcome{}
	}
	m := matcher{event: ev, ctx: c}
	for _, k := range Kinds {
		for _, r := range *rs.Of(k) {
			if r.Enabled && m.rule(k, r) {
				return outcome(r)
			}
		}
	}
	return Outcome{}
}

// DecodeEvent reads an event keeping numbers as json.Number, so that
// integers compare exactly instead of through float64.
func DecodeEvent(b []byte) (map[string]any, bool) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var ev map[string]any
	if err := d.Decode(&ev); err != nil || ev == nil {
		return nil, false
	}
	return ev, true
}

// outcome reads a matching rule's actions. Unknown strings, among them the
// historical "dont_notify" and "coalesce", are ignored as the spec says.
func outcome(r Rule) Outcome {
	o := Outcome{RuleID: r.RuleID, Actions: slices.Clone(r.Actions)}
	highlight := false
	for _, a := range r.Actions {
		var name string
		if json.Unmarshal(a, &name) == nil {
			o.Notify = o.Notify || name == "notify"
			continue
		}
		if on, ok := highlightTweak(a); ok {
			// A later tweak overrides an earlier one, as in a map of tweaks.
			highlight = on
		}
	}
	o.Highlight = o.Notify && highlight
	return o
}

// highlightTweak reads a {"set_tweak":"highlight"} action: ok says whether
// a is one, on whether it turns highlighting on (no value means true).
func highlightTweak(a json.RawMessage) (on, ok bool) {
	var t struct {
		SetTweak string          `json:"set_tweak"`
		Value    json.RawMessage `json:"value"`
	}
	if json.Unmarshal(a, &t) != nil || t.SetTweak != "highlight" {
		return false, false
	}
	v := string(bytes.TrimSpace(t.Value))
	return v == "" || v == "true", true
}

// matcher matches rules against one decoded event. Its cache of compiled
// patterns lives for one Evaluate call only, so nothing a user wrote
// outlives the evaluation that needed it.
type matcher struct {
	event map[string]any
	ctx   EventContext
	globs map[globKey]*regexp.Regexp
}

// globKey names a compiled pattern: the same text compiles differently for
// a whole value, for words of content.body, and as a literal display name.
type globKey struct {
	pattern string
	words   bool
	literal bool
}

// rule reports whether r, of kind k, matches the event. Content, room and
// sender rules carry implicit conditions; the others list theirs, all of
// which must hold, so that an empty list matches everything.
func (m *matcher) rule(k Kind, r Rule) bool {
	switch k {
	case Content:
		return r.Pattern != nil && m.eventMatch("content.body", *r.Pattern)
	case Room:
		return m.stringProp("room_id") == r.RuleID
	case Sender:
		return m.stringProp("sender") == r.RuleID
	}
	for _, c := range r.Conditions {
		if !m.condition(c) {
			return false
		}
	}
	return true
}

// stringProp returns a top-level string property, "" when absent or not a
// string (no rule ID is empty, so "" matches no room or sender rule).
func (m *matcher) stringProp(name string) string {
	s, _ := m.event[name].(string)
	return s
}

// condition reports whether c holds for the event. Unrecognised kinds never
// match, which the spec says effectively disables their rule.
func (m *matcher) condition(c Condition) bool {
	switch c.Kind {
	case "event_match":
		return c.Pattern != nil && m.eventMatch(c.Key, *c.Pattern)
	case "event_property_is":
		// The value is decoded only for an event that has the property.
		v, ok := lookup(m.event, c.Key)
		if !ok {
			return false
		}
		want, okWant := decodeScalar(c.Value)
		return okWant && sameScalar(v, want)
	case "event_property_contains":
		return m.propertyContains(c.Key, c.Value)
	case "contains_display_name":
		return m.containsDisplayName()
	case "room_member_count":
		return memberCountIs(c.Is, m.ctx.MemberCount)
	case "sender_notification_permission":
		return m.senderMay(c.Key)
	}
	return false
}

// eventMatch is event_match: a case-insensitive glob over the whole string
// value at key, or over any run of words when key is content.body. A value
// that is absent or not a string never matches, even "*".
func (m *matcher) eventMatch(key, pattern string) bool {
	v, _ := lookup(m.event, key)
	s, ok := v.(string)
	if !ok {
		return false
	}
	words := key == "content.body"
	if !words && !strings.ContainsAny(pattern, "*?") {
		// Most patterns (types, msgtypes, user IDs) are literal: skip the
		// regexp. EqualFold folds case as (?i) does, by simple folding.
		return strings.EqualFold(s, pattern)
	}
	re := m.compile(globKey{pattern: pattern, words: words})
	return re != nil && re.MatchString(s)
}

// propertyContains is event_property_contains: the value at key is an
// array with an element equal to the condition's value. Compound elements
// are ignored, as the spec says.
func (m *matcher) propertyContains(key string, value json.RawMessage) bool {
	v, _ := lookup(m.event, key)
	list, ok := v.([]any)
	if !ok {
		return false
	}
	want, okWant := decodeScalar(value)
	if !okWant {
		return false
	}
	return slices.ContainsFunc(list, func(x any) bool { return sameScalar(x, want) })
}

// containsDisplayName is the deprecated contains_display_name: content.body
// holds the user's display name in the room, case-insensitively and on word
// boundaries. The name is literal text, so its * and ? are not wildcards.
// Without a display name there is nothing to look for.
func (m *matcher) containsDisplayName() bool {
	v, _ := lookup(m.event, "content.body")
	body, ok := v.(string)
	if !ok || m.ctx.DisplayName == "" {
		return false
	}
	re := m.compile(globKey{pattern: m.ctx.DisplayName, words: true, literal: true})
	return re != nil && re.MatchString(body)
}

// senderMay is sender_notification_permission: the sender's power level
// reaches the level the room sets for the notification key. A key the room
// does not set, other than room with its default, is out of reach.
func (m *matcher) senderMay(key string) bool {
	need, ok := m.ctx.NotifLevels[key]
	if !ok && key == "room" {
		need, ok = defaultRoomNotifLevel, true
	}
	return ok && m.ctx.SenderLevel >= need
}

// memberCountIs is room_member_count: is is a decimal integer with an
// optional ==, <, >, >= or <= before it (== when none).
func memberCountIs(is string, count int) bool {
	if !memberCountPattern.MatchString(is) {
		return false
	}
	num := strings.TrimLeft(is, "=<>")
	want, err := strconv.Atoi(num)
	if err != nil {
		return false
	}
	switch is[:len(is)-len(num)] {
	case "<":
		return count < want
	case ">":
		return count > want
	case "<=":
		return count <= want
	case ">=":
		return count >= want
	}
	return count == want
}

// compile returns the regexp of k, compiling it on first use in this call;
// nil when the pattern is too large for package regexp, which then matches
// nothing.
func (m *matcher) compile(k globKey) *regexp.Regexp {
	if re, ok := m.globs[k]; ok {
		return re
	}
	re, err := regexp.Compile(globRegexp(k))
	if err != nil {
		re = nil
	}
	if m.globs == nil {
		m.globs = map[globKey]*regexp.Regexp{}
	}
	m.globs[k] = re
	return re
}

// globRegexp translates a glob (* any run of characters, ? exactly one) to
// a case-insensitive regexp. A whole-value glob is anchored at both ends. A
// words glob must start and end at a word boundary: the start or end of the
// value, or a character outside [A-Za-z0-9_], which is exactly what RE2's
// ASCII \b and \W mean (the same translation as Synapse's).
func globRegexp(k globKey) string {
	var b strings.Builder
	// s: a * in a pattern also spans the newlines of a multi-line body.
	b.WriteString(`(?is)`)
	if k.words {
		b.WriteString(`(?:\A|\W|\b)`)
	} else {
		b.WriteString(`\A`)
	}
	for _, r := range k.pattern {
		switch {
		case r == '*' && !k.literal:
			b.WriteString(`.*`)
		case r == '?' && !k.literal:
			b.WriteString(`.`)
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	if k.words {
		b.WriteString(`(?:\b|\W|\z)`)
	} else {
		b.WriteString(`\z`)
	}
	return b.String()
}

// lookup follows a dot-separated property path from the top of the event;
// ok is false when a step is missing or is not an object. A present JSON
// null is found, as nil with ok true.
func lookup(event map[string]any, key string) (v any, ok bool) {
	v = event
	for _, name := range splitPath(key) {
		obj, isObj := v.(map[string]any)
		if !isObj {
			return nil, false
		}
		if v, ok = obj[name]; !ok {
			return nil, false
		}
	}
	return v, true
}

// splitPath splits a dot-separated property path into property names: \.
// is a literal dot and \\ a literal backslash, and any other backslash is
// kept as it is, as the appendix says (content.m\.relates_to is the
// property m.relates_to of content).
func splitPath(key string) []string {
	var names []string
	var cur strings.Builder
	for i := 0; i < len(key); i++ {
		switch c := key[i]; {
		case c == '\\' && i+1 < len(key) && (key[i+1] == '.' || key[i+1] == '\\'):
			i++
			cur.WriteByte(key[i])
		case c == '.':
			names = append(names, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	return append(names, cur.String())
}

// decodeScalar reads a condition's value; ok is false when it is absent or
// not one the spec compares.
func decodeScalar(raw json.RawMessage) (any, bool) {
	if raw == nil {
		return nil, false
	}
	// The values rules hold are mostly literals and plain strings, read
	// for every event a rule is tried on: those need no decoder.
	switch lit := string(raw); lit {
	case "true":
		return true, true
	case "false":
		return false, true
	case "null":
		return nil, true
	default:
		if plainString(lit) {
			return lit[1 : len(lit)-1], true
		}
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if d.Decode(&v) != nil {
		return nil, false
	}
	return v, isScalar(v)
}

// plainString reports whether lit is a JSON string without escapes or
// control characters, valid UTF-8: its text is what lies between its
// quotes.
func plainString(lit string) bool {
	if len(lit) < 2 || lit[0] != '"' || lit[len(lit)-1] != '"' {
		return false
	}
	inner := lit[1 : len(lit)-1]
	for i := 0; i < len(inner); i++ {
		if c := inner[i]; c < 0x20 || c == '"' || c == '\\' {
			return false
		}
	}
	return utf8.ValidString(inner)
}

// isScalar reports whether v is a value event_property_is compares: a
// string, a boolean, null, or an integer within canonical JSON's range.
func isScalar(v any) bool {
	switch x := v.(type) {
	case string, bool, nil:
		return true
	case json.Number:
		_, ok := canonicalInt(x)
		return ok
	}
	return false
}

// canonicalInt reads n as an integer in canonical JSON's range; 1.0 or 1e3
// are not integers there, and never equal 1 or 1000.
func canonicalInt(n json.Number) (int64, bool) {
	i, err := strconv.ParseInt(string(n), 10, 64)
	return i, err == nil && i >= -maxCanonicalInt && i <= maxCanonicalInt
}

// sameScalar reports whether a and b are the same comparable value, with
// no conversion between types: "true" is not true and 1 is not true.
func sameScalar(a, b any) bool {
	if !isScalar(a) || !isScalar(b) {
		return false
	}
	if x, ok := a.(json.Number); ok {
		y, ok := b.(json.Number)
		if !ok {
			return false
		}
		i, _ := canonicalInt(x)
		j, _ := canonicalInt(y)
		return i == j
	}
	return a == b
}
