package unread_test

import (
	"context"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

var bg = context.Background()

// pair starts a stack with alice and bob in a public room of alice's.
func pair(t *testing.T) (*servertest.Stack, servertest.User, *mautrix.Client, *mautrix.Client, *mautrix.RespCreateRoom) {
	t.Helper()
	st := servertest.Start(t)
	au := st.Register(t, "alice")
	alice := st.Client(t, au)
	bob := st.Client(t, st.Register(t, "bob"))
	room, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(bg, room.RoomID); err != nil {
		t.Fatal(err)
	}
	return st, au, alice, bob, room
}

// TestUnreadCounts: messages notify by the user's push rules, a mention
// highlights, and a read receipt clears the counts.
func TestUnreadCounts(t *testing.T) {
	st, au, alice, bob, room := pair(t)
	first, err := alice.FullSyncRequest(bg, mautrix.ReqSync{})
	if err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{"one", "two"} {
		if _, err := bob.SendText(bg, room.RoomID, body); err != nil {
			t.Fatal(err)
		}
	}
	mention, err := bob.SendMessageEvent(bg, room.RoomID, event.EventMessage, map[string]any{
		"msgtype": "m.text", "body": "hey alice", "m.mentions": map[string]any{"user_ids": []string{alice.UserID.String()}},
	})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := alice.FullSyncRequest(bg, mautrix.ReqSync{Since: first.NextBatch, Timeout: 5000})
	if err != nil {
		t.Fatal(err)
	}
	u := resp.Rooms.Join[room.RoomID].UnreadNotifications
	if u == nil || u.NotificationCount != 3 || u.HighlightCount != 1 {
		t.Fatalf("unread after 3 messages, one mentioning alice: %+v", u)
	}
	r := st.Do(t, "GET", "/_matrix/client/v3/notifications", au.AccessToken, nil)
	list, _ := r.Body["notifications"].([]any)
	if r.Status != 200 || len(list) != 3 {
		t.Fatalf("notifications: %d %s", r.Status, r.Raw)
	}
	newest := list[0].(map[string]any)
	if newest["event"].(map[string]any)["event_id"] != mention.EventID.String() || newest["read"] != false || newest["room_id"] != room.RoomID.String() {
		t.Fatalf("newest notification: %v", newest)
	}
	r = st.Do(t, "GET", "/_matrix/client/v3/notifications?only=highlight", au.AccessToken, nil)
	if list, _ := r.Body["notifications"].([]any); len(list) != 1 {
		t.Fatalf("highlights: %s", r.Raw)
	}
	r = st.Do(t, "GET", "/_matrix/client/v3/notifications?limit=2", au.AccessToken, nil)
	next, _ := r.Body["next_token"].(string)
	r = st.Do(t, "GET", "/_matrix/client/v3/notifications?from="+next, au.AccessToken, nil)
	if list, _ := r.Body["notifications"].([]any); next == "" || len(list) != 1 {
		t.Fatalf("second page from %q: %s", next, r.Raw)
	}
	if err := alice.SendReceipt(bg, room.RoomID, mention.EventID, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	resp, err = alice.FullSyncRequest(bg, mautrix.ReqSync{Since: resp.NextBatch, Timeout: 5000})
	if err != nil {
		t.Fatal(err)
	}
	j, ok := resp.Rooms.Join[room.RoomID]
	if !ok || j.UnreadNotifications == nil || j.UnreadNotifications.NotificationCount != 0 || j.UnreadNotifications.HighlightCount != 0 {
		t.Fatalf("unread after the receipt: %+v", resp.Rooms.Join)
	}
}

// TestUnreadThreads: with unread_thread_notifications, events in a thread
// count under its root, apart from the main timeline, and the thread's own
// receipt clears them.
func TestUnreadThreads(t *testing.T) {
	st, au, alice, bob, room := pair(t)
	root, err := bob.SendText(bg, room.RoomID, "root")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.SendText(bg, room.RoomID, "main two"); err != nil {
		t.Fatal(err)
	}
	var last id.EventID
	for _, body := range []string{"reply one", "reply two"} {
		resp, err := bob.SendMessageEvent(bg, room.RoomID, event.EventMessage, map[string]any{
			"msgtype": "m.text", "body": body,
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root.EventID},
		})
		if err != nil {
			t.Fatal(err)
		}
		last = resp.EventID
	}
	filter := url.QueryEscape(`{"room":{"timeline":{"unread_thread_notifications":true}}}`)
	// mautrix has no field for unread_thread_notifications: read the raw answer.
	read := func(since string) (float64, map[string]any, string) {
		t.Helper()
		q := "?timeout=5000&filter=" + filter
		if since != "" {
			q += "&since=" + url.QueryEscape(since)
		}
		r := st.Do(t, "GET", "/_matrix/client/v3/sync"+q, au.AccessToken, nil)
		j, _ := r.Body["rooms"].(map[string]any)["join"].(map[string]any)[room.RoomID.String()].(map[string]any)
		if j == nil {
			t.Fatalf("sync lacks the room: %s", r.Raw)
		}
		main := j["unread_notifications"].(map[string]any)["notification_count"].(float64)
		threads, _ := j["unread_thread_notifications"].(map[string]any)
		next, _ := r.Body["next_batch"].(string)
		return main, threads, next
	}
	threadCount := func(threads map[string]any) float64 {
		c, _ := threads[root.EventID.String()].(map[string]any)
		n, _ := c["notification_count"].(float64)
		return n
	}
	mainCount, threads, next := read("")
	if mainCount != 2 || threadCount(threads) != 2 {
		t.Fatalf("main %v, threads %v; want 2 and 2 under the root", mainCount, threads)
	}
	if err := alice.SendReceipt(bg, room.RoomID, last, event.ReceiptTypeRead, &mautrix.ReqSendReceipt{ThreadID: root.EventID.String()}); err != nil {
		t.Fatal(err)
	}
	mainCount, threads, _ = read(next)
	if mainCount != 2 || threadCount(threads) != 0 {
		t.Fatalf("after the thread receipt: main %v, threads %v", mainCount, threads)
	}
}

// TestUnreadOwnMessages: a user's own messages never count for them, in an
// initial or an incremental sync, while the other member's count goes up
// (Synapse skips the sender in its bulk push evaluation).
func TestUnreadOwnMessages(t *testing.T) {
	_, _, alice, bob, room := pair(t)
	first, err := bob.FullSyncRequest(bg, mautrix.ReqSync{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.SendText(bg, room.RoomID, "hi"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		since string
	}{{"Incremental", first.NextBatch}, {"Initial", ""}} {
		t.Run(c.name, func(t *testing.T) {
			resp, err := bob.FullSyncRequest(bg, mautrix.ReqSync{Since: c.since, Timeout: 5000})
			if err != nil {
				t.Fatal(err)
			}
			j, ok := resp.Rooms.Join[room.RoomID]
			if !ok || j.UnreadNotifications == nil {
				t.Fatalf("bob's sync lacks the room's counts: %+v", resp.Rooms.Join)
			}
			if u := j.UnreadNotifications; u.NotificationCount != 0 || u.HighlightCount != 0 {
				t.Errorf("bob's counts after his own message: got %+v, want 0 and 0", u)
			}
		})
	}
	resp, err := alice.FullSyncRequest(bg, mautrix.ReqSync{})
	if err != nil {
		t.Fatal(err)
	}
	if u := resp.Rooms.Join[room.RoomID].UnreadNotifications; u == nil || u.NotificationCount != 1 {
		t.Errorf("alice's counts after bob's message: got %+v, want 1 notification", u)
	}
}
