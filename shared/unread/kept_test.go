package unread_test

import (
	"fmt"
	"net/url"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestUnreadCounts_KeptAgreeWithAFreshProcess: a process that counted a
// room before evaluates only the events since (the outcomes it keeps), and
// its counts, main and by thread, are those of a process that counts
// everything after the receipt afresh, step by step: new messages, a
// mention, the user's display name changed (with a rule on it, an
// outcome kept differs now: the earlier message naming her highlights), a
// redaction, more than MaxCounted messages, receipts moving forward, a
// thread's receipt, and a rule that silences the sender.
func TestUnreadCounts_KeptAgreeWithAFreshProcess(t *testing.T) {
	st, au, alice, bob, room := pair(t)
	var root id.EventID
	type counts struct {
		Notes, Highlights   float64
		ThreadNotes, Thread float64
	}
	filter := url.QueryEscape(`{"room":{"timeline":{"limit":1,"unread_thread_notifications":true}}}`)
	countsOn := func(s *servertest.Stack) counts {
		t.Helper()
		var c counts
		for _, f := range []string{"", "&filter=" + filter} {
			r := s.Do(t, "GET", "/_matrix/client/v3/sync?timeout=0"+f, au.AccessToken, nil)
			j, _ := r.Body["rooms"].(map[string]any)["join"].(map[string]any)[room.RoomID.String()].(map[string]any)
			if j == nil {
				t.Fatalf("sync lacks the room: %s", r.Raw)
			}
			u := j["unread_notifications"].(map[string]any)
			if f == "" {
				c.Notes, c.Highlights = u["notification_count"].(float64), u["highlight_count"].(float64)
				continue
			}
			c.ThreadNotes = u["notification_count"].(float64)
			threads, _ := j["unread_thread_notifications"].(map[string]any)
			tc, _ := threads[root.String()].(map[string]any)
			c.Thread, _ = tc["notification_count"].(float64)
		}
		return c
	}
	step := func(what string, want counts) {
		t.Helper()
		kept := countsOn(st)
		fresh := countsOn(st.Twin(t))
		if kept != want || fresh != want {
			t.Fatalf("%s: counted again %+v, afresh %+v; want %+v", what, kept, fresh, want)
		}
	}
	send := func(content map[string]any) id.EventID {
		t.Helper()
		resp, err := bob.SendMessageEvent(bg, room.RoomID, event.EventMessage, content)
		if err != nil {
			t.Fatal(err)
		}
		return resp.EventID
	}
	text := func(body string) id.EventID { return send(map[string]any{"msgtype": "m.text", "body": body}) }

	rule := func(id string, body map[string]any) {
		t.Helper()
		if r := st.Do(t, "PUT", "/_matrix/client/v3/pushrules/global/override/"+id, au.AccessToken, body); r.Status != 200 {
			t.Fatalf("push rule %s: %d %s", id, r.Status, r.Raw)
		}
	}
	rule("by_name", map[string]any{
		"conditions": []any{map[string]any{"kind": "contains_display_name"}},
		"actions":    []any{"notify", map[string]any{"set_tweak": "highlight"}},
	})
	root = text("root")
	step("a message", counts{Notes: 1, ThreadNotes: 1})
	mid := text("ping Ally")
	send(map[string]any{"msgtype": "m.text", "body": "in the thread", "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
	step("two more, one in a thread", counts{Notes: 3, ThreadNotes: 2, Thread: 1})
	send(map[string]any{"msgtype": "m.text", "body": "hey", "m.mentions": map[string]any{"user_ids": []string{alice.UserID.String()}}})
	step("a mention", counts{Notes: 4, Highlights: 1, ThreadNotes: 3, Thread: 1})
	if err := alice.SetDisplayName(bg, "Ally"); err != nil {
		t.Fatal(err)
	}
	step("alice named Ally: the earlier message names her", counts{Notes: 4, Highlights: 2, ThreadNotes: 3, Thread: 1})
	if _, err := bob.RedactEvent(bg, room.RoomID, mid); err != nil {
		t.Fatal(err)
	}
	step("that message redacted: its body is gone", counts{Notes: 4, Highlights: 1, ThreadNotes: 3, Thread: 1})
	if err := alice.SendReceipt(bg, room.RoomID, mid, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	step("read up to the redacted message", counts{Notes: 2, Highlights: 1, ThreadNotes: 1, Thread: 1})
	var last id.EventID
	for i := range 110 {
		last = text(fmt.Sprint("message ", i))
	}
	step("110 messages more: the newest 100 count", counts{Notes: 100, ThreadNotes: 100})
	if err := alice.SendReceipt(bg, room.RoomID, last, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	reply := send(map[string]any{"msgtype": "m.text", "body": "in the thread again", "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
	text("after the receipt")
	step("read up to the newest, then two more", counts{Notes: 2, ThreadNotes: 1, Thread: 1})
	if err := alice.SendReceipt(bg, room.RoomID, reply, event.ReceiptTypeRead, &mautrix.ReqSendReceipt{ThreadID: root.String()}); err != nil {
		t.Fatal(err)
	}
	step("the thread read", counts{Notes: 2, ThreadNotes: 1})
	rule("quiet_bob", map[string]any{
		"conditions": []any{map[string]any{"kind": "event_match", "key": "sender", "pattern": bob.UserID.String()}},
		"actions":    []any{},
	})
	// A process reuses the rules it read for a moment (rulesFor): wait
	// for the counting process to read them again.
	want := counts{}
	deadline := time.Now().Add(time.Minute) // a hang guard only
	for kept := countsOn(st); kept != want; kept = countsOn(st) {
		if time.Now().After(deadline) {
			t.Fatalf("bob silenced: counted again %+v, want %+v", kept, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if fresh := countsOn(st.Twin(t)); fresh != want {
		t.Fatalf("bob silenced: afresh %+v, want %+v", fresh, want)
	}
}
