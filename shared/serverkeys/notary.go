package serverkeys

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

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
	names := make([]string, 0, len(req.ServerKeys))
	for name := range req.ServerKeys {
		names = append(names, name)
	}
	slices.Sort(names)
	out := []json.RawMessage{}
	for _, name := range names {
		// The keys must be valid until the latest time asked for any of
		// them; a key asked for without a time wants now.
		var ids []string
		minValid := int64(0)
		for id, c := range req.ServerKeys[name] {
			ids = append(ids, id)
			ts := now
			if c != nil && c.MinimumValidUntilTS != nil {
				ts = *c.MinimumValidUntilTS
			}
			minValid = max(minValid, ts)
		}
		if len(ids) == 0 {
			minValid = now
		}
		docs, err := k.notarize(r.Context(), name, ids, minValid)
		if err != nil {
			return err
		}
		out = append(out, docs...)
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"server_keys": out})
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
	docs, err := k.notarize(r.Context(), r.PathValue("serverName"), nil, minValid)
	if err != nil {
		return err
	}
	if docs == nil {
		docs = []json.RawMessage{} // an array, however empty
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"server_keys": docs})
	return nil
}

// notarize returns the key documents of server, signed by this server:
// its own keys for this server's name; for another, the cached documents,
// fetched again first when no current key is valid until minValid or a
// key asked for is missing. A server that cannot be reached gets its
// cached documents, however old, or none: the spec lets a notary answer
// for servers that are offline.
func (k *Keys) notarize(ctx context.Context, server string, keyIDs []string, minValid int64) ([]json.RawMessage, error) {
	if server == k.serverName {
		doc, err := keys.ServerKeys(k.serverName, k.key, k.now())
		if err != nil {
			return nil, err
		}
		return []json.RawMessage{doc}, nil
	}
	if !protocol.ValidServerName(server) {
		return nil, nil
	}
	items, err := k.db.items(ctx, server)
	if err != nil {
		return nil, err
	}
	if stale(items, keyIDs, minValid) {
		if err := k.fetch(ctx, server, keyIDs, minValid); err != nil {
			return nil, err
		}
		if items, err = k.db.items(ctx, server); err != nil {
			return nil, err
		}
	}
	var out []json.RawMessage
	seen := map[string]bool{}
	for _, it := range items {
		if seen[it.Doc] || it.Doc == "" {
			continue
		}
		seen[it.Doc] = true
		signed, err := protocol.SignJSON(k.serverName, k.key.ID, k.key.Private, []byte(it.Doc))
		if err != nil {
			httpapi.Logger(ctx).WarnContext(ctx, "stored key document does not sign", "server", server, "err", err)
			continue
		}
		out = append(out, signed)
	}
	return out, nil
}

// stale reports whether items lack a current key valid until minValid or
// one of keyIDs.
func stale(items []keyItem, keyIDs []string, minValid int64) bool {
	have := map[string]bool{}
	fresh := false
	for _, it := range items {
		have[it.SK] = true
		fresh = fresh || (it.ExpiredTS == 0 && it.ValidUntil >= minValid)
	}
	for _, id := range keyIDs {
		if !have[id] {
			return true
		}
	}
	return !fresh
}

// fetch asks the fetchers, in order, for server's keys and stores what the
// first to answer returns. A server that does not answer is no error.
func (k *Keys) fetch(ctx context.Context, server string, keyIDs []string, minValid int64) error {
	reqs := map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{}
	if len(keyIDs) == 0 {
		keyIDs = []string{""}
	}
	for _, id := range keyIDs {
		reqs[gomatrixserverlib.PublicKeyLookupRequest{ServerName: spec.ServerName(server), KeyID: gomatrixserverlib.KeyID(id)}] = spec.Timestamp(minValid)
	}
	for _, f := range k.ring.KeyFetchers {
		res, err := f.FetchKeys(ctx, reqs)
		if err != nil || len(res) == 0 {
			continue
		}
		return k.db.StoreKeys(ctx, res)
	}
	return nil
}

// items reads one server's stored keys: one Query of its partition.
func (db *Database) items(ctx context.Context, server string) ([]keyItem, error) {
	var items []keyItem
	if _, err := db.Store.QueryPage(ctx, store.Query{PK: keyPrefix + server}, &items); err != nil {
		return nil, err
	}
	return items, nil
}
