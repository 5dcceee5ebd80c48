package store

import (
	"context"
	"math"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go/middleware"
)

// Meter counts the DynamoDB calls, capacity units and sequential round trips
// of one request. Cost per operation is a figure this project tracks, so
// every store method records into the meter found in its context.
//
// Round trips are the DynamoDB calls on the request's critical path, what
// its latency in AWS is made of (a few milliseconds each from Lambda).
// Each call has an interval, from when the store hands it to the SDK to
// when the SDK returns it (its retries included, like Calls). Sweep the
// calls in the order they began: a new round trip begins at a call that
// begins after every earlier call has ended; calls that overlap run side
// by side and cost one round trip together. So two reads in sequence are
// two round trips, two reads in an errgroup one, and a read in sequence
// with a batch of 16 parallel writes two.
//
// The meter does not keep the intervals: a call begins a new round trip
// exactly when no other call of the meter is in flight as it begins, so
// the meter counts calls in flight and the times that count leaves zero.
// Which came first, a call's end or another's beginning, is the order of
// two atomic operations, not of clock readings: sequential code never
// overlaps, whatever the clock's resolution.
//
// A chain of overlapping calls counts once even when it lasts longer than
// one call, as PutMany's batches, 16 at a time, do: the figure is the
// least number of call latencies a request waits, not an upper bound.
type Meter struct {
	calls atomic.Int64
	// inFlight is how many calls of this meter have begun and not
	// ended; roundTrips counts the calls that began when it was zero.
	inFlight   atomic.Int64
	roundTrips atomic.Int64
	// Units are kept in thousandths so that eventually consistent half units
	// add up exactly.
	readMilli  atomic.Int64
	writeMilli atomic.Int64
	// parent is the meter of the context this one was made in: a job's
	// meter inside a test's, say. It counts what this one counts.
	parent *Meter
}

// Usage is a snapshot of a Meter.
type Usage struct {
	Calls      int64   `json:"calls"`
	ReadUnits  float64 `json:"rcu"`
	WriteUnits float64 `json:"wcu"`
	// RoundTrips is the number of sequential DynamoDB round trips, as
	// Meter says.
	RoundTrips int64 `json:"round_trips"`
}

type meterKey struct{}

// WithMeter returns a context carrying a new meter, and the meter. A meter
// already in ctx goes on counting what the new one counts.
func WithMeter(ctx context.Context) (context.Context, *Meter) {
	m := &Meter{parent: MeterFrom(ctx)}
	return context.WithValue(ctx, meterKey{}, m), m
}

// MeterFrom returns the context's meter, or nil.
func MeterFrom(ctx context.Context) *Meter {
	m, _ := ctx.Value(meterKey{}).(*Meter)
	return m
}

// Usage returns what the meter has counted so far; a nil meter counted nothing.
func (m *Meter) Usage() Usage {
	if m == nil {
		return Usage{}
	}
	return Usage{
		Calls:      m.calls.Load(),
		ReadUnits:  float64(m.readMilli.Load()) / 1000,
		WriteUnits: float64(m.writeMilli.Load()) / 1000,
		RoundTrips: m.roundTrips.Load(),
	}
}

// callBegins marks the beginning of a DynamoDB call in ctx's meters, a
// parent as well as its child: the parent sees the intervals of the
// child's calls beside its own. callEnds marks the call's end; every
// callBegins has one. Both are called by the SDK middleware timeCalls,
// around every call of the client.
func callBegins(ctx context.Context) {
	for m := MeterFrom(ctx); m != nil; m = m.parent {
		if m.inFlight.Add(1) == 1 {
			m.roundTrips.Add(1)
		}
	}
}

func callEnds(ctx context.Context) {
	for m := MeterFrom(ctx); m != nil; m = m.parent {
		m.inFlight.Add(-1)
	}
}

// timeCalls installs, first in the SDK's middleware stack of every
// operation, the marks of callBegins and callEnds: one place that no call
// of the client can bypass, the table's creation and snapshots included,
// and one interval per call however many times the SDK sends it.
func timeCalls(stack *middleware.Stack) error {
	return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("CirrusMeterRoundTrips",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			callBegins(ctx)
			defer callEnds(ctx)
			return next.HandleInitialize(ctx, in)
		}), middleware.Before)
}

func record(ctx context.Context, read, write float64) {
	for m := MeterFrom(ctx); m != nil; m = m.parent {
		m.calls.Add(1)
		m.readMilli.Add(int64(math.Round(read * 1000)))
		m.writeMilli.Add(int64(math.Round(write * 1000)))
	}
}

// readUnits is what DynamoDB charges to read size bytes in one item or one
// query page: one unit per 4 KB started, half that when eventually consistent.
func readUnits(size int, consistent bool) float64 {
	units := math.Max(1, math.Ceil(float64(size)/4096))
	if !consistent {
		return units / 2
	}
	return units
}

// writeUnits is what DynamoDB charges to write an item of size bytes: one
// unit per 1 KB started; transactions cost double.
func writeUnits(size int) float64 {
	return math.Max(1, math.Ceil(float64(size)/1024))
}

// putUnits is what writing the item av costs: its own units, plus as many
// again when it carries gsi1 keys, since the index projects every attribute
// and DynamoDB bills index writes like table writes.
func putUnits(av map[string]types.AttributeValue, size int) float64 {
	units := writeUnits(size)
	if _, ok := av[gsi1PK]; ok {
		units *= 2
	}
	return units
}
