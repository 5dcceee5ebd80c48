package embedded

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// partitions sits in front of the stand-in and answers the table queries the
// store makes, a partition key and an optional range of sort keys, from an
// index of each partition's sort keys. The stand-in evaluates every Query
// against every item of the table, holding its one lock, so a query's time
// grows with the table: 60 ms at 10,000 items, where DynamoDB reads only the
// partition. Measured latencies (and a test suite's time) would otherwise
// reflect the stand-in, not the design.
//
// Items still live in the stand-in alone: the index holds keys, refreshed
// after every write by reading the written keys back, so conditions,
// transactions and updates keep the stand-in's semantics. Queries of any
// other shape (an index, a filter, a projection) go to the stand-in as
// before.
//
// Writes run one at a time and queries beside each other, which also gives
// transactions the isolation the stand-in lacks: it applies one item by item
// and, when one fails, restores a snapshot of the whole table taken before,
// undoing a write of another request that landed in between.
type partitions struct {
	next http.Handler

	mu     sync.RWMutex
	tables map[string]*table
}

// table is one table's key schema and its partitions' sort keys, in byte
// order as DynamoDB sorts strings.
type table struct {
	hash, rng string
	keys      map[string][]string
}

func newPartitions(next http.Handler) *partitions {
	return &partitions{next: next, tables: map[string]*table{}}
}

func (p *partitions) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	op := r.Header.Get("X-Amz-Target")
	op = op[strings.LastIndex(op, ".")+1:]
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "read request: "+err.Error(), http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	switch op {
	case "Query":
		p.mu.RLock()
		defer p.mu.RUnlock()
		if out, ok := p.query(body); ok {
			w.Header().Set("Content-Type", "application/x-amz-json-1.0")
			w.Write(out)
			return
		}
		p.next.ServeHTTP(w, r)
	case "GetItem", "BatchGetItem", "TransactGetItems", "Scan", "DescribeTable", "ListTables":
		p.mu.RLock()
		defer p.mu.RUnlock()
		p.next.ServeHTTP(w, r)
	default:
		p.mu.Lock()
		defer p.mu.Unlock()
		rec := httptest.NewRecorder()
		p.next.ServeHTTP(rec, r)
		if rec.Code == http.StatusOK {
			p.wrote(op, body)
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
	}
}

// attr is an attribute value as the API encodes it, such as {"S":"x"}.
type attr map[string]json.RawMessage

// str is the value of a string attribute.
func (a attr) str() (string, bool) {
	raw, ok := a["S"]
	if !ok || len(a) != 1 {
		return "", false
	}
	var s string
	return s, json.Unmarshal(raw, &s) == nil
}

// wrote updates the index after a successful write request of op.
func (p *partitions) wrote(op string, body []byte) {
	switch op {
	case "CreateTable":
		p.created(body)
	case "DeleteTable":
		var in struct{ TableName string }
		if json.Unmarshal(body, &in) == nil {
			delete(p.tables, in.TableName)
		}
	default:
		for _, k := range writtenKeys(op, body) {
			p.refresh(k.table, k.key)
		}
	}
}

// created learns the key schema of a new table whose keys are strings;
// other tables are not indexed and their queries go to the stand-in.
func (p *partitions) created(body []byte) {
	var in struct {
		TableName string
		KeySchema []struct {
			AttributeName, KeyType string
		}
		AttributeDefinitions []struct {
			AttributeName, AttributeType string
		}
	}
	if json.Unmarshal(body, &in) != nil {
		return
	}
	types := map[string]string{}
	for _, d := range in.AttributeDefinitions {
		types[d.AttributeName] = d.AttributeType
	}
	t := &table{keys: map[string][]string{}}
	for _, k := range in.KeySchema {
		if types[k.AttributeName] != "S" {
			return
		}
		if k.KeyType == "HASH" {
			t.hash = k.AttributeName
		} else {
			t.rng = k.AttributeName
		}
	}
	if t.hash != "" && t.rng != "" {
		p.tables[in.TableName] = t
	}
}

type tableKey struct {
	table string
	key   map[string]attr
}

// writtenKeys lists the items a write request may have created, changed or
// deleted.
func writtenKeys(op string, body []byte) []tableKey {
	type write struct {
		TableName string
		Item, Key map[string]attr
	}
	keyOf := func(w write) tableKey {
		if w.Item != nil {
			return tableKey{w.TableName, w.Item}
		}
		return tableKey{w.TableName, w.Key}
	}
	var out []tableKey
	switch op {
	case "PutItem", "UpdateItem", "DeleteItem":
		var w write
		if json.Unmarshal(body, &w) == nil {
			out = append(out, keyOf(w))
		}
	case "BatchWriteItem":
		var in struct {
			RequestItems map[string][]struct {
				PutRequest    *struct{ Item map[string]attr }
				DeleteRequest *struct{ Key map[string]attr }
			}
		}
		_ = json.Unmarshal(body, &in)
		for name, reqs := range in.RequestItems {
			for _, r := range reqs {
				if r.PutRequest != nil {
					out = append(out, tableKey{name, r.PutRequest.Item})
				}
				if r.DeleteRequest != nil {
					out = append(out, tableKey{name, r.DeleteRequest.Key})
				}
			}
		}
	case "TransactWriteItems":
		var in struct {
			TransactItems []struct{ Put, Update, Delete *write }
		}
		_ = json.Unmarshal(body, &in)
		for _, it := range in.TransactItems {
			for _, w := range []*write{it.Put, it.Update, it.Delete} {
				if w != nil {
					out = append(out, keyOf(*w))
				}
			}
		}
	}
	return out
}

// refresh reads a written key back from the stand-in and records whether
// the item exists.
func (p *partitions) refresh(name string, item map[string]attr) {
	t, ok := p.tables[name]
	if !ok {
		return
	}
	pk, ok1 := item[t.hash].str()
	sk, ok2 := item[t.rng].str()
	if !ok1 || !ok2 {
		return
	}
	_, exists := p.get(name, map[string]attr{t.hash: item[t.hash], t.rng: item[t.rng]})
	keys := t.keys[pk]
	i, found := slices.BinarySearch(keys, sk)
	switch {
	case exists && !found:
		t.keys[pk] = slices.Insert(keys, i, sk)
	case !exists && found:
		keys = slices.Delete(keys, i, i+1)
		if len(keys) == 0 {
			delete(t.keys, pk)
		} else {
			t.keys[pk] = keys
		}
	}
}

// get reads one item from the stand-in.
func (p *partitions) get(name string, key map[string]attr) (json.RawMessage, bool) {
	body, _ := json.Marshal(map[string]any{"TableName": name, "Key": key, "ConsistentRead": true})
	req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
	req.Header.Set("X-Amz-Target", "DynamoDB_20120810.GetItem")
	rec := httptest.NewRecorder()
	p.next.ServeHTTP(rec, req)
	var out struct{ Item json.RawMessage }
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &out) != nil {
		return nil, false
	}
	if len(out.Item) == 0 || string(out.Item) == "null" || string(out.Item) == "{}" {
		return nil, false
	}
	return out.Item, true
}

// keyCondition is the store's key conditions: the partition, and at most
// one condition on the sort key.
var keyCondition = regexp.MustCompile(`^\s*(#?\w+)\s*=\s*(:\w+)\s*(?:AND\s+(?:(#?\w+)\s+BETWEEN\s+(:\w+)\s+AND\s+(:\w+)|begins_with\s*\(\s*(#?\w+)\s*,\s*(:\w+)\s*\)))?\s*$`)

type queryInput struct {
	TableName                 string
	IndexName                 string
	KeyConditionExpression    string
	FilterExpression          string
	ProjectionExpression      string
	Select                    string
	KeyConditions             json.RawMessage
	QueryFilter               json.RawMessage
	AttributesToGet           json.RawMessage
	ExpressionAttributeNames  map[string]string
	ExpressionAttributeValues map[string]attr
	ScanIndexForward          *bool
	Limit                     *int
	ExclusiveStartKey         map[string]attr
}

// query answers a Query from the index, or reports that it cannot and the
// stand-in must.
func (p *partitions) query(body []byte) ([]byte, bool) {
	var in queryInput
	if json.Unmarshal(body, &in) != nil {
		return nil, false
	}
	t, ok := p.tables[in.TableName]
	if !ok || in.IndexName != "" || in.FilterExpression != "" || in.ProjectionExpression != "" ||
		(in.Select != "" && in.Select != "ALL_ATTRIBUTES") || in.KeyConditions != nil ||
		in.QueryFilter != nil || in.AttributesToGet != nil || (in.Limit != nil && *in.Limit < 1) {
		return nil, false
	}
	pk, match, ok := in.condition(t)
	if !ok {
		return nil, false
	}
	keys := slices.Clone(t.keys[pk])
	forward := in.ScanIndexForward == nil || *in.ScanIndexForward
	if !forward {
		slices.Reverse(keys)
	}
	if in.ExclusiveStartKey != nil {
		epk, ok1 := in.ExclusiveStartKey[t.hash].str()
		esk, ok2 := in.ExclusiveStartKey[t.rng].str()
		if !ok1 || !ok2 || epk != pk || len(in.ExclusiveStartKey) != 2 {
			return nil, false
		}
		keys = slices.DeleteFunc(keys, func(sk string) bool {
			return (forward && sk <= esk) || (!forward && sk >= esk)
		})
	}
	items := []json.RawMessage{}
	var last string
	for _, sk := range keys {
		if in.Limit != nil && len(items) == *in.Limit {
			break
		}
		if !match(sk) {
			continue
		}
		item, ok := p.get(in.TableName, map[string]attr{t.hash: stringAttr(pk), t.rng: stringAttr(sk)})
		if !ok {
			continue
		}
		items = append(items, item)
		last = sk
	}
	out := map[string]any{"Items": items, "Count": len(items), "ScannedCount": len(items)}
	if in.Limit != nil && len(items) == *in.Limit {
		out["LastEvaluatedKey"] = map[string]attr{t.hash: stringAttr(pk), t.rng: stringAttr(last)}
	}
	res, err := json.Marshal(out)
	return res, err == nil
}

func stringAttr(s string) attr {
	raw, _ := json.Marshal(s)
	return attr{"S": raw}
}

// condition parses the key condition into the partition and a test of sort
// keys; ok is false for any condition the store does not write.
func (in *queryInput) condition(t *table) (pk string, match func(string) bool, ok bool) {
	m := keyCondition.FindStringSubmatch(in.KeyConditionExpression)
	if m == nil {
		return "", nil, false
	}
	name := func(s string) string {
		if strings.HasPrefix(s, "#") {
			return in.ExpressionAttributeNames[s]
		}
		return s
	}
	value := func(s string) (string, bool) {
		a, ok := in.ExpressionAttributeValues[s]
		if !ok {
			return "", false
		}
		return a.str()
	}
	if name(m[1]) != t.hash {
		return "", nil, false
	}
	if pk, ok = value(m[2]); !ok {
		return "", nil, false
	}
	switch {
	case m[3] != "":
		lo, ok1 := value(m[4])
		hi, ok2 := value(m[5])
		if name(m[3]) != t.rng || !ok1 || !ok2 || lo > hi {
			return "", nil, false
		}
		return pk, func(sk string) bool { return lo <= sk && sk <= hi }, true
	case m[6] != "":
		prefix, ok := value(m[7])
		if name(m[6]) != t.rng || !ok {
			return "", nil, false
		}
		return pk, func(sk string) bool { return strings.HasPrefix(sk, prefix) }, true
	}
	return pk, func(string) bool { return true }, true
}
