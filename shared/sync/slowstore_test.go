package sync_test

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	gosync "sync"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
	"github.com/cirrus-matrix/cirrus/shared/store/embedded"
)

// slowStore is an embedded DynamoDB behind a proxy that holds every call
// for a delay, as calls take milliseconds from Lambda: calls made side by
// side then overlap as they do in AWS. It records the calls' intervals, so
// that a test can tell how many a request made one after the other.
type slowStore struct {
	mu    gosync.Mutex
	calls [][2]time.Time // begin, end
}

// startSlow runs a stack on a slowStore of the delay given.
func startSlow(t *testing.T, delay time.Duration, env ...string) (*servertest.Stack, *slowStore) {
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
	ss := &slowStore{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		begin := time.Now()
		time.Sleep(delay)
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
	st := servertest.Start(t, append([]string{"CIRRUS_DYNAMODB_ENDPOINT=http://" + ln.Addr().String()}, env...)...)
	return st, ss
}

// reset forgets the calls recorded so far.
func (s *slowStore) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = nil
}

// chain is the longest run of calls recorded since reset each of which
// began after the one before it ended: what latency a request pays for its
// calls, however many it makes side by side. It is at least the request's
// critical path; a call whose goroutine the scheduler started late may
// lengthen it.
func (s *slowStore) chain() (longest, calls int) {
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
