package embedded

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"reflect"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	miniserver "github.com/truora/minidyn/server"
)

const testTable = "t"

func client(t *testing.T, url string) *dynamodb.Client {
	return dynamodb.New(dynamodb.Options{
		BaseEndpoint: aws.String(url),
		Region:       "local",
		Credentials:  aws.AnonymousCredentials{},
	})
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
		},
		KeySchema: []types.KeySchemaElement{
			{AttributeName: aws.String("pk"), KeyType: types.KeyTypeHash},
			{AttributeName: aws.String("sk"), KeyType: types.KeyTypeRange},
		},
		BillingMode: types.BillingModePayPerRequest,
	})
	if err != nil {
		t.Fatal(err)
	}
}

func s(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }

var (
	pks   = []string{"p1", "p2", "p|3"}
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

// randomWrite is one write of each kind the store makes, with conditions
// that fail now and then; both servers get the same one.
func randomWrite(r *rand.Rand, n int) func(context.Context, *dynamodb.Client) error {
	key := randomKey(r)
	item := map[string]types.AttributeValue{"pk": key["pk"], "sk": key["sk"], "v": s(fmt.Sprint(n))}
	switch r.IntN(6) {
	case 0:
		return func(ctx context.Context, db *dynamodb.Client) error {
			_, err := db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(testTable), Item: item})
			return err
		}
	case 1:
		return func(ctx context.Context, db *dynamodb.Client) error {
			_, err := db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(testTable), Item: item,
				ConditionExpression: aws.String("attribute_not_exists(pk)")})
			return err
		}
	case 2:
		cond := map[bool]*string{true: aws.String("attribute_exists(pk)"), false: nil}[r.IntN(2) == 0]
		return func(ctx context.Context, db *dynamodb.Client) error {
			_, err := db.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: aws.String(testTable), Key: key,
				UpdateExpression:          aws.String("SET v = :v"),
				ExpressionAttributeValues: map[string]types.AttributeValue{":v": s(fmt.Sprint(n))},
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
				reqs = append(reqs, types.WriteRequest{PutRequest: &types.PutRequest{Item: map[string]types.AttributeValue{"pk": k["pk"], "sk": k["sk"], "v": s("batch")}}})
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
	switch r.IntN(3) {
	case 1:
		*in.KeyConditionExpression += " AND begins_with(#sk, :prefix)"
		in.ExpressionAttributeNames["#sk"] = "sk"
		in.ExpressionAttributeValues[":prefix"] = s(parts[r.IntN(len(parts))])
	case 2:
		lo, hi := randomSK(r), randomSK(r)
		if lo > hi {
			lo, hi = hi, lo
		}
		*in.KeyConditionExpression += " AND #sk BETWEEN :lo AND :hi"
		in.ExpressionAttributeNames["#sk"] = "sk"
		in.ExpressionAttributeValues[":lo"] = s(lo)
		in.ExpressionAttributeValues[":hi"] = s(hi)
	}
	if r.IntN(3) > 0 {
		in.Limit = aws.Int32(int32(1 + r.IntN(6)))
	}
	return in
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
				m[k] = v.(*types.AttributeValueMemberS).Value
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
	srv, err := Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	fast, ref := client(t, srv.URL()), client(t, plain(t))
	createTable(t, fast)
	createTable(t, ref)
	r := rand.New(rand.NewPCG(1, 2))
	queries := 0
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
	}
	idx := srv.http.Handler.(*partitions)
	if len(idx.tables[testTable].keys) == 0 {
		t.Fatal("the index holds no keys: the queries went to the stand-in")
	}
	t.Logf("%d queries agreed", queries)
}

// TestPartitionsAnswerOtherQueriesThroughTheStandIn checks that shapes the
// index does not know still work: a filter here.
func TestPartitionsAnswerOtherQueriesThroughTheStandIn(t *testing.T) {
	ctx := context.Background()
	srv, err := Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	db := client(t, srv.URL())
	createTable(t, db)
	for i, v := range []string{"x", "y", "x"} {
		if _, err := db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(testTable),
			Item: map[string]types.AttributeValue{"pk": s("p"), "sk": s(fmt.Sprint(i)), "v": s(v)}}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := db.Query(ctx, &dynamodb.QueryInput{
		TableName:                 aws.String(testTable),
		KeyConditionExpression:    aws.String("pk = :pk"),
		FilterExpression:          aws.String("v = :v"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":pk": s("p"), ":v": s("x")},
	})
	if err != nil {
		t.Fatal(err)
	}
	var sks []string
	for _, it := range res.Items {
		sks = append(sks, it["sk"].(*types.AttributeValueMemberS).Value)
	}
	if !reflect.DeepEqual(sks, []string{"0", "2"}) {
		t.Fatalf("filtered query: %v", sks)
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
