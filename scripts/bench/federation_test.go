package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestRequestLog_Jobs checks that queue job lines are kept apart from
// request lines, in order, and that jobsSince returns those after a count.
func TestRequestLog_Jobs(t *testing.T) {
	l := newRequestLog("")
	job := func(kind string, calls int, rcu, wcu float64) string {
		return fmt.Sprintf(`{"time":"2026-01-01T00:00:00Z","level":"INFO","msg":"job","kind":%q,"message_id":"m","ok":true,"duration_ms":1.5,"dynamodb":{"calls":%d,"rcu":%v,"wcu":%v}}`+"\n", kind, calls, rcu, wcu)
	}
	request := `{"msg":"request","request_id":"r","route":"GET /x","status":200,"dynamodb":{"calls":9,"rcu":9,"wcu":9}}` + "\n"
	l.Write([]byte(job("federation.inbox", 1, 0.5, 2) + request + "not json\n"))
	if n := l.jobCount(); n != 1 {
		t.Fatalf("jobCount = %d, want 1", n)
	}
	l.Write([]byte(job("federation.inbox", 4, 1, 10) + job("federation.send", 2, 0.5, 1)))
	jobs := l.jobsSince(1, 0)
	if len(jobs) != 2 {
		t.Fatalf("jobsSince(1) = %+v, want the two later jobs", jobs)
	}
	if sum, _ := summarise(jobs); sum != (usage{Calls: 6, RCU: 1.5, WCU: 11}) {
		t.Errorf("the later jobs' usage = %+v, want calls 6, rcu 1.5, wcu 11", sum)
	}
	before := map[string]tally{"job federation.inbox": {Lines: 1, Sum: usage{Calls: 1, RCU: 0.5, WCU: 2}}}
	inbox := since(before, l.snapshot(0), func(k string) bool { return k == "job federation.inbox" })
	if inbox != (tally{Lines: 1, Sum: usage{Calls: 4, RCU: 1, WCU: 10}}) {
		t.Errorf("the inbox jobs since the first = %+v, want the second alone", inbox)
	}
	if r := since(nil, l.snapshot(0), func(k string) bool { return k == "GET /x" }); r != (tally{Lines: 1, Sum: usage{Calls: 9, RCU: 9, WCU: 9}}) {
		t.Errorf("the GET /x lines = %+v, want the request's", r)
	}
	if got := jobKinds(l.jobsSince(0, 0)); got != "2 federation.inbox, 1 federation.send" {
		t.Errorf("jobKinds = %q", got)
	}
	if _, ok := l.lookup("r"); !ok {
		t.Error("the request line is not indexed")
	}
	if got := l.recent(); !strings.Contains(got, "not json") || strings.Contains(got, `"job"`) {
		t.Errorf("recent() = %q, want the other lines only", got)
	}
}

// TestMeasureInbound_Cirrus runs the inbound workload against a Cirrus
// stack with serve's in-process queue: the fake remote joins through
// make_join and send_join, and its transactions end up in the room's
// /messages, in order, after the warm-up message.
func TestMeasureInbound_Cirrus(t *testing.T) {
	st, fedURL := servertest.StartNamed(t, "CIRRUS_REGISTRATION_SHARED_SECRET="+benchSecret)
	st.RunQueue(t)
	ctx := context.Background()
	s := &server{Name: "cirrus", ClientURL: st.URL, FederationURL: fedURL, serverName: st.Name(), client: newHTTPClient()}
	if err := setupUser(ctx, s); err != nil {
		t.Fatal(err)
	}
	rm, err := startFakeRemote()
	if err != nil {
		t.Fatal(err)
	}
	defer rm.close()

	const txns = 2
	down := &server{Name: "dendrite", startErr: errors.New("start dendrite: no binary")}
	rs := measureInbound(ctx, []*server{s, down}, rm, txns, 2)
	if len(rs) != 2 || rs[1].Server != "dendrite" || rs[1].Failed != "start dendrite: no binary" {
		t.Fatalf("results %+v, want cirrus's and the failed dendrite's", rs)
	}
	r := rs[0]
	if r.Failed != "" {
		t.Fatalf("inbound workload failed: %s", r.Failed)
	}
	if r.Requests != txns || r.PerSecond <= 0 || r.P50MS <= 0 || r.Calls != nil {
		t.Errorf("result %+v: want %d transactions with figures, no DynamoDB figures without a log", r, txns)
	}

	rooms := joinedRooms(t, s)
	if len(rooms) != 1 {
		t.Fatalf("the bench user is in %v, want the workload's room", rooms)
	}
	var page struct {
		Chunk []struct {
			Type    string `json:"type"`
			Sender  string `json:"sender"`
			Content struct {
				Body string `json:"body"`
			} `json:"content"`
		} `json:"chunk"`
	}
	u := s.ClientURL + "/_matrix/client/v3/rooms/" + url.PathEscape(rooms[0]) + "/messages?dir=b&limit=200"
	if err := requestJSON(ctx, s, http.MethodGet, u, s.token, nil, &page); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range page.Chunk {
		if e.Type == "m.room.message" && e.Sender == "@inbound:"+rm.name {
			got = append(got, e.Content.Body)
		}
	}
	// Newest first: the measured transactions' messages 49 to 0, twice,
	// then the warm-up's.
	var want []string
	for range txns {
		for i := pdusPerTxn - 1; i >= 0; i-- {
			want = append(want, fmt.Sprintf("%s %d", sentBody, i))
		}
	}
	want = append(want, sentBody+" 0")
	if !slices.Equal(got, want) {
		t.Errorf("the remote's %d messages in /messages, newest first, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
}

// joinedRooms lists the rooms the bench user of s is in.
func joinedRooms(t *testing.T, s *server) []string {
	t.Helper()
	var ans struct {
		Rooms []string `json:"joined_rooms"`
	}
	if err := requestJSON(context.Background(), s, http.MethodGet, s.ClientURL+"/_matrix/client/v3/joined_rooms", s.token, nil, &ans); err != nil {
		t.Fatal(err)
	}
	return ans.Rooms
}

// TestPrintTable_Federation checks that the federation workloads' rows come
// after the others with their ratios, and their notes and descriptions.
func TestPrintTable_Federation(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	rep := &report{Requests: 20, Concurrency: 4, Rounds: 1, Results: []result{
		{Endpoint: "send c=1", Server: "cirrus", Concurrency: 1, Requests: 20, P50MS: 1, P99MS: 2, PerSecond: 900},
		{Endpoint: inboundLabel, Server: "cirrus", Concurrency: 1, Requests: 2, P50MS: 50, P99MS: 90, PerSecond: 80, Calls: f(4), RCU: f(0.5), WCU: f(19), Note: "100 PDUs in 2 transactions"},
		{Endpoint: inboundLabel, Server: "dendrite", Concurrency: 1, Requests: 2, P50MS: 100, P99MS: 90, PerSecond: 40},
		{Endpoint: delivery().name(), Server: "cirrus", Concurrency: 1, Failed: "dendrite joins the room of cirrus: status 403"},
	}}
	var b strings.Builder
	printTable(&b, rep)
	out := b.String()
	for _, want := range []string{
		"inbound /send (50 PDUs a txn)            cirrus       1        2      0   50.000   90.000        80       4.00       —     0.50    19.00    0.50x    1.00x      2.00x",
		"inbound /send (50 PDUs a txn)            dendrite     1        2      0  100.000   90.000        40",
		"federation delivery                      cirrus       1 FAILED (see below)",
		"inbound /send (50 PDUs a txn) on cirrus: 100 PDUs in 2 transactions",
		"inbound /send (50 PDUs a txn): a fake remote server in the bench",
		"federation delivery: the bench user of one server sends a message",
		"FAILED on cirrus federation delivery: dendrite joins the room of cirrus: status 403",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("printTable output lacks %q; it is:\n%s", want, out)
		}
	}
	if strings.Index(out, "send c=1 ") > strings.Index(out, inboundLabel) {
		t.Errorf("the federation rows come before the room workloads':\n%s", out)
	}
}

// TestDelivery_CirrusToCirrus runs the delivery workload between two Cirrus
// stacks with serve's queue: the receiver's bench user joins the sender's
// room through the sender, and each message sent there reaches its
// waiting sync.
func TestDelivery_CirrusToCirrus(t *testing.T) {
	ctx := context.Background()
	named := func(name string) *server {
		st, fedURL := servertest.StartNamed(t, "CIRRUS_REGISTRATION_SHARED_SECRET="+benchSecret)
		st.RunQueue(t)
		s := &server{Name: name, ClientURL: st.URL, FederationURL: fedURL, serverName: st.Name(), client: newHTTPClient()}
		if err := setupUser(ctx, s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	from, to := named("cirrus"), named("receiver")
	view, err := setupDelivery(ctx, from, to)
	if err != nil {
		t.Fatal(err)
	}
	if view.Name != "cirrus" || view.ClientURL != to.ClientURL || view.sync.token != to.token {
		t.Fatalf("the view is %s on %s, want the sender's name on the receiver", view.Name, view.ClientURL)
	}
	if rooms := joinedRooms(t, to); len(rooms) != 1 || rooms[0] != view.sync.rooms[0] {
		t.Fatalf("the receiver's bench user is in %v, want %v", rooms, view.sync.rooms)
	}

	rs := measureEndpoint(ctx, []*server{view}, delivery(), 3, 1, 0, 1)
	if len(rs) != 1 || rs[0].Failed != "" || rs[0].Errors != 0 || rs[0].Requests != 3 {
		t.Fatalf("delivery results: %+v", rs)
	}
	// The first run (prepare's) and the three measured each had their
	// message reach the waiting sync.
	if view.sync.wakeUps != 4 {
		t.Errorf("%d messages reached the receiver's sync, want 4", view.sync.wakeUps)
	}
}
