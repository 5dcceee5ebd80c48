package push

import (
	"encoding/json"
	"fmt"
	"sync"
)

// userIDPlaceholder stands, in the spec's definitions, where each user's own
// Matrix ID goes.
const userIDPlaceholder = "[the user's Matrix ID]"

// specRules are the spec's predefined ("server-default") rules, copied from
// the definitions in content/client-server-api/modules/push.md of the
// matrix-spec repository (section "Predefined Rules", v1.17 and later: the
// legacy body-matching mention rules .m.rule.contains_display_name,
// .m.rule.contains_user_name and .m.rule.roomnotif were removed there, so
// there are no predefined content rules), with the poll rules of v1.7
// (MSC3930) last among the underride rules. The order within each kind is
// the spec's, which is the order of evaluation.
const specRules = `{
"override": [
	{"rule_id": ".m.rule.master", "default": true, "enabled": false, "conditions": [], "actions": []},
	{"rule_id": ".m.rule.suppress_notices", "default": true, "enabled": true, "conditions": [{"kind": "event_match", "key": "content.msgtype", "pattern": "m.notice"}], "actions": []},
	{"rule_id": ".m.rule.invite_for_me", "default": true, "enabled": true, "conditions": [{"key": "type", "kind": "event_match", "pattern": "m.room.member"}, {"key": "content.membership", "kind": "event_match", "pattern": "invite"}, {"key": "state_key", "kind": "event_match", "pattern": "[the user's Matrix ID]"}], "actions": ["notify", {"set_tweak": "sound", "value": "default"}]},
	{"rule_id": ".m.rule.member_event", "default": true, "enabled": true, "conditions": [{"key": "type", "kind": "event_match", "pattern": "m.room.member"}], "actions": []},
	{"rule_id": ".m.rule.is_user_mention", "default": true, "enabled": true, "conditions": [{"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": "[the user's Matrix ID]"}], "actions": ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]},
	{"rule_id": ".m.rule.is_room_mention", "default": true, "enabled": true, "conditions": [{"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": true}, {"kind": "sender_notification_permission", "key": "room"}], "actions": ["notify", {"set_tweak": "highlight"}]},
	{"rule_id": ".m.rule.tombstone", "default": true, "enabled": true, "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.tombstone"}, {"kind": "event_match", "key": "state_key", "pattern": ""}], "actions": ["notify", {"set_tweak": "highlight"}]},
	{"rule_id": ".m.rule.reaction", "default": true, "enabled": true, "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.reaction"}], "actions": []},
	{"rule_id": ".m.rule.room.server_acl", "default": true, "enabled": true, "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.server_acl"}, {"kind": "event_match", "key": "state_key", "pattern": ""}], "actions": []},
	{"rule_id": ".m.rule.suppress_edits", "default": true, "enabled": true, "conditions": [{"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type", "value": "m.replace"}], "actions": []}
],
"content": [],
"room": [],
"sender": [],
"underride": [
	{"rule_id": ".m.rule.call", "default": true, "enabled": true, "conditions": [{"key": "type", "kind": "event_match", "pattern": "m.call.invite"}], "actions": ["notify", {"set_tweak": "sound", "value": "ring"}]},
	{"rule_id": ".m.rule.encrypted_room_one_to_one", "default": true, "enabled": true, "conditions": [{"kind": "room_member_count", "is": "2"}, {"kind": "event_match", "key": "type", "pattern": "m.room.encrypted"}], "actions": ["notify", {"set_tweak": "sound", "value": "default"}]},
	{"rule_id": ".m.rule.room_one_to_one", "default": true, "enabled": true, "conditions": [{"kind": "room_member_count", "is": "2"}, {"kind": "event_match", "key": "type", "pattern": "m.room.message"}], "actions": ["notify", {"set_tweak": "sound", "value": "default"}]},
	{"rule_id": ".m.rule.message", "default": true, "enabled": true, "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.message"}], "actions": ["notify"]},
	{"rule_id": ".m.rule.encrypted", "default": true, "enabled": true, "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.encrypted"}], "actions": ["notify"]},
	{"rule_id": ".m.rule.poll_start_one_to_one", "default": true, "enabled": true, "conditions": [{"kind": "room_member_count", "is": "2"}, {"kind": "event_match", "key": "type", "pattern": "m.poll.start"}], "actions": ["notify", {"set_tweak": "sound", "value": "default"}]},
	{"rule_id": ".m.rule.poll_start", "default": true, "enabled": true, "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.poll.start"}], "actions": ["notify"]},
	{"rule_id": ".m.rule.poll_end_one_to_one", "default": true, "enabled": true, "conditions": [{"kind": "room_member_count", "is": "2"}, {"kind": "event_match", "key": "type", "pattern": "m.poll.end"}], "actions": ["notify", {"set_tweak": "sound", "value": "default"}]},
	{"rule_id": ".m.rule.poll_end", "default": true, "enabled": true, "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.poll.end"}], "actions": ["notify"]}
]
}`

// predefined is specRules parsed once, on first use (not at package
// initialization: the parse relies on other package variables, through
// Condition's UnmarshalJSON, that Go's initialization order cannot see);
// Defaults copies it per user.
var predefined = sync.OnceValue(func() Ruleset {
	var rs Ruleset
	if err := json.Unmarshal([]byte(specRules), &rs); err != nil {
		panic(fmt.Sprintf("push: the predefined rules do not parse: %v", err))
	}
	for _, k := range Kinds {
		for i, r := range *rs.Of(k) {
			acts, err := parseActions(mustJSON(r.Actions))
			if err != nil {
				panic(fmt.Sprintf("push: predefined rule %s: %v", r.RuleID, err))
			}
			(*rs.Of(k))[i].Actions = acts
		}
	}
	return rs
})

// Defaults returns the predefined rules of userID: the spec's, with the
// user's Matrix ID where the spec says (the state_key of
// .m.rule.invite_for_me, the value of .m.rule.is_user_mention).
func Defaults(userID string) Ruleset {
	var rs Ruleset
	for _, k := range Kinds {
		all := predefined()
		src := *all.Of(k)
		out := make([]Rule, len(src))
		for i, r := range src {
			r = r.clone()
			for j, c := range r.Conditions {
				if c.Pattern != nil && *c.Pattern == userIDPlaceholder {
					p := userID
					r.Conditions[j].Pattern = &p
				}
				if string(c.Value) == `"`+userIDPlaceholder+`"` {
					r.Conditions[j].Value = mustJSON(userID)
				}
			}
			out[i] = r
		}
		*rs.Of(k) = out
	}
	return rs
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
