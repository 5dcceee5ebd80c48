package queue_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/cirrus-matrix/cirrus/shared/queue"
	"github.com/cirrus-matrix/cirrus/shared/store"
	"github.com/cirrus-matrix/cirrus/shared/store/embedded"
)

// TestDispatcher_JobRoundTrips checks that a job's log line carries the
// sequential DynamoDB round trips of its calls, on a real store: two
// reads one after the other are two.
func TestDispatcher_JobRoundTrips(t *testing.T) {
	srv, err := embedded.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ctx := context.Background()
	s, err := store.Open(ctx, store.Options{Table: "jobs", Endpoint: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateTable(ctx); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	d := &queue.Dispatcher{Logger: slog.New(slog.NewJSONHandler(&logs, nil))}
	d.Handle("reads", func(ctx context.Context, _ []byte) error {
		for _, sk := range []string{"a", "b"} {
			var out struct{}
			if err := s.Get(ctx, store.Key{PK: "p", SK: sk}, &out); !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
		return nil
	})
	ev := events.SQSEvent{Records: []events.SQSMessage{{MessageId: "a", MessageAttributes: map[string]events.SQSMessageAttribute{"kind": {StringValue: aws.String("reads"), DataType: "String"}}}}}
	if _, err := d.HandleSQSEvent(ctx, ev); err != nil {
		t.Fatal(err)
	}
	var line struct {
		Msg      string
		OK       bool
		DynamoDB store.Usage `json:"dynamodb"`
	}
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
		t.Fatalf("want one JSON log line, got %q: %v", logs.String(), err)
	}
	if line.Msg != "job" || !line.OK || line.DynamoDB.Calls != 2 || line.DynamoDB.RoundTrips != 2 {
		t.Errorf("logged %s, want the job line with 2 calls, 2 round trips", logs.String())
	}
}
