package embedded

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"regexp"
)

// A write that needs neither a condition nor an update evaluated (a put or
// a delete without a condition, a batch of them) goes to the copy alone:
// the stand-in would spend most of a send's time decoding a message's
// index items and sorting its keys, holding its one lock. The items such a
// write changed are owed to the stand-in, and put there (or deleted)
// before the stand-in answers a request that names them: a conditional
// put, an update, a transaction, a read of a shape the copy does not
// answer. Before a request that names no items (a table's change, a
// Describe), everything owed is put there.

// blindWrite reports how many items a PutItem, DeleteItem or
// BatchWriteItem writes when it is blind: no condition, no values asked
// back, nothing but items and keys, and no more than a batch may hold. A
// request of any other shape is the stand-in's to check and answer, as
// are a set (which DynamoDB refuses empty or with a value twice) and a
// request near DynamoDB's item size (400 KB): the copy checks neither.
func blindWrite(op string, body []byte) (n int, ok bool) {
	if len(body) > maxBlindBody || bytes.Contains(body, []byte(`"SS":`)) ||
		bytes.Contains(body, []byte(`"NS":`)) || bytes.Contains(body, []byte(`"BS":`)) {
		return 0, false
	}
	switch op {
	case "PutItem":
		_, ok = onlyFields(body, "TableName", "Item", "ReturnConsumedCapacity")
		return 1, ok
	case "DeleteItem":
		_, ok = onlyFields(body, "TableName", "Key", "ReturnConsumedCapacity")
		return 1, ok
	case "BatchWriteItem":
		all, ok := onlyFields(body, "RequestItems", "ReturnConsumedCapacity")
		if !ok {
			return 0, false
		}
		var tables map[string][]json.RawMessage
		if json.Unmarshal(all["RequestItems"], &tables) != nil {
			return 0, false
		}
		for _, reqs := range tables {
			for _, req := range reqs {
				one, ok := onlyFields(req, "PutRequest", "DeleteRequest")
				if !ok || len(one) != 1 {
					return 0, false
				}
				for _, inner := range one {
					if _, ok := onlyFields(inner, "Item", "Key"); !ok {
						return 0, false
					}
				}
				n++
			}
		}
		return n, n > 0 && n <= batchWriteLimit
	}
	return 0, false
}

// maxBlindBody is the largest request the copy takes alone: an item of
// DynamoDB's largest size is larger.
const maxBlindBody = 256 << 10

// batchWriteLimit is how many writes one BatchWriteItem may hold.
const batchWriteLimit = 25

// checkedKeys are the items a TransactWriteItems checks without writing
// them: the stand-in reads them.
func checkedKeys(op string, body []byte) []written {
	if op != "TransactWriteItems" {
		return nil
	}
	var in struct {
		TransactItems []struct {
			ConditionCheck *struct {
				TableName string
				Key       map[string]attr
			}
		}
	}
	_ = json.Unmarshal(body, &in)
	var out []written
	for _, it := range in.TransactItems {
		if c := it.ConditionCheck; c != nil {
			out = append(out, written{table: c.TableName, key: c.Key})
		}
	}
	return out
}

// blindKeys reports whether the items a blind write names, identified,
// are n items of tables whose keys the copy keeps, each named once by a
// key of two non-empty strings: what DynamoDB accepts. Anything else goes
// to the stand-in, which refuses it as DynamoDB does.
func (p *partitions) blindKeys(ws []written, n int) bool {
	if len(ws) != n {
		return false
	}
	seen := make(map[string]bool, n)
	for _, w := range ws {
		t := p.tables[w.table]
		if t == nil || t.keys == nil || !w.known {
			return false
		}
		if _, _, ok := t.stringKey(w.key); !ok {
			return false
		}
		if seen[w.table+"\x00"+w.id] {
			return false
		}
		seen[w.table+"\x00"+w.id] = true
	}
	return true
}

// copyDecides reports whether the copy decides a write of the items ws
// alone: a blind write, or a put under the store's create condition,
// which it returns to be checked.
func (p *partitions) copyDecides(op string, body []byte, ws []written) (check *absentCheck, ok bool) {
	n, ok := blindWrite(op, body)
	if op == "PutItem" && !ok && len(ws) == 1 {
		if c, absent := putIfAbsent(body, p.tables[ws[0].table]); absent {
			check, n, ok = &c, 1, true
		}
	}
	return check, ok && p.blindKeys(ws, n)
}

// blindAnswer is DynamoDB's answer to a blind write that succeeded.
func blindAnswer(op string) []byte {
	if op == "BatchWriteItem" {
		return []byte(`{"UnprocessedItems":{}}`)
	}
	return []byte("{}")
}

// owe records that the stand-in lacks the changes cs. p.mu is held.
func (p *partitions) owe(cs []change) {
	p.oweMu.Lock()
	defer p.oweMu.Unlock()
	for _, c := range cs {
		if id, ok := p.tables[c.Table].keyID(c.Key); ok {
			p.oweLocked(c.Table, id, c.Key)
		}
	}
}

// oweLocked records one item owed; oweMu is held.
func (p *partitions) oweLocked(table, id string, key map[string]attr) {
	if p.owed == nil {
		p.owed = map[string]map[string]map[string]attr{}
	}
	if p.owed[table] == nil {
		p.owed[table] = map[string]map[string]attr{}
	}
	p.owed[table][id] = key
}

// settle puts into the stand-in the items of ws it is owed, as the copy
// holds them. The caller holds those items' locks, so no write changes
// them meanwhile.
func (p *partitions) settle(ws []written) error {
	for _, w := range ws {
		p.oweMu.Lock()
		_, owed := p.owed[w.table][w.id]
		delete(p.owed[w.table], w.id)
		p.oweMu.Unlock()
		if !owed {
			continue
		}
		if err := p.pay(w.table, w.key); err != nil {
			p.oweMu.Lock()
			p.oweLocked(w.table, w.id, w.key)
			p.oweMu.Unlock()
			return err
		}
	}
	return nil
}

// settleAll puts into the stand-in every item it is owed. The caller holds
// tableMu, which every item write read-holds: none runs meanwhile.
func (p *partitions) settleAll() error {
	p.oweMu.Lock()
	owed := p.owed
	p.owed = nil
	p.oweMu.Unlock()
	for table, keys := range owed {
		for id, key := range keys {
			if err := p.pay(table, key); err != nil {
				// What is left stays owed.
				p.oweMu.Lock()
				for t, ks := range owed {
					for id, k := range ks {
						p.oweLocked(t, id, k)
					}
				}
				p.oweMu.Unlock()
				return err
			}
			delete(keys, id)
		}
	}
	return nil
}

// pay writes one owed item into the stand-in as the copy holds it: a put,
// or a delete when the copy has none.
func (p *partitions) pay(table string, key map[string]attr) error {
	p.mu.RLock()
	t := p.tables[table]
	var item json.RawMessage
	found := false
	if t != nil {
		item, found, _ = t.lookup(key)
	}
	p.mu.RUnlock()
	if t == nil {
		return nil // the table is gone, and its items with it
	}
	op, field, value := "DeleteItem", "Key", any(key)
	if found {
		op, field, value = "PutItem", "Item", item
	}
	body, err := json.Marshal(map[string]any{"TableName": table, field: value})
	if err != nil {
		return err
	}
	if err := p.call(op, body); err != nil {
		return fmt.Errorf("bring the stand-in up to date: %w", err)
	}
	return nil
}

// The store creates an item, or replaces one past its expiry, with one
// condition (store.absentCondition); the copy decides it, as it holds the
// item. Any other condition is the stand-in's to evaluate.
var absentCondition = regexp.MustCompile(`^attribute_not_exists\((#\w+)\) OR (#\w+) < (:\w+)$`)

// absentCheck is a put's condition that the item be absent or expire
// before now.
type absentCheck struct {
	expires string
	now     *big.Rat
}

// putIfAbsent reads a PutItem into t whose only condition is the store's
// absent condition.
func putIfAbsent(body []byte, t *table) (absentCheck, bool) {
	if t == nil {
		return absentCheck{}, false
	}
	var in struct {
		ConditionExpression       string
		ExpressionAttributeNames  map[string]string
		ExpressionAttributeValues map[string]attr
	}
	if _, ok := onlyFields(body, "TableName", "Item", "ConditionExpression", "ExpressionAttributeNames",
		"ExpressionAttributeValues", "ReturnConsumedCapacity"); !ok || json.Unmarshal(body, &in) != nil {
		return absentCheck{}, false
	}
	m := absentCondition.FindStringSubmatch(in.ConditionExpression)
	if m == nil || len(in.ExpressionAttributeNames) != 2 || len(in.ExpressionAttributeValues) != 1 {
		return absentCheck{}, false
	}
	key, expires := in.ExpressionAttributeNames[m[1]], in.ExpressionAttributeNames[m[2]]
	if (key != t.hash && key != t.rng) || expires == "" || expires == t.hash || expires == t.rng {
		return absentCheck{}, false
	}
	now, ok := number(in.ExpressionAttributeValues[m[3]])
	if !ok {
		return absentCheck{}, false
	}
	return absentCheck{expires: expires, now: now}, true
}

// number is the value of a number attribute.
func number(a attr) (*big.Rat, bool) {
	raw, ok := a["N"]
	if !ok || len(a) != 1 {
		return nil, false
	}
	var text string
	if json.Unmarshal(raw, &text) != nil {
		return nil, false
	}
	return new(big.Rat).SetString(text)
}

// holds reports whether c holds for the item w names as the copy has it:
// absent, or with an expiry, a number, before c's now.
func (p *partitions) holds(w written, c absentCheck) bool {
	p.mu.RLock()
	item, found, _ := p.tables[w.table].lookup(w.key)
	p.mu.RUnlock()
	if !found {
		return true
	}
	var attrs map[string]attr
	if json.Unmarshal(item, &attrs) != nil {
		return false
	}
	exp, ok := number(attrs[c.expires])
	return ok && exp.Cmp(c.now) < 0
}
