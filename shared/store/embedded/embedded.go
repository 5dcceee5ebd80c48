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
	"log/slog"
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
	p    *partitions
}

// Options configure a server that keeps its tables.
type Options struct {
	// Dir is the folder of the tables' snapshots and journals, made if
	// missing. Every write is on disk there before it is answered.
	Dir string
	// SnapshotBytes is the journal size after which a snapshot is taken;
	// 0 means DefaultSnapshotBytes.
	SnapshotBytes int64
	// Logger receives what a restore found and what snapshots did; nil
	// means slog.Default().
	Logger *slog.Logger
}

// Start listens on addr (such as "127.0.0.1:0") and serves the DynamoDB API
// from memory: the tables end with the server.
func Start(addr string) (*Server, error) {
	return start(addr, newPartitions(newShards(miniserver.NewServer())))
}

// Open restores the tables kept in o.Dir (see durable.go for the files),
// then listens on addr and serves the DynamoDB API, journaling every
// write. A damaged snapshot or journal is an error that names the file;
// only a torn record at the very end of the newest journal, a write a
// crash cut short before it was answered, is dropped, with a warning.
func Open(addr string, o Options) (*Server, error) {
	if o.Dir == "" {
		return nil, errors.New("embedded dynamodb: no folder to keep the tables in")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.SnapshotBytes <= 0 {
		o.SnapshotBytes = DefaultSnapshotBytes
	}
	p := newPartitions(newShards(miniserver.NewServer()))
	log, err := p.recover(o.Dir, o.SnapshotBytes, o.Logger)
	if err != nil {
		return nil, fmt.Errorf("embedded dynamodb: restore: %w", err)
	}
	p.log = log
	s, err := start(addr, p)
	if err != nil {
		log.close()
	}
	return s, err
}

func start(addr string, p *partitions) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("embedded dynamodb: %w", err)
	}
	s := &Server{
		http: &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second},
		ln:   ln,
		done: make(chan error, 1),
		p:    p,
	}
	go func() { s.done <- s.http.Serve(ln) }()
	return s, nil
}

// URL is the endpoint to give the DynamoDB client.
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() }

// Handler serves the API in the caller's goroutine, as the server does for
// a request on its listener: for a front in the same process (the bench's
// latency model) that would otherwise add a loopback exchange.
func (s *Server) Handler() http.Handler { return s.p }

// Close stops the server and waits for it. Requests in flight get a moment
// to finish; then connections are closed, including ones a client dialed
// and never used, which Shutdown alone would wait five seconds for. A
// server that keeps its tables then writes a snapshot, so that the next
// start replays no journal.
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
	if s.p.log != nil {
		s.p.cutMu.Lock() // after a snapshot the journal's size started
		if s.p.log.broken() == nil {
			err = errors.Join(err, s.p.cut())
		}
		err = errors.Join(err, s.p.log.close())
		s.p.cutMu.Unlock()
	}
	return err
}
