package store

import (
	"context"
	"fmt"

	"github.com/aws/smithy-go/middleware"

	"github.com/cirrus-matrix/cirrus/shared/gate"
)

// readOps are the DynamoDB operations that change nothing. Every other
// operation is a write, held by the request's gate (package gate): a write
// that comes before the access token's read has confirmed the caller waits
// for it, and never happens if the token is refused. A list of reads, not
// of writes, so that an operation this list misses waits rather than slips
// through.
var readOps = map[string]bool{
	"GetItem": true, "BatchGetItem": true, "Query": true, "Scan": true,
	"TransactGetItems": true, "DescribeTable": true, "DescribeTimeToLive": true,
	"ListTables": true,
}

// gateWrites installs, first in the SDK's middleware stack of every
// operation (before timeCalls, so that the wait is no call's latency), the
// wait of every write on ctx's gate: one place that no write of the client
// can bypass.
func gateWrites(stack *middleware.Stack) error {
	return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("CirrusGateWrites",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			if op := middleware.GetOperationName(ctx); !readOps[op] {
				if err := gate.Wait(ctx); err != nil {
					return middleware.InitializeOutput{}, middleware.Metadata{}, fmt.Errorf("%s: %w", op, err)
				}
			}
			return next.HandleInitialize(ctx, in)
		}), middleware.Before)
}
