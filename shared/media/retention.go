package media

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Retention is Synapse's media_retention: media nobody has downloaded (or
// thumbnailed) for a lifetime is deleted, this server's after Local and
// other servers' cached copies after Remote; 0 keeps them. Like Synapse,
// media never downloaded counts from its upload.
//
// Accesses are recorded at most once per AccessGranularity per media ID,
// so a media ID is deleted once its recorded access is older than its
// lifetime plus AccessGranularity: never before its lifetime has passed
// since its true last access, at most a granularity after (docs/storage.md,
// "Retention").
type Retention struct {
	Local, Remote time.Duration
}

// AccessGranularity is how stale a recorded access may get before an
// access records it again: one write per media ID and day at most, rather
// than one per download.
const AccessGranularity = 24 * time.Hour

// RetentionKind is the queue kind of a retention run, which the stack's
// schedule starts every hour (Synapse's MEDIA_RETENTION_CHECK_PERIOD_MS).
const RetentionKind = "media.retention"

// RetentionBatch bounds the media IDs one run looks at, so that a run ends
// well within the sender's 60 s; the rest wait for the next run, which
// starts where this one stopped (the oldest recorded access first).
const RetentionBatch = 200

// retentionReserve is the time a run leaves itself before its deadline.
const retentionReserve = 10 * time.Second

// accessItem records a media ID's last recorded access twice: under the
// media ID (sk "access", beside its metadata item), read on each access to
// decide whether to record it again; and as an entry of its class's access
// partition (mediaaccess|local or |remote), sorted by that time, which the
// retention run reads oldest first. The entry under the media ID is the
// truth: a partition entry older than it is stale and is moved by the run.
type accessItem struct {
	PK         string `dynamodbav:"pk"`
	SK         string `dynamodbav:"sk"`
	ServerName string `dynamodbav:"server"`
	MediaID    string `dynamodbav:"media_id"`
	AccessedMS int64  `dynamodbav:"accessed_ms"`
}

func accessKey(serverName, mediaID string) store.Key {
	return store.Key{PK: mediaKey(serverName, mediaID).PK, SK: "access"}
}

// accessPartition is a class's partition of access entries, "local" or
// "remote".
func accessPartition(class string) string { return "mediaaccess|" + class }

func (s *Service) class(serverName string) string {
	if serverName == s.ServerName {
		return "local"
	}
	return "remote"
}

func (s *Service) accessEntry(serverName, mediaID string, ms int64) accessItem {
	return accessItem{PK: accessPartition(s.class(serverName)), SK: fmt.Sprintf("%013d|%s|%s", ms, serverName, mediaID),
		ServerName: serverName, MediaID: mediaID, AccessedMS: ms}
}

func (r Retention) lifetime(local bool) time.Duration {
	if local {
		return r.Local
	}
	return r.Remote
}

// Accessed records that m was downloaded or thumbnailed now, when
// retention applies to it and its recorded access is older than
// AccessGranularity: one strongly consistent read each time, three writes
// at most once a day. Without retention it costs nothing.
func (s *Service) Accessed(ctx context.Context, m Media) error {
	if s.Retention.lifetime(m.ServerName == s.ServerName) <= 0 || m.Pending() {
		return nil
	}
	var p accessItem
	err := s.Store.Get(ctx, accessKey(m.ServerName, m.MediaID), &p)
	if errors.Is(err, store.ErrNotFound) {
		p.AccessedMS = 0
	} else if err != nil {
		return fmt.Errorf("media access of %s: %w", m.MediaID, err)
	} else if s.now().Sub(time.UnixMilli(p.AccessedMS)) < AccessGranularity {
		return nil
	}
	return s.recordAccess(ctx, m.ServerName, m.MediaID, p.AccessedMS, s.now().UnixMilli())
}

// Uploaded records an upload as m's first access: without a read, there
// being none before.
func (s *Service) Uploaded(ctx context.Context, m Media) error {
	if s.Retention.lifetime(true) <= 0 || m.Pending() {
		return nil
	}
	return s.recordAccess(ctx, m.ServerName, m.MediaID, 0, m.Uploaded.UnixMilli())
}

// recordAccess moves a media ID's access from prev (0: none) to now. The
// item under the media ID goes first: should the rest fail, the run finds
// the old entry stale and moves it, so that no media ID is deleted on an
// access that was superseded, nor kept for ever without an entry.
func (s *Service) recordAccess(ctx context.Context, serverName, mediaID string, prev, now int64) error {
	k := accessKey(serverName, mediaID)
	if err := s.Store.Put(ctx, accessItem{PK: k.PK, SK: k.SK, ServerName: serverName, MediaID: mediaID, AccessedMS: now}); err != nil {
		return fmt.Errorf("record media access of %s: %w", mediaID, err)
	}
	if err := s.Store.Put(ctx, s.accessEntry(serverName, mediaID, now)); err != nil {
		return fmt.Errorf("record media access of %s: %w", mediaID, err)
	}
	if prev != 0 && prev != now {
		old := s.accessEntry(serverName, mediaID, prev)
		if err := s.Store.Delete(ctx, store.Key{PK: old.PK, SK: old.SK}); err != nil {
			return fmt.Errorf("record media access of %s: drop the last: %w", mediaID, err)
		}
	}
	return nil
}

// accessedQuietly is Accessed for the download path: a failure to record
// an access is logged and does not fail the download (the media ID is kept
// by its older access, or its upload, a little less long).
func (s *Service) accessedQuietly(ctx context.Context, m Media) {
	if err := s.Accessed(ctx, m); err != nil {
		slog.Default().LogAttrs(ctx, slog.LevelWarn, "media access not recorded",
			slog.String("server", m.ServerName), slog.String("media_id", m.MediaID), slog.Any("error", err))
	}
}

// uploadedQuietly is Uploaded for the upload path, logged as
// accessedQuietly is: the upload has succeeded.
func (s *Service) uploadedQuietly(ctx context.Context, m Media) {
	if err := s.Uploaded(ctx, m); err != nil {
		slog.Default().LogAttrs(ctx, slog.LevelWarn, "media upload not recorded for retention",
			slog.String("media_id", m.MediaID), slog.Any("error", err))
	}
}

// RetentionRun is what one run did.
type RetentionRun struct {
	// Deleted are the mxc:// URIs of the media IDs deleted (or found
	// deleted otherwise); Moved counts stale access entries moved, Kept
	// quarantined media, which retention never deletes (as Synapse).
	Deleted     []string
	Moved, Kept int
	// More is true when the run stopped at its bound with expired entries
	// left for the next.
	More bool
}

// ApplyRetention deletes the media whose recorded access is older than its
// class's lifetime plus AccessGranularity, oldest first, at most
// RetentionBatch media IDs a run. It is safe to run again or at once:
// what it deleted is gone, a media ID deleted otherwise is only forgotten.
func (s *Service) ApplyRetention(ctx context.Context) (RetentionRun, error) {
	var run RetentionRun
	budget := RetentionBatch
	for _, class := range []string{"local", "remote"} {
		lifetime := s.Retention.lifetime(class == "local")
		if lifetime <= 0 {
			continue
		}
		cutoff := s.now().Add(-lifetime - AccessGranularity).UnixMilli()
		more, err := s.expire(ctx, class, cutoff, &budget, &run)
		if err != nil {
			return run, fmt.Errorf("media retention (%s): %w", class, err)
		}
		run.More = run.More || more
	}
	return run, nil
}

// expire handles class's entries older than cutoff, within budget; more
// reports whether some are left.
func (s *Service) expire(ctx context.Context, class string, cutoff int64, budget *int, run *RetentionRun) (bool, error) {
	cursor := ""
	for {
		if *budget <= 0 || tooLate(ctx) {
			return true, nil
		}
		var page []accessItem
		next, err := s.Store.QueryPage(ctx, store.Query{PK: accessPartition(class), Limit: min(*budget, 50), Cursor: cursor}, &page)
		if err != nil {
			return false, fmt.Errorf("read access entries: %w", err)
		}
		for _, e := range page {
			if e.AccessedMS >= cutoff {
				return false, nil
			}
			if *budget <= 0 || tooLate(ctx) {
				return true, nil
			}
			*budget--
			if err := s.expireOne(ctx, e, run); err != nil {
				return false, err
			}
		}
		if next == "" {
			return false, nil
		}
		cursor = next
	}
}

// expireOne deletes the media ID of the expired entry e, unless a later
// access superseded e (then e moves to it) or the media is protected.
func (s *Service) expireOne(ctx context.Context, e accessItem, run *RetentionRun) error {
	entryKey := store.Key{PK: e.PK, SK: e.SK}
	var p accessItem
	err := s.Store.Get(ctx, accessKey(e.ServerName, e.MediaID), &p)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("read access of %s: %w", e.MediaID, err)
	}
	if err == nil && p.AccessedMS > e.AccessedMS {
		if err := s.Store.Put(ctx, s.accessEntry(e.ServerName, e.MediaID, p.AccessedMS)); err != nil {
			return fmt.Errorf("move access entry of %s: %w", e.MediaID, err)
		}
		if err := s.Store.Delete(ctx, entryKey); err != nil {
			return fmt.Errorf("move access entry of %s: %w", e.MediaID, err)
		}
		run.Moved++
		return nil
	}
	keep, err := s.retained(ctx, e.ServerName, e.MediaID)
	if err != nil {
		return fmt.Errorf("expired media %s: %w", e.MediaID, err)
	}
	// A quarantined ID is kept and no longer tracked: an access after it
	// is released tracks it again. Otherwise DeleteMedia (admin.go) drops
	// the object only with its last reference: media sharing its bytes
	// keeps them; an ID deleted otherwise is only forgotten.
	if keep {
		run.Kept++
	} else if err := s.DeleteMedia(ctx, e.ServerName, e.MediaID); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("delete expired media %s: %w", e.MediaID, err)
	} else {
		run.Deleted = append(run.Deleted, "mxc://"+e.ServerName+"/"+e.MediaID)
	}
	if err := s.Store.DeleteEach(ctx, []store.Key{accessKey(e.ServerName, e.MediaID), entryKey}); err != nil {
		return fmt.Errorf("forget access of %s: %w", e.MediaID, err)
	}
	return nil
}

// retained reports whether retention keeps serverName's mediaID whatever
// its age: Synapse's never deletes quarantined media. The mark is the item's
// quarantined_by (admin.go's Quarantine), local or remote; one GetItem.
func (s *Service) retained(ctx context.Context, serverName, mediaID string) (bool, error) {
	var it struct {
		QuarantinedBy string `dynamodbav:"quarantined_by"`
	}
	err := s.Store.Get(ctx, mediaKey(serverName, mediaID), &it)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("read media %s: %w", mediaID, err)
	}
	return it.QuarantinedBy != "", nil
}

// tooLate reports whether ctx ends too soon for another deletion.
func tooLate(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && time.Until(d) < retentionReserve
}

// HandleRetention is the queue handler of RetentionKind: one bounded run,
// logged with what it did. The body is not read.
func (s *Service) HandleRetention(ctx context.Context, _ []byte) error {
	run, err := s.ApplyRetention(ctx)
	slog.Default().LogAttrs(ctx, slog.LevelInfo, "media retention",
		slog.Int("deleted", len(run.Deleted)), slog.Int("moved", run.Moved), slog.Int("kept", run.Kept), slog.Bool("more", run.More))
	return err
}
