package serverkeys

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// The waits between two reads of the table while another instance
// fetches: the first, then doubled each time up to the longest. A fetch
// that answers at once is seen within a few reads; one that takes its
// whole 20 s costs about fifteen.
const (
	firstPoll = 50 * time.Millisecond
	maxPoll   = 2 * time.Second
)

// await reads the table until the keys asked for, of servers another
// instance is fetching, are there (for a request naming no key, a key
// query's, any key stored since that fetch began), that fetch is marked
// done, or its deadline or this check's passes, and returns the keys
// found. The first read comes after the first wait, the key and the mark
// having just been read. Each read is one BatchGetItem of the keys and
// the servers' fetch marks, and one Query of the partition of a server
// asked for with no key ID. A server whose mark was seen done gets one
// more read of its keys, which may have been read in the same call just
// before they were stored. A key the fetch did not bring, asked for by
// another check than the one that fetched, is waited for until the
// deadline.
func (g guarded) await(ctx context.Context, deadline time.Time, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp, elsewhere map[spec.ServerName]fetchMark) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	w := waiting{
		requests: requests,
		out:      map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{},
		fresh:    map[spec.ServerName]bool{},
	}
	until := map[spec.ServerName]time.Time{}
	for server, m := range elsewhere {
		until[server] = time.UnixMilli(m.Until)
		if deadline.Before(until[server]) {
			until[server] = deadline
		}
	}
	settled := map[spec.ServerName]bool{} // seen done: read once more, then given up
	wait := firstPoll
	for len(until) > 0 {
		var next time.Time
		for server, d := range until {
			if !settled[server] && (next.IsZero() || d.Before(next)) {
				next = d
			}
		}
		if sleep := min(wait, time.Until(next)); !next.IsZero() && sleep > 0 {
			wait = min(2*wait, maxPoll)
			t := time.NewTimer(sleep)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return w.out, ctx.Err()
			}
		}
		pending := map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{}
		for req, ts := range requests {
			if !w.found(req) && !until[req.ServerName].IsZero() {
				pending[req] = ts
			}
		}
		live, err := g.peek(ctx, pending, elsewhere, &w)
		if err != nil {
			return w.out, err
		}
		now := time.Now()
		for server, d := range until {
			switch {
			case settled[server] || !now.Before(d) || w.complete(server):
				delete(until, server)
			case !live[server]:
				settled[server] = true
			}
		}
	}
	return w.out, nil
}

// waiting is what await found: the keys asked for, and the servers asked
// for with no key ID that have keys stored since their fetch began.
type waiting struct {
	requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp
	out      map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult
	fresh    map[spec.ServerName]bool
}

func (w *waiting) found(req gomatrixserverlib.PublicKeyLookupRequest) bool {
	if req.KeyID == "" {
		return w.fresh[req.ServerName]
	}
	_, ok := w.out[req]
	return ok
}

// complete reports whether every key of server asked for was found.
func (w *waiting) complete(server spec.ServerName) bool {
	for req := range w.requests {
		if req.ServerName == server && !w.found(req) {
			return false
		}
	}
	return true
}

// peek reads the keys asked for and the servers' fetch marks, and
// returns the servers whose fetch is still under way: one BatchGetItem,
// and a Query per server asked for with no key ID.
func (g guarded) peek(ctx context.Context, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp, marks map[spec.ServerName]fetchMark, w *waiting) (map[spec.ServerName]bool, error) {
	var ks []store.Key
	servers := map[spec.ServerName]bool{}
	for req := range requests {
		if req.KeyID == "" {
			items, err := g.db.items(ctx, string(req.ServerName))
			if err != nil {
				return nil, fmt.Errorf("server keys: %w", err)
			}
			for _, it := range items {
				if it.FetchedTS >= marks[req.ServerName].FetchedTS {
					w.fresh[req.ServerName] = true
				}
			}
		} else {
			ks = append(ks, itemKey(req.ServerName, req.KeyID))
		}
		if !servers[req.ServerName] {
			servers[req.ServerName] = true
			ks = append(ks, g.markKey(req.ServerName))
		}
	}
	live := map[spec.ServerName]bool{}
	err := g.db.Store.GetMany(ctx, ks, func(k store.Key, decode func(any) error) error {
		if !strings.HasPrefix(k.PK, markPrefix) {
			return readKey(k, decode, requests, w.out)
		}
		var m fetchMark
		if err := decode(&m); err != nil {
			return err
		}
		live[spec.ServerName(strings.TrimPrefix(k.PK, markPrefix))] = m.inFlight()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("server keys: %w", err)
	}
	return live, nil
}
