// Package media is the content repository: files uploaded by this server's
// users, kept in an S3 bucket by the SHA-256 of their content (identical
// files are stored once), with one item per media ID in the table (who
// uploaded it, when, its size, type and name). It serves the spec's upload,
// asynchronous upload (MSC2246, spec v1.7), download and config endpoints,
// authenticated (spec v1.11) and legacy.
//
// What goes through a Lambda function is bounded by its 6 MB payload:
// uploads by config.MaxLambdaUpload, downloads by a redirect to a presigned
// URL of the bucket when the client allows it (allow_redirect=true).
//
// Other servers' media (Remote) and thumbnails (Thumbnailer) plug in
// through interfaces; nil, they answer 404 M_NOT_FOUND.
package media

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/objects"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Errors of the service, which the HTTP edge maps to Matrix errors.
var (
	// ErrNotFound is a media ID nobody uploaded or created, or one whose
	// unused ID expired.
	ErrNotFound = errors.New("media not found")
	// ErrNotYetUploaded is a created media ID whose content has not come.
	ErrNotYetUploaded = errors.New("media not yet uploaded")
	// ErrUploaded is an upload to a media ID that already has content.
	ErrUploaded = errors.New("media already uploaded")
	// ErrNotCreator is an upload to a media ID another user created.
	ErrNotCreator = errors.New("media created by another user")
	// ErrTooManyPending is a create past max_pending_media_uploads.
	ErrTooManyPending = errors.New("too many pending uploads")
	// ErrNoBucket is an upload to a server without a media bucket.
	ErrNoBucket = errors.New("no media bucket configured (media_bucket)")
)

// Objects is the bucket files are kept in (an *objects.Bucket).
type Objects interface {
	PutObject(ctx context.Context, key string, body []byte, m objects.Meta) error
	Head(ctx context.Context, key string) (objects.Meta, error)
	Get(ctx context.Context, key string) (io.ReadCloser, objects.Meta, error)
	PresignGet(ctx context.Context, key string, ttl time.Duration, contentType, disposition string) (string, error)
}

var _ Objects = (*objects.Bucket)(nil)

// Remote fetches other servers' media (federation's task). Media returns
// the metadata of serverName's mediaID once its content is in the bucket
// under m.Key() (a cache key under remote/, which the stack's lifecycle
// rule expires, in m.Object), fetching it first when it is not, waiting at
// most timeout; ErrNotFound when the server has no such media.
type Remote interface {
	Media(ctx context.Context, serverName, mediaID string, timeout time.Duration) (Media, error)
}

// ThumbnailRequest is what a client asked of a thumbnail.
type ThumbnailRequest struct {
	Width, Height int
	// Method is "scale" or "crop".
	Method   string
	Animated bool
}

// Thumbnailer makes thumbnails (shared/thumbnail's task). Thumbnail returns
// the thumbnail of m, whose content is content, as its bytes and content
// type; ErrNotFound when it cannot make one of that media.
type Thumbnailer interface {
	Thumbnail(ctx context.Context, m Media, content []byte, req ThumbnailRequest) (body []byte, contentType string, err error)
}

// Service is the content repository.
type Service struct {
	Store *store.Store
	// Objects is the media bucket; nil, uploads answer that none is
	// configured and downloads find nothing.
	Objects    Objects
	ServerName string
	// MaxUploadSize is the largest upload in bytes (max_upload_size).
	MaxUploadSize int64
	// Freeze is the time from which uploads are served only by the
	// authenticated endpoints (media_freeze); the zero time freezes all.
	Freeze time.Time
	// MaxPending bounds a user's created IDs not uploaded yet;
	// UnusedExpiration is how long such an ID lasts.
	MaxPending       int
	UnusedExpiration time.Duration
	// RedirectOver is the size above which a download that allows it is
	// redirected to the bucket; RedirectThreshold when 0.
	RedirectOver int64
	// Remote fetches other servers' media; nil, their media is not found.
	Remote Remote
	// Thumbnailer makes thumbnails; nil, none are served.
	Thumbnailer Thumbnailer
	// Retention deletes media unused for its lifetime (retention.go);
	// the zero value keeps all and records no accesses.
	Retention Retention
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// PollInterval is how often a download waiting for an asynchronous
	// upload reads its item (one strongly consistent read each);
	// DefaultPollInterval when 0.
	PollInterval time.Duration
	// Waiting, when set, is told that a download starts waiting for an
	// upload: for tests, which assert order rather than time.
	Waiting func(serverName, mediaID string)
	// Admin serves Synapse's admin API for media (admin.go); Limits bound
	// each user's uploads (limits.go).
	Admin  Admin
	Limits Limits
}

// RedirectThreshold is the default RedirectOver: smaller files (avatars,
// most images) come in one round trip; larger ones straight from S3,
// sparing the function the time to relay them.
const RedirectThreshold = 1 << 20

// URLLifetime is how long a presigned download URL works.
const URLLifetime = 5 * time.Minute

// DefaultPollInterval is PollInterval's default.
const DefaultPollInterval = 500 * time.Millisecond

// Download waits: the spec's default timeout_ms, and the most a request
// may wait, under API Gateway's 30 s.
const (
	DefaultWait = 20 * time.Second
	MaxWait     = 25 * time.Second
)

// Media is one media ID's metadata.
type Media struct {
	ServerName, MediaID string
	// UserID is the uploader (or the creator of an ID not uploaded yet).
	UserID      string
	Size        int64
	ContentType string
	Filename    string
	// SHA256 is the hex SHA-256 of the content, which names its object.
	SHA256 string
	// Object is the bucket key of the content when it is not
	// ObjectKey(SHA256): other servers' media cached under remote/.
	Object string
	// Created is when the ID was made; Uploaded when the content came
	// (the zero time while pending).
	Created, Uploaded time.Time
	// ExpiresAt is when a pending ID lapses unused.
	ExpiresAt time.Time
}

// Pending reports whether m awaits its content.
func (m Media) Pending() bool { return m.Uploaded.IsZero() }

// Key is the bucket key of m's content.
func (m Media) Key() string {
	if m.Object != "" {
		return m.Object
	}
	return ObjectKey(m.SHA256)
}

// URI is m's mxc:// URI.
func (m Media) URI() string { return "mxc://" + m.ServerName + "/" + m.MediaID }

// ObjectKey is the bucket key of content whose SHA-256 is sum (hex):
// content-addressed, so that identical files are stored once.
func ObjectKey(sum string) string { return "content/sha256/" + sum }

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Service) pollInterval() time.Duration {
	if s.PollInterval > 0 {
		return s.PollInterval
	}
	return DefaultPollInterval
}

func (s *Service) redirectOver() int64 {
	if s.RedirectOver > 0 {
		return s.RedirectOver
	}
	return RedirectThreshold
}

// newMediaID is 26 random base32 characters (A-Z, 2-7), 130 bits:
// unguessable, which the legacy unauthenticated download relies on, and
// nothing a URL or a key needs to escape.
func newMediaID() string { return rand.Text() }

// validMediaID reports whether id could be one: [A-Za-z0-9_-], 1 to 255
// characters.
func validMediaID(id string) bool {
	if id == "" || len(id) > 255 {
		return false
	}
	for _, c := range []byte(id) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
