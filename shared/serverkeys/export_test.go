package serverkeys

import (
	"context"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// PutDirectFetchMark writes the direct fetcher's mark for server as an
// instance writes it when it starts fetching at started until the
// deadline, for tests of an instance that went away mid-fetch.
func PutDirectFetchMark(ctx context.Context, st *store.Store, server string, started, deadline time.Time) error {
	g := guarded{KeyFetcher: &gomatrixserverlib.DirectKeyFetcher{}, db: &Database{Store: st}}
	return g.mark(ctx, started, deadline, map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{{ServerName: spec.ServerName(server)}: 0})
}
