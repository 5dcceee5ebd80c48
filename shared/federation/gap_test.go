package federation_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/keys"
	"github.com/cirrus-matrix/cirrus/shared/protocol"
)

// TestWorker_GapFilledByMessages: bob's server sends 30 messages this
// server never gets (cut off), then a 31st, which arrives: the worker asks
// for what it lacks, /get_missing_events answers the last 10 only (its
// limit), which the room cannot place either, so the worker takes the
// state before the 31st (/state_ids) and the room places it above a gap.
// Alice's /sync shows the 31st alone; paging back through /messages fills
// the gap (the room's Backfiller asks bob's server, GET /backfill) and
// shows all 31 in order; no later /sync shows them.
func TestWorker_GapFilledByMessages(t *testing.T) {
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
	before := fs.sync(t, "")

	var all []events.PDU
	prev := []string{join.EventID()}
	for i := 1; i <= 31; i++ {
		ev := build(events.Proto{Sender: bob, Type: "m.room.message", Content: json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":"b%d"}`, i))}, prev)
		all = append(all, ev)
		prev = []string{ev.EventID()}
	}
	last := all[30]
	gs.mu.Lock()
	gs.missing = slices.Clone(all[20:30]) // the 10 before the 31st
	slices.Reverse(gs.missing)
	var err error
	gs.state, err = fs.Server.Rooms.CurrentState(ctx, room) // the state before each of bob's messages
	for _, ev := range append(slices.Clone(gs.state), all...) {
		gs.byID[ev.EventID()] = ev
	}
	gs.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if r := rm.send(t, fs.FedURL, "b31", []json.RawMessage{last.JSON()}, nil); r.Status != 200 {
		t.Fatalf("send: %d %s", r.Status, r.Raw)
	}
	fs.work(t)
	asked := gs.Asked()
	if len(asked) < 2 || !strings.HasPrefix(asked[len(asked)-2], "POST /_matrix/federation/v1/get_missing_events/") ||
		!strings.Contains(asked[len(asked)-2], `"limit":10`) ||
		!strings.HasPrefix(asked[len(asked)-1], "GET /_matrix/federation/v1/state_ids/") {
		t.Fatalf("the remote was asked %q, want get_missing_events (limit 10), then state_ids", asked)
	}
	news := fs.sync(t, before.next)
	if got := news.bodies(room); !slices.Equal(got, []string{"b31"}) {
		t.Fatalf("sync after b31: %v, want [b31]", got)
	}

	var want []string
	for i := 1; i <= 31; i++ {
		want = append(want, fmt.Sprintf("b%d", i))
	}
	if got := fs.pageBodies(t, room, 10); !slices.Equal(got, want) {
		t.Fatalf("/messages, 10 a page: %v, want %v", got, want)
	}
	var backfills []string
	for _, a := range gs.Asked() {
		if strings.HasPrefix(a, "GET /_matrix/federation/v1/backfill/") {
			backfills = append(backfills, a)
		}
	}
	if len(backfills) != 3 {
		t.Fatalf("/backfill asked %d times (%q), want 3: 10 events a page", len(backfills), backfills)
	}
	if got := fs.pageBodies(t, room, 7); !slices.Equal(got, want) {
		t.Fatalf("/messages again, 7 a page: %v, want %v", got, want)
	}
	if n := len(gs.Asked()); n != len(asked)+3 {
		t.Fatalf("the remote was asked %q after the gap was filled", gs.Asked()[len(asked)+3:])
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

// gapServer is bob's server as a fake homeserver over TLS on loopback: it
// serves its signing key, /get_missing_events (missing), /state_ids and
// /state (state), /event, /event_auth and /backfill (byID), and records
// what it was asked. rm sends as it.
// bobRoom is a public room of alice's on fs that bob, of gs's server,
// joined through /send: the set-up of the worker tests whose remote
// withholds events. build makes bob's server's next events in it.
type bobRoom struct {
	room, version string
	state         *events.State
	bob           string
	join          events.PDU
	depth         int64
	clock         time.Time
	signer        events.Signer
	// keep, if set, is given each event built: what the remote serves.
	keep func(events.PDU)
}

func newBobRoom(t *testing.T, gs *gapServer, fs *fedStack, keep func(events.PDU)) *bobRoom {
	t.Helper()
	room, version, state, ext, depth := fs.publicRoomTip(t)
	b := &bobRoom{room: room, version: version, state: state, bob: "@bob:" + gs.rm.Name, depth: depth,
		clock: time.Now(), signer: events.Signer{ServerName: gs.rm.Name, Key: gs.rm.Key}, keep: keep}
	b.join = b.build(t, events.Proto{Sender: b.bob, Type: "m.room.member", StateKey: &b.bob, Content: json.RawMessage(`{"membership":"join"}`)}, ext)
	if err := state.Add(b.join); err != nil {
		t.Fatal(err)
	}
	if r := gs.rm.send(t, fs.FedURL, "join", []json.RawMessage{b.join.JSON()}, nil); r.Status != 200 {
		t.Fatalf("send: %d %s", r.Status, r.Raw)
	}
	fs.work(t)
	return b
}

func (b *bobRoom) build(t *testing.T, p events.Proto, prev []string) events.PDU {
	t.Helper()
	b.depth++
	b.clock = b.clock.Add(time.Millisecond)
	p.RoomID = b.room
	ev, err := b.signer.Build(b.version, p, events.Graph{PrevEvents: prev, Depth: b.depth}, b.state, b.clock)
	if err != nil {
		t.Fatal(err)
	}
	if b.keep != nil {
		b.keep(ev)
	}
	return ev
}

// keep serves ev through /event and /event_auth.
func (gs *gapServer) keep(ev events.PDU) {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	gs.byID[ev.EventID()] = ev
}

type gapServer struct {
	rm      *remote
	mu      sync.Mutex
	missing []events.PDU
	state   []events.PDU
	byID    map[string]events.PDU
	asked   []string
}

func newGapServer(t *testing.T) *gapServer {
	t.Helper()
	k, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	gs := &gapServer{rm: &remote{Key: k}, byID: map[string]events.PDU{}}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/_matrix/key/v2/server" {
			doc, _ := json.Marshal(map[string]any{
				"server_name":    gs.rm.Name,
				"valid_until_ts": time.Now().Add(time.Hour).UnixMilli(),
				"verify_keys":    map[string]any{k.ID: map[string]string{"key": base64.RawStdEncoding.EncodeToString(k.Public())}},
			})
			signed, err := protocol.SignJSON(gs.rm.Name, k.ID, k.Private, doc)
			if err != nil {
				t.Error(err)
			}
			w.Write(signed)
			return
		}
		gs.mu.Lock()
		defer gs.mu.Unlock()
		gs.asked = append(gs.asked, r.Method+" "+r.URL.Path+" "+func() string { b, _ := json.Marshal(r.URL.Query()); return string(b) }())
		p := r.URL.Path
		switch {
		case strings.HasPrefix(p, "/_matrix/federation/v1/get_missing_events/"):
			var req struct {
				Limit int `json:"limit"`
			}
			_ = json.NewDecoder(r.Body).Decode(&req)
			gs.asked[len(gs.asked)-1] += fmt.Sprintf(` {"limit":%d}`, req.Limit)
			json.NewEncoder(w).Encode(map[string]any{"events": jsons(gs.missing)})
		case strings.HasPrefix(p, "/_matrix/federation/v1/state_ids/"):
			ids := []string{}
			for _, ev := range gs.state {
				ids = append(ids, ev.EventID())
			}
			json.NewEncoder(w).Encode(map[string]any{"pdu_ids": ids, "auth_chain_ids": []string{}})
		case strings.HasPrefix(p, "/_matrix/federation/v1/state/"):
			json.NewEncoder(w).Encode(map[string]any{"pdus": jsons(gs.state), "auth_chain": []any{}})
		case strings.HasPrefix(p, "/_matrix/federation/v1/event_auth/"):
			// The auth chain of the event named last, from byID.
			var chain []events.PDU
			seen := map[string]bool{}
			queue := []string{p[strings.LastIndex(p, "/")+1:]}
			for len(queue) > 0 {
				ev, ok := gs.byID[queue[0]]
				queue = queue[1:]
				if !ok {
					continue
				}
				for _, id := range ev.AuthEventIDs() {
					if a, ok := gs.byID[id]; ok && !seen[id] {
						seen[id] = true
						chain = append(chain, a)
						queue = append(queue, id)
					}
				}
			}
			json.NewEncoder(w).Encode(map[string]any{"auth_chain": jsons(chain)})
		case strings.HasPrefix(p, "/_matrix/federation/v1/event/"):
			ev, ok := gs.byID[strings.TrimPrefix(p, "/_matrix/federation/v1/event/")]
			if !ok {
				w.WriteHeader(http.StatusNotFound)
				w.Write([]byte(`{"errcode":"M_NOT_FOUND"}`))
				return
			}
			json.NewEncoder(w).Encode(map[string]any{"origin": gs.rm.Name, "origin_server_ts": 1, "pdus": jsons([]events.PDU{ev})})
		case strings.HasPrefix(p, "/_matrix/federation/v1/backfill/"):
			limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
			var out []events.PDU
			seen := map[string]bool{}
			queue := r.URL.Query()["v"]
			for len(queue) > 0 && len(out) < limit {
				id := queue[0]
				queue = queue[1:]
				ev, ok := gs.byID[id]
				if !ok || seen[id] {
					continue
				}
				seen[id] = true
				out = append(out, ev)
				queue = append(queue, ev.PrevEventIDs()...)
			}
			json.NewEncoder(w).Encode(map[string]any{"origin": gs.rm.Name, "origin_server_ts": time.Now().UnixMilli(), "pdus": jsons(out)})
		default:
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"errcode":"M_UNRECOGNIZED"}`))
		}
	}))
	t.Cleanup(srv.Close)
	gs.rm.Name = srv.Listener.Addr().String()
	return gs
}

// Asked returns the federation requests the server got.
func (gs *gapServer) Asked() []string {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	return slices.Clone(gs.asked)
}
