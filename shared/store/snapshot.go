package store

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Snapshot writes every item of the table to w, one DynamoDB JSON item per
// line, through the DynamoDB API. `cirrus serve` uses it to keep the embedded
// table across restarts; it is not meant for a table in AWS, which has
// point-in-time recovery.
func (s *Store) Snapshot(ctx context.Context, w io.Writer) (int, error) {
	enc := json.NewEncoder(w)
	n := 0
	var start map[string]types.AttributeValue
	for {
		res, err := s.db.Scan(ctx, &dynamodb.ScanInput{TableName: &s.table, ExclusiveStartKey: start})
		if err != nil {
			return n, fmt.Errorf("snapshot: scan: %w", err)
		}
		for _, item := range res.Items {
			if err := enc.Encode(toJSONItem(item)); err != nil {
				return n, fmt.Errorf("snapshot: write: %w", err)
			}
			n++
		}
		if len(res.LastEvaluatedKey) == 0 {
			return n, nil
		}
		start = res.LastEvaluatedKey
	}
}

// Restore writes the items of a snapshot back, 25 to a batch as DynamoDB
// allows, retrying what the endpoint leaves unprocessed.
func (s *Store) Restore(ctx context.Context, r io.Reader) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 2*MaxItemSize+1024)
	var batch []types.WriteRequest
	n := 0
	flush := func() error {
		for len(batch) > 0 {
			res, err := s.db.BatchWriteItem(ctx, &dynamodb.BatchWriteItemInput{
				RequestItems: map[string][]types.WriteRequest{s.table: batch},
			})
			if err != nil {
				return fmt.Errorf("restore: batch write: %w", err)
			}
			batch = res.UnprocessedItems[s.table]
		}
		return nil
	}
	for line := 1; sc.Scan(); line++ {
		var item jsonItem
		if err := json.Unmarshal(sc.Bytes(), &item); err != nil {
			return n, fmt.Errorf("restore: line %d: %w", line, err)
		}
		av, err := fromJSONItem(item)
		if err != nil {
			return n, fmt.Errorf("restore: line %d: %w", line, err)
		}
		batch = append(batch, types.WriteRequest{PutRequest: &types.PutRequest{Item: av}})
		n++
		if len(batch) == 25 {
			if err := flush(); err != nil {
				return n, err
			}
		}
	}
	if err := sc.Err(); err != nil {
		return n, fmt.Errorf("restore: read: %w", errors.Join(err))
	}
	return n, flush()
}
