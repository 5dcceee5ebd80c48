package e2ekeys

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	gosync "sync"

	"golang.org/x/sync/errgroup"
)

// What other servers may read of local users' keys (shared/federation):
// what a user who is not the owner sees of them through /keys/query, and
// one-time keys claimed for them.

// ServerQuery is the answer of POST /_matrix/federation/v1/user/keys/query:
// local users only, no user-signing keys (another server's users never see
// them).
type ServerQuery struct {
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys,omitempty"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys,omitempty"`
}

// QueryForServer reads the keys of the local users among deviceKeys (user
// ID to the device IDs wanted, none meaning all) as a user of another
// server sees them; users of other servers and malformed IDs are skipped.
// Cost: per user, as /keys/query (one Query of their keys, one of their
// devices).
func (s *Service) QueryForServer(ctx context.Context, deviceKeys map[string][]string) (ServerQuery, error) {
	out := ServerQuery{DeviceKeys: map[string]map[string]json.RawMessage{},
		MasterKeys: map[string]json.RawMessage{}, SelfSigningKeys: map[string]json.RawMessage{}}
	var users []string
	for userID, devices := range deviceKeys {
		if checkIDLength("device_keys", "user ID", userID) != nil {
			continue
		}
		if slices.ContainsFunc(devices, func(d string) bool { return checkIDLength("device_keys", "device ID", d) != nil }) {
			continue
		}
		if server, err := serverOf(userID); err == nil && server == s.ServerName {
			users = append(users, userID)
		}
	}
	var mu gosync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for _, u := range users {
		g.Go(func() error {
			v, err := s.view(gctx, u, "", deviceKeys[u])
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			out.DeviceKeys[u] = v.devices
			if v.master != nil {
				out.MasterKeys[u] = v.master
			}
			if v.selfSigning != nil {
				out.SelfSigningKeys[u] = v.selfSigning
			}
			return nil
		})
	}
	return out, g.Wait()
}

// UserDevices is the answer of GET /_matrix/federation/v1/user/devices/{userId}.
type UserDevices struct {
	UserID string `json:"user_id"`
	// StreamID is the stream ID of the user's newest m.device_list_update
	// (0 before the first), which the devices listed include.
	StreamID       int64           `json:"stream_id"`
	Devices        []Device        `json:"devices"`
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
}

// Device is one device of UserDevices.
type Device struct {
	DeviceID    string          `json:"device_id"`
	Keys        json.RawMessage `json:"keys"`
	DisplayName string          `json:"device_display_name,omitempty"`
}

// DevicesForServer lists a local user's devices that have identity keys,
// with those keys and their cross-signing keys, as another server sees
// them; an unknown user has none. The spec makes keys required, so a
// device that never uploaded keys is left out. The stream ID is read
// first, so that the devices are at least as new as it says. Cost: as one
// user of QueryForServer, and one GetItem of the stream ID.
func (s *Service) DevicesForServer(ctx context.Context, userID string) (UserDevices, error) {
	out := UserDevices{UserID: userID, Devices: []Device{}}
	if err := checkIDLength("user_id", "user ID", userID); err != nil {
		return out, err
	}
	stream, err := s.streamID(ctx, userID)
	if err != nil {
		return out, err
	}
	out.StreamID = stream
	v, err := s.view(ctx, userID, "", nil)
	if err != nil {
		return out, err
	}
	for id, keys := range v.devices {
		// view put the display name in unsigned, as /keys/query shows it.
		out.Devices = append(out.Devices, Device{DeviceID: id, Keys: keys, DisplayName: displayName(keys)})
	}
	slices.SortFunc(out.Devices, func(a, b Device) int { return strings.Compare(a.DeviceID, b.DeviceID) })
	out.MasterKey, out.SelfSigningKey = v.master, v.selfSigning
	return out, nil
}

// ClaimForServer claims one-time keys of local devices for another
// server's users, as POST /keys/claim does for local ones: want is user
// ID to device ID to algorithm; users of other servers are skipped. It
// returns user ID to device ID to "<algorithm>:<key ID>" to key, and tells
// the devices' syncs of their new counts.
func (s *Service) ClaimForServer(ctx context.Context, want map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	type one struct{ userID, deviceID, algorithm string }
	var wants []one
	for userID, devices := range want {
		if err := checkIDLength("one_time_keys", "user ID", userID); err != nil {
			return nil, err
		}
		server, err := serverOf(userID)
		if err != nil || server != s.ServerName {
			continue
		}
		for deviceID, alg := range devices {
			if err := checkIDLength("one_time_keys", "device ID", deviceID); err != nil {
				return nil, err
			}
			wants = append(wants, one{userID, deviceID, alg})
		}
	}
	var (
		mu  gosync.Mutex
		out = map[string]map[string]map[string]json.RawMessage{}
	)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for _, w := range wants {
		g.Go(func() error {
			c, ok, err := s.claim(gctx, w.userID, w.deviceID, w.algorithm)
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
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("claim keys for another server: %w", err)
	}
	return out, s.tellClaimed(ctx, out)
}
