package media

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/objects"
	"github.com/cirrus-matrix/cirrus/shared/store"
	"github.com/cirrus-matrix/cirrus/shared/thumbnail"
)

// Thumbnails are made on demand, as Synapse's dynamic_thumbnails does, but
// only at the sizes thumbnail.Pick chooses among thumbnail.DefaultSizes (the
// spec's recommended ones): a media ID has at most ten thumbnails (five
// sizes, still or animated), each made once. A Lambda function has no disk
// to keep them on between requests, so each goes to the bucket,
// content-addressed like the originals, with an item beside the media ID's
// naming it: a second request costs that GetItem and one S3 read, and never
// reads the original or decodes an image again.

// ImageThumbnailer is the Thumbnailer of shared/thumbnail, pure Go, so
// that it runs in the Lambda binaries. It makes the thumbnail at exactly
// the box it is asked for; the service picks the box.
type ImageThumbnailer struct{}

// Thumbnail makes a thumbnail of m, whose content is content, at req's box.
// It returns ErrNotFound, wrapping the thumbnail package's error, for
// content it cannot thumbnail (not a PNG, JPEG, GIF or WebP image, or not
// decodable), and thumbnail.ErrTooLarge for images over thumbnail.MaxPixels.
func (ImageThumbnailer) Thumbnail(ctx context.Context, m Media, content []byte, req ThumbnailRequest) ([]byte, string, error) {
	body, ctype, err := thumbnail.Make(content, m.ContentType, thumbnail.Size{Width: req.Width, Height: req.Height, Method: req.Method}, req.Animated)
	if errors.Is(err, thumbnail.ErrUnsupported) || errors.Is(err, thumbnail.ErrInvalid) {
		return nil, "", fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	if err != nil {
		return nil, "", fmt.Errorf("thumbnail of %s: %w", m.MediaID, err)
	}
	return body, ctype, nil
}

var _ Thumbnailer = ImageThumbnailer{}

// MaxThumbnailSource is the largest file the service reads to thumbnail:
// it holds the file, and the decoded image, in the function's memory. Local
// uploads are under max_upload_size anyway; this bounds other servers'.
const MaxThumbnailSource = 32 << 20

// Refusals a thumbnail item may record, so that media that cannot be
// thumbnailed is read and decoded once, not at every request.
const (
	refusedUnsupported = "unsupported"
	refusedTooLarge    = "too_large"
)

// thumbItem is one thumbnail of a media ID (docs/storage.md, "Thumbnails"),
// in the media ID's partition, so that whatever deletes a media ID finds
// its thumbnails with one Query. Either it names an object, or it records
// why no thumbnail can be made at that box.
type thumbItem struct {
	PK          string `dynamodbav:"pk"`
	SK          string `dynamodbav:"sk"`
	ContentType string `dynamodbav:"content_type,omitempty"`
	Size        int64  `dynamodbav:"size,omitempty"`
	SHA256      string `dynamodbav:"sha256,omitempty"`
	Object      string `dynamodbav:"object"`
	Refused     string `dynamodbav:"refused,omitempty"`
	CreatedMS   int64  `dynamodbav:"created_ms"`
}

// thumbKey is the item of m's thumbnail at box s, still or animated.
func thumbKey(m Media, s thumbnail.Size, animated bool) store.Key {
	kind := "still"
	if animated {
		kind = "animated"
	}
	return store.Key{PK: mediaKey(m.ServerName, m.MediaID).PK, SK: fmt.Sprintf("thumb|%dx%d|%s|%s", s.Width, s.Height, s.Method, kind)}
}

// thumbObjectKey is where a thumbnail whose SHA-256 is sum goes: beside the
// original. Local media's under content/sha256/, so that a thumbnail that
// is its original (an image already within the box) is the same object;
// other servers' under remote/, which the bucket's lifecycle rule expires
// as it expires their originals.
func thumbObjectKey(m Media, sum string) string {
	if strings.HasPrefix(m.Key(), "remote/") {
		return "remote/thumbnails/sha256/" + sum
	}
	return ObjectKey(sum)
}

func (s *Service) registerThumbnails(rt *httpapi.Router, auth func(func(http.ResponseWriter, *http.Request) error) http.HandlerFunc) {
	rt.HandleFunc("GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}", auth(s.handleThumbnail))
	rt.HandleFunc("GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}", httpapi.Handle(s.handleLegacyThumbnail))
}

// handleThumbnail serves GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}.
// https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1mediathumbnailservernamemediaid
func (s *Service) handleThumbnail(w http.ResponseWriter, r *http.Request) error {
	return s.thumbnail(w, r, false)
}

// handleLegacyThumbnail serves GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId},
// without authentication, frozen as the legacy download is.
// https://spec.matrix.org/v1.16/client-server-api/#get_matrixmediav3thumbnailservernamemediaid
func (s *Service) handleLegacyThumbnail(w http.ResponseWriter, r *http.Request) error {
	return s.thumbnail(w, r, true)
}

// parseThumbnailRequest reads width, height, method and animated.
func parseThumbnailRequest(r *http.Request) (ThumbnailRequest, error) {
	q := r.URL.Query()
	req := ThumbnailRequest{Method: q.Get("method")}
	var err1, err2 error
	req.Width, err1 = strconv.Atoi(q.Get("width"))
	req.Height, err2 = strconv.Atoi(q.Get("height"))
	if err1 != nil || err2 != nil || req.Width <= 0 || req.Height <= 0 {
		return req, httpapi.InvalidParam("width and height must be positive whole numbers")
	}
	if req.Method == "" {
		req.Method = thumbnail.MethodScale
	}
	if req.Method != thumbnail.MethodScale && req.Method != thumbnail.MethodCrop {
		return req, httpapi.InvalidParam("method must be scale or crop")
	}
	if v := q.Get("animated"); v != "" {
		a, err := strconv.ParseBool(v)
		if err != nil {
			return req, httpapi.InvalidParam("animated must be true or false")
		}
		req.Animated = a
	}
	return req, nil
}

// cannotThumbnail is the answer for media no thumbnail can be made of. The
// spec's 400 M_UNKNOWN ("the server cannot thumbnail the content"), which
// Synapse answers too ("Cannot find any thumbnails for the requested
// media", or "Failed to generate thumbnail." with dynamic thumbnails).
// Neither returns the original then: the spec's "return the original
// content" is for images smaller than the box, which thumbnail.Make does
// by returning the source as its own thumbnail.
func cannotThumbnail(m Media) error {
	return httpapi.Errorf(http.StatusBadRequest, "M_UNKNOWN", "cannot generate thumbnails of this media (%s): only PNG, JPEG, GIF and WebP images are thumbnailed", m.ContentType)
}

// tooLargeToThumbnail is the spec's 413 M_TOO_LARGE for local content and
// 502 M_TOO_LARGE for other servers'.
func (s *Service) tooLargeToThumbnail(m Media) error {
	status := http.StatusRequestEntityTooLarge
	if m.ServerName != s.ServerName {
		status = http.StatusBadGateway
	}
	return httpapi.Errorf(status, "M_TOO_LARGE", "the content is too large to thumbnail")
}

// thumbnailable reports whether a declared type may be an image Make takes:
// any image type, or none. Make decides among them by the bytes; the rest
// (video, PDF, HTML) are refused before the original is read.
func thumbnailable(contentType string) bool {
	if contentType == "" {
		return true
	}
	t, _, err := mime.ParseMediaType(contentType)
	t = strings.ToLower(t)
	return err == nil && (strings.HasPrefix(t, "image/") || t == "application/octet-stream")
}

func (s *Service) thumbnail(w http.ResponseWriter, r *http.Request, legacy bool) error {
	setSafetyHeaders(w.Header())
	req, err := parseThumbnailRequest(r)
	if err != nil {
		return err
	}
	m, err := s.find(r, legacy)
	if err != nil {
		return err
	}
	if s.Thumbnailer == nil {
		return httpapi.NotFound("thumbnails are not made by this server")
	}
	if !thumbnailable(m.ContentType) {
		return cannotThumbnail(m)
	}
	if m.Size > MaxThumbnailSource {
		return s.tooLargeToThumbnail(m)
	}
	box := thumbnail.Pick(thumbnail.DefaultSizes, req.Width, req.Height, req.Method)
	body, ctype, err := s.cachedThumbnail(r.Context(), m, box, req.Animated)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", ctype)
	// The spec (v1.12) wants inline with a file name; every type Make
	// gives is among the inline ones.
	h.Set("Content-Disposition", contentDisposition(ctype, "thumbnail"+extension(ctype)))
	h.Set("Content-Length", strconv.Itoa(len(body)))
	// Deterministic for a media ID and a box; only the client that sent the
	// token may keep it.
	h.Set("Cache-Control", "private, max-age=86400, immutable")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
	return nil
}

func extension(ctype string) string {
	switch ctype {
	case "image/jpeg":
		return ".jpg"
	case "image/png":
		return ".png"
	case "image/gif":
		return ".gif"
	case "image/webp":
		return ".webp"
	}
	return ""
}

// cachedThumbnail returns m's thumbnail at box from the cache, or makes it,
// stores it and records it. A thumbnail whose object has gone (other
// servers' expire with the lifecycle rule) is made again.
func (s *Service) cachedThumbnail(ctx context.Context, m Media, box thumbnail.Size, animated bool) ([]byte, string, error) {
	key := thumbKey(m, box, animated)
	var it thumbItem
	switch err := s.Store.Get(ctx, key, &it); {
	case err == nil && it.Refused == refusedTooLarge:
		return nil, "", s.tooLargeToThumbnail(m)
	case err == nil && it.Refused != "":
		return nil, "", cannotThumbnail(m)
	case err == nil:
		body, err := s.readObject(ctx, it.Object)
		if err == nil {
			return body, it.ContentType, nil
		}
		if !errors.Is(err, objects.ErrNotFound) {
			return nil, "", fmt.Errorf("thumbnail %s %v: %w", m.MediaID, box, err)
		}
	case !errors.Is(err, store.ErrNotFound):
		return nil, "", fmt.Errorf("thumbnail %s %v: %w", m.MediaID, box, err)
	}

	original, err := s.Open(ctx, m)
	if err != nil {
		return nil, "", matrixError(err)
	}
	content, err := io.ReadAll(io.LimitReader(original, MaxThumbnailSource+1))
	original.Close()
	if err != nil {
		return nil, "", fmt.Errorf("thumbnail %s: read original: %w", m.MediaID, err)
	}
	if len(content) > MaxThumbnailSource {
		return nil, "", s.tooLargeToThumbnail(m)
	}
	it = thumbItem{PK: key.PK, SK: key.SK, CreatedMS: s.now().UnixMilli()}
	body, ctype, err := s.Thumbnailer.Thumbnail(ctx, m, content, ThumbnailRequest{Width: box.Width, Height: box.Height, Method: box.Method, Animated: animated})
	switch {
	case errors.Is(err, thumbnail.ErrTooLarge):
		it.Refused = refusedTooLarge
		return nil, "", s.refuse(ctx, it, s.tooLargeToThumbnail(m))
	case errors.Is(err, ErrNotFound):
		it.Refused = refusedUnsupported
		return nil, "", s.refuse(ctx, it, cannotThumbnail(m))
	case err != nil:
		return nil, "", err
	}
	sum := sha256.Sum256(body)
	it.SHA256 = hex.EncodeToString(sum[:])
	it.Object, it.ContentType, it.Size = thumbObjectKey(m, it.SHA256), ctype, int64(len(body))
	if err := s.putObjectOnce(ctx, it.Object, body); err != nil {
		return nil, "", fmt.Errorf("thumbnail %s %v: %w", m.MediaID, box, err)
	}
	// Unconditional: two requests racing write the same item for the same
	// bytes.
	if err := s.Store.Put(ctx, it); err != nil {
		return nil, "", fmt.Errorf("thumbnail %s %v: record: %w", m.MediaID, box, err)
	}
	return body, ctype, nil
}

// refuse records a refusal, so that the next request answers it without
// reading the original, and returns answer.
func (s *Service) refuse(ctx context.Context, it thumbItem, answer error) error {
	if err := s.Store.Put(ctx, it); err != nil {
		return fmt.Errorf("thumbnail: record refusal: %w", err)
	}
	return answer
}

func (s *Service) readObject(ctx context.Context, key string) ([]byte, error) {
	if s.Objects == nil {
		return nil, objects.ErrNotFound
	}
	body, _, err := s.Objects.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	return io.ReadAll(body)
}

// putObjectOnce stores body at key unless it is there already (a
// thumbnail identical to its original, or to another media ID's).
func (s *Service) putObjectOnce(ctx context.Context, key string, body []byte) error {
	if s.Objects == nil {
		return ErrNoBucket
	}
	if _, err := s.Objects.Head(ctx, key); err == nil {
		return nil
	} else if !errors.Is(err, objects.ErrNotFound) {
		return fmt.Errorf("store thumbnail: %w", err)
	}
	if err := s.Objects.PutObject(ctx, key, body, objects.Meta{ContentType: "application/octet-stream",
		CacheControl: "private, max-age=31536000, immutable"}); err != nil {
		return fmt.Errorf("store thumbnail: %w", err)
	}
	return nil
}
