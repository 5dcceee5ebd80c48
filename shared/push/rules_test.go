package push_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// The predefined rule IDs in the order content/client-server-api/modules/push.md
// of the Matrix spec (v1.17 and later) lists them under "Predefined Rules",
// which is their evaluation order. There are no predefined content, room or
// sender rules since v1.17 removed the legacy mention rules.
var (
	specOverride = []string{
		".m.rule.master",
		".m.rule.suppress_notices",
		".m.rule.invite_for_me",
		".m.rule.member_event",
		".m.rule.is_user_mention",
		".m.rule.is_room_mention",
		".m.rule.tombstone",
		".m.rule.reaction",
		".m.rule.room.server_acl",
		".m.rule.suppress_edits",
	}
	specUnderride = []string{
		".m.rule.call",
		".m.rule.encrypted_room_one_to_one",
		".m.rule.room_one_to_one",
		".m.rule.message",
		".m.rule.encrypted",
		".m.rule.poll_start_one_to_one",
		".m.rule.poll_start",
		".m.rule.poll_end_one_to_one",
		".m.rule.poll_end",
	}
)

const rulesAPI = "/_matrix/client/v3/pushrules/"

func ruleIDs(t *testing.T, set map[string]any, kind string) []string {
	t.Helper()
	list, ok := set[kind].([]any)
	if !ok {
		t.Fatalf("ruleset has no %s array: %v", kind, set[kind])
	}
	ids := []string{}
	for _, r := range list {
		ids = append(ids, r.(map[string]any)["rule_id"].(string))
	}
	return ids
}

func findRule(t *testing.T, set map[string]any, kind, id string) map[string]any {
	t.Helper()
	for _, r := range set[kind].([]any) {
		if m := r.(map[string]any); m["rule_id"] == id {
			return m
		}
	}
	t.Fatalf("no %s rule %s", kind, id)
	return nil
}

func canon(t *testing.T, v any) string {
	t.Helper()
	if s, ok := v.(string); ok {
		var x any
		if err := json.Unmarshal([]byte(s), &x); err != nil {
			t.Fatal(err)
		}
		v = x
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDefaultRules_SpecOrderAndContent(t *testing.T) {
	h := startHomeserver(t)
	alice := h.register(t, "alice")

	all := call(t, "GET", h.URL+rulesAPI, alice.Token, nil)
	wantOK(t, "GET /pushrules/", all)
	global, ok := all.body["global"].(map[string]any)
	if !ok || len(all.body) != 1 {
		t.Fatalf("GET /pushrules/ = %s, want only a global ruleset", all.raw)
	}
	if got := ruleIDs(t, global, "override"); !reflect.DeepEqual(got, specOverride) {
		t.Errorf("override rules\n got %q\nwant %q", got, specOverride)
	}
	if got := ruleIDs(t, global, "underride"); !reflect.DeepEqual(got, specUnderride) {
		t.Errorf("underride rules\n got %q\nwant %q", got, specUnderride)
	}
	for _, k := range []string{"content", "room", "sender"} {
		if got := ruleIDs(t, global, k); len(got) != 0 {
			t.Errorf("%s rules %q, want none", k, got)
		}
	}
	for _, k := range []string{"override", "underride"} {
		for _, r := range global[k].([]any) {
			m := r.(map[string]any)
			wantEnabled := m["rule_id"] != ".m.rule.master"
			if m["default"] != true || m["enabled"] != wantEnabled || m["conditions"] == nil || m["actions"] == nil {
				t.Errorf("%s rule %s: %v", k, m["rule_id"], m)
			}
		}
	}

	// The definitions, with alice's ID where the spec says.
	for _, c := range []struct{ kind, id, want string }{
		{"override", ".m.rule.master", `{"rule_id":".m.rule.master","default":true,"enabled":false,"conditions":[],"actions":[]}`},
		{"override", ".m.rule.invite_for_me", `{"rule_id":".m.rule.invite_for_me","default":true,"enabled":true,
			"conditions":[{"key":"type","kind":"event_match","pattern":"m.room.member"},{"key":"content.membership","kind":"event_match","pattern":"invite"},
			{"key":"state_key","kind":"event_match","pattern":"@alice:example.org"}],
			"actions":["notify",{"set_tweak":"sound","value":"default"}]}`},
		{"override", ".m.rule.is_user_mention", `{"rule_id":".m.rule.is_user_mention","default":true,"enabled":true,
			"conditions":[{"kind":"event_property_contains","key":"content.m\\.mentions.user_ids","value":"@alice:example.org"}],
			"actions":["notify",{"set_tweak":"sound","value":"default"},{"set_tweak":"highlight"}]}`},
		{"override", ".m.rule.is_room_mention", `{"rule_id":".m.rule.is_room_mention","default":true,"enabled":true,
			"conditions":[{"kind":"event_property_is","key":"content.m\\.mentions.room","value":true},{"kind":"sender_notification_permission","key":"room"}],
			"actions":["notify",{"set_tweak":"highlight"}]}`},
		{"override", ".m.rule.tombstone", `{"rule_id":".m.rule.tombstone","default":true,"enabled":true,
			"conditions":[{"kind":"event_match","key":"type","pattern":"m.room.tombstone"},{"kind":"event_match","key":"state_key","pattern":""}],
			"actions":["notify",{"set_tweak":"highlight"}]}`},
		{"override", ".m.rule.suppress_edits", `{"rule_id":".m.rule.suppress_edits","default":true,"enabled":true,
			"conditions":[{"kind":"event_property_is","key":"content.m\\.relates_to.rel_type","value":"m.replace"}],"actions":[]}`},
		{"underride", ".m.rule.call", `{"rule_id":".m.rule.call","default":true,"enabled":true,
			"conditions":[{"key":"type","kind":"event_match","pattern":"m.call.invite"}],"actions":["notify",{"set_tweak":"sound","value":"ring"}]}`},
		{"underride", ".m.rule.encrypted_room_one_to_one", `{"rule_id":".m.rule.encrypted_room_one_to_one","default":true,"enabled":true,
			"conditions":[{"kind":"room_member_count","is":"2"},{"kind":"event_match","key":"type","pattern":"m.room.encrypted"}],
			"actions":["notify",{"set_tweak":"sound","value":"default"}]}`},
	} {
		if got, want := canon(t, findRule(t, global, c.kind, c.id)), canon(t, c.want); got != want {
			t.Errorf("%s\n got %s\nwant %s", c.id, got, want)
		}
	}

	g := call(t, "GET", h.URL+rulesAPI+"global/", alice.Token, nil)
	wantOK(t, "GET /pushrules/global/", g)
	if canon(t, g.body) != canon(t, global) {
		t.Errorf("GET /pushrules/global/ differs from the global of /pushrules/:\n%s\n%s", g.raw, all.raw)
	}

	bob := h.register(t, "bob")
	b := call(t, "GET", h.URL+rulesAPI+"global/override/.m.rule.invite_for_me", bob.Token, nil)
	wantOK(t, "bob's invite_for_me", b)
	if conds := b.body["conditions"].([]any); conds[2].(map[string]any)["pattern"] != bob.ID {
		t.Errorf("bob's .m.rule.invite_for_me: %s", b.raw)
	}
}

func TestPushRules_OwnRules(t *testing.T) {
	h := startHomeserver(t)
	alice := h.register(t, "alice")
	rule := func(kind, id string) string { return h.URL + rulesAPI + "global/" + kind + "/" + url.PathEscape(id) }
	put := func(kind, id, query string, body any) {
		t.Helper()
		wantOK(t, "PUT "+kind+"/"+id+query, call(t, "PUT", rule(kind, id)+query, alice.Token, body))
	}
	global := func() map[string]any {
		t.Helper()
		r := call(t, "GET", h.URL+rulesAPI+"global/", alice.Token, nil)
		wantOK(t, "GET global", r)
		return r.body
	}

	// A content rule, as the spec's example.
	put("content", "SSByZWFsbHkgbGlrZSBjYWtl", "", map[string]any{"pattern": "cake", "actions": []any{"notify", map[string]any{"set_tweak": "sound", "value": "cakealarm.wav"}}})
	r := call(t, "GET", rule("content", "SSByZWFsbHkgbGlrZSBjYWtl"), alice.Token, nil)
	wantOK(t, "GET content rule", r)
	if got, want := canon(t, r.body), canon(t, `{"rule_id":"SSByZWFsbHkgbGlrZSBjYWtl","default":false,"enabled":true,"pattern":"cake",
		"actions":["notify",{"set_tweak":"sound","value":"cakealarm.wav"}]}`); got != want {
		t.Errorf("content rule\n got %s\nwant %s", got, want)
	}
	// Superseding it with before=, as the spec's next example.
	put("content", "U3BvbmdlIGNha2UgaXMgYmVzdA", "?before=SSByZWFsbHkgbGlrZSBjYWtl", map[string]any{"pattern": "cake*lie", "actions": []any{"notify"}})
	if got := ruleIDs(t, global(), "content"); !reflect.DeepEqual(got, []string{"U3BvbmdlIGNha2UgaXMgYmVzdA", "SSByZWFsbHkgbGlrZSBjYWtl"}) {
		t.Errorf("content order %q", got)
	}

	// Override rules: after .m.rule.master, before the other predefined ones.
	beer := map[string]any{"conditions": []any{
		map[string]any{"kind": "event_match", "key": "content.body", "pattern": "beer"},
		map[string]any{"kind": "room_member_count", "is": "<=10"},
	}, "actions": []any{"notify", map[string]any{"set_tweak": "sound", "value": "beeroclock.wav"}}}
	put("override", "beer", "", beer)
	put("override", "first", "", map[string]any{"actions": []any{}})
	put("override", "last", "?after=beer", map[string]any{"actions": []any{"dont_notify"}})
	put("override", "middle", "?after=first&before=last", map[string]any{"actions": []any{}})
	wantOverride := append([]string{".m.rule.master", "first", "beer", "middle", "last"}, specOverride[1:]...)
	g := global()
	if got := ruleIDs(t, g, "override"); !reflect.DeepEqual(got, wantOverride) {
		t.Errorf("override order\n got %q\nwant %q", got, wantOverride)
	}
	if got := findRule(t, g, "override", "first"); canon(t, got) != canon(t, `{"rule_id":"first","default":false,"enabled":true,"conditions":[],"actions":[]}`) {
		t.Errorf("rule with no conditions: %v", got)
	}
	// dont_notify is deprecated but kept as given, as Synapse keeps it.
	if got := findRule(t, g, "override", "last")["actions"]; canon(t, got) != `["dont_notify"]` {
		t.Errorf("actions of a rule put with dont_notify: got %v, want [\"dont_notify\"]", got)
	}
	// An unknown condition kind is kept as sent (it never matches).
	put("override", "future", "", map[string]any{"conditions": []any{map[string]any{"kind": "org.example.future", "feature": "x", "n": 1}}, "actions": []any{"notify"}})
	if got := findRule(t, global(), "override", "future")["conditions"]; canon(t, got) != `[{"feature":"x","kind":"org.example.future","n":1}]` {
		t.Errorf("unknown condition: %v", got)
	}

	// Replacing a rule keeps its place and its enabled state.
	wantOK(t, "disable beer", call(t, "PUT", rule("override", "beer")+"/enabled", alice.Token, map[string]any{"enabled": false}))
	put("override", "beer", "", map[string]any{"conditions": []any{map[string]any{"kind": "event_match", "key": "content.body", "pattern": "ale"}}, "actions": []any{"notify"}})
	g = global()
	if got := ruleIDs(t, g, "override"); !reflect.DeepEqual(got, append([]string{".m.rule.master", "future"}, wantOverride[1:]...)) {
		t.Errorf("order after replacing beer: %q", got)
	}
	if b := findRule(t, g, "override", "beer"); b["enabled"] != false || canon(t, b["conditions"]) != `[{"key":"content.body","kind":"event_match","pattern":"ale"}]` {
		t.Errorf("replaced beer: %v", b)
	}
	// ... unless before/after move it.
	put("override", "beer", "?before=future", map[string]any{"actions": []any{"notify"}})
	if got := ruleIDs(t, global(), "override")[:3]; !reflect.DeepEqual(got, []string{".m.rule.master", "beer", "future"}) {
		t.Errorf("beer moved before future: %q", got)
	}

	// Room and sender rules, with IDs that need escaping in the path.
	put("room", "!dj234r78wl45Gh4D:matrix.org", "", map[string]any{"actions": []any{}})
	put("sender", "@spambot:matrix.org", "", map[string]any{"actions": []any{}})
	r = call(t, "GET", rule("room", "!dj234r78wl45Gh4D:matrix.org"), alice.Token, nil)
	if canon(t, r.body) != canon(t, `{"rule_id":"!dj234r78wl45Gh4D:matrix.org","default":false,"enabled":true,"actions":[]}`) {
		t.Errorf("room rule: %s", r.raw)
	}
	// Underride rules come before the predefined ones.
	put("underride", "quiet", "", map[string]any{"conditions": []any{map[string]any{"kind": "event_property_is", "key": "content.m\\.silent", "value": nil}}, "actions": []any{}})
	g = global()
	if got := ruleIDs(t, g, "underride"); !reflect.DeepEqual(got, append([]string{"quiet"}, specUnderride...)) {
		t.Errorf("underride order %q", got)
	}
	if got := findRule(t, g, "underride", "quiet")["conditions"]; canon(t, got) != `[{"key":"content.m\\.silent","kind":"event_property_is","value":null}]` {
		t.Errorf("null value: %v", got)
	}
	if got := ruleIDs(t, g, "sender"); !reflect.DeepEqual(got, []string{"@spambot:matrix.org"}) {
		t.Errorf("sender rules %q", got)
	}

	// Enabled and actions of the user's own rules.
	wantOK(t, "set actions", call(t, "PUT", rule("room", "!dj234r78wl45Gh4D:matrix.org")+"/actions", alice.Token, map[string]any{"actions": []any{"notify"}}))
	r = call(t, "GET", rule("room", "!dj234r78wl45Gh4D:matrix.org")+"/actions", alice.Token, nil)
	if r.status != 200 || canon(t, r.body) != `{"actions":["notify"]}` {
		t.Errorf("GET actions: %d %s", r.status, r.raw)
	}
	r = call(t, "GET", rule("override", "beer")+"/enabled", alice.Token, nil)
	if r.status != 200 || canon(t, r.body) != `{"enabled":false}` {
		t.Errorf("GET enabled: %d %s", r.status, r.raw)
	}

	// Delete.
	wantOK(t, "DELETE first", call(t, "DELETE", rule("override", "first"), alice.Token, nil))
	wantError(t, "GET deleted", call(t, "GET", rule("override", "first"), alice.Token, nil), 404, "M_NOT_FOUND")
	wantError(t, "DELETE deleted", call(t, "DELETE", rule("override", "first"), alice.Token, nil), 404, "M_NOT_FOUND")
	wantOK(t, "DELETE room rule", call(t, "DELETE", rule("room", "!dj234r78wl45Gh4D:matrix.org"), alice.Token, nil))
	if got := ruleIDs(t, global(), "room"); len(got) != 0 {
		t.Errorf("room rules after delete: %q", got)
	}

	// Bob sees none of it.
	bob := h.register(t, "bob")
	r = call(t, "GET", h.URL+rulesAPI+"global/", bob.Token, nil)
	if got := ruleIDs(t, r.body, "override"); !reflect.DeepEqual(got, specOverride) {
		t.Errorf("bob's override rules: %q", got)
	}
	wantError(t, "bob GETs alice's rule", call(t, "GET", rule("override", "beer"), bob.Token, nil), 404, "M_NOT_FOUND")
}

func TestPushRules_Predefined(t *testing.T) {
	h := startHomeserver(t)
	alice := h.register(t, "alice")
	rule := h.URL + rulesAPI + "global/"

	wantOK(t, "enable master", call(t, "PUT", rule+"override/.m.rule.master/enabled", alice.Token, map[string]any{"enabled": true}))
	r := call(t, "GET", rule+"override/.m.rule.master/enabled", alice.Token, nil)
	if r.status != 200 || r.body["enabled"] != true {
		t.Errorf("master enabled: %d %s", r.status, r.raw)
	}
	wantOK(t, "silence messages", call(t, "PUT", rule+"underride/.m.rule.message/actions", alice.Token, map[string]any{"actions": []any{"dont_notify"}}))
	r = call(t, "GET", rule+"underride/.m.rule.message", alice.Token, nil)
	if r.status != 200 || canon(t, r.body["actions"]) != `["dont_notify"]` || r.body["default"] != true || r.body["enabled"] != true {
		t.Errorf(".m.rule.message after setting actions: %d %s", r.status, r.raw)
	}
	r = call(t, "GET", rule, alice.Token, nil)
	if m := findRule(t, r.body, "override", ".m.rule.master"); m["enabled"] != true {
		t.Errorf("ruleset shows master %v", m)
	}
	stored := func() string {
		t.Helper()
		var it struct {
			PK    string `dynamodbav:"pk"`
			SK    string `dynamodbav:"sk"`
			Rules string `dynamodbav:"rules"`
		}
		if err := h.srv.Store.Get(context.Background(), store.Key{PK: "user|" + alice.ID, SK: "push_rules"}, &it); err != nil {
			t.Fatal(err)
		}
		return it.Rules
	}
	if got := stored(); !strings.Contains(got, ".m.rule.master") || !strings.Contains(got, ".m.rule.message") {
		t.Errorf("stored changes: %s", got)
	}
	// Setting them back to the spec's leaves nothing stored.
	wantOK(t, "disable master", call(t, "PUT", rule+"override/.m.rule.master/enabled", alice.Token, map[string]any{"enabled": false}))
	wantOK(t, "restore message actions", call(t, "PUT", rule+"underride/.m.rule.message/actions", alice.Token, map[string]any{"actions": []any{"notify"}}))
	if got := stored(); got != "{}" {
		t.Errorf("stored after restoring the defaults: %s, want {}", got)
	}
}

func TestPushRules_Errors(t *testing.T) {
	h := startHomeserver(t)
	alice := h.register(t, "alice")
	base := h.URL + rulesAPI + "global/"
	wantOK(t, "PUT mine", call(t, "PUT", base+"override/mine", alice.Token, map[string]any{"actions": []any{}}))
	for _, c := range []struct {
		name, method, path string
		body               any
		status             int
		errcode            string
	}{
		{"GET bad kind", "GET", "overide/mine", nil, 404, "M_NOT_FOUND"},
		{"PUT bad kind", "PUT", "global/x", map[string]any{"actions": []any{}}, 404, "M_NOT_FOUND"},
		{"DELETE bad kind", "DELETE", "nope/mine", nil, 404, "M_NOT_FOUND"},
		{"GET enabled bad kind", "GET", "nope/mine/enabled", nil, 404, "M_NOT_FOUND"},
		{"PUT enabled bad kind", "PUT", "nope/mine/enabled", map[string]any{"enabled": true}, 404, "M_NOT_FOUND"},
		{"GET actions bad kind", "GET", "nope/mine/actions", nil, 404, "M_NOT_FOUND"},
		{"PUT actions bad kind", "PUT", "nope/mine/actions", map[string]any{"actions": []any{}}, 404, "M_NOT_FOUND"},
		// MSC4306's kind, which clients probe; Synapse answers 404 too.
		{"GET postcontent", "GET", "postcontent/.io.element.msc4306.rule.unsubscribed_thread", nil, 404, "M_NOT_FOUND"},
		{"PUT postcontent enabled", "PUT", "postcontent/.io.element.msc4306.rule.subscribed_thread/enabled", map[string]any{"enabled": true}, 404, "M_NOT_FOUND"},
		{"PUT postcontent", "PUT", "postcontent/mine", map[string]any{"actions": []any{"notify"}}, 404, "M_NOT_FOUND"},
		{"GET unknown rule", "GET", "override/nope", nil, 404, "M_NOT_FOUND"},
		{"GET predefined of another kind", "GET", "underride/.m.rule.master", nil, 404, "M_NOT_FOUND"},
		{"GET enabled unknown", "GET", "override/nope/enabled", nil, 404, "M_NOT_FOUND"},
		{"PUT enabled unknown", "PUT", "override/nope/enabled", map[string]any{"enabled": true}, 404, "M_NOT_FOUND"},
		{"PUT enabled unknown predefined", "PUT", "override/.m.rule.nope/enabled", map[string]any{"enabled": true}, 404, "M_NOT_FOUND"},
		{"GET actions unknown", "GET", "override/nope/actions", nil, 404, "M_NOT_FOUND"},
		{"PUT actions unknown", "PUT", "content/nope/actions", map[string]any{"actions": []any{}}, 404, "M_NOT_FOUND"},
		{"DELETE unknown", "DELETE", "override/nope", nil, 404, "M_NOT_FOUND"},
		{"DELETE predefined", "DELETE", "override/.m.rule.master", nil, 404, "M_NOT_FOUND"},
		{"DELETE predefined underride", "DELETE", "underride/.m.rule.message", nil, 404, "M_NOT_FOUND"},
		{"PUT predefined", "PUT", "override/.m.rule.master", map[string]any{"actions": []any{}}, 400, "M_INVALID_PARAM"},
		{"PUT new dotted", "PUT", "override/.mine", map[string]any{"actions": []any{}}, 400, "M_INVALID_PARAM"},
		{"PUT escaped slash", "PUT", "override/a%2Fb", map[string]any{"actions": []any{}}, 400, "M_INVALID_PARAM"},
		{"PUT backslash", "PUT", `override/a%5Cb`, map[string]any{"actions": []any{}}, 400, "M_INVALID_PARAM"},
		{"PUT room rule not a room ID", "PUT", "room/lobby", map[string]any{"actions": []any{}}, 400, "M_INVALID_PARAM"},
		{"PUT sender rule not a user ID", "PUT", "sender/spambot", map[string]any{"actions": []any{}}, 400, "M_INVALID_PARAM"},
		{"PUT before unknown", "PUT", "override/x?before=nope", map[string]any{"actions": []any{}}, 400, "M_INVALID_PARAM"},
		{"PUT after unknown", "PUT", "override/x?after=nope", map[string]any{"actions": []any{}}, 400, "M_INVALID_PARAM"},
		{"PUT before predefined", "PUT", "override/x?before=.m.rule.master", map[string]any{"actions": []any{}}, 400, "M_INVALID_PARAM"},
		{"PUT after predefined", "PUT", "underride/x?after=.m.rule.call", map[string]any{"actions": []any{}}, 400, "M_INVALID_PARAM"},
		{"PUT before a rule of another kind", "PUT", "underride/x?before=mine", map[string]any{"actions": []any{}}, 400, "M_INVALID_PARAM"},
		{"PUT not JSON", "PUT", "override/x", "{actions", 400, "M_NOT_JSON"},
		{"PUT not an object", "PUT", "override/x", `["notify"]`, 400, "M_BAD_JSON"},
		{"PUT not JSON", "PUT", "override/x", `{"actions":`, 400, "M_NOT_JSON"},
		{"PUT no actions", "PUT", "override/x", map[string]any{"conditions": []any{}}, 400, "M_MISSING_PARAM"},
		{"PUT actions null", "PUT", "override/x", `{"actions":null}`, 400, "M_MISSING_PARAM"},
		{"PUT actions not an array", "PUT", "override/x", map[string]any{"actions": "notify"}, 400, "M_BAD_JSON"},
		{"PUT unknown action", "PUT", "override/x", map[string]any{"actions": []any{"explode"}}, 400, "M_BAD_JSON"},
		{"PUT action without set_tweak", "PUT", "override/x", map[string]any{"actions": []any{map[string]any{"value": 1}}}, 400, "M_BAD_JSON"},
		{"PUT action a number", "PUT", "override/x", map[string]any{"actions": []any{1}}, 400, "M_BAD_JSON"},
		{"PUT conditions not an array", "PUT", "override/x", map[string]any{"actions": []any{}, "conditions": map[string]any{}}, 400, "M_BAD_JSON"},
		{"PUT condition without kind", "PUT", "override/x", map[string]any{"actions": []any{}, "conditions": []any{map[string]any{"key": "type"}}}, 400, "M_BAD_JSON"},
		{"PUT event_match without pattern", "PUT", "override/x", map[string]any{"actions": []any{}, "conditions": []any{map[string]any{"kind": "event_match", "key": "type"}}}, 400, "M_BAD_JSON"},
		{"PUT event_property_is with an object", "PUT", "underride/x", map[string]any{"actions": []any{}, "conditions": []any{map[string]any{"kind": "event_property_is", "key": "a", "value": map[string]any{}}}}, 400, "M_BAD_JSON"},
		{"PUT event_property_is with a float", "PUT", "underride/x", map[string]any{"actions": []any{}, "conditions": []any{map[string]any{"kind": "event_property_is", "key": "a", "value": 1.5}}}, 400, "M_BAD_JSON"},
		{"PUT room_member_count bad is", "PUT", "override/x", map[string]any{"actions": []any{}, "conditions": []any{map[string]any{"kind": "room_member_count", "is": "two"}}}, 400, "M_BAD_JSON"},
		{"PUT content without pattern", "PUT", "content/x", map[string]any{"actions": []any{}}, 400, "M_MISSING_PARAM"},
		{"PUT content pattern not a string", "PUT", "content/x", map[string]any{"actions": []any{}, "pattern": 5}, 400, "M_BAD_JSON"},
		{"PUT enabled missing", "PUT", "override/mine/enabled", map[string]any{}, 400, "M_MISSING_PARAM"},
		{"PUT enabled not a boolean", "PUT", "override/mine/enabled", map[string]any{"enabled": "yes"}, 400, "M_BAD_JSON"},
		{"PUT enabled not an object", "PUT", "override/mine/enabled", "true", 400, "M_BAD_JSON"},
		{"PUT actions missing", "PUT", "override/.m.rule.master/actions", map[string]any{}, 400, "M_MISSING_PARAM"},
		{"PUT actions bad", "PUT", "override/.m.rule.master/actions", map[string]any{"actions": []any{true}}, 400, "M_BAD_JSON"},
		{"trailing path", "GET", "override/mine/other", nil, 404, "M_UNRECOGNIZED"},
		{"POST a rule", "POST", "override/mine", map[string]any{"actions": []any{}}, 405, "M_UNRECOGNIZED"},
	} {
		t.Run(c.name, func(t *testing.T) {
			wantError(t, c.method+" "+c.path, call(t, c.method, base+c.path, alice.Token, c.body), c.status, c.errcode)
		})
	}
	wantError(t, "a scope other than global", call(t, "GET", h.URL+rulesAPI+"device/override/mine", alice.Token, nil), 404, "M_UNRECOGNIZED")
	// None of that changed anything.
	r := call(t, "GET", h.URL+rulesAPI, alice.Token, nil)
	if got := ruleIDs(t, r.body["global"].(map[string]any), "override"); !reflect.DeepEqual(got, append([]string{".m.rule.master", "mine"}, specOverride[1:]...)) {
		t.Errorf("override rules after the errors: %q", got)
	}
	for _, k := range []string{"content", "room", "sender"} {
		if got := ruleIDs(t, r.body["global"].(map[string]any), k); len(got) != 0 {
			t.Errorf("%s rules after the errors: %q", k, got)
		}
	}

	// Every endpoint needs an access token.
	for _, p := range []struct{ method, path string }{
		{"GET", rulesAPI}, {"GET", rulesAPI + "global/"}, {"GET", rulesAPI + "global/override/mine"},
		{"PUT", rulesAPI + "global/override/mine"}, {"DELETE", rulesAPI + "global/override/mine"},
		{"GET", rulesAPI + "global/override/mine/enabled"}, {"PUT", rulesAPI + "global/override/mine/enabled"},
		{"GET", rulesAPI + "global/override/mine/actions"}, {"PUT", rulesAPI + "global/override/mine/actions"},
		{"GET", "/_matrix/client/v3/pushers"}, {"POST", "/_matrix/client/v3/pushers/set"},
	} {
		wantError(t, p.method+" "+p.path+" without a token", call(t, p.method, h.URL+p.path, "", nil), 401, "M_MISSING_TOKEN")
	}
}

// A user's push rules are one item under DynamoDB's 400 KB limit: a change
// past it is 413 M_TOO_LARGE and changes nothing.
func TestPushRules_TooLarge(t *testing.T) {
	h := startHomeserver(t)
	alice := h.register(t, "alice")
	base := h.URL + rulesAPI + "global/content/"
	chunk := strings.Repeat("c", 150*1024)
	wantOK(t, "first 150 KB rule", call(t, "PUT", base+"one", alice.Token, map[string]any{"pattern": chunk, "actions": []any{"notify"}}))
	wantOK(t, "second 150 KB rule", call(t, "PUT", base+"two", alice.Token, map[string]any{"pattern": chunk, "actions": []any{"notify"}}))
	r := call(t, "PUT", base+"three", alice.Token, map[string]any{"pattern": chunk, "actions": []any{"notify"}})
	wantError(t, "third 150 KB rule", r, 413, "M_TOO_LARGE")
	r = call(t, "PUT", base+"huge", alice.Token, map[string]any{"pattern": strings.Repeat("h", 450*1024), "actions": []any{}})
	wantError(t, "a 450 KB rule", r, 413, "M_TOO_LARGE")
	g := call(t, "GET", h.URL+rulesAPI+"global/", alice.Token, nil)
	if got := ruleIDs(t, g.body, "content"); !reflect.DeepEqual(got, []string{"two", "one"}) {
		t.Errorf("content rules after the refused ones: %q", got)
	}
	// Room is made again by deleting.
	wantOK(t, "delete one", call(t, "DELETE", base+"one", alice.Token, nil))
	wantOK(t, "third after the delete", call(t, "PUT", base+"three", alice.Token, map[string]any{"pattern": chunk, "actions": []any{"notify"}}))
}

// Clients change several rules at once (Element's notification settings
// do): concurrent writes to the one item must not lose each other.
func TestPushRules_ConcurrentWritesAllLand(t *testing.T) {
	h := startHomeserver(t)
	alice := h.register(t, "alice")
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan string, 2*n)
	for i := range n {
		wg.Add(2)
		go func() {
			defer wg.Done()
			r := call(t, "PUT", fmt.Sprintf("%s%sglobal/override/rule%d", h.URL, rulesAPI, i), alice.Token, map[string]any{"actions": []any{"notify"}})
			if r.status != 200 {
				errs <- fmt.Sprintf("rule%d: %d %s", i, r.status, r.raw)
			}
		}()
		go func() {
			defer wg.Done()
			id := specUnderride[i%len(specUnderride)]
			r := call(t, "PUT", h.URL+rulesAPI+"global/underride/"+id+"/enabled", alice.Token, map[string]any{"enabled": false})
			if r.status != 200 {
				errs <- fmt.Sprintf("%s: %d %s", id, r.status, r.raw)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	g := call(t, "GET", h.URL+rulesAPI+"global/", alice.Token, nil)
	ids := ruleIDs(t, g.body, "override")
	for i := range n {
		if !strings.Contains(strings.Join(ids, " "), fmt.Sprintf("rule%d", i)) {
			t.Errorf("rule%d was lost: %q", i, ids)
		}
	}
	for i := range n {
		id := specUnderride[i%len(specUnderride)]
		if r := findRule(t, g.body, "underride", id); r["enabled"] != false {
			t.Errorf("disabling %s was lost", id)
		}
	}
}

// Reading the whole ruleset costs the token read and one GetItem.
func TestPushRules_ReadCost(t *testing.T) {
	h := startHomeserver(t)
	alice := h.register(t, "alice")
	wantOK(t, "PUT", call(t, "PUT", h.URL+rulesAPI+"global/override/x", alice.Token, map[string]any{"actions": []any{}}))
	wantOK(t, "GET", call(t, "GET", h.URL+rulesAPI+"global/", alice.Token, nil))
	var found bool
	for _, line := range strings.Split(h.st.Logs(), "\n") {
		var entry struct {
			Route    string `json:"route"`
			DynamoDB struct {
				Calls int     `json:"calls"`
				RCU   float64 `json:"rcu"`
			} `json:"dynamodb"`
		}
		if json.Unmarshal([]byte(line), &entry) != nil || entry.Route != "GET /_matrix/client/v3/pushrules/global/{$}" {
			continue
		}
		found = true
		if entry.DynamoDB.Calls != 2 || entry.DynamoDB.RCU != 2 {
			t.Errorf("GET /pushrules/global/ cost %d calls, %v RCU; want 2 calls (token, rules), 2 RCU", entry.DynamoDB.Calls, entry.DynamoDB.RCU)
		}
	}
	if !found {
		t.Fatalf("no log line for GET /pushrules/global/ in\n%s", h.st.Logs())
	}
	if strings.Contains(h.st.Logs(), alice.Token) {
		t.Error("the access token is in the log")
	}
}
