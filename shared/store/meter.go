package store

import (
	"context"
	"math"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Meter counts the DynamoDB calls and capacity units of one request. Cost per
// operation is a figure this project tracks, so every store method records
// into the meter found in its context.
type Meter struct {
	calls atomic.Int64
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
	}
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
