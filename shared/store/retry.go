package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Backoff says how many times an operation is tried and how long to wait
// between two tries.
type Backoff struct {
	// Attempts bounds the calls of the operation, the first included.
	Attempts int
	// Base is the wait after the first failure; each later wait doubles,
	// up to Max. Each wait is drawn between half and the whole of it, so
	// that callers who failed together spread out.
	Base, Max time.Duration
}

// throttleBackoff is how Transact waits out DynamoDB's throttling, on top
// of the SDK's own retries: about 3 seconds at most, in 8 calls.
var throttleBackoff = Backoff{Attempts: 8, Base: 25 * time.Millisecond, Max: time.Second}

// Wait returns after the pause that follows failed attempt n (from 0), or
// earlier with the context's error when ctx ends: for loops that cannot
// be put in Retry's shape.
func (b Backoff) Wait(ctx context.Context, n int) error {
	d := b.Base
	for range min(n, 30) {
		d *= 2
		if d >= b.Max {
			d = b.Max
			break
		}
	}
	if d > 0 {
		d = d/2 + rand.N(d/2+1)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Retry calls op until it returns nil or an error that again does not
// accept, at most b.Attempts times, and returns op's last error. Between
// two calls it waits as b says; when ctx ends meanwhile, it returns the
// context's error (errors.Is finds context.Canceled or DeadlineExceeded)
// wrapped with op's last error. It is the one retry loop of the store,
// and callers that retry lost races should use it too, with their own
// test of what "try again" means.
func Retry(ctx context.Context, b Backoff, again func(error) bool, op func(context.Context) error) error {
	for n := 0; ; n++ {
		err := op(ctx)
		if err == nil || !again(err) {
			return err
		}
		if n+1 >= b.Attempts {
			return fmt.Errorf("gave up after %d attempts: %w", n+1, err)
		}
		if werr := b.Wait(ctx, n); werr != nil {
			return fmt.Errorf("%w, after: %w", werr, err)
		}
	}
}

// failure is what a DynamoDB error means to the caller.
type failure int

const (
	// failOther is anything else: a network error, a server error the
	// SDK already retried, a missing table.
	failOther failure = iota
	// failRace is a lost race: a condition did not hold
	// (ConditionalCheckFailed) or another transaction held an item
	// (TransactionConflict). The data changed; the caller reads it again
	// and decides, and the store reports ErrConflict.
	failRace
	// failThrottled is throttling: the same request may succeed later.
	failThrottled
	// failInvalid is a request DynamoDB refuses as it is (validation,
	// an item collection over its size): sending it again fails again.
	failInvalid
)

func (f failure) String() string {
	return [...]string{"other", "lost race", "throttled", "invalid"}[f]
}

// classify tells what err from DynamoDB means. A cancelled transaction is
// judged by its cancellation reasons: any invalid action makes the whole
// invalid, then a failed condition or a conflict makes it a lost race,
// then throttling makes it worth sending again.
func classify(err error) failure {
	if err == nil {
		return failOther
	}
	var canceled *types.TransactionCanceledException
	if errors.As(err, &canceled) {
		seen := map[failure]bool{}
		for _, r := range canceled.CancellationReasons {
			seen[reasonFailure(aws.ToString(r.Code))] = true
		}
		for _, f := range []failure{failInvalid, failRace, failThrottled} {
			if seen[f] {
				return f
			}
		}
		return failOther
	}
	var checkFailed *types.ConditionalCheckFailedException
	if errors.As(err, &checkFailed) {
		return failRace
	}
	// Every API error of the SDK has a code (smithy.APIError).
	var api interface{ ErrorCode() string }
	if errors.As(err, &api) {
		switch api.ErrorCode() {
		case "ValidationException", "ItemCollectionSizeLimitExceededException":
			return failInvalid
		case "ThrottlingException", "ProvisionedThroughputExceededException",
			"RequestLimitExceeded", "TransactionInProgressException":
			return failThrottled
		case "TransactionConflictException":
			return failRace
		}
	}
	return failOther
}

// reasonFailure reads one cancellation reason of a transaction.
func reasonFailure(code string) failure {
	switch code {
	case "ConditionalCheckFailed", "TransactionConflict":
		return failRace
	case "ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded":
		return failThrottled
	case "ValidationError", "ItemCollectionSizeLimitExceeded":
		return failInvalid
	}
	return failOther // "None" and codes this version does not know
}
