package federation_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/events"
)

// TestWorker_OutlierArrivesThroughSend: bob's server sets bob's display
// name (T, a member event), which this server never gets, then sends a message (M) built on it. The
// worker cannot fetch T through /get_missing_events (the remote answers
// nothing), so it takes the state before M (/state_ids, then /event of
// T): T is stored as an outlier, M placed above a gap. When T then
// arrives through /send, it is not "already held": it is checked and
// placed in the timeline, after M, where alice's /sync and /messages
// show it, and it is bob's member event in the room's state.
func TestWorker_OutlierArrivesThroughSend(t *testing.T) {
	gs := newGapServer(t)
	rm := gs.rm
	fs := startFed(t, nil)
	ctx := context.Background()
	br := newBobRoom(t, gs, fs, nil)
	room, bob, join := br.room, br.bob, br.join
	build := func(p events.Proto, prev []string) events.PDU {
		t.Helper()
		return br.build(t, p, prev)
	}
	topic := build(events.Proto{Sender: bob, Type: "m.room.member", StateKey: &bob, Content: json.RawMessage(`{"membership":"join","displayname":"Bob"}`)}, []string{join.EventID()})
	msg := build(events.Proto{Sender: bob, Type: "m.room.message", Content: json.RawMessage(`{"msgtype":"m.text","body":"after the topic"}`)}, []string{topic.EventID()})

	cur, err := fs.Server.Rooms.CurrentState(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	gs.mu.Lock()
	for _, ev := range cur {
		if ev.EventID() != join.EventID() {
			gs.state = append(gs.state, ev)
		}
	}
	gs.state = append(gs.state, topic) // the state before msg
	for _, ev := range append(slices.Clone(gs.state), msg) {
		gs.byID[ev.EventID()] = ev
	}
	gs.mu.Unlock()
	before := fs.sync(t, "")

	if r := rm.send(t, fs.FedURL, "msg", []json.RawMessage{msg.JSON()}, nil); r.Status != 200 {
		t.Fatalf("send: %d %s", r.Status, r.Raw)
	}
	fs.work(t)
	mid := fs.timelineIDs(t, room, before.next)
	if !slices.Equal(mid.ids, []string{msg.EventID()}) {
		t.Fatalf("sync after M: %v, want [M %s]", mid.ids, msg.EventID())
	}

	if r := rm.send(t, fs.FedURL, "topic", []json.RawMessage{topic.JSON()}, nil); r.Status != 200 {
		t.Fatalf("send: %d %s", r.Status, r.Raw)
	}
	fs.work(t)
	after := fs.timelineIDs(t, room, mid.next)
	if !slices.Equal(after.ids, []string{topic.EventID()}) {
		t.Fatalf("sync after T arrived through /send: %v, want [T %s]", after.ids, topic.EventID())
	}
	r := fs.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?dir=b&limit=3", fs.Alice.AccessToken, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("messages: %d %s", r.Status, r.Raw)
	}
	var page struct {
		Chunk []struct {
			EventID string `json:"event_id"`
		} `json:"chunk"`
	}
	if err := json.Unmarshal(r.Raw, &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Chunk) < 2 || page.Chunk[0].EventID != topic.EventID() || page.Chunk[1].EventID != msg.EventID() {
		t.Fatalf("/messages backwards: %s, want T %s then M %s", r.Raw, topic.EventID(), msg.EventID())
	}
	r = fs.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.member/"+url.PathEscape(bob), fs.Alice.AccessToken, nil)
	if r.Status != http.StatusOK || r.Body["displayname"] != "Bob" {
		t.Fatalf("bob's member event: %d %s, want displayname Bob", r.Status, r.Raw)
	}
}

type timelineReply struct {
	next string
	ids  []string
}

// timelineIDs is alice's /sync since since: the event IDs of room's
// timeline.
func (fs *fedStack) timelineIDs(t *testing.T, room, since string) timelineReply {
	t.Helper()
	q := url.Values{"timeout": {"0"}, "since": {since}, "filter": {`{"room":{"timeline":{"limit":50}}}`}}
	r := fs.Do(t, "GET", "/_matrix/client/v3/sync?"+q.Encode(), fs.Alice.AccessToken, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("sync: %d %s\n%s", r.Status, r.Raw, fs.Logs())
	}
	var body struct {
		Next  string `json:"next_batch"`
		Rooms struct {
			Join map[string]struct {
				Timeline struct {
					Events []struct {
						EventID string `json:"event_id"`
					} `json:"events"`
				} `json:"timeline"`
			} `json:"join"`
		} `json:"rooms"`
	}
	if err := json.Unmarshal(r.Raw, &body); err != nil {
		t.Fatal(err)
	}
	out := timelineReply{next: body.Next}
	for _, ev := range body.Rooms.Join[room].Timeline.Events {
		out.ids = append(out.ids, ev.EventID)
	}
	return out
}
