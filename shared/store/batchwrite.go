package store

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"golang.org/x/sync/errgroup"
)

// MaxBatchWrite is DynamoDB's limit on puts in one BatchWriteItem call.
const MaxBatchWrite = 25

// putParallel is how many BatchWriteItem calls PutMany has in flight at
// once: each waits a round trip on DynamoDB, so thousands of items (a
// remote join's take-in and the indexes of its members) take ~1/16 of
// the time they would one call after another.
const putParallel = 16

// PutMany writes items, replacing any with the same keys, in as few calls
// as DynamoDB allows, several at a time. Unlike Transact it is not all or
// none: each item is written on its own, in no set order, and throttled
// ones are sent again.
func (s *Store) PutMany(ctx context.Context, items []any) error {
	p, err := s.Prepare(items)
	if err != nil {
		return err
	}
	return p.Put(ctx)
}

// Puts are items encoded for PutMany, to be written later: a request that
// waits for a write anyway encodes them meanwhile.
type Puts struct {
	s       *Store
	batches [][]types.WriteRequest
	units   []float64
}

// Prepare encodes items for PutMany.
func (s *Store) Prepare(items []any) (*Puts, error) {
	p := &Puts{s: s}
	for i, item := range items {
		av, size, err := s.marshalItem(item)
		if err != nil {
			return nil, fmt.Errorf("put many: item %d: %w", i, err)
		}
		if i%MaxBatchWrite == 0 {
			p.batches = append(p.batches, make([]types.WriteRequest, 0, MaxBatchWrite))
			p.units = append(p.units, 0)
		}
		b := len(p.batches) - 1
		p.batches[b] = append(p.batches[b], types.WriteRequest{PutRequest: &types.PutRequest{Item: av}})
		p.units[b] += putUnits(av, size)
	}
	return p, nil
}

// Put writes the items, as PutMany does.
func (p *Puts) Put(ctx context.Context) error {
	switch len(p.batches) {
	case 0:
		return nil
	case 1:
		return p.s.putBatch(ctx, p.batches[0], p.units[0])
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(putParallel)
	for i, b := range p.batches {
		g.Go(func() error { return p.s.putBatch(gctx, b, p.units[i]) })
	}
	return g.Wait()
}

// putBatch writes one batch of at most MaxBatchWrite puts, sending the
// unprocessed ones again; units, the batch's estimate, is recorded with
// the first call.
func (s *Store) putBatch(ctx context.Context, pending []types.WriteRequest, units float64) error {
	for len(pending) > 0 {
		res, err := s.db.BatchWriteItem(ctx, &dynamodb.BatchWriteItemInput{
			RequestItems:           map[string][]types.WriteRequest{s.table: pending},
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
		recordCapacity(ctx, cc, 0, units)
		units = 0
		pending = res.UnprocessedItems[s.table]
	}
	return nil
}
