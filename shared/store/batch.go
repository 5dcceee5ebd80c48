package store

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// MaxBatchGet is DynamoDB's limit on keys in one BatchGetItem call.
const MaxBatchGet = 100

// GetMany reads the items at keys, strongly consistent, in as few calls as
// DynamoDB allows, and decodes each found one with decode. Missing and expired
// items are skipped; the order of decode calls is not the order of keys.
func (s *Store) GetMany(ctx context.Context, keys []Key, decode func(Key, func(out any) error) error) error {
	seen := make(map[Key]bool, len(keys))
	var pending []map[string]types.AttributeValue
	for _, k := range keys {
		if seen[k] {
			continue // DynamoDB refuses duplicate keys in one batch
		}
		seen[k] = true
		av, err := keyAV(k)
		if err != nil {
			return fmt.Errorf("get many: %w", err)
		}
		pending = append(pending, av)
	}
	for len(pending) > 0 {
		n := min(len(pending), MaxBatchGet)
		batch := pending[:n]
		pending = pending[n:]
		res, err := s.db.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{
			RequestItems: map[string]types.KeysAndAttributes{
				s.table: {Keys: batch, ConsistentRead: aws.Bool(true)},
			},
			ReturnConsumedCapacity: types.ReturnConsumedCapacityTotal,
		})
		if err != nil {
			record(ctx, 0, 0)
			return fmt.Errorf("get many: %w", err)
		}
		var units float64
		for _, item := range res.Responses[s.table] {
			units += readUnits(itemSize(item), true)
		}
		// A key asked for and not found costs the minimum read too.
		missing := len(batch) - len(res.Responses[s.table]) - len(res.UnprocessedKeys[s.table].Keys)
		units += float64(max(missing, 0))
		var cc *types.ConsumedCapacity
		if len(res.ConsumedCapacity) > 0 {
			cc = &res.ConsumedCapacity[0]
		}
		recordCapacity(ctx, cc, units, 0)
		for _, item := range res.Responses[s.table] {
			if s.expired(item) {
				continue
			}
			k := Key{}
			if err := attributevalue.UnmarshalMap(item, &k); err != nil {
				return fmt.Errorf("get many: decode key: %w", err)
			}
			err := decode(k, func(out any) error { return attributevalue.UnmarshalMap(item, out) })
			if err != nil {
				return fmt.Errorf("get many %s: %w", describeKey(item), err)
			}
		}
		// Throttled keys come back unprocessed; ask again for them.
		if un, ok := res.UnprocessedKeys[s.table]; ok {
			pending = append(pending, un.Keys...)
		}
	}
	return nil
}
