package e2ekeys

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	gosync "sync"

	"golang.org/x/sync/errgroup"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// claimRequest is the body of POST /keys/claim: user ID to device ID to
// algorithm; the time in ms other servers are given.
type claimRequest struct {
	OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	Timeout     *int64                       `json:"timeout"`
}

// claimed is one key handed out.
type claimed struct {
	userID, deviceID string
	name             string // <algorithm>:<key ID>
	key              json.RawMessage
}

// maxClaimTries bounds the rounds a fallback claim retries when the key is
// replaced under it.
const maxClaimTries = 3

// handleClaim serves POST /_matrix/client/v3/keys/claim. Each requested
// device gets its oldest unclaimed one-time key of the algorithm, else its
// fallback key (marked used, not removed). Keys of other servers' devices
// are claimed from their servers, all at once (claimRemote); a server that
// does not answer within the request's timeout (10 s by default) is
// reported in failures by server name. A user ID without a server name is
// 400 M_INVALID_PARAM, as in Synapse.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3keysclaim
func (s *Service) handleClaim(w http.ResponseWriter, r *http.Request) error {
	var req claimRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	type want struct{ userID, deviceID, algorithm string }
	var wants []want
	for userID, devices := range req.OneTimeKeys {
		if err := checkIDLength("one_time_keys", "user ID", userID); err != nil {
			return err
		}
		for deviceID := range devices {
			if err := checkIDLength("one_time_keys", "device ID", deviceID); err != nil {
				return err
			}
		}
	}
	remote := map[string]map[string]string{}
	for userID, devices := range req.OneTimeKeys {
		server, err := serverOf(userID)
		if err != nil {
			return err
		}
		if server != s.ServerName {
			remote[userID] = devices
			continue
		}
		for deviceID, alg := range devices {
			wants = append(wants, want{userID, deviceID, alg})
		}
	}
	var (
		mu       gosync.Mutex
		out      = map[string]map[string]map[string]json.RawMessage{}
		failures = map[string]any{}
	)
	g, gctx := errgroup.WithContext(r.Context())
	g.SetLimit(parallel + 1)
	if len(remote) > 0 {
		g.Go(func() error {
			got := map[string]map[string]map[string]json.RawMessage{}
			f := s.claimRemote(gctx, remote, remoteTimeout(req.Timeout), got)
			mu.Lock()
			defer mu.Unlock()
			maps.Copy(out, got)
			maps.Copy(failures, f)
			return nil
		})
	}
	for i := range wants {
		g.Go(func() error {
			c, ok, err := s.claim(gctx, wants[i].userID, wants[i].deviceID, wants[i].algorithm)
			if err != nil || !ok {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			if out[c.userID] == nil {
				out[c.userID] = map[string]map[string]json.RawMessage{}
			}
			out[c.userID][c.deviceID] = map[string]json.RawMessage{c.name: c.key}
			return nil
		})
	}
	err := g.Wait()
	if err != nil {
		return err
	}
	if err := s.tellClaimed(r.Context(), localOnly(out, s.ServerName)); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"one_time_keys": out, "failures": failures})
	return nil
}

// tellClaimed runs CountsChanged once for all the devices whose keys a
// request claimed, so that their syncs learn the new counts in one write.
func (s *Service) tellClaimed(ctx context.Context, out map[string]map[string]map[string]json.RawMessage) error {
	devices := map[string][]string{}
	for u, byDevice := range out {
		for d := range byDevice {
			devices[u] = append(devices[u], d)
		}
	}
	return s.countsChanged(ctx, devices)
}

// countsChanged runs CountsChanged for devices, if any.
func (s *Service) countsChanged(ctx context.Context, devices map[string][]string) error {
	if s.CountsChanged == nil || len(devices) == 0 {
		return nil
	}
	if err := s.CountsChanged(ctx, devices); err != nil {
		return fmt.Errorf("tell of new key counts: %w", err)
	}
	return nil
}

// localOnly is the part of out that concerns local users.
func localOnly(out map[string]map[string]map[string]json.RawMessage, serverName string) map[string]map[string]map[string]json.RawMessage {
	local := map[string]map[string]map[string]json.RawMessage{}
	for u, v := range out {
		if srv, err := serverOf(u); err == nil && srv == serverName {
			local[u] = v
		}
	}
	return local
}

// serverOf returns the server name of a user ID, or 400 M_INVALID_PARAM.
func serverOf(userID string) (string, error) {
	_, server, ok := strings.Cut(userID, ":")
	if !strings.HasPrefix(userID, "@") || !ok || server == "" {
		return "", httpapi.InvalidParam("%q is not a user ID", userID)
	}
	return server, nil
}

// checkIDLength refuses id, a user ID or device ID (kind) named in field,
// past maxIDBytes: 400 M_INVALID_PARAM.
func checkIDLength(field, kind, id string) error {
	if len(id) <= maxIDBytes {
		return nil
	}
	return httpapi.InvalidParam("%s: %s %q... is %d bytes, over the limit of %d bytes",
		field, kind, strings.ToValidUTF8(id[:32], ""), len(id), maxIDBytes)
}

// remoteFailure is the failure reported for a server when Remote is nil,
// in Synapse's form for an unreachable server.
func remoteFailure(server string) map[string]any {
	return map[string]any{"status": http.StatusServiceUnavailable,
		"message": fmt.Sprintf("cannot ask %s: no federation client is configured", server)}
}

// claim hands out a key of a local device for algorithm: its oldest
// unclaimed one-time key, else its fallback key. ok is false when it has
// neither.
//
// A one-time key is claimed by turning it into a tombstone with a write
// conditional on claimed being still false: of any number of claimers, in
// any number of processes, one wins each key. Keys of one upload are equal
// in age (the spec orders uploads, not the keys within one), so concurrent
// claimers pick among them at random rather than all racing for the same
// key. Cost: one Query of the algorithm's keys (1 RCU per 4 KB) and one
// conditional PutItem per attempt (1 WCU each); with no one-time key left,
// one GetItem and one conditional PutItem of the fallback key instead (the
// write only the first time it is handed out).
func (s *Service) claim(ctx context.Context, userID, deviceID, algorithm string) (claimed, bool, error) {
	if deviceID == "" || strings.Contains(deviceID, "|") || len(deviceID) > maxKeyPart || algorithm == "" || len(algorithm) > maxKeyPart {
		return claimed{}, false, nil
	}
	items, err := s.deviceKeys(ctx, userID, deviceID, otkPrefix+escape(algorithm)+"|")
	if err != nil {
		return claimed{}, false, fmt.Errorf("claim: %w", err)
	}
	for _, k := range claimOrder(items) {
		tomb := k
		tomb.Claimed = true
		tomb.Expires = s.now().Add(tombstoneTTL).Unix()
		err := s.Store.PutIf(ctx, tomb, "claimed", false)
		if errors.Is(err, store.ErrConflict) {
			continue // another claimer won this one
		}
		if err != nil {
			return claimed{}, false, fmt.Errorf("claim: %w", err)
		}
		_, id, _ := parseOTKSK(k.SK)
		return claimed{userID, deviceID, algorithm + ":" + id, json.RawMessage(k.Key)}, true, nil
	}
	return s.claimFallback(ctx, userID, deviceID, algorithm)
}

// claimOrder lists the unclaimed keys oldest upload first, each upload's
// keys shuffled.
func claimOrder(items []deviceKey) []deviceKey {
	var free []deviceKey
	for _, it := range items {
		if !it.Claimed {
			free = append(free, it)
		}
	}
	rand.Shuffle(len(free), func(i, j int) { free[i], free[j] = free[j], free[i] })
	slices.SortStableFunc(free, func(a, b deviceKey) int { return cmp.Compare(a.Uploaded, b.Uploaded) })
	return free
}

// claimFallback hands out the fallback key of algorithm and marks it used,
// unless it was replaced since it was read: then the new key is handed out.
func (s *Service) claimFallback(ctx context.Context, userID, deviceID, algorithm string) (claimed, bool, error) {
	k := fallbackKey(userID, deviceID, algorithm)
	for range maxClaimTries {
		var fb deviceKey
		err := s.Store.Get(ctx, k, &fb)
		if errors.Is(err, store.ErrNotFound) {
			return claimed{}, false, nil
		}
		if err != nil {
			return claimed{}, false, fmt.Errorf("claim fallback key: %w", err)
		}
		c := claimed{userID, deviceID, algorithm + ":" + fb.KeyID, json.RawMessage(fb.Key)}
		if fb.Used {
			return c, true, nil
		}
		used := fb
		used.Used = true
		err = s.Store.PutIf(ctx, used, "key", fb.Key)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return claimed{}, false, fmt.Errorf("claim fallback key: %w", err)
		}
		return c, true, nil
	}
	return claimed{}, false, fmt.Errorf("claim fallback key: replaced %d times while claimed", maxClaimTries)
}
