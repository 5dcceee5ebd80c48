package serverkeys

import (
	"context"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// flights are one process's fetches of servers' keys, per fetcher, while
// under way and for MinRefetch after they began. A check needing a key
// while its server is being fetched waits for that fetch and takes its
// answer: the refetch guard would otherwise find the server just marked
// as asked and answer nothing, and the check would fail although the key
// is on its way. Within MinRefetch a finished fetch's answer stands in
// for the one the guard refuses, which covers checks that read the table
// before that answer was stored.
type flights struct {
	mu sync.Mutex
	m  map[flightKey]*flight
}

type flightKey struct {
	fetcher string
	server  spec.ServerName
}

// flight is one run of a fetcher for some servers; res holds what it
// returned once done is closed.
type flight struct {
	started time.Time
	done    chan struct{}
	res     map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult
}

// maxFlights bounds the finished flights kept; past it, those older than
// MinRefetch are dropped, then all finished ones (the table's marks still
// guard them).
const maxFlights = 1024

// join sorts requests into those of servers with a flight of fetcher
// under way or begun within MinRefetch, whose flights it returns, and the
// rest, which the caller is to fetch: own, under the flight mine (nil
// when own holds only the local server's).
func (fs *flights) join(fetcher, local string, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp, now time.Time) (own map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp, mine *flight, others map[*flight]bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.m == nil {
		fs.m = map[flightKey]*flight{}
	}
	own = map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{}
	others = map[*flight]bool{}
	for req, ts := range requests {
		if string(req.ServerName) == local {
			own[req] = ts
			continue
		}
		k := flightKey{fetcher, req.ServerName}
		if f := fs.m[k]; f != nil && f != mine && (!f.landed() || now.Sub(f.started) < MinRefetch) {
			others[f] = true
			continue
		}
		if mine == nil {
			fs.prune(now)
			mine = &flight{started: now, done: make(chan struct{})}
		}
		fs.m[k] = mine
		own[req] = ts
	}
	return own, mine, others
}

// land records what flight f returned and wakes those waiting for it. Its
// servers not fetched (the table's marks held them back) or all of them
// when the fetch failed are forgotten, so that the next check asks the
// table's guard again rather than trusting an answer nobody got.
func (fs *flights) land(f *flight, res map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, fetched map[spec.ServerName]bool, ok bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	f.res = res
	close(f.done)
	for k, g := range fs.m {
		if g == f && (!ok || !fetched[k.server]) {
			delete(fs.m, k)
		}
	}
}

// prune drops finished flights when there are too many.
func (fs *flights) prune(now time.Time) {
	if len(fs.m) < maxFlights {
		return
	}
	for k, f := range fs.m {
		if f.landed() && now.Sub(f.started) >= MinRefetch {
			delete(fs.m, k)
		}
	}
	if len(fs.m) < maxFlights {
		return
	}
	for k, f := range fs.m {
		if f.landed() {
			delete(fs.m, k)
		}
	}
}

func (f *flight) landed() bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}

// wait returns what the flights returned for the servers asked for, as
// soon as all have landed or ctx ends.
func wait(ctx context.Context, others map[*flight]bool, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	servers := map[spec.ServerName]bool{}
	for req := range requests {
		servers[req.ServerName] = true
	}
	out := map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}
	for f := range others {
		select {
		case <-f.done:
		case <-ctx.Done():
			return out, ctx.Err()
		}
		for req, res := range f.res {
			if servers[req.ServerName] {
				out[req] = res
			}
		}
	}
	return out, nil
}
