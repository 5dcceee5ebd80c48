package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/gate"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// A request whose caller is not yet confirmed may read, but its writes wait
// for the verdict, and a refusal stops them before they reach DynamoDB.
func TestGate_HoldsWritesNotReads(t *testing.T) {
	s, ctx := open(t)
	have := thing{PK: "gate|1", SK: "a", Name: "before"}
	if err := s.Put(ctx, have); err != nil {
		t.Fatal(err)
	}

	given := make(chan struct{})
	var verdict error
	held := gate.With(ctx, func(context.Context) error { <-given; return verdict })
	var got thing
	// The verdict is not given yet: a read that waited for it would hang.
	if err := s.Get(held, store.Key{PK: "gate|1", SK: "a"}, &got); err != nil || got.Name != "before" {
		t.Fatalf("read behind an open verdict: %v %+v", err, got)
	}

	verdict = errors.Join(gate.ErrShut, errors.New("token refused"))
	close(given)
	ctx2, meter := store.WithMeter(held)
	err := s.Put(ctx2, thing{PK: "gate|1", SK: "a", Name: "after"})
	if !errors.Is(err, gate.ErrShut) {
		t.Fatalf("write behind a refused verdict: %v, want gate.ErrShut", err)
	}
	if err := s.Transact(ctx2, store.PutOp(thing{PK: "gate|1", SK: "b", Name: "after"})); !errors.Is(err, gate.ErrShut) {
		t.Fatalf("transaction behind a refused verdict: %v, want gate.ErrShut", err)
	}
	// The meter's round trips are marked past the gate, where a call
	// goes on the wire.
	if u := meter.Usage(); u.RoundTrips != 0 {
		t.Fatalf("refused writes reached DynamoDB: %+v", u)
	}
	if err := s.Get(ctx, store.Key{PK: "gate|1", SK: "a"}, &got); err != nil || got.Name != "before" {
		t.Fatalf("item after the refused write: %v %+v", err, got)
	}
	if err := s.Get(ctx, store.Key{PK: "gate|1", SK: "b"}, &got); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("item of the refused transaction: %v, want ErrNotFound", err)
	}

	// An open verdict lets the write through.
	open := gate.With(ctx, func(context.Context) error { return nil })
	if err := s.Put(open, thing{PK: "gate|1", SK: "a", Name: "after"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Get(ctx, store.Key{PK: "gate|1", SK: "a"}, &got); err != nil || got.Name != "after" {
		t.Fatalf("item after the confirmed write: %v %+v", err, got)
	}
}
