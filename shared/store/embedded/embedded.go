// Package embedded runs a DynamoDB API server inside the process, on
// loopback, for `cirrus serve` and tests: the real SDK client talks to it over
// HTTP, so the code under test is the code that talks to DynamoDB in AWS.
//
// Lambda binaries never import this package.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	miniserver "github.com/truora/minidyn/server"
)

// Server is a running embedded DynamoDB API.
type Server struct {
	http *http.Server
	ln   net.Listener
	done chan error
}

// Start listens on addr (such as "127.0.0.1:0") and serves the DynamoDB API.
func Start(addr string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("embedded dynamodb: %w", err)
	}
	s := &Server{
		http: &http.Server{Handler: newPartitions(miniserver.NewServer()), ReadHeaderTimeout: 10 * time.Second},
		ln:   ln,
		done: make(chan error, 1),
	}
	go func() { s.done <- s.http.Serve(ln) }()
	return s, nil
}

// URL is the endpoint to give the DynamoDB client.
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() }

// Close stops the server and waits for it. Requests in flight get a moment
// to finish; then connections are closed, including ones a client dialed
// and never used, which Shutdown alone would wait five seconds for.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
	defer cancel()
	err := s.http.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = s.http.Close()
	}
	if serveErr := <-s.done; !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, serveErr)
	}
	return err
}
