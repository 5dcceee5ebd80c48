package federation

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strconv"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/media"
)

// handleMediaDownload serves GET /_matrix/federation/v1/media/download/{mediaId}:
// this server's own media only (as allow_remote=false), waiting up to
// timeout_ms for an asynchronous upload; multipart/mixed with the empty
// metadata object and the file, or, past the redirect size, a Location
// part with a presigned URL of the bucket (a Lambda answer carries 6 MB).
// Cost: one GetItem and one S3 GET (or a presign, no call).
// https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1mediadownloadmediaid
func (s *Service) handleMediaDownload(w http.ResponseWriter, r *http.Request) error {
	m, err := s.localMedia(r)
	if err != nil {
		return err
	}
	if m.Size > s.Media.RedirectSize() {
		u, err := s.Media.Objects.PresignGet(r.Context(), m.Key(), media.URLLifetime, m.ContentType, media.ContentDisposition(m.ContentType, m.Filename))
		if err != nil {
			return fmt.Errorf("media download: presign: %w", err)
		}
		return writeMultipart(w, textproto.MIMEHeader{"Location": {u}}, nil)
	}
	body, err := s.Media.Open(r.Context(), m)
	if err != nil {
		return mediaError(err)
	}
	defer body.Close()
	return writeMultipart(w, textproto.MIMEHeader{
		"Content-Type":        {m.ContentType},
		"Content-Disposition": {media.ContentDisposition(m.ContentType, m.Filename)},
	}, body)
}

// handleMediaThumbnail serves GET /_matrix/federation/v1/media/thumbnail/{mediaId}
// with the media service's thumbnailer; without one, the original file,
// which the spec lets a server answer ("may be larger than the size
// specified") until thumbnails are made here.
// https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1mediathumbnailmediaid
func (s *Service) handleMediaThumbnail(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	req := media.ThumbnailRequest{Method: q.Get("method"), Animated: q.Get("animated") == "true"}
	var err1, err2 error
	req.Width, err1 = strconv.Atoi(q.Get("width"))
	req.Height, err2 = strconv.Atoi(q.Get("height"))
	if err1 != nil || err2 != nil || req.Width <= 0 || req.Height <= 0 {
		return httpapi.InvalidParam("width and height must be positive whole numbers")
	}
	if req.Method == "" {
		req.Method = "scale"
	}
	if req.Method != "scale" && req.Method != "crop" {
		return httpapi.InvalidParam("method must be scale or crop")
	}
	m, err := s.localMedia(r)
	if err != nil {
		return err
	}
	if s.Media.Thumbnailer == nil {
		return s.handleMediaDownload(w, r)
	}
	body, err := s.Media.Open(r.Context(), m)
	if err != nil {
		return mediaError(err)
	}
	content, err := io.ReadAll(body)
	body.Close()
	if err != nil {
		return fmt.Errorf("media thumbnail: read %s: %w", m.MediaID, err)
	}
	thumb, ctype, err := s.Media.Thumbnailer.Thumbnail(r.Context(), m, content, req)
	if errors.Is(err, media.ErrNotFound) {
		return httpapi.Errorf(http.StatusBadRequest, "M_UNKNOWN", "cannot generate thumbnails for the requested content")
	}
	if err != nil {
		return mediaError(err)
	}
	return writeMultipart(w, textproto.MIMEHeader{
		"Content-Type":        {ctype},
		"Content-Disposition": {media.ContentDisposition(ctype, "thumbnail")},
	}, bytes.NewReader(thumb))
}

// localMedia reads the {mediaId} of this server that a request names,
// waiting up to its timeout_ms (at most media.MaxWait) for the content of
// a created ID.
func (s *Service) localMedia(r *http.Request) (media.Media, error) {
	if s.Media == nil {
		return media.Media{}, httpapi.NotFound("this server keeps no media")
	}
	wait := media.DefaultWait
	if v := r.URL.Query().Get("timeout_ms"); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms < 0 {
			return media.Media{}, httpapi.InvalidParam("timeout_ms must be a whole number of milliseconds")
		}
		wait = min(time.Duration(ms)*time.Millisecond, media.MaxWait)
	}
	m, err := s.Media.Wait(r.Context(), s.ServerName, r.PathValue("mediaId"), wait)
	if err != nil {
		return media.Media{}, mediaError(err)
	}
	return m, nil
}

// mediaError maps the media service's errors to the spec's.
func mediaError(err error) error {
	switch {
	case errors.Is(err, media.ErrNotFound):
		return httpapi.NotFound("no such media")
	case errors.Is(err, media.ErrNotYetUploaded):
		return httpapi.Errorf(http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED", "the media has not been uploaded yet")
	}
	return err
}

// writeMultipart answers 200 multipart/mixed with the two parts the spec
// shows: the metadata, {} as of v1.16, and the file (body) or a Location.
func writeMultipart(w http.ResponseWriter, file textproto.MIMEHeader, body io.Reader) error {
	mw := multipart.NewWriter(w)
	w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
	w.WriteHeader(http.StatusOK)
	meta, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
	if err != nil {
		return nil // the client is gone; the status is sent
	}
	meta.Write([]byte("{}"))
	part, err := mw.CreatePart(file)
	if err != nil {
		return nil
	}
	if body != nil {
		io.Copy(part, body)
	}
	mw.Close()
	return nil
}
