// Package queue is Cirrus's federation work queue: the client and federation
// functions send work (a PDU to push to a remote server, a key to fetch) as
// SQS messages, and the sender function drains them. Each message carries a
// kind, in the "kind" message attribute, that picks its Handler.
//
// In AWS the queue is SQS and Lambda delivers batches to
// Dispatcher.HandleSQSEvent. Locally, `cirrus serve` uses Memory behind the
// same API interface and drains it with Dispatcher.Poll, so the code that
// sends and handles messages is the same in both places.
package queue

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/cirrus-matrix/cirrus/shared/gate"
)

// MaxMessageSize is the limit Cirrus keeps messages under: a body plus its
// attributes' names, types and values, in bytes. It is SQS's long-standing
// 256 KiB limit. SQS (and Lambda's SQS event source mapping) now take up to
// 1 MiB, but 256 KiB fits any queue whatever its MaximumMessageSize, SQS
// bills each 64 KiB as one request, and federation work is far smaller: a
// Matrix PDU is at most 64 KiB.
const MaxMessageSize = 256 * 1024

// AttrKind is the message attribute naming a message's kind.
const AttrKind = "kind"

// Errors callers can test for with errors.Is.
var (
	ErrTooLarge    = fmt.Errorf("message exceeds the %d byte (256 KiB) SQS limit", MaxMessageSize)
	ErrEmptyBody   = errors.New("message body is empty")
	ErrNoKind      = errors.New("message kind is empty")
	ErrInvalidText = errors.New("text has characters SQS does not accept")
	ErrUnknownKind = errors.New("no handler for message kind")
)

// API is the part of the SQS API Cirrus uses, as *sqs.Client has it, so that
// the real client and Memory are interchangeable.
type API interface {
	SendMessage(ctx context.Context, params *sqs.SendMessageInput, optFns ...func(*sqs.Options)) (*sqs.SendMessageOutput, error)
	ReceiveMessage(ctx context.Context, params *sqs.ReceiveMessageInput, optFns ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessage(ctx context.Context, params *sqs.DeleteMessageInput, optFns ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error)
}

var (
	_ API = (*sqs.Client)(nil)
	_ API = (*Memory)(nil)
)

// Queue sends messages to one queue.
type Queue struct {
	api API
	url string
}

// New returns a Queue that sends to the queue at url through api.
func New(api API, url string) *Queue {
	return &Queue{api: api, url: url}
}

// URL is the queue's URL.
func (q *Queue) URL() string { return q.url }

// Send sends body as a message of the given kind. Messages SQS would refuse
// (empty, too large, characters outside what SQS accepts) are refused here
// with an error that says why, before any request is made.
func (q *Queue) Send(ctx context.Context, kind string, body []byte) error {
	return q.SendAfter(ctx, kind, body, 0)
}

// MaxDelay is the longest delay SQS gives a message (DelaySeconds 900):
// work due later sends itself on again when it comes due too early.
const MaxDelay = maxDelaySeconds * time.Second

// SendAfter is Send of a message that becomes visible after delay, rounded
// up to whole seconds and held to MaxDelay.
func (q *Queue) SendAfter(ctx context.Context, kind string, body []byte, delay time.Duration) error {
	if kind == "" {
		return fmt.Errorf("send message: %w", ErrNoKind)
	}
	if len(body) == 0 {
		return fmt.Errorf("send %s message: %w", kind, ErrEmptyBody)
	}
	attrs := map[string]types.MessageAttributeValue{
		AttrKind: {DataType: aws.String("String"), StringValue: aws.String(kind)},
	}
	if size := messageSize(len(body), attrs); size > MaxMessageSize {
		return fmt.Errorf("send %s message of %d bytes: %w", kind, size, ErrTooLarge)
	}
	if err := checkText(string(body)); err != nil {
		return fmt.Errorf("send %s message: body: %w", kind, err)
	}
	if err := checkText(kind); err != nil {
		return fmt.Errorf("send message: kind %q: %w", kind, err)
	}
	delay = min(max(delay, 0), MaxDelay)
	if err := gate.Wait(ctx); err != nil {
		return fmt.Errorf("send %s message: %w", kind, err)
	}
	_, err := q.api.SendMessage(ctx, &sqs.SendMessageInput{
		QueueUrl:          aws.String(q.url),
		MessageBody:       aws.String(string(body)),
		MessageAttributes: attrs,
		DelaySeconds:      int32((delay + time.Second - 1) / time.Second),
	})
	if err != nil {
		return fmt.Errorf("send %s message: %w", kind, err)
	}
	return nil
}

// messageSize is a message's size as SQS counts it against its limit: the
// body, and each attribute's name, data type and value.
func messageSize(body int, attrs map[string]types.MessageAttributeValue) int {
	n := body
	for name, v := range attrs {
		n += len(name) + len(aws.ToString(v.DataType)) + len(aws.ToString(v.StringValue)) + len(v.BinaryValue)
		for _, s := range v.StringListValues {
			n += len(s)
		}
		for _, b := range v.BinaryListValues {
			n += len(b)
		}
	}
	return n
}

// checkText reports an error if s has characters SQS refuses in a message:
// it accepts valid UTF-8 of #x9, #xA, #xD, #x20 to #xD7FF, #xE000 to #xFFFD
// and #x10000 to #x10FFFF only.
func checkText(s string) error {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return fmt.Errorf("%w: invalid UTF-8 at byte %d", ErrInvalidText, i)
			}
		}
		switch {
		case r == 0x9 || r == 0xA || r == 0xD,
			r >= 0x20 && r <= 0xD7FF,
			r >= 0xE000 && r <= 0xFFFD,
			r >= 0x10000 && r <= 0x10FFFF:
		default:
			return fmt.Errorf("%w: %U at byte %d", ErrInvalidText, r, i)
		}
	}
	return nil
}
