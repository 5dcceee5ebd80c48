package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
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

// TestStore_KeyLimits checks DynamoDB's key sizes, 2048 bytes for a
// partition key and 1024 for a sort key, on every way in: each call at the
// limit works, one byte over gives ErrKeyTooLong before any request.
func TestStore_KeyLimits(t *testing.T) {
	s, ctx := open(t)
	pk, sk := strings.Repeat("p", store.MaxPartitionKeySize), strings.Repeat("s", store.MaxSortKeySize)
	type indexed struct {
		PK     string `dynamodbav:"pk"`
		SK     string `dynamodbav:"sk"`
		GSI1PK string `dynamodbav:"gsi1pk"`
		GSI1SK string `dynamodbav:"gsi1sk"`
	}
	if err := s.Put(ctx, thing{PK: pk, SK: sk, Name: "at the limit"}); err != nil {
		t.Fatalf("put at the limits: %v", err)
	}
	var got thing
	if err := s.Get(ctx, store.Key{PK: pk, SK: sk}, &got); err != nil || got.Name != "at the limit" {
		t.Fatalf("get at the limits: %+v, %v", got, err)
	}
	if err := s.Put(ctx, indexed{PK: "p", SK: "s", GSI1PK: pk, GSI1SK: sk}); err != nil {
		t.Fatalf("put with index keys at the limits: %v", err)
	}
	var page []thing
	if _, err := s.QueryPage(ctx, store.Query{PK: pk, Prefix: sk}, &page); err != nil || len(page) != 1 {
		t.Fatalf("query at the limits: %d items, %v", len(page), err)
	}
	ctx, meter := store.WithMeter(ctx)
	tests := []struct {
		name string
		call func() error
	}{
		{"put pk", func() error { return s.Put(ctx, thing{PK: pk + "x", SK: "s"}) }},
		{"put sk", func() error { return s.Put(ctx, thing{PK: "p", SK: sk + "x"}) }},
		{"put multibyte sk", func() error { return s.Put(ctx, thing{PK: "p", SK: strings.Repeat("é", store.MaxSortKeySize/2+1)}) }},
		{"put gsi1pk", func() error { return s.Put(ctx, indexed{PK: "p", SK: "s", GSI1PK: pk + "x", GSI1SK: "s"}) }},
		{"put gsi1sk", func() error { return s.Put(ctx, indexed{PK: "p", SK: "s", GSI1PK: "p", GSI1SK: sk + "x"}) }},
		{"create", func() error { return s.Create(ctx, thing{PK: "p", SK: sk + "x"}) }},
		{"put if", func() error { return s.PutIf(ctx, thing{PK: pk + "x", SK: "s"}, "name", "") }},
		{"put many", func() error { return s.PutMany(ctx, []any{thing{PK: "p", SK: "s"}, thing{PK: "p", SK: sk + "x"}}) }},
		{"get", func() error { return s.Get(ctx, store.Key{PK: pk + "x", SK: "s"}, &got) }},
		{"get many", func() error {
			return s.GetMany(ctx, []store.Key{{PK: "p", SK: sk + "x"}}, func(store.Key, func(any) error) error { return nil })
		}},
		{"delete", func() error { return s.Delete(ctx, store.Key{PK: "p", SK: sk + "x"}) }},
		{"consume", func() error { return s.Consume(ctx, store.Key{PK: pk + "x", SK: "s"}, &got) }},
		{"increment", func() error {
			_, err := s.Increment(ctx, store.Key{PK: "p", SK: sk + "x"}, "n", time.Time{})
			return err
		}},
		{"transact put", func() error {
			return s.Transact(ctx, store.PutOp(thing{PK: "p", SK: "a"}), store.PutOp(thing{PK: pk + "x", SK: "s"}))
		}},
		{"transact delete", func() error { return s.Transact(ctx, store.DeleteOp(store.Key{PK: "p", SK: sk + "x"})) }},
		{"query pk", func() error { _, err := s.QueryPage(ctx, store.Query{PK: pk + "x"}, &page); return err }},
		{"query prefix", func() error { _, err := s.QueryPage(ctx, store.Query{PK: "p", Prefix: sk + "x"}, &page); return err }},
		{"query from", func() error { _, err := s.QueryPage(ctx, store.Query{PK: "p", From: sk + "x"}, &page); return err }},
		{"query to", func() error { _, err := s.QueryPage(ctx, store.Query{PK: "p", To: sk + "x"}, &page); return err }},
		{"index query", func() error {
			_, err := s.QueryPage(ctx, store.Query{Index: "gsi1", PK: pk + "x"}, &page)
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, store.ErrKeyTooLong) {
				t.Fatalf("%s one byte over the limit: %v, want ErrKeyTooLong", tc.name, err)
			}
		})
	}
	if u := meter.Usage(); u.Calls != 0 {
		t.Fatalf("keys over the limits made %d DynamoDB calls, want none", u.Calls)
	}
}

// TestStore_TransactErrors checks that Transact tells a lost race from a
// request DynamoDB refuses: only the first is ErrConflict, and neither is
// sent twice.
func TestStore_TransactErrors(t *testing.T) {
	s, ctx := open(t)
	if err := s.Put(ctx, thing{PK: "room|r", SK: "head", Count: 1}); err != nil {
		t.Fatal(err)
	}
	t.Run("ConditionFailed", func(t *testing.T) {
		ctx, meter := store.WithMeter(ctx)
		err := s.Transact(ctx, store.CreateOp(thing{PK: "room|r", SK: "head"}), store.PutOp(thing{PK: "room|r", SK: "ev|1"}))
		if !errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrInvalid) {
			t.Fatalf("create over a taken key: %v, want ErrConflict", err)
		}
		if u := meter.Usage(); u.Calls != 1 {
			t.Fatalf("a failed condition made %d calls, want 1", u.Calls)
		}
	})
	t.Run("PutIfChanged", func(t *testing.T) {
		err := s.Transact(ctx, store.PutIfOp(thing{PK: "room|r", SK: "head", Count: 3}, "count", 2))
		if !errors.Is(err, store.ErrConflict) {
			t.Fatalf("put if over a changed value: %v, want ErrConflict", err)
		}
	})
	t.Run("Invalid", func(t *testing.T) {
		// DynamoDB refuses two actions on one item in a transaction.
		ctx, meter := store.WithMeter(ctx)
		err := s.Transact(ctx, store.PutOp(thing{PK: "room|r", SK: "ev|2"}), store.DeleteOp(store.Key{PK: "room|r", SK: "ev|2"}))
		if !errors.Is(err, store.ErrInvalid) || errors.Is(err, store.ErrConflict) {
			t.Fatalf("two actions on one item: %v, want ErrInvalid and not ErrConflict", err)
		}
		if u := meter.Usage(); u.Calls != 1 {
			t.Fatalf("an invalid transaction made %d calls, want 1", u.Calls)
		}
	})
	var got thing
	for _, sk := range []string{"ev|1", "ev|2"} {
		if err := s.Get(ctx, store.Key{PK: "room|r", SK: sk}, &got); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("a refused transaction wrote %s: %v", sk, err)
		}
	}
}

// TestStore_TransactThrottled puts a DynamoDB in front of the embedded one
// that throttles the first transactions it gets: Transact sends again
// until one goes through, and gives up with ErrThrottled, never
// ErrConflict, when throttling lasts.
func TestStore_TransactThrottled(t *testing.T) {
	srv, err := embedded.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	target, _ := url.Parse(srv.URL())
	proxy := httputil.NewSingleHostReverseProxy(target)
	var throttle atomic.Int64
	var seen atomic.Int64
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.Header.Get("X-Amz-Target"), ".TransactWriteItems") {
			seen.Add(1)
			if throttle.Add(-1) >= 0 {
				w.Header().Set("Content-Type", "application/x-amz-json-1.0")
				w.WriteHeader(http.StatusBadRequest)
				io.WriteString(w, `{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","message":"Transaction cancelled, please refer cancellation reasons for specific reasons [None, ThrottlingError]","CancellationReasons":[{"Code":"None"},{"Code":"ThrottlingError","Message":"Throughput exceeds the current capacity of your table or index."}]}`)
				return
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	ctx := context.Background()
	s, err := store.Open(ctx, store.Options{Table: "test", Endpoint: front.URL})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateTable(ctx); err != nil {
		t.Fatal(err)
	}
	ops := []store.Op{store.PutOp(thing{PK: "p", SK: "a"}), store.PutOp(thing{PK: "p", SK: "b"})}

	throttle.Store(2)
	seen.Store(0)
	if err := s.Transact(ctx, ops...); err != nil {
		t.Fatalf("transact throttled twice: %v", err)
	}
	if n := seen.Load(); n != 3 {
		t.Fatalf("transact throttled twice was sent %d times, want 3", n)
	}
	var got thing
	if err := s.Get(ctx, store.Key{PK: "p", SK: "b"}, &got); err != nil {
		t.Fatalf("after the throttling: %v", err)
	}

	throttle.Store(1 << 30)
	seen.Store(0)
	err = s.Transact(ctx, ops...)
	if !errors.Is(err, store.ErrThrottled) || errors.Is(err, store.ErrConflict) {
		t.Fatalf("transact always throttled: %v, want ErrThrottled", err)
	}
	if n := seen.Load(); n < 2 || n > 100 {
		t.Fatalf("transact always throttled was sent %d times, want a few", n)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Transact(cctx, ops...); !errors.Is(err, context.Canceled) || errors.Is(err, store.ErrConflict) {
		t.Fatalf("transact with an ended context: %v, want context.Canceled", err)
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
	// To ends the page, inclusive, at either end, with or without From.
	if got := sks(store.Query{PK: "room|f", Prefix: "ev|", To: "ev|07", Descending: true, Limit: 20}); got != "09,08,07" {
		t.Errorf("descending from the end to 07 = %s", got)
	}
	if got := sks(store.Query{PK: "room|f", Prefix: "ev|", From: "ev|06", To: "ev|04", Descending: true}); got != "06,05,04" {
		t.Errorf("descending from 06 to 04 = %s", got)
	}
	if got := sks(store.Query{PK: "room|f", Prefix: "ev|", To: "ev|02"}); got != "00,01,02" {
		t.Errorf("ascending to 02 = %s", got)
	}
	if got := sks(store.Query{PK: "room|f", Prefix: "ev|", To: "ev|99", Descending: true}); got != "" {
		t.Errorf("descending to past the last = %q, want none", got)
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

// TestStore_ClearAttr: one attribute goes, the others stay; an absent
// item is not created.
func TestStore_ClearAttr(t *testing.T) {
	s, ctx := open(t)
	in := thing{PK: "room|!a:x", SK: "locals", Name: "kept", Count: 7, Blob: []byte{1}}
	if err := s.Put(ctx, in); err != nil {
		t.Fatal(err)
	}
	if err := s.ClearAttr(ctx, store.Key{PK: in.PK, SK: in.SK}, "blob"); err != nil {
		t.Fatal(err)
	}
	var got thing
	if err := s.Get(ctx, store.Key{PK: in.PK, SK: in.SK}, &got); err != nil {
		t.Fatal(err)
	}
	if got.Blob != nil || got.Name != "kept" || got.Count != 7 {
		t.Fatalf("after ClearAttr: %+v, want the blob gone and the rest kept", got)
	}
	if err := s.ClearAttr(ctx, store.Key{PK: in.PK, SK: "absent"}, "blob"); err != nil {
		t.Fatal(err)
	}
	if err := s.Get(ctx, store.Key{PK: in.PK, SK: "absent"}, &got); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ClearAttr of an absent item: %v, want it still absent", err)
	}
}
