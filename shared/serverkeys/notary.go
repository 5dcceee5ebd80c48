package serverkeys

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"golang.org/x/sync/errgroup"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/keys"
	"github.com/cirrus-matrix/cirrus/shared/protocol"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// MaxQueryServers bounds the servers of one key query: each may cost a
// fetch from that server, and the endpoint needs no authentication.
const MaxQueryServers = 100

// Register serves the notary API on rt. It is unauthenticated, as the spec
// has it: servers ask it before they can verify anyone.
func (k *Keys) Register(rt *httpapi.Router) {
	rt.HandleFunc("POST /_matrix/key/v2/query", httpapi.Handle(k.handleQuery))
	rt.HandleFunc("GET /_matrix/key/v2/query/{serverName}", httpapi.Handle(k.handleQueryServer))
}

type queryRequest struct {
	ServerKeys map[string]map[string]*struct {
		MinimumValidUntilTS *int64 `json:"minimum_valid_until_ts"`
	} `json:"server_keys"`
}

// handleQuery serves POST /_matrix/key/v2/query: the keys of each server
// asked for, as the server signed them and signed by this one too.
// https://spec.matrix.org/v1.19/server-server-api/#post_matrixkeyv2query
func (k *Keys) handleQuery(w http.ResponseWriter, r *http.Request) error {
	var req queryRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.ServerKeys == nil {
		return httpapi.MissingParam("server_keys is required: an object of server names to the key IDs wanted")
	}
	if len(req.ServerKeys) > MaxQueryServers {
		return httpapi.InvalidParam("server_keys names %d servers; ask for at most %d at a time", len(req.ServerKeys), MaxQueryServers)
	}
	now := k.now().UnixMilli()
	var wants []want
	for name, ids := range req.ServerKeys {
		// The keys must be valid until the latest time asked for any of
		// them; a key asked for without a time wants now.
		w := want{server: name, minValid: now}
		if len(ids) > 0 {
			w.minValid = 0
		}
		for id, c := range ids {
			w.keyIDs = append(w.keyIDs, id)
			ts := now
			if c != nil && c.MinimumValidUntilTS != nil {
				ts = *c.MinimumValidUntilTS
			}
			w.minValid = max(w.minValid, ts)
		}
		wants = append(wants, w)
	}
	docs, err := k.notarize(r.Context(), wants)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"server_keys": docs})
	return nil
}

// handleQueryServer serves GET /_matrix/key/v2/query/{serverName}: all keys
// of one server.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixkeyv2queryservername
func (k *Keys) handleQueryServer(w http.ResponseWriter, r *http.Request) error {
	minValid := k.now().UnixMilli()
	if v := r.URL.Query().Get("minimum_valid_until_ts"); v != "" {
		ts, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return httpapi.InvalidParam("minimum_valid_until_ts %q is not a timestamp in milliseconds", v)
		}
		minValid = ts
	}
	docs, err := k.notarize(r.Context(), []want{{server: r.PathValue("serverName"), minValid: minValid}})
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"server_keys": docs})
	return nil
}

// want is what a key query asks of one server: keys valid until minValid,
// and these key IDs among them (none: all).
type want struct {
	server   string
	keyIDs   []string
	minValid int64
	items    []keyItem
}

// notarize returns the key documents of the servers wanted, in the order of
// their names, each signed by this server: its own keys for this server's
// name; for another, the cached documents, fetched again first when no
// current key is valid until minValid or a key asked for is missing (all
// such servers at once, the direct fetcher asking them in parallel). A
// server that cannot be reached gets its cached documents, however old, or
// none: the spec lets a notary answer for servers that are offline.
func (k *Keys) notarize(ctx context.Context, wants []want) ([]json.RawMessage, error) {
	slices.SortFunc(wants, func(a, b want) int { return strings.Compare(a.server, b.server) })
	others := slices.DeleteFunc(slices.Clone(wants), func(w want) bool {
		return w.server == k.serverName || !protocol.ValidServerName(w.server)
	})
	if err := k.db.readItems(ctx, others); err != nil {
		return nil, err
	}
	var stale []want
	for _, w := range others {
		if w.stale() {
			stale = append(stale, w)
		}
	}
	if len(stale) > 0 {
		if err := k.fetch(ctx, stale); err != nil {
			return nil, err
		}
		if err := k.db.readItems(ctx, stale); err != nil {
			return nil, err
		}
	}
	items := map[string][]keyItem{}
	for _, w := range others {
		items[w.server] = w.items
	}
	for _, w := range stale {
		items[w.server] = w.items // read again after the fetch
	}
	out := []json.RawMessage{} // an array, however empty
	for _, w := range wants {
		if w.server == k.serverName {
			doc, err := keys.ServerKeys(k.serverName, k.key, k.now())
			if err != nil {
				return nil, err
			}
			out = append(out, doc)
			continue
		}
		seen := map[string]bool{}
		for _, it := range items[w.server] {
			if seen[it.Doc] || it.Doc == "" {
				continue
			}
			seen[it.Doc] = true
			signed, err := protocol.SignJSON(k.serverName, k.key.ID, k.key.Private, []byte(it.Doc))
			if err != nil {
				httpapi.Logger(ctx).WarnContext(ctx, "stored key document does not sign", "server", w.server, "err", err)
				continue
			}
			out = append(out, signed)
		}
	}
	return out, nil
}

// stale reports whether w's items lack a current key valid until minValid
// or one of the key IDs asked for.
func (w want) stale() bool {
	have := map[string]bool{}
	fresh := false
	for _, it := range w.items {
		have[it.SK] = true
		fresh = fresh || (it.ExpiredTS == 0 && it.ValidUntil >= w.minValid)
	}
	for _, id := range w.keyIDs {
		if !have[id] {
			return true
		}
	}
	return !fresh
}

// fetch asks the fetchers, in order, for the keys of the servers wanted,
// each fetcher for those no earlier one answered for, within FetchTimeout,
// and stores what they return. A server that does not answer is no error.
func (k *Keys) fetch(ctx context.Context, wants []want) error {
	fctx := k.withFetchDeadline(ctx)
	reqs := map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{}
	for _, w := range wants {
		ids := w.keyIDs
		if len(ids) == 0 {
			ids = []string{""}
		}
		for _, id := range ids {
			reqs[gomatrixserverlib.PublicKeyLookupRequest{ServerName: spec.ServerName(w.server), KeyID: gomatrixserverlib.KeyID(id)}] = spec.Timestamp(w.minValid)
		}
	}
	for _, f := range k.ring.KeyFetchers {
		if len(reqs) == 0 {
			break
		}
		res, err := f.FetchKeys(fctx, reqs)
		if err != nil || len(res) == 0 {
			continue
		}
		if err := k.db.StoreKeys(ctx, res); err != nil {
			return err
		}
		answered := map[spec.ServerName]bool{}
		for req := range res {
			answered[req.ServerName] = true
		}
		maps.DeleteFunc(reqs, func(req gomatrixserverlib.PublicKeyLookupRequest, _ spec.Timestamp) bool {
			return answered[req.ServerName]
		})
	}
	return nil
}

// readItems reads the stored keys of each server wanted into its items, a
// few servers at a time.
func (db *Database) readItems(ctx context.Context, wants []want) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(readParallel)
	for i := range wants {
		g.Go(func() (err error) {
			wants[i].items, err = db.items(gctx, wants[i].server)
			return err
		})
	}
	return g.Wait()
}

// readParallel is how many servers' keys a key query reads at once.
const readParallel = 8

// items reads one server's stored keys: one Query of its partition.
func (db *Database) items(ctx context.Context, server string) ([]keyItem, error) {
	var items []keyItem
	if _, err := db.Store.QueryPage(ctx, store.Query{PK: keyPrefix + server}, &items); err != nil {
		return nil, err
	}
	return items, nil
}
