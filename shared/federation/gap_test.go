package federation_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/events"
)

// TestWorker_GapFilledByMessages: bob's server sends 30 messages this
// server never gets (cut off), then a 31st, which arrives: the worker asks
// for what it lacks, /get_missing_events answers the last 10 only (its
// limit), which the room cannot place either, so the worker takes the
// state before the 31st (/state_ids) and the room places it above a gap.
// Alice's /sync shows the 31st alone; paging back through /messages fills
// the gap (from /backfill, here the room's Backfiller answering as bob's
// server would) and shows all 31 in order; no later /sync shows them.
func TestWorker_GapFilledByMessages(t *testing.T) {
	rm := newRemote(t)
	fs := startFed(t, nil)
	ctx := context.Background()
	r := fs.Do(t, "POST", "/_matrix/client/v3/createRoom", fs.Alice.AccessToken, map[string]any{"preset": "public_chat"})
	room, _ := r.Body["room_id"].(string)
	if r.Status != http.StatusOK {
		t.Fatalf("createRoom: %d %s", r.Status, r.Raw)
	}
	info, err := fs.Server.Rooms.Info(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	current, err := fs.Server.Rooms.CurrentState(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	state, err := events.NewState(current)
	if err != nil {
		t.Fatal(err)
	}
	ext, depth, err := fs.Server.Rooms.Extremities(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	bob := "@bob:" + rm.Name
	signer := events.Signer{ServerName: rm.Name, Key: rm.Key}
	clock := time.Now()
	build := func(p events.Proto, prev []string) events.PDU {
		t.Helper()
		depth++
		clock = clock.Add(time.Millisecond)
		p.RoomID = room
		ev, err := signer.Build(info.Version, p, events.Graph{PrevEvents: prev, Depth: depth}, state, clock)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	join := build(events.Proto{Sender: bob, Type: "m.room.member", StateKey: &bob, Content: json.RawMessage(`{"membership":"join"}`)}, ext)
	if err := state.Add(join); err != nil {
		t.Fatal(err)
	}
	if r := rm.send(t, fs.FedURL, "join", []json.RawMessage{join.JSON()}, nil); r.Status != 200 {
		t.Fatalf("send: %d %s", r.Status, r.Raw)
	}
	fs.work(t)
	before := fs.sync(t, "")

	var all []events.PDU
	prev := []string{join.EventID()}
	for i := 1; i <= 31; i++ {
		ev := build(events.Proto{Sender: bob, Type: "m.room.message", Content: json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":"b%d"}`, i))}, prev)
		all = append(all, ev)
		prev = []string{ev.EventID()}
	}
	last := all[30]
	rm.mu.Lock()
	rm.missing = slices.Clone(all[20:30]) // the 10 before the 31st
	slices.Reverse(rm.missing)
	rm.state, err = fs.Server.Rooms.CurrentState(ctx, room) // the state before each of bob's messages
	rm.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if r := rm.send(t, fs.FedURL, "b31", []json.RawMessage{last.JSON()}, nil); r.Status != 200 {
		t.Fatalf("send: %d %s", r.Status, r.Raw)
	}
	fs.work(t)
	asked := rm.Asked()
	if len(asked) < 2 || !strings.HasPrefix(asked[len(asked)-2], "POST /_matrix/federation/v1/get_missing_events/") ||
		!strings.Contains(asked[len(asked)-2], `"limit":10`) ||
		!strings.HasPrefix(asked[len(asked)-1], "GET /_matrix/federation/v1/state_ids/") {
		t.Fatalf("the remote was asked %q, want get_missing_events (limit 10), then state_ids", asked)
	}
	news := fs.sync(t, before.next)
	if got := news.bodies(room); !slices.Equal(got, []string{"b31"}) {
		t.Fatalf("sync after b31: %v, want [b31]", got)
	}

	byID := map[string]events.PDU{}
	for _, ev := range all {
		byID[ev.EventID()] = ev
	}
	calls := 0
	fs.Server.Rooms.Backfiller = func(_ context.Context, roomID, _ string, from []string, limit int) ([]events.PDU, error) {
		calls++
		var out []events.PDU
		queue := slices.Clone(from)
		for len(queue) > 0 && len(out) < limit {
			ev, ok := byID[queue[0]]
			queue = queue[1:]
			if ok && roomID == room {
				out = append(out, ev)
				queue = append(queue, ev.PrevEventIDs()...)
			}
		}
		return out, nil
	}
	var want []string
	for i := 1; i <= 31; i++ {
		want = append(want, fmt.Sprintf("b%d", i))
	}
	if got := fs.pageBodies(t, room, 10); !slices.Equal(got, want) {
		t.Fatalf("/messages, 10 a page: %v, want %v", got, want)
	}
	if calls < 3 {
		t.Fatalf("/backfill asked %d times, want one per 10 events at least", calls)
	}
	after := fs.sync(t, news.next)
	if got := after.bodies(room); len(got) != 0 {
		t.Fatalf("sync after the fill: %v, want nothing", got)
	}
	full := fs.sync(t, "")
	if got := full.bodies(room); !slices.Equal(got, want[len(want)-len(got):]) || len(got) == 0 {
		t.Fatalf("initial sync timeline: %v, want the last of %v", got, want)
	}
}

type syncReply struct {
	next  string
	rooms map[string][]string
}

func (s syncReply) bodies(room string) []string { return s.rooms[room] }

// sync is alice's /sync since since ("" for an initial one), with the
// message bodies of each joined room's timeline.
func (fs *fedStack) sync(t *testing.T, since string) syncReply {
	t.Helper()
	q := url.Values{"timeout": {"0"}, "filter": {`{"room":{"timeline":{"limit":50}}}`}}
	if since != "" {
		q.Set("since", since)
	}
	r := fs.Do(t, "GET", "/_matrix/client/v3/sync?"+q.Encode(), fs.Alice.AccessToken, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("sync: %d %s", r.Status, r.Raw)
	}
	var body struct {
		Next  string `json:"next_batch"`
		Rooms struct {
			Join map[string]struct {
				Timeline struct {
					Events []messageJSON `json:"events"`
				} `json:"timeline"`
			} `json:"join"`
		} `json:"rooms"`
	}
	if err := json.Unmarshal(r.Raw, &body); err != nil {
		t.Fatal(err)
	}
	out := syncReply{next: body.Next, rooms: map[string][]string{}}
	for id, j := range body.Rooms.Join {
		out.rooms[id] = messageBodies(j.Timeline.Events)
	}
	return out
}

type messageJSON struct {
	Type    string `json:"type"`
	Content struct {
		Body string `json:"body"`
	} `json:"content"`
}

func messageBodies(evs []messageJSON) []string {
	var out []string
	for _, ev := range evs {
		if ev.Type == "m.room.message" {
			out = append(out, ev.Content.Body)
		}
	}
	return out
}

// pageBodies pages back through alice's /messages of room, limit a page,
// and returns the message bodies oldest first.
func (fs *fedStack) pageBodies(t *testing.T, room string, limit int) []string {
	t.Helper()
	var out []string
	from := ""
	for range 100 {
		q := url.Values{"dir": {"b"}, "limit": {fmt.Sprint(limit)}}
		if from != "" {
			q.Set("from", from)
		}
		r := fs.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?"+q.Encode(), fs.Alice.AccessToken, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("messages: %d %s", r.Status, r.Raw)
		}
		var page struct {
			Chunk []messageJSON `json:"chunk"`
			End   string        `json:"end"`
		}
		if err := json.Unmarshal(r.Raw, &page); err != nil {
			t.Fatal(err)
		}
		b := messageBodies(page.Chunk)
		slices.Reverse(b)
		out = append(b, out...)
		if page.End == "" {
			return out
		}
		from = page.End
	}
	t.Fatal("messages: no end after 100 pages")
	return nil
}
