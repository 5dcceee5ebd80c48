package queue_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/cirrus-matrix/cirrus/shared/queue"
	"github.com/cirrus-matrix/cirrus/shared/testenv"
)

// TestMain keeps the SQS stand-in running across the package's tests.
func TestMain(m *testing.M) { testenv.Main(m) }

// backend is a queue implementation the Queue tests run against. open
// returns an empty queue whose received messages reappear after at most one
// second unless deleted.
type backend struct {
	name string
	open func(t *testing.T) (queue.API, string)
}

// settle is how long, in seconds, assertEmpty waits for a message that was
// received but not deleted to reappear: more than any backend's visibility
// timeout.
const settle = 2

func backends() []backend {
	return []backend{
		{"Memory", func(t *testing.T) (queue.API, string) {
			return &queue.Memory{VisibilityTimeout: 300 * time.Millisecond}, "memory://" + t.Name()
		}},
		{"fauxqs", func(t *testing.T) (queue.API, string) {
			client := sqs.NewFromConfig(testenv.AWSConfig(testenv.StartSQS(t)))
			ctx := context.Background()
			out, err := client.CreateQueue(ctx, &sqs.CreateQueueInput{
				QueueName:  aws.String("test-" + randomHex(8)),
				Attributes: map[string]string{string(types.QueueAttributeNameVisibilityTimeout): "1"},
			})
			if err != nil {
				t.Fatalf("create queue: %v", err)
			}
			t.Cleanup(func() {
				if _, err := client.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: out.QueueUrl}); err != nil {
					t.Errorf("delete queue: %v", err)
				}
			})
			return client, aws.ToString(out.QueueUrl)
		}},
	}
}

// forEachBackend runs f against every backend. The cases run in parallel,
// with each other too, since most wait for visibility timeouts.
func forEachBackend(t *testing.T, f func(t *testing.T, api queue.API, url string)) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			api, url := b.open(t)
			f(t, api, url)
		})
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func receive(t *testing.T, api queue.API, url string, wait int32, in *sqs.ReceiveMessageInput) []types.Message {
	t.Helper()
	if in == nil {
		in = &sqs.ReceiveMessageInput{MessageAttributeNames: []string{"All"}}
	}
	in.QueueUrl = aws.String(url)
	in.WaitTimeSeconds = wait
	if in.MaxNumberOfMessages == 0 {
		in.MaxNumberOfMessages = 10
	}
	out, err := api.ReceiveMessage(context.Background(), in)
	if err != nil {
		t.Fatalf("receive message: %v", err)
	}
	return out.Messages
}

// assertEmpty waits longer than the visibility timeout, so that a message
// received but not deleted would be delivered again.
func assertEmpty(t *testing.T, api queue.API, url string) {
	t.Helper()
	if msgs := receive(t, api, url, settle, nil); len(msgs) != 0 {
		t.Fatalf("queue not empty: got %d messages, first body %q", len(msgs), aws.ToString(msgs[0].Body))
	}
}

func kindOf(m types.Message) string {
	return aws.ToString(m.MessageAttributes[queue.AttrKind].StringValue)
}

func TestQueue_SendReceiveDelete(t *testing.T) {
	forEachBackend(t, func(t *testing.T, api queue.API, url string) {
		ctx := context.Background()
		q := queue.New(api, url)
		body := `{"destination":"remote.example","pdu":"$abc:ü"}`
		if err := q.Send(ctx, "federation.pdu", []byte(body)); err != nil {
			t.Fatal(err)
		}
		msgs := receive(t, api, url, 5, nil)
		if len(msgs) != 1 {
			t.Fatalf("got %d messages, want 1", len(msgs))
		}
		m := msgs[0]
		if got := aws.ToString(m.Body); got != body {
			t.Errorf("body: got %q, want %q", got, body)
		}
		if got := kindOf(m); got != "federation.pdu" {
			t.Errorf("kind: got %q, want federation.pdu", got)
		}
		if got := aws.ToString(m.MessageAttributes[queue.AttrKind].DataType); got != "String" {
			t.Errorf("kind data type: got %q, want String", got)
		}
		if aws.ToString(m.MessageId) == "" || aws.ToString(m.ReceiptHandle) == "" {
			t.Errorf("got message ID %q and receipt handle %q, want both set", aws.ToString(m.MessageId), aws.ToString(m.ReceiptHandle))
		}
		if _, err := api.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(url), ReceiptHandle: m.ReceiptHandle}); err != nil {
			t.Fatalf("delete message: %v", err)
		}
		assertEmpty(t, api, url)
	})
}

// TestQueue_AttributesByName checks that the kind comes back when a receive
// asks for it by name, as Poll does. (SQS returns no attribute that was not
// asked for, and Memory follows it; fauxqs 1.9.2 returns them all, so that
// half is tested on Memory only, in TestMemory_AttributesOnlyWhenAsked.)
func TestQueue_AttributesByName(t *testing.T) {
	forEachBackend(t, func(t *testing.T, api queue.API, url string) {
		if err := queue.New(api, url).Send(context.Background(), "k", []byte("x")); err != nil {
			t.Fatal(err)
		}
		msgs := receive(t, api, url, 5, &sqs.ReceiveMessageInput{MessageAttributeNames: []string{queue.AttrKind}})
		if len(msgs) != 1 || kindOf(msgs[0]) != "k" {
			t.Fatalf("asking for %q: got %d messages, %+v", queue.AttrKind, len(msgs), msgs)
		}
	})
}

// TestQueue_Visibility checks that a received message is hidden for the
// visibility timeout and then delivered again with a new receipt handle.
func TestQueue_Visibility(t *testing.T) {
	forEachBackend(t, func(t *testing.T, api queue.API, url string) {
		ctx := context.Background()
		if err := queue.New(api, url).Send(ctx, "k", []byte("again")); err != nil {
			t.Fatal(err)
		}
		sys := &sqs.ReceiveMessageInput{MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameApproximateReceiveCount}}
		first := receive(t, api, url, 5, sys)
		if len(first) != 1 {
			t.Fatalf("first receive: got %d messages, want 1", len(first))
		}
		if got := receive(t, api, url, 0, nil); len(got) != 0 {
			t.Fatalf("during visibility timeout: got %d messages, want 0", len(got))
		}
		began := time.Now()
		second := receive(t, api, url, 5, sys)
		if len(second) != 1 {
			t.Fatalf("after visibility timeout: got %d messages, want 1", len(second))
		}
		// Within the 5 s wait, so after the 1 s visibility timeout.
		t.Logf("message came back after %v", time.Since(began))
		if aws.ToString(second[0].MessageId) != aws.ToString(first[0].MessageId) {
			t.Errorf("got message %s, want %s again", aws.ToString(second[0].MessageId), aws.ToString(first[0].MessageId))
		}
		if aws.ToString(second[0].ReceiptHandle) == aws.ToString(first[0].ReceiptHandle) {
			t.Error("second receive has the first receipt handle, want a new one")
		}
		if got := second[0].Attributes[string(types.MessageSystemAttributeNameApproximateReceiveCount)]; got != "2" {
			t.Errorf("ApproximateReceiveCount: got %q, want 2", got)
		}
		if _, err := api.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(url), ReceiptHandle: second[0].ReceiptHandle}); err != nil {
			t.Fatal(err)
		}
		assertEmpty(t, api, url)
	})
}

// TestQueue_LargestMessage sends the largest message Send accepts, which
// checks that its size accounting matches the backends', and one byte more.
func TestQueue_LargestMessage(t *testing.T) {
	forEachBackend(t, func(t *testing.T, api queue.API, url string) {
		ctx := context.Background()
		q := queue.New(api, url)
		kind := "k"
		attrSize := len(queue.AttrKind) + len("String") + len(kind)
		body := strings.Repeat("a", queue.MaxMessageSize-attrSize)
		if err := q.Send(ctx, kind, []byte(body+"a")); !errors.Is(err, queue.ErrTooLarge) {
			t.Fatalf("one byte over: got %v, want ErrTooLarge", err)
		}
		if err := q.Send(ctx, kind, []byte(body)); err != nil {
			t.Fatalf("at the limit: %v", err)
		}
		msgs := receive(t, api, url, 5, nil)
		if len(msgs) != 1 || len(aws.ToString(msgs[0].Body)) != len(body) {
			t.Fatalf("got %d messages, want 1 of %d bytes", len(msgs), len(body))
		}
	})
}

// TestDispatcher_Poll drains a queue with the handlers' retry path: one
// handler fails once, and its message must come back and succeed.
func TestDispatcher_Poll(t *testing.T) {
	forEachBackend(t, func(t *testing.T, api queue.API, url string) {
		var mu sync.Mutex
		calls := map[string]int{}
		done := make(chan struct{})
		var once sync.Once
		record := func(kind string) int {
			mu.Lock()
			defer mu.Unlock()
			calls[kind]++
			if calls["ok"] == 1 && calls["flaky"] == 2 {
				once.Do(func() { close(done) })
			}
			return calls[kind]
		}
		var d queue.Dispatcher
		d.Handle("ok", func(ctx context.Context, body []byte) error {
			record("ok")
			return nil
		})
		d.Handle("flaky", func(ctx context.Context, body []byte) error {
			if record("flaky") == 1 {
				return errors.New("remote server unreachable")
			}
			return nil
		})

		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		q := queue.New(api, url)
		for _, kind := range []string{"ok", "flaky"} {
			if err := q.Send(ctx, kind, []byte("body of "+kind)); err != nil {
				t.Fatal(err)
			}
		}
		stopped := make(chan struct{})
		go func() {
			d.Poll(ctx, api, url)
			close(stopped)
		}()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			mu.Lock()
			t.Fatalf("handlers not done after 15s: calls %v", calls)
		}
		cancel()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			t.Fatal("Poll still running 5s after its context ended")
		}
		assertEmpty(t, api, url)
		mu.Lock()
		defer mu.Unlock()
		if calls["ok"] != 1 || calls["flaky"] != 2 {
			t.Errorf("got calls %v, want ok once and flaky twice", calls)
		}
	})
}

// sendRecorder is an API that records SendMessage and refuses the rest.
type sendRecorder struct {
	queue.API
	sent []*sqs.SendMessageInput
}

func (r *sendRecorder) SendMessage(ctx context.Context, in *sqs.SendMessageInput, _ ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
	r.sent = append(r.sent, in)
	return &sqs.SendMessageOutput{MessageId: aws.String("id")}, nil
}

func TestQueue_SendRefuses(t *testing.T) {
	cases := []struct {
		name, kind string
		body       []byte
		want       error
	}{
		{"EmptyKind", "", []byte("x"), queue.ErrNoKind},
		{"EmptyBody", "k", nil, queue.ErrEmptyBody},
		{"TooLarge", "k", make([]byte, queue.MaxMessageSize), queue.ErrTooLarge},
		{"NUL", "k", []byte("a\x00b"), queue.ErrInvalidText},
		{"InvalidUTF8", "k", []byte("a\xffb"), queue.ErrInvalidText},
		{"Surrogate", "k", []byte("\xed\xa0\x80"), queue.ErrInvalidText},
		{"NonCharacter", "k", []byte("\uffff"), queue.ErrInvalidText},
		{"KindControl", "k\x01", []byte("x"), queue.ErrInvalidText},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := &sendRecorder{}
			err := queue.New(r, "url").Send(context.Background(), tc.kind, tc.body)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Send(%q, %q): got %v, want %v", tc.kind, tc.body, err, tc.want)
			}
			if len(r.sent) != 0 {
				t.Errorf("Send(%q, %q) sent a request, want none", tc.kind, tc.body)
			}
		})
	}
}

func TestQueue_SendRequest(t *testing.T) {
	r := &sendRecorder{}
	body := "tab\tnewline\nreplacement\uFFFD astral \U0001F600"
	if err := queue.New(r, "https://sqs.example/1/q").Send(context.Background(), "k", []byte(body)); err != nil {
		t.Fatal(err)
	}
	if len(r.sent) != 1 {
		t.Fatalf("got %d requests, want 1", len(r.sent))
	}
	in := r.sent[0]
	if aws.ToString(in.QueueUrl) != "https://sqs.example/1/q" || aws.ToString(in.MessageBody) != body {
		t.Errorf("got queue %q body %q", aws.ToString(in.QueueUrl), aws.ToString(in.MessageBody))
	}
	a := in.MessageAttributes[queue.AttrKind]
	if aws.ToString(a.DataType) != "String" || aws.ToString(a.StringValue) != "k" || len(in.MessageAttributes) != 1 {
		t.Errorf("got attributes %+v, want only kind=k as String", in.MessageAttributes)
	}
}
