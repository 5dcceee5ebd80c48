package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

func canceledBy(codes ...string) error {
	var reasons []types.CancellationReason
	for _, c := range codes {
		reasons = append(reasons, types.CancellationReason{Code: aws.String(c)})
	}
	return fmt.Errorf("operation error DynamoDB: TransactWriteItems: %w",
		&types.TransactionCanceledException{Message: aws.String("Transaction cancelled"), CancellationReasons: reasons})
}

// apiError is an error as the SDK gives one it has no type for, such as
// ValidationException (a smithy.GenericAPIError).
type apiError string

func (e apiError) Error() string     { return "api error " + string(e) }
func (e apiError) ErrorCode() string { return string(e) }

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want failure
	}{
		{"condition failed in a transaction", canceledBy("None", "ConditionalCheckFailed"), failRace},
		{"transaction conflict", canceledBy("TransactionConflict", "None"), failRace},
		{"throttled transaction", canceledBy("None", "ThrottlingError"), failThrottled},
		{"throughput exceeded in a transaction", canceledBy("ProvisionedThroughputExceeded"), failThrottled},
		{"invalid action beats a failed condition", canceledBy("ConditionalCheckFailed", "ValidationError"), failInvalid},
		{"lost race beats throttling", canceledBy("ThrottlingError", "ConditionalCheckFailed"), failRace},
		{"item collection too large", canceledBy("ItemCollectionSizeLimitExceeded"), failInvalid},
		{"unknown reason", canceledBy("None", "SomethingNew"), failOther},
		{"conditional put", &types.ConditionalCheckFailedException{}, failRace},
		{"validation", apiError("ValidationException"), failInvalid},
		{"throttling", apiError("ThrottlingException"), failThrottled},
		{"throughput", fmt.Errorf("put: %w", &types.ProvisionedThroughputExceededException{}), failThrottled},
		{"request limit", &types.RequestLimitExceeded{}, failThrottled},
		{"transaction conflict outside a transaction", &types.TransactionConflictException{}, failRace},
		{"missing table", &types.ResourceNotFoundException{}, failOther},
		{"network", errors.New("connection refused"), failOther},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := classify(tc.err); got != tc.want {
				t.Errorf("classify(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestRetry(t *testing.T) {
	throttled := func(err error) bool { return classify(err) == failThrottled }
	fast := Backoff{Attempts: 4, Base: time.Microsecond, Max: time.Millisecond}

	t.Run("ThrottledThenDone", func(t *testing.T) {
		calls := 0
		err := Retry(context.Background(), fast, throttled, func(context.Context) error {
			calls++
			if calls < 3 {
				return canceledBy("ThrottlingError")
			}
			return nil
		})
		if err != nil || calls != 3 {
			t.Fatalf("got %v after %d calls, want nil after 3", err, calls)
		}
	})
	t.Run("Bounded", func(t *testing.T) {
		calls := 0
		err := Retry(context.Background(), fast, throttled, func(context.Context) error {
			calls++
			return canceledBy("ThrottlingError")
		})
		if calls != fast.Attempts || classify(err) != failThrottled {
			t.Fatalf("got %v after %d calls, want the throttling error after %d", err, calls, fast.Attempts)
		}
	})
	t.Run("OtherErrorsAtOnce", func(t *testing.T) {
		for _, e := range []error{canceledBy("ConditionalCheckFailed"), apiError("ValidationException"), errors.New("boom")} {
			calls := 0
			err := Retry(context.Background(), fast, throttled, func(context.Context) error { calls++; return e })
			if calls != 1 || !errors.Is(err, e) {
				t.Fatalf("%v: got %v after %d calls, want it after 1", e, err, calls)
			}
		}
	})
	t.Run("WaitEndsWithTheContext", func(t *testing.T) {
		// An hour's wait: only the context can end it.
		slow := Backoff{Attempts: 100, Base: time.Hour, Max: time.Hour}
		ctx, cancel := context.WithCancel(context.Background())
		calls := 0
		err := Retry(ctx, slow, throttled, func(context.Context) error {
			calls++
			cancel()
			return canceledBy("ThrottlingError")
		})
		if calls != 1 || !errors.Is(err, context.Canceled) || classify(err) != failThrottled {
			t.Fatalf("got %v after %d calls, want context.Canceled wrapping the throttling after 1", err, calls)
		}
	})
}
