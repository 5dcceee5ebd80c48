package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/objects"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// item is one media ID (docs/storage.md, "Media"). A pending one (created,
// not uploaded) carries expires_at and sits in its creator's gsi1 partition
// of pending IDs; an uploaded one in the uploader's partition of media.
type item struct {
	PK          string `dynamodbav:"pk"`
	SK          string `dynamodbav:"sk"`
	ServerName  string `dynamodbav:"server"`
	MediaID     string `dynamodbav:"media_id"`
	UserID      string `dynamodbav:"user"`
	State       string `dynamodbav:"state"`
	Size        int64  `dynamodbav:"size,omitempty"`
	ContentType string `dynamodbav:"content_type,omitempty"`
	Filename    string `dynamodbav:"filename,omitempty"`
	SHA256      string `dynamodbav:"sha256,omitempty"`
	Object      string `dynamodbav:"object,omitempty"`
	CreatedMS   int64  `dynamodbav:"created_ms"`
	UploadedMS  int64  `dynamodbav:"uploaded_ms,omitempty"`
	ExpiresAt   int64  `dynamodbav:"expires_at,omitempty"`
	GSI1PK      string `dynamodbav:"gsi1pk,omitempty"`
	GSI1SK      string `dynamodbav:"gsi1sk,omitempty"`
	// QuarantinedBy is the admin who quarantined the ID (admin.go): it
	// then reads as absent to downloads and thumbnails.
	QuarantinedBy string `dynamodbav:"quarantined_by,omitempty"`
}

// Item states: a created ID awaiting content, and one that has it.
const (
	statePending  = "pending"
	stateUploaded = "uploaded"
)

func mediaKey(serverName, mediaID string) store.Key {
	return store.Key{PK: "media|" + serverName + "|" + mediaID, SK: "media"}
}

// pendingPartition is a user's gsi1 partition of created IDs not uploaded
// yet; userPartition of their uploads, newest last (admin listing, quotas).
func pendingPartition(userID string) string { return "mediapending|" + userID }
func userPartition(userID string) string    { return "mediauser|" + userID }

func (it item) media() Media {
	m := Media{ServerName: it.ServerName, MediaID: it.MediaID, UserID: it.UserID, Size: it.Size,
		ContentType: it.ContentType, Filename: it.Filename, SHA256: it.SHA256, Object: it.Object, Created: time.UnixMilli(it.CreatedMS)}
	if it.UploadedMS != 0 {
		m.Uploaded = time.UnixMilli(it.UploadedMS)
	}
	if it.ExpiresAt != 0 {
		m.ExpiresAt = time.Unix(it.ExpiresAt, 0)
	}
	return m
}

func uploadedItem(m Media) item {
	return item{
		PK: mediaKey(m.ServerName, m.MediaID).PK, SK: "media",
		ServerName: m.ServerName, MediaID: m.MediaID, UserID: m.UserID, State: stateUploaded,
		Size: m.Size, ContentType: m.ContentType, Filename: m.Filename, SHA256: m.SHA256, Object: m.Object,
		CreatedMS: m.Created.UnixMilli(), UploadedMS: m.Uploaded.UnixMilli(),
		GSI1PK: userPartition(m.UserID), GSI1SK: fmt.Sprintf("%013d|%s", m.Uploaded.UnixMilli(), m.MediaID),
	}
}

// Content is an upload's body and what its uploader said of it.
type Content struct {
	Body        []byte
	ContentType string
	Filename    string
}

// Upload stores c as a new media ID of userID's (POST /upload).
func (s *Service) Upload(ctx context.Context, userID string, c Content) (Media, error) {
	sum := contentSum(c.Body)
	now := s.now()
	m := Media{ServerName: s.ServerName, MediaID: newMediaID(), UserID: userID, Size: int64(len(c.Body)),
		ContentType: c.ContentType, Filename: c.Filename, SHA256: sum, Created: now, Uploaded: now}
	if err := s.storeContent(ctx, c.Body, sum, store.CreateOp(uploadedItem(m))); err != nil {
		return Media{}, fmt.Errorf("upload: store media %s: %w", m.MediaID, err)
	}
	return m, nil
}

// Create makes a media ID for userID to upload to later (MSC2246): it lasts
// UnusedExpiration unless content comes. ErrTooManyPending past MaxPending.
func (s *Service) Create(ctx context.Context, userID string) (Media, error) {
	if s.Objects == nil {
		return Media{}, ErrNoBucket
	}
	if s.MaxPending > 0 {
		// The index is eventually consistent: a burst of creates may pass
		// the bound by the few in flight, which is all it is for.
		var pending []item
		if _, err := s.Store.QueryPage(ctx, store.Query{PK: pendingPartition(userID), Index: "gsi1", Limit: s.MaxPending + 1}, &pending); err != nil {
			return Media{}, fmt.Errorf("create media: count pending: %w", err)
		}
		live := 0
		for _, it := range pending {
			if it.ExpiresAt > s.now().Unix() {
				live++
			}
		}
		if live >= s.MaxPending {
			return Media{}, ErrTooManyPending
		}
	}
	now := s.now()
	m := Media{ServerName: s.ServerName, MediaID: newMediaID(), UserID: userID, Created: now,
		ExpiresAt: now.Add(s.UnusedExpiration).Truncate(time.Second)}
	it := item{PK: mediaKey(m.ServerName, m.MediaID).PK, SK: "media", ServerName: m.ServerName, MediaID: m.MediaID,
		UserID: userID, State: statePending, CreatedMS: now.UnixMilli(), ExpiresAt: m.ExpiresAt.Unix(),
		GSI1PK: pendingPartition(userID), GSI1SK: fmt.Sprintf("%013d|%s", now.UnixMilli(), m.MediaID)}
	if err := s.Store.Create(ctx, it); err != nil {
		return Media{}, fmt.Errorf("create media %s: %w", m.MediaID, err)
	}
	return m, nil
}

// UploadTo gives the created ID mediaID its content (PUT /upload/{serverName}/{mediaId}):
// ErrNotFound for an unknown or lapsed ID, ErrNotCreator when userID did
// not create it, ErrUploaded when it has content already, also when two
// uploads race (the conditional write decides).
func (s *Service) UploadTo(ctx context.Context, userID, mediaID string, c Content) (Media, error) {
	m, err := s.Get(ctx, s.ServerName, mediaID)
	if err != nil {
		return Media{}, err
	}
	if m.UserID != userID {
		return Media{}, ErrNotCreator
	}
	if !m.Pending() {
		return Media{}, ErrUploaded
	}
	sum := contentSum(c.Body)
	m.Size, m.ContentType, m.Filename, m.SHA256, m.Uploaded, m.ExpiresAt = int64(len(c.Body)), c.ContentType, c.Filename, sum, s.now(), time.Time{}
	if err := s.storeContent(ctx, c.Body, sum, store.PutIfOp(uploadedItem(m), "state", statePending)); errors.Is(err, store.ErrConflict) {
		return Media{}, ErrUploaded
	} else if err != nil {
		return Media{}, fmt.Errorf("upload to %s: %w", mediaID, err)
	}
	return m, nil
}

// Get reads the metadata of serverName's mediaID as this server holds it:
// ErrNotFound when it holds none (a lapsed pending ID included).
func (s *Service) Get(ctx context.Context, serverName, mediaID string) (Media, error) {
	if !validMediaID(mediaID) {
		return Media{}, ErrNotFound
	}
	var it item
	if err := s.Store.Get(ctx, mediaKey(serverName, mediaID), &it); errors.Is(err, store.ErrNotFound) {
		return Media{}, ErrNotFound
	} else if err != nil {
		return Media{}, fmt.Errorf("get media %s: %w", mediaID, err)
	}
	// The one read of every download and thumbnail: quarantine hides here.
	if it.QuarantinedBy != "" {
		return Media{}, ErrNotFound
	}
	return it.media(), nil
}

// Wait reads serverName's mediaID until it has content or timeout has
// passed (ErrNotYetUploaded), polling every PollInterval.
func (s *Service) Wait(ctx context.Context, serverName, mediaID string, timeout time.Duration) (Media, error) {
	m, err := s.Get(ctx, serverName, mediaID)
	if err != nil || !m.Pending() {
		return m, err
	}
	if s.Waiting != nil {
		s.Waiting(serverName, mediaID)
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(s.pollInterval())
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return Media{}, ctx.Err()
		case <-deadline.C:
			return Media{}, ErrNotYetUploaded
		case <-tick.C:
		}
		if m, err = s.Get(ctx, serverName, mediaID); err != nil || !m.Pending() {
			return m, err
		}
	}
}

// Open streams m's content from the bucket; the caller closes it.
func (s *Service) Open(ctx context.Context, m Media) (io.ReadCloser, error) {
	if s.Objects == nil {
		return nil, ErrNotFound
	}
	body, _, err := s.Objects.Get(ctx, m.Key())
	if errors.Is(err, objects.ErrNotFound) {
		return nil, fmt.Errorf("content of %s: %w", m.MediaID, ErrNotFound)
	}
	return body, err
}
