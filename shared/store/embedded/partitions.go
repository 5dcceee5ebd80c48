package embedded

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// partitions sits in front of the stand-in and answers the table queries the
// store makes, a partition key and an optional range of sort keys, from a
// copy of the items kept by key, with each partition's sort keys in order.
// The stand-in evaluates every Query against every item of the table,
// holding its one lock, so a query's time grows with the table: 60 ms at
// 10,000 items, where DynamoDB reads only the partition. Measured latencies
// (and a test suite's time) would otherwise reflect the stand-in, not the
// design.
//
// Writes still go to the stand-in (in shards: shards.go), so conditions,
// transactions and updates keep its semantics; after each, what it changed
// (the items a put or a delete names, or read back from the stand-in)
// updates the copy and, when the server keeps a journal, is journaled
// (durable.go). The copy also answers the Queries of an index (index.go)
// and Scans of whole items; reads of other shapes are refused.
//
// Writes of different items run side by side, as DynamoDB runs them (a
// message's slot, its stream entries and its search words are written at
// once), and writes of one item one after the other: the copy then takes
// their changes in the order the stand-in did. The stand-in applies each
// request whole, under its one lock; the copy takes a request's changes
// at once, so that no query sees half a transaction.
type partitions struct {
	next http.Handler

	// mu guards the copy: queries hold it to read, writes only to apply
	// what they changed, all of a request's changes at once.
	mu     sync.RWMutex
	tables map[string]*table
	// tableMu is held to change a table (which no item write may see
	// half done) and read-held by every item write.
	tableMu sync.RWMutex
	// items serializes the writes of one item: writes of different items
	// run side by side, as DynamoDB runs them, and the stand-in, holding
	// its own lock for each request, applies each whole.
	items [256]sync.Mutex
	// pause, set by tests, runs between a write's request to the stand-in
	// (or its answer, for a write to the copy alone) and its change to
	// the copy, where writes of one item must not overtake each other.
	pause func()

	// owed are the items changed in the copy alone, by table and keyID,
	// with their keys (owed.go); oweMu guards it.
	oweMu sync.Mutex
	owed  map[string]map[string]map[string]attr

	// log, when set, makes every change durable before any response
	// that could reflect it goes out.
	log *journal
	// cutMu is held while a snapshot is taken.
	cutMu sync.Mutex
}

// table is one table's definition and items.
type table struct {
	// defs are the requests that made the table as it is (CreateTable,
	// then any UpdateTable), replayed when it is restored.
	defs []tableOp
	// hash and rng name the key attributes; rng is "" without a sort key.
	hash, rng string
	// items holds every item, by keyID.
	items map[string]json.RawMessage
	// keys, for a table whose keys are both strings, holds each
	// partition's sort keys in byte order, as DynamoDB sorts strings;
	// queries of other tables go to the stand-in.
	keys map[string][]string
	// indexes are the table's global secondary indexes whose keys are
	// strings, by name (index.go).
	indexes map[string]*index
}

func newPartitions(next http.Handler) *partitions {
	return &partitions{next: next, tables: map[string]*table{}}
}

// reads are the operations that change nothing.
var reads = map[string]bool{"Query": true, "GetItem": true, "BatchGetItem": true, "TransactGetItems": true,
	"Scan": true, "DescribeTable": true, "ListTables": true, "DescribeTimeToLive": true}

func (p *partitions) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	op := r.Header.Get("X-Amz-Target")
	op = op[strings.LastIndex(op, ".")+1:]
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "read request: "+err.Error(), http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	if err := p.log.broken(); err != nil {
		apiError(w, http.StatusInternalServerError, "InternalServerError", err.Error())
		return
	}
	rec := httptest.NewRecorder()
	var seq uint64
	if reads[op] {
		seq = p.read(op, body, r, rec)
	} else if itemWrites[op] {
		seq = p.writeItems(op, body, r, rec)
	} else {
		p.tableMu.Lock()
		if err := p.settleAll(); err != nil {
			apiError(rec, http.StatusInternalServerError, "InternalServerError", err.Error())
		} else {
			p.mu.Lock()
			p.next.ServeHTTP(rec, r)
			seq = p.log.append(p.wroteTable(op, body, rec.Code == http.StatusOK))
			p.mu.Unlock()
		}
		p.tableMu.Unlock()
	}
	// Nothing goes out, a write's success or a read of one, before the
	// writes it could reflect are on disk.
	if err := p.log.wait(seq); err != nil {
		apiError(w, http.StatusInternalServerError, "InternalServerError", err.Error())
		return
	}
	p.maybeCut()
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
}

// read answers a read from the copy, or has the stand-in answer it once
// the stand-in holds every item; it returns the journal's sequence number
// of the last change the answer may reflect.
func (p *partitions) read(op string, body []byte, r *http.Request, rec *httptest.ResponseRecorder) uint64 {
	p.mu.RLock()
	if out, ok := p.query(op, body); ok {
		rec.Header().Set("Content-Type", "application/x-amz-json-1.0")
		rec.Write(out)
		defer p.mu.RUnlock()
		return p.log.last()
	}
	p.mu.RUnlock()
	// A shape the store does not make, but for a Describe: rare enough to
	// hold every write while the stand-in is brought up to date.
	p.tableMu.Lock()
	defer p.tableMu.Unlock()
	if err := p.settleAll(); err != nil {
		apiError(rec, http.StatusInternalServerError, "InternalServerError", err.Error())
		return 0
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	p.next.ServeHTTP(rec, r)
	return p.log.last()
}

// apiError answers as DynamoDB answers an error of type kind (such as
// ValidationException, or InternalServerError, which the SDK retries a few
// times before it reports it).
func apiError(w http.ResponseWriter, status int, kind, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{
		"__type":  "com.amazonaws.dynamodb.v20120810#" + kind,
		"message": "embedded dynamodb: " + msg,
	})
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

// scalar is the type and text of a key attribute: a string, a number as
// written, or binary in base64.
func (a attr) scalar() (typ, text string, ok bool) {
	if len(a) != 1 {
		return "", "", false
	}
	for typ, raw := range a {
		if typ != "S" && typ != "N" && typ != "B" {
			return "", "", false
		}
		return typ, text, json.Unmarshal(raw, &text) == nil
	}
	return "", "", false
}

// keyID names the item with the key attributes found in item (an item or
// a key), unambiguously; ok is false when one is missing or not a scalar.
func (t *table) keyID(item map[string]attr) (string, bool) {
	var b strings.Builder
	for _, name := range []string{t.hash, t.rng} {
		if name == "" {
			continue
		}
		typ, text, ok := item[name].scalar()
		if !ok {
			return "", false
		}
		fmt.Fprintf(&b, "%s%d:%s", typ, len(text), text)
	}
	return b.String(), true
}

// stringKeyID is keyID of a key whose attributes are strings, made
// without encoding them: a Query names every key it reads.
func (t *table) stringKeyID(pk, sk string) string {
	id := "S" + strconv.Itoa(len(pk)) + ":" + pk
	if t.rng != "" {
		id += "S" + strconv.Itoa(len(sk)) + ":" + sk
	}
	return id
}

// key keeps only the key attributes of item.
func (t *table) key(item map[string]attr) map[string]attr {
	k := map[string]attr{t.hash: item[t.hash]}
	if t.rng != "" {
		k[t.rng] = item[t.rng]
	}
	return k
}

// set records the item at key, or its absence when item is nil.
func (t *table) set(key map[string]attr, item json.RawMessage) {
	id, ok := t.keyID(key)
	if !ok {
		return
	}
	t.indexItems(id, t.items[id], item)
	if item == nil {
		delete(t.items, id)
	} else {
		t.items[id] = item
	}
	if t.keys == nil {
		return
	}
	pk, _ := key[t.hash].str()
	sk, _ := key[t.rng].str()
	keys := t.keys[pk]
	i, found := slices.BinarySearch(keys, sk)
	switch {
	case item != nil && !found:
		t.keys[pk] = slices.Insert(keys, i, sk)
	case item == nil && found:
		keys = slices.Delete(keys, i, i+1)
		if len(keys) == 0 {
			delete(t.keys, pk)
		} else {
			t.keys[pk] = keys
		}
	}
}

// itemWrites are the operations that write items.
var itemWrites = map[string]bool{"PutItem": true, "UpdateItem": true, "DeleteItem": true,
	"BatchWriteItem": true, "TransactWriteItems": true}

// wroteTable applies a request that changed a table to the copy and
// returns it for the journal: nil when it failed.
func (p *partitions) wroteTable(op string, body []byte, ok bool) *record {
	switch op {
	case "CreateTable", "UpdateTable", "DeleteTable":
	default:
		return nil
	}
	var in struct{ TableName string }
	if !ok || json.Unmarshal(body, &in) != nil {
		return nil
	}
	t := tableOp{Op: op, Table: in.TableName, Body: json.RawMessage(slices.Clone(body))}
	if err := p.applyTable(t); err != nil {
		return nil
	}
	return &record{Table: &t}
}

// writeItems sends a request that writes items to the stand-in, holding
// the locks of the items it names, and brings the copy up to date with
// what it changed (a blind write goes to the copy alone: owed.go); it returns the journal's sequence number of the change
// (that of the last record when nothing changed). A successful put or
// delete leaves the item it names as it named it (or absent); what an
// update leaves is read back from the stand-in. A request refused changes
// nothing, but for a batch, which stops at its first failing put, and a
// failure of the stand-in itself: their items are read back.
func (p *partitions) writeItems(op string, body []byte, r *http.Request, rec *httptest.ResponseRecorder) uint64 {
	p.tableMu.RLock()
	defer p.tableMu.RUnlock()
	ws := p.identify(writtenKeys(op, body))
	check, blind := p.copyDecides(op, body, ws)
	touched := ws
	if !blind {
		touched = slices.Concat(ws, p.identify(checkedKeys(op, body)))
	}
	unlock := p.lockItems(touched)
	defer unlock()
	if blind && check != nil && !p.holds(ws[0], *check) {
		apiError(rec, http.StatusBadRequest, "ConditionalCheckFailedException", "the conditional request failed")
	} else if blind {
		rec.Header().Set("Content-Type", "application/x-amz-json-1.0")
		rec.Write(blindAnswer(op))
	} else if err := p.settle(touched); err != nil {
		apiError(rec, http.StatusInternalServerError, "InternalServerError", err.Error())
		return 0
	} else {
		p.next.ServeHTTP(rec, r)
	}
	if p.pause != nil {
		p.pause()
	}
	ok := rec.Code == http.StatusOK
	readBack := !ok && (op == "BatchWriteItem" || rec.Code >= 500)
	if !ok && !readBack {
		ws = nil
	}
	if ok && op == "BatchWriteItem" {
		var out struct{ UnprocessedItems map[string][]json.RawMessage }
		json.Unmarshal(rec.Body.Bytes(), &out)
		readBack = len(out.UnprocessedItems) > 0
	}
	for i := range ws {
		if readBack || !ws[i].known {
			ws[i].after, _ = p.get(ws[i].table, ws[i].key)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var changes []change
	for _, w := range ws {
		if c, ok := p.refresh(w); ok {
			changes = append(changes, c)
		}
	}
	if len(changes) == 0 {
		return p.log.append(nil)
	}
	if blind {
		p.owe(changes)
	}
	return p.log.append(&record{Changes: changes})
}

// identify keeps the written items of tables the copy holds, each with its
// keyID and its key alone.
func (p *partitions) identify(ws []written) []written {
	out := ws[:0]
	for _, w := range ws {
		t, ok := p.tables[w.table]
		if !ok {
			continue
		}
		if w.attrs != nil {
			w.key = pick(w.attrs, [2]string{t.hash, t.rng})
		}
		if w.id, ok = t.keyID(w.key); ok {
			w.key = t.key(w.key)
			out = append(out, w)
		}
	}
	return out
}

// lockItems locks the items ws names, in one order, and returns the
// function that unlocks them.
func (p *partitions) lockItems(ws []written) func() {
	var held []int
	for _, w := range ws {
		h := fnv.New32a()
		io.WriteString(h, w.table)
		io.WriteString(h, "\x00")
		io.WriteString(h, w.id)
		held = append(held, int(h.Sum32()%uint32(len(p.items))))
	}
	slices.Sort(held)
	held = slices.Compact(held)
	for _, i := range held {
		p.items[i].Lock()
	}
	return func() {
		for _, i := range held {
			p.items[i].Unlock()
		}
	}
}

// applyTable applies a request that changed a table to the copy.
func (p *partitions) applyTable(op tableOp) error {
	switch op.Op {
	case "CreateTable":
		t, err := newTable(op)
		if err != nil {
			return err
		}
		p.tables[op.Table] = t
	case "UpdateTable":
		if t, ok := p.tables[op.Table]; ok {
			t.defs = append(t.defs, op)
			t.updateIndexes(op.Body)
		}
	case "DeleteTable":
		delete(p.tables, op.Table)
	default:
		return fmt.Errorf("unknown table operation %q", op.Op)
	}
	return nil
}

// newTable learns a new table's key schema from its CreateTable request.
func newTable(op tableOp) (*table, error) {
	var in struct {
		KeySchema []struct {
			AttributeName, KeyType string
		}
		AttributeDefinitions []struct {
			AttributeName, AttributeType string
		}
	}
	if err := json.Unmarshal(op.Body, &in); err != nil {
		return nil, fmt.Errorf("create table %s: %w", op.Table, err)
	}
	types := map[string]string{}
	for _, d := range in.AttributeDefinitions {
		types[d.AttributeName] = d.AttributeType
	}
	t := &table{defs: []tableOp{op}, items: map[string]json.RawMessage{}}
	for _, k := range in.KeySchema {
		if k.KeyType == "HASH" {
			t.hash = k.AttributeName
		} else {
			t.rng = k.AttributeName
		}
	}
	if t.hash == "" {
		return nil, fmt.Errorf("create table %s: no hash key", op.Table)
	}
	if t.rng != "" && types[t.hash] == "S" && types[t.rng] == "S" {
		t.keys = map[string][]string{}
		t.indexes = indexDefs(op.Body, types)
	}
	return t, nil
}

// written is an item a write request may have created, changed or
// deleted: its key (or the whole item), and, when the request says what
// the item is once it succeeds (a put, a delete), that (nil: absent).
type written struct {
	table string
	key   map[string]attr
	known bool
	after json.RawMessage
	// id is the item's keyID (identify).
	id string
	// attrs are a put item's attributes, not decoded: identify decodes
	// its key.
	attrs map[string]json.RawMessage
}

// writtenKeys lists the items a write request may have created, changed or
// deleted.
func writtenKeys(op string, body []byte) []written {
	type item struct {
		TableName string
		Key       map[string]attr
		Item      json.RawMessage
	}
	put := func(table string, raw json.RawMessage) (written, bool) {
		var attrs map[string]json.RawMessage
		if json.Unmarshal(raw, &attrs) != nil {
			return written{}, false
		}
		return written{table: table, attrs: attrs, known: true, after: raw}, true
	}
	var out []written
	add := func(w written, ok bool) {
		if ok {
			out = append(out, w)
		}
	}
	switch op {
	case "PutItem":
		var in item
		if json.Unmarshal(body, &in) == nil {
			add(put(in.TableName, in.Item))
		}
	case "UpdateItem", "DeleteItem":
		var in item
		if json.Unmarshal(body, &in) == nil {
			add(written{table: in.TableName, key: in.Key, known: op == "DeleteItem"}, true)
		}
	case "BatchWriteItem":
		var in struct {
			RequestItems map[string][]struct {
				PutRequest    *struct{ Item json.RawMessage }
				DeleteRequest *struct{ Key map[string]attr }
			}
		}
		_ = json.Unmarshal(body, &in)
		for name, reqs := range in.RequestItems {
			for _, r := range reqs {
				if r.PutRequest != nil {
					add(put(name, r.PutRequest.Item))
				}
				if r.DeleteRequest != nil {
					add(written{table: name, key: r.DeleteRequest.Key, known: true}, true)
				}
			}
		}
	case "TransactWriteItems":
		var in struct {
			TransactItems []struct{ Put, Update, Delete *item }
		}
		_ = json.Unmarshal(body, &in)
		for _, it := range in.TransactItems {
			switch {
			case it.Put != nil:
				add(put(it.Put.TableName, it.Put.Item))
			case it.Update != nil:
				add(written{table: it.Update.TableName, key: it.Update.Key}, true)
			case it.Delete != nil:
				add(written{table: it.Delete.TableName, key: it.Delete.Key, known: true}, true)
			}
		}
	}
	return out
}

// refresh puts a written item into the copy as the request left it (nil:
// absent) and returns the change, unless the copy holds it so already.
func (p *partitions) refresh(w written) (change, bool) {
	t, ok := p.tables[w.table]
	if !ok {
		return change{}, false
	}
	before, had := t.items[w.id]
	if had == (w.after != nil) && bytes.Equal(before, w.after) {
		return change{}, false
	}
	t.set(w.key, w.after)
	return change{Table: w.table, Key: w.key, Item: w.after}, true
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

// query answers a read (a Query, a Scan, a GetItem or BatchGetItem) from
// the copy, or reports that it cannot and the stand-in must.
func (p *partitions) query(op string, body []byte) ([]byte, bool) {
	switch op {
	case "Scan":
		return p.scan(body)
	case "GetItem":
		return p.getItem(body)
	case "BatchGetItem":
		return p.batchGet(body)
	}
	var in queryInput
	if op != "Query" || json.Unmarshal(body, &in) != nil {
		return nil, false
	}
	t, ok := p.tables[in.TableName]
	if !ok || t.keys == nil || in.FilterExpression != "" || in.ProjectionExpression != "" ||
		(in.Select != "" && in.Select != "ALL_ATTRIBUTES" && in.Select != "ALL_PROJECTED_ATTRIBUTES") || in.KeyConditions != nil ||
		in.QueryFilter != nil || in.AttributesToGet != nil || (in.Limit != nil && *in.Limit < 1) {
		return nil, false
	}
	if in.IndexName != "" {
		return t.queryIndex(&in)
	}
	pk, span, ok := in.condition(t.hash, t.rng)
	if !ok {
		return nil, false
	}
	// The partition's keys are sorted: the condition's keys are a run of
	// them, found by binary search, not by testing each.
	keys := t.keys[pk]
	lo, hi := span(keys)
	forward := in.ScanIndexForward == nil || *in.ScanIndexForward
	if in.ExclusiveStartKey != nil {
		epk, ok1 := in.ExclusiveStartKey[t.hash].str()
		esk, ok2 := in.ExclusiveStartKey[t.rng].str()
		if !ok1 || !ok2 || epk != pk || len(in.ExclusiveStartKey) != 2 {
			return nil, false
		}
		if forward {
			lo = max(lo, sort.Search(len(keys), func(i int) bool { return keys[i] > esk }))
		} else {
			hi = min(hi, sort.SearchStrings(keys, esk))
		}
	}
	items := []json.RawMessage{}
	var last string
	for n := range max(hi-lo, 0) {
		if in.Limit != nil && len(items) == *in.Limit {
			break
		}
		sk := keys[lo+n]
		if !forward {
			sk = keys[hi-1-n]
		}
		item, ok := t.items[t.stringKeyID(pk, sk)]
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

// condition parses the key condition on the keys hash and rng into the
// partition and the run of a partition's sorted sort keys it holds, [lo,
// hi); ok is false for any condition the store does not write.
func (in *queryInput) condition(hash, rng string) (pk string, span func(keys []string) (lo, hi int), ok bool) {
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
	if name(m[1]) != hash {
		return "", nil, false
	}
	if pk, ok = value(m[2]); !ok {
		return "", nil, false
	}
	switch {
	case m[3] != "":
		from, ok1 := value(m[4])
		to, ok2 := value(m[5])
		if name(m[3]) != rng || !ok1 || !ok2 || from > to {
			return "", nil, false
		}
		return pk, func(keys []string) (int, int) {
			return sort.SearchStrings(keys, from), sort.Search(len(keys), func(i int) bool { return keys[i] > to })
		}, true
	case m[6] != "":
		prefix, ok := value(m[7])
		if name(m[6]) != rng || !ok {
			return "", nil, false
		}
		return pk, func(keys []string) (int, int) {
			lo := sort.SearchStrings(keys, prefix)
			n := sort.Search(len(keys)-lo, func(i int) bool { return !strings.HasPrefix(keys[lo+i], prefix) })
			return lo, lo + n
		}, true
	}
	return pk, func(keys []string) (int, int) { return 0, len(keys) }, true
}
