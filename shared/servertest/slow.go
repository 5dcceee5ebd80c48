package servertest

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/store/embedded"
)

// SlowStore is an embedded DynamoDB behind a proxy that holds every call
// for a delay while held, as calls take milliseconds from Lambda: calls a
// request makes side by side then overlap even when a goroutine of a
// loaded machine is slow to begin its call, and calls made one after the
// other never do. So the round trips the store's meter counts, and the
// chain of calls recorded here, are the request's critical path, not the
// scheduler's.
type SlowStore struct {
	delay time.Duration
	held  atomic.Bool
	mu    sync.Mutex
	calls [][2]time.Time // begin, end of each held call
}

// StartSlow runs a stack whose DynamoDB calls go through a SlowStore of the
// delay given, holding calls from the start.
func StartSlow(t testing.TB, delay time.Duration, env ...string) (*Stack, *SlowStore) {
	t.Helper()
	db, err := embedded.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	target, err := url.Parse(db.URL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	ss := &SlowStore{delay: delay}
	ss.held.Store(true)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !ss.held.Load() {
			proxy.ServeHTTP(w, r)
			return
		}
		begin := time.Now()
		time.Sleep(ss.delay)
		proxy.ServeHTTP(w, r)
		ss.mu.Lock()
		ss.calls = append(ss.calls, [2]time.Time{begin, time.Now()})
		ss.mu.Unlock()
	}), ReadHeaderTimeout: time.Minute}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	st := Start(t, append([]string{"CIRRUS_DYNAMODB_ENDPOINT=http://" + ln.Addr().String()}, env...)...)
	return st, ss
}

// Hold turns the delay on or off: a test sets up at the embedded store's
// speed and holds only the requests it measures.
func (s *SlowStore) Hold(on bool) { s.held.Store(on) }

// Reset forgets the calls recorded so far.
func (s *SlowStore) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = nil
}

// Chain is the longest run of held calls recorded since Reset each of
// which began after the one before it ended, and how many calls there
// were: what latency a request pays for its calls, however many it makes
// side by side. It is at least the request's critical path; a call whose
// goroutine the scheduler started late may lengthen it.
func (s *SlowStore) Chain() (longest, calls int) {
	s.mu.Lock()
	all := slices.Clone(s.calls)
	s.mu.Unlock()
	slices.SortFunc(all, func(a, b [2]time.Time) int { return a[0].Compare(b[0]) })
	depth := make([]int, len(all))
	for i, c := range all {
		depth[i] = 1
		for j := range i {
			if !all[j][1].After(c[0]) {
				depth[i] = max(depth[i], depth[j]+1)
			}
		}
		longest = max(longest, depth[i])
	}
	return longest, len(all)
}
