package e2ekeys

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	gosync "sync"

	"golang.org/x/sync/errgroup"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
)

// queryRequest is the body of POST /keys/query: user ID to the device IDs
// wanted, none meaning all; the time in ms other servers are given.
type queryRequest struct {
	DeviceKeys map[string][]string `json:"device_keys"`
	Timeout    *int64              `json:"timeout"`
}

// queryResponse is the answer of POST /keys/query.
type queryResponse struct {
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	Failures        map[string]any                        `json:"failures"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys"`
	UserSigningKeys map[string]json.RawMessage            `json:"user_signing_keys"`
}

// userView is what one user's keys show to one requester.
type userView struct {
	devices                   map[string]json.RawMessage
	master, selfSigning, user json.RawMessage
}

// handleQuery serves POST /_matrix/client/v3/keys/query for local users:
// each device's keys with the signatures its user's self-signing key added
// and its display name in unsigned, and the users' cross-signing keys; the
// user-signing key only of the requester themselves. A master key carries
// the signatures its user's devices added, and the requester's own
// signature by their user-signing key, never another user's (the spec's
// rules of what users see). Users of other servers are asked of their
// servers, all at once (queryRemote); a server that does not answer
// within the request's timeout (10 s by default) is reported in failures
// by server name. Malformed user IDs are skipped, as in Synapse.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3keysquery
func (s *Service) handleQuery(w http.ResponseWriter, r *http.Request) error {
	var req queryRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.DeviceKeys == nil {
		return httpapi.BadJSON("'device_keys' must be a JSON object")
	}
	for userID, devices := range req.DeviceKeys {
		if err := checkIDLength("device_keys", "user ID", userID); err != nil {
			return err
		}
		for _, deviceID := range devices {
			if err := checkIDLength("device_keys", "device ID", deviceID); err != nil {
				return err
			}
		}
	}
	me := accounts.Caller(r.Context()).UserID
	resp := queryResponse{
		DeviceKeys:      map[string]map[string]json.RawMessage{},
		Failures:        map[string]any{},
		MasterKeys:      map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{},
		UserSigningKeys: map[string]json.RawMessage{},
	}
	var users []string
	remote := map[string][]string{}
	for userID := range req.DeviceKeys {
		server, err := serverOf(userID)
		switch {
		case err != nil:
		case server != s.ServerName:
			remote[userID] = req.DeviceKeys[userID]
		default:
			users = append(users, userID)
		}
	}
	var mu gosync.Mutex
	g, gctx := errgroup.WithContext(r.Context())
	g.SetLimit(parallel + 1)
	if len(remote) > 0 {
		// resp's maps are shared: the remote answers are merged under mu.
		var remoteResp queryResponse
		remoteResp.DeviceKeys, remoteResp.Failures = map[string]map[string]json.RawMessage{}, map[string]any{}
		remoteResp.MasterKeys, remoteResp.SelfSigningKeys = map[string]json.RawMessage{}, map[string]json.RawMessage{}
		g.Go(func() error {
			s.queryRemote(gctx, remote, remoteTimeout(req.Timeout), &remoteResp)
			if err := s.addOwnSignatures(gctx, me, &remoteResp); err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			maps.Copy(resp.DeviceKeys, remoteResp.DeviceKeys)
			maps.Copy(resp.Failures, remoteResp.Failures)
			maps.Copy(resp.MasterKeys, remoteResp.MasterKeys)
			maps.Copy(resp.SelfSigningKeys, remoteResp.SelfSigningKeys)
			return nil
		})
	}
	for i := range users {
		g.Go(func() error {
			u := users[i]
			v, err := s.view(gctx, u, me, req.DeviceKeys[u])
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			resp.DeviceKeys[u] = v.devices
			if v.master != nil {
				resp.MasterKeys[u] = v.master
			}
			if v.selfSigning != nil {
				resp.SelfSigningKeys[u] = v.selfSigning
			}
			if v.user != nil {
				resp.UserSigningKeys[u] = v.user
			}
			return nil
		})
	}
	err := g.Wait()
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// view reads what requester may see of a local user's keys: devices (all
// when none are named) and cross-signing keys. Another server (requester
// "") is not shown the devices' display names, as Synapse's default
// (allow_device_name_lookup_over_federation false) keeps them: the
// spec's device_display_name is optional there. Cost: one Query of the
// user's keys (1 RCU per 4 KB: about 6 devices) and the user's devices
// (accounts: one Query).
func (s *Service) view(ctx context.Context, userID, requester string, devices []string) (userView, error) {
	items, err := s.userKeys(ctx, userID, userPrefix)
	if err != nil {
		return userView{}, err
	}
	names, err := s.deviceNames(ctx, userID)
	if err != nil {
		return userView{}, err
	}
	v := userView{devices: map[string]json.RawMessage{}}
	sigs := map[string]map[string]string{} // target to key ID to signature, by the user
	var usig *userKey                      // requester's signature on the master key
	docs := map[string]string{}            // cross-signing key type to key
	for _, it := range items {
		switch {
		case strings.HasPrefix(it.SK, sigPrefix):
			if sigs[it.Target] == nil {
				sigs[it.Target] = map[string]string{}
			}
			sigs[it.Target][it.KeyID] = it.Sig
		case it.SK == usigPrefix+requester:
			usig = &it
		case strings.HasPrefix(it.SK, csPrefix):
			docs[strings.TrimPrefix(it.SK, csPrefix)] = it.Key
		}
	}
	for _, it := range items {
		id, ok := strings.CutPrefix(it.SK, devPrefix)
		if !ok || len(devices) > 0 && !slices.Contains(devices, id) {
			continue
		}
		name, exists := names[id]
		if !exists {
			continue // a device deleted, its keys not yet
		}
		unsigned := map[string]any{}
		if name != "" && requester != "" {
			unsigned["device_display_name"] = name
		}
		doc, err := withSignatures(it.Key, bySigner(userID, sigs[id]), unsigned)
		if err != nil {
			return userView{}, fmt.Errorf("keys of %s: %w", userID, err)
		}
		v.devices[id] = doc
	}
	if doc, ok := docs[Master]; ok {
		_, pub, err := csPublicKey(doc)
		if err != nil {
			return userView{}, fmt.Errorf("master key of %s: %w", userID, err)
		}
		add := bySigner(userID, sigs[pub])
		if usig != nil && usig.Target == pub && requester != userID {
			add[requester] = map[string]string{usig.KeyID: usig.Sig}
		}
		if v.master, err = withSignatures(doc, add, nil); err != nil {
			return userView{}, fmt.Errorf("master key of %s: %w", userID, err)
		}
	}
	if doc, ok := docs[SelfSigning]; ok {
		v.selfSigning = json.RawMessage(doc)
	}
	if doc, ok := docs[UserSigning]; ok && requester == userID {
		v.user = json.RawMessage(doc)
	}
	return v, nil
}

// bySigner puts the signatures one user made under their user ID.
func bySigner(userID string, sigs map[string]string) map[string]map[string]string {
	out := map[string]map[string]string{}
	if len(sigs) > 0 {
		out[userID] = sigs
	}
	return out
}

// deviceNames lists a user's devices through Devices.
func (s *Service) deviceNames(ctx context.Context, userID string) (map[string]string, error) {
	if s.Devices == nil {
		return nil, fmt.Errorf("devices of %s: no device list configured", userID)
	}
	names, err := s.Devices(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("devices of %s: %w", userID, err)
	}
	return names, nil
}
