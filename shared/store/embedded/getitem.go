package embedded

import (
	"encoding/json"
)

// The copy answers reads of items by key too. Forwarded to the stand-in,
// a GetItem waits for its one lock behind every write in flight (a
// message's index of a dozen words is a dozen puts), and a read in the
// latency model then waits for writes DynamoDB would run beside it.

// onlyFields reports whether the object raw has no field but those
// allowed: a request with any other (a projection, a condition) is the
// stand-in's to answer.
func onlyFields(raw json.RawMessage, allowed ...string) (map[string]json.RawMessage, bool) {
	var all map[string]json.RawMessage
	if json.Unmarshal(raw, &all) != nil {
		return nil, false
	}
	for k := range all {
		ok := false
		for _, a := range allowed {
			ok = ok || k == a
		}
		if !ok {
			return nil, false
		}
	}
	return all, true
}

// lookup is the item at key in t, and whether the key names one item of
// t: exactly its key attributes, as strings (the tables whose partitions
// the copy keeps; a number key is the stand-in's, which normalizes it).
func (t *table) lookup(key map[string]attr) (item json.RawMessage, found, ok bool) {
	pk, sk, ok := t.stringKey(key)
	if !ok {
		return nil, false, false
	}
	item, found = t.items[t.stringKeyID(pk, sk)]
	return item, found, true
}

// stringKey is the partition and sort key of key, when it is exactly the
// key attributes of t, as non-empty strings.
func (t *table) stringKey(key map[string]attr) (pk, sk string, ok bool) {
	if t.keys == nil || len(key) != 2 {
		return "", "", false
	}
	pk, ok1 := key[t.hash].str()
	sk, ok2 := key[t.rng].str()
	return pk, sk, ok1 && ok2 && pk != "" && sk != ""
}

// getItem answers a GetItem of a whole item by its key from the copy.
func (p *partitions) getItem(body []byte) ([]byte, bool) {
	if _, ok := onlyFields(body, "TableName", "Key", "ConsistentRead", "ReturnConsumedCapacity"); !ok {
		return nil, false
	}
	var in struct {
		TableName string
		Key       map[string]attr
	}
	if json.Unmarshal(body, &in) != nil {
		return nil, false
	}
	t, ok := p.tables[in.TableName]
	if !ok {
		return nil, false
	}
	item, found, ok := t.lookup(in.Key)
	if !ok {
		return nil, false
	}
	if !found {
		return []byte("{}"), true
	}
	out := make([]byte, 0, len(item)+len(`{"Item":}`))
	out = append(out, `{"Item":`...)
	out = append(out, item...)
	return append(out, '}'), true
}

// batchGetLimit is how many keys one BatchGetItem may name.
const batchGetLimit = 100

// batchGet answers a BatchGetItem of whole items from the copy: every
// key, of tables the copy keeps, none twice, at most batchGetLimit. The
// answer lists the items found; it leaves no key unprocessed.
func (p *partitions) batchGet(body []byte) ([]byte, bool) {
	all, ok := onlyFields(body, "RequestItems", "ReturnConsumedCapacity")
	if !ok {
		return nil, false
	}
	var tables map[string]json.RawMessage
	if json.Unmarshal(all["RequestItems"], &tables) != nil || len(tables) == 0 {
		return nil, false
	}
	responses := make(map[string][]json.RawMessage, len(tables))
	n := 0
	for name, raw := range tables {
		if _, ok := onlyFields(raw, "Keys", "ConsistentRead"); !ok {
			return nil, false
		}
		var in struct{ Keys []map[string]attr }
		t, ok := p.tables[name]
		if !ok || json.Unmarshal(raw, &in) != nil || len(in.Keys) == 0 {
			return nil, false
		}
		n += len(in.Keys)
		if n > batchGetLimit {
			return nil, false
		}
		seen := make(map[string]bool, len(in.Keys))
		items := []json.RawMessage{}
		for _, k := range in.Keys {
			item, found, ok := t.lookup(k)
			if !ok {
				return nil, false
			}
			id, _ := t.keyID(k)
			if seen[id] {
				return nil, false // the stand-in refuses duplicates
			}
			seen[id] = true
			if found {
				items = append(items, item)
			}
		}
		responses[name] = items
	}
	out, err := json.Marshal(map[string]any{"Responses": responses, "UnprocessedKeys": map[string]any{}})
	return out, err == nil
}
