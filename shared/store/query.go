package store

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Query selects items of one partition, in sort key order.
type Query struct {
	// PK is the partition; on the index, its gsi1pk.
	PK string
	// Prefix keeps only sort keys that begin with it.
	Prefix string
	// Index is "" for the table or "gsi1".
	Index string
	// Descending reverses the order.
	Descending bool
	// From, when set, starts the page at this sort key (inclusive): the
	// smallest key read when ascending, the largest when descending.
	From string
	// To, when set, ends the page at this sort key (inclusive): the
	// largest key read when ascending, the smallest when descending.
	To string
	// Limit caps the items of one page; 0 means as many as fit in 1 MB.
	Limit int
	// Cursor continues after the page that returned it.
	Cursor string
	// Eventual reads the table eventually consistent, at half the cost,
	// where a read may miss the last second's writes (index reads always
	// are).
	Eventual bool
}

// QueryPage reads one page of q into out, a pointer to a slice of structs,
// and returns the cursor of the next page ("" when there is none). Like
// DynamoDB, a page stops at 1 MB of items; expired items are left out.
func (s *Store) QueryPage(ctx context.Context, q Query, out any) (string, error) {
	if q.PK == "" {
		return "", fmt.Errorf("query: %w: partition key", ErrEmptyKey)
	}
	pkName, skName := attrPK, attrSK
	if q.Index == gsi1 {
		pkName, skName = gsi1PK, gsi1SK
	} else if q.Index != "" {
		return "", fmt.Errorf("query: unknown index %q", q.Index)
	}
	// DynamoDB refuses key conditions on values longer than a key can be.
	for _, c := range []struct{ name, value string }{{pkName, q.PK}, {skName, q.Prefix}, {skName, q.From}, {skName, q.To}} {
		if err := checkKeySize(c.name, c.value); err != nil {
			return "", fmt.Errorf("query: %w", err)
		}
	}
	cond := "#pk = :pk"
	names := map[string]string{"#pk": pkName}
	values := map[string]types.AttributeValue{":pk": &types.AttributeValueMemberS{Value: q.PK}}
	switch {
	case q.From != "" || q.To != "":
		// One key condition per query: a range between From (or the
		// prefix) and To (or the end of the prefix) replaces begins_with.
		lo, hi := q.From, q.To
		if q.Descending {
			lo, hi = q.To, q.From
		}
		if lo == "" {
			lo = q.Prefix
		}
		if hi == "" {
			hi = q.Prefix + "\U0010FFFF"
		}
		cond += " AND #sk BETWEEN :lo AND :hi"
		names["#sk"] = skName
		values[":lo"] = &types.AttributeValueMemberS{Value: lo}
		values[":hi"] = &types.AttributeValueMemberS{Value: hi}
	case q.Prefix != "":
		cond += " AND begins_with(#sk, :prefix)"
		names["#sk"] = skName
		values[":prefix"] = &types.AttributeValueMemberS{Value: q.Prefix}
	}
	in := &dynamodb.QueryInput{
		TableName:                 &s.table,
		KeyConditionExpression:    &cond,
		ExpressionAttributeNames:  names,
		ExpressionAttributeValues: values,
		ScanIndexForward:          aws.Bool(!q.Descending),
		ConsistentRead:            aws.Bool(q.consistent()),
		ReturnConsumedCapacity:    types.ReturnConsumedCapacityTotal,
	}
	if q.Index != "" {
		in.IndexName = &q.Index
	}
	if q.Limit > 0 {
		in.Limit = aws.Int32(int32(q.Limit))
	}
	if q.Cursor != "" {
		start, err := decodeCursor(q.Cursor)
		if err != nil {
			return "", fmt.Errorf("query %s: %w", q.PK, err)
		}
		in.ExclusiveStartKey = start
	}
	res, err := s.db.Query(ctx, in)
	if err != nil {
		record(ctx, 0, 0)
		return "", fmt.Errorf("query %s: %w", q.PK, err)
	}
	items, last, size := s.capPage(res.Items, pkName, skName)
	if last == nil {
		last = res.LastEvaluatedKey
	}
	recordCapacity(ctx, res.ConsumedCapacity, readUnits(size, q.consistent()), 0)
	if err := attributevalue.UnmarshalListOfMaps(items, out); err != nil {
		return "", fmt.Errorf("query %s: decode: %w", q.PK, err)
	}
	if last == nil {
		return "", nil
	}
	return encodeCursor(last)
}

// capPage cuts a page at 1 MB, as DynamoDB does and stand-ins may not, and
// drops expired items. It returns the kept items, the key to continue from
// when it cut, and the bytes read.
func (s *Store) capPage(items []map[string]types.AttributeValue, pkName, skName string) ([]map[string]types.AttributeValue, map[string]types.AttributeValue, int) {
	kept := items[:0:0]
	total := 0
	for i, item := range items {
		size := itemSize(item)
		if total+size > MaxQueryPageSize && i > 0 {
			prev := items[i-1]
			last := map[string]types.AttributeValue{attrPK: prev[attrPK], attrSK: prev[attrSK]}
			last[pkName], last[skName] = prev[pkName], prev[skName]
			return kept, last, total
		}
		total += size
		if !s.expired(item) {
			kept = append(kept, item)
		}
	}
	return kept, nil, total
}

// Cursors are opaque to callers: base64 of the start key in DynamoDB JSON.
func encodeCursor(key map[string]types.AttributeValue) (string, error) {
	doc, err := json.Marshal(toJSONItem(key))
	if err != nil {
		return "", fmt.Errorf("encode cursor: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(doc), nil
}

func decodeCursor(c string) (map[string]types.AttributeValue, error) {
	doc, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return nil, fmt.Errorf("bad cursor: %w", err)
	}
	var item jsonItem
	if err := json.Unmarshal(doc, &item); err != nil {
		return nil, fmt.Errorf("bad cursor: %w", err)
	}
	return fromJSONItem(item)
}

// consistent reports whether q reads strongly consistent: indexes never do.
func (q Query) consistent() bool { return q.Index == "" && !q.Eventual }
