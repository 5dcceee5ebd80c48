package store

import (
	"context"
	"math"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go/middleware"
)

// Meter counts the DynamoDB calls, capacity units and sequential round
// trips of one request. Cost per operation is a figure this project
// tracks, so every store method records into the meter found in its
// context.
//
// Round trips are the DynamoDB calls on the request's critical path, what
// its latency in AWS is made of (a few milliseconds each from Lambda).
// Each call has an interval, from when the store hands it to the SDK to
// when the SDK returns it (its retries included, like Calls). A call's
// depth is one more than the deepest call that ended before it began, or
// one; the round trips are the deepest call's depth: the longest run of
// calls each of which began after the one before it ended. So two reads
// in sequence are two round trips, two reads in an errgroup one, a read
// in sequence with a batch of 16 parallel writes two, and fifty rooms read
// side by side, each a chain of three, three.
//
// The meter does not keep the intervals: it keeps the deepest depth of
// the calls that have ended, which a call reads as it begins. Which came
// first, a call's end or another's beginning, is the order of two atomic
// operations, not of clock readings: sequential code never overlaps,
// whatever the clock's resolution. Where calls take a tenth of a
// millisecond (the embedded store), independent chains interleave and may
// count as one longer chain; where they take milliseconds, as in AWS or
// behind `make bench`'s latency proxy, the count is the critical path.
type Meter struct {
	calls atomic.Int64
	// ended is the deepest depth of the calls that have ended;
	// roundTrips the deepest depth of any call begun.
	ended      atomic.Int64
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
// parent as well as its child: the parent sees the child's calls beside
// its own. It returns the call's depth in each, outermost last, which
// callEnds takes when the call ends; every callBegins has one. Both are
// called by the SDK middleware timeCalls, around every call of the client.
func callBegins(ctx context.Context) []int64 {
	var depths []int64
	for m := MeterFrom(ctx); m != nil; m = m.parent {
		d := m.ended.Load() + 1
		storeMax(&m.roundTrips, d)
		depths = append(depths, d)
	}
	return depths
}

func callEnds(ctx context.Context, depths []int64) {
	i := 0
	for m := MeterFrom(ctx); m != nil && i < len(depths); m = m.parent {
		storeMax(&m.ended, depths[i])
		i++
	}
}

// storeMax raises v to n unless it is already higher.
func storeMax(v *atomic.Int64, n int64) {
	for {
		old := v.Load()
		if old >= n || v.CompareAndSwap(old, n) {
			return
		}
	}
}

// timeCalls installs, first in the SDK's middleware stack of every
// operation, the marks of callBegins and callEnds: one place that no call
// of the client can bypass, the table's creation and snapshots included,
// and one interval per call however many times the SDK sends it.
func timeCalls(stack *middleware.Stack) error {
	return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("CirrusMeterRoundTrips",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			depths := callBegins(ctx)
			defer callEnds(ctx, depths)
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
