package embedded

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"
	miniserver "github.com/truora/minidyn/server"
)

const (
	testTable = "t"
	testIndex = "g1"
)

func client(t *testing.T, url string) *dynamodb.Client {
	return dynamodb.New(dynamodb.Options{
		BaseEndpoint: aws.String(url),
		Region:       "us-east-1",
		Credentials:  aws.AnonymousCredentials{},
	})
}

// started starts a server with the test table, closed when the test ends,
// and a client of it.
func started(t *testing.T) (*Server, *dynamodb.Client) {
	srv, err := Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	db := client(t, srv.URL())
	createTable(t, db)
	return srv, db
}

// plain serves the stand-in alone, as the reference the index must agree
// with; the test's requests come one at a time.
func plain(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: miniserver.NewServer()}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

func createTable(t testing.TB, db *dynamodb.Client) {
	t.Helper()
	_, err := db.CreateTable(context.Background(), &dynamodb.CreateTableInput{
		TableName: aws.String(testTable),
		AttributeDefinitions: []types.AttributeDefinition{
			{AttributeName: aws.String("pk"), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: aws.String("sk"), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: aws.String("g"), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: aws.String("h"), AttributeType: types.ScalarAttributeTypeS},
		},
		KeySchema: []types.KeySchemaElement{
			{AttributeName: aws.String("pk"), KeyType: types.KeyTypeHash},
			{AttributeName: aws.String("sk"), KeyType: types.KeyTypeRange},
		},
		GlobalSecondaryIndexes: []types.GlobalSecondaryIndex{{
			IndexName: aws.String(testIndex),
			KeySchema: []types.KeySchemaElement{
				{AttributeName: aws.String("g"), KeyType: types.KeyTypeHash},
				{AttributeName: aws.String("h"), KeyType: types.KeyTypeRange},
			},
			Projection: &types.Projection{ProjectionType: types.ProjectionTypeAll},
		}},
		BillingMode: types.BillingModePayPerRequest,
	})
	if err != nil {
		t.Fatal(err)
	}
}

func s(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }

// text is an attribute's value as text: a string's own, else its JSON.
func text(v types.AttributeValue) string {
	if s, ok := v.(*types.AttributeValueMemberS); ok {
		return s.Value
	}
	var out any
	if err := attributevalue.Unmarshal(v, &out); err != nil {
		return "bad attribute: " + err.Error()
	}
	doc, _ := json.Marshal(out)
	return string(doc)
}

var (
	// Enough partitions to spread over the stand-in's shards.
	pks   = []string{"p1", "p2", "p|3", "é", "q", "r0", "r1", "r2", "s|", "t.1", "u", "v"}
	gs    = []string{"g1", "g2", "g|3"}
	parts = []string{"a", "b", "ab", "|", "0", "Z", "é", "~"}
)

func randomSK(r *rand.Rand) string {
	out := ""
	for range 1 + r.IntN(3) {
		out += parts[r.IntN(len(parts))]
	}
	return out
}

func randomKey(r *rand.Rand) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{"pk": s(pks[r.IntN(len(pks))]), "sk": s(randomSK(r))}
}

// randomItem is an item at key with value v, in the index half the time
// (under a sort key of its own: the index's order of equal sort keys is
// left open).
func randomItem(r *rand.Rand, key map[string]types.AttributeValue, v string) map[string]types.AttributeValue {
	item := map[string]types.AttributeValue{"pk": key["pk"], "sk": key["sk"], "v": s(v)}
	if r.IntN(3) == 0 { // attributes of other types, as the store writes them
		item["n"] = &types.AttributeValueMemberN{Value: fmt.Sprint(r.IntN(1000))}
		item["m"] = &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{
			"l": &types.AttributeValueMemberL{Value: []types.AttributeValue{s(v), &types.AttributeValueMemberBOOL{Value: true}}},
			"e": s(""), "z": &types.AttributeValueMemberNULL{Value: true}}}
	}
	if r.IntN(2) == 0 {
		item["g"] = s(gs[r.IntN(len(gs))])
		item["h"] = s(randomSK(r) + "#" + key["pk"].(*types.AttributeValueMemberS).Value + "#" + key["sk"].(*types.AttributeValueMemberS).Value)
	}
	return item
}

// randomWrite is one write of each kind the store makes, with conditions
// that fail now and then; both servers get the same one.
func randomWrite(r *rand.Rand, n int) func(context.Context, *dynamodb.Client) error {
	return randomWriteOf(r, n, randomKey)
}

// randomWriteOf is randomWrite of the keys randomKey makes.
func randomWriteOf(r *rand.Rand, n int, randomKey func(*rand.Rand) map[string]types.AttributeValue) func(context.Context, *dynamodb.Client) error {
	key := randomKey(r)
	item := randomItem(r, key, fmt.Sprint(n))
	switch r.IntN(6) {
	case 0:
		return func(ctx context.Context, db *dynamodb.Client) error {
			_, err := db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(testTable), Item: item})
			return err
		}
	case 1:
		if r.IntN(2) == 0 {
			// The store's create: absent, or past its expiry (here n,
			// which a third of the items carry).
			now := fmt.Sprint(r.IntN(1000))
			return func(ctx context.Context, db *dynamodb.Client) error {
				_, err := db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(testTable), Item: item,
					ConditionExpression:       aws.String("attribute_not_exists(#pk) OR #exp < :now"),
					ExpressionAttributeNames:  map[string]string{"#pk": "pk", "#exp": "n"},
					ExpressionAttributeValues: map[string]types.AttributeValue{":now": &types.AttributeValueMemberN{Value: now}}})
				return err
			}
		}
		return func(ctx context.Context, db *dynamodb.Client) error {
			_, err := db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(testTable), Item: item,
				ConditionExpression: aws.String("attribute_not_exists(pk)")})
			return err
		}
	case 2:
		cond := map[bool]*string{true: aws.String("attribute_exists(pk)"), false: nil}[r.IntN(2) == 0]
		// An update may move the item in the index, or out of it.
		update, values := "SET v = :v", map[string]types.AttributeValue{":v": s(fmt.Sprint(n))}
		switch r.IntN(3) {
		case 1:
			update += ", g = :g, h = :h"
			values[":g"], values[":h"] = item["g"], item["h"]
			if item["g"] == nil {
				values[":g"], values[":h"] = s(gs[0]), s("moved#"+fmt.Sprint(key))
			}
		case 2:
			update += " REMOVE g"
		}
		return func(ctx context.Context, db *dynamodb.Client) error {
			_, err := db.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: aws.String(testTable), Key: key,
				UpdateExpression:          aws.String(update),
				ExpressionAttributeValues: values,
				ConditionExpression:       cond})
			return err
		}
	case 3:
		return func(ctx context.Context, db *dynamodb.Client) error {
			_, err := db.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(testTable), Key: key})
			return err
		}
	case 4:
		var reqs []types.WriteRequest
		seen := map[string]bool{}
		for range 1 + r.IntN(5) {
			k := randomKey(r)
			id := fmt.Sprint(k)
			if seen[id] {
				continue
			}
			seen[id] = true
			if r.IntN(3) == 0 {
				reqs = append(reqs, types.WriteRequest{DeleteRequest: &types.DeleteRequest{Key: k}})
			} else {
				reqs = append(reqs, types.WriteRequest{PutRequest: &types.PutRequest{Item: randomItem(r, k, "batch")}})
			}
		}
		return func(ctx context.Context, db *dynamodb.Client) error {
			_, err := db.BatchWriteItem(ctx, &dynamodb.BatchWriteItemInput{RequestItems: map[string][]types.WriteRequest{testTable: reqs}})
			return err
		}
	default:
		other := randomKey(r)
		if fmt.Sprint(other) == fmt.Sprint(key) {
			other["sk"] = s(randomSK(r) + "x")
		}
		tx := []types.TransactWriteItem{
			{Put: &types.Put{TableName: aws.String(testTable), Item: item}},
			{Delete: &types.Delete{TableName: aws.String(testTable), Key: other}},
		}
		if r.IntN(2) == 0 { // fails when the item is absent: nothing applies
			third := randomKey(r)
			if fmt.Sprint(third) != fmt.Sprint(key) && fmt.Sprint(third) != fmt.Sprint(other) {
				tx = append(tx, types.TransactWriteItem{ConditionCheck: &types.ConditionCheck{TableName: aws.String(testTable), Key: third,
					ConditionExpression: aws.String("attribute_exists(pk)")}})
			}
		}
		return func(ctx context.Context, db *dynamodb.Client) error {
			_, err := db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: tx})
			return err
		}
	}
}

// randomQuery is a query of the shapes the store makes: a partition, with a
// prefix or a range of sort keys, either way, paged by a limit.
func randomQuery(r *rand.Rand) *dynamodb.QueryInput {
	in := &dynamodb.QueryInput{
		TableName:                 aws.String(testTable),
		KeyConditionExpression:    aws.String("#pk = :pk"),
		ExpressionAttributeNames:  map[string]string{"#pk": "pk"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":pk": s(pks[r.IntN(len(pks))])},
		ScanIndexForward:          aws.Bool(r.IntN(2) == 0),
		ConsistentRead:            aws.Bool(r.IntN(2) == 0),
	}
	randomRange(r, in, "sk")
	return in
}

// randomRange adds to in a condition on its sort key name, none, a prefix
// or a range, and maybe a limit; match reports which sort keys it holds.
func randomRange(r *rand.Rand, in *dynamodb.QueryInput, name string) (match func(string) bool) {
	match = func(string) bool { return true }
	switch r.IntN(3) {
	case 1:
		prefix := parts[r.IntN(len(parts))]
		*in.KeyConditionExpression += " AND begins_with(#r, :prefix)"
		in.ExpressionAttributeNames["#r"] = name
		in.ExpressionAttributeValues[":prefix"] = s(prefix)
		match = func(v string) bool { return strings.HasPrefix(v, prefix) }
	case 2:
		lo, hi := randomSK(r), randomSK(r)
		if lo > hi {
			lo, hi = hi, lo
		}
		*in.KeyConditionExpression += " AND #r BETWEEN :lo AND :hi"
		in.ExpressionAttributeNames["#r"] = name
		in.ExpressionAttributeValues[":lo"] = s(lo)
		in.ExpressionAttributeValues[":hi"] = s(hi)
		match = func(v string) bool { return lo <= v && v <= hi }
	}
	if r.IntN(3) > 0 {
		in.Limit = aws.Int32(int32(1 + r.IntN(6)))
	}
	return match
}

// randomIndexQuery is a query of the index, in the shapes the store makes,
// and the index sort keys its condition holds.
func randomIndexQuery(r *rand.Rand) (*dynamodb.QueryInput, func(h string) bool) {
	in := &dynamodb.QueryInput{
		TableName:                 aws.String(testTable),
		IndexName:                 aws.String(testIndex),
		KeyConditionExpression:    aws.String("#g = :g"),
		ExpressionAttributeNames:  map[string]string{"#g": "g"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":g": s(gs[r.IntN(len(gs))])},
		ScanIndexForward:          aws.Bool(r.IntN(2) == 0),
	}
	match := randomRange(r, in, "h")
	return in, match
}

// indexPages runs a query of the index to its end, page by page, and
// returns its items in order, each with its values as text.
func indexPages(ctx context.Context, db *dynamodb.Client, in dynamodb.QueryInput) ([]map[string]string, error) {
	var out []map[string]string
	for range 10000 {
		res, err := db.Query(ctx, &in)
		if err != nil {
			return nil, err
		}
		if in.Limit != nil && len(res.Items) > int(*in.Limit) {
			return nil, fmt.Errorf("a page of %d items, limit %d", len(res.Items), *in.Limit)
		}
		for _, it := range res.Items {
			m := map[string]string{}
			for k, v := range it {
				m[k] = text(v)
			}
			out = append(out, m)
		}
		if res.LastEvaluatedKey == nil {
			return out, nil
		}
		in.ExclusiveStartKey = res.LastEvaluatedKey
	}
	return nil, fmt.Errorf("more than 10000 pages")
}

// indexed is what a query of the index should answer, worked out from
// every item of the table (the stand-in's own index is not kept when a
// transaction fails).
func indexed(items []map[string]string, g string, match func(string) bool, forward bool) []map[string]string {
	var out []map[string]string
	for _, it := range items {
		if h, ok := it["h"]; ok && it["g"] == g && match(h) {
			out = append(out, it)
		}
	}
	slices.SortFunc(out, func(a, b map[string]string) int {
		if forward {
			return strings.Compare(a["h"], b["h"])
		}
		return strings.Compare(b["h"], a["h"])
	})
	return out
}

// plainItems is items with their values as text, sorted: two servers'
// answers compare as sets.
func plainItems(items []map[string]types.AttributeValue) string {
	var out []string
	for _, it := range items {
		m := map[string]string{}
		for k, v := range it {
			m[k] = text(v)
		}
		doc, _ := json.Marshal(m)
		out = append(out, string(doc))
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}

// scanAll scans the table to its end in pages of limit items (0: no limit).
func scanAll(ctx context.Context, db *dynamodb.Client, limit int32) (string, []map[string]string, error) {
	in := &dynamodb.ScanInput{TableName: aws.String(testTable)}
	if limit > 0 {
		in.Limit = aws.Int32(limit)
	}
	var all []map[string]types.AttributeValue
	for range 10000 {
		res, err := db.Scan(ctx, in)
		if err != nil {
			return "", nil, err
		}
		all = append(all, res.Items...)
		if res.LastEvaluatedKey == nil {
			var items []map[string]string
			for _, it := range all {
				m := map[string]string{}
				for k, v := range it {
					m[k] = text(v)
				}
				items = append(items, m)
			}
			return plainItems(all), items, nil
		}
		in.ExclusiveStartKey = res.LastEvaluatedKey
	}
	return "", nil, fmt.Errorf("more than 10000 pages")
}

// batchGet reads keys in one BatchGetItem.
func batchGet(ctx context.Context, db *dynamodb.Client, keys []map[string]types.AttributeValue) (string, error) {
	res, err := db.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{RequestItems: map[string]types.KeysAndAttributes{
		testTable: {Keys: keys, ConsistentRead: aws.Bool(true)}}})
	if err != nil {
		return "", err
	}
	if len(res.UnprocessedKeys) > 0 {
		return "", fmt.Errorf("unprocessed keys %v", res.UnprocessedKeys)
	}
	return plainItems(res.Responses[testTable]), nil
}

// getItem reads one item, as text ("null" when absent).
func getItem(ctx context.Context, db *dynamodb.Client, key map[string]types.AttributeValue) (string, error) {
	res, err := db.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(testTable), Key: key, ConsistentRead: aws.Bool(true)})
	if err != nil || res.Item == nil {
		return "null", err
	}
	return plainItems([]map[string]types.AttributeValue{res.Item}), nil
}

// pages runs a query to its end and returns every page's items and the key
// it ended at.
func pages(ctx context.Context, db *dynamodb.Client, in dynamodb.QueryInput) (string, error) {
	var out []any
	for range 10000 {
		res, err := db.Query(ctx, &in)
		if err != nil {
			return "", err
		}
		var page []map[string]string
		for _, it := range res.Items {
			m := map[string]string{}
			for k, v := range it {
				m[k] = text(v)
			}
			page = append(page, m)
		}
		out = append(out, page)
		if res.LastEvaluatedKey == nil {
			doc, err := json.Marshal(out)
			return string(doc), err
		}
		in.ExclusiveStartKey = res.LastEvaluatedKey
	}
	return "", fmt.Errorf("more than 10000 pages")
}

// TestPartitionsAgreeWithTheStandIn runs the same random writes against the
// stand-in alone and behind the index, and checks that every query answers
// alike, page by page.
func TestPartitionsAgreeWithTheStandIn(t *testing.T) {
	ctx := context.Background()
	srv, fast := started(t)
	ref := client(t, plain(t))
	createTable(t, ref)
	r := rand.New(rand.NewPCG(1, 2))
	queries, indexQueries := 0, 0
	for n := range 800 {
		w := randomWrite(r, n)
		errFast, errRef := w(ctx, fast), w(ctx, ref)
		if (errFast == nil) != (errRef == nil) {
			t.Fatalf("write %d: behind the index %v, alone %v", n, errFast, errRef)
		}
		if n%10 != 0 {
			continue
		}
		for range 5 {
			in := randomQuery(r)
			got, err := pages(ctx, fast, *in)
			if err != nil {
				t.Fatalf("query behind the index: %v", err)
			}
			want, err := pages(ctx, ref, *in)
			if err != nil {
				t.Fatalf("query of the stand-in: %v", err)
			}
			if got != want {
				t.Fatalf("after %d writes, %s %v limit %v forward %v:\nbehind the index %s\nalone            %s",
					n+1, *in.KeyConditionExpression, in.ExpressionAttributeValues, in.Limit, *in.ScanIndexForward, got, want)
			}
			queries++
		}
		limit := int32(r.IntN(8))
		got, _, err := scanAll(ctx, fast, limit)
		if err != nil {
			t.Fatalf("scan behind the copy: %v", err)
		}
		want, items, err := scanAll(ctx, ref, limit)
		if err != nil || got != want {
			t.Fatalf("after %d writes, scan (limit %d):\nbehind the copy %s\nalone           %s (%v)", n+1, limit, got, want, err)
		}
		for range 3 {
			in, match := randomIndexQuery(r)
			got, err := indexPages(ctx, fast, *in)
			if err != nil {
				t.Fatalf("index query behind the copy: %v", err)
			}
			g := in.ExpressionAttributeValues[":g"].(*types.AttributeValueMemberS).Value
			if want := indexed(items, g, match, *in.ScanIndexForward); !reflect.DeepEqual(got, want) && len(got)+len(want) > 0 {
				t.Fatalf("after %d writes, index %s %v limit %v forward %v:\nbehind the copy %v\nfrom the items   %v",
					n+1, *in.KeyConditionExpression, in.ExpressionAttributeValues, in.Limit, *in.ScanIndexForward, got, want)
			}
			indexQueries++
		}
		var keys []map[string]types.AttributeValue
		seen := map[string]bool{}
		for range 1 + r.IntN(8) {
			k := randomKey(r)
			if !seen[fmt.Sprint(k)] {
				seen[fmt.Sprint(k)] = true
				keys = append(keys, k)
			}
		}
		got, err = batchGet(ctx, fast, keys)
		if err != nil {
			t.Fatalf("batch get behind the copy: %v", err)
		}
		if want, err := batchGet(ctx, ref, keys); err != nil || got != want {
			t.Fatalf("after %d writes, batch get:\nbehind the copy %s\nalone           %s (%v)", n+1, got, want, err)
		}
		for _, k := range keys[:min(len(keys), 2)] {
			got, errGot := getItem(ctx, fast, k)
			want, errWant := getItem(ctx, ref, k)
			if errGot != nil || errWant != nil || got != want {
				t.Fatalf("after %d writes, get %v:\nbehind the copy %s (%v)\nalone           %s (%v)", n+1, k, got, errGot, want, errWant)
			}
		}
	}
	idx := srv.http.Handler.(*partitions)
	if len(idx.tables[testTable].keys) == 0 {
		t.Fatal("the index holds no keys: the queries went to the stand-in")
	}
	t.Logf("%d queries and %d of the index agreed", queries, indexQueries)
}

// TestPartitionsRefuseOtherReads: a read of more than one item in a shape
// the copy does not answer (a filter here) cannot go to the stand-in, which
// holds the table in shards: it is refused with a ValidationException that
// says what is answered, not answered from one shard.
func TestPartitionsRefuseOtherReads(t *testing.T) {
	ctx := context.Background()
	_, db := started(t)
	for i, v := range []string{"x", "y", "x"} {
		if _, err := db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(testTable),
			Item: map[string]types.AttributeValue{"pk": s("p"), "sk": s(fmt.Sprint(i)), "v": s(v)}}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := db.Query(ctx, &dynamodb.QueryInput{
		TableName:                 aws.String(testTable),
		KeyConditionExpression:    aws.String("pk = :pk"),
		FilterExpression:          aws.String("v = :v"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":pk": s("p"), ":v": s("x")},
	})
	var refused *smithy.GenericAPIError
	if !errors.As(err, &refused) || refused.Code != "ValidationException" || !strings.Contains(refused.Message, "not supported") {
		t.Fatalf("filtered query: %v, want a ValidationException", err)
	}
	_, err = db.Scan(ctx, &dynamodb.ScanInput{TableName: aws.String(testTable), FilterExpression: aws.String("v = :v"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":v": s("x")}})
	if !errors.As(err, &refused) || refused.Code != "ValidationException" {
		t.Fatalf("filtered scan: %v, want a ValidationException", err)
	}
	// The shapes the store makes are answered.
	res, err := db.Query(ctx, &dynamodb.QueryInput{
		TableName:                 aws.String(testTable),
		KeyConditionExpression:    aws.String("pk = :pk"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":pk": s("p")},
	})
	if err != nil || len(res.Items) != 3 {
		t.Fatalf("query: %v, %d items", err, len(res.Items))
	}
}

// TestPartitionsAnswerGetsFromTheCopy: a GetItem or BatchGetItem of whole
// items by their keys does not reach the stand-in, where it would wait for
// its lock behind the writes in flight; one of another shape does.
func TestPartitionsAnswerGetsFromTheCopy(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	reached := map[string]int{}
	shards := newShards(miniserver.NewServer())
	p := newPartitions(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op := r.Header.Get("X-Amz-Target")
		mu.Lock()
		reached[op[strings.LastIndex(op, ".")+1:]]++
		mu.Unlock()
		shards.ServeHTTP(w, r)
	}))
	srv, err := start("127.0.0.1:0", p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	db := client(t, srv.URL())
	createTable(t, db)
	item := map[string]types.AttributeValue{"pk": s("p"), "sk": s("a"), "v": s("x"),
		"n": &types.AttributeValueMemberN{Value: "7"}}
	if _, err := db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(testTable), Item: item}); err != nil {
		t.Fatal(err)
	}
	key := func(sk string) map[string]types.AttributeValue {
		return map[string]types.AttributeValue{"pk": s("p"), "sk": s(sk)}
	}
	if got, err := getItem(ctx, db, key("a")); err != nil || got != plainItems([]map[string]types.AttributeValue{item}) {
		t.Fatalf("get: %s %v", got, err)
	}
	if got, err := getItem(ctx, db, key("b")); err != nil || got != "null" {
		t.Fatalf("get of a missing item: %s %v", got, err)
	}
	if got, err := batchGet(ctx, db, []map[string]types.AttributeValue{key("a"), key("b")}); err != nil || got != plainItems([]map[string]types.AttributeValue{item}) {
		t.Fatalf("batch get: %s %v", got, err)
	}
	mu.Lock()
	if reached["GetItem"]+reached["BatchGetItem"] != 0 {
		t.Fatalf("the stand-in answered gets: %v", reached)
	}
	mu.Unlock()
	// A projection is the stand-in's to apply.
	res, err := db.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(testTable), Key: key("a"), ProjectionExpression: aws.String("v")})
	if err != nil || len(res.Item) != 1 || text(res.Item["v"]) != "x" {
		t.Fatalf("projected get: %v %v", res, err)
	}
	// So is a key that is not the table's.
	_, err = db.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(testTable), Key: map[string]types.AttributeValue{"pk": s("p")}})
	var refused *smithy.GenericAPIError
	if !errors.As(err, &refused) || refused.Code != "ValidationException" {
		t.Fatalf("get without the sort key: %v, want a ValidationException", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if reached["GetItem"] != 2 {
		t.Fatalf("the stand-in answered %d gets, want the projected one and the bad key", reached["GetItem"])
	}
}

// TestPartitionsBlindWritesRefuseWhatDynamoDBRefuses: the writes the copy
// decides alone (owed.go) are refused as DynamoDB refuses them when they
// are malformed: the copy leaves those to the stand-in. (The stand-in
// itself takes an empty key string and a batch naming one item twice,
// which DynamoDB refuses; the store makes neither.)
func TestPartitionsBlindWritesRefuseWhatDynamoDBRefuses(t *testing.T) {
	ctx := context.Background()
	_, db := started(t)
	item := func(sk string) map[string]types.AttributeValue {
		return map[string]types.AttributeValue{"pk": s("p"), "sk": s(sk), "v": s("x")}
	}
	put := func(it map[string]types.AttributeValue) types.WriteRequest {
		return types.WriteRequest{PutRequest: &types.PutRequest{Item: it}}
	}
	var tooMany []types.WriteRequest
	for i := range 26 {
		tooMany = append(tooMany, put(item(fmt.Sprint(i))))
	}
	withSet := item("set")
	withSet["ss"] = &types.AttributeValueMemberSS{Value: []string{"a", "a"}}
	for what, write := range map[string]func() error{
		"no sort key": func() error {
			_, err := db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(testTable),
				Item: map[string]types.AttributeValue{"pk": s("p"), "v": s("x")}})
			return err
		},
		"a set with a value twice": func() error {
			_, err := db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(testTable), Item: withSet})
			return err
		},
		"a batch of 26": func() error {
			_, err := db.BatchWriteItem(ctx, &dynamodb.BatchWriteItemInput{RequestItems: map[string][]types.WriteRequest{testTable: tooMany}})
			return err
		},
		"a delete without the sort key": func() error {
			_, err := db.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(testTable),
				Key: map[string]types.AttributeValue{"pk": s("p")}})
			return err
		},
	} {
		var refused *smithy.GenericAPIError
		if err := write(); !errors.As(err, &refused) || refused.Code != "ValidationException" {
			t.Errorf("%s: %v, want a ValidationException", what, err)
		}
	}
	res, err := db.Scan(ctx, &dynamodb.ScanInput{TableName: aws.String(testTable)})
	if err != nil || len(res.Items) != 0 {
		t.Fatalf("after refused writes, the table holds %d items (%v)", len(res.Items), err)
	}
}

// TestStringKeyID: the key ID a Query makes of string keys is keyID's.
func TestStringKeyID(t *testing.T) {
	for _, tb := range []*table{{hash: "pk", rng: "sk"}, {hash: "pk"}} {
		for _, k := range [][2]string{{"user|@a:x", "stream|1"}, {"p", ""}, {"é|ü", "a:b:c"}} {
			want, ok := tb.keyID(map[string]attr{tb.hash: stringAttr(k[0]), tb.rng: stringAttr(k[1])})
			if got := tb.stringKeyID(k[0], k[1]); !ok || got != want {
				t.Errorf("stringKeyID(%q, %q) = %q, keyID %q", k[0], k[1], got, want)
			}
		}
	}
}

// TestPartitionsConcurrentWritesKeepTheCopy: writes of different items run
// side by side, writes of one item one after the other. After writers race
// over a few keys with every kind of write, the copy (which answers Scans
// and Queries) holds each item as the stand-in does, once it is paid what
// blind writes left owed (owed.go): a write the stand-in decided and the
// copy took out of order would leave them apart.
func TestPartitionsConcurrentWritesKeepTheCopy(t *testing.T) {
	ctx := context.Background()
	srv, db := started(t)
	// A write that waits before its change to the copy is overtaken,
	// unless the locks of its items hold the next write of them back.
	var pauses atomic.Int64
	srv.http.Handler.(*partitions).pause = func() {
		if pauses.Add(1)%3 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	// Few keys, so that writes of one item meet.
	few := func(r *rand.Rand) map[string]types.AttributeValue {
		return map[string]types.AttributeValue{"pk": s(pks[r.IntN(2)]), "sk": s(parts[r.IntN(3)])}
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 7))
			for n := range 300 {
				_ = randomWriteOf(r, g*1000+n, few)(ctx, db)
			}
		})
	}
	// Most of those are decided by the copy alone; puts in transactions
	// are the stand-in's, and the copy takes what they name: two of one
	// item that overtook each other on their way to the copy would leave
	// it apart from the stand-in.
	for g := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 11))
			for n := range 150 {
				key := few(r)
				_, _ = db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []types.TransactWriteItem{
					{Put: &types.Put{TableName: aws.String(testTable), Item: randomItem(r, key, fmt.Sprint("tx", g, n))}}}})
			}
		})
	}
	wg.Wait()
	_, items, err := scanAll(ctx, db, 0)
	if err != nil {
		t.Fatal(err)
	}
	copied := map[string]map[string]string{}
	for _, it := range items {
		copied[it["pk"]+"\x00"+it["sk"]] = it
	}
	// Every sort key randomSK makes, once.
	sks := map[string]bool{}
	for _, a := range parts {
		for _, b := range append([]string{""}, parts...) {
			for _, c := range append([]string{""}, parts...) {
				sks[a+b+c] = true
			}
		}
	}
	p := srv.http.Handler.(*partitions)
	p.tableMu.Lock()
	err = p.settleAll()
	p.tableMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, pk := range pks {
		for sk := range sks {
			// Read from the stand-in, past the copy.
			raw, found := p.get(testTable, map[string]attr{"pk": stringAttr(pk), "sk": stringAttr(sk)})
			var got map[string]string
			if found {
				item, err := attributevalue.UnmarshalMapJSON(raw)
				if err != nil {
					t.Fatal(err)
				}
				got = map[string]string{}
				for k, v := range item {
					got[k] = text(v)
				}
				checked++
			}
			if want := copied[pk+"\x00"+sk]; !reflect.DeepEqual(got, want) {
				t.Fatalf("item %s %s: the stand-in holds %v, the copy %v", pk, sk, got, want)
			}
			delete(copied, pk+"\x00"+sk)
		}
	}
	if len(copied) > 0 || checked == 0 {
		t.Fatalf("%d items checked; the copy holds %d the stand-in does not", checked, len(copied))
	}
	t.Logf("%d items agree", checked)
}
