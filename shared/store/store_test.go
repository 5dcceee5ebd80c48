package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/store"
	"github.com/cirrus-matrix/cirrus/shared/store/embedded"
)

type thing struct {
	PK      string `dynamodbav:"pk"`
	SK      string `dynamodbav:"sk"`
	Name    string `dynamodbav:"name"`
	Count   int    `dynamodbav:"count"`
	Blob    []byte `dynamodbav:"blob,omitempty"`
	Expires int64  `dynamodbav:"expires_at,omitempty"`
}

// open starts an embedded DynamoDB API server and opens a fresh table on it
// through the real SDK over HTTP.
func open(t *testing.T) (*store.Store, context.Context) {
	t.Helper()
	srv, err := embedded.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ctx := context.Background()
	s, err := store.Open(ctx, store.Options{Table: "test", Endpoint: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateTable(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateTable(ctx); err != nil {
		t.Fatalf("second CreateTable: %v", err)
	}
	return s, ctx
}

func TestStore_PutGetDelete(t *testing.T) {
	s, ctx := open(t)
	ctx, meter := store.WithMeter(ctx)
	in := thing{PK: "room|!a:x", SK: "event|1", Name: "hello", Count: 3, Blob: []byte{0, 1, 2}}
	if err := s.Put(ctx, in); err != nil {
		t.Fatal(err)
	}
	var got thing
	if err := s.Get(ctx, store.Key{PK: in.PK, SK: in.SK}, &got); err != nil {
		t.Fatal(err)
	}
	if got.Name != in.Name || got.Count != in.Count || !bytes.Equal(got.Blob, in.Blob) {
		t.Fatalf("got %+v, want %+v", got, in)
	}
	u := meter.Usage()
	if u.Calls != 2 || u.WriteUnits != 1 || u.ReadUnits != 1 {
		t.Fatalf("meter after put+get = %+v, want 2 calls, 1 WCU, 1 RCU", u)
	}
	if err := s.Delete(ctx, store.Key{PK: in.PK, SK: in.SK}); err != nil {
		t.Fatal(err)
	}
	if err := s.Get(ctx, store.Key{PK: in.PK, SK: in.SK}, &got); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get after delete: %v, want ErrNotFound", err)
	}
}

func TestStore_CreateAndExpiry(t *testing.T) {
	s, ctx := open(t)
	k := store.Key{PK: "user|@a:x", SK: "profile"}
	if err := s.Create(ctx, thing{PK: k.PK, SK: k.SK, Name: "first"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, thing{PK: k.PK, SK: k.SK, Name: "second"}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	// An expired item reads as absent and may be created over.
	past := time.Now().Add(-time.Minute).Unix()
	e := store.Key{PK: "uia|s1", SK: "session"}
	if err := s.Put(ctx, thing{PK: e.PK, SK: e.SK, Name: "old", Expires: past}); err != nil {
		t.Fatal(err)
	}
	var got thing
	if err := s.Get(ctx, e, &got); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get expired: %v, want ErrNotFound", err)
	}
	if err := s.Create(ctx, thing{PK: e.PK, SK: e.SK, Name: "new"}); err != nil {
		t.Fatalf("create over expired: %v", err)
	}
}

func TestStore_Limits(t *testing.T) {
	s, ctx := open(t)
	big := thing{PK: "p", SK: "s", Blob: make([]byte, store.MaxItemSize)}
	if err := s.Put(ctx, big); !errors.Is(err, store.ErrItemTooLarge) {
		t.Fatalf("put 400 KB item: %v, want ErrItemTooLarge", err)
	}
	if err := s.Put(ctx, thing{PK: "p", SK: ""}); !errors.Is(err, store.ErrEmptyKey) {
		t.Fatalf("put empty sk: %v, want ErrEmptyKey", err)
	}
	if err := s.Get(ctx, store.Key{PK: "", SK: "x"}, &thing{}); !errors.Is(err, store.ErrEmptyKey) {
		t.Fatalf("get empty pk: %v, want ErrEmptyKey", err)
	}
	ops := make([]store.Op, store.MaxTransactActions+1)
	for i := range ops {
		ops[i] = store.PutOp(thing{PK: "p", SK: fmt.Sprint(i)})
	}
	if err := s.Transact(ctx, ops...); !errors.Is(err, store.ErrTooManyActions) {
		t.Fatalf("101 actions: %v, want ErrTooManyActions", err)
	}
	if err := s.Transact(ctx, ops[:store.MaxTransactActions]...); err != nil {
		t.Fatalf("100 actions: %v", err)
	}
}

func TestStore_TransactConflict(t *testing.T) {
	s, ctx := open(t)
	if err := s.Put(ctx, thing{PK: "room|r", SK: "head", Count: 1}); err != nil {
		t.Fatal(err)
	}
	err := s.Transact(ctx,
		store.PutOp(thing{PK: "room|r", SK: "event|2"}),
		store.CreateOp(thing{PK: "room|r", SK: "head", Count: 2}))
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("transact over taken key: %v, want ErrConflict", err)
	}
	var got thing
	if err := s.Get(ctx, store.Key{PK: "room|r", SK: "event|2"}, &got); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("failed transaction wrote its put: %v", err)
	}
}

func TestStore_QueryPages(t *testing.T) {
	s, ctx := open(t)
	// 30 items of ~60 KB: two 1 MB pages at most 16 items each.
	for i := range 30 {
		it := thing{PK: "room|q", SK: fmt.Sprintf("event|%03d", i), Blob: make([]byte, 60*1024)}
		if err := s.Put(ctx, it); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put(ctx, thing{PK: "room|q", SK: "state|x"}); err != nil {
		t.Fatal(err)
	}
	var all []thing
	cursor, pages := "", 0
	for {
		var page []thing
		next, err := s.QueryPage(ctx, store.Query{PK: "room|q", Prefix: "event|", Cursor: cursor}, &page)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		size := 0
		for _, p := range page {
			size += len(p.Blob)
		}
		if size > store.MaxQueryPageSize {
			t.Fatalf("page %d holds %d bytes, over 1 MB", pages, size)
		}
		all = append(all, page...)
		if next == "" {
			break
		}
		cursor = next
	}
	if len(all) != 30 || pages < 2 {
		t.Fatalf("read %d items in %d pages, want 30 items in 2 or more", len(all), pages)
	}
	for i, it := range all {
		if want := fmt.Sprintf("event|%03d", i); it.SK != want {
			t.Fatalf("item %d is %s, want %s", i, it.SK, want)
		}
	}
	var desc []thing
	if _, err := s.QueryPage(ctx, store.Query{PK: "room|q", Prefix: "event|", Descending: true, Limit: 2}, &desc); err != nil {
		t.Fatal(err)
	}
	if len(desc) != 2 || desc[0].SK != "event|029" {
		t.Fatalf("descending limit 2 = %d items starting %q", len(desc), desc[0].SK)
	}
}

func TestStore_SnapshotRestore(t *testing.T) {
	s, ctx := open(t)
	for i := range 60 {
		if err := s.Put(ctx, thing{PK: "p", SK: fmt.Sprint(i), Name: strings.Repeat("x", i), Count: i}); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	n, err := s.Snapshot(ctx, &buf)
	if err != nil || n != 60 {
		t.Fatalf("snapshot: %d items, %v", n, err)
	}
	fresh, ctx2 := open(t)
	if n, err := fresh.Restore(ctx2, &buf); err != nil || n != 60 {
		t.Fatalf("restore: %d items, %v", n, err)
	}
	var got thing
	if err := fresh.Get(ctx2, store.Key{PK: "p", SK: "42"}, &got); err != nil || got.Count != 42 || len(got.Name) != 42 {
		t.Fatalf("restored item = %+v, %v", got, err)
	}
}

func TestStore_ConsumeOnce(t *testing.T) {
	s, ctx := open(t)
	k := store.Key{PK: "nonce|abc", SK: "nonce"}
	if err := s.Put(ctx, thing{PK: k.PK, SK: k.SK, Name: "n", Expires: time.Now().Add(time.Minute).Unix()}); err != nil {
		t.Fatal(err)
	}
	var got thing
	if err := s.Consume(ctx, k, &got); err != nil || got.Name != "n" {
		t.Fatalf("first consume: %+v, %v", got, err)
	}
	if err := s.Consume(ctx, k, &got); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second consume: %v, want ErrNotFound", err)
	}
	old := store.Key{PK: "nonce|old", SK: "nonce"}
	if err := s.Put(ctx, thing{PK: old.PK, SK: old.SK, Expires: time.Now().Add(-time.Second).Unix()}); err != nil {
		t.Fatal(err)
	}
	if err := s.Consume(ctx, old, &got); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("consume expired: %v, want ErrNotFound", err)
	}
}

func TestStore_Increment(t *testing.T) {
	s, ctx := open(t)
	k := store.Key{PK: "rl|login|1.2.3.4|100", SK: "rl"}
	exp := time.Now().Add(time.Minute)
	for want := int64(1); want <= 3; want++ {
		n, err := s.Increment(ctx, k, "count", exp)
		if err != nil || n != want {
			t.Fatalf("increment %d: %d, %v", want, n, err)
		}
	}
	var got struct {
		Count   int64 `dynamodbav:"count"`
		Expires int64 `dynamodbav:"expires_at"`
	}
	if err := s.Get(ctx, k, &got); err != nil || got.Count != 3 || got.Expires != exp.Unix() {
		t.Fatalf("counter item %+v, %v", got, err)
	}
}

func TestStore_QueryFrom(t *testing.T) {
	s, ctx := open(t)
	for i := range 10 {
		if err := s.Put(ctx, thing{PK: "room|f", SK: fmt.Sprintf("ev|%02d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put(ctx, thing{PK: "room|f", SK: "head"}); err != nil {
		t.Fatal(err)
	}
	sks := func(q store.Query) string {
		t.Helper()
		var page []thing
		if _, err := s.QueryPage(ctx, q, &page); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, p := range page {
			out = append(out, strings.TrimPrefix(p.SK, "ev|"))
		}
		return strings.Join(out, ",")
	}
	if got := sks(store.Query{PK: "room|f", Prefix: "ev|", From: "ev|07"}); got != "07,08,09" {
		t.Errorf("ascending from 07 = %s", got)
	}
	if got := sks(store.Query{PK: "room|f", Prefix: "ev|", From: "ev|02", Descending: true}); got != "02,01,00" {
		t.Errorf("descending from 02 = %s", got)
	}
	if got := sks(store.Query{PK: "room|f", Prefix: "ev|", From: "ev|05", Descending: true, Limit: 2}); got != "05,04" {
		t.Errorf("descending from 05 limit 2 = %s", got)
	}
}

func TestStore_GetMany(t *testing.T) {
	s, ctx := open(t)
	var keys []store.Key
	for i := range 150 {
		it := thing{PK: "user|m", SK: fmt.Sprintf("k|%03d", i), Count: i}
		if i%3 == 0 {
			it.Expires = time.Now().Add(-time.Minute).Unix()
		}
		if err := s.Put(ctx, it); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, store.Key{PK: it.PK, SK: it.SK})
	}
	keys = append(keys, store.Key{PK: "user|m", SK: "missing"}, keys[1])
	ctx, meter := store.WithMeter(ctx)
	got := map[string]int{}
	err := s.GetMany(ctx, keys, func(k store.Key, decode func(any) error) error {
		var it thing
		if err := decode(&it); err != nil {
			return err
		}
		got[k.SK] = it.Count
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 100 {
		t.Fatalf("read %d live items, want 100 (150 less 50 expired)", len(got))
	}
	if got["k|001"] != 1 || got["k|149"] != 149 {
		t.Fatalf("wrong values: %v", got)
	}
	if _, ok := got["k|000"]; ok {
		t.Fatal("expired item returned")
	}
	if u := meter.Usage(); u.Calls != 2 {
		t.Fatalf("151 distinct keys took %d calls, want 2 batches", u.Calls)
	}
}

func TestStore_IndexedWriteCostsDouble(t *testing.T) {
	s, ctx := open(t)
	type indexed struct {
		PK     string `dynamodbav:"pk"`
		SK     string `dynamodbav:"sk"`
		GSI1PK string `dynamodbav:"gsi1pk"`
		GSI1SK string `dynamodbav:"gsi1sk"`
	}
	ctx, meter := store.WithMeter(ctx)
	if err := s.Put(ctx, indexed{PK: "a", SK: "b", GSI1PK: "c", GSI1SK: "d"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, thing{PK: "a", SK: "e"}); err != nil {
		t.Fatal(err)
	}
	if u := meter.Usage(); u.WriteUnits != 3 {
		t.Fatalf("indexed + plain put = %v WCU, want 3 (2 for the item in table and index, 1 plain)", u.WriteUnits)
	}
}

func TestStore_PutIf(t *testing.T) {
	s, ctx := open(t)
	if err := s.PutIf(ctx, thing{PK: "v", SK: "v", Count: 1}, "count", 0); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("put-if over a missing item: %v, want ErrConflict", err)
	}
	if err := s.Put(ctx, thing{PK: "v", SK: "v", Name: "first", Count: 1}); err != nil {
		t.Fatal(err)
	}
	// Two writers read version 1; the first to write wins.
	if err := s.PutIf(ctx, thing{PK: "v", SK: "v", Name: "a", Count: 2}, "count", 1); err != nil {
		t.Fatal(err)
	}
	if err := s.Transact(ctx, store.PutIfOp(thing{PK: "v", SK: "v", Name: "b", Count: 2}, "count", 1)); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale transactional put-if: %v, want ErrConflict", err)
	}
	var got thing
	if err := s.Get(ctx, store.Key{PK: "v", SK: "v"}, &got); err != nil || got.Name != "a" {
		t.Fatalf("after the race: %+v %v", got, err)
	}
}

func TestStore_PutMany(t *testing.T) {
	s, ctx := open(t)
	var items []any
	for i := range 60 {
		items = append(items, thing{PK: "many", SK: fmt.Sprintf("%03d", i), Count: i})
	}
	ctx, meter := store.WithMeter(ctx)
	if err := s.PutMany(ctx, items); err != nil {
		t.Fatal(err)
	}
	if u := meter.Usage(); u.Calls != 3 || u.WriteUnits != 60 {
		t.Fatalf("60 puts: %+v, want 3 calls, 60 WCU", u)
	}
	var page []thing
	if _, err := s.QueryPage(ctx, store.Query{PK: "many"}, &page); err != nil || len(page) != 60 || page[59].Count != 59 {
		t.Fatalf("read back %d items: %v", len(page), err)
	}
}
