package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Op is one action of a transaction.
type Op struct {
	item   any  // put or create
	create bool // put only if absent
	del    *Key
	// ifAttr, when set, puts only over an item whose attribute ifAttr
	// equals ifValue.
	ifAttr  string
	ifValue any
}

// PutOp writes item, replacing what is there.
func PutOp(item any) Op { return Op{item: item} }

// CreateOp writes item only if its key is free (or its item expired).
func CreateOp(item any) Op { return Op{item: item, create: true} }

// PutIfOp writes item only over an existing item whose attribute attr
// equals value: optimistic concurrency on a version number, for items that
// several writers read, change and write back whole.
func PutIfOp(item any, attr string, value any) Op {
	return Op{item: item, ifAttr: attr, ifValue: value}
}

// DeleteOp removes the item at k.
func DeleteOp(k Key) Op { return Op{del: &k} }

// Transact applies ops atomically: all or none. When a condition fails (a
// CreateOp finds its key taken, a PutIfOp its value changed) or another
// transaction holds one of the items, nothing is written and the error
// wraps ErrConflict: the caller lost a race, reads again and decides.
// Throttling is retried here, with waits that end with ctx, and wraps
// ErrThrottled when it lasts; a request DynamoDB refuses as invalid (two
// actions on one item, say) wraps ErrInvalid at once. Nothing else wraps
// ErrConflict.
func (s *Store) Transact(ctx context.Context, ops ...Op) error {
	if len(ops) == 0 {
		return nil
	}
	if len(ops) > MaxTransactActions {
		return fmt.Errorf("transact: %w: %d actions", ErrTooManyActions, len(ops))
	}
	items := make([]types.TransactWriteItem, 0, len(ops))
	var units float64
	for i, op := range ops {
		if op.del != nil {
			key, err := keyAV(*op.del)
			if err != nil {
				return fmt.Errorf("transact: action %d: %w", i, err)
			}
			items = append(items, types.TransactWriteItem{Delete: &types.Delete{TableName: &s.table, Key: key}})
			units += 2
			continue
		}
		av, size, err := s.marshalItem(op.item)
		if err != nil {
			return fmt.Errorf("transact: action %d: %w", i, err)
		}
		put := &types.Put{TableName: &s.table, Item: av}
		if op.create {
			cond, names, values := s.absentCondition()
			put.ConditionExpression = aws.String(cond)
			put.ExpressionAttributeNames = names
			put.ExpressionAttributeValues = values
		}
		if op.ifAttr != "" {
			cond, names, values, err := equalCondition(op.ifAttr, op.ifValue)
			if err != nil {
				return fmt.Errorf("transact: action %d: %w", i, err)
			}
			put.ConditionExpression = aws.String(cond)
			put.ExpressionAttributeNames = names
			put.ExpressionAttributeValues = values
		}
		items = append(items, types.TransactWriteItem{Put: put})
		units += 2 * putUnits(av, size)
	}
	in := &dynamodb.TransactWriteItemsInput{
		TransactItems:          items,
		ReturnConsumedCapacity: types.ReturnConsumedCapacityTotal,
	}
	var out *dynamodb.TransactWriteItemsOutput
	throttled := func(err error) bool { return classify(err) == failThrottled }
	err := Retry(ctx, throttleBackoff, throttled, func(ctx context.Context) error {
		var err error
		out, err = s.db.TransactWriteItems(ctx, in)
		switch {
		case err == nil:
		case classify(err) == failRace:
			record(ctx, 0, units) // a cancelled transaction is billed
		default:
			record(ctx, 0, 0)
		}
		return err
	})
	switch {
	case err == nil:
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("transact: %w", err)
	case classify(err) == failRace:
		return fmt.Errorf("transact: %w: %v", ErrConflict, err)
	case classify(err) == failThrottled:
		return fmt.Errorf("transact: %w: %w", ErrThrottled, err)
	case classify(err) == failInvalid:
		return fmt.Errorf("transact: %w: %w", ErrInvalid, err)
	default:
		return fmt.Errorf("transact: %w", err)
	}
	var cc *types.ConsumedCapacity
	if len(out.ConsumedCapacity) > 0 {
		cc = &out.ConsumedCapacity[0]
	}
	recordCapacity(ctx, cc, 0, units)
	return nil
}

// equalCondition is true when the item exists and attr equals value.
func equalCondition(attr string, value any) (string, map[string]string, map[string]types.AttributeValue, error) {
	av, err := attributevalue.Marshal(value)
	if err != nil {
		return "", nil, nil, fmt.Errorf("encode condition on %s: %w", attr, err)
	}
	return "#c = :c", map[string]string{"#c": attr}, map[string]types.AttributeValue{":c": av}, nil
}

// PutIf writes item only over an existing item whose attribute attr equals
// value; otherwise it returns ErrConflict. See PutIfOp.
func (s *Store) PutIf(ctx context.Context, item any, attr string, value any) error {
	cond, names, values, err := equalCondition(attr, value)
	if err != nil {
		return err
	}
	return s.putWhen(ctx, "put if", item, condition{cond, names, values}, ErrConflict)
}
