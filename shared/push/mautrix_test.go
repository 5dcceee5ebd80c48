package push_test

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/pushrules"
)

// room is what mautrix's evaluator asks of a room.
type room struct{ members int }

func (r room) GetOwnDisplayname() string { return "Alice" }
func (r room) GetMemberCount() int       { return r.members }

func client(t *testing.T, h *homeserver, u user) *mautrix.Client {
	t.Helper()
	c, err := mautrix.NewClient(h.URL, id.UserID(u.ID), u.Token)
	if err != nil {
		t.Fatal(err)
	}
	c.DeviceID = id.DeviceID(u.Device)
	return c
}

func ids(rules pushrules.PushRuleArray) []string {
	out := []string{}
	for _, r := range rules {
		out = append(out, r.RuleID)
	}
	return out
}

func msg(sender string, content map[string]any) *event.Event {
	return &event.Event{Type: event.EventMessage, Sender: id.UserID(sender), RoomID: "!room:example.org", Content: event.Content{Raw: content}}
}

// TestMautrix_PushRules drives the push rule endpoints with mautrix-go, the
// client library of the mautrix bridges, and evaluates the ruleset it reads
// back with mautrix's own push rule evaluator.
func TestMautrix_PushRules(t *testing.T) {
	h := startHomeserver(t)
	alice := h.register(t, "alice")
	c := client(t, h, alice)
	ctx := context.Background()

	rs, err := c.GetPushRules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(rs.Override); !reflect.DeepEqual(got, specOverride) {
		t.Errorf("override rules %q", got)
	}
	if got := ids(rs.Underride); !reflect.DeepEqual(got, specUnderride) {
		t.Errorf("underride rules %q", got)
	}

	// What the defaults do to events, by mautrix's reading of them.
	bob := "@bob:example.org"
	for _, c := range []struct {
		name    string
		members int
		evt     *event.Event
		rule    string
		notify  bool
	}{
		{"message in a 1:1 room", 2, msg(bob, map[string]any{"msgtype": "m.text", "body": "hi"}), ".m.rule.room_one_to_one", true},
		{"message in a group", 5, msg(bob, map[string]any{"msgtype": "m.text", "body": "hi"}), ".m.rule.message", true},
		{"notice", 2, msg(bob, map[string]any{"msgtype": "m.notice", "body": "bot says"}), ".m.rule.suppress_notices", false},
		{"mention", 5, msg(bob, map[string]any{"msgtype": "m.text", "body": "alice?", "m.mentions": map[string]any{"user_ids": []any{alice.ID}}}), ".m.rule.is_user_mention", true},
		{"edit", 2, msg(bob, map[string]any{"msgtype": "m.text", "body": "* hi", "m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": "$x"}}), ".m.rule.suppress_edits", false},
		{"invite for alice", 5, &event.Event{Type: event.StateMember, Sender: id.UserID(bob), StateKey: &alice.ID, Content: event.Content{Raw: map[string]any{"membership": "invite"}}}, ".m.rule.invite_for_me", true},
		{"call", 5, &event.Event{Type: event.CallInvite, Sender: id.UserID(bob), Content: event.Content{Raw: map[string]any{}}}, ".m.rule.call", true},
	} {
		rule := rs.GetMatchingRule(room{c.members}, c.evt)
		if rule == nil || rule.RuleID != c.rule || rule.GetActions().Should().Notify != c.notify {
			t.Errorf("%s: matched %+v, want %s (notify %v)", c.name, rule, c.rule, c.notify)
		}
	}
	if a := rs.GetActions(room{2}, msg(bob, map[string]any{"msgtype": "m.text", "body": "hi"})).Should(); !a.Notify || a.PlaySound != true || a.SoundName != "default" || a.Highlight {
		t.Errorf("1:1 message actions: %+v", a)
	}

	// The user's own rules.
	notify := []*pushrules.PushAction{{Action: pushrules.ActionNotify}}
	err = c.PutPushRule(ctx, "global", pushrules.ContentRule, "cake", &mautrix.ReqPutPushRule{Pattern: "cake", Actions: []*pushrules.PushAction{
		{Action: pushrules.ActionNotify}, {Action: pushrules.ActionSetTweak, Tweak: pushrules.TweakHighlight, Value: true}}})
	if err != nil {
		t.Fatal(err)
	}
	err = c.PutPushRule(ctx, "global", pushrules.ContentRule, "cakelie", &mautrix.ReqPutPushRule{Pattern: "cake*lie", Actions: notify, After: "cake"})
	if err != nil {
		t.Fatal(err)
	}
	err = c.PutPushRule(ctx, "global", pushrules.RoomRule, "!quiet:example.org", &mautrix.ReqPutPushRule{Actions: []*pushrules.PushAction{}})
	if err != nil {
		t.Fatal(err)
	}
	err = c.PutPushRule(ctx, "global", pushrules.OverrideRule, "no-bots", &mautrix.ReqPutPushRule{Actions: []*pushrules.PushAction{},
		Conditions: []*pushrules.PushCondition{{Kind: pushrules.KindEventMatch, Key: "sender", Pattern: "@*bot:*"}}})
	if err != nil {
		t.Fatal(err)
	}
	rule, err := c.GetPushRule(ctx, "global", pushrules.ContentRule, "cake")
	if err != nil || rule.Pattern != "cake" || rule.Default || !rule.Enabled || len(rule.Actions) != 2 {
		t.Fatalf("GetPushRule cake: %+v, %v", rule, err)
	}
	rs, err = c.GetPushRules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(rs.Content); !reflect.DeepEqual(got, []string{"cake", "cakelie"}) {
		t.Errorf("content rules %q", got)
	}
	if got := ids(rs.Override)[:2]; !reflect.DeepEqual(got, []string{".m.rule.master", "no-bots"}) {
		t.Errorf("override rules %q", got)
	}
	if _, ok := rs.Room.Map["!quiet:example.org"]; !ok {
		t.Errorf("room rules %v", rs.Room.Map)
	}
	for _, c := range []struct {
		name string
		evt  *event.Event
		rule string
	}{
		{"cake in a group", msg(bob, map[string]any{"msgtype": "m.text", "body": "The cake is a lie"}), "cake"},
		{"a bot", msg("@newsbot:example.org", map[string]any{"msgtype": "m.text", "body": "cake"}), "no-bots"},
	} {
		if r := rs.GetMatchingRule(room{5}, c.evt); r == nil || r.RuleID != c.rule {
			t.Errorf("%s: matched %+v, want %s", c.name, r, c.rule)
		}
	}
	quiet := msg(bob, map[string]any{"msgtype": "m.text", "body": "hi"})
	quiet.RoomID = "!quiet:example.org"
	if r := rs.GetMatchingRule(room{5}, quiet); r == nil || r.RuleID != "!quiet:example.org" || r.GetActions().Should().Notify {
		t.Errorf("a message in the quiet room matched %+v", r)
	}

	// Predefined rules: enabled and actions change, the rest does not.
	if err := c.SetPushRuleEnabled(ctx, "global", pushrules.OverrideRule, ".m.rule.master", true); err != nil {
		t.Fatal(err)
	}
	if err := c.PutPushRuleActions(ctx, "global", pushrules.UnderrideRule, ".m.rule.message", []*pushrules.PushAction{}); err != nil {
		t.Fatal(err)
	}
	master, err := c.GetPushRule(ctx, "global", pushrules.OverrideRule, ".m.rule.master")
	if err != nil || !master.Enabled || !master.Default {
		t.Errorf("master: %+v, %v", master, err)
	}
	rs, err = c.GetPushRules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r := rs.GetMatchingRule(room{2}, msg(bob, map[string]any{"msgtype": "m.text", "body": "hi"})); r == nil || r.RuleID != ".m.rule.master" {
		t.Errorf("with master enabled, a message matched %+v", r)
	}

	// Errors, as mautrix reports them.
	if err := c.DeletePushRule(ctx, "global", pushrules.OverrideRule, ".m.rule.master"); !errors.Is(err, mautrix.MNotFound) {
		t.Errorf("deleting .m.rule.master: %v", err)
	}
	if err := c.PutPushRule(ctx, "global", pushrules.OverrideRule, ".m.rule.mine", &mautrix.ReqPutPushRule{Actions: notify}); !errors.Is(err, mautrix.MInvalidParam) {
		t.Errorf("creating a dotted rule: %v", err)
	}
	if err := c.PutPushRule(ctx, "global", pushrules.ContentRule, "x", &mautrix.ReqPutPushRule{Pattern: "x", Actions: notify, Before: "nope"}); !errors.Is(err, mautrix.MInvalidParam) {
		t.Errorf("before an unknown rule: %v", err)
	}
	if err := c.PutPushRule(ctx, "global", pushrules.ContentRule, "a/b", &mautrix.ReqPutPushRule{Pattern: "x", Actions: notify}); !errors.Is(err, mautrix.MInvalidParam) {
		t.Errorf("a rule ID with a slash: %v", err)
	}
	if _, err := c.GetPushRule(ctx, "global", "bogus", "cake"); !errors.Is(err, mautrix.MNotFound) {
		t.Errorf("an unknown kind: %v", err)
	}
	if err := c.SetPushRuleEnabled(ctx, "global", pushrules.UnderrideRule, "nope", false); !errors.Is(err, mautrix.MNotFound) {
		t.Errorf("enabling an unknown rule: %v", err)
	}

	// Deleting the user's rules.
	for _, d := range []struct {
		kind pushrules.PushRuleType
		id   string
	}{{pushrules.ContentRule, "cake"}, {pushrules.ContentRule, "cakelie"}, {pushrules.RoomRule, "!quiet:example.org"}, {pushrules.OverrideRule, "no-bots"}} {
		if err := c.DeletePushRule(ctx, "global", d.kind, d.id); err != nil {
			t.Errorf("delete %s %s: %v", d.kind, d.id, err)
		}
	}
	if _, err := c.GetPushRule(ctx, "global", pushrules.ContentRule, "cake"); !errors.Is(err, mautrix.MNotFound) {
		t.Errorf("a deleted rule: %v", err)
	}
	rs, err = c.GetPushRules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs.Content) != 0 || len(rs.Room.Map) != 0 || !reflect.DeepEqual(ids(rs.Override), specOverride) {
		t.Errorf("after deleting: content %q, room %v, override %q", ids(rs.Content), rs.Room.Map, ids(rs.Override))
	}
}

// TestMautrix_Pushers sets, lists and deletes a pusher with mautrix-go.
func TestMautrix_Pushers(t *testing.T) {
	h := startHomeserver(t)
	c := client(t, h, h.register(t, "alice"))
	ctx := context.Background()
	kind := mautrix.PusherKindHTTP
	p := &mautrix.Pusher{
		AppID: "org.example.app.android", PushKey: "fcm-token-1", Kind: &kind,
		AppDisplayName: "Example", DeviceDisplayName: "Pixel", Language: "en-US",
		Data: mautrix.PusherData{"url": gateway, "format": "event_id_only"},
	}
	if err := c.SetPusher(ctx, p); err != nil {
		t.Fatal(err)
	}
	resp, err := c.GetPushers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Pushers) != 1 {
		t.Fatalf("pushers: %+v", resp.Pushers)
	}
	got := resp.Pushers[0]
	if got.AppID != p.AppID || got.PushKey != p.PushKey || got.Kind == nil || *got.Kind != kind || got.Language != "en-US" ||
		got.DeviceDisplayName != "Pixel" || got.Data["url"] != gateway || got.Data.Format() != mautrix.PushFormatEventIDOnly {
		t.Errorf("pusher read back: %+v", got)
	}

	bad := *p
	bad.Data = mautrix.PusherData{"url": "http://push.example.org/_matrix/push/v1/notify"}
	if err := c.SetPusher(ctx, &bad); !errors.Is(err, mautrix.MInvalidParam) {
		t.Errorf("a plain HTTP gateway: %v", err)
	}
	bad.Data = mautrix.PusherData{}
	if err := c.SetPusher(ctx, &bad); !errors.Is(err, mautrix.RespError{ErrCode: "M_MISSING_PARAM"}) {
		t.Errorf("no gateway URL: %v", err)
	}

	p.Kind = nil // delete
	if err := c.SetPusher(ctx, p); err != nil {
		t.Fatal(err)
	}
	if resp, err := c.GetPushers(ctx); err != nil || len(resp.Pushers) != 0 {
		t.Errorf("pushers after deleting: %+v, %v", resp, err)
	}
}
