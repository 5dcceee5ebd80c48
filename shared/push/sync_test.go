package push_test

import (
	"context"
	"encoding/json"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
)

// TestPushRules_PollRules: the spec's poll rules (v1.7, MSC3930) are
// served with their conditions and actions, after .m.rule.encrypted.
func TestPushRules_PollRules(t *testing.T) {
	h := startHomeserver(t)
	alice := h.register(t, "alice")
	base := h.URL + rulesAPI + "global/underride/"
	for _, c := range []struct{ id, want string }{
		{".m.rule.poll_start_one_to_one", `{"rule_id":".m.rule.poll_start_one_to_one","default":true,"enabled":true,"conditions":[{"kind":"room_member_count","is":"2"},{"kind":"event_match","key":"type","pattern":"m.poll.start"}],"actions":["notify",{"set_tweak":"sound","value":"default"}]}`},
		{".m.rule.poll_start", `{"rule_id":".m.rule.poll_start","default":true,"enabled":true,"conditions":[{"kind":"event_match","key":"type","pattern":"m.poll.start"}],"actions":["notify"]}`},
		{".m.rule.poll_end_one_to_one", `{"rule_id":".m.rule.poll_end_one_to_one","default":true,"enabled":true,"conditions":[{"kind":"room_member_count","is":"2"},{"kind":"event_match","key":"type","pattern":"m.poll.end"}],"actions":["notify",{"set_tweak":"sound","value":"default"}]}`},
		{".m.rule.poll_end", `{"rule_id":".m.rule.poll_end","default":true,"enabled":true,"conditions":[{"kind":"event_match","key":"type","pattern":"m.poll.end"}],"actions":["notify"]}`},
	} {
		r := call(t, "GET", base+c.id, alice.Token, nil)
		if r.status != 200 || canon(t, string(r.raw)) != canon(t, c.want) {
			t.Errorf("GET %s: got %d %s, want %s", c.id, r.status, r.raw, c.want)
		}
	}
}

// TestPushRules_Sync: a change of the push rules wakes a waiting
// incremental /sync, which carries the new m.push_rules; the sync after it
// does not repeat them.
func TestPushRules_Sync(t *testing.T) {
	h := startHomeserver(t)
	alice := h.register(t, "alice")
	c := client(t, h, alice)
	ctx := context.Background()
	first, err := c.FullSyncRequest(ctx, mautrix.ReqSync{})
	if err != nil {
		t.Fatal(err)
	}
	if rules := pushRulesOf(t, first); rules == nil {
		t.Fatal("the initial sync lacks m.push_rules")
	}
	type result struct {
		resp *mautrix.RespSync
		err  error
	}
	done := make(chan result, 1)
	go func() {
		// Long enough that only the change can end it with news.
		resp, err := c.FullSyncRequest(ctx, mautrix.ReqSync{Since: first.NextBatch, Timeout: 20000})
		done <- result{resp, err}
	}()
	wantOK(t, "PUT a keyword rule", call(t, "PUT", h.URL+rulesAPI+"global/content/lunch", alice.Token,
		map[string]any{"pattern": "lunch", "actions": []any{"notify"}}))
	got := <-done
	if got.err != nil {
		t.Fatal(got.err)
	}
	rules := pushRulesOf(t, got.resp)
	if rules == nil {
		t.Fatalf("the incremental sync after a rule change lacks m.push_rules: %+v", got.resp.AccountData)
	}
	content := rules["global"].(map[string]any)["content"].([]any)
	if len(content) != 1 || content[0].(map[string]any)["rule_id"] != "lunch" {
		t.Errorf("content rules in the synced m.push_rules: got %v, want the rule lunch", content)
	}
	again, err := c.FullSyncRequest(ctx, mautrix.ReqSync{Since: got.resp.NextBatch, Timeout: 0})
	if err != nil {
		t.Fatal(err)
	}
	if pushRulesOf(t, again) != nil {
		t.Errorf("the sync after the one that carried the change repeats m.push_rules")
	}
}

// pushRulesOf returns the content of the m.push_rules event of a sync's
// account data, nil when there is none.
func pushRulesOf(t *testing.T, resp *mautrix.RespSync) map[string]any {
	t.Helper()
	for _, ev := range resp.AccountData.Events {
		if ev.Type != event.AccountDataPushRules {
			continue
		}
		var content map[string]any
		if err := json.Unmarshal(ev.Content.VeryRaw, &content); err != nil {
			t.Fatal(err)
		}
		return content
	}
	return nil
}
