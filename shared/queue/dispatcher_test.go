package queue_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/cirrus-matrix/cirrus/shared/queue"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// sqsBatch is a batch as Lambda delivers it from SQS, in its JSON form, so
// that the test also covers how the kind attribute is decoded.
const sqsBatch = `{"Records": [
  {"messageId": "m-ok", "receiptHandle": "r1", "body": "ok body",
   "attributes": {"ApproximateReceiveCount": "1"},
   "messageAttributes": {"kind": {"stringValue": "ok", "stringListValues": [], "binaryListValues": [], "dataType": "String"}},
   "md5OfBody": "", "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:fed", "awsRegion": "us-east-1"},
  {"messageId": "m-fail", "receiptHandle": "r2", "body": "secret-token-1",
   "messageAttributes": {"kind": {"stringValue": "fail", "dataType": "String"}}},
  {"messageId": "m-unknown", "receiptHandle": "r3", "body": "secret-token-2",
   "messageAttributes": {"kind": {"stringValue": "from.the.future", "dataType": "String"}}},
  {"messageId": "m-nokind", "receiptHandle": "r4", "body": "secret-token-3"},
  {"messageId": "m-panic", "receiptHandle": "r5", "body": "secret-token-4",
   "messageAttributes": {"kind": {"stringValue": "panic", "dataType": "String"}}},
  {"messageId": "m-ok2", "receiptHandle": "r6", "body": "ok body 2",
   "messageAttributes": {"kind": {"stringValue": "ok", "dataType": "String"}}}
]}`

func newDispatcher(t *testing.T, logs *bytes.Buffer) (*queue.Dispatcher, *[]string) {
	t.Helper()
	var handled []string
	d := &queue.Dispatcher{Logger: slog.New(slog.NewJSONHandler(logs, nil))}
	d.Handle("ok", func(ctx context.Context, body []byte) error {
		handled = append(handled, string(body))
		return nil
	})
	d.Handle("fail", func(ctx context.Context, body []byte) error {
		handled = append(handled, "fail")
		return errors.New("remote server said 502")
	})
	d.Handle("panic", func(ctx context.Context, body []byte) error {
		handled = append(handled, "panic")
		var m map[string]int
		m["boom"]++
		return nil
	})
	return d, &handled
}

func decodeBatch(t *testing.T) events.SQSEvent {
	t.Helper()
	var ev events.SQSEvent
	if err := json.Unmarshal([]byte(sqsBatch), &ev); err != nil {
		t.Fatal(err)
	}
	return ev
}

func TestDispatcher_HandleSQSEvent(t *testing.T) {
	var logs bytes.Buffer
	d, handled := newDispatcher(t, &logs)
	resp, err := d.HandleSQSEvent(context.Background(), decodeBatch(t))
	if err != nil {
		t.Fatalf("got error %v, want nil: failures go in the response", err)
	}
	var failed []string
	for _, f := range resp.BatchItemFailures {
		failed = append(failed, f.ItemIdentifier)
	}
	if got, want := strings.Join(failed, " "), "m-fail m-unknown m-nokind m-panic"; got != want {
		t.Errorf("batch item failures: got %q, want %q", got, want)
	}
	if got, want := strings.Join(*handled, "|"), "ok body|fail|panic|ok body 2"; got != want {
		t.Errorf("handlers ran: got %q, want %q", got, want)
	}

	out, _ := json.Marshal(resp)
	if !strings.Contains(string(out), `"batchItemFailures":[{"itemIdentifier":"m-fail"}`) {
		t.Errorf("response JSON %s is not in the shape Lambda reads", out)
	}

	text := logs.String()
	for _, want := range []string{`"kind":"from.the.future"`, `"message_id":"m-unknown"`, `"message_id":"m-nokind"`, `"message_id":"m-fail"`, `"message_id":"m-panic"`, "remote server said 502"} {
		if !strings.Contains(text, want) {
			t.Errorf("logs lack %s:\n%s", want, text)
		}
	}
	if strings.Contains(text, "secret-token") {
		t.Errorf("logs contain a message body:\n%s", text)
	}
}

func TestDispatcher_HandleSQSEvent_AllSucceed(t *testing.T) {
	var logs bytes.Buffer
	d, _ := newDispatcher(t, &logs)
	ev := events.SQSEvent{Records: []events.SQSMessage{{
		MessageId:         "a",
		Body:              "x",
		MessageAttributes: map[string]events.SQSMessageAttribute{"kind": {StringValue: aws.String("ok"), DataType: "String"}},
	}}}
	resp, err := d.HandleSQSEvent(context.Background(), ev)
	if err != nil || len(resp.BatchItemFailures) != 0 {
		t.Fatalf("got %+v, %v; want no failures", resp, err)
	}
	// Only the job's own line: its kind, ID, outcome and DynamoDB meter.
	var line struct {
		Msg, Kind string
		ID        string `json:"message_id"`
		OK        bool
		DynamoDB  *struct{ Calls, RCU, WCU float64 }
	}
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
		t.Fatalf("want one JSON log line, got %q: %v", logs.String(), err)
	}
	if line.Msg != "job" || line.Kind != "ok" || line.ID != "a" || !line.OK || line.DynamoDB == nil {
		t.Errorf("logged %s, want the job line of kind ok, message a, ok, with its dynamodb meter", logs.String())
	}
}

// TestDispatcher_JobMeter checks that a handler runs with a DynamoDB meter
// in its context, whose figures the job's log line reports.
func TestDispatcher_JobMeter(t *testing.T) {
	d := &queue.Dispatcher{Logger: slog.New(slog.DiscardHandler)}
	metered := false
	d.Handle("m", func(ctx context.Context, _ []byte) error { metered = store.MeterFrom(ctx) != nil; return nil })
	ev := events.SQSEvent{Records: []events.SQSMessage{{MessageId: "a", MessageAttributes: map[string]events.SQSMessageAttribute{"kind": {StringValue: aws.String("m"), DataType: "String"}}}}}
	if _, err := d.HandleSQSEvent(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	if !metered {
		t.Error("the handler's context has no DynamoDB meter")
	}
}

// TestDispatcher_HandleSQSEvent_Deadline checks that once the invocation's
// context ends, the remaining records are failed without being run.
func TestDispatcher_HandleSQSEvent_Deadline(t *testing.T) {
	var logs bytes.Buffer
	d, handled := newDispatcher(t, &logs)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	resp, err := d.HandleSQSEvent(ctx, decodeBatch(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.BatchItemFailures) != 6 || len(*handled) != 0 {
		t.Errorf("got %d failures and handlers %v, want all 6 failed and none run", len(resp.BatchItemFailures), *handled)
	}
}

func TestDispatcher_HandlePanics(t *testing.T) {
	ok := func(context.Context, []byte) error { return nil }
	cases := []struct {
		name string
		do   func(d *queue.Dispatcher)
	}{
		{"EmptyKind", func(d *queue.Dispatcher) { d.Handle("", ok) }},
		{"NilHandler", func(d *queue.Dispatcher) { d.Handle("k", nil) }},
		{"Duplicate", func(d *queue.Dispatcher) { d.Handle("k", ok); d.Handle("k", ok) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("got no panic")
				}
			}()
			tc.do(&queue.Dispatcher{})
		})
	}
}

// failingReceiver is an API whose receives fail until ctx ends.
type failingReceiver struct {
	queue.API
	calls int
}

func (f *failingReceiver) ReceiveMessage(ctx context.Context, _ *sqs.ReceiveMessageInput, _ ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	f.calls++
	return nil, errors.New("connection refused")
}

// TestDispatcher_PollRetriesReceive checks that Poll survives receive errors,
// pausing between tries, and still returns when ctx ends.
func TestDispatcher_PollRetriesReceive(t *testing.T) {
	var logs bytes.Buffer
	d := &queue.Dispatcher{Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	f := &failingReceiver{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	began := time.Now()
	d.Poll(ctx, f, "memory://q")
	// Bounds a loaded machine keeps: the context ends Poll, whatever the
	// scheduler does.
	if elapsed := time.Since(began); elapsed > 10*time.Second {
		t.Errorf("Poll returned %v after start, want soon after its 2s context", elapsed)
	}
	// Pauses of 100, 200, 400, 800 ms: a few tries, not a busy loop.
	if f.calls < 2 || f.calls > 10 {
		t.Errorf("got %d receive calls in 2s, want 2 to 10", f.calls)
	}
	if !strings.Contains(logs.String(), "connection refused") {
		t.Errorf("receive error not logged: %s", logs.String())
	}
}

func TestDispatcher_PollStopsPromptly(t *testing.T) {
	m := &queue.Memory{}
	var d queue.Dispatcher
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		d.Poll(ctx, m, "memory://idle")
		close(stopped)
	}()
	time.Sleep(100 * time.Millisecond) // in its 20 s long poll by now
	cancel()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Poll still running 10s after its context ended, in its 20 s long poll")
	}
}

// TestDispatcher_HandleLong: a long message runs beside the rest of its
// batch. The long one, first in the batch, waits for the short one behind
// it: run before it, the batch would never end. The long one's failure
// is the batch's failure of that message alone.
func TestDispatcher_HandleLong(t *testing.T) {
	d := &queue.Dispatcher{Logger: slog.New(slog.NewJSONHandler(&bytes.Buffer{}, nil))}
	shortDone := make(chan struct{})
	var order []string
	d.HandleLong("long", func(ctx context.Context, body []byte) error {
		select {
		case <-shortDone:
		case <-ctx.Done():
			return ctx.Err()
		}
		return errors.New("the long one fails")
	})
	d.Handle("short", func(ctx context.Context, body []byte) error {
		order = append(order, string(body))
		if string(body) == "s2" {
			close(shortDone)
		}
		return nil
	})
	rec := func(id, kind string) events.SQSMessage {
		return events.SQSMessage{MessageId: id, Body: id, MessageAttributes: map[string]events.SQSMessageAttribute{
			queue.AttrKind: {StringValue: aws.String(kind), DataType: "String"}}}
	}
	// The test's own bound on a batch that never ends, not a timing.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := d.HandleSQSEvent(ctx, events.SQSEvent{Records: []events.SQSMessage{rec("l1", "long"), rec("s1", "short"), rec("s2", "short")}})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(order, ",") != "s1,s2" {
		t.Fatalf("short messages ran %v, want s1,s2 in order", order)
	}
	if len(res.BatchItemFailures) != 1 || res.BatchItemFailures[0].ItemIdentifier != "l1" {
		t.Fatalf("failures %+v, want l1 alone", res.BatchItemFailures)
	}
}
