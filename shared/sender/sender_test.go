package sender_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	lambdaevents "github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/keys"
	"github.com/cirrus-matrix/cirrus/shared/queue"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/sender"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// remoteName is the fake remote server's name: a name the certificate of
// httptest's TLS server holds, reached through federation_hosts.
const remoteName = "example.com"

// txn is a transaction the fake remote received.
type txn struct {
	ID     string
	Bodies []string // the PDUs' content.body, in order
	EDUs   []string // the EDUs' types
}

// remote is a fake federation server that records /send transactions after
// checking their X-Matrix signature with the Cirrus server's key.
type remote struct {
	srv *httptest.Server

	mu sync.Mutex
	// origin and key verify the X-Matrix signatures: the Cirrus stack's,
	// known once it runs.
	origin string
	key    keys.Key
	txns   []txn
	fail   int // requests to answer 502 before answering again
	failed int
	errs   []string
	// hang, when set, is closed by the next request, which then waits
	// until its client gives up.
	hang chan struct{}

	inFlight, maxInFlight atomic.Int64
}

func newRemote(t *testing.T) *remote {
	t.Helper()
	rm := &remote{}
	rm.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := strings.CutPrefix(r.URL.Path, "/_matrix/federation/v1/send/")
		if r.Method != http.MethodPut || !ok {
			http.Error(w, `{"errcode":"M_UNRECOGNIZED"}`, http.StatusNotFound)
			return
		}
		n := rm.inFlight.Add(1)
		defer rm.inFlight.Add(-1)
		for m := rm.maxInFlight.Load(); n > m && !rm.maxInFlight.CompareAndSwap(m, n); m = rm.maxInFlight.Load() {
		}
		rm.mu.Lock()
		hang := rm.hang
		rm.hang = nil
		rm.mu.Unlock()
		if hang != nil {
			// The server notices a client leave once the body is read.
			io.Copy(io.Discard, r.Body)
			rm.mu.Lock()
			rm.txns = append(rm.txns, txn{ID: id + " (cut)"})
			rm.mu.Unlock()
			close(hang)
			<-r.Context().Done()
			return
		}
		// Stay in flight a moment, so that a second sender at once would
		// be seen.
		time.Sleep(2 * time.Millisecond)
		rm.mu.Lock()
		defer rm.mu.Unlock()
		origin := rm.origin
		fr, res := fclient.VerifyHTTPRequest(r, time.Now(), remoteName, nil, keyVerifier{origin, rm.key})
		if res.Code != http.StatusOK {
			rm.errs = append(rm.errs, fmt.Sprintf("txn %s: X-Matrix refused: %v", id, res.JSON))
			w.WriteHeader(res.Code)
			return
		}
		if rm.fail > 0 {
			rm.fail--
			rm.failed++
			rm.txns = append(rm.txns, txn{ID: id + " (failed)"})
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		body := fr.Content()
		var doc struct {
			Origin string            `json:"origin"`
			PDUs   []json.RawMessage `json:"pdus"`
			EDUs   []struct {
				Type string `json:"edu_type"`
			} `json:"edus"`
		}
		if err := json.Unmarshal(body, &doc); err != nil || doc.Origin != origin {
			rm.errs = append(rm.errs, fmt.Sprintf("txn %s: body %s", id, body))
		}
		got := txn{ID: id}
		for _, p := range doc.PDUs {
			var ev struct {
				Content struct {
					Body string `json:"body"`
				} `json:"content"`
			}
			json.Unmarshal(p, &ev)
			got.Bodies = append(got.Bodies, ev.Content.Body)
		}
		for _, e := range doc.EDUs {
			got.EDUs = append(got.EDUs, e.Type)
		}
		rm.txns = append(rm.txns, got)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"pdus":{}}`))
	}))
	t.Cleanup(rm.srv.Close)
	return rm
}

func (rm *remote) received(t *testing.T) []txn {
	t.Helper()
	rm.mu.Lock()
	defer rm.mu.Unlock()
	for _, e := range rm.errs {
		t.Error(e)
	}
	rm.errs = nil
	return append([]txn(nil), rm.txns...)
}

func (rm *remote) failNext(n int) {
	rm.mu.Lock()
	rm.fail = n
	rm.mu.Unlock()
}

// caFile writes the fake's certificate, its own CA, for federation_custom_ca_list.
func (rm *remote) caFile(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "remote-ca.pem")
	block := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rm.srv.Certificate().Raw})
	if err := os.WriteFile(path, block, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// keyVerifier is a gomatrixserverlib.JSONVerifier that knows one server's key.
type keyVerifier struct {
	server string
	key    keys.Key
}

func (v keyVerifier) VerifyJSONs(_ context.Context, reqs []gomatrixserverlib.VerifyJSONRequest) ([]gomatrixserverlib.VerifyJSONResult, error) {
	out := make([]gomatrixserverlib.VerifyJSONResult, len(reqs))
	for i, r := range reqs {
		if string(r.ServerName) != v.server {
			out[i].Error = fmt.Errorf("unknown server %s", r.ServerName)
			continue
		}
		out[i].Error = gomatrixserverlib.VerifyJSON(v.server, gomatrixserverlib.KeyID(v.key.ID), ed25519.PublicKey(v.key.Public()), r.Message)
	}
	return out, nil
}

// job is a message the sender queued.
type job struct {
	Body  string
	Delay time.Duration
}

// jobs is the sender's queue in these tests: it keeps the messages so that
// a test runs them when it chooses, through the dispatcher the sender
// function runs, and sees their delays.
type jobs struct {
	mu   sync.Mutex
	list []job
}

func (j *jobs) Send(ctx context.Context, kind string, body []byte) error {
	return j.SendAfter(ctx, kind, body, 0)
}

func (j *jobs) SendAfter(_ context.Context, kind string, body []byte, delay time.Duration) error {
	if kind != sender.Kind {
		return fmt.Errorf("kind %q", kind)
	}
	j.mu.Lock()
	j.list = append(j.list, job{string(body), delay})
	j.mu.Unlock()
	return nil
}

// take removes and returns the queued jobs.
func (j *jobs) take() []job {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := j.list
	j.list = nil
	return out
}

// clock is the sender's injected clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// fixture is a Cirrus stack whose sender sends to a fake remote, with a
// room where alice (local) and bob (remote) are joined.
type fixture struct {
	st     *servertest.Stack
	rm     *remote
	q      *jobs
	clock  *clock
	alice  servertest.User
	roomID string
}

func newFixture(t *testing.T, env ...string) *fixture {
	t.Helper()
	f := &fixture{q: &jobs{}, clock: &clock{t: time.Now().Truncate(time.Second)}}
	f.rm = newRemote(t)
	f.st = servertest.Start(t, append([]string{
		"CIRRUS_FEDERATION_HOSTS=" + remoteName + "=" + f.rm.srv.Listener.Addr().String(),
		"CIRRUS_FEDERATION_CUSTOM_CA_LIST=" + f.rm.caFile(t),
		"CIRRUS_IP_RANGE_WHITELIST=127.0.0.0/8"}, env...)...)
	f.rm.mu.Lock()
	f.rm.origin, f.rm.key = servertest.ServerName, f.st.Server.Key
	f.rm.mu.Unlock()
	snd := f.st.Server.Sender
	snd.Queue = func() sender.Queue { return f.q }
	snd.Now = f.clock.Now
	snd.Jitter = func() float64 { return 0.5 } // a factor of 1.1

	f.alice = f.st.Register(t, "alice")
	r := f.st.Do(t, "POST", "/_matrix/client/v3/createRoom", f.alice.AccessToken, map[string]any{"preset": "public_chat"})
	if r.Status != http.StatusOK {
		t.Fatalf("createRoom: %d %s", r.Status, r.Raw)
	}
	f.roomID = r.Body["room_id"].(string)
	if got := f.q.take(); len(got) != 0 {
		t.Fatalf("a room without remote members queued %v", got)
	}
	remoteJoin(t, f.st, f.roomID, "@bob:"+remoteName)
	// The remote's own join is the remote's to send.
	if got := f.q.take(); len(got) != 0 {
		t.Fatalf("a received join queued %v", got)
	}
	return f
}

// remoteJoin joins userID of the fake remote to the room as inbound
// federation does: an event built and signed as the remote, after the
// room's forward extremities, taken by rooms.Service.Receive.
func remoteJoin(t *testing.T, st *servertest.Stack, roomID, userID string) events.PDU {
	t.Helper()
	return remoteEvent(t, st, roomID, userID, events.Member, &userID, `{"membership":"join"}`)
}

// remoteEvent is an event of the remote's user in the room, received.
func remoteEvent(t *testing.T, st *servertest.Stack, roomID, userID, typ string, stateKey *string, content string) events.PDU {
	t.Helper()
	ctx := context.Background()
	rms := st.Server.Rooms
	info, err := rms.Info(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	prev, depth, err := rms.Extremities(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	current, err := rms.CurrentState(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	state, err := events.NewState(current)
	if err != nil {
		t.Fatal(err)
	}
	remoteKey, err := keys.FromSeed("sender test remote")
	if err != nil {
		t.Fatal(err)
	}
	ev, err := events.Signer{ServerName: remoteName, Key: remoteKey}.Build(info.Version, events.Proto{
		RoomID: roomID, Sender: userID, Type: typ, StateKey: stateKey, Content: json.RawMessage(content),
	}, events.Graph{PrevEvents: prev, Depth: depth + 1}, state, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	out, err := rms.Receive(ctx, ev)
	if err != nil || out.Status != rooms.Accepted {
		t.Fatalf("receive %s of %s: %+v, %v", typ, userID, out, err)
	}
	return ev
}

func (f *fixture) send(t *testing.T, bodies ...string) {
	t.Helper()
	for i, b := range bodies {
		path := fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/t%d-%s", f.roomID, i, b)
		r := f.st.Do(t, "PUT", path, f.alice.AccessToken, map[string]any{"msgtype": "m.text", "body": b})
		if r.Status != http.StatusOK {
			t.Fatalf("send %s: %d %s", b, r.Status, r.Raw)
		}
	}
}

// run hands the queued jobs with no delay to the dispatcher, as SQS
// batches are handed to the sender function, until none is left, and
// returns the delayed ones.
func (f *fixture) run(t *testing.T) []job {
	t.Helper()
	var delayed []job
	for {
		var batch lambdaevents.SQSEvent
		for i, j := range f.q.take() {
			if j.Delay > 0 {
				delayed = append(delayed, j)
				continue
			}
			batch.Records = append(batch.Records, sqsRecord(fmt.Sprint("m", i), j.Body))
		}
		if len(batch.Records) == 0 {
			return delayed
		}
		resp, err := f.st.Server.Jobs.HandleSQSEvent(context.Background(), batch)
		if err != nil || len(resp.BatchItemFailures) != 0 {
			t.Fatalf("sender function: %+v, %v", resp.BatchItemFailures, err)
		}
	}
}

func sqsRecord(id, body string) lambdaevents.SQSMessage {
	return lambdaevents.SQSMessage{
		MessageId: id, Body: body,
		MessageAttributes: map[string]lambdaevents.SQSMessageAttribute{
			queue.AttrKind: {DataType: "String", StringValue: aws.String(sender.Kind)},
		},
	}
}

func bodies(n int, prefix string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%03d", prefix, i+1)
	}
	return out
}

// TestSender_LocalEventsReachTheRemote: each local event in a room with a
// remote joined member reaches the remote, signed, in order.
func TestSender_LocalEventsReachTheRemote(t *testing.T) {
	f := newFixture(t)
	f.send(t, "one", "two", "three")
	if delayed := f.run(t); len(delayed) != 0 {
		t.Errorf("delayed jobs %v after sends that worked", delayed)
	}
	var got []string
	for _, x := range f.rm.received(t) {
		got = append(got, x.Bodies...)
	}
	if strings.Join(got, " ") != "one two three" {
		t.Fatalf("remote got %q, want one two three", got)
	}
	// Delivered entries leave the outbox.
	var left []map[string]any
	if _, err := f.st.Server.Store.QueryPage(context.Background(), store.Query{PK: "fedout|" + remoteName, Prefix: "q|"}, &left); err != nil || len(left) != 0 {
		t.Errorf("outbox after delivery: %v, %v; want empty", left, err)
	}
}

// TestSender_Batches: 120 events waiting go as transactions of 50, 50 and
// 20 PDUs, in order, each under its own ID.
func TestSender_Batches(t *testing.T) {
	f := newFixture(t)
	want := bodies(120, "m")
	f.send(t, want...)
	f.run(t)
	txns := f.rm.received(t)
	var sizes []int
	var got []string
	ids := map[string]bool{}
	for _, x := range txns {
		sizes = append(sizes, len(x.Bodies))
		got = append(got, x.Bodies...)
		ids[x.ID] = true
	}
	if fmt.Sprint(sizes) != "[50 50 20]" || len(ids) != 3 {
		t.Errorf("transactions of %v PDUs with %d IDs, want [50 50 20] with 3", sizes, len(ids))
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("remote got %q,\nwant %q", got, want)
	}
}

// TestSender_RetrySameTxnID: a remote that fails twice gets the same
// transaction again, under the same ID, after each backoff (10 minutes,
// then 20, each with the jitter factor 1.1), and then takes it.
func TestSender_RetrySameTxnID(t *testing.T) {
	f := newFixture(t)
	f.rm.failNext(2)
	f.send(t, "hello")
	var waits []time.Duration
	for range 3 {
		delayed := f.run(t)
		if len(delayed) != 1 {
			break
		}
		waits = append(waits, delayed[0].Delay)
		f.clock.Add(delayed[0].Delay)
		f.q.SendAfter(context.Background(), sender.Kind, []byte(delayed[0].Body), 0)
	}
	if want := []time.Duration{11 * time.Minute, 22 * time.Minute}; fmt.Sprint(waits) != fmt.Sprint(want) {
		t.Errorf("wake-ups after %v, want %v", waits, want)
	}
	txns := f.rm.received(t)
	if len(txns) != 3 {
		t.Fatalf("remote got %+v, want 3 tries", txns)
	}
	id := txns[2].ID
	if txns[0].ID != id+" (failed)" || txns[1].ID != id+" (failed)" || strings.Join(txns[2].Bodies, " ") != "hello" {
		t.Errorf("remote got %+v, want two failures and a success of one transaction ID with hello", txns)
	}
}

// TestSender_BackoffHolds: a destination in backoff gets nothing until its
// time, however many jobs come; then the failed transaction goes again and
// the rest follows, in order (TestSender_CatchUp: only the newest 50 of a
// room).
func TestSender_BackoffHolds(t *testing.T) {
	f := newFixture(t)
	f.rm.failNext(1)
	f.send(t, "first")
	delayed := f.run(t)
	if len(delayed) != 1 || delayed[0].Delay != 11*time.Minute {
		t.Fatalf("after a failure: delayed jobs %v, want one wake-up in 11m", delayed)
	}
	wake := delayed[0]

	// Sends during the backoff queue jobs that find it and do nothing, and
	// queue no second wake-up.
	f.send(t, "second", "third", "fourth")
	f.clock.Add(10 * time.Minute)
	if again := f.run(t); len(again) != 0 {
		t.Errorf("jobs in backoff queued %v, want nothing (a wake-up is queued)", again)
	}
	if txns := f.rm.received(t); len(txns) != 1 {
		t.Fatalf("remote got %+v during the backoff, want only the first failed try", txns)
	}
	// A wake-up early (SQS delays 15 minutes at most) goes round again.
	f.q.SendAfter(context.Background(), sender.Kind, []byte(wake.Body), 0)
	if again := f.run(t); len(again) != 1 || again[0].Delay != time.Minute {
		t.Errorf("an early wake-up queued %v, want itself again in 1m", again)
	}

	f.clock.Add(time.Minute)
	f.q.SendAfter(context.Background(), sender.Kind, []byte(wake.Body), 0)
	f.run(t)
	txns := f.rm.received(t)
	if len(txns) != 3 || txns[1].ID+" (failed)" != txns[0].ID || strings.Join(txns[1].Bodies, " ") != "first" {
		t.Fatalf("remote got %+v, want the failed transaction again under its ID", txns)
	}
	if strings.Join(txns[2].Bodies, " ") != "second third fourth" {
		t.Errorf("catch-up sent %q, want second third fourth", txns[2].Bodies)
	}

	// Reachable again: the next event goes at once.
	f.send(t, "fifth")
	f.run(t)
	if txns := f.rm.received(t); len(txns) != 4 || strings.Join(txns[3].Bodies, " ") != "fifth" {
		t.Errorf("after the catch-up the remote got %+v, want fifth", txns)
	}
}

// TestSender_LocalRoomsEnqueueNothing: events of a room without remote
// members, and events whose sender is another server's, queue nothing.
func TestSender_LocalRoomsEnqueueNothing(t *testing.T) {
	f := newFixture(t)
	bob := f.st.Register(t, "bob")
	r := f.st.Do(t, "POST", "/_matrix/client/v3/createRoom", f.alice.AccessToken, map[string]any{"preset": "public_chat"})
	localRoom := r.Body["room_id"].(string)
	if r := f.st.Do(t, "POST", "/_matrix/client/v3/join/"+localRoom, bob.AccessToken, map[string]any{}); r.Status != http.StatusOK {
		t.Fatalf("join: %d %s", r.Status, r.Raw)
	}
	f.st.Do(t, "PUT", "/_matrix/client/v3/rooms/"+localRoom+"/send/m.room.message/x", f.alice.AccessToken, map[string]any{"msgtype": "m.text", "body": "local"})
	if got := f.q.take(); len(got) != 0 {
		t.Errorf("a room of local users queued %v", got)
	}

	// A remote user's event, received, is the remote's to send.
	remoteEvent(t, f.st, f.roomID, "@bob:"+remoteName, "m.room.message", nil, `{"msgtype":"m.text","body":"from bob"}`)
	if got := f.q.take(); len(got) != 0 {
		t.Errorf("a remote event queued %v", got)
	}
}

// TestSender_EDUsAndBadJobs: an EDU goes in a transaction; a message that
// is no job fails alone in its SQS batch.
func TestSender_EDUsAndBadJobs(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.st.Server.Sender.SendEDU(ctx, []string{remoteName, servertest.ServerName}, "m.typing", json.RawMessage(`{"room_id":"!r:x","user_id":"@alice:example.org","typing":true}`)); err != nil {
		t.Fatal(err)
	}
	queued := f.q.take()
	if len(queued) != 1 {
		t.Fatalf("queued %v, want one job (not one to this server)", queued)
	}
	batch := lambdaevents.SQSEvent{Records: []lambdaevents.SQSMessage{sqsRecord("bad", "{}"), sqsRecord("good", queued[0].Body)}}
	resp, _ := f.st.Server.Jobs.HandleSQSEvent(ctx, batch)
	if len(resp.BatchItemFailures) != 1 || resp.BatchItemFailures[0].ItemIdentifier != "bad" {
		t.Errorf("batch item failures %+v, want the bad record alone", resp.BatchItemFailures)
	}
	txns := f.rm.received(t)
	if len(txns) != 1 || strings.Join(txns[0].EDUs, " ") != "m.typing" || len(txns[0].Bodies) != 0 {
		t.Errorf("remote got %+v, want one transaction with the m.typing EDU", txns)
	}
}

// TestSender_Cost measures what the sender adds to an append and what a
// transaction costs (docs/storage.md quotes these figures).
func TestSender_Cost(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	r := f.st.Do(t, "PUT", "/_matrix/client/v3/rooms/"+f.roomID+"/send/m.room.message/cost", f.alice.AccessToken,
		map[string]any{"msgtype": "m.text", "body": "cost"})
	ev, err := f.st.Server.Rooms.Event(ctx, f.roomID, r.Body["event_id"].(string))
	if err != nil {
		t.Fatal(err)
	}
	f.run(t)
	appended := []rooms.Appended{{RoomID: f.roomID, Seq: ev.Seq, Event: ev.PDU}}

	// The room holds alice, her creation events and bob's received join: a
	// member query of 2 items, the server ACL read (there is none), one
	// counter, one entry.
	mctx, m := store.WithMeter(ctx)
	if err := f.st.Server.Sender.Appended(mctx, appended); err != nil {
		t.Fatal(err)
	}
	servertest.CheckUsage(t, "enqueue of one event for one destination", m.Usage(), servertest.Want(4, 2, 2))

	// The same event with its state snapshot, as the append path passes it:
	// the real send above read the members at that snapshot, so the servers
	// come from the cache and nothing is read.
	at := []rooms.Appended{{RoomID: f.roomID, Seq: ev.Seq, Event: ev.PDU, StateSeq: ev.StateSeq}}
	mctx, m = store.WithMeter(ctx)
	if err := f.st.Server.Sender.Appended(mctx, at); err != nil {
		t.Fatal(err)
	}
	servertest.CheckUsage(t, "enqueue, servers cached at this state", m.Usage(), servertest.Want(2, 0, 2))
	f.run(t)

	// Deliver it: state read, outbox read, the lease with the transaction,
	// the entry deleted, the lease let go, the outbox read again.
	mctx, m = store.WithMeter(ctx)
	f.run(t) // the first enqueue's job, not metered
	if err := f.st.Server.Sender.Appended(ctx, appended); err != nil {
		t.Fatal(err)
	}
	for _, j := range f.q.take() {
		if err := f.st.Server.Sender.Handle(mctx, []byte(j.Body)); err != nil {
			t.Fatal(err)
		}
	}
	servertest.CheckUsage(t, "a transaction of one event", m.Usage(), servertest.Want(6, 3, 3))

	// A job that finds the outbox empty: the state and one outbox read.
	mctx, m = store.WithMeter(ctx)
	if err := f.st.Server.Sender.Handle(mctx, []byte(`{"destination":"`+remoteName+`"}`)); err != nil {
		t.Fatal(err)
	}
	servertest.CheckUsage(t, "a job with nothing to send", m.Usage(), servertest.Want(2, 2, 0))
	if txns := f.rm.received(t); len(txns) != 3 {
		t.Errorf("remote got %d transactions, want 3", len(txns))
	}
}

// TestSender_InProcessQueue: with `cirrus serve`'s in-process queue drained
// by the dispatcher's Poll, as serve runs it, a local event reaches the
// remote with no test hand in between.
func TestSender_InProcessQueue(t *testing.T) {
	f := newFixture(t)
	srv := f.st.Server
	mem := &queue.Memory{}
	srv.Queue = queue.New(mem, "local://cirrus/federation")
	srv.Sender.Queue = func() sender.Queue { return srv.Queue }
	srv.Sender.Now = nil
	ctx, cancel := context.WithCancel(context.Background())
	polled := make(chan struct{})
	go func() { srv.Jobs.Poll(ctx, mem, srv.Queue.URL()); close(polled) }()
	t.Cleanup(func() { cancel(); <-polled })

	f.send(t, "via", "poll")
	// Wait for the delivery itself; the limit only keeps a broken test
	// from hanging (a /send's own timeout is 60 s).
	var got []string
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		got = got[:0]
		for _, x := range f.rm.received(t) {
			got = append(got, x.Bodies...)
		}
		if len(got) >= 2 {
			break
		}
	}
	if strings.Join(got, " ") != "via poll" {
		t.Fatalf("remote got %q, want via poll", got)
	}
}

// TestSender_Membership: once the remote's last member has left, the
// room's events stay here.
func TestSender_Membership(t *testing.T) {
	f := newFixture(t)
	bob := "@bob:" + remoteName
	remoteEvent(t, f.st, f.roomID, bob, events.Member, &bob, `{"membership":"leave"}`)
	f.send(t, "after")
	if got := f.q.take(); len(got) != 0 {
		t.Errorf("a room whose remote member left queued %v", got)
	}
	if txns := f.rm.received(t); len(txns) != 0 {
		t.Errorf("remote got %+v, want nothing", txns)
	}
}

// TestSender_PDUsAndEDUs: 60 PDUs and 110 EDUs waiting go as transactions
// within both limits, PDUs in order.
func TestSender_PDUsAndEDUs(t *testing.T) {
	f := newFixture(t)
	want := bodies(60, "p")
	f.send(t, want...)
	for i := range 110 {
		content := json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))
		if err := f.st.Server.Sender.SendEDU(context.Background(), []string{remoteName}, "m.test", content); err != nil {
			t.Fatal(err)
		}
	}
	f.run(t)
	var got []string
	edus := 0
	var shape []string
	for _, x := range f.rm.received(t) {
		if len(x.Bodies) > sender.MaxPDUs || len(x.EDUs) > sender.MaxEDUs {
			t.Errorf("a transaction of %d PDUs and %d EDUs", len(x.Bodies), len(x.EDUs))
		}
		got = append(got, x.Bodies...)
		edus += len(x.EDUs)
		shape = append(shape, fmt.Sprintf("%d+%d", len(x.Bodies), len(x.EDUs)))
	}
	// The first page of the outbox is 60 PDUs and 90 EDUs: 50 of the PDUs
	// go with the 90 EDUs, then the rest.
	if strings.Join(shape, " ") != "50+90 10+20" {
		t.Errorf("transactions of PDUs+EDUs %v, want [50+90 10+20]", shape)
	}
	if strings.Join(got, " ") != strings.Join(want, " ") || edus != 110 {
		t.Errorf("remote got PDUs %q and %d EDUs, want %q and 110", got, edus, want)
	}
}

// TestSender_TwoWorkers: jobs of one destination run at once by two
// servers on one table (two Lambda instances) send each event once, in
// order, one transaction at a time.
func TestSender_TwoWorkers(t *testing.T) {
	f := newFixture(t)
	twin := f.st.Twin(t).Server.Sender
	twin.Queue = f.st.Server.Sender.Queue
	want := bodies(30, "c")
	f.send(t, want...)
	queued := f.q.take()
	var wg sync.WaitGroup
	for i, j := range queued {
		worker := f.st.Server.Sender
		if i%2 == 1 {
			worker = twin
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := worker.Handle(context.Background(), []byte(j.Body)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	f.run(t) // any job a worker handed on
	var got []string
	for _, x := range f.rm.received(t) {
		got = append(got, x.Bodies...)
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("remote got %q,\nwant %q", got, want)
	}
	if n := f.rm.maxInFlight.Load(); n != 1 {
		t.Errorf("%d transactions in flight at once, want 1", n)
	}
}

// TestSender_InvocationEnds: a worker whose invocation ends during a send
// fails its job (SQS delivers it again) without backing the destination
// off, and the retry sends the transaction under the same ID.
func TestSender_InvocationEnds(t *testing.T) {
	f := newFixture(t)
	hung := make(chan struct{})
	f.rm.mu.Lock()
	f.rm.hang = hung
	f.rm.mu.Unlock()
	f.send(t, "once")
	queued := f.q.take()
	if len(queued) != 1 {
		t.Fatalf("queued %v, want one job", queued)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-hung; cancel() }()
	if err := f.st.Server.Sender.Handle(ctx, []byte(queued[0].Body)); err == nil {
		t.Fatal("a job cut short succeeded; want an error, for SQS to deliver it again")
	}
	if delayed := f.q.take(); len(delayed) != 0 {
		t.Errorf("queued %v, want no backoff wake-up", delayed)
	}
	if err := f.st.Server.Sender.Handle(context.Background(), []byte(queued[0].Body)); err != nil {
		t.Fatal(err)
	}
	txns := f.rm.received(t)
	if len(txns) != 2 || txns[0].ID != txns[1].ID+" (cut)" || strings.Join(txns[1].Bodies, " ") != "once" {
		t.Fatalf("remote got %+v, want a cut try and once under the same ID", txns)
	}
}

// TestSender_BackoffSettings: Synapse's federation backoff keys shape the
// waits: 30 s, times 3, at most 60 s (before the jitter factor 1.1).
func TestSender_BackoffSettings(t *testing.T) {
	f := newFixture(t, "CIRRUS_FEDERATION_DESTINATION_MIN_RETRY_INTERVAL=30s",
		"CIRRUS_FEDERATION_DESTINATION_RETRY_MULTIPLIER=3", "CIRRUS_FEDERATION_DESTINATION_MAX_RETRY_INTERVAL=1m")
	f.rm.failNext(3)
	f.send(t, "late")
	var waits []time.Duration
	for range 4 {
		delayed := f.run(t)
		if len(delayed) != 1 {
			break
		}
		waits = append(waits, delayed[0].Delay)
		f.clock.Add(delayed[0].Delay)
		f.q.SendAfter(context.Background(), sender.Kind, []byte(delayed[0].Body), 0)
	}
	if want := []time.Duration{33 * time.Second, time.Minute, time.Minute}; fmt.Sprint(waits) != fmt.Sprint(want) {
		t.Errorf("waits %v, want %v", waits, want)
	}
	if txns := f.rm.received(t); len(txns) != 4 || strings.Join(txns[3].Bodies, " ") != "late" {
		t.Errorf("remote got %+v, want three failures and late", txns)
	}
}

// TestSender_EntriesExpire: an entry older than its time to live (28 days:
// its destination never answered) is not sent; the table's TTL takes it.
func TestSender_EntriesExpire(t *testing.T) {
	f := newFixture(t)
	f.clock.Add(-29 * 24 * time.Hour) // enqueued 29 days ago, as the store sees it
	f.send(t, "stale")
	f.clock.Add(29 * 24 * time.Hour)
	f.send(t, "fresh")
	f.run(t)
	var got []string
	for _, x := range f.rm.received(t) {
		got = append(got, x.Bodies...)
	}
	if strings.Join(got, " ") != "fresh" {
		t.Errorf("remote got %q, want only fresh", got)
	}
}
