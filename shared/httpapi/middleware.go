package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// RequestIDHeader carries the request ID: set by API Gateway's adapter,
// returned to the client, and in every log line of the request.
const RequestIDHeader = "X-Request-Id"

var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._=-]{1,64}$`)

// Logging gives each request an ID, a DynamoDB meter and a logger, then logs
// one line when it ends: route, status, duration and the meter. The query
// string is never logged, since clients may put access tokens in it, and
// path segments that hold secrets are masked (logPath).
func Logging(logger *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get(RequestIDHeader)
		if !requestIDPattern.MatchString(id) {
			id = newRequestID()
		}
		w.Header().Set(RequestIDHeader, id)
		reqLog := logger.With("request_id", id)
		ctx, meter := store.WithMeter(r.Context())
		ctx = context.WithValue(ctx, loggerKey{}, reqLog)
		r = r.WithContext(ctx)

		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				reqLog.ErrorContext(ctx, "handler panicked", "panic", fmt.Sprint(p))
				if !sw.wrote {
					WriteError(sw, r, fmt.Errorf("panic: %v", p))
				}
			}
			u := meter.Usage()
			reqLog.LogAttrs(ctx, slog.LevelInfo, "request",
				slog.String("method", r.Method),
				slog.String("route", r.Pattern),
				slog.String("path", logPath(r)),
				slog.Int("status", sw.statusCode()),
				slog.Int64("bytes", sw.bytes),
				slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000),
				slog.Group("dynamodb",
					slog.Int64("calls", u.Calls),
					slog.Float64("rcu", u.ReadUnits),
					slog.Float64("wcu", u.WriteUnits),
					slog.Int64("round_trips", u.RoundTrips)),
			)
		}()
		next.ServeHTTP(sw, r)
	})
}

// Masked is what the log line shows instead of a secret path segment.
const Masked = "<masked>"

// secretWildcards name the route wildcards whose values are secrets: a
// registration token in /_synapse/admin/v1/registration_tokens/{token}.
var secretWildcards = map[string]bool{"token": true}

// secretPrefixes are paths whose next segment is a secret whatever the
// route, so that it is masked on requests no route matched too (a 404, a
// 405). "new" is not a token but the endpoint that makes one; it is masked
// as well, and the route says which it was.
var secretPrefixes = []string{"/_synapse/admin/v1/registration_tokens/"}

// logPath is the request's escaped path with its secret segments masked:
// those the matched route's pattern names with a secret wildcard, and the
// segment after a secret prefix.
func logPath(r *http.Request) string {
	path := r.URL.EscapedPath()
	segs := strings.Split(path, "/")
	if r.Pattern != "" {
		pattern := r.Pattern
		if i := strings.IndexAny(pattern, " \t"); i >= 0 {
			pattern = strings.TrimLeft(pattern[i:], " \t")
		}
		// The host part of a pattern, if any, comes before the first "/".
		if i := strings.Index(pattern, "/"); i > 0 {
			pattern = pattern[i:]
		}
		for i, p := range strings.Split(pattern, "/") {
			if i >= len(segs) {
				break
			}
			name, ok := strings.CutPrefix(p, "{")
			if !ok {
				continue
			}
			name, rest := strings.TrimSuffix(name, "}"), strings.HasSuffix(name, "...}")
			name = strings.TrimSuffix(name, "...")
			if !secretWildcards[name] {
				continue
			}
			if rest {
				// {name...} takes the rest of the path.
				segs = append(segs[:i], Masked)
				break
			}
			segs[i] = Masked
		}
	}
	for _, prefix := range secretPrefixes {
		if n := strings.Count(prefix, "/"); len(segs) > n && segs[n] != "" && hasPrefixUnescaped(segs, prefix) {
			segs[n] = Masked
		}
	}
	return strings.Join(segs, "/")
}

// hasPrefixUnescaped reports whether the path segments begin with those of
// prefix (which ends with "/"), each segment compared unescaped, as the
// router compares them.
func hasPrefixUnescaped(segs []string, prefix string) bool {
	want := strings.Split(strings.TrimSuffix(prefix, "/"), "/")
	if len(segs) < len(want) {
		return false
	}
	for i, w := range want {
		got, err := url.PathUnescape(segs[i])
		if err != nil || got != w {
			return false
		}
	}
	return true
}

func newRequestID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// statusWriter remembers what was sent, for the log line.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
	wrote  bool
}

func (w *statusWriter) WriteHeader(status int) {
	if !w.wrote {
		w.status, w.wrote = status, true
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) statusCode() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// CORS adds the headers the spec recommends on every client-server response
// and answers OPTIONS itself, without running the endpoint, as the spec
// requires ("Web Browser Clients").
func CORS(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization")
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// LimitBody refuses bodies over max bytes with 413 M_TOO_LARGE: at once when
// Content-Length says so, otherwise when DecodeJSON reads past the limit.
func LimitBody(max int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > max {
			WriteError(w, r, TooLarge("request body of %d bytes is over the %d byte limit", r.ContentLength, max))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, max)
		next.ServeHTTP(w, r)
	})
}
