package keybackup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// ErrNotObject is auth_data or session_data that is not a JSON object.
var ErrNotObject = errors.New("not a JSON object")

// headPage is how many version items one Query of head reads: deleted ones
// are small, so a page of them still costs 1 RCU.
const headPage = 10

// Create makes a new version of userID's backup and returns its ID, one
// above the highest ever made: as in Synapse, the ID of a deleted version
// is never given again. The new version becomes the current one. The
// previous current version's rev moves in the same transaction, so that an
// upload to it racing with the switch fails its condition and finds out.
func (s *Service) Create(ctx context.Context, userID, algorithm string, authData json.RawMessage) (string, error) {
	auth, err := compactObject(authData)
	if err != nil {
		return "", fmt.Errorf("create backup version of %s: auth_data: %w", userID, err)
	}
	if len(auth)+len(algorithm)+len(versionsPK(userID))+itemOverhead*2 > store.MaxItemSize {
		return "", fmt.Errorf("create backup version of %s: auth_data: %w", userID, ErrTooLarge)
	}
	defer s.lock(userID)()
	for attempt := 0; attempt < maxAttempts; attempt++ {
		latest, cur, err := s.head(ctx, userID)
		if err != nil {
			return "", fmt.Errorf("create backup version of %s: %w", userID, err)
		}
		n := latest + 1
		it := versionItem{PK: versionsPK(userID), SK: versionSK(n), Version: strconv.FormatUint(n, 10),
			Algorithm: algorithm, AuthData: auth}
		if cur == nil {
			err = s.Store.Create(ctx, it)
		} else {
			fence := *cur
			fence.Rev++
			err = s.Store.Transact(ctx, store.CreateOp(it), store.PutIfOp(fence, "rev", cur.Rev))
		}
		switch {
		case err == nil:
			return it.Version, nil
		case errors.Is(err, store.ErrExists), errors.Is(err, store.ErrConflict):
			if err := wait(ctx, attempt); err != nil {
				return "", err
			}
		default:
			return "", fmt.Errorf("create backup version of %s: %w", userID, err)
		}
	}
	return "", fmt.Errorf("create backup version of %s: %w", userID, ErrBusy)
}

// Get returns a version of userID's backup, or the current one when
// version is "" (ErrNoBackup when there is none). An unknown or deleted
// version gives ErrUnknownVersion.
func (s *Service) Get(ctx context.Context, userID, version string) (Version, error) {
	if version == "" {
		_, cur, err := s.head(ctx, userID)
		if err != nil {
			return Version{}, fmt.Errorf("current backup version of %s: %w", userID, err)
		}
		if cur == nil {
			return Version{}, fmt.Errorf("current backup version of %s: %w", userID, ErrNoBackup)
		}
		return cur.info(), nil
	}
	it, err := s.live(ctx, userID, version)
	if err != nil {
		return Version{}, err
	}
	return it.info(), nil
}

// Update replaces the auth_data of a version of userID's backup, the only
// part that may change: algorithm must be the version's own
// (ErrAlgorithmMismatch). An unknown or deleted version gives
// ErrUnknownVersion.
func (s *Service) Update(ctx context.Context, userID, version, algorithm string, authData json.RawMessage) error {
	auth, err := compactObject(authData)
	if err != nil {
		return fmt.Errorf("update backup version %s of %s: auth_data: %w", version, userID, err)
	}
	if len(auth)+len(algorithm)+len(versionsPK(userID))+itemOverhead*2 > store.MaxItemSize {
		return fmt.Errorf("update backup version %s of %s: auth_data: %w", version, userID, ErrTooLarge)
	}
	defer s.lock(userID)()
	for attempt := 0; attempt < maxAttempts; attempt++ {
		it, err := s.live(ctx, userID, version)
		if err != nil {
			return err
		}
		if it.Algorithm != algorithm {
			return fmt.Errorf("update backup version %s of %s: %w: it is %s", version, userID, ErrAlgorithmMismatch, it.Algorithm)
		}
		next := *it
		next.AuthData = auth
		next.Rev++
		err = s.Store.PutIf(ctx, next, "rev", it.Rev)
		if err == nil {
			return nil
		}
		if !errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("update backup version %s of %s: %w", version, userID, err)
		}
		if err := wait(ctx, attempt); err != nil {
			return err
		}
	}
	return fmt.Errorf("update backup version %s of %s: %w", version, userID, ErrBusy)
}

// Delete deletes a version of userID's backup and its keys. A version
// deleted before is no error, as the spec says; deleting it again finishes
// a removal of its keys that was cut short. A version never made gives
// ErrUnknownVersion.
func (s *Service) Delete(ctx context.Context, userID, version string) error {
	defer s.lock(userID)()
	if err := s.markDeleted(ctx, userID, version); err != nil {
		return err
	}
	if err := s.purge(ctx, userID, version); err != nil {
		return fmt.Errorf("delete keys of backup version %s of %s: %w", version, userID, err)
	}
	return nil
}

// markDeleted flags the version item deleted, from which moment nothing
// reads or writes the version's keys: the flag moves rev, so uploads racing
// with it fail their condition.
func (s *Service) markDeleted(ctx context.Context, userID, version string) error {
	for attempt := 0; attempt < maxAttempts; attempt++ {
		it, err := s.item(ctx, userID, version)
		if err != nil {
			return err
		}
		if it.Deleted {
			return nil
		}
		next := *it
		next.Deleted, next.AuthData, next.Count = true, "", 0
		next.Rev++
		err = s.Store.PutIf(ctx, next, "rev", it.Rev)
		if err == nil {
			return nil
		}
		if !errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("delete backup version %s of %s: %w", version, userID, err)
		}
		if err := wait(ctx, attempt); err != nil {
			return err
		}
	}
	return fmt.Errorf("delete backup version %s of %s: %w", version, userID, ErrBusy)
}

// purge overwrites every key of a deleted version with an expired
// tombstone, 25 to a BatchWriteItem: 1 WCU per key of up to 1 KB, half of
// what deletes in transactions would cost. No transaction is needed, since
// nothing counts the keys of a deleted version any more; the key material
// is gone at once, and DynamoDB's TTL removes the tombstones for free.
func (s *Service) purge(ctx context.Context, userID, version string) error {
	// A minute back, so that no host whose clock lags reads one as live.
	expires := time.Now().Add(-time.Minute).Unix()
	q := store.Query{PK: keysPK(userID, version)}
	for {
		var page []store.Key
		next, err := s.Store.QueryPage(ctx, q, &page)
		if err != nil {
			return err
		}
		items := make([]any, len(page))
		for i, k := range page {
			items[i] = tombstone{PK: k.PK, SK: k.SK, Expires: expires}
		}
		if err := s.Store.PutMany(ctx, items); err != nil {
			return err
		}
		if next == "" {
			return nil
		}
		q.Cursor = next
	}
}

// head reads userID's versions from the newest down: the number of the
// newest ever made (0 when none) and the current version, the newest not
// deleted (nil when none). One Query of 1 RCU, unless the user deleted
// more than headPage versions in a row.
func (s *Service) head(ctx context.Context, userID string) (uint64, *versionItem, error) {
	var latest uint64
	q := store.Query{PK: versionsPK(userID), Prefix: versionPrefix, Descending: true, Limit: headPage}
	for {
		var page []versionItem
		next, err := s.Store.QueryPage(ctx, q, &page)
		if err != nil {
			return 0, nil, err
		}
		for i := range page {
			if latest == 0 {
				latest, _ = parseVersion(page[i].Version)
			}
			if !page[i].Deleted {
				return latest, &page[i], nil
			}
		}
		if next == "" {
			return latest, nil, nil
		}
		q.Cursor = next
	}
}

// item reads a version item, deleted or not: one GetItem. A version this
// server never made gives ErrUnknownVersion.
func (s *Service) item(ctx context.Context, userID, version string) (*versionItem, error) {
	n, ok := parseVersion(version)
	if !ok {
		return nil, fmt.Errorf("backup version %q of %s: %w", version, userID, ErrUnknownVersion)
	}
	var it versionItem
	err := s.Store.Get(ctx, store.Key{PK: versionsPK(userID), SK: versionSK(n)}, &it)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("backup version %s of %s: %w", version, userID, ErrUnknownVersion)
	}
	if err != nil {
		return nil, fmt.Errorf("backup version %s of %s: %w", version, userID, err)
	}
	return &it, nil
}

// live is item for a version that is not deleted.
func (s *Service) live(ctx context.Context, userID, version string) (*versionItem, error) {
	it, err := s.item(ctx, userID, version)
	if err != nil {
		return nil, err
	}
	if it.Deleted {
		return nil, fmt.Errorf("backup version %s of %s is deleted: %w", version, userID, ErrUnknownVersion)
	}
	return it, nil
}

// compactObject returns a JSON object as compact text.
func compactObject(doc json.RawMessage) (string, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, doc); err != nil || buf.Len() == 0 || buf.Bytes()[0] != '{' {
		return "", ErrNotObject
	}
	return buf.String(), nil
}

// wait sleeps a little before another try, longer after each lost race,
// with jitter so that racing writers spread out.
func wait(ctx context.Context, attempt int) error {
	d := time.Duration(1+min(attempt, 10)) * 2 * time.Millisecond
	t := time.NewTimer(d/2 + rand.N(d))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
