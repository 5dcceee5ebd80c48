package synctier

import (
	"context"
	"fmt"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// The Lambda functions tally, per minute, how long sync requests held them:
// the controller's measure of what the tier would save. An idle client
// holds about one function all the time, so a minute's tally over 60 s is
// the mean number of clients waiting in Lambda in that minute. One write
// per request that waited, and none when nobody syncs, where a CloudWatch
// query every minute would cost whether anyone is connected or not.
const (
	demandPK = "synctier|demand"
	// MinWait is the shortest hold that is tallied: an answer that comes
	// at once costs Lambda little and is not a connected client's wait.
	MinWait = time.Second
	// demandTTL keeps a tally past any span the controller reads.
	demandTTL = 2 * time.Hour
)

// minuteSK is the sort key of the minute holding t.
func minuteSK(t time.Time) string { return fmt.Sprintf("%013d", t.Truncate(time.Minute).UnixMilli()) }

// RecordWait adds held, the time a sync request that ended at end held
// its function, to the tally of that minute; holds under MinWait are not
// tallied.
func RecordWait(ctx context.Context, st *store.Store, end time.Time, held time.Duration) error {
	if held < MinWait {
		return nil
	}
	k := store.Key{PK: demandPK, SK: minuteSK(end)}
	if _, err := st.Add(ctx, k, "ms", held.Milliseconds(), end.Add(demandTTL)); err != nil {
		return fmt.Errorf("sync demand: %w", err)
	}
	return nil
}

// demand is one minute's tally.
type demand struct {
	SK string `dynamodbav:"sk"`
	MS int64  `dynamodbav:"ms"`
}

// Concurrency is the mean number of syncs waiting in Lambda over the whole
// minutes of span before now's minute (whose tally is still growing).
func Concurrency(ctx context.Context, st *store.Store, now time.Time, span time.Duration) (float64, error) {
	minutes := int64(span / time.Minute)
	if minutes < 1 {
		return 0, fmt.Errorf("sync demand: span %v is under a minute", span)
	}
	end := now.Truncate(time.Minute)
	from := end.Add(-time.Duration(minutes) * time.Minute)
	var page []demand
	if _, err := st.QueryPage(ctx, store.Query{PK: demandPK, From: minuteSK(from), Limit: int(minutes) + 1}, &page); err != nil {
		return 0, fmt.Errorf("sync demand: %w", err)
	}
	var ms int64
	for _, d := range page {
		if d.SK < minuteSK(end) {
			ms += d.MS
		}
	}
	return float64(ms) / float64(minutes*time.Minute.Milliseconds()), nil
}
