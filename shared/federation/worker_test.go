package federation_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	lambdaevents "github.com/aws/aws-lambda-go/events"
)

// TestWorker_TwoWorkers: two servers on one table run a room's messages
// at once, as two Lambda instances would; the room's lock lets one drain
// it, and every PDU reaches the engine once, in order.
func TestWorker_TwoWorkers(t *testing.T) {
	rm := newRemote(t)
	engine := &fakeEngine{Have: map[string]bool{"$a": true}}
	fs := startFed(t, engine)
	twin := fs.Twin(t)
	twin.Server.Inbox.Engine = engine
	twin.Server.Inbox.Send = fs.Server.Inbox.Send
	room := fs.room(t)
	prev, want := "$a", []string{}
	for txn := range 4 {
		var pdus []json.RawMessage
		for i := range 3 {
			body := fmt.Sprintf("m%d.%d", txn, i)
			ev := rm.event(t, room, body, int64(10+3*txn+i), prev)
			prev, want = ev.EventID(), append(want, body)
			pdus = append(pdus, ev.JSON())
		}
		if r := rm.send(t, fs.FedURL, fmt.Sprint("txn", txn), pdus, nil); r.Status != 200 {
			t.Fatalf("send: %d %s", r.Status, r.Raw)
		}
	}
	msgs := fs.messages(t)
	if len(msgs) != 4 {
		t.Fatalf("%d messages queued, want 4", len(msgs))
	}
	var wg sync.WaitGroup
	failures := make([]int, len(msgs))
	for i, m := range msgs {
		srv := fs.Server
		if i%2 == 1 {
			srv = twin.Server
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, _ := srv.Jobs.HandleSQSEvent(context.Background(), lambdaevents.SQSEvent{Records: []lambdaevents.SQSMessage{m}})
			failures[i] = len(res.BatchItemFailures)
		}()
	}
	wg.Wait()
	fs.work(t) // whatever a worker queued again
	if got := engine.Bodies(); !slices.Equal(got, want) {
		t.Errorf("engine got %v, want %v, each once", got, want)
	}
	if slices.Max(failures) != 0 {
		t.Errorf("failures per message: %v", failures)
	}
	if left := fs.inbox(t, room); len(left) != 0 {
		t.Errorf("inbox still holds %v", left)
	}
}

// TestWorker_Retries: a PDU the engine fails on is tried with each
// delivery, the room's later PDUs waiting, and dropped at the third
// failure so that the room goes on.
func TestWorker_Retries(t *testing.T) {
	rm := newRemote(t)
	engine := &fakeEngine{Have: map[string]bool{"$a": true}, Fail: map[string]bool{"bad": true}}
	fs := startFed(t, engine)
	room := fs.room(t)
	bad := rm.event(t, room, "bad", 10, "$a")
	good := rm.event(t, room, "good", 11, "$a")
	if r := rm.send(t, fs.FedURL, "t", []json.RawMessage{bad.JSON(), good.JSON()}, nil); r.Status != 200 {
		t.Fatalf("send: %d %s", r.Status, r.Raw)
	}
	msgs := fs.messages(t)
	if len(msgs) != 1 {
		t.Fatalf("%d messages queued, want 1", len(msgs))
	}
	batch := lambdaevents.SQSEvent{Records: msgs}
	for try := 1; try <= 2; try++ {
		res, _ := fs.Server.Jobs.HandleSQSEvent(context.Background(), batch)
		if len(res.BatchItemFailures) != 1 || len(engine.Got) != 0 || engine.Calls != try {
			t.Fatalf("delivery %d: %d failures, engine got %d in %d calls; want the message failed, nothing taken, %d calls",
				try, len(res.BatchItemFailures), len(engine.Got), engine.Calls, try)
		}
		if left := fs.inbox(t, room); !slices.Equal(left, []string{bad.EventID(), good.EventID()}) {
			t.Fatalf("delivery %d: inbox holds %v, want both PDUs", try, left)
		}
	}
	res, _ := fs.Server.Jobs.HandleSQSEvent(context.Background(), batch)
	if len(res.BatchItemFailures) != 0 || !slices.Equal(engine.Bodies(), []string{"good"}) {
		t.Fatalf("third delivery: %d failures, engine got %v; want success and the good PDU", len(res.BatchItemFailures), engine.Bodies())
	}
	if left := fs.inbox(t, room); len(left) != 0 {
		t.Errorf("inbox still holds %v", left)
	}
	if logs := fs.Logs(); !strings.Contains(logs, "inbound PDU dropped") || !strings.Contains(logs, bad.EventID()) {
		t.Errorf("the dropped PDU is not logged")
	}
}
