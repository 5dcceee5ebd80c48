package store

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// MaxBatchWrite is DynamoDB's limit on puts in one BatchWriteItem call.
const MaxBatchWrite = 25

// PutMany writes items, replacing any with the same keys, in as few calls
// as DynamoDB allows. Unlike Transact it is not all or none: each item is
// written on its own, and throttled ones are sent again.
func (s *Store) PutMany(ctx context.Context, items []any) error {
	var pending []types.WriteRequest
	var units float64
	for i, item := range items {
		av, size, err := s.marshalItem(item)
		if err != nil {
			return fmt.Errorf("put many: item %d: %w", i, err)
		}
		units += putUnits(av, size)
		pending = append(pending, types.WriteRequest{PutRequest: &types.PutRequest{Item: av}})
	}
	first := true
	for len(pending) > 0 {
		n := min(len(pending), MaxBatchWrite)
		batch := pending[:n]
		pending = pending[n:]
		res, err := s.db.BatchWriteItem(ctx, &dynamodb.BatchWriteItemInput{
			RequestItems:           map[string][]types.WriteRequest{s.table: batch},
			ReturnConsumedCapacity: types.ReturnConsumedCapacityTotal,
		})
		if err != nil {
			record(ctx, 0, 0)
			return fmt.Errorf("put many: %w", err)
		}
		var cc *types.ConsumedCapacity
		if len(res.ConsumedCapacity) > 0 {
			cc = &res.ConsumedCapacity[0]
		}
		// The estimate of all items is recorded with the first call.
		w := 0.0
		if first {
			w, first = units, false
		}
		recordCapacity(ctx, cc, 0, w)
		pending = append(pending, res.UnprocessedItems[s.table]...)
	}
	return nil
}
