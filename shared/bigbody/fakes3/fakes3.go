// Package fakes3 runs an S3 API server in the process, on loopback
// (github.com/johannesboyne/gofakes3), for `cirrus serve` and tests: the
// bucket of large responses when lambda_response_limit is set, and the media
// bucket when media_bucket is not, unless s3_endpoint names another S3 API.
// Media objects are kept on disk under the data directory's media folder
// (disk.go), so that uploads survive a restart as the table does; large
// responses live in memory. It answers every origin's CORS requests, as the
// stack's bucket does, and checks no signature; but like S3 it refuses a
// presigned URL that comes with an Authorization header too, which a client
// that kept the homeserver's token on the redirect would send.
//
// Lambda binaries never link it.
package fakes3

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/cirrus-matrix/cirrus/shared/config"
)

// LocalBucket is the bucket of large responses in the embedded S3 API.
const LocalBucket = "cirrus-large-responses"

// LocalMediaBucket is the media bucket in the embedded S3 API.
const LocalMediaBucket = "cirrus-media"

// ForConfig starts a server on loopback when cfg needs a bucket it names
// neither in S3 nor at an S3 endpoint (media_bucket; large_response_bucket
// when lambda_response_limit is set), and points cfg at it; otherwise it
// returns nil and changes nothing. With a data_dir, media objects are kept
// under its media folder.
func ForConfig(cfg *config.Config) (*Server, error) {
	needLarge := cfg.LambdaResponseLimit > 0 && cfg.LargeResponseBucket == ""
	if cfg.S3Endpoint != "" || (!needLarge && cfg.MediaBucket != "") {
		return nil, nil
	}
	dir := ""
	if cfg.DataDir != "" {
		dir = filepath.Join(cfg.DataDir, "media")
	}
	s, err := StartDir("127.0.0.1:0", dir)
	if err != nil {
		return nil, err
	}
	cfg.S3Endpoint = s.URL()
	if needLarge {
		cfg.LargeResponseBucket = LocalBucket
	}
	if cfg.MediaBucket == "" {
		cfg.MediaBucket = LocalMediaBucket
	}
	return s, nil
}

// Server is a running S3 API.
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// Start listens on addr, such as 127.0.0.1:0, with every object in memory.
func Start(addr string) (*Server, error) { return StartDir(addr, "") }

// StartDir is Start with the objects of every bucket but LocalBucket kept
// in the folder dir as well, and read back from it first; "" keeps them in
// memory only.
func StartDir(addr, dir string) (*Server, error) {
	var backend gofakes3.Backend = s3mem.New()
	if dir != "" {
		d, err := openDisk(dir, LocalBucket)
		if err != nil {
			return nil, fmt.Errorf("local s3: %w", err)
		}
		backend = d
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("local s3: %w", err)
	}
	faker := gofakes3.New(backend, gofakes3.WithTimeSkewLimit(0))
	s := &Server{srv: &http.Server{Handler: oneAuth(faker.Server())}, ln: ln}
	go s.srv.Serve(ln)
	return s, nil
}

// URL is the endpoint, such as http://127.0.0.1:41234.
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() }

// Close stops the server; the objects are gone.
func (s *Server) Close() error {
	if err := s.srv.Close(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// oneAuth answers 400 InvalidArgument, as S3 does, to a request signed both
// in its query and in an Authorization header.
func oneAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("X-Amz-Signature") && r.Header.Get("Authorization") != "" {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified</Message></Error>`)
			return
		}
		next.ServeHTTP(w, r)
	})
}
