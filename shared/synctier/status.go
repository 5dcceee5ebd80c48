package synctier

import (
	"context"
	"fmt"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

const (
	// StatusEvery is how often a tier process writes its status.
	StatusEvery = time.Minute
	// StaleAfter is when a status no longer counts: a process that has not
	// written for this long is gone or cannot reach the table.
	StaleAfter = 3 * StatusEvery
	// statusTTL lets DynamoDB remove the items of processes gone for good.
	statusTTL = time.Hour
)

const statusPK = "synctier"

// Status is one tier process's report.
type Status struct {
	PK string `dynamodbav:"pk"`
	// SK is the process's instance: its task ID in ECS, a random ID
	// elsewhere.
	SK string `dynamodbav:"sk"`
	// Waiting is how many sync requests wait in the process now.
	Waiting int `dynamodbav:"waiting"`
	// Peak is the most that waited at once since the last report.
	Peak int `dynamodbav:"peak"`
	// Served is how many sync requests it answered since the last report.
	Served int64 `dynamodbav:"served"`
	// At is when the report was written, in Unix milliseconds.
	At      int64 `dynamodbav:"at"`
	Expires int64 `dynamodbav:"expires_at"`
}

// WriteStatus stores the report of instance, written at now.
func WriteStatus(ctx context.Context, st *store.Store, instance string, s Status, now time.Time) error {
	s.PK, s.SK = statusPK, instance
	s.At = now.UnixMilli()
	s.Expires = now.Add(statusTTL).Unix()
	if err := st.Put(ctx, s); err != nil {
		return fmt.Errorf("sync tier status: %w", err)
	}
	return nil
}

// ReadStatuses returns the reports of the processes alive at now: those
// written within StaleAfter.
func ReadStatuses(ctx context.Context, st *store.Store, now time.Time) ([]Status, error) {
	var all []Status
	q := store.Query{PK: statusPK}
	for {
		var page []Status
		next, err := st.QueryPage(ctx, q, &page)
		if err != nil {
			return nil, fmt.Errorf("sync tier status: %w", err)
		}
		for _, s := range page {
			if now.Sub(time.UnixMilli(s.At)) < StaleAfter {
				all = append(all, s)
			}
		}
		if next == "" {
			return all, nil
		}
		q.Cursor = next
	}
}

// RemoveStatus deletes the report of instance: a process that stops says
// so, and the controller gives its routes back to Lambda at its next run
// instead of after StaleAfter.
func RemoveStatus(ctx context.Context, st *store.Store, instance string) error {
	if err := st.Delete(ctx, store.Key{PK: statusPK, SK: instance}); err != nil {
		return fmt.Errorf("sync tier status: %w", err)
	}
	return nil
}
