package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeMatrix is an in-process stand-in for a homeserver's endpoints the
// sync workloads use: registration, createRoom, join, send, and /sync with
// tokens that are positions in one list of events, long-polled.
type fakeMatrix struct {
	mu     sync.Mutex
	events []fakeEvent
	rooms  int
	news   chan struct{} // closed and replaced on every send
	syncs  int
	// sendDelay delays the answer to a send after the event is stored;
	// wakeDelay the answer of a waiting sync once it is woken.
	sendDelay, wakeDelay time.Duration
	// spurious is how many waiting syncs answer at once with nothing, as a
	// server does for news the bench does not look for.
	spurious int
}

type fakeEvent struct{ room, id, body string }

func newFakeMatrix(t *testing.T) (*fakeMatrix, *server) {
	f := &fakeMatrix{news: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_synapse/admin/v1/register", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"nonce":"n"}`)
	})
	mux.HandleFunc("POST /_synapse/admin/v1/register", func(w http.ResponseWriter, r *http.Request) {
		var body struct{ Username string }
		json.NewDecoder(r.Body).Decode(&body)
		fmt.Fprintf(w, `{"user_id":"@%s:fake","access_token":"tok-%s"}`, body.Username, body.Username)
	})
	mux.HandleFunc("POST /_matrix/client/v3/createRoom", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok-"+syncUserName {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		f.mu.Lock()
		f.rooms++
		n := f.rooms
		f.mu.Unlock()
		fmt.Fprintf(w, `{"room_id":"!r%d:fake"}`, n)
	})
	mux.HandleFunc("POST /_matrix/client/v3/join/{room}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{}`)
	})
	mux.HandleFunc("PUT /_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}", func(w http.ResponseWriter, r *http.Request) {
		var content struct{ Body string }
		json.NewDecoder(r.Body).Decode(&content)
		f.mu.Lock()
		id := "$" + strconv.Itoa(len(f.events))
		f.events = append(f.events, fakeEvent{room: r.PathValue("room"), id: id, body: content.Body})
		close(f.news)
		f.news = make(chan struct{})
		f.mu.Unlock()
		time.Sleep(f.sendDelay)
		fmt.Fprintf(w, `{"event_id":%q}`, id)
	})
	mux.HandleFunc("GET /_matrix/client/v3/sync", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok-"+syncUserName {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		from := 0
		if since := r.URL.Query().Get("since"); since != "" {
			from, _ = strconv.Atoi(strings.TrimPrefix(since, "s"))
		}
		timeout, _ := strconv.Atoi(r.URL.Query().Get("timeout"))
		f.mu.Lock()
		f.syncs++
		w.Header().Set("X-Request-Id", "sync-"+strconv.Itoa(f.syncs))
		spurious := timeout > 0 && f.spurious > 0
		if spurious {
			f.spurious--
		}
		news := f.news
		waiting := len(f.events) == from && timeout > 0 && !spurious
		f.mu.Unlock()
		if waiting {
			select {
			case <-news:
				time.Sleep(f.wakeDelay)
			case <-time.After(time.Duration(timeout) * time.Millisecond):
			}
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		type event struct {
			EventID string            `json:"event_id"`
			Type    string            `json:"type"`
			Content map[string]string `json:"content"`
		}
		join := map[string]map[string]map[string][]event{}
		if !spurious {
			for _, e := range f.events[from:] {
				if join[e.room] == nil {
					join[e.room] = map[string]map[string][]event{"timeline": {"events": nil}}
				}
				tl := join[e.room]["timeline"]
				tl["events"] = append(tl["events"], event{EventID: e.id, Type: "m.room.message", Content: map[string]string{"body": e.body}})
			}
			from = len(f.events)
		}
		json.NewEncoder(w).Encode(map[string]any{"next_batch": "s" + strconv.Itoa(from), "rooms": map[string]any{"join": join}})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	s := &server{Name: "fake", ClientURL: srv.URL, client: srv.Client(), userID: "@" + benchUser + ":fake", token: "tok-" + benchUser}
	return f, s
}

func TestSyncWorkloads_FakeServer(t *testing.T) {
	f, s := newFakeMatrix(t)
	ctx := context.Background()
	defer func(q time.Duration) { idleQuiet = q }(idleQuiet)
	idleQuiet = 0

	if err := ensureSync(ctx, s); err != nil {
		t.Fatalf("ensureSync: %v", err)
	}
	if len(s.sync.rooms) != syncRooms || len(f.events) != syncRooms*syncMessages || s.sync.token != "tok-"+syncUserName {
		t.Fatalf("set-up: %d rooms, %d messages, token %q", len(s.sync.rooms), len(f.events), s.sync.token)
	}

	r := measureEndpoint(ctx, []*server{s}, initialSync(), 10, 4, 5, 2)[0]
	if r.Failed != "" || r.Requests != min(10, initialSyncRequests) || r.Errors != 0 || r.Concurrency != 1 {
		t.Errorf("initial sync = %+v", r)
	}
	if want := fmt.Sprintf("%d joined rooms; timeline events per room: %d with %d;", syncRooms, syncRooms, syncMessages); !strings.HasPrefix(r.Note, want) {
		t.Errorf("initial sync note = %q, want it to start with %q", r.Note, want)
	}

	r = measureEndpoint(ctx, []*server{s}, incrementalSync(), 10, 4, 2, 2)[0]
	if r.Failed != "" || r.Requests != 10 || r.Errors != 0 {
		t.Errorf("incremental sync = %+v", r)
	}
	// Every iteration sent one message (and the first run one more), each
	// into the next room.
	if n := len(f.events) - syncRooms*syncMessages; n != 13 || f.events[len(f.events)-1].room == f.events[len(f.events)-2].room {
		t.Errorf("incremental sync sent %d messages, the last two into %s and %s", n, f.events[len(f.events)-2].room, f.events[len(f.events)-1].room)
	}

	// A server that answers waiting syncs at once with nothing, and answers
	// the send 50 ms after waking the sync.
	f.spurious, f.sendDelay = 3, 50*time.Millisecond
	r = measureEndpoint(ctx, []*server{s}, wakeUp(false), 6, 4, 1, 2)[0]
	if r.Failed != "" || r.Requests != 6 || r.Errors != 0 {
		t.Errorf("wake-up = %+v", r)
	}
	if r.P99MS != 0 || !strings.Contains(r.Note, "answered before the send did in 8 of 8 wake-ups") {
		t.Errorf("wake-up: p99 %v ms, note %q; want 0 ms and every sync first", r.P99MS, r.Note)
	}
	// A server that answers the send first, and the waiting sync 30 ms
	// after.
	f.sendDelay, f.wakeDelay = 0, 30*time.Millisecond
	s.sync.early, s.sync.wakeUps = 0, 0
	r = measureEndpoint(ctx, []*server{s}, wakeUp(false), 6, 4, 1, 2)[0]
	if r.Failed != "" || r.Errors != 0 || r.Note != "" || r.P50MS < 20 || r.P99MS > 1000 {
		t.Errorf("wake-up = %+v", r)
	}

	r = measureEndpoint(ctx, []*server{s}, idleSync(0), 10, 4, 2, 2)[0]
	if r.Failed != "" || r.Requests != 10 || r.Errors != 0 {
		t.Errorf("idle sync timeout=0 = %+v", r)
	}
	r = measureEndpoint(ctx, []*server{s}, idleSync(200*time.Millisecond), 2, 4, 0, 1)[0]
	if r.Failed != "" || r.Errors != 0 || r.P50MS < 200 {
		t.Errorf("idle sync timeout=200 = %+v", r)
	}
	// News while the bench expects none is an error, not a measurement.
	if _, err := sendText(ctx, s, s, s.sync.rooms[3], sentBody); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runIdle(ctx, s, 0); err == nil || !strings.Contains(err.Error(), "not idle: the answer holds 1 timeline events") {
		t.Errorf("runIdle after a message: %v", err)
	}
}

func TestSyncWorkloads_Failures(t *testing.T) {
	_, s := newFakeMatrix(t)
	ctx := context.Background()
	s.userID = "" // as when the bench user could not be registered
	rs := measureEndpoint(ctx, []*server{s}, incrementalSync(), 5, 1, 0, 1)
	if rs[0].Failed != "set up the sync user's rooms: no bench user" {
		t.Errorf("without a bench user: %+v", rs[0])
	}
	// The set-up is tried once: the next workload fails with the same error.
	rs = measureEndpoint(ctx, []*server{s}, wakeUp(false), 5, 1, 0, 1)
	if rs[0].Failed != "set up the sync user's rooms: no bench user" {
		t.Errorf("second workload: %+v", rs[0])
	}

	broken := &server{Name: "dendrite", startErr: errors.New("start dendrite: boom")}
	rs = measureEndpoint(ctx, []*server{broken}, idleSync(0), 5, 1, 0, 1)
	if len(rs) != 1 || rs[0].Server != "dendrite" || rs[0].Failed != "start dendrite: boom" {
		t.Errorf("on a server that did not start: %+v", rs)
	}
}

func TestCheckInitialSync(t *testing.T) {
	s := &server{sync: syncFixture{rooms: []string{"!a:x", "!b:x"}}}
	msg := func(body string) string {
		return `{"event_id":"$e","type":"m.room.message","content":{"msgtype":"m.text","body":"` + body + `"}}`
	}
	room := func(events ...string) string {
		return `{"timeline":{"events":[` + strings.Join(events, ",") + `]},"state":{"events":[]}}`
	}
	for _, tt := range []struct {
		name, body, wantErr, wantNote string
	}{
		{"Good", `{"next_batch":"s1","rooms":{"join":{"!a:x":` + room(msg(sentBody), msg(sentBody)) + `,"!b:x":` + room(msg(sentBody)) + `,"!c:x":` + room() + `}}}`,
			"", "3 joined rooms; timeline events per room: 1 with 1, 1 with 2;"},
		{"MissingRoom", `{"next_batch":"s1","rooms":{"join":{"!a:x":` + room(msg(sentBody)) + `}}}`, "room !b:x is not among the 1 joined rooms", ""},
		{"NoMessage", `{"next_batch":"s1","rooms":{"join":{"!a:x":` + room(msg(sentBody)) + `,"!b:x":` + room(msg("other")) + `}}}`, "the timeline of room !b:x holds none of the messages sent", ""},
		{"NoToken", `{"rooms":{"join":{}}}`, "no next_batch", ""},
		{"NotJSON", `<html>`, "decode the sync answer", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s.sync.timeline = ""
			err := checkInitialSync(s, []byte(tt.body))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("checkInitialSync = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("checkInitialSync = %v, want an error with %q", err, tt.wantErr)
			}
			if !strings.HasPrefix(s.sync.timeline, tt.wantNote) || (tt.wantNote == "") != (s.sync.timeline == "") {
				t.Errorf("note = %q, want %q...", s.sync.timeline, tt.wantNote)
			}
		})
	}
}

func TestSyncURL(t *testing.T) {
	if got, want := syncURL("http://c", "", 0), "http://c/_matrix/client/v3/sync?timeout=0"; got != want {
		t.Errorf("syncURL = %q, want %q", got, want)
	}
	if got, want := syncURL("http://c", "s_1+2/3", 20*time.Second), "http://c/_matrix/client/v3/sync?since=s_1%2B2%2F3&timeout=20000"; got != want {
		t.Errorf("syncURL = %q, want %q", got, want)
	}
}

func TestFirstError(t *testing.T) {
	if err := firstError([]error{nil, nil}); err != nil {
		t.Errorf("no errors: %v", err)
	}
	boom := errors.New("boom")
	if err := firstError([]error{nil, boom}); err != boom {
		t.Errorf("one error: %v", err)
	}
	err := firstError([]error{boom, nil, errors.New("b"), errors.New("c")})
	if !errors.Is(err, boom) || err.Error() != "boom (and 2 more errors)" {
		t.Errorf("three errors: %v", err)
	}
}

func TestSummariseSync(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	idle := func(timeout time.Duration, calls, rcu float64) result {
		return result{Endpoint: idleSync(timeout).name(), Server: "cirrus", P50MS: 1, P99MS: 1, PerSecond: 1, Calls: f(calls), RCU: f(rcu), WCU: f(0)}
	}
	wake := func(twoInstances bool, p99 float64) result {
		return result{Endpoint: wakeUp(twoInstances).name(), Server: "cirrus", P50MS: 1, P99MS: p99, PerSecond: 1}
	}
	results := []result{idle(0, 2, 1.5), idle(idleTimeout, 5, 3), wake(false, 3), wake(true, 1180)}
	sum := summariseSync(results, time.Second)
	if sum.Missing != "" || sum.PollsPerIdle == nil || *sum.PollsPerIdle != 4 || *sum.RCUPerPoll != 0.5 || *sum.OtherRCU != 1 || *sum.IdleRCU != 3 {
		t.Fatalf("summariseSync = %+v", sum)
	}
	gs := syncGoals(results, sum)
	want := []goal{
		{Name: "sync wake-up: p99 ms (cirrus)", Target: "<= 1100", Value: f(3), Met: true},
		{Name: "sync wake-up, 2 instances: p99 ms (cirrus)", Target: "<= 1100", Value: f(1180)},
		{Name: "idle sync: RCU per poll (cirrus)", Target: "<= 0.5", Value: f(0.5), Met: true},
	}
	checkGoals(t, gs, want)

	// 1.5 RCU more over 2 more polls: 0.75 a poll.
	sum = summariseSync([]result{idle(0, 2, 1.5), idle(idleTimeout, 4, 3), wake(false, 2)}, 500*time.Millisecond)
	checkGoals(t, syncGoals(nil, sum), []goal{
		{Name: "sync wake-up: p99 ms (cirrus)", Target: "<= 600", Missing: "cirrus not measured"},
		{Name: "sync wake-up, 2 instances: p99 ms (cirrus)", Target: "<= 600", Missing: "cirrus not measured"},
		{Name: "idle sync: RCU per poll (cirrus)", Target: "<= 0.5", Value: f(0.75)},
	})

	for _, tt := range []struct {
		name    string
		results []result
		missing string
	}{
		{"NoIdle", nil, "cirrus not measured"},
		{"Failed", []result{{Endpoint: idleSync(idleTimeout).name(), Server: "cirrus", Failed: "x"}, idle(0, 2, 1.5)}, "cirrus failed"},
		{"NoTimeout0", []result{idle(idleTimeout, 5, 3)}, "cirrus not measured"},
		{"NoLog", []result{{Endpoint: idleSync(idleTimeout).name(), Server: "cirrus", P50MS: 1, P99MS: 1, PerSecond: 1}, idle(0, 2, 1.5)}, "no request log line matched"},
		{"NoMoreCalls", []result{idle(0, 2, 1.5), idle(idleTimeout, 2, 1.5)}, "made no more DynamoDB calls than with timeout 0"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sum := summariseSync(tt.results, time.Second)
			if !strings.Contains(sum.Missing, tt.missing) || sum.RCUPerPoll != nil {
				t.Errorf("summariseSync = %+v, want missing %q", sum, tt.missing)
			}
			g := syncGoals(tt.results, sum)[2]
			if g.Value != nil || g.Missing != sum.Missing {
				t.Errorf("goal = %s", goalString(g))
			}
		})
	}
}

func checkGoals(t *testing.T, got, want []goal) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d goals, want %d: %+v", len(got), len(want), got)
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Name != w.Name || g.Target != w.Target || g.Met != w.Met || g.Missing != w.Missing ||
			(g.Value == nil) != (w.Value == nil) || (g.Value != nil && math.Abs(*g.Value-*w.Value) > 1e-9) {
			t.Errorf("goal %d = %s, want %s", i, goalString(g), goalString(w))
		}
	}
}

func TestPrintTable_Sync(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	rep := &report{Requests: 50, Concurrency: 4, Rounds: 5, Results: []result{
		{Endpoint: "initial sync (50 rooms)", Server: "cirrus", Concurrency: 1, Requests: 5, P50MS: 900, P99MS: 1000, PerSecond: 1, Calls: f(504), RCU: f(955), WCU: f(0), Note: "50 joined rooms; timeline events per room: 50 with 10; 300000 bytes"},
		{Endpoint: "initial sync (50 rooms)", Server: "dendrite", Concurrency: 1, Requests: 5, P50MS: 150, P99MS: 200, PerSecond: 6},
		{Endpoint: "sync wake-up", Server: "cirrus", Concurrency: 1, Requests: 40, P50MS: 2, P99MS: 5, PerSecond: 8, Calls: f(7), RCU: f(7), WCU: f(0)},
		{Endpoint: "sync wake-up", Server: "dendrite", Concurrency: 1, Requests: 40, P50MS: 0, P99MS: 14, PerSecond: 8, Note: "the waiting sync answered before the send did in 30 of 51 wake-ups, warm-up included (counted as 0 ms)"},
		{Endpoint: "idle sync timeout=0", Server: "cirrus", Concurrency: 1, Requests: 100, P50MS: 6, P99MS: 7, PerSecond: 150, Calls: f(2), RCU: f(1.5), WCU: f(0)},
		{Endpoint: "idle sync timeout=3000", Server: "cirrus", Concurrency: 1, Requests: 4, P50MS: 3090, P99MS: 3095, PerSecond: 0.3, Calls: f(5), RCU: f(3), WCU: f(0)},
		{Endpoint: "idle sync timeout=3000", Server: "dendrite", Concurrency: 1, Failed: "start dendrite: boom"},
		{Endpoint: "sync wake-up, 2 instances", Server: "cirrus", Concurrency: 1, Failed: "start the syncing instance: exited"},
	}}
	rep.Sync = summariseSync(rep.Results, time.Second)
	rep.Goals = append(goals(rep.Results), syncGoals(rep.Results, rep.Sync)...)
	var b strings.Builder
	printTable(&b, rep)
	out := b.String()
	for _, want := range []string{
		"initial sync (50 rooms)                  cirrus       1        5      0  900.000 1000.000         1     504.00       —   955.00     0.00    6.00x    5.00x      0.17x",
		"sync wake-up                             dendrite     1       40      0    0.000   14.000         8        n/a",
		"idle sync timeout=3000                   dendrite     1 FAILED (see below)",
		"initial sync (50 rooms) on cirrus: 50 joined rooms; timeline events per room: 50 with 10; 300000 bytes",
		"sync wake-up on dendrite: the waiting sync answered before the send did in 30 of 51 wake-ups",
		"sync wake-up, 2 instances: the same, with the sync waiting on one cirrus serve and the message sent to another",
		"FAILED on cirrus sync wake-up, 2 instances: start the syncing instance: exited",
		"sync: Cirrus runs with sync.poll_interval_ms = 1000",
		"wake-up in one process: cirrus serve wakes a waiting sync as soon as it stores the message: cirrus p50 2.0 ms, p99 5.0 ms (the woken sync: 7.0 DynamoDB calls, 7.00 RCU); dendrite p50 0.0 ms, p99 14.0 ms",
		"a sync waiting on another instance reads its stream every 1000 ms, so it finds a message at most 1000 ms after it is stored, plus a read and its answer: cirrus failed",
		"idle sync, timeout 3000 ms, nothing new: 3.00 RCU in 5.00 DynamoDB calls per request: 4.00 polls (stream reads; timeout / interval = 3, and the first read) of 0.50 RCU each, and 1.00 RCU besides (the access token)",
		"sync wake-up: p99 ms (cirrus)                    5.00   target <= 1100 met",
		"sync wake-up, 2 instances: p99 ms (cirrus)        n/a   target <= 1100 NOT MEASURED: cirrus failed",
		"idle sync: RCU per poll (cirrus)                 0.50   target <= 0.5  met",
		"send c=1: room WCU per message (cirrus)           n/a   target <= 3    NOT MEASURED: cirrus not measured",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("printTable output lacks %q; it is:\n%s", want, out)
		}
	}
}
