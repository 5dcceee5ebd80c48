// Package gate holds back a request's side effects until its caller is
// known.
//
// The access token's read is a DynamoDB round trip, a few milliseconds in
// AWS. A request whose token names its user (accounts' signed tokens) need
// not wait for it before reading: its handler starts at once, with the
// user the token names, and the token's read runs beside the handler's
// first reads. What the handler does that others could see must wait for
// the read's verdict: every write to the table, every message queued,
// every mail sent and every request to another server calls Wait first,
// and the response is held until the verdict too (accounts.RequireAuth).
// A token that turns out revoked has then done nothing but reads, and
// gets 401 as before.
package gate

import (
	"context"
	"errors"
)

// ErrShut is what Wait returns when the request's caller was not who the
// token said: the side effect must not happen.
var ErrShut = errors.New("gate: the request's access token was refused")

type key struct{}

// With returns a context whose side effects wait for open: it blocks
// until the caller is known and returns nil to let them happen, or an
// error (wrapping ErrShut) to stop them.
func With(ctx context.Context, open func(context.Context) error) context.Context {
	return context.WithValue(ctx, key{}, open)
}

// Wait blocks until ctx's gate opens; a context without a gate is open.
// Call it before any side effect a request with an unconfirmed caller
// must not have.
func Wait(ctx context.Context) error {
	open, _ := ctx.Value(key{}).(func(context.Context) error)
	if open == nil {
		return nil
	}
	return open(ctx)
}

// Ahead returns ctx without its gate, for writes that nobody reads until a
// later write that waits makes them part of something: an event's pointer
// and its transaction's record, written before the event's slot. They may
// go before the caller is known, beside the access token's read; a refused
// caller leaves them as a request that stopped before its slot does,
// which readers and retries already take for nothing.
func Ahead(ctx context.Context) context.Context {
	return context.WithValue(ctx, key{}, (func(context.Context) error)(nil))
}
