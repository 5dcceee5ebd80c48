package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ramp := func(n int) []time.Duration {
		d := make([]time.Duration, n)
		for i := range d {
			d[i] = time.Duration(n-i) * time.Millisecond // descending: percentile sorts
		}
		return d
	}
	for _, tt := range []struct {
		n    int
		p    float64
		want time.Duration
	}{
		{0, 0.5, 0},
		{1, 0.99, 1 * time.Millisecond},
		{100, 0.50, 50 * time.Millisecond},
		{100, 0.99, 99 * time.Millisecond},
		{200, 0.99, 198 * time.Millisecond},
		{500, 0.99, 495 * time.Millisecond},
		{3, 0.50, 2 * time.Millisecond},
		{10, 1, 10 * time.Millisecond},
	} {
		d := ramp(tt.n)
		if got := percentile(d, tt.p); got != tt.want {
			t.Errorf("percentile(1..%d ms, %v) = %v, want %v", tt.n, tt.p, got, tt.want)
		}
		if tt.n > 1 && d[0] != time.Duration(tt.n)*time.Millisecond {
			t.Errorf("percentile reordered its input")
		}
	}
}

func TestRequestLog_Match(t *testing.T) {
	l := newRequestLog("")
	line := func(id string, calls int, rcu, wcu, dur float64) string {
		return fmt.Sprintf(`{"time":"2026-01-01T00:00:00Z","level":"INFO","msg":"request","request_id":%q,"method":"GET","route":"GET /x","path":"/x","status":200,"bytes":2,"duration_ms":%v,"dynamodb":{"calls":%d,"rcu":%v,"wcu":%v}}`+"\n", id, dur, calls, rcu, wcu)
	}
	// Lines arrive in arbitrary chunks, with the banner and other messages.
	text := "\nCirrus is running.\n" + line("a", 1, 0.5, 0, 0.2) + `{"level":"INFO","msg":"stopped"}` + "\n" +
		line("b", 3, 1.5, 2, 0.4) + line("c", 0, 0, 0, 9)
	for len(text) > 0 {
		k := min(7, len(text))
		l.Write([]byte(text[:k]))
		text = text[k:]
	}
	l.Write([]byte(`{"msg":"request","request_id":"partial"`)) // no newline yet: not seen

	found, missing := l.match([]string{"a", "b", "partial", "nope"}, 0)
	if len(found) != 2 || missing != 2 {
		t.Fatalf("match: found %d, missing %d; want 2 and 2", len(found), missing)
	}
	sum, p50 := summarise(found)
	if sum != (usage{Calls: 4, RCU: 2, WCU: 2}) {
		t.Errorf("summarise usage = %+v, want calls 4, rcu 2, wcu 2", sum)
	}
	if p50 == nil || *p50 != 0.2 {
		t.Errorf("summarise p50 = %v, want 0.2", p50)
	}
	if e, ok := l.lookup("c"); !ok || e.Status != 200 || e.Route != "GET /x" || e.DurationMS != 9 {
		t.Errorf("lookup(c) = %+v, %v", e, ok)
	}
	if got := l.recent(); !strings.Contains(got, "Cirrus is running.") || !strings.Contains(got, `"stopped"`) || strings.Contains(got, `"request_id":"a"`) {
		t.Errorf("recent() = %q, want the non-request lines only", got)
	}
}

func TestParseVmHWM(t *testing.T) {
	status := "Name:\tcirrus\nVmPeak:\t 1300000 kB\nVmHWM:\t   21316 kB\nVmRSS:\t   20000 kB\n"
	got, err := parseStatusKB([]byte(status), "VmHWM")
	if err != nil || got != 21316*1024 {
		t.Errorf("parseStatusKB VmHWM = %d, %v; want %d", got, err, 21316*1024)
	}
	if _, err := parseStatusKB([]byte("Name:\tx\n"), "VmHWM"); err == nil {
		t.Error("parseStatusKB without VmHWM: no error")
	}
}

func TestRatios(t *testing.T) {
	rs := ratios([]result{
		{Endpoint: "/a", Server: "cirrus", P50MS: 1, P99MS: 3, PerSecond: 300},
		{Endpoint: "/a", Server: "dendrite", P50MS: 2, P99MS: 2, PerSecond: 100},
		{Endpoint: "/b", Server: "cirrus", P50MS: 1, P99MS: 1, PerSecond: 1}, // no baseline: no ratio
		{Endpoint: "/c", Server: "cirrus", Failed: "no bench room"},          // failed: no ratio
		{Endpoint: "/c", Server: "dendrite", P50MS: 2, P99MS: 2, PerSecond: 100},
		{Endpoint: "/d", Server: "cirrus", P50MS: 2, P99MS: 2, PerSecond: 100},
		{Endpoint: "/d", Server: "dendrite", Failed: "all 5 requests failed"},
	})
	if len(rs) != 1 || rs[0] != (ratio{Endpoint: "/a", P50: 0.5, P99: 1.5, PerSecond: 3}) {
		t.Errorf("ratios = %+v", rs)
	}
}

func TestGoals(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	measured := func(endpoint, server string, perSecond float64, wcu *float64) result {
		return result{Endpoint: endpoint, Server: server, P50MS: 1, P99MS: 2, PerSecond: perSecond, WCU: wcu}
	}
	for _, tt := range []struct {
		name    string
		results []result
		want    []goal
	}{
		{
			name: "Met",
			results: []result{
				measured("send c=1", "cirrus", 500, f(4+indexWritesPerMessage)),
				measured("send c=8", "cirrus", 1000, f(5+indexWritesPerMessage)),
				measured("send c=8", "dendrite", 200, nil),
			},
			want: []goal{
				{Name: "send c=1: room WCU per message (cirrus)", Target: "<= 3", Value: f(2), Met: true},
				{Name: "send c=8: room WCU per message (cirrus)", Target: "<= 3", Value: f(3), Met: true},
				{Name: "send c=8: req/s cirrus / dendrite", Target: ">= 5x", Value: f(5), Met: true},
			},
		},
		{
			name: "NotMet",
			results: []result{
				measured("send c=1", "cirrus", 500, f(5.5+indexWritesPerMessage)),
				measured("send c=8", "cirrus", 900, f(6+indexWritesPerMessage)),
				measured("send c=8", "dendrite", 200, nil),
			},
			want: []goal{
				{Name: "send c=1: room WCU per message (cirrus)", Target: "<= 3", Value: f(3.5)},
				{Name: "send c=8: room WCU per message (cirrus)", Target: "<= 3", Value: f(4)},
				{Name: "send c=8: req/s cirrus / dendrite", Target: ">= 5x", Value: f(4.5)},
			},
		},
		{
			name: "CirrusFailed",
			results: []result{
				{Endpoint: "send c=1", Server: "cirrus", Failed: "no bench room"},
				{Endpoint: "send c=8", Server: "cirrus", Failed: "no bench room"},
				measured("send c=8", "dendrite", 200, nil),
			},
			want: []goal{
				{Name: "send c=1: room WCU per message (cirrus)", Target: "<= 3", Missing: "cirrus failed"},
				{Name: "send c=8: room WCU per message (cirrus)", Target: "<= 3", Missing: "cirrus failed"},
				{Name: "send c=8: req/s cirrus / dendrite", Target: ">= 5x", Missing: "cirrus failed"},
			},
		},
		{
			name: "NoBaselineNoLog",
			results: []result{
				measured("send c=1", "cirrus", 500, nil),
				measured("send c=8", "cirrus", 900, f(4+indexWritesPerMessage)),
			},
			want: []goal{
				{Name: "send c=1: room WCU per message (cirrus)", Target: "<= 3", Missing: "no request log line matched"},
				{Name: "send c=8: room WCU per message (cirrus)", Target: "<= 3", Value: f(2), Met: true},
				{Name: "send c=8: req/s cirrus / dendrite", Target: ">= 5x", Missing: "dendrite not measured"},
			},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := goals(tt.results)
			if len(got) != len(tt.want) {
				t.Fatalf("goals = %d goals, want %d: %+v", len(got), len(tt.want), got)
			}
			for i := range got {
				g, w := got[i], tt.want[i]
				if g.Name != w.Name || g.Target != w.Target || g.Met != w.Met || g.Missing != w.Missing ||
					(g.Value == nil) != (w.Value == nil) || (g.Value != nil && math.Abs(*g.Value-*w.Value) > 1e-9) {
					t.Errorf("goal %d = %s, want %s", i, goalString(g), goalString(w))
				}
			}
		})
	}
}

func goalString(g goal) string {
	v := "nil"
	if g.Value != nil {
		v = fmt.Sprint(*g.Value)
	}
	return fmt.Sprintf("{%q %q value %s met %v missing %q}", g.Name, g.Target, v, g.Met, g.Missing)
}

func TestPrintTable_RoomWorkloads(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	rep := &report{Requests: 50, Concurrency: 4, Rounds: 5, Results: []result{
		{Endpoint: "send c=8", Server: "cirrus", Concurrency: 8, Failed: "no bench room: create the room: POST http://x/_matrix/client/v3/createRoom: status 404 M_UNRECOGNIZED: Unrecognized request"},
		{Endpoint: "send c=8", Server: "dendrite", Concurrency: 8, Requests: 50, P50MS: 20, P99MS: 40, PerSecond: 390.4},
		{Endpoint: "messages 100", Server: "cirrus", Concurrency: 4, Requests: 50, Errors: 50, Failed: "all 50 requests failed", FirstError: "GET x: status 500"},
		{Endpoint: "send c=1", Server: "cirrus", Concurrency: 1, Requests: 50, P50MS: 1, P99MS: 2, PerSecond: 900, WCU: f(4.5 + indexWritesPerMessage)},
		{Endpoint: "send c=1", Server: "dendrite", Concurrency: 1, Requests: 50, P50MS: 4, P99MS: 4, PerSecond: 300},
	}}
	rep.Goals = goals(rep.Results)
	var b strings.Builder
	printTable(&b, rep)
	out := b.String()
	for _, want := range []string{
		"send c=8                                 cirrus       8 FAILED (see below)",
		"send c=8                                 dendrite     8       50      0   20.000   40.000       390",
		fmt.Sprintf("send c=1                                 cirrus       1       50      0    1.000    2.000       900        n/a     n/a      n/a %8.2f    0.25x    0.50x      3.00x", 4.5+indexWritesPerMessage),
		"FAILED on cirrus send c=8: no bench room: create the room: POST http://x/_matrix/client/v3/createRoom: status 404 M_UNRECOGNIZED: Unrecognized request",
		"FAILED on cirrus messages 100: all 50 requests failed, the first: GET x: status 500",
		"send c=1: PUT /_matrix/client/v3/rooms/{roomId}/send/m.room.message/{txnId} in a private room of two members",
		"messages 100: GET /_matrix/client/v3/rooms/{roomId}/messages?dir=b&limit=100 in a private room of two members, with the bench user's token, after 100 more messages",
		"send c=1: room WCU per message (cirrus)          2.50   target <= 3    met",
		"send c=8: room WCU per message (cirrus)           n/a   target <= 3    NOT MEASURED: cirrus failed",
		"send c=8: req/s cirrus / dendrite                 n/a   target >= 5x   NOT MEASURED: cirrus failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("printTable output lacks %q; it is:\n%s", want, out)
		}
	}
}

func TestEndpointURL(t *testing.T) {
	s := &server{ClientURL: "http://c", FederationURL: "https://f", room: benchRoom{ID: "!abc/def:localhost"}}
	for _, tt := range []struct {
		ep   endpoint
		want string
	}{
		{endpoint{Path: "/_matrix/client/versions"}, "http://c/_matrix/client/versions"},
		{endpoint{Path: "/_matrix/key/v2/server", Federation: true}, "https://f/_matrix/key/v2/server"},
		{sendMessage(8), "http://c/_matrix/client/v3/rooms/%21abc%2Fdef:localhost/send/m.room.message/{txnId}"},
		{roomMessages(messagesLimit), "http://c/_matrix/client/v3/rooms/%21abc%2Fdef:localhost/messages?dir=b&limit=100"},
	} {
		if got := endpointURL(s, tt.ep); got != tt.want {
			t.Errorf("endpointURL(%s) = %q, want %q", tt.ep.Path, got, tt.want)
		}
	}
}

func TestSend_TxnIDs(t *testing.T) {
	var mu sync.Mutex
	seen := make(map[string]bool)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" || r.Method != http.MethodPut {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if seen[r.URL.Path] {
			w.WriteHeader(http.StatusConflict)
			return
		}
		seen[r.URL.Path] = true
		w.Header().Set("X-Request-Id", "id-"+r.URL.Path)
		fmt.Fprint(w, `{"event_id":"$e"}`)
	}))
	defer srv.Close()
	s := &server{ClientURL: srv.URL, client: srv.Client(), token: "tok", room: benchRoom{ID: "!r:x"}}
	ep := sendMessage(8)
	l := load(context.Background(), s, ep, endpointURL(s, ep), 40, ep.Concurrency)
	if l.errors != 0 || len(l.ids) != 40 || len(seen) != 40 {
		t.Errorf("40 sends: %d errors (first %v), %d request IDs, %d distinct paths; want 0, 40, 40", l.errors, l.firstErr, len(l.ids), len(seen))
	}
	for path := range seen {
		if strings.Contains(path, "{txnId}") || !strings.HasPrefix(path, "/_matrix/client/v3/rooms/!r:x/send/m.room.message/bench-") {
			t.Errorf("sent to %q", path)
		}
	}
}

func TestMeasureEndpoint_Failures(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/missing") {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`)
			return
		}
		fmt.Fprint(w, `{}`)
	}))
	defer srv.Close()
	roomless := &server{Name: "cirrus", ClientURL: srv.URL, client: srv.Client(), room: benchRoom{Err: errors.New("create the room: 404")}}
	ready := &server{Name: "dendrite", ClientURL: srv.URL, client: srv.Client(), room: benchRoom{ID: "!r:x"}}
	servers := []*server{roomless, ready}
	ctx := context.Background()

	rs := measureEndpoint(ctx, servers, endpoint{Label: "room", Path: "/rooms/{roomId}/x", Concurrency: 2}, 10, 4, 2, 3)
	if len(rs) != 2 || rs[0].Server != "cirrus" || rs[0].Failed != "no bench room: create the room: 404" || rs[0].Concurrency != 2 {
		t.Errorf("room endpoint on the roomless server = %+v", rs[0])
	}
	if rs[1].Server != "dendrite" || rs[1].Failed != "" || rs[1].Requests != 10 || rs[1].Errors != 0 || rs[1].Concurrency != 2 {
		t.Errorf("room endpoint on the ready server = %+v", rs[1])
	}

	rs = measureEndpoint(ctx, servers, endpoint{Path: "/missing"}, 10, 4, 2, 3)
	want := "first request: GET " + srv.URL + "/missing: status 404 M_UNRECOGNIZED: Unrecognized request"
	for _, r := range rs {
		if r.Failed != want || r.Requests != 0 {
			t.Errorf("missing endpoint on %s: failed %q, want %q", r.Server, r.Failed, want)
		}
	}
}

func TestRequestLog_File(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cirrus.log")
	l := newRequestLog(path)
	if _, missing := l.match([]string{"x"}, 0); missing != 1 { // no file yet
		t.Fatalf("match before the file exists: missing %d", missing)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString(`{"msg":"request","request_id":"x","status":200,"dynamodb":{"calls":1,"rcu":0.5,"wcu":1}}` + "\n" + `{"msg":"request","request_id":"y"`)
	if found, missing := l.match([]string{"x", "y"}, 0); len(found) != 1 || missing != 1 {
		t.Fatalf("first read: found %d, missing %d", len(found), missing)
	}
	f.WriteString(`,"status":200,"dynamodb":{"calls":2,"rcu":0,"wcu":0}}` + "\n")
	found, missing := l.match([]string{"x", "y"}, 0)
	if missing != 0 || found[1].DynamoDB.Calls != 2 {
		t.Fatalf("second read: found %+v, missing %d", found, missing)
	}
}

func TestCheckMessages(t *testing.T) {
	chunk := func(n int, last string) string {
		events := make([]string, n)
		for i := range events {
			events[i] = `{"type":"m.room.message","content":{"msgtype":"m.text","body":"` + sentBody + `"}}`
		}
		if n > 0 && last != "" {
			events[n-1] = last
		}
		return `{"chunk":[` + strings.Join(events, ",") + `],"start":"s","end":"e"}`
	}
	for _, tt := range []struct {
		name, body, wantErr string
	}{
		{"Full", chunk(100, ""), ""},
		{"Short", chunk(99, ""), "the chunk holds 99 events, want 100"},
		{"Empty", `{"chunk":[]}`, "the chunk holds 0 events, want 100"},
		{"StateEvent", chunk(100, `{"type":"m.room.member","content":{"membership":"join"}}`), `event 99 of the chunk is m.room.member ""`},
		{"NotJSON", "<html>", "decode the answer"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := checkMessages([]byte(tt.body), messagesLimit)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("checkMessages = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("checkMessages = %v, want an error with %q", err, tt.wantErr)
			}
		})
	}
}
