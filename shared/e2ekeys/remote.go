package e2ekeys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	gosync "sync"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/fedclient"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Keys of other servers' users: POST /keys/query and /keys/claim ask their
// servers, one request per server, all at once, each bounded by the
// request's timeout. Nothing of theirs is cached: every query goes to the
// server that holds the keys, which then always answers with its current
// ones, and the device list EDUs only tell local clients when to ask
// again (docs/storage.md, "Remote device lists").

// Remote sends signed federation requests (fedclient.Client). The answers
// are decoded into raw JSON, so that keys reach clients byte for byte as
// their owners signed them.
type Remote interface {
	Get(ctx context.Context, destination, path string, out any) error
	Post(ctx context.Context, destination, path string, body, out any) error
}

// DefaultRemoteTimeout is how long /keys/query and /keys/claim wait for
// other servers when the request names no timeout: the spec's default.
const DefaultRemoteTimeout = 10 * time.Second

// maxRemoteTimeout bounds a timeout a client asks for: API Gateway ends a
// request at 30 s, and the local part of the answer must still be written.
const maxRemoteTimeout = 20 * time.Second

// remoteTimeout is the time other servers get: timeout ms as the request
// says (nil: the default), at most maxRemoteTimeout.
func remoteTimeout(ms *int64) time.Duration {
	if ms == nil || *ms < 0 {
		return DefaultRemoteTimeout
	}
	return min(time.Duration(*ms)*time.Millisecond, maxRemoteTimeout)
}

// remoteQuery is the answer of POST /_matrix/federation/v1/user/keys/query.
type remoteQuery struct {
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys"`
}

// byServer groups user IDs of other servers by their server; malformed ones
// are left out.
func (s *Service) byServer(users []string) map[string][]string {
	out := map[string][]string{}
	for _, u := range users {
		server, err := serverOf(u)
		if err != nil || server == s.ServerName {
			continue
		}
		out[server] = append(out[server], u)
	}
	return out
}

// maxServersAtOnce bounds the servers one request asks at once; all of
// them share the request's timeout.
const maxServersAtOnce = 16

// eachServer runs ask for every server, up to maxServersAtOnce at once, all
// within timeout, and returns the failures of those that did not answer,
// by server name, as the spec's failures object shows them.
func (s *Service) eachServer(ctx context.Context, servers []string, timeout time.Duration, ask func(ctx context.Context, server string) error) map[string]any {
	failures := map[string]any{}
	if s.Remote == nil {
		for _, srv := range servers {
			failures[srv] = remoteFailure(srv)
		}
		return failures
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var mu gosync.Mutex
	var wg gosync.WaitGroup
	slots := make(chan struct{}, maxServersAtOnce)
	for _, srv := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case slots <- struct{}{}:
				defer func() { <-slots }()
			case <-ctx.Done():
			}
			err := ctx.Err()
			if err == nil {
				err = ask(ctx, srv)
			}
			if err == nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			failures[srv] = serverFailure(srv, err)
		}()
	}
	wg.Wait()
	return failures
}

// serverFailure is the failures entry of a server that did not answer, in
// Synapse's form: its own status if it answered with an error, else 503.
func serverFailure(server string, err error) map[string]any {
	status := http.StatusServiceUnavailable
	if e, ok := fedclient.AsError(err); ok {
		status = e.Status
	}
	msg := "not reachable"
	if errors.Is(err, context.DeadlineExceeded) {
		msg = "timed out"
	}
	return map[string]any{"status": status, "message": fmt.Sprintf("%s: %s", server, msg)}
}

// queryRemote asks the servers of the remote users of want (user ID to
// device IDs, none for all) for their keys and adds them to resp; servers
// that do not answer within timeout go to resp.Failures. A server's answer
// counts only for its own users, and only for the devices asked for; a
// device whose keys name another user or device is left out.
func (s *Service) queryRemote(ctx context.Context, want map[string][]string, timeout time.Duration, resp *queryResponse) {
	groups := s.byServer(slices.Collect(maps.Keys(want)))
	servers := slices.Sorted(maps.Keys(groups))
	var mu gosync.Mutex
	failures := s.eachServer(ctx, servers, timeout, func(ctx context.Context, srv string) error {
		body := map[string][]string{}
		for _, u := range groups[srv] {
			body[u] = append([]string{}, want[u]...)
		}
		var got remoteQuery
		err := s.Remote.Post(ctx, srv, "/_matrix/federation/v1/user/keys/query", map[string]any{"device_keys": body}, &got)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		for _, u := range groups[srv] {
			devices := map[string]json.RawMessage{}
			for id, doc := range got.DeviceKeys[u] {
				if (len(want[u]) == 0 || slices.Contains(want[u], id)) && keysOf(doc, u, id) {
					devices[id] = doc
				}
			}
			resp.DeviceKeys[u] = devices
			if k, ok := got.MasterKeys[u]; ok && keysOf(k, u, "") {
				resp.MasterKeys[u] = k
			}
			if k, ok := got.SelfSigningKeys[u]; ok && keysOf(k, u, "") {
				resp.SelfSigningKeys[u] = k
			}
		}
		return nil
	})
	for srv, f := range failures {
		resp.Failures[srv] = f
	}
}

// keysOf reports whether doc is a JSON object of userID's keys (and of
// deviceID's, when set).
func keysOf(doc json.RawMessage, userID, deviceID string) bool {
	var k struct {
		UserID   string `json:"user_id"`
		DeviceID string `json:"device_id"`
	}
	if json.Unmarshal(doc, &k) != nil || k.UserID != userID {
		return false
	}
	return deviceID == "" || k.DeviceID == deviceID
}

// claimRemote claims one-time keys of remote devices (user ID to device ID
// to algorithm) from their servers and adds them to out; servers that do
// not answer within timeout are returned as failures.
func (s *Service) claimRemote(ctx context.Context, want map[string]map[string]string, timeout time.Duration, out map[string]map[string]map[string]json.RawMessage) map[string]any {
	groups := s.byServer(slices.Collect(maps.Keys(want)))
	servers := slices.Sorted(maps.Keys(groups))
	var mu gosync.Mutex
	return s.eachServer(ctx, servers, timeout, func(ctx context.Context, srv string) error {
		body := map[string]map[string]string{}
		for _, u := range groups[srv] {
			body[u] = want[u]
		}
		var got struct {
			OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
		}
		err := s.Remote.Post(ctx, srv, "/_matrix/federation/v1/user/keys/claim", map[string]any{"one_time_keys": body}, &got)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		for _, u := range groups[srv] {
			for d, keys := range got.OneTimeKeys[u] {
				if _, asked := want[u][d]; !asked || len(keys) == 0 {
					continue
				}
				if out[u] == nil {
					out[u] = map[string]map[string]json.RawMessage{}
				}
				out[u][d] = keys
			}
		}
		return nil
	})
}

// remoteMaster asks a remote user's server for their master key:
// store.ErrNotFound when it has none (or does not answer).
func (s *Service) remoteMaster(ctx context.Context, userID string) (string, error) {
	server, err := serverOf(userID)
	if err != nil || s.Remote == nil {
		return "", store.ErrNotFound
	}
	ctx, cancel := context.WithTimeout(ctx, DefaultRemoteTimeout)
	defer cancel()
	var got remoteQuery
	err = s.Remote.Post(ctx, server, "/_matrix/federation/v1/user/keys/query",
		map[string]any{"device_keys": map[string][]string{userID: {}}}, &got)
	k, ok := got.MasterKeys[userID]
	if err != nil || !ok || !keysOf(k, userID, "") {
		return "", store.ErrNotFound
	}
	return string(k), nil
}

// addOwnSignatures adds to the remote users' master keys in resp the
// signatures requester made on them with their user-signing key, which
// are kept here (otherSignature). Cost: one BatchGetItem per 100 users.
func (s *Service) addOwnSignatures(ctx context.Context, requester string, resp *queryResponse) error {
	var keys []store.Key
	for u := range resp.MasterKeys {
		keys = append(keys, store.Key{PK: userPK(u), SK: usigPrefix + requester})
	}
	if len(keys) == 0 || requester == "" {
		return nil
	}
	found := map[string]userKey{}
	err := s.Store.GetMany(ctx, keys, func(k store.Key, decode func(out any) error) error {
		var it userKey
		if err := decode(&it); err != nil {
			return err
		}
		found[strings.TrimPrefix(k.PK, userPK(""))] = it
		return nil
	})
	if err != nil {
		return fmt.Errorf("signatures of remote master keys: %w", err)
	}
	for u, it := range found {
		doc := resp.MasterKeys[u]
		_, pub, err := csPublicKey(string(doc))
		if err != nil || pub != it.Target {
			continue // a signature of a master key since replaced
		}
		signed, err := withSignatures(string(doc), map[string]map[string]string{requester: {it.KeyID: it.Sig}}, nil)
		if err != nil {
			return fmt.Errorf("master key of %s: %w", u, err)
		}
		resp.MasterKeys[u] = signed
	}
	return nil
}

// RemoteDevices is GET /_matrix/federation/v1/user/devices/{userId} of a
// remote user, asked of their server: the stream ID of their device list
// and their devices.
func (s *Service) RemoteDevices(ctx context.Context, userID string) (UserDevices, error) {
	var out UserDevices
	server, err := serverOf(userID)
	if err != nil {
		return out, err
	}
	if s.Remote == nil {
		return out, fmt.Errorf("devices of %s: no federation client", userID)
	}
	err = s.Remote.Get(ctx, server, "/_matrix/federation/v1/user/devices/"+url.PathEscape(userID), &out)
	if err != nil {
		return out, fmt.Errorf("devices of %s: %w", userID, err)
	}
	if out.UserID != userID {
		return out, fmt.Errorf("devices of %s: %s answered for %q", userID, server, out.UserID)
	}
	return out, nil
}
