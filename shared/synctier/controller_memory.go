package synctier

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// The controller's memory item.
const (
	memoryPK = "synctier|controller"
	memorySK = "state"
	// memoryTTL forgets the memory of a controller that stopped running
	// (the tier switched off): its next first run starts from what it
	// observes.
	memoryTTL = 24 * time.Hour
)

// ErrMemoryConflict is a memory write that lost to another run's.
var ErrMemoryConflict = errors.New("another controller run wrote its memory first")

// memoryItem is Memory as stored: times in Unix milliseconds, 0 when
// unset.
type memoryItem struct {
	PK            string `dynamodbav:"pk"`
	SK            string `dynamodbav:"sk"`
	Routes        string `dynamodbav:"routes"`
	LowSince      int64  `dynamodbav:"low_since"`
	DrainFrom     int64  `dynamodbav:"drain_from"`
	NoStatusSince int64  `dynamodbav:"no_status_since"`
	Rev           int64  `dynamodbav:"rev"`
	At            int64  `dynamodbav:"at"`
	Expires       int64  `dynamodbav:"expires_at"`
}

// ReadMemory reads the controller's memory; without an item, the zero
// Memory (Rev 0).
func ReadMemory(ctx context.Context, st *store.Store) (Memory, error) {
	var it memoryItem
	err := st.Get(ctx, store.Key{PK: memoryPK, SK: memorySK}, &it)
	if errors.Is(err, store.ErrNotFound) {
		return Memory{}, nil
	}
	if err != nil {
		return Memory{}, fmt.Errorf("sync tier controller memory: %w", err)
	}
	return Memory{
		Routes:        Position(it.Routes),
		LowSince:      fromMillis(it.LowSince),
		DrainFrom:     fromMillis(it.DrainFrom),
		NoStatusSince: fromMillis(it.NoStatusSince),
		Rev:           it.Rev,
	}, nil
}

// WriteMemory stores m as the revision after m.Rev, written at now, if the
// item is still at m.Rev (absent for 0); otherwise it returns
// ErrMemoryConflict: another run wrote in between, and this one's view is
// stale.
func WriteMemory(ctx context.Context, st *store.Store, m Memory, now time.Time) error {
	it := memoryItem{
		PK: memoryPK, SK: memorySK,
		Routes:        string(m.Routes),
		LowSince:      toMillis(m.LowSince),
		DrainFrom:     toMillis(m.DrainFrom),
		NoStatusSince: toMillis(m.NoStatusSince),
		Rev:           m.Rev + 1,
		At:            now.UnixMilli(),
		Expires:       now.Add(memoryTTL).Unix(),
	}
	var err error
	if m.Rev == 0 {
		err = st.Create(ctx, it)
	} else {
		err = st.PutIf(ctx, it, "rev", m.Rev)
	}
	if errors.Is(err, store.ErrExists) || errors.Is(err, store.ErrConflict) {
		return fmt.Errorf("sync tier controller memory at revision %d: %w", m.Rev, ErrMemoryConflict)
	}
	if err != nil {
		return fmt.Errorf("sync tier controller memory: %w", err)
	}
	return nil
}

func toMillis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}
