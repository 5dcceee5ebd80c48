package embedded

import (
	"bytes"
	"cmp"
	"encoding/json"
	"hash/fnv"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// shardCount is how many tables of the stand-in hold one table.
const shardCount = 256

// shards sits between partitions and the stand-in and keeps each table as
// shardCount tables of the stand-in, an item in the one its key picks. The
// stand-in sorts all the keys of a table at every new item and copies a
// whole table for each transaction, holding its one lock: a write's time
// grows with the table (a millisecond and more at 20,000 items), where
// DynamoDB's does not. Sharded, each write touches a table of a
// 256th the size. The key picks the shard, not the partition: the
// items of one busy partition (a room's timeline, a user's stream) spread
// over all.
//
// Requests name the table; shards names the shard: a request on an item
// goes to its shard, a batch or a transaction is split by item among the
// shards in one request (the stand-in applies a transaction over several
// tables atomically), and a change to the table goes to every shard. What
// reads more than one item by key (a Query, a Scan) is answered by
// partitions from its copy, in the shapes the store makes; another
// reaching here is refused.
type shards struct {
	next http.Handler

	mu sync.RWMutex
	// keys are each table's key attributes (hash, range), learned as it
	// is made.
	keys map[string][2]string
}

func newShards(next http.Handler) *shards {
	return &shards{next: next, keys: map[string][2]string{}}
}

func shardName(table string, i int) string { return table + "." + strconv.Itoa(i) }

// pick decodes the attributes names of an item whose attributes are not
// decoded: the key of an item, without decoding the rest.
func pick(item map[string]json.RawMessage, names [2]string) map[string]attr {
	out := make(map[string]attr, 2)
	for _, name := range names {
		var a attr
		if raw, ok := item[name]; ok && name != "" && json.Unmarshal(raw, &a) == nil {
			out[name] = a
		}
	}
	return out
}

// shardOf is the shard of the item with key attributes names in item.
func shardOf(item map[string]attr, names [2]string) int {
	h := fnv.New32a()
	for _, name := range names {
		if name == "" {
			continue
		}
		typ, text, _ := item[name].scalar()
		io.WriteString(h, typ)
		io.WriteString(h, strconv.Itoa(len(text)))
		io.WriteString(h, text)
	}
	return int(h.Sum32() % shardCount)
}

func (s *shards) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	target := r.Header.Get("X-Amz-Target")
	op := target[strings.LastIndex(target, ".")+1:]
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "read request: "+err.Error(), http.StatusBadRequest)
		return
	}
	var in map[string]json.RawMessage
	if json.Unmarshal(body, &in) != nil {
		s.forward(w, target, body, nil)
		return
	}
	switch op {
	case "CreateTable", "UpdateTable", "DeleteTable", "UpdateTimeToLive":
		s.everyShard(w, target, op, in, body)
	case "DescribeTable", "DescribeTimeToLive":
		s.firstShard(w, target, in, body)
	case "ListTables":
		s.listTables(w, target, body)
	case "GetItem", "PutItem", "UpdateItem", "DeleteItem":
		s.oneItem(w, target, op, in, body)
	case "BatchGetItem", "BatchWriteItem":
		s.batch(w, target, op, in, body)
	case "TransactWriteItems", "TransactGetItems":
		s.transact(w, target, in, body)
	case "Query", "Scan":
		var name string
		json.Unmarshal(in["TableName"], &name)
		if s.sharded(name) {
			apiError(w, http.StatusBadRequest, "ValidationException", "a "+op+" of this shape is not supported: a Query of a partition or an index by its key, with a prefix or a range of sort keys, and a Scan of whole items, are")
			return
		}
		s.forward(w, target, body, nil)
	default:
		s.forward(w, target, body, nil)
	}
}

// keysOf are the key attributes of a sharded table; ok is false for a
// table the shards do not hold.
func (s *shards) keysOf(table string) (names [2]string, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	names, ok = s.keys[table]
	return names, ok
}

func (s *shards) sharded(table string) bool {
	_, ok := s.keysOf(table)
	return ok
}

// forward sends body to the stand-in and writes its answer, with the
// shard names in names given back as the table's.
func (s *shards) forward(w http.ResponseWriter, target string, body []byte, names map[string]string) {
	rec := s.call(target, body)
	out := rec.Body.Bytes()
	if rec.Code != http.StatusOK {
		out = unname(out, names)
	}
	reply(w, rec, out)
}

// call sends one request to the stand-in.
func (s *shards) call(target string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
	req.Header.Set("X-Amz-Target", target)
	req.Header.Set("Content-Type", "application/x-amz-json-1.0")
	rec := httptest.NewRecorder()
	s.next.ServeHTTP(rec, req)
	return rec
}

func reply(w http.ResponseWriter, rec *httptest.ResponseRecorder, body []byte) {
	for k, v := range rec.Header() {
		if k != "Content-Length" {
			w.Header()[k] = v
		}
	}
	w.WriteHeader(rec.Code)
	w.Write(body)
}

// unname gives the table's name back for its shards' in an answer: the
// longest first, so that "t.1" is not taken for the start of "t.10".
func unname(out []byte, names map[string]string) []byte {
	shards := slices.SortedFunc(maps.Keys(names), func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	for _, shard := range shards {
		out = bytes.ReplaceAll(out, []byte(shard), []byte(names[shard]))
	}
	return out
}

// renamed is in with its TableName set to name.
func renamed(in map[string]json.RawMessage, name string) []byte {
	out := make(map[string]json.RawMessage, len(in))
	for k, v := range in {
		out[k] = v
	}
	out["TableName"], _ = json.Marshal(name)
	body, _ := json.Marshal(out)
	return body
}

// everyShard makes a change to a table in each of its shards, and answers
// with the first shard's answer (or the first failure).
func (s *shards) everyShard(w http.ResponseWriter, target, op string, in map[string]json.RawMessage, body []byte) {
	var name string
	json.Unmarshal(in["TableName"], &name)
	if op == "CreateTable" && !s.sharded(name) {
		var def struct {
			KeySchema []struct{ AttributeName, KeyType string }
		}
		json.Unmarshal(body, &def)
		var names [2]string
		for _, k := range def.KeySchema {
			if k.KeyType == "HASH" {
				names[0] = k.AttributeName
			} else {
				names[1] = k.AttributeName
			}
		}
		if names[0] != "" {
			s.mu.Lock()
			s.keys[name] = names
			s.mu.Unlock()
		}
	}
	if !s.sharded(name) {
		s.forward(w, target, body, nil)
		return
	}
	var first *httptest.ResponseRecorder
	for i := range shardCount {
		rec := s.call(target, renamed(in, shardName(name, i)))
		if first == nil || (rec.Code != http.StatusOK && first.Code == http.StatusOK) {
			first = rec
		}
	}
	if op == "DeleteTable" && first.Code == http.StatusOK {
		s.mu.Lock()
		delete(s.keys, name)
		s.mu.Unlock()
	}
	reply(w, first, unname(first.Body.Bytes(), map[string]string{shardName(name, 0): name}))
}

// firstShard answers a question about a table from its first shard.
func (s *shards) firstShard(w http.ResponseWriter, target string, in map[string]json.RawMessage, body []byte) {
	var name string
	json.Unmarshal(in["TableName"], &name)
	if !s.sharded(name) {
		s.forward(w, target, body, nil)
		return
	}
	rec := s.call(target, renamed(in, shardName(name, 0)))
	reply(w, rec, unname(rec.Body.Bytes(), map[string]string{shardName(name, 0): name}))
}

// listTables names each sharded table once.
func (s *shards) listTables(w http.ResponseWriter, target string, body []byte) {
	rec := s.call(target, body)
	var out struct{ TableNames []string }
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &out) != nil {
		reply(w, rec, rec.Body.Bytes())
		return
	}
	names := []string{}
	for _, n := range out.TableNames {
		dot := strings.LastIndex(n, ".")
		if dot > 0 && s.sharded(n[:dot]) {
			if n != shardName(n[:dot], 0) {
				continue
			}
			n = n[:dot]
		}
		names = append(names, n)
	}
	doc, _ := json.Marshal(map[string]any{"TableNames": names})
	reply(w, rec, doc)
}

// oneItem sends a request on one item to its shard.
func (s *shards) oneItem(w http.ResponseWriter, target, op string, in map[string]json.RawMessage, body []byte) {
	var name string
	json.Unmarshal(in["TableName"], &name)
	names, ok := s.keysOf(name)
	if !ok {
		s.forward(w, target, body, nil)
		return
	}
	field := "Key"
	if op == "PutItem" {
		field = "Item"
	}
	var item map[string]json.RawMessage
	json.Unmarshal(in[field], &item)
	shard := shardName(name, shardOf(pick(item, names), names))
	s.forward(w, target, renamed(in, shard), map[string]string{shard: name})
}

// batch splits a BatchGetItem's keys or a BatchWriteItem's requests among
// the shards, in one request to the stand-in, and gathers the answer by
// table again.
func (s *shards) batch(w http.ResponseWriter, target, op string, in map[string]json.RawMessage, body []byte) {
	var items map[string]json.RawMessage
	if json.Unmarshal(in["RequestItems"], &items) != nil {
		s.forward(w, target, body, nil)
		return
	}
	split := map[string]json.RawMessage{}
	names := map[string]string{}
	for table, raw := range items {
		attrs, ok := s.keysOf(table)
		if !ok {
			split[table] = raw
			continue
		}
		if op == "BatchWriteItem" {
			var rawReqs []json.RawMessage
			if json.Unmarshal(raw, &rawReqs) != nil {
				apiError(w, http.StatusBadRequest, "ValidationException", "bad RequestItems")
				return
			}
			byShard := map[int][]json.RawMessage{}
			for _, rr := range rawReqs {
				var r struct {
					PutRequest    *struct{ Item map[string]json.RawMessage }
					DeleteRequest *struct{ Key map[string]json.RawMessage }
				}
				json.Unmarshal(rr, &r)
				var item map[string]json.RawMessage
				switch {
				case r.PutRequest != nil:
					item = r.PutRequest.Item
				case r.DeleteRequest != nil:
					item = r.DeleteRequest.Key
				}
				i := shardOf(pick(item, attrs), attrs)
				byShard[i] = append(byShard[i], rr)
			}
			for i, rs := range byShard {
				split[shardName(table, i)], _ = json.Marshal(rs)
				names[shardName(table, i)] = table
			}
			continue
		}
		var ks map[string]json.RawMessage
		var keys []map[string]attr
		json.Unmarshal(raw, &ks)
		json.Unmarshal(ks["Keys"], &keys)
		byShard := map[int][]map[string]attr{}
		for _, k := range keys {
			i := shardOf(k, attrs)
			byShard[i] = append(byShard[i], k)
		}
		for i, part := range byShard {
			one := make(map[string]json.RawMessage, len(ks))
			for k, v := range ks {
				one[k] = v
			}
			one["Keys"], _ = json.Marshal(part)
			split[shardName(table, i)], _ = json.Marshal(one)
			names[shardName(table, i)] = table
		}
	}
	out := make(map[string]json.RawMessage, len(in))
	for k, v := range in {
		out[k] = v
	}
	out["RequestItems"], _ = json.Marshal(split)
	req, _ := json.Marshal(out)
	rec := s.call(target, req)
	if rec.Code != http.StatusOK {
		reply(w, rec, unname(rec.Body.Bytes(), names))
		return
	}
	var res map[string]json.RawMessage
	if json.Unmarshal(rec.Body.Bytes(), &res) != nil {
		reply(w, rec, rec.Body.Bytes())
		return
	}
	for _, field := range []string{"Responses", "UnprocessedItems"} {
		if raw, ok := res[field]; ok {
			res[field] = gatherLists(raw, names)
		}
	}
	if raw, ok := res["UnprocessedKeys"]; ok {
		res["UnprocessedKeys"] = gatherKeys(raw, names)
	}
	doc, _ := json.Marshal(res)
	reply(w, rec, doc)
}

// gatherLists joins the lists an answer gives by shard into one by table.
func gatherLists(raw json.RawMessage, names map[string]string) json.RawMessage {
	var byShard map[string][]json.RawMessage
	if len(raw) == 0 || json.Unmarshal(raw, &byShard) != nil {
		return raw
	}
	out := map[string][]json.RawMessage{}
	for shard, list := range byShard {
		table := shard
		if t, ok := names[shard]; ok {
			table = t
		}
		out[table] = append(out[table], list...)
	}
	doc, _ := json.Marshal(out)
	return doc
}

// gatherKeys joins a BatchGetItem's unprocessed keys by shard into one set
// by table.
func gatherKeys(raw json.RawMessage, names map[string]string) json.RawMessage {
	var byShard map[string]map[string]json.RawMessage
	if len(raw) == 0 || json.Unmarshal(raw, &byShard) != nil {
		return raw
	}
	out := map[string]map[string]json.RawMessage{}
	keys := map[string][]json.RawMessage{}
	for shard, ks := range byShard {
		table := shard
		if t, ok := names[shard]; ok {
			table = t
		}
		var list []json.RawMessage
		json.Unmarshal(ks["Keys"], &list)
		keys[table] = append(keys[table], list...)
		out[table] = ks
	}
	for table, ks := range out {
		one := make(map[string]json.RawMessage, len(ks))
		for k, v := range ks {
			one[k] = v
		}
		one["Keys"], _ = json.Marshal(keys[table])
		out[table] = one
	}
	doc, _ := json.Marshal(out)
	return doc
}

// transact names each item's shard in a transaction.
func (s *shards) transact(w http.ResponseWriter, target string, in map[string]json.RawMessage, body []byte) {
	var items []map[string]map[string]json.RawMessage
	if json.Unmarshal(in["TransactItems"], &items) != nil {
		s.forward(w, target, body, nil)
		return
	}
	names := map[string]string{}
	for _, it := range items {
		for kind, action := range it {
			var table string
			json.Unmarshal(action["TableName"], &table)
			keys, ok := s.keysOf(table)
			if !ok {
				continue
			}
			var item map[string]json.RawMessage
			if kind == "Put" {
				json.Unmarshal(action["Item"], &item)
			} else {
				json.Unmarshal(action["Key"], &item)
			}
			shard := shardName(table, shardOf(pick(item, keys), keys))
			action["TableName"], _ = json.Marshal(shard)
			names[shard] = table
		}
	}
	out := make(map[string]json.RawMessage, len(in))
	for k, v := range in {
		out[k] = v
	}
	out["TransactItems"], _ = json.Marshal(items)
	req, _ := json.Marshal(out)
	s.forward(w, target, req, names)
}
