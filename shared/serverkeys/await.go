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
// instance is fetching, are there, that fetch is marked done, or its
// deadline (elsewhere) or this check's passes, and returns the keys
// found; the first read comes after the first wait, the key and the mark
// having just been read. Each read is one BatchGetItem of the keys and the servers' fetch
// marks; a server whose mark was seen done gets one more read of its keys,
// which may have been read in the same call just before they were stored.
func (g guarded) await(ctx context.Context, deadline time.Time, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp, elsewhere map[spec.ServerName]time.Time) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	out := map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}
	until := map[spec.ServerName]time.Time{}
	for server, d := range elsewhere {
		until[server] = d
		if deadline.Before(d) {
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
				return out, ctx.Err()
			}
		}
		pending := map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{}
		for req, ts := range requests {
			if _, found := out[req]; !found && !until[req.ServerName].IsZero() {
				pending[req] = ts
			}
		}
		live, err := g.peek(ctx, pending, out)
		if err != nil {
			return out, err
		}
		now := time.Now()
		for server, d := range until {
			switch {
			case settled[server] || !now.Before(d) || complete(server, requests, out):
				delete(until, server)
			case !live[server]:
				settled[server] = true
			}
		}
	}
	return out, nil
}

// peek reads the keys asked for into out and the servers' fetch marks,
// and returns the servers whose fetch is still under way: one
// BatchGetItem.
func (g guarded) peek(ctx context.Context, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp, out map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult) (map[spec.ServerName]bool, error) {
	var ks []store.Key
	servers := map[spec.ServerName]bool{}
	for req := range requests {
		if req.KeyID != "" { // a notary query's "any key": the mark only
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
			return readKey(k, decode, requests, out)
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

// complete reports whether out holds every key of server asked for.
func complete(server spec.ServerName, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp, out map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult) bool {
	for req := range requests {
		if req.ServerName == server {
			if _, ok := out[req]; !ok {
				return false
			}
		}
	}
	return true
}
