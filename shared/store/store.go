// Package store keeps all of Cirrus's state in one DynamoDB table. It alone
// imports the DynamoDB SDK: the rest of the homeserver calls its methods.
//
// The table and its access patterns are documented in docs/storage.md. The
// package enforces DynamoDB's limits itself, before a request is sent, so that
// a local stand-in that lacks them behaves as AWS would, and so that callers get
// an error that says which limit was hit.
package store

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"golang.org/x/sync/errgroup"
)

// DynamoDB's limits, enforced here.
const (
	MaxItemSize        = 400 * 1024
	MaxTransactActions = 100
	MaxQueryPageSize   = 1 << 20
	// MaxPartitionKeySize and MaxSortKeySize bound a key's value in bytes
	// (UTF-8), on the table and on the index alike.
	MaxPartitionKeySize  = 2048
	MaxSortKeySize       = 1024
	attrPK, attrSK       = "pk", "sk"
	attrExpires          = "expires_at"
	gsi1, gsi1PK, gsi1SK = "gsi1", "gsi1pk", "gsi1sk"
)

// Errors callers can test for with errors.Is.
var (
	ErrNotFound       = errors.New("item not found")
	ErrExists         = errors.New("item already exists")
	ErrConflict       = errors.New("conditional write failed")
	ErrItemTooLarge   = errors.New("item exceeds DynamoDB's 400 KB limit")
	ErrTooManyActions = errors.New("transaction exceeds DynamoDB's 100 actions")
	ErrEmptyKey       = errors.New("key attribute is empty")
	// ErrKeyTooLong is a key over MaxPartitionKeySize or MaxSortKeySize
	// bytes, mostly from an identifier a client chose: the HTTP edge
	// answers it with 400 M_INVALID_PARAM.
	ErrKeyTooLong = errors.New("key exceeds DynamoDB's size limit")
	// ErrInvalid is a request DynamoDB refused as invalid
	// (ValidationException): sending it again fails again.
	ErrInvalid = errors.New("request refused by DynamoDB as invalid")
	// ErrThrottled is a request DynamoDB still throttled after the
	// retries of the store.
	ErrThrottled = errors.New("request throttled by DynamoDB")
)

// Key addresses one item.
type Key struct {
	PK string `dynamodbav:"pk"`
	SK string `dynamodbav:"sk"`
}

// Schema describes the table without SDK types, so that the CDK stack and the
// docs can be checked against the one definition that `cirrus serve` creates.
type Schema struct {
	PartitionKey, SortKey string
	// Indexes are global secondary indexes with string keys and all attributes projected.
	Indexes []Index
	// TTLAttribute holds an expiry time in Unix seconds.
	TTLAttribute string
}

// Index is one global secondary index.
type Index struct {
	Name, PartitionKey, SortKey string
}

// TableSchema is the table's definition.
func TableSchema() Schema {
	return Schema{
		PartitionKey: attrPK,
		SortKey:      attrSK,
		Indexes:      []Index{{Name: gsi1, PartitionKey: gsi1PK, SortKey: gsi1SK}},
		TTLAttribute: attrExpires,
	}
}

// Options say which DynamoDB to use.
type Options struct {
	Table string
	// Endpoint is a DynamoDB API other than AWS's; empty means AWS.
	Endpoint string
}

// maxIdleConns is how many connections to DynamoDB the store keeps open
// between calls: more than a request's parallel reads (sync reads up to 64
// rooms at once, a few calls each).
const maxIdleConns = 256

// Store is a handle on the table. It is safe for concurrent use.
type Store struct {
	db    *dynamodb.Client
	table string
	now   func() time.Time
}

// Open connects to the table. With an Endpoint, credentials and region fall
// back to dummies when the environment has none, as local stand-ins need them
// only to sign requests.
func Open(ctx context.Context, o Options) (*Store, error) {
	var opts []func(*config.LoadOptions) error
	if o.Endpoint != "" {
		if os.Getenv("AWS_REGION") == "" && os.Getenv("AWS_DEFAULT_REGION") == "" {
			opts = append(opts, config.WithRegion("us-east-1"))
		}
		// Without keys in the environment, the default chain would end up
		// asking the EC2 metadata service, which is slow and absent here.
		if os.Getenv("AWS_ACCESS_KEY_ID") == "" && os.Getenv("AWS_PROFILE") == "" {
			opts = append(opts, config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("local", "local", "")))
		}
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("open store: aws config: %w", err)
	}
	// A request reads many items side by side (an initial sync, a room's
	// timeline beside its counts); the SDK keeps 10 idle connections per
	// host, so the 11th parallel call would dial, a TLS handshake in AWS,
	// and its connection be closed after. Keep as many as parallel reads go.
	cfg.HTTPClient = awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		tr.MaxIdleConns = maxIdleConns
		tr.MaxIdleConnsPerHost = maxIdleConns
	})
	db := dynamodb.NewFromConfig(cfg, func(opt *dynamodb.Options) {
		// timeCalls first, then gateWrites before it: each goes to the
		// front of the stack.
		opt.APIOptions = append(opt.APIOptions, timeCalls, gateWrites)
		if o.Endpoint != "" {
			opt.BaseEndpoint = aws.String(o.Endpoint)
			// Local DynamoDB APIs send no CRC32 header.
			opt.DisableValidateResponseChecksum = true
		}
	})
	return &Store{db: db, table: o.Table, now: time.Now}, nil
}

// CreateTable creates the table as TableSchema describes it, unless it exists.
func (s *Store) CreateTable(ctx context.Context) error {
	_, err := s.db.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: &s.table})
	record(ctx, 0, 0)
	if err == nil {
		return nil
	}
	var missing *types.ResourceNotFoundException
	if !errors.As(err, &missing) {
		return fmt.Errorf("describe table %s: %w", s.table, err)
	}
	sc := TableSchema()
	attrs := []types.AttributeDefinition{
		{AttributeName: aws.String(sc.PartitionKey), AttributeType: types.ScalarAttributeTypeS},
		{AttributeName: aws.String(sc.SortKey), AttributeType: types.ScalarAttributeTypeS},
	}
	var indexes []types.GlobalSecondaryIndex
	for _, ix := range sc.Indexes {
		attrs = append(attrs,
			types.AttributeDefinition{AttributeName: aws.String(ix.PartitionKey), AttributeType: types.ScalarAttributeTypeS},
			types.AttributeDefinition{AttributeName: aws.String(ix.SortKey), AttributeType: types.ScalarAttributeTypeS})
		indexes = append(indexes, types.GlobalSecondaryIndex{
			IndexName: aws.String(ix.Name),
			KeySchema: []types.KeySchemaElement{
				{AttributeName: aws.String(ix.PartitionKey), KeyType: types.KeyTypeHash},
				{AttributeName: aws.String(ix.SortKey), KeyType: types.KeyTypeRange},
			},
			Projection: &types.Projection{ProjectionType: types.ProjectionTypeAll},
		})
	}
	_, err = s.db.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            &s.table,
		BillingMode:          types.BillingModePayPerRequest,
		AttributeDefinitions: attrs,
		KeySchema: []types.KeySchemaElement{
			{AttributeName: aws.String(sc.PartitionKey), KeyType: types.KeyTypeHash},
			{AttributeName: aws.String(sc.SortKey), KeyType: types.KeyTypeRange},
		},
		GlobalSecondaryIndexes: indexes,
	})
	record(ctx, 0, 0)
	if err != nil {
		return fmt.Errorf("create table %s: %w", s.table, err)
	}
	return nil
}

// Put writes item, a struct with dynamodbav tags that include pk and sk,
// replacing any item with the same key.
func (s *Store) Put(ctx context.Context, item any) error {
	av, size, err := s.marshalItem(item)
	if err != nil {
		return fmt.Errorf("put: %w", err)
	}
	out, err := s.db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:              &s.table,
		Item:                   av,
		ReturnConsumedCapacity: types.ReturnConsumedCapacityTotal,
	})
	if err != nil {
		record(ctx, 0, 0)
		return fmt.Errorf("put %s: %w", describeKey(av), err)
	}
	recordCapacity(ctx, out.ConsumedCapacity, 0, putUnits(av, size))
	return nil
}

// Create writes item only if no live item has its key; otherwise it returns
// ErrExists. An item past its expiry counts as absent.
func (s *Store) Create(ctx context.Context, item any) error {
	cond, names, values := s.absentCondition()
	return s.putWhen(ctx, "create", item, condition{cond, names, values}, ErrExists)
}

// condition is a ConditionExpression with its names and values.
type condition struct {
	expr   string
	names  map[string]string
	values map[string]types.AttributeValue
}

// putWhen writes item if c holds, else returns failed; a failed check is
// billed like the write.
func (s *Store) putWhen(ctx context.Context, op string, item any, c condition, failed error) error {
	av, size, err := s.marshalItem(item)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	out, err := s.db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                 &s.table,
		Item:                      av,
		ConditionExpression:       &c.expr,
		ExpressionAttributeNames:  c.names,
		ExpressionAttributeValues: c.values,
		ReturnConsumedCapacity:    types.ReturnConsumedCapacityTotal,
	})
	var checkFailed *types.ConditionalCheckFailedException
	if errors.As(err, &checkFailed) {
		record(ctx, 0, writeUnits(size))
		return fmt.Errorf("%s %s: %w", op, describeKey(av), failed)
	}
	if err != nil {
		record(ctx, 0, 0)
		return fmt.Errorf("%s %s: %w", op, describeKey(av), err)
	}
	recordCapacity(ctx, out.ConsumedCapacity, 0, putUnits(av, size))
	return nil
}

// Get reads the item at k into out, a pointer to a struct with dynamodbav
// tags. It returns ErrNotFound for a missing or expired item. Reads are
// strongly consistent: a homeserver reads its own writes.
func (s *Store) Get(ctx context.Context, k Key, out any) error {
	key, err := keyAV(k)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	res, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:              &s.table,
		Key:                    key,
		ConsistentRead:         aws.Bool(true),
		ReturnConsumedCapacity: types.ReturnConsumedCapacityTotal,
	})
	if err != nil {
		record(ctx, 0, 0)
		return fmt.Errorf("get %s: %w", describeKey(key), err)
	}
	recordCapacity(ctx, res.ConsumedCapacity, readUnits(itemSize(res.Item), true), 0)
	if res.Item == nil || s.expired(res.Item) {
		return fmt.Errorf("get %s: %w", describeKey(key), ErrNotFound)
	}
	if err := attributevalue.UnmarshalMap(res.Item, out); err != nil {
		return fmt.Errorf("get %s: decode: %w", describeKey(key), err)
	}
	return nil
}

// Delete removes the item at k; deleting a missing item is not an error.
func (s *Store) Delete(ctx context.Context, k Key) error {
	key, err := keyAV(k)
	if err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	out, err := s.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName:              &s.table,
		Key:                    key,
		ReturnValues:           types.ReturnValueAllOld,
		ReturnConsumedCapacity: types.ReturnConsumedCapacityTotal,
	})
	if err != nil {
		record(ctx, 0, 0)
		return fmt.Errorf("delete %s: %w", describeKey(key), err)
	}
	recordCapacity(ctx, out.ConsumedCapacity, 0, writeUnits(itemSize(out.Attributes)))
	return nil
}

// DeleteEach deletes keys, a few at a time, each with its own DeleteItem:
// billed as BatchWriteItem's deletes are (a transaction would bill each
// twice), and the meter learns each deleted item's size.
func (s *Store) DeleteEach(ctx context.Context, keys []Key) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(deleteParallel)
	for _, k := range keys {
		g.Go(func() error { return s.Delete(gctx, k) })
	}
	return g.Wait()
}

// deleteParallel is how many deletes DeleteEach runs at once: they wait on
// DynamoDB, not on this process.
const deleteParallel = 8

// marshalItem encodes item and checks it against DynamoDB's limits.
func (s *Store) marshalItem(item any) (map[string]types.AttributeValue, int, error) {
	av, err := attributevalue.MarshalMap(item)
	if err != nil {
		return nil, 0, fmt.Errorf("encode item: %w", err)
	}
	if err := checkKeys(av); err != nil {
		return nil, 0, err
	}
	size := itemSize(av)
	if size > MaxItemSize {
		return nil, 0, fmt.Errorf("%w: %s is %d bytes", ErrItemTooLarge, describeKey(av), size)
	}
	return av, size, nil
}

// absentCondition is true when no item has the key, or the one there expired.
func (s *Store) absentCondition() (string, map[string]string, map[string]types.AttributeValue) {
	return "attribute_not_exists(#pk) OR #exp < :now",
		map[string]string{"#pk": attrPK, "#exp": attrExpires},
		map[string]types.AttributeValue{":now": &types.AttributeValueMemberN{Value: fmt.Sprint(s.now().Unix())}}
}

// expired reports whether item carries an expiry in the past. DynamoDB deletes
// expired items only eventually (and the local stand-in never), so every read
// filters them.
func (s *Store) expired(item map[string]types.AttributeValue) bool {
	n, ok := item[attrExpires].(*types.AttributeValueMemberN)
	if !ok {
		return false
	}
	// Every item of every read passes here: strconv, not fmt's scanner.
	ts, err := strconv.ParseInt(n.Value, 10, 64)
	if err != nil {
		f, err := strconv.ParseFloat(n.Value, 64)
		if err != nil {
			return false
		}
		ts = int64(f)
	}
	return ts > 0 && ts <= s.now().Unix()
}

// checkKeys refuses items DynamoDB would refuse for their keys, with a message
// that names the attribute.
func checkKeys(av map[string]types.AttributeValue) error {
	for _, name := range []string{attrPK, attrSK} {
		v, ok := av[name].(*types.AttributeValueMemberS)
		if !ok || v.Value == "" {
			return fmt.Errorf("%w: %q must be a non-empty string", ErrEmptyKey, name)
		}
		if err := checkKeySize(name, v.Value); err != nil {
			return err
		}
	}
	for _, name := range []string{gsi1PK, gsi1SK} {
		v, ok := av[name].(*types.AttributeValueMemberS)
		if ok && v.Value == "" {
			return fmt.Errorf("%w: index key %q is an empty string; omit it instead", ErrEmptyKey, name)
		}
		if ok {
			if err := checkKeySize(name, v.Value); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkKeySize refuses a value of the key attribute name over DynamoDB's
// limit: 2048 bytes for a partition key, 1024 for a sort key.
func checkKeySize(name, value string) error {
	limit := MaxSortKeySize
	if name == attrPK || name == gsi1PK {
		limit = MaxPartitionKeySize
	}
	if len(value) <= limit {
		return nil
	}
	return fmt.Errorf("%w: %q is %d bytes, at most %d (it begins %q)", ErrKeyTooLong, name, len(value), limit, value[:32])
}

func keyAV(k Key) (map[string]types.AttributeValue, error) {
	if k.PK == "" || k.SK == "" {
		return nil, fmt.Errorf("%w: pk %q, sk %q", ErrEmptyKey, k.PK, k.SK)
	}
	if err := checkKeySize(attrPK, k.PK); err != nil {
		return nil, err
	}
	if err := checkKeySize(attrSK, k.SK); err != nil {
		return nil, err
	}
	return map[string]types.AttributeValue{
		attrPK: &types.AttributeValueMemberS{Value: k.PK},
		attrSK: &types.AttributeValueMemberS{Value: k.SK},
	}, nil
}

func describeKey(av map[string]types.AttributeValue) string {
	str := func(name string) string {
		if v, ok := av[name].(*types.AttributeValueMemberS); ok {
			return v.Value
		}
		return ""
	}
	return fmt.Sprintf("(%s, %s)", str(attrPK), str(attrSK))
}

// recordCapacity records what DynamoDB reported it consumed, or the estimate
// computed from item sizes when the endpoint reports nothing.
func recordCapacity(ctx context.Context, cc *types.ConsumedCapacity, read, write float64) {
	if cc != nil && cc.CapacityUnits != nil {
		r, w := aws.ToFloat64(cc.ReadCapacityUnits), aws.ToFloat64(cc.WriteCapacityUnits)
		if r == 0 && w == 0 {
			// Only the total was given: attribute it to the kind of call.
			if read > 0 {
				r = *cc.CapacityUnits
			} else {
				w = *cc.CapacityUnits
			}
		}
		read, write = r, w
	}
	record(ctx, read, write)
}

// Consume deletes the live item at k and reads it into out, in one call, so
// that two requests can never both use a single-use item (a nonce, a login
// token). A missing or expired item gives ErrNotFound.
func (s *Store) Consume(ctx context.Context, k Key, out any) error {
	key, err := keyAV(k)
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	res, err := s.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName:                &s.table,
		Key:                      key,
		ConditionExpression:      aws.String("attribute_exists(#pk) AND (attribute_not_exists(#exp) OR #exp > :now)"),
		ExpressionAttributeNames: map[string]string{"#pk": attrPK, "#exp": attrExpires},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":now": &types.AttributeValueMemberN{Value: fmt.Sprint(s.now().Unix())},
		},
		ReturnValues:           types.ReturnValueAllOld,
		ReturnConsumedCapacity: types.ReturnConsumedCapacityTotal,
	})
	var failed *types.ConditionalCheckFailedException
	if errors.As(err, &failed) {
		record(ctx, 0, 1)
		return fmt.Errorf("consume %s: %w", describeKey(key), ErrNotFound)
	}
	if err != nil {
		record(ctx, 0, 0)
		return fmt.Errorf("consume %s: %w", describeKey(key), err)
	}
	recordCapacity(ctx, res.ConsumedCapacity, 0, writeUnits(itemSize(res.Attributes)))
	if err := attributevalue.UnmarshalMap(res.Attributes, out); err != nil {
		return fmt.Errorf("consume %s: decode: %w", describeKey(key), err)
	}
	return nil
}

// Increment adds one to the number attribute attr of the item at k,
// creating the item when absent (with the given expiry, unless it is zero),
// and returns the new value: one UpdateItem, no read, so concurrent
// increments never lose a count. Rate limits and registration tokens use it.
func (s *Store) Increment(ctx context.Context, k Key, attr string, expires time.Time) (int64, error) {
	return s.Add(ctx, k, attr, 1, expires)
}

// Add is Increment by n.
func (s *Store) Add(ctx context.Context, k Key, attr string, n int64, expires time.Time) (int64, error) {
	key, err := keyAV(k)
	if err != nil {
		return 0, fmt.Errorf("increment: %w", err)
	}
	update := "ADD #n :one"
	names := map[string]string{"#n": attr}
	values := map[string]types.AttributeValue{":one": &types.AttributeValueMemberN{Value: strconv.FormatInt(n, 10)}}
	if !expires.IsZero() {
		update += " SET #exp = if_not_exists(#exp, :exp)"
		names["#exp"] = attrExpires
		values[":exp"] = &types.AttributeValueMemberN{Value: fmt.Sprint(expires.Unix())}
	}
	res, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 &s.table,
		Key:                       key,
		UpdateExpression:          aws.String(update),
		ExpressionAttributeNames:  names,
		ExpressionAttributeValues: values,
		ReturnValues:              types.ReturnValueUpdatedNew,
		ReturnConsumedCapacity:    types.ReturnConsumedCapacityTotal,
	})
	if err != nil {
		record(ctx, 0, 0)
		return 0, fmt.Errorf("increment %s: %w", describeKey(key), err)
	}
	recordCapacity(ctx, res.ConsumedCapacity, 0, 1)
	var out map[string]int64
	if err := attributevalue.UnmarshalMap(res.Attributes, &out); err != nil {
		return 0, fmt.Errorf("increment %s: decode: %w", describeKey(key), err)
	}
	return out[attr], nil
}

// ClearAttr sets the attribute attr of the item at k to null, leaving the
// rest of it as it is: one UpdateItem, no read, so a writer of the item's
// other attributes loses nothing to it. An absent item stays absent.
// (Null rather than REMOVE: the embedded DynamoDB leaves removed
// attributes in place.)
func (s *Store) ClearAttr(ctx context.Context, k Key, attr string) error {
	key, err := keyAV(k)
	if err != nil {
		return fmt.Errorf("clear %s: %w", attr, err)
	}
	res, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 &s.table,
		Key:                       key,
		UpdateExpression:          aws.String("SET #a = :null"),
		ConditionExpression:       aws.String("attribute_exists(#pk)"),
		ExpressionAttributeNames:  map[string]string{"#a": attr, "#pk": attrPK},
		ExpressionAttributeValues: map[string]types.AttributeValue{":null": &types.AttributeValueMemberNULL{Value: true}},
		ReturnValues:              types.ReturnValueAllNew,
		ReturnConsumedCapacity:    types.ReturnConsumedCapacityTotal,
	})
	var failed *types.ConditionalCheckFailedException
	if errors.As(err, &failed) {
		record(ctx, 0, 1)
		return nil
	}
	if err != nil {
		record(ctx, 0, 0)
		return fmt.Errorf("clear %s of %s: %w", attr, describeKey(key), err)
	}
	recordCapacity(ctx, res.ConsumedCapacity, 0, writeUnits(itemSize(res.Attributes)))
	return nil
}
