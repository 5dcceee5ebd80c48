package federation_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	lambdaevents "github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/federation"
	"github.com/cirrus-matrix/cirrus/shared/keys"
	"github.com/cirrus-matrix/cirrus/shared/protocol"
	"github.com/cirrus-matrix/cirrus/shared/queue"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// remote is a fake homeserver over TLS on loopback: it serves its signing
// key, and the missing events and state the test gives it, and records
// what it was asked.
type remote struct {
	Name string
	Key  keys.Key

	mu      sync.Mutex
	missing []events.PDU // the answer to /get_missing_events
	state   []events.PDU // the answer to /state and /state_ids
	byID    map[string]events.PDU
	asked   []string // "<method> <path> <body>" of federation requests
}

func newRemote(t *testing.T) *remote {
	t.Helper()
	k, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	rm := &remote{Key: k}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/_matrix/key/v2/server" {
			doc, _ := json.Marshal(map[string]any{
				"server_name":    rm.Name,
				"valid_until_ts": time.Now().Add(time.Hour).UnixMilli(),
				"verify_keys":    map[string]any{k.ID: map[string]string{"key": base64.RawStdEncoding.EncodeToString(k.Public())}},
			})
			signed, err := protocol.SignJSON(rm.Name, k.ID, k.Private, doc)
			if err != nil {
				t.Error(err)
			}
			w.Write(signed)
			return
		}
		body, _ := io.ReadAll(r.Body)
		rm.mu.Lock()
		defer rm.mu.Unlock()
		rm.asked = append(rm.asked, r.Method+" "+r.URL.Path+" "+string(body))
		switch {
		case strings.HasPrefix(r.URL.Path, "/_matrix/federation/v1/get_missing_events/"):
			json.NewEncoder(w).Encode(map[string]any{"events": jsons(rm.missing)})
		case strings.HasPrefix(r.URL.Path, "/_matrix/federation/v1/state/"):
			json.NewEncoder(w).Encode(map[string]any{"pdus": jsons(rm.state), "auth_chain": []any{}})
		case strings.HasPrefix(r.URL.Path, "/_matrix/federation/v1/state_ids/"):
			ids := []string{}
			for _, ev := range rm.state {
				ids = append(ids, ev.EventID())
			}
			json.NewEncoder(w).Encode(map[string]any{"pdu_ids": ids, "auth_chain_ids": []string{}})
		case strings.HasPrefix(r.URL.Path, "/_matrix/federation/v1/event/"):
			ev, ok := rm.byID[strings.TrimPrefix(r.URL.Path, "/_matrix/federation/v1/event/")]
			if !ok {
				w.WriteHeader(http.StatusNotFound)
				w.Write([]byte(`{"errcode":"M_NOT_FOUND"}`))
				return
			}
			json.NewEncoder(w).Encode(map[string]any{"origin": rm.Name, "origin_server_ts": 1, "pdus": jsons([]events.PDU{ev})})
		default:
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"errcode":"M_UNRECOGNIZED"}`))
		}
	}))
	t.Cleanup(srv.Close)
	rm.Name = srv.Listener.Addr().String()
	return rm
}

func jsons(evs []events.PDU) []json.RawMessage {
	out := []json.RawMessage{}
	for _, ev := range evs {
		out = append(out, ev.JSON())
	}
	return out
}

// Asked returns the federation requests the remote got.
func (rm *remote) Asked() []string {
	rm.mu.Lock()
	defer rm.mu.Unlock()
	return slices.Clone(rm.asked)
}

// event builds an m.room.message of the remote's user @bob in room,
// after prev, signed by the remote.
func (rm *remote) event(t *testing.T, roomID, body string, depth int64, prev ...string) events.PDU {
	t.Helper()
	return rm.eventSigned(t, rm.Key, roomID, body, depth, prev...)
}

func (rm *remote) eventSigned(t *testing.T, k keys.Key, roomID, body string, depth int64, prev ...string) events.PDU {
	t.Helper()
	content, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": body})
	ev, err := events.Signer{ServerName: rm.Name, Key: k}.Build("12",
		events.Proto{RoomID: roomID, Sender: "@bob:" + rm.Name, Type: "m.room.message", Content: content},
		events.Graph{PrevEvents: prev, Depth: depth}, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// send PUTs a transaction signed by the remote to the federation tree.
func (rm *remote) send(t *testing.T, base, txnID string, pdus []json.RawMessage, edus []any) servertest.Reply {
	t.Helper()
	if edus == nil {
		edus = []any{}
	}
	uri := "/_matrix/federation/v1/send/" + txnID
	fr := fclient.NewFederationRequest("PUT", spec.ServerName(rm.Name), servertest.ServerName, uri)
	content := map[string]any{"origin": rm.Name, "origin_server_ts": time.Now().UnixMilli(), "pdus": pdus, "edus": edus}
	if err := fr.SetContent(content); err != nil {
		t.Fatal(err)
	}
	if err := fr.Sign(spec.ServerName(rm.Name), gomatrixserverlib.KeyID(rm.Key.ID), rm.Key.Private); err != nil {
		t.Fatal(err)
	}
	hr, err := fr.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("PUT", base+uri, strings.NewReader(string(fr.Content())))
	req.Header.Set("Authorization", hr.Header.Get("Authorization"))
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := servertest.Reply{Status: res.StatusCode, Raw: raw}
	if err := json.Unmarshal(raw, &r.Body); err != nil {
		t.Fatalf("PUT %s: %d %q is not a JSON object", uri, res.StatusCode, raw)
	}
	return r
}

// fakeEngine records the PDUs the worker gives it, in order. It knows
// the events in Have and stores a PDU only when it knows its prev events.
type fakeEngine struct {
	mu   sync.Mutex
	Have map[string]bool
	Got  []events.PDU
	// WithState records the PDUs given with state, when the engine takes
	// state.
	WithState []string
	// Fail lists bodies whose PDUs fail (an error that is not a rejection).
	Fail map[string]bool
	// Calls counts the calls of Receive.
	Calls int
}

type missingErr struct{ ids []string }

func (e *missingErr) Error() string { return "missing prev events " + strings.Join(e.ids, ",") }

func (f *fakeEngine) Receive(_ context.Context, pdu events.PDU) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Calls++
	var c struct{ Body string }
	json.Unmarshal(pdu.Content(), &c)
	if f.Fail[c.Body] {
		return errors.New("the table is down")
	}
	var missing []string
	for _, id := range pdu.PrevEventIDs() {
		if !f.Have[id] {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return &missingErr{missing}
	}
	f.Have[pdu.EventID()] = true
	f.Got = append(f.Got, pdu)
	return nil
}

func (f *fakeEngine) MissingPrevEvents(err error) []string {
	var m *missingErr
	if errors.As(err, &m) {
		return m.ids
	}
	return nil
}

// Bodies returns the bodies of the PDUs received, in order.
func (f *fakeEngine) Bodies() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, ev := range f.Got {
		var c struct{ Body string }
		json.Unmarshal(ev.Content(), &c)
		out = append(out, c.Body)
	}
	return out
}

// stateEngine is a fakeEngine that also takes PDUs with state.
type stateEngine struct{ *fakeEngine }

func (s stateEngine) ReceiveWithState(_ context.Context, pdu events.PDU, state, _ []events.PDU) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.WithState = append(s.WithState, fmt.Sprintf("%s with %d state events", pdu.EventID(), len(state)))
	s.Have[pdu.EventID()] = true
	s.Got = append(s.Got, pdu)
	return nil
}

// fedStack is the real stack with its federation tree, an in-memory queue
// and the engine given.
type fedStack struct {
	*servertest.Stack
	FedURL string
	Mem    *queue.Memory
	Alice  servertest.User
}

const queueURL = "memory://federation"

// startFed starts the stack; a nil engine keeps the real one.
func startFed(t *testing.T, engine federation.Engine) *fedStack {
	t.Helper()
	st := servertest.Start(t, "CIRRUS_FEDERATION_VERIFY_CERTIFICATES=false", "CIRRUS_IP_RANGE_WHITELIST=127.0.0.1/32")
	mem := &queue.Memory{}
	st.Server.Queue = queue.New(mem, queueURL)
	if engine != nil {
		st.Server.Inbox.Engine = engine
	}
	fed := httptest.NewServer(st.Server.FederationHandler())
	t.Cleanup(fed.Close)
	return &fedStack{Stack: st, FedURL: fed.URL, Mem: mem, Alice: st.Register(t, "alice")}
}

// room creates a room of alice's.
func (fs *fedStack) room(t *testing.T) string {
	t.Helper()
	r := fs.Do(t, "POST", "/_matrix/client/v3/createRoom", fs.Alice.AccessToken, map[string]any{})
	id, _ := r.Body["room_id"].(string)
	if r.Status != http.StatusOK || id == "" {
		t.Fatalf("createRoom: %d %s", r.Status, r.Raw)
	}
	return id
}

// messages takes the queued messages, oldest first, without deleting them
// from the queue's point of view (they are handled by the caller).
func (fs *fedStack) messages(t *testing.T) []lambdaevents.SQSMessage {
	t.Helper()
	var out []lambdaevents.SQSMessage
	for {
		res, err := fs.Mem.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{
			QueueUrl: aws.String(queueURL), MaxNumberOfMessages: 10, MessageAttributeNames: []string{queue.AttrKind},
			VisibilityTimeout: 3600,
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Messages) == 0 {
			return out
		}
		for _, m := range res.Messages {
			attrs := map[string]lambdaevents.SQSMessageAttribute{}
			for k, v := range m.MessageAttributes {
				attrs[k] = lambdaevents.SQSMessageAttribute{StringValue: v.StringValue, DataType: aws.ToString(v.DataType)}
			}
			out = append(out, lambdaevents.SQSMessage{MessageId: aws.ToString(m.MessageId), Body: aws.ToString(m.Body), MessageAttributes: attrs})
		}
	}
}

// work runs the queued messages through the server's dispatcher, as the
// sender function does, until the queue is empty; it fails the test if a
// message fails.
func (fs *fedStack) work(t *testing.T) {
	t.Helper()
	for range 10 {
		msgs := fs.messages(t)
		if len(msgs) == 0 {
			return
		}
		res, _ := fs.Server.Jobs.HandleSQSEvent(context.Background(), lambdaevents.SQSEvent{Records: msgs})
		if len(res.BatchItemFailures) > 0 {
			t.Fatalf("%d of %d messages failed", len(res.BatchItemFailures), len(msgs))
		}
	}
	t.Fatal("the queue is still not empty after 10 rounds")
}

// inbox lists the event IDs waiting in the room's inbox.
func (fs *fedStack) inbox(t *testing.T, roomID string) []string {
	t.Helper()
	var items []struct {
		ID string `dynamodbav:"id"`
	}
	if _, err := fs.Server.Store.QueryPage(context.Background(), store.Query{PK: "fedin|" + roomID, Prefix: "q|"}, &items); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, it := range items {
		out = append(out, it.ID)
	}
	return out
}

func pduResults(t *testing.T, r servertest.Reply) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	pdus, ok := r.Body["pdus"].(map[string]any)
	if !ok {
		t.Fatalf("no pdus object in %s", r.Raw)
	}
	for id, v := range pdus {
		out[id], _ = v.(map[string]any)
	}
	return out
}

func TestSend_Idempotent(t *testing.T) {
	rm := newRemote(t)
	fs := startFed(t, nil)
	room := fs.room(t)
	e1 := rm.event(t, room, "one", 10, "$a")
	e2 := rm.event(t, room, "two", 11, e1.EventID())
	pdus := []json.RawMessage{e1.JSON(), e2.JSON()}

	first := rm.send(t, fs.FedURL, "txn1", pdus, []any{map[string]any{"edu_type": "m.typing", "content": map[string]any{}}})
	if first.Status != http.StatusOK {
		t.Fatalf("send: %d %s", first.Status, first.Raw)
	}
	res := pduResults(t, first)
	if len(res) != 2 || res[e1.EventID()] == nil || len(res[e1.EventID()]) != 0 || len(res[e2.EventID()]) != 0 {
		t.Errorf("answer %s, want {} for %s and %s", first.Raw, e1.EventID(), e2.EventID())
	}
	again := rm.send(t, fs.FedURL, "txn1", pdus, nil)
	if again.Status != http.StatusOK || string(again.Raw) != string(first.Raw) {
		t.Errorf("retry: %d %s, want the first answer %s", again.Status, again.Raw, first.Raw)
	}
	if got, want := fs.inbox(t, room), []string{e1.EventID(), e2.EventID()}; !slices.Equal(got, want) {
		t.Errorf("inbox holds %v, want %v once each", got, want)
	}
	msgs := fs.messages(t)
	if len(msgs) != 1 || msgs[0].Body != fmt.Sprintf(`{"room_id":%q}`, room) || aws.ToString(msgs[0].MessageAttributes["kind"].StringValue) != federation.InboxKind {
		t.Errorf("queued %+v, want one %s message for %s", msgs, federation.InboxKind, room)
	}
}

func TestSend_PerPDUErrors(t *testing.T) {
	rm := newRemote(t)
	fs := startFed(t, nil)
	room := fs.room(t)
	good := rm.event(t, room, "good", 10, "$a")
	forger, _ := keys.Generate()
	forger.ID = rm.Key.ID
	forged := rm.eventSigned(t, forger, room, "forged", 10, "$a")
	unknownRoom := rm.event(t, "!nowhere:"+rm.Name, "elsewhere", 10, "$a")

	r := rm.send(t, fs.FedURL, "txn-errors", []json.RawMessage{good.JSON(), forged.JSON(), unknownRoom.JSON()}, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("send: %d %s", r.Status, r.Raw)
	}
	res := pduResults(t, r)
	if len(res[good.EventID()]) != 0 || res[good.EventID()] == nil {
		t.Errorf("good PDU: %v, want {}", res[good.EventID()])
	}
	if e, _ := res[forged.EventID()]["error"].(string); !strings.Contains(e, "signature") {
		t.Errorf("forged PDU: %v, want a signature error", res[forged.EventID()])
	}
	if e, _ := res[unknownRoom.EventID()]["error"].(string); !strings.Contains(e, "not in room !nowhere:") {
		t.Errorf("PDU of an unknown room: %v, want an error naming the room", res[unknownRoom.EventID()])
	}
	if got := fs.inbox(t, room); !slices.Equal(got, []string{good.EventID()}) {
		t.Errorf("inbox holds %v, want only the good PDU", got)
	}
}

func TestSend_BadRequests(t *testing.T) {
	rm := newRemote(t)
	fs := startFed(t, nil)
	room := fs.room(t)
	var many []json.RawMessage
	for i := range federation.MaxPDUs + 1 {
		many = append(many, rm.event(t, room, fmt.Sprint(i), 10, "$a").JSON())
	}
	edus := make([]any, federation.MaxEDUs+1)
	for i := range edus {
		edus[i] = map[string]any{"edu_type": "m.typing", "content": map[string]any{}}
	}
	for name, tc := range map[string]struct {
		r      servertest.Reply
		status int
		code   string
	}{
		"51 PDUs":  {rm.send(t, fs.FedURL, "many-pdus", many, nil), 400, "M_BAD_JSON"},
		"101 EDUs": {rm.send(t, fs.FedURL, "many-edus", nil, edus), 400, "M_BAD_JSON"},
		"unsigned": {servertest.Call(t, "PUT", fs.FedURL+"/_matrix/federation/v1/send/t1", "", map[string]any{"pdus": []any{}}), 401, "M_UNAUTHORIZED"},
	} {
		if tc.r.Status != tc.status || tc.r.Body["errcode"] != tc.code {
			t.Errorf("%s: %d %s, want %d %s", name, tc.r.Status, tc.r.Raw, tc.status, tc.code)
		}
	}
	if got := fs.inbox(t, room); len(got) != 0 {
		t.Errorf("inbox holds %v after refused transactions, want nothing", got)
	}
	if msgs := fs.messages(t); len(msgs) != 0 {
		t.Errorf("queued %d messages for refused transactions", len(msgs))
	}
}

// TestSend_HashMismatch: a PDU whose content was changed after it was
// signed still verifies (signatures cover the redacted form), and goes to
// the engine redacted.
func TestSend_HashMismatch(t *testing.T) {
	rm := newRemote(t)
	engine := &fakeEngine{Have: map[string]bool{"$a": true}}
	fs := startFed(t, engine)
	room := fs.room(t)
	ev := rm.event(t, room, "original", 10, "$a")
	var doc map[string]any
	json.Unmarshal(ev.JSON(), &doc)
	doc["content"] = map[string]any{"msgtype": "m.text", "body": "tampered"}
	tampered, _ := json.Marshal(doc)

	r := rm.send(t, fs.FedURL, "txn-hash", []json.RawMessage{tampered}, nil)
	if res := pduResults(t, r); r.Status != http.StatusOK || res[ev.EventID()] == nil || len(res[ev.EventID()]) != 0 {
		t.Fatalf("send: %d %s, want {} for %s", r.Status, r.Raw, ev.EventID())
	}
	fs.work(t)
	if len(engine.Got) != 1 || engine.Got[0].EventID() != ev.EventID() || string(engine.Got[0].Content()) != "{}" {
		t.Fatalf("engine got %v, want %s redacted (content {})", engine.Got, ev.EventID())
	}
	if got := fs.inbox(t, room); len(got) != 0 {
		t.Errorf("inbox still holds %v after the worker", got)
	}
}

// TestWorker_OrderPerRoom: PDUs of two rooms, interleaved over two
// transactions, reach the engine in the order sent within each room.
func TestWorker_OrderPerRoom(t *testing.T) {
	rm := newRemote(t)
	engine := &fakeEngine{Have: map[string]bool{"$a": true, "$b": true}}
	fs := startFed(t, engine)
	roomA, roomB := fs.room(t), fs.room(t)
	a1 := rm.event(t, roomA, "a1", 10, "$a")
	b1 := rm.event(t, roomB, "b1", 10, "$b")
	a2 := rm.event(t, roomA, "a2", 11, a1.EventID())
	b2 := rm.event(t, roomB, "b2", 11, b1.EventID())
	a3 := rm.event(t, roomA, "a3", 12, a2.EventID())
	if r := rm.send(t, fs.FedURL, "t1", []json.RawMessage{a1.JSON(), b1.JSON(), a2.JSON()}, nil); r.Status != 200 {
		t.Fatalf("t1: %d %s", r.Status, r.Raw)
	}
	if r := rm.send(t, fs.FedURL, "t2", []json.RawMessage{b2.JSON(), a3.JSON()}, nil); r.Status != 200 {
		t.Fatalf("t2: %d %s", r.Status, r.Raw)
	}
	fs.work(t)
	var inA, inB []string
	for _, b := range engine.Bodies() {
		if strings.HasPrefix(b, "a") {
			inA = append(inA, b)
		} else {
			inB = append(inB, b)
		}
	}
	if !slices.Equal(inA, []string{"a1", "a2", "a3"}) || !slices.Equal(inB, []string{"b1", "b2"}) {
		t.Errorf("engine got %v, want a1 a2 a3 and b1 b2 in order", engine.Bodies())
	}
	if asked := rm.Asked(); len(asked) != 0 {
		t.Errorf("the remote was asked %v, want nothing: no event was missing", asked)
	}
}

// TestWorker_MissingEvents: a PDU whose prev events the engine lacks
// makes the worker ask the origin for them (/get_missing_events) and give
// them to the engine oldest first, then the PDU.
func TestWorker_MissingEvents(t *testing.T) {
	rm := newRemote(t)
	engine := &fakeEngine{Have: map[string]bool{"$a": true}}
	fs := startFed(t, engine)
	fs.Server.Inbox.Extremities = func(context.Context, string) ([]string, int64, error) { return []string{"$a"}, 9, nil }
	room := fs.room(t)
	m1 := rm.event(t, room, "m1", 10, "$a")
	m2 := rm.event(t, room, "m2", 11, m1.EventID())
	e3 := rm.event(t, room, "e3", 12, m2.EventID())
	rm.missing = []events.PDU{m2, m1} // newest first, as servers answer

	if r := rm.send(t, fs.FedURL, "t-gap", []json.RawMessage{e3.JSON()}, nil); r.Status != 200 {
		t.Fatalf("send: %d %s", r.Status, r.Raw)
	}
	fs.work(t)
	if got := engine.Bodies(); !slices.Equal(got, []string{"m1", "m2", "e3"}) {
		t.Errorf("engine got %v, want m1 m2 e3", got)
	}
	asked := rm.Asked()
	if len(asked) != 1 || !strings.HasPrefix(asked[0], "POST /_matrix/federation/v1/get_missing_events/"+room) ||
		!strings.Contains(asked[0], `"latest_events":["`+e3.EventID()+`"]`) || !strings.Contains(asked[0], `"earliest_events":["$a"]`) || !strings.Contains(asked[0], `"limit":10`) {
		t.Errorf("the remote was asked %q, want one get_missing_events for %s", asked, e3.EventID())
	}
}

// TestWorker_MissingState: when /get_missing_events does not close the
// gap, an engine that takes state gets the PDU with the state before it
// from the origin's /state; one that does not drops it.
func TestWorker_MissingState(t *testing.T) {
	rm := newRemote(t)
	engine := &fakeEngine{Have: map[string]bool{"$a": true}}
	fs := startFed(t, stateEngine{engine})
	fs.Server.Inbox.Held = nil // what the server holds unknown: /state
	room := fs.room(t)
	s1 := rm.event(t, room, "s1", 5, "$a")
	e := rm.event(t, room, "e", 20, "$gone")
	rm.state = []events.PDU{s1}

	if r := rm.send(t, fs.FedURL, "t-state", []json.RawMessage{e.JSON()}, nil); r.Status != 200 {
		t.Fatalf("send: %d %s", r.Status, r.Raw)
	}
	fs.work(t)
	if want := e.EventID() + " with 1 state events"; !slices.Equal(engine.WithState, []string{want}) {
		t.Errorf("engine took with state %v, want %q", engine.WithState, want)
	}
	asked := rm.Asked()
	if len(asked) != 2 || !strings.HasPrefix(asked[0], "POST /_matrix/federation/v1/get_missing_events/") ||
		!strings.HasPrefix(asked[1], "GET /_matrix/federation/v1/state/"+room) {
		t.Errorf("the remote was asked %q, want get_missing_events then state", asked)
	}
	if got := fs.inbox(t, room); len(got) != 0 {
		t.Errorf("inbox still holds %v", got)
	}
}

// TestWorker_StateByIDs: with what this server holds known, the worker
// asks for the state's IDs (/state_ids) and fetches only the events it
// lacks (/event), not the whole state.
func TestWorker_StateByIDs(t *testing.T) {
	rm := newRemote(t)
	engine := &fakeEngine{Have: map[string]bool{"$a": true}}
	fs := startFed(t, stateEngine{engine})
	room := fs.room(t)
	held := rm.event(t, room, "held", 4, "$a")
	s1 := rm.event(t, room, "s1", 5, held.EventID())
	e := rm.event(t, room, "e", 20, "$gone")
	rm.state = []events.PDU{held, s1}
	rm.byID = map[string]events.PDU{held.EventID(): held, s1.EventID(): s1}
	fs.Server.Inbox.Held = func(_ context.Context, roomID string, ids []string) (map[string]events.PDU, error) {
		out := map[string]events.PDU{}
		if roomID == room && slices.Contains(ids, held.EventID()) {
			out[held.EventID()] = held
		}
		return out, nil
	}

	if r := rm.send(t, fs.FedURL, "t-ids", []json.RawMessage{e.JSON()}, nil); r.Status != 200 {
		t.Fatalf("send: %d %s", r.Status, r.Raw)
	}
	fs.work(t)
	if want := e.EventID() + " with 2 state events"; !slices.Equal(engine.WithState, []string{want}) {
		t.Errorf("engine took with state %v, want %q", engine.WithState, want)
	}
	asked := rm.Asked()
	if len(asked) != 3 || !strings.HasPrefix(asked[1], "GET /_matrix/federation/v1/state_ids/"+room) ||
		asked[2] != "GET /_matrix/federation/v1/event/"+s1.EventID()+" " {
		t.Errorf("the remote was asked %q, want get_missing_events, state_ids, then /event of %s only", asked, s1.EventID())
	}
}

// TestSend_Cost pins what a transaction costs in DynamoDB once the
// origin's key is cached: at /send, and in the worker (docs/storage.md).
func TestSend_Cost(t *testing.T) {
	rm := newRemote(t)
	engine := &fakeEngine{Have: map[string]bool{"$a": true}}
	fs := startFed(t, engine)
	room := fs.room(t)
	if r := rm.send(t, fs.FedURL, "warm", []json.RawMessage{}, nil); r.Status != 200 {
		t.Fatalf("warm-up: %d %s", r.Status, r.Raw)
	}
	e1 := rm.event(t, room, "one", 10, "$a")
	e2 := rm.event(t, room, "two", 11, e1.EventID())
	pdus := []json.RawMessage{e1.JSON(), e2.JSON()}
	rm.send(t, fs.FedURL, "cost", pdus, nil)
	// The origin's key read (X-Matrix), the transaction claimed, the
	// room's version and server ACL read, the senders' keys read once for
	// both PDUs, the two PDUs written in one BatchWriteItem, the answer
	// recorded.
	fs.CheckCost(t, "send of 2 PDUs", "/send/", servertest.Want(7, 4, 4))
	rm.send(t, fs.FedURL, "cost", pdus, nil)
	// The origin's key, the claim refused, the answer read.
	fs.CheckCost(t, "a retry", "/send/", servertest.Want(3, 2, 1))

	ctx, meter := store.WithMeter(context.Background())
	msgs := fs.messages(t)
	res, _ := fs.Server.Jobs.HandleSQSEvent(ctx, lambdaevents.SQSEvent{Records: msgs})
	if len(res.BatchItemFailures) != 0 || len(engine.Got) != 2 {
		t.Fatalf("worker: %d failures, engine got %d", len(res.BatchItemFailures), len(engine.Got))
	}
	// The lock taken, the inbox read, each PDU deleted, the lock let go,
	// the inbox read again (engine's own costs apart: this one is a fake).
	servertest.CheckUsage(t, "worker, 2 PDUs", meter.Usage(), servertest.Want(6, 2, 4))
}

// TestSend_RealEngine: a remote user's join of a public room and message,
// sent in one transaction, go through the worker into the real room
// engine: the local member reads both in /messages.
func TestSend_RealEngine(t *testing.T) {
	rm := newRemote(t)
	fs := startFed(t, nil)
	room, version, state, ext, depth := fs.publicRoomTip(t)
	bob := "@bob:" + rm.Name
	signer := events.Signer{ServerName: rm.Name, Key: rm.Key}
	join, err := signer.Build(version, events.Proto{RoomID: room, Sender: bob, Type: "m.room.member", StateKey: &bob,
		Content: json.RawMessage(`{"membership":"join"}`)}, events.Graph{PrevEvents: ext, Depth: depth + 1}, state, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := state.Add(join); err != nil {
		t.Fatal(err)
	}
	msg, err := signer.Build(version, events.Proto{RoomID: room, Sender: bob, Type: "m.room.message",
		Content: json.RawMessage(`{"msgtype":"m.text","body":"hello from afar"}`)}, events.Graph{PrevEvents: []string{join.EventID()}, Depth: depth + 2}, state, time.Now())
	if err != nil {
		t.Fatal(err)
	}

	r := rm.send(t, fs.FedURL, "real", []json.RawMessage{join.JSON(), msg.JSON()}, nil)
	if res := pduResults(t, r); r.Status != 200 || len(res) != 2 || len(res[join.EventID()]) != 0 || len(res[msg.EventID()]) != 0 {
		t.Fatalf("send: %d %s", r.Status, r.Raw)
	}
	fs.work(t)
	r = fs.Do(t, "GET", "/_matrix/client/v3/rooms/"+room+"/messages?dir=b&limit=2", fs.Alice.AccessToken, nil)
	chunk, _ := r.Body["chunk"].([]any)
	var got []string
	for _, c := range chunk {
		ev, _ := c.(map[string]any)
		got = append(got, fmt.Sprint(ev["event_id"], " ", ev["sender"]))
	}
	want := []string{msg.EventID() + " " + bob, join.EventID() + " " + bob}
	if r.Status != 200 || !slices.Equal(got, want) {
		t.Errorf("/messages: %d %v, want %v", r.Status, got, want)
	}
}

// TestSend_ServerACL: a PDU from a server the room's ACL denies gets its
// error and is not queued.
func TestSend_ServerACL(t *testing.T) {
	rm := newRemote(t)
	fs := startFed(t, nil)
	room := fs.room(t)
	r := fs.Do(t, "PUT", "/_matrix/client/v3/rooms/"+room+"/state/m.room.server_acl/", fs.Alice.AccessToken,
		map[string]any{"allow": []string{"*"}, "deny": []string{"127.0.0.1"}, "allow_ip_literals": true})
	if r.Status != 200 {
		t.Fatalf("set the ACL: %d %s", r.Status, r.Raw)
	}
	ev := rm.event(t, room, "denied", 10, "$a")
	r = rm.send(t, fs.FedURL, "acl", []json.RawMessage{ev.JSON()}, nil)
	if e, _ := pduResults(t, r)[ev.EventID()]["error"].(string); r.Status != 200 || !strings.Contains(e, "server ACL") {
		t.Errorf("send: %d %s, want an ACL error for %s", r.Status, r.Raw, ev.EventID())
	}
	if got := fs.inbox(t, room); len(got) != 0 {
		t.Errorf("inbox holds %v, want nothing", got)
	}
}

// TestSend_SilentKeyServer: a PDU whose sender's server never answers for
// its key gets its error once the check's time is up; the transaction's
// other PDUs are taken and the answer comes.
func TestSend_SilentKeyServer(t *testing.T) {
	rm := newRemote(t)
	fs := startFed(t, nil)
	fs.Server.Inbox.VerifyTimeout = 2 * time.Second
	room := fs.room(t)
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			held = append(held, c) // never answered
		}
	}()
	other := &remote{Name: silent.Addr().String()}
	other.Key, _ = keys.Generate()
	relayed := other.event(t, room, "relayed", 10, "$a")
	good := rm.event(t, room, "good", 10, "$a")

	r := rm.send(t, fs.FedURL, "silent", []json.RawMessage{relayed.JSON(), good.JSON()}, nil)
	res := pduResults(t, r)
	if e, _ := res[relayed.EventID()]["error"].(string); r.Status != 200 || !strings.Contains(e, "signature") {
		t.Errorf("relayed PDU: %d %s, want a signature error", r.Status, r.Raw)
	}
	if res[good.EventID()] == nil || len(res[good.EventID()]) != 0 {
		t.Errorf("good PDU: %v, want {}", res[good.EventID()])
	}
	if got := fs.inbox(t, room); !slices.Equal(got, []string{good.EventID()}) {
		t.Errorf("inbox holds %v, want the good PDU only", got)
	}
}

// TestSend_FailureThenRetry: when the table fails during a transaction,
// it is answered 500 and not recorded; the origin's retry of the same
// transaction ID is done in full, its PDUs queued once.
func TestSend_FailureThenRetry(t *testing.T) {
	rm := newRemote(t)
	fs := startFed(t, nil)
	room := fs.room(t)
	real := fs.Server.Inbox.RoomVersion
	fail := true
	fs.Server.Inbox.RoomVersion = func(ctx context.Context, roomID string) (string, error) {
		if fail {
			return "", errors.New("the table is down")
		}
		return real(ctx, roomID)
	}
	ev := rm.event(t, room, "once", 10, "$a")
	r := rm.send(t, fs.FedURL, "flaky", []json.RawMessage{ev.JSON()}, nil)
	if r.Status != http.StatusInternalServerError || r.Body["errcode"] != "M_UNKNOWN" || strings.Contains(string(r.Raw), "table") {
		t.Fatalf("send with the table down: %d %s, want 500 M_UNKNOWN without internals", r.Status, r.Raw)
	}
	if got := fs.inbox(t, room); len(got) != 0 {
		t.Fatalf("inbox holds %v after the failure", got)
	}
	fail = false
	r = rm.send(t, fs.FedURL, "flaky", []json.RawMessage{ev.JSON()}, nil)
	if res := pduResults(t, r); r.Status != 200 || res[ev.EventID()] == nil || len(res[ev.EventID()]) != 0 {
		t.Fatalf("retry: %d %s, want {} for %s", r.Status, r.Raw, ev.EventID())
	}
	if got := fs.inbox(t, room); !slices.Equal(got, []string{ev.EventID()}) {
		t.Errorf("inbox holds %v, want %s once", got, ev.EventID())
	}
}
