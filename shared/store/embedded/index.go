package embedded

import (
	"bytes"
	"cmp"
	"encoding/json"
	"maps"
	"slices"
	"sort"
	"strings"
)

// index is a global secondary index of the copy, whose key attributes are
// strings: the items that have both, by the index's partition, in the
// order of its sort key (then of the item's key, which DynamoDB leaves
// open). The stand-in holds a table in shards (shards.go), so a Query of
// an index, which reads across them, is answered here.
type index struct {
	hash, rng string
	// projection is ALL, KEYS_ONLY or INCLUDE (with include).
	projection string
	include    []string
	keys       map[string][]indexKey
}

// indexKey is one item of an index partition: its index sort key and the
// item's keyID in the table.
type indexKey struct{ sk, id string }

func compareIndexKeys(a, b indexKey) int {
	return cmp.Or(strings.Compare(a.sk, b.sk), strings.Compare(a.id, b.id))
}

// indexDefs reads the indexes a CreateTable request defines, of those
// whose keys are strings.
func indexDefs(body []byte, types map[string]string) map[string]*index {
	var in struct {
		GlobalSecondaryIndexes []struct {
			IndexName  string
			KeySchema  []struct{ AttributeName, KeyType string }
			Projection struct {
				ProjectionType   string
				NonKeyAttributes []string
			}
		}
	}
	if json.Unmarshal(body, &in) != nil {
		return nil
	}
	out := map[string]*index{}
	for _, d := range in.GlobalSecondaryIndexes {
		ix := &index{projection: d.Projection.ProjectionType, include: d.Projection.NonKeyAttributes, keys: map[string][]indexKey{}}
		for _, k := range d.KeySchema {
			if k.KeyType == "HASH" {
				ix.hash = k.AttributeName
			} else {
				ix.rng = k.AttributeName
			}
		}
		if ix.hash != "" && ix.rng != "" && types[ix.hash] == "S" && types[ix.rng] == "S" {
			out[d.IndexName] = ix
		}
	}
	return out
}

// entry is the index key of item, if it is in the index.
func (ix *index) entry(item map[string]attr) (pk, sk string, ok bool) {
	pk, ok1 := item[ix.hash].str()
	sk, ok2 := item[ix.rng].str()
	return pk, sk, ok1 && ok2
}

// update moves the item id from where before put it in the index to where
// after does (nil: absent).
func (ix *index) update(id string, before, after map[string]attr) {
	if pk, sk, ok := ix.entry(before); ok {
		keys := ix.keys[pk]
		if i, found := slices.BinarySearchFunc(keys, indexKey{sk, id}, compareIndexKeys); found {
			keys = slices.Delete(keys, i, i+1)
			if len(keys) == 0 {
				delete(ix.keys, pk)
			} else {
				ix.keys[pk] = keys
			}
		}
	}
	if pk, sk, ok := ix.entry(after); ok {
		keys := ix.keys[pk]
		if i, found := slices.BinarySearchFunc(keys, indexKey{sk, id}, compareIndexKeys); !found {
			ix.keys[pk] = slices.Insert(keys, i, indexKey{sk, id})
		}
	}
}

// indexItems keeps t's indexes up to date with the item at id changing from
// before to after (either nil).
func (t *table) indexItems(id string, before, after json.RawMessage) {
	if len(t.indexes) == 0 || !(t.mayIndex(before) || t.mayIndex(after)) {
		return
	}
	var b, a map[string]attr
	if before != nil {
		json.Unmarshal(before, &b)
	}
	if after != nil {
		json.Unmarshal(after, &a)
	}
	for _, ix := range t.indexes {
		ix.update(id, b, a)
	}
}

// queryIndex answers a Query of an index from the copy.
func (t *table) queryIndex(in *queryInput) ([]byte, bool) {
	ix, ok := t.indexes[in.IndexName]
	if !ok {
		return nil, false
	}
	pk, span, ok := in.condition(ix.hash, ix.rng)
	if !ok {
		return nil, false
	}
	keys := ix.keys[pk]
	sks := make([]string, len(keys))
	for i, k := range keys {
		sks[i] = k.sk
	}
	lo, hi := span(sks)
	forward := in.ScanIndexForward == nil || *in.ScanIndexForward
	if in.ExclusiveStartKey != nil {
		epk, ok1 := in.ExclusiveStartKey[ix.hash].str()
		esk, ok2 := in.ExclusiveStartKey[ix.rng].str()
		eid, ok3 := t.keyID(in.ExclusiveStartKey)
		if !ok1 || !ok2 || !ok3 || epk != pk {
			return nil, false
		}
		at := indexKey{esk, eid}
		if forward {
			lo = max(lo, sort.Search(len(keys), func(i int) bool { return compareIndexKeys(keys[i], at) > 0 }))
		} else {
			hi = min(hi, sort.Search(len(keys), func(i int) bool { return compareIndexKeys(keys[i], at) >= 0 }))
		}
	}
	items := []json.RawMessage{}
	var last json.RawMessage
	for n := range max(hi-lo, 0) {
		if in.Limit != nil && len(items) == *in.Limit {
			break
		}
		k := keys[lo+n]
		if !forward {
			k = keys[hi-1-n]
		}
		item, ok := t.items[k.id]
		if !ok {
			continue
		}
		last = item
		items = append(items, ix.project(t, item))
	}
	out := map[string]any{"Items": items, "Count": len(items), "ScannedCount": len(items)}
	if in.Limit != nil && len(items) == *in.Limit && last != nil {
		var m map[string]attr
		json.Unmarshal(last, &m)
		out["LastEvaluatedKey"] = map[string]attr{t.hash: m[t.hash], t.rng: m[t.rng], ix.hash: m[ix.hash], ix.rng: m[ix.rng]}
	}
	res, err := json.Marshal(out)
	return res, err == nil
}

// project keeps what the index holds of an item.
func (ix *index) project(t *table, item json.RawMessage) json.RawMessage {
	if ix.projection == "ALL" || ix.projection == "" {
		return item
	}
	var m map[string]attr
	if json.Unmarshal(item, &m) != nil {
		return item
	}
	keep := map[string]bool{t.hash: true, t.rng: true, ix.hash: true, ix.rng: true}
	if ix.projection == "INCLUDE" {
		for _, a := range ix.include {
			keep[a] = true
		}
	}
	maps.DeleteFunc(m, func(k string, _ attr) bool { return !keep[k] })
	out, _ := json.Marshal(m)
	return out
}

// scanPage is the most a Scan answers at once, as DynamoDB's 1 MB.
const scanPage = 1 << 20

// scan answers a Scan of whole items from the copy, in pages, in the
// order of the items' keyIDs; any other Scan is not answered (the stand-in
// holds the table in shards, and refuses it).
func (p *partitions) scan(body []byte) ([]byte, bool) {
	var in struct {
		TableName         string
		ExclusiveStartKey map[string]attr
		Limit             *int
		ConsistentRead    *bool
		Select            string
	}
	all, ok := onlyFields(body, "TableName", "ExclusiveStartKey", "Limit", "ConsistentRead", "ReturnConsumedCapacity", "Select")
	if !ok || json.Unmarshal(body, &in) != nil {
		return nil, false
	}
	if _, ok := all["Select"]; ok && in.Select != "ALL_ATTRIBUTES" {
		return nil, false
	}
	t, ok := p.tables[in.TableName]
	if !ok || (in.Limit != nil && *in.Limit < 1) {
		return nil, false
	}
	ids := slices.Sorted(maps.Keys(t.items))
	start := 0
	if in.ExclusiveStartKey != nil {
		id, ok := t.keyID(in.ExclusiveStartKey)
		if !ok {
			return nil, false
		}
		start, _ = slices.BinarySearch(ids, id)
		if start < len(ids) && ids[start] == id {
			start++
		}
	}
	items := []json.RawMessage{}
	size := 0
	end := start
	for ; end < len(ids); end++ {
		if (in.Limit != nil && len(items) == *in.Limit) || size >= scanPage {
			break
		}
		item := t.items[ids[end]]
		items = append(items, item)
		size += len(item)
	}
	out := map[string]any{"Items": items, "Count": len(items), "ScannedCount": len(items)}
	if end < len(ids) && len(items) > 0 {
		var m map[string]attr
		json.Unmarshal(items[len(items)-1], &m)
		out["LastEvaluatedKey"] = t.key(m)
	}
	res, err := json.Marshal(out)
	return res, err == nil
}

// updateIndexes applies the index changes of an UpdateTable request: an
// index made is filled from the items, one deleted dropped.
func (t *table) updateIndexes(body []byte) {
	if t.keys == nil {
		return
	}
	var in struct {
		AttributeDefinitions        []struct{ AttributeName, AttributeType string }
		GlobalSecondaryIndexUpdates []struct {
			Create json.RawMessage
			Delete *struct{ IndexName string }
		}
	}
	if json.Unmarshal(body, &in) != nil {
		return
	}
	types := map[string]string{}
	for _, d := range in.AttributeDefinitions {
		types[d.AttributeName] = d.AttributeType
	}
	for _, u := range in.GlobalSecondaryIndexUpdates {
		if u.Delete != nil {
			delete(t.indexes, u.Delete.IndexName)
		}
		if u.Create == nil {
			continue
		}
		def, _ := json.Marshal(map[string]any{"GlobalSecondaryIndexes": []json.RawMessage{u.Create}})
		for name, ix := range indexDefs(def, types) {
			if t.indexes == nil {
				t.indexes = map[string]*index{}
			}
			t.indexes[name] = ix
			for id, item := range t.items {
				var m map[string]attr
				json.Unmarshal(item, &m)
				ix.update(id, nil, m)
			}
		}
	}
}

// mayIndex reports whether an item's JSON may hold the partition key of
// one of t's indexes: most items are in none, and are not decoded.
func (t *table) mayIndex(item json.RawMessage) bool {
	for _, ix := range t.indexes {
		if bytes.Contains(item, []byte(`"`+ix.hash+`"`)) {
			return true
		}
	}
	return false
}
