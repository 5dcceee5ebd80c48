package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"
)

// The media workloads: an upload of a megabyte, its authenticated download,
// and a 320x240 thumbnail of a photo-like JPEG of a megabyte, the first
// request for a media ID (the server makes the thumbnail) and later ones
// (it has it). Both servers are asked on the same paths: uploads on
// POST /_matrix/media/v3/upload, the only upload path either has;
// downloads and thumbnails on the authenticated /_matrix/client/v1/media/
// paths (spec v1.11), which Dendrite v0.13.8 serves too, so that neither
// is measured on the frozen legacy paths.
const (
	mediaSize = 1 << 20
	// Requests per server, at most (-n caps them too): each upload stores
	// another megabyte, each first thumbnail uploads one first.
	uploadRequests         = 100
	downloadRequests       = 200
	thumbnailFirstRequests = 40
	thumbnailRequests      = 200

	thumbW, thumbH = 320, 240
	// mediaTimeout bounds one media request, an upload's included.
	mediaTimeout = 2 * time.Minute
)

// mediaEnv turns off Cirrus's limit on uploads per user (rc_media_upload,
// 50 at once by default), as the bench turns off Dendrite's rate limits:
// the upload workloads send hundreds a minute as one user.
var mediaEnv = []string{"CIRRUS_RC_MEDIA_UPLOAD_PER_SECOND=0", "CIRRUS_RC_MEDIA_UPLOAD_BURST_COUNT=0"}

// mediaFixture is a server's media for the download and cached-thumbnail
// workloads, uploaded once.
type mediaFixture struct {
	once        sync.Once
	err         error
	download    string // the mxc server/ID of a megabyte of bytes
	thumbSource string // of the JPEG, its thumbnail asked for once
}

var (
	fixtures sync.Map // *server → *mediaFixture
	uploads  = sync.OnceValue(func() *varied { return newVaried(randomBytes(mediaSize)) })
	photos   = sync.OnceValue(func() *varied { return newVaried(photoJPEG()) })
)

// mediaWorkload is measured after the room workloads, on the same servers.
func mediaWorkload() []endpoint {
	return []endpoint{
		{
			Label: "media upload 1 MB", Path: "/_matrix/media/v3/upload", Auth: true, Concurrency: 1, MaxRequests: uploadRequests,
			Run: func(ctx context.Context, s *server) (string, time.Duration, error) {
				id, took, _, err := upload(ctx, s, uploads().next(), "application/octet-stream")
				return id, took, err
			},
			Describe: fmt.Sprintf("POST /_matrix/media/v3/upload of %d bytes of application/octet-stream, different bytes every request (Cirrus stores content by its SHA-256), one at a time", mediaSize),
		},
		{
			Label: "media download 1 MB", Path: "/_matrix/client/v1/media/download/{server}/{mediaId}", Auth: true, MaxRequests: downloadRequests,
			Setup: ensureMedia,
			Run: func(ctx context.Context, s *server) (string, time.Duration, error) {
				f := fixture(s)
				return mediaGet(ctx, s, "/_matrix/client/v1/media/download/"+f.download, mediaSize)
			},
			Describe: fmt.Sprintf("GET /_matrix/client/v1/media/download/<server>/<id> (authenticated, spec v1.11; without allow_redirect, so Cirrus answers with the bytes, not a 307 to S3) of one upload of %d bytes, timed until the whole body is read", mediaSize),
		},
		{
			Label: "thumbnail 320x240 first", Path: "/_matrix/client/v1/media/thumbnail/{server}/{mediaId}?width=320&height=240&method=scale", Auth: true,
			Concurrency: 1, MaxRequests: thumbnailFirstRequests,
			Run:      runFirstThumbnail,
			Describe: "a JPEG of about 1 MB (1800x1350, noisy) is uploaded, unmeasured, with a comment segment that makes its bytes new; then its first GET /_matrix/client/v1/media/thumbnail/...?width=320&height=240&method=scale is timed: the server decodes the JPEG and scales it (Cirrus: on demand, stored in S3 with an item; Dendrite, by its default dynamic_thumbnails: false: makes its configured sizes, 32x32 and 96x96 crop and 640x480 scale, in the background from the upload, and serves the 640x480 one; the request waits for or makes it)",
		},
		{
			Label: "thumbnail 320x240 cached", Path: "/_matrix/client/v1/media/thumbnail/{server}/{mediaId}?width=320&height=240&method=scale", Auth: true,
			MaxRequests: thumbnailRequests, Setup: ensureMedia,
			Run: func(ctx context.Context, s *server) (string, time.Duration, error) {
				return mediaGet(ctx, s, thumbnailPath(fixture(s).thumbSource), 0)
			},
			Describe: "GET /_matrix/client/v1/media/thumbnail/...?width=320&height=240&method=scale of the same JPEG again and again, its thumbnail made by the first request (in the set-up)",
		},
	}
}

func fixture(s *server) *mediaFixture {
	f, _ := fixtures.LoadOrStore(s, &mediaFixture{})
	return f.(*mediaFixture)
}

// ensureMedia uploads s's download file and thumbnail source once, and asks
// for the thumbnail once so that the cached workload finds it made.
func ensureMedia(ctx context.Context, s *server) error {
	f := fixture(s)
	f.once.Do(func() {
		_, _, f.download, f.err = upload(ctx, s, uploads().next(), "application/octet-stream")
		if f.err != nil {
			return
		}
		_, _, f.thumbSource, f.err = upload(ctx, s, photos().next(), "image/jpeg")
		if f.err != nil {
			return
		}
		_, _, f.err = mediaGet(ctx, s, thumbnailPath(f.thumbSource), 0)
	})
	return f.err
}

func thumbnailPath(mxc string) string {
	return fmt.Sprintf("/_matrix/client/v1/media/thumbnail/%s?width=%d&height=%d&method=scale", mxc, thumbW, thumbH)
}

// runFirstThumbnail uploads a new JPEG, unmeasured, and times the first
// request for its thumbnail.
func runFirstThumbnail(ctx context.Context, s *server) (string, time.Duration, error) {
	_, _, mxc, err := upload(ctx, s, photos().next(), "image/jpeg")
	if err != nil {
		return "", 0, err
	}
	return mediaGet(ctx, s, thumbnailPath(mxc), 0)
}

// upload posts body as the bench user and returns the request ID, the time
// until the answer was read, and the content URI's server/ID part.
func upload(ctx context.Context, s *server, body []byte, contentType string) (id string, took time.Duration, mxc string, err error) {
	ctx, cancel := context.WithTimeout(ctx, mediaTimeout)
	defer cancel()
	u := s.ClientURL + "/_matrix/media/v3/upload?filename=bench"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return "", 0, "", err
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Authorization", "Bearer "+s.token)
	t0 := time.Now()
	res, err := mediaClient(s).Do(req)
	if err != nil {
		return "", 0, "", err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return "", 0, "", statusError(http.MethodPost, u, res.StatusCode, readSome(res.Body))
	}
	var up struct {
		ContentURI string `json:"content_uri"`
	}
	err = json.NewDecoder(res.Body).Decode(&up)
	took = time.Since(t0)
	if err != nil {
		return "", 0, "", fmt.Errorf("POST %s: decode the answer: %w", u, err)
	}
	mxc, ok := strings.CutPrefix(up.ContentURI, "mxc://")
	if !ok || strings.Count(mxc, "/") != 1 {
		return "", 0, "", fmt.Errorf("POST %s: content_uri %q is not mxc://<server>/<id>", u, up.ContentURI)
	}
	return res.Header.Get("X-Request-Id"), took, mxc, nil
}

// mediaGet gets path as the bench user and reads the whole body, which
// must be want bytes long when want is not 0, or an image otherwise.
func mediaGet(ctx context.Context, s *server, path string, want int) (string, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, mediaTimeout)
	defer cancel()
	u := s.ClientURL + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", 0, err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	t0 := time.Now()
	res, err := mediaClient(s).Do(req)
	if err != nil {
		return "", 0, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return "", 0, statusError(http.MethodGet, u, res.StatusCode, readSome(res.Body))
	}
	n, err := io.Copy(io.Discard, res.Body)
	took := time.Since(t0)
	if err != nil {
		return "", 0, fmt.Errorf("GET %s: read the answer: %w", u, err)
	}
	switch ctype := res.Header.Get("Content-Type"); {
	case want > 0 && n != int64(want):
		return "", 0, fmt.Errorf("GET %s: %d bytes, want %d", u, n, want)
	case want == 0 && !strings.HasPrefix(ctype, "image/"):
		return "", 0, fmt.Errorf("GET %s: Content-Type %q, want an image", u, ctype)
	}
	return res.Header.Get("X-Request-Id"), took, nil
}

// mediaClient is s's client, with the time a megabyte may take.
func mediaClient(s *server) *http.Client {
	c := *s.client
	c.Timeout = mediaTimeout
	return &c
}

// varied hands out a file again and again with different bytes each time,
// so that no server finds a copy it already stores.
type varied struct {
	mu   sync.Mutex
	base []byte
	n    uint64
}

func newVaried(base []byte) *varied { return &varied{base: base} }

// next is the file with a new counter in it: for a JPEG in a comment
// segment after its SOI marker, which decoders skip; for other bytes in
// their first eight.
func (v *varied) next() []byte {
	v.mu.Lock()
	v.n++
	n := v.n
	v.mu.Unlock()
	b := bytes.Clone(v.base)
	if len(b) > 2 && b[0] == 0xFF && b[1] == 0xD8 {
		com := []byte{0xFF, 0xFE, 0, 10}
		com = binary.BigEndian.AppendUint64(com, n)
		return append(append(b[:2:2], com...), v.base[2:]...)
	}
	binary.BigEndian.PutUint64(b, n)
	return b
}

func randomBytes(n int) []byte {
	rng := rand.New(rand.NewPCG(3, 4))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// photoJPEG is a JPEG of about 1 MB: a gradient with noise, which JPEG
// compresses about as badly as a photo (as shared/thumbnail's benchmark).
func photoJPEG() []byte {
	const w, h = 1800, 1350
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	rng := rand.New(rand.NewPCG(1, 2))
	for y := range h {
		for x := range w {
			noise := func(v int) uint8 { return uint8(max(0, min(255, v+rng.IntN(64)-32))) }
			img.SetRGBA(x, y, color.RGBA{noise(x * 255 / w), noise(y * 255 / h), noise(128), 255})
		}
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}); err != nil {
		panic("encode the bench JPEG: " + err.Error()) // into memory: cannot fail
	}
	return b.Bytes()
}
