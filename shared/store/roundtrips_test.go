package store_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cirrus-matrix/cirrus/shared/store"
	"github.com/cirrus-matrix/cirrus/shared/store/embedded"
)

// TestStore_RoundTrips counts round trips of real calls through the SDK
// and the embedded DynamoDB over HTTP. Which calls overlap is forced, not
// left to the scheduler: sequential calls cannot overlap, and the proxy
// in front of the store holds each GetItem until the other one of its
// pair has arrived, so that the two reads of the errgroup are in flight
// together.
func TestStore_RoundTrips(t *testing.T) {
	srv, err := embedded.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	target, _ := url.Parse(srv.URL())
	pairs := &pairGets{next: httputil.NewSingleHostReverseProxy(target)}
	front := httptest.NewServer(pairs)
	t.Cleanup(front.Close)
	ctx := context.Background()
	s, err := store.Open(ctx, store.Options{Table: "test", Endpoint: front.URL})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateTable(ctx); err != nil {
		t.Fatal(err)
	}
	for _, sk := range []string{"a", "b"} {
		if err := s.Put(ctx, thing{PK: "p", SK: sk}); err != nil {
			t.Fatal(err)
		}
	}
	get := func(ctx context.Context, sk string) error {
		var out thing
		return s.Get(ctx, store.Key{PK: "p", SK: sk}, &out)
	}

	// Two reads one after the other: two round trips, each the only call
	// in flight when it begins.
	seqCtx, seq := store.WithMeter(ctx)
	for _, sk := range []string{"a", "b"} {
		if err := get(seqCtx, sk); err != nil {
			t.Fatal(err)
		}
	}
	if u := seq.Usage(); u.Calls != 2 || u.RoundTrips != 2 {
		t.Errorf("two reads in sequence: %+v, want 2 calls, 2 round trips", u)
	}

	// Two reads in an errgroup, held by the proxy until both are in
	// flight: one round trip; a job's meter inside the test's gets them.
	testCtx, test := store.WithMeter(ctx)
	jobCtx, job := store.WithMeter(testCtx)
	pairs.on(true)
	g, gctx := errgroup.WithContext(jobCtx)
	for _, sk := range []string{"a", "b"} {
		g.Go(func() error { return get(gctx, sk) })
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	pairs.on(false)
	if u := job.Usage(); u.Calls != 2 || u.RoundTrips != 1 {
		t.Errorf("two reads in an errgroup: %+v, want 2 calls, 1 round trip", u)
	}
	// Then one more read, in sequence with the pair: the test's meter
	// counts the job's round trip and its own.
	if err := get(testCtx, "a"); err != nil {
		t.Fatal(err)
	}
	if u := test.Usage(); u.Calls != 3 || u.RoundTrips != 2 {
		t.Errorf("the pair, then a read: %+v, want 3 calls, 2 round trips", u)
	}
	if u := job.Usage(); u.RoundTrips != 1 {
		t.Errorf("job after the test's own read: %+v, want 1 round trip still", u)
	}
}

// pairGets is a DynamoDB front that, when on, answers GetItem calls two
// at a time: each waits for the next one to arrive before it goes on.
type pairGets struct {
	next http.Handler

	mu      sync.Mutex
	pairing bool
	waiting chan struct{} // closed when the second of a pair arrives
}

func (p *pairGets) on(pairing bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pairing, p.waiting = pairing, nil
}

func (p *pairGets) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.Header.Get("X-Amz-Target"), ".GetItem") {
		p.mu.Lock()
		wait := p.waiting
		switch {
		case !p.pairing:
		case wait == nil:
			wait = make(chan struct{})
			p.waiting = wait
		default:
			close(wait)
			p.waiting = nil
		}
		p.mu.Unlock()
		if wait != nil {
			select {
			case <-wait:
			case <-time.After(time.Minute): // bounds a hang only
				http.Error(w, "the pair's other GetItem never came", http.StatusGatewayTimeout)
				return
			}
		}
	}
	p.next.ServeHTTP(w, r)
}
