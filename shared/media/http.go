package media

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
)

// Register adds the media endpoints to rt: the authenticated ones behind
// requireAuth (accounts.Service.RequireAuth), the legacy downloads without.
func (s *Service) Register(rt *httpapi.Router, requireAuth func(http.HandlerFunc) http.HandlerFunc) {
	auth := func(f func(http.ResponseWriter, *http.Request) error) http.HandlerFunc {
		return requireAuth(httpapi.Handle(f))
	}
	rt.HandleFunc("GET /_matrix/client/v1/media/config", auth(s.handleConfig))
	rt.HandleFunc("GET /_matrix/media/v3/config", auth(s.handleConfig))
	rt.HandleFunc("POST /_matrix/media/v3/upload", auth(s.handleUpload))
	rt.HandleFunc("POST /_matrix/media/v1/create", auth(s.handleCreate))
	rt.HandleFunc("PUT /_matrix/media/v3/upload/{serverName}/{mediaId}", auth(s.handleUploadTo))
	for _, p := range []string{"/{serverName}/{mediaId}", "/{serverName}/{mediaId}/{fileName}"} {
		rt.HandleFunc("GET /_matrix/client/v1/media/download"+p, auth(s.handleDownload))
		rt.HandleFunc("GET /_matrix/media/v3/download"+p, httpapi.Handle(s.handleLegacyDownload))
	}
	s.registerThumbnails(rt, auth) // thumbnails.go
	s.registerAdmin(rt)            // admin.go
}

// IsUpload reports whether r is an upload, whose body may be as large as
// max_upload_size rather than max_request_size.
func IsUpload(r *http.Request) bool {
	p := r.URL.Path
	// r0 is the legacy prefix older clients (Hydrogen) upload through,
	// which the router serves as v3.
	p = strings.Replace(p, "/_matrix/media/r0/", "/_matrix/media/v3/", 1)
	return (r.Method == http.MethodPost && p == "/_matrix/media/v3/upload") ||
		(r.Method == http.MethodPut && strings.HasPrefix(p, "/_matrix/media/v3/upload/"))
}

// LimitBody is httpapi.LimitBody with maxUpload for uploads and maxRequest
// for every other request.
func LimitBody(maxRequest, maxUpload int64, next http.Handler) http.Handler {
	requests, uploads := httpapi.LimitBody(maxRequest, next), httpapi.LimitBody(maxUpload, next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if IsUpload(r) {
			uploads.ServeHTTP(w, r)
			return
		}
		requests.ServeHTTP(w, r)
	})
}

// handleConfig serves GET /_matrix/client/v1/media/config and the legacy
// /_matrix/media/v3/config.
// https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1mediaconfig
func (s *Service) handleConfig(w http.ResponseWriter, r *http.Request) error {
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"m.upload.size": s.MaxUploadSize})
	return nil
}

// readContent reads an upload's body within MaxUploadSize, its Content-Type
// and its filename query parameter.
func (s *Service) readContent(r *http.Request) (Content, error) {
	tooLarge := httpapi.TooLarge("the upload is over the %d byte limit (m.upload.size)", s.MaxUploadSize)
	if r.ContentLength > s.MaxUploadSize {
		return Content{}, tooLarge
	}
	filename := r.URL.Query().Get("filename")
	if !utf8.ValidString(filename) || len(filename) > 255 || strings.ContainsAny(filename, "\x00\r\n") {
		return Content{}, httpapi.InvalidParam("filename must be UTF-8 text of at most 255 bytes on one line")
	}
	ctype := r.Header.Get("Content-Type")
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	if _, _, err := mime.ParseMediaType(ctype); err != nil || len(ctype) > 255 {
		return Content{}, httpapi.InvalidParam("Content-Type %q is not a media type such as image/png", ctype)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, s.MaxUploadSize+1))
	var maxErr *http.MaxBytesError
	if errors.As(err, &maxErr) || int64(len(body)) > s.MaxUploadSize {
		return Content{}, tooLarge
	}
	if err != nil {
		return Content{}, fmt.Errorf("read upload: %w", err)
	}
	return Content{Body: body, ContentType: ctype, Filename: filename}, nil
}

// handleUpload serves POST /_matrix/media/v3/upload.
// https://spec.matrix.org/v1.16/client-server-api/#post_matrixmediav3upload
func (s *Service) handleUpload(w http.ResponseWriter, r *http.Request) error {
	c, err := s.readContent(r)
	if err != nil {
		return err
	}
	if err := s.allowUpload(r.Context(), accounts.Caller(r.Context()).UserID, int64(len(c.Body))); err != nil {
		return err
	}
	m, err := s.Upload(r.Context(), accounts.Caller(r.Context()).UserID, c)
	if err != nil {
		return matrixError(err)
	}
	s.uploadedQuietly(r.Context(), m) // retention.go
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"content_uri": m.URI()})
	return nil
}

// handleCreate serves POST /_matrix/media/v1/create.
// https://spec.matrix.org/v1.16/client-server-api/#post_matrixmediav1create
func (s *Service) handleCreate(w http.ResponseWriter, r *http.Request) error {
	m, err := s.Create(r.Context(), accounts.Caller(r.Context()).UserID)
	if err != nil {
		return matrixError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"content_uri": m.URI(), "unused_expires_at": m.ExpiresAt.UnixMilli()})
	return nil
}

// handleUploadTo serves PUT /_matrix/media/v3/upload/{serverName}/{mediaId}.
// https://spec.matrix.org/v1.16/client-server-api/#put_matrixmediav3uploadservernamemediaid
func (s *Service) handleUploadTo(w http.ResponseWriter, r *http.Request) error {
	if r.PathValue("serverName") != s.ServerName {
		return httpapi.Forbidden("media of %s cannot be uploaded here", r.PathValue("serverName"))
	}
	c, err := s.readContent(r)
	if err != nil {
		return err
	}
	if err := s.allowUpload(r.Context(), accounts.Caller(r.Context()).UserID, int64(len(c.Body))); err != nil {
		return err
	}
	m, err := s.UploadTo(r.Context(), accounts.Caller(r.Context()).UserID, r.PathValue("mediaId"), c)
	if err != nil {
		return matrixError(err)
	}
	s.uploadedQuietly(r.Context(), m) // retention.go
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{})
	return nil
}

// handleDownload serves GET /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}].
// https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1mediadownloadservernamemediaid
func (s *Service) handleDownload(w http.ResponseWriter, r *http.Request) error {
	return s.download(w, r, false)
}

// handleLegacyDownload serves GET /_matrix/media/v3/download/{serverName}/{mediaId}[/{fileName}],
// without authentication, for media uploaded before media_freeze only: the
// spec (v1.11) deprecates it and recommends the freeze.
// https://spec.matrix.org/v1.16/client-server-api/#get_matrixmediav3downloadservernamemediaid
func (s *Service) handleLegacyDownload(w http.ResponseWriter, r *http.Request) error {
	return s.download(w, r, true)
}

func (s *Service) download(w http.ResponseWriter, r *http.Request, legacy bool) error {
	setSafetyHeaders(w.Header())
	m, err := s.find(r, legacy)
	if err != nil {
		return err
	}
	filename := m.Filename
	if f := r.PathValue("fileName"); f != "" {
		filename = f
	}
	disposition := contentDisposition(m.ContentType, filename)
	if r.URL.Query().Get("allow_redirect") == "true" && m.Size > s.redirectOver() {
		u, err := s.Objects.PresignGet(r.Context(), m.Key(), URLLifetime, m.ContentType, disposition)
		if err != nil {
			return err
		}
		http.Redirect(w, r, u, http.StatusTemporaryRedirect)
		return nil
	}
	body, err := s.Open(r.Context(), m)
	if err != nil {
		return matrixError(err)
	}
	defer body.Close()
	h := w.Header()
	h.Set("Content-Type", m.ContentType)
	h.Set("Content-Disposition", disposition)
	h.Set("Content-Length", strconv.FormatInt(m.Size, 10))
	// A media ID's content never changes; only its owner's client, which
	// sent the token, may keep it.
	h.Set("Cache-Control", "private, max-age=86400, immutable")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		io.Copy(w, body)
	}
	return nil
}

// find reads the media a download or thumbnail names: another server's
// through Remote, a created one waiting up to timeout_ms for its content; a
// legacy request finds only media uploaded before the freeze.
func (s *Service) find(r *http.Request, legacy bool) (Media, error) {
	serverName, mediaID := r.PathValue("serverName"), r.PathValue("mediaId")
	wait := DefaultWait
	if v := r.URL.Query().Get("timeout_ms"); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms < 0 {
			return Media{}, httpapi.InvalidParam("timeout_ms must be a whole number of milliseconds")
		}
		wait = min(time.Duration(ms)*time.Millisecond, MaxWait)
	}
	var m Media
	var err error
	switch {
	case serverName != s.ServerName && s.Remote == nil:
		return Media{}, httpapi.NotFound("media of other servers (%s) is not fetched by this server yet", serverName)
	case serverName != s.ServerName:
		m, err = s.Remote.Media(r.Context(), serverName, mediaID, wait)
	default:
		m, err = s.Wait(r.Context(), serverName, mediaID, wait)
	}
	if err != nil {
		return Media{}, matrixError(err)
	}
	if legacy && !m.Created.Before(s.Freeze) {
		return Media{}, httpapi.NotFound("media uploaded since the freeze of unauthenticated media is served by /_matrix/client/v1/media only")
	}
	s.accessedQuietly(r.Context(), m) // retention.go
	return m, nil
}

// matrixError maps the service's errors to the spec's.
func matrixError(err error) error {
	switch {
	case errors.Is(err, ErrNotFound):
		return httpapi.NotFound("no such media")
	case errors.Is(err, ErrNotYetUploaded):
		return httpapi.Errorf(http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED", "the media has not been uploaded yet")
	case errors.Is(err, ErrUploaded):
		return httpapi.Errorf(http.StatusConflict, "M_CANNOT_OVERWRITE_MEDIA", "the media has been uploaded already")
	case errors.Is(err, ErrNotCreator):
		return httpapi.Forbidden("only the user who created this media ID may upload to it")
	case errors.Is(err, ErrTooManyPending):
		return &httpapi.Error{Status: http.StatusTooManyRequests, Code: "M_LIMIT_EXCEEDED",
			Message: "too many media IDs wait for an upload: upload to them or wait until they expire"}
	case errors.Is(err, ErrNoBucket):
		return httpapi.Errorf(http.StatusNotImplemented, "M_UNKNOWN", "this server keeps no media: its operator has not configured media_bucket")
	}
	return err
}

// safetyCSP is Synapse's policy for media: nothing in a file served from
// the homeserver's origin may run scripts, load anything or reach the
// client's storage, should a browser render it after all.
const safetyCSP = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"

// setSafetyHeaders goes on every media answer, errors included.
func setSafetyHeaders(h http.Header) {
	h.Set("Content-Security-Policy", safetyCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	// Web clients on other origins show images in <img> tags.
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
}

// inlineTypes may be shown in the browser (Content-Disposition: inline):
// none can run script from the server's origin. Synapse's list
// (INLINE_CONTENT_TYPES); HTML, SVG, XML and JavaScript are absent.
var inlineTypes = map[string]bool{
	"text/css": true, "text/plain": true, "text/csv": true,
	"application/json": true, "application/ld+json": true,
	"image/jpeg": true, "image/gif": true, "image/png": true, "image/apng": true, "image/webp": true, "image/avif": true,
	"video/mp4": true, "video/webm": true, "video/ogg": true, "video/quicktime": true,
	"audio/mp4": true, "audio/webm": true, "audio/aac": true, "audio/mpeg": true, "audio/ogg": true,
	"audio/wave": true, "audio/wav": true, "audio/x-wav": true, "audio/x-pn-wav": true, "audio/flac": true, "audio/x-flac": true,
}

// IsInline reports whether contentType may be shown inline.
func IsInline(contentType string) bool {
	t, _, err := mime.ParseMediaType(contentType)
	return err == nil && inlineTypes[strings.ToLower(t)]
}

// contentDisposition is inline for the safe types and attachment for the
// rest, with filename as RFC 6266 puts it: a quoted ASCII filename, or
// filename*=utf-8”<percent-encoded> for any other.
func contentDisposition(contentType, filename string) string {
	d := "attachment"
	if IsInline(contentType) {
		d = "inline"
	}
	if filename == "" {
		return d
	}
	ascii := true
	for _, c := range []byte(filename) {
		if c < 0x20 || c >= 0x7f {
			ascii = false
			break
		}
	}
	if ascii {
		return d + `; filename="` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(filename) + `"`
	}
	return d + "; filename*=utf-8''" + encodeRFC5987(filename)
}

// encodeRFC5987 percent-encodes all but RFC 5987's attr-char.
func encodeRFC5987(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$&+-.^_`|~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
