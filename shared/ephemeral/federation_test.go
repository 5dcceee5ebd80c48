package ephemeral_test

import (
	"context"
	"encoding/json"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestFederate: what a local user's typing and receipts send to the other
// servers, on a pinned clock: a start, a renewal only once 40 s after the
// last EDU, a stop; a stop after a local timeout while other servers may
// still show the typing (their 60 s), none after; public receipts that
// move forward only, with their thread; no private receipt.
func TestFederate(t *testing.T) {
	st, alice, _, room := lobby(t)
	t0 := time.Now()
	var now atomic.Int64
	now.Store(t0.UnixNano())
	at := func(d time.Duration) { now.Store(t0.Add(d).UnixNano()) }
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	st.Server.Sync.Now, st.Server.Ephemeral.Now = clock, clock
	var sent []string
	st.Server.Ephemeral.Federate = func(_ context.Context, roomID, eduType string, content json.RawMessage) error {
		if roomID != string(room) {
			t.Errorf("EDU for room %s, want %s", roomID, room)
		}
		var v any
		if err := json.Unmarshal(content, &v); err != nil {
			t.Errorf("%s EDU is not JSON: %v", eduType, err)
		}
		doc, _ := json.Marshal(v) // keys sorted, as want has them
		sent = append(sent, eduType+" "+string(doc))
		return nil
	}
	typingEDU := func(typing bool) string {
		doc, _ := json.Marshal(map[string]any{"room_id": room, "user_id": alice.User.ID, "typing": typing})
		return "m.typing " + string(doc)
	}
	steps := []struct {
		at     time.Duration
		typing bool
		ms     time.Duration
		want   []string
	}{
		{0, true, 30 * time.Second, []string{typingEDU(true)}},
		{10 * time.Second, true, 30 * time.Second, nil},                       // a renewal
		{41 * time.Second, true, 30 * time.Second, []string{typingEDU(true)}}, // 41 s after the last EDU
		{45 * time.Second, false, 0, []string{typingEDU(false)}},
		{50 * time.Second, true, 5 * time.Second, []string{typingEDU(true)}},
		{56 * time.Second, false, 0, []string{typingEDU(false)}}, // timed out here, not there
		{60 * time.Second, true, 5 * time.Second, []string{typingEDU(true)}},
		{200 * time.Second, false, 0, nil}, // timed out everywhere
	}
	for _, s := range steps {
		at(s.at)
		sent = nil
		if _, err := alice.UserTyping(bg, room, s.typing, s.ms); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(sent, s.want) {
			t.Errorf("at %v typing %v: sent %q, want %q", s.at, s.typing, sent, s.want)
		}
	}

	root, err := alice.SendText(bg, room, "root")
	if err != nil {
		t.Fatal(err)
	}
	reply, err := alice.SendMessageEvent(bg, room, event.EventMessage, map[string]any{
		"msgtype": "m.text", "body": "in the thread",
		"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root.EventID},
	})
	if err != nil {
		t.Fatal(err)
	}
	at(300 * time.Second)
	ts := t0.Add(300 * time.Second).UnixMilli()
	receiptEDU := func(eventID, thread string) string {
		data := map[string]any{"ts": ts}
		if thread != "" {
			data["thread_id"] = thread
		}
		doc, _ := json.Marshal(map[string]any{string(room): map[string]any{"m.read": map[string]any{
			alice.User.ID: map[string]any{"event_ids": []string{eventID}, "data": data}}}})
		return "m.receipt " + string(doc)
	}
	receipts := []struct {
		typ     event.ReceiptType
		eventID string
		thread  string
		want    []string
	}{
		{event.ReceiptTypeReadPrivate, string(reply.EventID), "", nil},
		{event.ReceiptTypeRead, string(reply.EventID), "", []string{receiptEDU(string(reply.EventID), "")}},
		{event.ReceiptTypeRead, string(root.EventID), "", nil}, // behind the current one
		{event.ReceiptTypeRead, string(reply.EventID), string(root.EventID), []string{receiptEDU(string(reply.EventID), string(root.EventID))}},
	}
	for _, r := range receipts {
		sent = nil
		var body any
		if r.thread != "" {
			body = &mautrix.ReqSendReceipt{ThreadID: r.thread}
		}
		if err := alice.SendReceipt(bg, room, id.EventID(r.eventID), r.typ, body); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(sent, r.want) {
			t.Errorf("%s on %s (thread %q): sent %q, want %q", r.typ, r.eventID, r.thread, sent, r.want)
		}
	}

	// read_markers: its m.read goes out unthreaded, its m.fully_read and
	// m.read.private never.
	next, err := alice.SendText(bg, room, "next")
	if err != nil {
		t.Fatal(err)
	}
	sent = nil
	if err := alice.SetReadMarkers(bg, room, &mautrix.ReqSetReadMarkers{Read: next.EventID, ReadPrivate: next.EventID, FullyRead: next.EventID}); err != nil {
		t.Fatal(err)
	}
	if want := []string{receiptEDU(string(next.EventID), "")}; !slices.Equal(sent, want) {
		t.Errorf("read_markers: sent %q, want %q", sent, want)
	}
}
