package queue

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// SQS's limits and defaults that Memory applies.
const (
	defaultVisibility = 30 * time.Second
	maxVisibility     = 12 * time.Hour
	maxWaitSeconds    = 20
	maxReceive        = 10
	maxDelaySeconds   = 900
)

// Memory is an in-process queue with the semantics of a standard SQS queue
// that Cirrus relies on, for `cirrus serve`, which has no SQS: messages stay
// until deleted; a received message is hidden for its visibility timeout
// and then delivered again, with a new receipt handle, if it was not
// deleted; ReceiveMessage long-polls for up to WaitTimeSeconds and returns
// early when ctx ends; message attributes are kept and returned when asked
// for by name, as SQS does.
//
// Each queue URL names its own queue, created on first use. Messages live in
// memory only: they are lost when the process exits. The zero value is ready
// to use and it is safe for concurrent use. The sqs.Options functions that
// calls pass are ignored.
type Memory struct {
	// VisibilityTimeout applies to a ReceiveMessage that sets none, like a
	// queue's VisibilityTimeout attribute; zero means SQS's default, 30 s.
	VisibilityTimeout time.Duration

	mu     sync.Mutex
	queues map[string]*memQueue
}

type memQueue struct {
	msgs []*memMessage // in the order they were sent
	// added is closed, and replaced, when a message is sent, to wake long polls.
	added chan struct{}
}

type memMessage struct {
	id, body     string
	md5          string
	attrs        map[string]types.MessageAttributeValue
	sent         time.Time
	visibleAt    time.Time
	receipt      string // the latest receipt handle; only it deletes the message
	receives     int
	firstReceive time.Time
}

// queue returns the queue at url, creating it. m.mu must be held.
func (m *Memory) queue(url *string) (*memQueue, error) {
	if aws.ToString(url) == "" {
		return nil, errors.New("memory queue: QueueUrl is empty")
	}
	if m.queues == nil {
		m.queues = make(map[string]*memQueue)
	}
	q := m.queues[*url]
	if q == nil {
		q = &memQueue{added: make(chan struct{})}
		m.queues[*url] = q
	}
	return q, nil
}

// SendMessage adds a message, visible after DelaySeconds. It refuses what
// SQS refuses: an empty or oversized message, characters SQS does not accept,
// attributes without a data type or value.
func (m *Memory) SendMessage(ctx context.Context, in *sqs.SendMessageInput, _ ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memory queue: send message: %w", err)
	}
	body := aws.ToString(in.MessageBody)
	if body == "" {
		return nil, fmt.Errorf("memory queue: send message: %w", ErrEmptyBody)
	}
	if err := checkText(body); err != nil {
		return nil, fmt.Errorf("memory queue: send message: body: %w", err)
	}
	if size := messageSize(len(body), in.MessageAttributes); size > MaxMessageSize {
		return nil, fmt.Errorf("memory queue: send message of %d bytes: %w", size, ErrTooLarge)
	}
	if in.DelaySeconds < 0 || in.DelaySeconds > maxDelaySeconds {
		return nil, fmt.Errorf("memory queue: send message: DelaySeconds %d is outside 0 to %d", in.DelaySeconds, maxDelaySeconds)
	}
	for name, v := range in.MessageAttributes {
		if name == "" || aws.ToString(v.DataType) == "" {
			return nil, fmt.Errorf("memory queue: send message: attribute %q needs a name and a data type", name)
		}
		if v.StringValue == nil && v.BinaryValue == nil {
			return nil, fmt.Errorf("memory queue: send message: attribute %q has no value", name)
		}
	}

	now := time.Now()
	sum := md5.Sum([]byte(body))
	msg := &memMessage{
		id:        newMessageID(),
		body:      body,
		md5:       hex.EncodeToString(sum[:]),
		attrs:     copyAttrs(in.MessageAttributes, all),
		sent:      now,
		visibleAt: now.Add(time.Duration(in.DelaySeconds) * time.Second),
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	q, err := m.queue(in.QueueUrl)
	if err != nil {
		return nil, err
	}
	q.msgs = append(q.msgs, msg)
	close(q.added)
	q.added = make(chan struct{})
	return &sqs.SendMessageOutput{MessageId: aws.String(msg.id), MD5OfMessageBody: aws.String(msg.md5)}, nil
}

// ReceiveMessage returns up to MaxNumberOfMessages (default 1, at most 10)
// visible messages, oldest first, and hides them for VisibilityTimeout
// seconds (or m.VisibilityTimeout). With WaitTimeSeconds (at most 20) it
// waits that long for a first message; it returns ctx's error if ctx ends
// first, as the SDK client does.
func (m *Memory) ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, _ ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	limit := int(in.MaxNumberOfMessages)
	if limit == 0 {
		limit = 1
	}
	if limit < 1 || limit > maxReceive {
		return nil, fmt.Errorf("memory queue: receive message: MaxNumberOfMessages %d is outside 1 to %d", limit, maxReceive)
	}
	if in.WaitTimeSeconds < 0 || in.WaitTimeSeconds > maxWaitSeconds {
		return nil, fmt.Errorf("memory queue: receive message: WaitTimeSeconds %d is outside 0 to %d", in.WaitTimeSeconds, maxWaitSeconds)
	}
	visibility := time.Duration(in.VisibilityTimeout) * time.Second
	if in.VisibilityTimeout == 0 {
		visibility = m.VisibilityTimeout
		if visibility <= 0 {
			visibility = defaultVisibility
		}
	}
	if visibility < 0 || visibility > maxVisibility {
		return nil, fmt.Errorf("memory queue: receive message: VisibilityTimeout %d is outside 0 to %d", in.VisibilityTimeout, int(maxVisibility.Seconds()))
	}
	deadline := time.Now().Add(time.Duration(in.WaitTimeSeconds) * time.Second)

	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("memory queue: receive message: %w", err)
		}
		m.mu.Lock()
		q, err := m.queue(in.QueueUrl)
		if err != nil {
			m.mu.Unlock()
			return nil, err
		}
		now := time.Now()
		msgs, next := q.take(now, limit, visibility, in)
		added := q.added
		m.mu.Unlock()

		if len(msgs) > 0 || !now.Before(deadline) {
			return &sqs.ReceiveMessageOutput{Messages: msgs}, nil
		}
		// Sleep until the wait ends, a message is sent, or a hidden one
		// becomes visible again.
		wake := deadline
		if !next.IsZero() && next.Before(wake) {
			wake = next
		}
		timer := time.NewTimer(wake.Sub(now))
		select {
		case <-ctx.Done():
		case <-added:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// take receives up to limit visible messages and hides them. It also returns
// when the next hidden message becomes visible, or zero if none is hidden.
func (q *memQueue) take(now time.Time, limit int, visibility time.Duration, in *sqs.ReceiveMessageInput) ([]types.Message, time.Time) {
	var out []types.Message
	var next time.Time
	for _, msg := range q.msgs {
		if msg.visibleAt.After(now) {
			if next.IsZero() || msg.visibleAt.Before(next) {
				next = msg.visibleAt
			}
			continue
		}
		if len(out) == limit {
			continue
		}
		msg.receives++
		if msg.receives == 1 {
			msg.firstReceive = now
		}
		msg.receipt = newReceiptHandle()
		msg.visibleAt = now.Add(visibility)
		out = append(out, types.Message{
			MessageId:         aws.String(msg.id),
			ReceiptHandle:     aws.String(msg.receipt),
			Body:              aws.String(msg.body),
			MD5OfBody:         aws.String(msg.md5),
			MessageAttributes: copyAttrs(msg.attrs, selected(in.MessageAttributeNames)),
			Attributes:        systemAttrs(msg, in),
		})
	}
	return out, next
}

// DeleteMessage deletes the message last received with ReceiptHandle. As in
// SQS, an outdated or unknown handle (the message was received again, or is
// already deleted) deletes nothing and is no error.
func (m *Memory) DeleteMessage(ctx context.Context, in *sqs.DeleteMessageInput, _ ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memory queue: delete message: %w", err)
	}
	handle := aws.ToString(in.ReceiptHandle)
	if handle == "" {
		return nil, errors.New("memory queue: delete message: ReceiptHandle is empty")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	q, err := m.queue(in.QueueUrl)
	if err != nil {
		return nil, err
	}
	q.msgs = slices.DeleteFunc(q.msgs, func(msg *memMessage) bool { return msg.receipt == handle })
	return &sqs.DeleteMessageOutput{}, nil
}

// copyAttrs deep-copies the attributes of attrs that keep selects.
func copyAttrs(attrs map[string]types.MessageAttributeValue, keep func(name string) bool) map[string]types.MessageAttributeValue {
	var out map[string]types.MessageAttributeValue
	for name, v := range attrs {
		if !keep(name) {
			continue
		}
		if out == nil {
			out = make(map[string]types.MessageAttributeValue)
		}
		out[name] = types.MessageAttributeValue{
			DataType:         aws.String(aws.ToString(v.DataType)),
			StringValue:      copyString(v.StringValue),
			BinaryValue:      slices.Clone(v.BinaryValue),
			StringListValues: slices.Clone(v.StringListValues),
		}
	}
	return out
}

func all(string) bool { return true }

func copyString(s *string) *string {
	if s == nil {
		return nil
	}
	return aws.String(*s)
}

// selected returns whether SQS's MessageAttributeNames returns an
// attribute: "All", ".*", "prefix.*" or its name; none when names is empty.
func selected(names []string) func(name string) bool {
	return func(name string) bool {
		for _, n := range names {
			if n == "All" || n == ".*" || n == name {
				return true
			}
			if prefix, ok := strings.CutSuffix(n, ".*"); ok && strings.HasPrefix(name, prefix+".") {
				return true
			}
		}
		return false
	}
}

// systemAttrs returns the system attributes the request asked for.
func systemAttrs(msg *memMessage, in *sqs.ReceiveMessageInput) map[string]string {
	var names []string
	for _, n := range in.MessageSystemAttributeNames {
		names = append(names, string(n))
	}
	for _, n := range in.AttributeNames {
		names = append(names, string(n))
	}
	if len(names) == 0 {
		return nil
	}
	all := map[string]string{
		string(types.MessageSystemAttributeNameSentTimestamp):                    strconv.FormatInt(msg.sent.UnixMilli(), 10),
		string(types.MessageSystemAttributeNameApproximateReceiveCount):          strconv.Itoa(msg.receives),
		string(types.MessageSystemAttributeNameApproximateFirstReceiveTimestamp): strconv.FormatInt(msg.firstReceive.UnixMilli(), 10),
	}
	if slices.Contains(names, "All") {
		return all
	}
	out := make(map[string]string)
	for _, n := range names {
		if v, ok := all[n]; ok {
			out[n] = v
		}
	}
	return out
}

// newMessageID returns a random version 4 UUID, the form SQS message IDs take.
func newMessageID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// newReceiptHandle returns an unguessable handle, new for every receive.
func newReceiptHandle() string {
	var b [32]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
