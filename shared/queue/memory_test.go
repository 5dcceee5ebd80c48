package queue_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/cirrus-matrix/cirrus/shared/queue"
)

const memURL = "memory://q"

func mustSend(t *testing.T, m *queue.Memory, url, body string, attrs map[string]types.MessageAttributeValue) string {
	t.Helper()
	out, err := m.SendMessage(context.Background(), &sqs.SendMessageInput{
		QueueUrl: aws.String(url), MessageBody: aws.String(body), MessageAttributes: attrs,
	})
	if err != nil {
		t.Fatalf("send %q: %v", body, err)
	}
	return aws.ToString(out.MessageId)
}

func mustDelete(t *testing.T, m *queue.Memory, handle *string) {
	t.Helper()
	if _, err := m.DeleteMessage(context.Background(), &sqs.DeleteMessageInput{QueueUrl: aws.String(memURL), ReceiptHandle: handle}); err != nil {
		t.Fatalf("delete: %v", err)
	}
}

func bodies(msgs []types.Message) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, aws.ToString(m.Body))
	}
	return out
}

func TestMemory_OrderAndBatchSize(t *testing.T) {
	t.Parallel()
	m := &queue.Memory{}
	for i := range 15 {
		mustSend(t, m, memURL, fmt.Sprint(i), nil)
	}
	first := receive(t, m, memURL, 0, &sqs.ReceiveMessageInput{MaxNumberOfMessages: 10})
	second := receive(t, m, memURL, 0, &sqs.ReceiveMessageInput{MaxNumberOfMessages: 10})
	if got, want := fmt.Sprint(bodies(first)), "[0 1 2 3 4 5 6 7 8 9]"; got != want {
		t.Errorf("first receive: got %s, want %s", got, want)
	}
	if got, want := fmt.Sprint(bodies(second)), "[10 11 12 13 14]"; got != want {
		t.Errorf("second receive: got %s, want %s", got, want)
	}
	one, err := m.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{QueueUrl: aws.String("memory://other")})
	if err != nil || len(one.Messages) != 0 {
		t.Errorf("other queue URL: got %v, %v; want an empty, separate queue", one, err)
	}
}

func TestMemory_RandomIDs(t *testing.T) {
	t.Parallel()
	m := &queue.Memory{VisibilityTimeout: time.Second}
	ids := map[string]bool{}
	for range 50 {
		id := mustSend(t, m, memURL, "x", nil)
		if len(id) != 36 || ids[id] {
			t.Fatalf("got message ID %q (seen: %v), want a fresh UUID", id, ids[id])
		}
		ids[id] = true
	}
	handles := map[string]bool{}
	for _, msg := range receive(t, m, memURL, 0, &sqs.ReceiveMessageInput{MaxNumberOfMessages: 10}) {
		h := aws.ToString(msg.ReceiptHandle)
		if len(h) < 32 || handles[h] {
			t.Fatalf("got receipt handle %q, want a long unique one", h)
		}
		handles[h] = true
	}
}

func TestMemory_AttributesOnlyWhenAsked(t *testing.T) {
	t.Parallel()
	m := &queue.Memory{}
	str := func(s string) types.MessageAttributeValue {
		return types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(s)}
	}
	bin := []byte{1, 2, 3}
	attrs := map[string]types.MessageAttributeValue{
		"kind":       str("k"),
		"trace.id":   str("t1"),
		"trace.span": str("s1"),
		"blob":       {DataType: aws.String("Binary"), BinaryValue: bin},
	}
	cases := []struct {
		names []string
		want  string
	}{
		{nil, "[]"},
		{[]string{"kind"}, "[kind]"},
		{[]string{"trace.*"}, "[trace.id trace.span]"},
		{[]string{"All"}, "[blob kind trace.id trace.span]"},
		{[]string{".*"}, "[blob kind trace.id trace.span]"},
		{[]string{"missing"}, "[]"},
	}
	for _, tc := range cases {
		mustSend(t, m, memURL, "x", attrs)
		msgs := receive(t, m, memURL, 0, &sqs.ReceiveMessageInput{MessageAttributeNames: tc.names})
		if len(msgs) != 1 {
			t.Fatalf("names %v: got %d messages, want 1", tc.names, len(msgs))
		}
		mustDelete(t, m, msgs[0].ReceiptHandle)
		got := slices.Sorted(maps.Keys(msgs[0].MessageAttributes))
		if fmt.Sprint(got) != tc.want {
			t.Errorf("names %v: got attributes %v, want %s", tc.names, got, tc.want)
		}
	}
	mustSend(t, m, memURL, "y", attrs)
	bin[0] = 9 // the caller's slice is copied, not kept
	got := receive(t, m, memURL, 0, &sqs.ReceiveMessageInput{MessageAttributeNames: []string{"blob"}})
	if len(got) != 1 || fmt.Sprint(got[0].MessageAttributes["blob"].BinaryValue) != "[1 2 3]" {
		t.Errorf("binary attribute: got %+v, want the value as sent, [1 2 3]", got)
	}
}

// TestMemory_StaleReceiptHandle checks SQS's rule that only the latest
// receipt handle deletes a message, and that an old one is no error.
func TestMemory_StaleReceiptHandle(t *testing.T) {
	t.Parallel()
	m := &queue.Memory{VisibilityTimeout: time.Second}
	mustSend(t, m, memURL, "x", nil)
	first := receive(t, m, memURL, 0, nil)
	second := receive(t, m, memURL, 3, nil)
	if len(first) != 1 || len(second) != 1 {
		t.Fatalf("got %d then %d messages, want 1 and 1", len(first), len(second))
	}
	mustDelete(t, m, first[0].ReceiptHandle)
	third := receive(t, m, memURL, 3, nil)
	if len(third) != 1 {
		t.Fatalf("after deleting with a stale handle: got %d messages, want the message again", len(third))
	}
	mustDelete(t, m, third[0].ReceiptHandle)
	assertEmpty(t, m, memURL)
}

func TestMemory_LongPoll(t *testing.T) {
	t.Parallel()
	t.Run("WakesOnSend", func(t *testing.T) {
		t.Parallel()
		m := &queue.Memory{}
		go func() {
			time.Sleep(100 * time.Millisecond)
			mustSend(t, m, memURL, "late", nil)
		}()
		began := time.Now()
		msgs := receive(t, m, memURL, 10, nil)
		// Before the 10 s wait ends: the send woke it.
		if len(msgs) != 1 || time.Since(began) >= 10*time.Second {
			t.Fatalf("got %d messages after %v, want 1 before the wait ended", len(msgs), time.Since(began))
		}
	})
	t.Run("HonoursWait", func(t *testing.T) {
		t.Parallel()
		m := &queue.Memory{}
		began := time.Now()
		msgs := receive(t, m, memURL, 1, nil)
		// Upper bound loose: a loaded machine may overrun the wait.
		if waited := time.Since(began); len(msgs) != 0 || waited < time.Second || waited > 10*time.Second {
			t.Fatalf("got %d messages after %v, want none after 1s", len(msgs), waited)
		}
	})
	t.Run("NoWait", func(t *testing.T) {
		t.Parallel()
		m := &queue.Memory{}
		began := time.Now()
		// Not the 20 s of SQS's longest wait.
		if msgs := receive(t, m, memURL, 0, nil); len(msgs) != 0 || time.Since(began) > 5*time.Second {
			t.Fatalf("got %d messages after %v, want none at once", len(msgs), time.Since(began))
		}
	})
	t.Run("InterruptedByContext", func(t *testing.T) {
		t.Parallel()
		m := &queue.Memory{}
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(100*time.Millisecond, cancel)
		began := time.Now()
		_, err := m.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(memURL), WaitTimeSeconds: 20})
		// Well before the 20 s wait.
		if !errors.Is(err, context.Canceled) || time.Since(began) > 10*time.Second {
			t.Fatalf("got %v after %v, want context.Canceled soon after the cancel", err, time.Since(began))
		}
	})
}

func TestMemory_Delay(t *testing.T) {
	t.Parallel()
	m := &queue.Memory{}
	if _, err := m.SendMessage(context.Background(), &sqs.SendMessageInput{
		QueueUrl: aws.String(memURL), MessageBody: aws.String("later"), DelaySeconds: 1,
	}); err != nil {
		t.Fatal(err)
	}
	if msgs := receive(t, m, memURL, 0, nil); len(msgs) != 0 {
		t.Fatalf("before the delay: got %d messages, want 0", len(msgs))
	}
	if msgs := receive(t, m, memURL, 3, nil); len(msgs) != 1 {
		t.Fatalf("after the delay: got %d messages, want 1", len(msgs))
	}
}

// TestMemory_Concurrent has producers and consumers race on one queue: every
// message must be handled exactly once.
func TestMemory_Concurrent(t *testing.T) {
	t.Parallel()
	const producers, perProducer, consumers = 4, 50, 4
	m := &queue.Memory{}
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range perProducer {
				mustSend(t, m, memURL, fmt.Sprintf("%d-%d", p, i), nil)
			}
		})
	}
	var mu sync.Mutex
	seen := map[string]int{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var cw sync.WaitGroup
	for range consumers {
		cw.Go(func() {
			for {
				out, err := m.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(memURL), MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
				if err != nil {
					return
				}
				for _, msg := range out.Messages {
					mu.Lock()
					seen[aws.ToString(msg.Body)]++
					n := len(seen)
					mu.Unlock()
					if _, err := m.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(memURL), ReceiptHandle: msg.ReceiptHandle}); err != nil {
						t.Errorf("delete: %v", err)
					}
					if n == producers*perProducer {
						cancel()
					}
				}
			}
		})
	}
	wg.Wait()
	cw.Wait()
	if len(seen) != producers*perProducer {
		t.Fatalf("got %d distinct messages, want %d", len(seen), producers*perProducer)
	}
	for body, n := range seen {
		if n != 1 {
			t.Errorf("message %s handled %d times, want once", body, n)
		}
	}
}

func TestMemory_Refuses(t *testing.T) {
	t.Parallel()
	m := &queue.Memory{}
	ctx := context.Background()
	cases := []struct {
		name string
		call func() error
	}{
		{"SendNoURL", func() error {
			_, err := m.SendMessage(ctx, &sqs.SendMessageInput{MessageBody: aws.String("x")})
			return err
		}},
		{"SendEmptyBody", func() error {
			_, err := m.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(memURL), MessageBody: aws.String("")})
			return err
		}},
		{"SendTooLarge", func() error {
			_, err := m.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(memURL), MessageBody: aws.String(string(make([]byte, queue.MaxMessageSize+1)))})
			return err
		}},
		{"SendBadDelay", func() error {
			_, err := m.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(memURL), MessageBody: aws.String("x"), DelaySeconds: 901})
			return err
		}},
		{"SendAttributeWithoutType", func() error {
			_, err := m.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(memURL), MessageBody: aws.String("x"),
				MessageAttributes: map[string]types.MessageAttributeValue{"a": {StringValue: aws.String("v")}}})
			return err
		}},
		{"ReceiveTooMany", func() error {
			_, err := m.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(memURL), MaxNumberOfMessages: 11})
			return err
		}},
		{"ReceiveWaitTooLong", func() error {
			_, err := m.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(memURL), WaitTimeSeconds: 21})
			return err
		}},
		{"ReceiveNegativeVisibility", func() error {
			_, err := m.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(memURL), VisibilityTimeout: -1})
			return err
		}},
		{"DeleteNoHandle", func() error {
			_, err := m.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(memURL)})
			return err
		}},
	}
	for _, tc := range cases {
		if err := tc.call(); err == nil {
			t.Errorf("%s: got no error", tc.name)
		}
	}
	if msgs := receive(t, m, memURL, 0, nil); len(msgs) != 0 {
		t.Errorf("refused sends left %d messages", len(msgs))
	}
}
