package push

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
)

// Kind is a class of push rules. Kinds lists them in the order the spec
// evaluates them.
type Kind string

// The spec's kinds of push rules.
const (
	Override  Kind = "override"
	Content   Kind = "content"
	Room      Kind = "room"
	Sender    Kind = "sender"
	Underride Kind = "underride"
)

// Kinds are the kinds of rules in evaluation order.
var Kinds = []Kind{Override, Content, Room, Sender, Underride}

// ParseKind accepts the name of a kind as it appears in a path.
func ParseKind(s string) (Kind, bool) {
	k := Kind(s)
	return k, slices.Contains(Kinds, k)
}

// hasConditions says whether rules of kind k carry a conditions list;
// content, room and sender rules have implicit conditions instead.
func (k Kind) hasConditions() bool { return k == Override || k == Underride }

// Rule is a push rule as the spec's PushRule: an ID unique within its kind,
// whether it is predefined, whether it is enabled, its actions, and either
// conditions (override and underride rules) or a pattern (content rules).
type Rule struct {
	RuleID  string
	Default bool
	Enabled bool
	// Conditions is non-nil, possibly empty, exactly for override and
	// underride rules.
	Conditions []Condition
	// Pattern is set exactly for content rules.
	Pattern *string
	// Actions are compact JSON values: strings such as "notify", or
	// objects such as {"set_tweak":"sound","value":"default"}.
	Actions []json.RawMessage
}

type wireRule struct {
	RuleID     string            `json:"rule_id"`
	Default    bool              `json:"default"`
	Enabled    bool              `json:"enabled"`
	Conditions *[]Condition      `json:"conditions,omitempty"`
	Pattern    *string           `json:"pattern,omitempty"`
	Actions    []json.RawMessage `json:"actions"`
}

// MarshalJSON writes the spec's form: conditions only when the rule has a
// list (even an empty one, as .m.rule.master), actions always as an array.
func (r Rule) MarshalJSON() ([]byte, error) {
	w := wireRule{RuleID: r.RuleID, Default: r.Default, Enabled: r.Enabled, Pattern: r.Pattern, Actions: r.Actions}
	if r.Conditions != nil {
		w.Conditions = &r.Conditions
	}
	if w.Actions == nil {
		w.Actions = []json.RawMessage{}
	}
	return json.Marshal(w)
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (r *Rule) UnmarshalJSON(b []byte) error {
	var w wireRule
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*r = Rule{RuleID: w.RuleID, Default: w.Default, Enabled: w.Enabled, Pattern: w.Pattern, Actions: w.Actions}
	if w.Conditions != nil {
		r.Conditions = *w.Conditions
		if r.Conditions == nil {
			r.Conditions = []Condition{}
		}
	}
	return nil
}

// clone copies r deeply enough that changing the copy's slices leaves r alone.
func (r Rule) clone() Rule {
	c := r
	if r.Conditions != nil {
		c.Conditions = slices.Clone(r.Conditions)
	}
	c.Actions = slices.Clone(r.Actions)
	if r.Pattern != nil {
		p := *r.Pattern
		c.Pattern = &p
	}
	return c
}

// Ruleset is the spec's PushRuleset: the rules of each kind, most important
// first.
type Ruleset struct {
	Override  []Rule `json:"override"`
	Content   []Rule `json:"content"`
	Room      []Rule `json:"room"`
	Sender    []Rule `json:"sender"`
	Underride []Rule `json:"underride"`
}

// Of returns the rules of kind k, for reading and writing.
func (rs *Ruleset) Of(k Kind) *[]Rule {
	switch k {
	case Override:
		return &rs.Override
	case Content:
		return &rs.Content
	case Room:
		return &rs.Room
	case Sender:
		return &rs.Sender
	case Underride:
		return &rs.Underride
	}
	panic("push: unknown kind " + string(k))
}

// Find returns the rule of kind k with the given ID.
func (rs *Ruleset) Find(k Kind, ruleID string) (Rule, bool) {
	for _, r := range *rs.Of(k) {
		if r.RuleID == ruleID {
			return r, true
		}
	}
	return Rule{}, false
}

// MarshalJSON writes every kind, an empty one as [], never null.
func (rs Ruleset) MarshalJSON() ([]byte, error) {
	type plain Ruleset
	p := plain(rs)
	for _, k := range Kinds {
		if list := (*Ruleset)(&p).Of(k); *list == nil {
			*list = []Rule{}
		}
	}
	return json.Marshal(p)
}

// Condition is one condition of an override or underride rule. Conditions
// of kinds this server does not know are kept as they came, in Extra: the
// spec lets them be stored, and they never match.
type Condition struct {
	Kind    string
	Key     string
	Pattern *string
	Is      string
	// Value is the JSON value of event_property_is and
	// event_property_contains; nil when absent, "null" for JSON null.
	Value json.RawMessage
	// Extra holds the other keys, for condition kinds not known here.
	Extra map[string]json.RawMessage
}

// The parameters each known condition kind requires (push_condition.yaml).
var conditionParams = map[string][]string{
	"event_match":                    {"key", "pattern"},
	"event_property_is":              {"key", "value"},
	"event_property_contains":        {"key", "value"},
	"contains_display_name":          {},
	"room_member_count":              {"is"},
	"sender_notification_permission": {"key"},
}

var memberCountPattern = regexp.MustCompile(`^(==|<|>|>=|<=)?[0-9]+$`)

// MarshalJSON writes the condition with its keys in sorted order.
func (c Condition) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, 4+len(c.Extra))
	for k, v := range c.Extra {
		m[k] = v
	}
	m["kind"] = c.Kind
	if c.Key != "" {
		m["key"] = c.Key
	}
	if c.Pattern != nil {
		m["pattern"] = *c.Pattern
	}
	if c.Is != "" {
		m["is"] = c.Is
	}
	if c.Value != nil {
		m["value"] = c.Value
	}
	return json.Marshal(m)
}

// UnmarshalJSON reads a condition and checks it: a string kind, and for the
// kinds the spec defines, their parameters with the right types.
func (c *Condition) UnmarshalJSON(b []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil || m == nil {
		return fmt.Errorf("a condition must be a JSON object")
	}
	var kind string
	if err := json.Unmarshal(m["kind"], &kind); err != nil || kind == "" {
		return fmt.Errorf("a condition needs a kind, a non-empty string")
	}
	delete(m, "kind")
	out := Condition{Kind: kind}
	params, known := conditionParams[kind]
	if !known {
		// Stored as sent; it never matches (push.md, "Conditions").
		if len(m) > 0 {
			out.Extra = m
		}
		*c = out
		return nil
	}
	for _, p := range params {
		raw, ok := m[p]
		if !ok {
			return fmt.Errorf("a %s condition needs %q", kind, p)
		}
		var s string
		switch p {
		case "value":
			if !scalarValue(raw) {
				return fmt.Errorf("the value of a %s condition must be a string, an integer of at most 2^53-1, a boolean or null", kind)
			}
			out.Value = raw
			continue
		default:
			if err := json.Unmarshal(raw, &s); err != nil || raw[0] != '"' {
				return fmt.Errorf("%q of a %s condition must be a string", p, kind)
			}
		}
		switch p {
		case "key":
			if s == "" {
				return fmt.Errorf("the key of a %s condition must not be empty", kind)
			}
			out.Key = s
		case "pattern":
			out.Pattern = &s
		case "is":
			if !memberCountPattern.MatchString(s) {
				return fmt.Errorf("\"is\" of a room_member_count condition must be a number with an optional ==, <, >, >= or <= before it, not %q", s)
			}
			out.Is = s
		}
	}
	*c = out
	return nil
}

// scalarValue accepts the non-compound canonical JSON values of
// event_property_is: strings, integers in [-(2^53)+1, (2^53)-1], booleans
// and null.
func scalarValue(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return false
	}
	switch raw[0] {
	case '"':
		var s string
		return json.Unmarshal(raw, &s) == nil
	case 't', 'f', 'n':
		return string(raw) == "true" || string(raw) == "false" || string(raw) == "null"
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	const max = 1<<53 - 1
	return err == nil && n >= -max && n <= max
}

// parseActions checks a list of actions as the spec and Synapse accept
// them: "notify", or an object naming a tweak with a string set_tweak. The
// deprecated "dont_notify" and "coalesce" are kept as given, as Synapse
// keeps them: clients still send them and read them back, and neither
// notifies. Objects come back with sorted keys, so that equal actions
// compare equal.
func parseActions(raw json.RawMessage) ([]json.RawMessage, error) {
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil || bytes.TrimSpace(raw)[0] != '[' {
		return nil, fmt.Errorf("actions must be an array")
	}
	out := make([]json.RawMessage, 0, len(list))
	for i, a := range list {
		a = bytes.TrimSpace(a)
		switch a[0] {
		case '"':
			var s string
			json.Unmarshal(a, &s)
			switch s {
			case "notify":
				out = append(out, json.RawMessage(`"notify"`))
			case "dont_notify", "coalesce":
				out = append(out, json.RawMessage(`"`+s+`"`))
			default:
				return nil, fmt.Errorf("actions[%d]: unknown action %q", i, s)
			}
		case '{':
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(a, &obj); err != nil {
				return nil, fmt.Errorf("actions[%d]: %v", i, err)
			}
			var tweak string
			if err := json.Unmarshal(obj["set_tweak"], &tweak); err != nil || tweak == "" {
				return nil, fmt.Errorf("actions[%d]: an action object needs set_tweak, a non-empty string", i)
			}
			canon, err := json.Marshal(obj)
			if err != nil {
				return nil, fmt.Errorf("actions[%d]: %v", i, err)
			}
			out = append(out, canon)
		default:
			return nil, fmt.Errorf("actions[%d]: an action is a string or an object", i)
		}
	}
	return out, nil
}

// parseConditions checks the conditions of an override or underride rule;
// absent or null means none.
func parseConditions(raw json.RawMessage) ([]Condition, error) {
	conds := []Condition{}
	if len(raw) == 0 || string(raw) == "null" {
		return conds, nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("conditions must be an array")
	}
	for i, c := range list {
		var cond Condition
		if err := json.Unmarshal(c, &cond); err != nil {
			return nil, fmt.Errorf("conditions[%d]: %v", i, err)
		}
		conds = append(conds, cond)
	}
	return conds, nil
}

// sameActions compares two action lists as JSON.
func sameActions(a, b []json.RawMessage) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}
