package e2ekeys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Device lists across servers (the spec's "Device management" of the
// server-server API).
//
// Out: each change of a local user's device keys is numbered in the user's
// stream (k|stream in e2ekeys|<user ID>, a counter) and sent as an
// m.device_list_update EDU to every server that shares a room with the user;
// a change of their master or self-signing key as m.signing_key_update.
//
// In: a remote user's partition devlist|<user ID> holds
//
//   - room|<room ID>: their membership of a room this server is in, kept
//     from the member events appended here (MembersChanged): who to tell
//     when their devices change, and whether a local user still shares a
//     room with them;
//   - stream: the newest stream ID of their device list seen here.
//
// An update whose prev_id does not name the stream ID seen last shows an
// update was missed: the user's device list is read again from their
// server (GET /user/devices) for its stream ID. Keys are never cached
// here: /keys/query asks their server each time (remote.go).

// Device list EDU types.
const (
	DeviceListUpdate = "m.device_list_update"
	SigningKeyUpdate = "m.signing_key_update"
)

// streamSK is the counter of a local user's device list updates, in
// e2ekeys|<user ID>, outside k| so that /keys/query does not read it.
const streamSK = "stream"

type streamItem struct {
	PK     string `dynamodbav:"pk"`
	SK     string `dynamodbav:"sk"`
	Stream int64  `dynamodbav:"n"`
}

func remotePK(userID string) string { return "devlist|" + userID }

const remoteRoomPrefix = "room|"

// remoteRoom is a remote user's membership of a room this server is in.
type remoteRoom struct {
	PK         string `dynamodbav:"pk"`
	SK         string `dynamodbav:"sk"`
	Membership string `dynamodbav:"m"`
}

// streamID reads the stream ID of a local user's device list: 0 before its
// first change. Cost: one GetItem.
func (s *Service) streamID(ctx context.Context, userID string) (int64, error) {
	var it streamItem
	err := s.Store.Get(ctx, store.Key{PK: userPK(userID), SK: streamSK}, &it)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return 0, fmt.Errorf("device list stream of %s: %w", userID, err)
	}
	return it.Stream, nil
}

// deviceUpdate is the content of m.device_list_update.
type deviceUpdate struct {
	UserID      string          `json:"user_id"`
	DeviceID    string          `json:"device_id"`
	DisplayName string          `json:"device_display_name,omitempty"`
	StreamID    int64           `json:"stream_id"`
	PrevID      []int64         `json:"prev_id"`
	Deleted     bool            `json:"deleted,omitempty"`
	Keys        json.RawMessage `json:"keys,omitempty"`
}

// signingUpdate is the content of m.signing_key_update.
type signingUpdate struct {
	UserID         string          `json:"user_id"`
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
}

// destinations lists the other servers that share a room with a local
// user; none without SendEDU or Servers.
func (s *Service) destinations(ctx context.Context, userID string) ([]string, error) {
	if s.SendEDU == nil || s.Servers == nil {
		return nil, nil
	}
	servers, err := s.Servers(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("servers sharing a room with %s: %w", userID, err)
	}
	return slices.DeleteFunc(servers, func(srv string) bool { return srv == s.ServerName || srv == "" }), nil
}

// devicesChanged numbers a change of each of a local user's devices and
// sends it to the servers sharing a room with the user: the device's keys
// as /keys/query shows them to another server, or deleted. Cost, with
// servers to tell: the Servers hook, one UpdateItem of the counter per
// device, one Query of the user's keys and devices (as /keys/query), and
// the sender's outbox writes per server.
func (s *Service) devicesChanged(ctx context.Context, userID string, devices []string, deleted bool) error {
	dests, err := s.destinations(ctx, userID)
	if err != nil || len(dests) == 0 {
		return err
	}
	var v userView
	if !deleted {
		if v, err = s.view(ctx, userID, "", devices); err != nil {
			return err
		}
	}
	for _, d := range devices {
		n, err := s.Store.Increment(ctx, store.Key{PK: userPK(userID), SK: streamSK}, "n", time.Time{})
		if err != nil {
			return fmt.Errorf("device list stream of %s: %w", userID, err)
		}
		u := deviceUpdate{UserID: userID, DeviceID: d, StreamID: n, PrevID: []int64{}, Deleted: deleted}
		if n > 1 {
			u.PrevID = []int64{n - 1}
		}
		if !deleted {
			keys, ok := v.devices[d]
			if !ok {
				continue // deleted meanwhile: its deletion tells
			}
			u.Keys, u.DisplayName = keys, displayName(keys)
		}
		if err := s.SendEDU(ctx, dests, DeviceListUpdate, mustJSON(u)); err != nil {
			return fmt.Errorf("device list update of %s: %w", userID, err)
		}
	}
	return nil
}

// signingKeysChanged sends a local user's master and self-signing keys to
// the servers sharing a room with them.
func (s *Service) signingKeysChanged(ctx context.Context, userID string) error {
	dests, err := s.destinations(ctx, userID)
	if err != nil || len(dests) == 0 {
		return err
	}
	v, err := s.view(ctx, userID, "", []string{})
	if err != nil {
		return err
	}
	u := signingUpdate{UserID: userID, MasterKey: v.master, SelfSigningKey: v.selfSigning}
	if err := s.SendEDU(ctx, dests, SigningKeyUpdate, mustJSON(u)); err != nil {
		return fmt.Errorf("signing key update of %s: %w", userID, err)
	}
	return nil
}

// signaturesChanged tells other servers of the signatures a local user
// added to their own keys: signed devices as device list updates, a
// signed master key as a signing key update.
func (s *Service) signaturesChanged(ctx context.Context, userID string, items []any) error {
	var targets []string
	for _, it := range items {
		k, ok := it.(userKey)
		if ok && k.PK == userPK(userID) && strings.HasPrefix(k.SK, sigPrefix) && !slices.Contains(targets, k.Target) {
			targets = append(targets, k.Target)
		}
	}
	if len(targets) == 0 {
		return nil
	}
	if dests, err := s.destinations(ctx, userID); err != nil || len(dests) == 0 {
		return err
	}
	// A target is a device ID or the master public key: the user's keys
	// tell which.
	devs, err := s.userKeys(ctx, userID, devPrefix)
	if err != nil {
		return err
	}
	var devices []string
	master := false
	for _, t := range targets {
		if slices.ContainsFunc(devs, func(k userKey) bool { return k.SK == devPrefix+t }) {
			devices = append(devices, t)
		} else {
			master = true
		}
	}
	if len(devices) > 0 {
		if err := s.devicesChanged(ctx, userID, devices, false); err != nil {
			return err
		}
	}
	if master {
		return s.signingKeysChanged(ctx, userID)
	}
	return nil
}

// displayName is the device_display_name view put in keys' unsigned.
func displayName(keys json.RawMessage) string {
	var doc struct {
		Unsigned struct {
			Name string `json:"device_display_name"`
		} `json:"unsigned"`
	}
	_ = json.Unmarshal(keys, &doc)
	return doc.Unsigned.Name
}

// MemberChange is a membership of a remote user in a room, as a member
// event appended here says.
type MemberChange struct {
	RoomID, UserID, Membership string
}

// MembersChanged records remote users' memberships of rooms this server is
// in (rooms.Service.Appended, member events of other servers' users). Cost:
// one BatchWriteItem per 25 changes, 1 WCU each.
func (s *Service) MembersChanged(ctx context.Context, changes []MemberChange) error {
	items := make([]any, 0, len(changes))
	seen := map[[2]string]int{}
	for _, c := range changes {
		if srv, err := serverOf(c.UserID); err != nil || srv == s.ServerName || len(c.UserID) > maxIDBytes {
			continue
		}
		it := remoteRoom{PK: remotePK(c.UserID), SK: remoteRoomPrefix + c.RoomID, Membership: c.Membership}
		k := [2]string{c.UserID, c.RoomID}
		if i, ok := seen[k]; ok {
			items[i] = it // a batch writes a key once: the last change wins
			continue
		}
		seen[k] = len(items)
		items = append(items, it)
	}
	if len(items) == 0 {
		return nil
	}
	if err := s.Store.PutMany(ctx, items); err != nil {
		return fmt.Errorf("remote members: %w", err)
	}
	return nil
}

// RoomJoined records the remote members of a room a local user joined,
// once per room: a room taken in through a remote join tells only of the
// join, not of the members already there, whom members lists (the room's
// joined members of other servers). The room is marked first (a create of
// devlist-room|<room ID>), so that the next local join reads nothing.
// Cost: one conditional PutItem; the first time, the members read and one
// BatchWriteItem per 25 of them.
func (s *Service) RoomJoined(ctx context.Context, roomID string, members func(ctx context.Context) ([]MemberChange, error)) error {
	mark := remoteRoom{PK: "devlist-room|" + roomID, SK: "members", Membership: "recorded"}
	err := s.Store.Create(ctx, mark)
	if errors.Is(err, store.ErrExists) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remote members of %s: %w", roomID, err)
	}
	changes, err := members(ctx)
	if err == nil {
		err = s.MembersChanged(ctx, changes)
	}
	if err != nil {
		_ = s.Store.Delete(context.WithoutCancel(ctx), store.Key{PK: mark.PK, SK: mark.SK})
		return fmt.Errorf("remote members of %s: %w", roomID, err)
	}
	return nil
}

// remoteState is what this server holds of a remote user's device list:
// the rooms they are joined to here and the stream ID seen last.
type remoteState struct {
	rooms  []string
	stream int64
	seen   bool
}

// readRemote reads a remote user's partition. Cost: one Query, 1 RCU per 4
// KB (about 40 rooms).
func (s *Service) readRemote(ctx context.Context, userID string) (remoteState, error) {
	var st remoteState
	q := store.Query{PK: remotePK(userID)}
	for {
		var page []struct {
			SK         string `dynamodbav:"sk"`
			Membership string `dynamodbav:"m"`
			Stream     int64  `dynamodbav:"n"`
		}
		next, err := s.Store.QueryPage(ctx, q, &page)
		if err != nil {
			return st, fmt.Errorf("device list of %s: %w", userID, err)
		}
		for _, it := range page {
			switch {
			case it.SK == streamSK:
				st.stream, st.seen = it.Stream, true
			case strings.HasPrefix(it.SK, remoteRoomPrefix) && it.Membership == "join":
				st.rooms = append(st.rooms, strings.TrimPrefix(it.SK, remoteRoomPrefix))
			}
		}
		if next == "" {
			return st, nil
		}
		q.Cursor = next
	}
}

// RemoteRooms lists the rooms here a remote user is joined to, as their
// member events appended here said. Cost: as readRemote.
func (s *Service) RemoteRooms(ctx context.Context, userID string) ([]string, error) {
	st, err := s.readRemote(ctx, userID)
	return st.rooms, err
}

// HandleDeviceListUpdate takes an inbound m.device_list_update EDU from
// origin: an update of a user of another server is ignored, and so is one
// of a user who shares no room here. A prev_id that does not name the
// stream ID seen last means updates were missed: the list is read again
// from the user's server (GET /user/devices). The local users who share a
// room with the user are told (RemoteChanged). Cost: one Query of the
// user's partition, one PutItem of the stream ID, and what RemoteChanged
// costs; a resync adds one federation request.
// https://spec.matrix.org/v1.19/server-server-api/#m.device_list_update-schema
func (s *Service) HandleDeviceListUpdate(ctx context.Context, origin string, content json.RawMessage) error {
	var u deviceUpdate
	if err := json.Unmarshal(content, &u); err != nil {
		return fmt.Errorf("device list update from %s: %w", origin, err)
	}
	if srv, err := serverOf(u.UserID); err != nil || srv != origin || len(u.UserID) > maxIDBytes {
		return fmt.Errorf("device list update from %s for %q: not a user of that server", origin, u.UserID)
	}
	st, err := s.readRemote(ctx, u.UserID)
	if err != nil || len(st.rooms) == 0 {
		return err
	}
	if st.seen && u.StreamID <= st.stream && u.StreamID > 0 {
		return nil // seen already, or older than what was seen
	}
	stream := u.StreamID
	if gap := len(u.PrevID) > 0 && (!st.seen || !slices.Contains(u.PrevID, st.stream)); gap {
		devs, err := s.RemoteDevices(ctx, u.UserID)
		if err != nil {
			return fmt.Errorf("resync after a gap: %w", err)
		}
		stream = max(stream, devs.StreamID)
	}
	if err := s.Store.Put(ctx, streamItem{PK: remotePK(u.UserID), SK: streamSK, Stream: stream}); err != nil {
		return fmt.Errorf("device list of %s: %w", u.UserID, err)
	}
	return s.remoteChanged(ctx, u.UserID, st.rooms)
}

// HandleSigningKeyUpdate takes an inbound m.signing_key_update EDU from
// origin: the local users who share a room with its user are told
// (RemoteChanged). Cost: one Query of the user's partition and what
// RemoteChanged costs.
// https://spec.matrix.org/v1.19/server-server-api/#m.signing_key_update-schema
func (s *Service) HandleSigningKeyUpdate(ctx context.Context, origin string, content json.RawMessage) error {
	var u signingUpdate
	if err := json.Unmarshal(content, &u); err != nil {
		return fmt.Errorf("signing key update from %s: %w", origin, err)
	}
	if srv, err := serverOf(u.UserID); err != nil || srv != origin || len(u.UserID) > maxIDBytes {
		return fmt.Errorf("signing key update from %s for %q: not a user of that server", origin, u.UserID)
	}
	st, err := s.readRemote(ctx, u.UserID)
	if err != nil || len(st.rooms) == 0 {
		return err
	}
	return s.remoteChanged(ctx, u.UserID, st.rooms)
}

func (s *Service) remoteChanged(ctx context.Context, userID string, rooms []string) error {
	if s.RemoteChanged == nil {
		return nil
	}
	if err := s.RemoteChanged(ctx, userID, rooms); err != nil {
		return fmt.Errorf("device list of %s changed: %w", userID, err)
	}
	return nil
}
