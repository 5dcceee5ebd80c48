// Package bigbody keeps every answer within what a Lambda function may
// return (6 MB, lambdahttp.MaxPayload) without losing it: an initial /sync of
// hundreds of rooms or a key backup restore of thousands of sessions is
// larger than that.
//
// Handler buffers the response. One that fits goes out unchanged. One that
// does not is gzipped when the client accepts gzip and that makes it fit;
// otherwise its body is put into a bucket (S3) and the client is redirected
// to a presigned URL of it that lasts a few minutes: 307 for GET, so the
// method holds, 303 for POST and PUT, whose answer is then fetched with a
// GET. matrix-js-sdk (fetch) and matrix-rust-sdk (reqwest) follow both, and
// drop the Authorization header on the way to the bucket's origin, which a
// presigned URL does not need.
//
// The same handler runs in Lambda and, with lambda_response_limit set, in
// `cirrus serve`, so the behaviour is tested locally.
package bigbody

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/lambdahttp"
)

// Bucket stores bodies too large to answer directly.
type Bucket interface {
	// Put stores body under key with the Content-Type and Content-Encoding
	// a GET of it answers with (an empty encoding for none).
	Put(ctx context.Context, key string, body []byte, contentType, contentEncoding string) error
	// Presign returns a URL that GETs key without other credentials until
	// ttl has passed.
	Presign(ctx context.Context, key string, ttl time.Duration) (string, error)
}

// Prefix is where spilled bodies go in the bucket; the stack's lifecycle
// rule deletes them after a day.
const Prefix = "large-responses/"

// URLLifetime is how long a redirect's presigned URL works: long enough for
// a client on a slow link to start the download, short enough that a URL
// found later in a log is worthless.
const URLLifetime = 5 * time.Minute

// headroom is kept under the limit for headers a middleware outside this
// one adds (the request ID) and for the adapter's estimate.
const headroom = 4 << 10

// Options configure Handler.
type Options struct {
	// Limit is the largest response payload, as lambdahttp counts it
	// (lambdahttp.PayloadSize); lambdahttp.MaxPayload in Lambda, lower in
	// tests.
	Limit int
	// RequestLimit refuses requests whose body is larger, with 413
	// M_TOO_LARGE; 0 for none. lambdahttp.MaxPayload in Lambda, where
	// API Gateway could not hand a larger one to the function.
	RequestLimit int64
	// Bucket stores answers that do not fit; nil, they are refused with a
	// 500 that says why.
	Bucket Bucket
	// Prefix is put before each key in Bucket; Prefix by default.
	Prefix string
	// TTL is the lifetime of a presigned URL; URLLifetime by default.
	TTL time.Duration
}

// Handler applies o to the answers of next. It goes inside the CORS
// middleware, so that a redirect carries CORS headers as any answer does.
func Handler(o Options, next http.Handler) http.Handler {
	if o.Prefix == "" {
		o.Prefix = Prefix
	}
	if o.TTL == 0 {
		o.TTL = URLLifetime
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if o.RequestLimit > 0 && r.ContentLength > o.RequestLimit-headroom {
			httpapi.WriteError(w, r, httpapi.TooLarge("the request body of %d bytes is over the %d MB a Lambda function accepts: send less at a time", r.ContentLength, o.RequestLimit>>20))
			return
		}
		bw := &writer{header: w.Header()}
		next.ServeHTTP(bw, r)
		o.finish(w, r, bw)
	})
}

// writer buffers a response: its headers are the real writer's, its status
// and body wait for finish.
type writer struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *writer) Header() http.Header { return w.header }

func (w *writer) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *writer) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.body.Write(b)
}

func (o Options) finish(w http.ResponseWriter, r *http.Request, bw *writer) {
	status, body, h := bw.status, bw.body.Bytes(), w.Header()
	if status == 0 {
		status = http.StatusOK
	}
	limit := o.Limit - headroom
	if r.Method == http.MethodHead || !bodyAllowed(status) || lambdahttp.PayloadSize(h, body) <= limit {
		w.WriteHeader(status)
		w.Write(body)
		return
	}
	ctx := r.Context()
	log := httpapi.Logger(ctx)
	if h.Get("Content-Type") == "" {
		// Sniff now: the body is about to change.
		h.Set("Content-Type", http.DetectContentType(body))
	}
	var gz []byte
	if h.Get("Content-Encoding") == "" && acceptsGzip(r.Header.Get("Accept-Encoding")) {
		gz = compress(body)
		h.Set("Content-Encoding", "gzip")
		h.Add("Vary", "Accept-Encoding")
		h.Del("Content-Length")
		if lambdahttp.PayloadSize(h, gz) <= limit {
			log.InfoContext(ctx, "large response gzipped", "bytes", len(body), "gzip_bytes", len(gz))
			w.WriteHeader(status)
			w.Write(gz)
			return
		}
	}
	if o.Bucket == nil || status != http.StatusOK {
		h.Del("Content-Encoding")
		log.ErrorContext(ctx, "response too large", "status", status, "bytes", len(body), "gzip_bytes", len(gz), "bucket", o.Bucket != nil)
		httpapi.WriteJSON(w, http.StatusInternalServerError, map[string]string{"errcode": "M_UNKNOWN",
			"error": "the response is larger than a Lambda function may return, and no bucket is configured to hand it over"})
		return
	}
	stored, encoding := body, ""
	if gz != nil {
		stored, encoding = gz, "gzip"
	}
	url, err := o.spill(ctx, stored, h.Get("Content-Type"), encoding)
	if err != nil {
		h.Del("Content-Encoding")
		httpapi.WriteError(w, r, err)
		return
	}
	log.InfoContext(ctx, "large response redirected to the bucket", "bytes", len(body), "stored_bytes", len(stored))
	for _, k := range []string{"Content-Type", "Content-Encoding", "Content-Length", "Vary"} {
		h.Del(k)
	}
	h.Set("Location", url)
	h.Set("Cache-Control", "no-store")
	if r.Method == http.MethodGet {
		w.WriteHeader(http.StatusTemporaryRedirect)
	} else {
		w.WriteHeader(http.StatusSeeOther)
	}
}

// spill puts body into the bucket under a new random key and presigns it.
func (o Options) spill(ctx context.Context, body []byte, contentType, encoding string) (string, error) {
	var b [16]byte
	rand.Read(b[:])
	key := o.Prefix + hex.EncodeToString(b[:])
	if err := o.Bucket.Put(ctx, key, body, contentType, encoding); err != nil {
		return "", fmt.Errorf("put large response: %w", err)
	}
	url, err := o.Bucket.Presign(ctx, key, o.TTL)
	if err != nil {
		return "", fmt.Errorf("presign large response: %w", err)
	}
	return url, nil
}

func compress(body []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	zw.Write(body)
	zw.Close()
	return buf.Bytes()
}

// acceptsGzip reports whether an Accept-Encoding header value allows gzip:
// named, or *, with a quality above 0.
func acceptsGzip(header string) bool {
	for _, item := range strings.Split(header, ",") {
		name, params, _ := strings.Cut(item, ";")
		name = strings.ToLower(strings.TrimSpace(name))
		if name != "gzip" && name != "x-gzip" && name != "*" {
			continue
		}
		q := 1.0
		for _, p := range strings.Split(params, ";") {
			k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
			if strings.EqualFold(k, "q") {
				if f, err := strconv.ParseFloat(v, 64); err == nil {
					q = f
				}
			}
		}
		if q > 0 {
			return true
		}
	}
	return false
}

// bodyAllowed reports whether a response of this status may have a body.
func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}
