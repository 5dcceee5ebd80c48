package queue

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// deleteTimeout bounds the deletion of a handled message in Poll.
const deleteTimeout = 10 * time.Second

// Handler does the work one message asks for. An error leaves the message
// on the queue to be delivered again (and, after the queue's maxReceiveCount,
// moved to the dead-letter queue), so a handler must be safe to run more
// than once for the same message.
type Handler func(ctx context.Context, body []byte) error

// Dispatcher runs each message's Handler, chosen by the message's kind. The
// same dispatch runs in Lambda (HandleSQSEvent) and in `cirrus serve` (Poll).
// The zero value has no handlers and logs to slog.Default().
type Dispatcher struct {
	// Logger gets one line per failed message, with its kind and ID but never
	// its body, which may carry events and tokens. Nil means slog.Default().
	Logger *slog.Logger

	mu       sync.RWMutex
	handlers map[string]Handler
	// long are the kinds whose messages run beside the others of their
	// batch (HandleLong).
	long map[string]bool
}

// HandleLong registers h for messages of kind, as Handle does, for work
// that takes long (the whole state of a large room): such a message runs
// beside the other messages of its batch, not before them, so that it
// holds up no delivery.
func (d *Dispatcher) HandleLong(kind string, h Handler) {
	d.Handle(kind, h)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.long == nil {
		d.long = map[string]bool{}
	}
	d.long[kind] = true
}

func (d *Dispatcher) isLong(kind string) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.long[kind]
}

// Handle registers h for messages of kind. It panics if kind is empty, h is
// nil or kind already has a handler: those are wiring mistakes, best found
// at startup, as http.ServeMux does.
func (d *Dispatcher) Handle(kind string, h Handler) {
	if kind == "" || h == nil {
		panic("queue: Handle needs a kind and a handler")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, dup := d.handlers[kind]; dup {
		panic(fmt.Sprintf("queue: kind %q already has a handler", kind))
	}
	if d.handlers == nil {
		d.handlers = make(map[string]Handler)
	}
	d.handlers[kind] = h
}

// HandleSQSEvent handles a batch that Lambda delivered from SQS: it runs the
// handler of every record, one after another, and reports the records that
// failed as batch item failures, so that Lambda deletes the others and only
// the failed ones come back. (The event source mapping must have
// ReportBatchItemFailures on.) A record of unknown kind is a failure, not a
// silent drop: during a deploy an old worker may see a new kind, and the
// message then reaches a new worker or the dead-letter queue. Once ctx ends
// the remaining records are reported failed without being run.
//
// The error is always nil: returning one would make Lambda retry the whole
// batch, including the records that succeeded.
func (d *Dispatcher) HandleSQSEvent(ctx context.Context, ev events.SQSEvent) (events.SQSEventResponse, error) {
	resp := events.SQSEventResponse{BatchItemFailures: []events.SQSBatchItemFailure{}}
	var mu sync.Mutex
	fail := func(id string) {
		mu.Lock()
		resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: id})
		mu.Unlock()
	}
	var long sync.WaitGroup
	for _, rec := range ev.Records {
		kind := ""
		if a, ok := rec.MessageAttributes[AttrKind]; ok {
			kind = aws.ToString(a.StringValue)
		}
		if d.isLong(kind) {
			long.Go(func() {
				if err := d.dispatch(ctx, kind, rec.MessageId, []byte(rec.Body)); err != nil {
					fail(rec.MessageId)
				}
			})
			continue
		}
		if err := d.dispatch(ctx, kind, rec.MessageId, []byte(rec.Body)); err != nil {
			fail(rec.MessageId)
		}
	}
	long.Wait()
	return resp, nil
}

// Poll drains the queue at url through q until ctx ends, for `cirrus serve`,
// where no Lambda event source mapping does it: it long-polls for up to ten
// messages, runs each one's handler and deletes the message once its handler
// succeeds. A failed message is left to reappear after its visibility
// timeout. Receive errors are logged and retried with a growing pause.
func (d *Dispatcher) Poll(ctx context.Context, q API, url string) {
	const minPause, maxPause = 100 * time.Millisecond, 30 * time.Second
	pause := minPause
	var long sync.WaitGroup
	defer long.Wait()
	for ctx.Err() == nil {
		out, err := q.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl:              aws.String(url),
			MaxNumberOfMessages:   maxReceive,
			WaitTimeSeconds:       maxWaitSeconds,
			MessageAttributeNames: []string{AttrKind},
		})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d.logger().LogAttrs(ctx, slog.LevelWarn, "queue receive failed",
				slog.String("queue", url), slog.Any("error", err), slog.Duration("retry_in", pause))
			select {
			case <-ctx.Done():
				return
			case <-time.After(pause):
			}
			pause = min(2*pause, maxPause)
			continue
		}
		pause = minPause
		for _, m := range out.Messages {
			kind := ""
			if a, ok := m.MessageAttributes[AttrKind]; ok {
				kind = aws.ToString(a.StringValue)
			}
			run := func() {
				id := aws.ToString(m.MessageId)
				if err := d.dispatch(ctx, kind, id, []byte(aws.ToString(m.Body))); err != nil {
					return
				}
				// The work is done: delete even if ctx has just ended, so
				// that a shutdown does not make the message run twice.
				dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deleteTimeout)
				_, err := q.DeleteMessage(dctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(url), ReceiptHandle: m.ReceiptHandle})
				cancel()
				if err != nil {
					d.logger().LogAttrs(ctx, slog.LevelWarn, "queue delete failed; the message will be handled again",
						slog.String("kind", kind), slog.String("message_id", id), slog.Any("error", err))
				}
			}
			if d.isLong(kind) {
				long.Go(run)
			} else {
				run()
			}
		}
	}
}

// dispatch runs the handler of one message and logs its failure. A panic in
// a handler is a failure of that message only, not of the batch.
func (d *Dispatcher) dispatch(ctx context.Context, kind, id string, body []byte) (err error) {
	log := d.logger()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("handle %s message: %w", kind, err)
	}
	d.mu.RLock()
	h := d.handlers[kind]
	d.mu.RUnlock()
	if h == nil {
		log.LogAttrs(ctx, slog.LevelError, "queue message of unknown kind",
			slog.String("kind", kind), slog.String("message_id", id))
		return fmt.Errorf("handle %q message: %w", kind, ErrUnknownKind)
	}
	// Each job gets its own DynamoDB meter and one log line, as a request
	// does in httpapi.Logging, so a job's cost can be read from the log.
	start := time.Now()
	ctx, meter := store.WithMeter(ctx)
	defer func() {
		u := meter.Usage()
		log.LogAttrs(ctx, slog.LevelInfo, "job",
			slog.String("kind", kind), slog.String("message_id", id),
			slog.Bool("ok", err == nil),
			slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000),
			slog.Group("dynamodb",
				slog.Int64("calls", u.Calls),
				slog.Float64("rcu", u.ReadUnits),
				slog.Float64("wcu", u.WriteUnits),
				slog.Int64("round_trips", u.RoundTrips)))
	}()
	defer func() {
		if r := recover(); r != nil {
			log.LogAttrs(ctx, slog.LevelError, "queue handler panicked",
				slog.String("kind", kind), slog.String("message_id", id),
				slog.Any("panic", r), slog.String("stack", string(debug.Stack())))
			err = fmt.Errorf("handle %s message: panic: %v", kind, r)
		}
	}()
	if err := h(ctx, body); err != nil {
		log.LogAttrs(ctx, slog.LevelError, "queue message failed",
			slog.String("kind", kind), slog.String("message_id", id), slog.Any("error", err))
		return fmt.Errorf("handle %s message: %w", kind, err)
	}
	return nil
}

func (d *Dispatcher) logger() *slog.Logger {
	if d.Logger != nil {
		return d.Logger
	}
	return slog.Default()
}
