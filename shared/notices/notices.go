// Package notices sends server notices: messages from the server's admins
// to one user, in a room of their own with the server notices user, as
// Synapse's admin API and server_notices configuration make them
// (https://element-hq.github.io/synapse/latest/server_notices.html).
//
// Storage (docs/storage.md): the user's notices room is named by one item
// in the user's partition, pk user|<user ID>, sk server_notices_room, so
// that each notice after the first finds it with one read. The notices
// user is an ordinary local account without a password or devices
// (accounts.Service.SystemUser), made with the first room.
package notices

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/accountdata"
	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/config"
	"github.com/cirrus-matrix/cirrus/shared/profile"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Tag is the room tag that marks a user's notices room, so that clients
// show it apart (the spec's "Server Notices" module).
const Tag = "m.server_notice"

// Errors callers can test for with errors.Is.
var (
	// ErrDisabled is a notice on a server without server_notices.
	ErrDisabled = errors.New("server notices are not enabled on this server")
	// ErrNoSuchUser is a notice to a local user without an account.
	ErrNoSuchUser = errors.New("user not found")
)

// Service sends server notices.
type Service struct {
	Store       *store.Store
	Rooms       *rooms.Service
	Accounts    *accounts.Service
	AccountData *accountdata.Service
	Profiles    *profile.Service
	ServerName  string
	// Config is the server_notices block; nil turns notices off.
	Config *config.ServerNotices
}

// Notice is one notice to send: an event of Type (m.room.message when
// empty) with Content, a state event when StateKey is not nil.
type Notice struct {
	UserID   string
	Type     string
	StateKey *string
	Content  json.RawMessage
}

// Origin names who sent a notice and with what transaction ID, so that a
// retry of the admin's request gives back the first event instead of a
// second one. An empty TxnID sends every time.
type Origin struct {
	AdminID, AdminDevice, TxnID string
}

type roomItem struct {
	PK     string `dynamodbav:"pk"`
	SK     string `dynamodbav:"sk"`
	RoomID string `dynamodbav:"room_id"`
	// Look is the configuration the room was last made or brought up to
	// date with: a notice compares it with the current one for free, and
	// updates the room only when an operator changed it.
	Look look `dynamodbav:"look"`
}

// look is how the configuration makes a room and its sender look.
type look struct {
	Name         string `dynamodbav:"name,omitempty"`
	Topic        string `dynamodbav:"topic,omitempty"`
	Avatar       string `dynamodbav:"avatar,omitempty"`
	SenderName   string `dynamodbav:"sender_name,omitempty"`
	SenderAvatar string `dynamodbav:"sender_avatar,omitempty"`
}

// look is the look the configuration asks for now.
func (s *Service) look() look {
	c := s.Config
	name := c.RoomName
	if name == "" {
		name = config.DefaultServerNoticesRoomName
	}
	return look{Name: name, Topic: c.RoomTopic, Avatar: c.RoomAvatarURL,
		SenderName: c.SystemMxidDisplayName, SenderAvatar: c.SystemMxidAvatarURL}
}

func roomKey(userID string) store.Key {
	return store.Key{PK: "user|" + userID, SK: "server_notices_room"}
}

// SenderID is the notices user's ID ("" when notices are off).
func (s *Service) SenderID() string {
	if s.Config == nil {
		return ""
	}
	return "@" + strings.ToLower(s.Config.SystemMxidLocalpart) + ":" + s.ServerName
}

// Send sends n into the user's notices room, made (and the user invited,
// or joined with auto_join) when they have none they are still in, and
// returns the event's ID.
func (s *Service) Send(ctx context.Context, from Origin, n Notice) (string, error) {
	if s.Config == nil {
		return "", ErrDisabled
	}
	ok, err := s.Accounts.Exists(ctx, n.UserID)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("notice to %s: %w", n.UserID, ErrNoSuchUser)
	}
	roomID, err := s.room(ctx, n.UserID)
	if err != nil {
		return "", fmt.Errorf("notice to %s: %w", n.UserID, err)
	}
	typ := n.Type
	if typ == "" {
		typ = "m.room.message"
	}
	who := rooms.Sent{Sender: s.SenderID(), Device: txnDevice(from), TxnID: from.TxnID}
	id, err := s.Rooms.Send(ctx, who, roomID, typ, n.StateKey, n.Content)
	if err != nil {
		return "", fmt.Errorf("notice to %s: %w", n.UserID, err)
	}
	return id, nil
}

// txnDevice is where the transaction IDs of an admin's device live among
// those of the notices user: apart for each admin and device, as Synapse
// keeps transaction IDs per requester's device.
func txnDevice(from Origin) string {
	esc := strings.NewReplacer("%", "%25", " ", "%20")
	return "admin " + esc.Replace(from.AdminID) + " " + esc.Replace(from.AdminDevice)
}

// room returns the user's notices room, the one named by their item while
// they are invited or joined, else a new one. As in Synapse, a user who
// left gets a new room with the next notice.
func (s *Service) room(ctx context.Context, userID string) (string, error) {
	var it roomItem
	err := s.Store.Get(ctx, roomKey(userID), &it)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return "", err
	}
	if err == nil {
		m, err := s.Rooms.Membership(ctx, userID, it.RoomID)
		if err != nil {
			return "", err
		}
		switch m {
		case "join", "invite":
			return it.RoomID, s.update(ctx, it)
		case "":
			// Made, but the invite did not happen (the request stopped).
			if err := s.update(ctx, it); err != nil {
				return "", err
			}
			return it.RoomID, s.bringIn(ctx, userID, it.RoomID)
		}
	}
	return s.newRoom(ctx, userID)
}

// update brings a room made under an older configuration up to date, as
// Synapse does on each notice: its name, topic and avatar, and the notices
// user's profile (which reaches all its rooms). Nothing is read or written
// when the configuration did not change.
func (s *Service) update(ctx context.Context, it roomItem) error {
	want := s.look()
	if it.Look == want {
		return nil
	}
	sender, empty := s.SenderID(), ""
	for _, st := range []struct{ typ, key, was, now string }{
		{"m.room.name", "name", it.Look.Name, want.Name},
		{"m.room.topic", "topic", it.Look.Topic, want.Topic},
		{"m.room.avatar", "url", it.Look.Avatar, want.Avatar},
	} {
		if st.was == st.now {
			continue
		}
		content, _ := json.Marshal(map[string]string{st.key: st.now})
		if _, err := s.Rooms.Send(ctx, rooms.Sent{Sender: sender}, it.RoomID, st.typ, &empty, content); err != nil {
			return fmt.Errorf("update notices room %s: %w", st.typ, err)
		}
	}
	if it.Look.SenderName != want.SenderName || it.Look.SenderAvatar != want.SenderAvatar {
		if err := s.senderProfile(ctx, sender); err != nil {
			return err
		}
	}
	it.Look = want
	if err := s.Store.Put(ctx, it); err != nil {
		return fmt.Errorf("update notices room: %w", err)
	}
	return nil
}

// newRoom makes a notices room for userID as Synapse makes it: private,
// named as configured, where the user's power (users_default -10) is below
// what sending any event takes, tagged m.server_notice in the user's room
// account data; then invites the user, or joins them with auto_join.
func (s *Service) newRoom(ctx context.Context, userID string) (string, error) {
	c := s.Config
	sender, err := s.Accounts.SystemUser(ctx, c.SystemMxidLocalpart, c.SystemMxidDisplayName)
	if err != nil {
		return "", err
	}
	if err := s.senderProfile(ctx, sender); err != nil {
		return "", err
	}
	lk := s.look()
	name := lk.Name
	req := rooms.CreateRequest{
		Preset:                    "private_chat",
		Name:                      &name,
		PowerLevelContentOverride: map[string]any{"users_default": -10},
	}
	if c.RoomTopic != "" {
		req.Topic = &c.RoomTopic
	}
	if c.RoomAvatarURL != "" {
		avatar, _ := json.Marshal(map[string]string{"url": c.RoomAvatarURL})
		req.InitialState = []rooms.InitialState{{Type: "m.room.avatar", Content: avatar}}
	}
	roomID, err := s.Rooms.CreateRoom(ctx, sender, req)
	if err != nil {
		return "", fmt.Errorf("create notices room: %w", err)
	}
	// Synapse tags the room when it makes it; clients see the tag once the
	// user joins, as room account data comes with joined rooms.
	tags, _ := json.Marshal(map[string]any{"tags": map[string]any{Tag: map[string]any{}}})
	if err := s.AccountData.Set(ctx, userID, roomID, "m.tag", tags); err != nil {
		return "", err
	}
	if err := s.Store.Put(ctx, roomItem{PK: roomKey(userID).PK, SK: roomKey(userID).SK, RoomID: roomID, Look: lk}); err != nil {
		return "", fmt.Errorf("name notices room: %w", err)
	}
	return roomID, s.bringIn(ctx, userID, roomID)
}

// bringIn invites the user into their notices room, and joins them when
// auto_join is set.
func (s *Service) bringIn(ctx context.Context, userID, roomID string) error {
	if err := s.Rooms.Invite(ctx, s.SenderID(), roomID, userID, "", false); err != nil {
		return fmt.Errorf("invite to notices room: %w", err)
	}
	if !s.Config.AutoJoin {
		return nil
	}
	if err := s.Rooms.Join(ctx, userID, roomID, ""); err != nil {
		return fmt.Errorf("join notices room: %w", err)
	}
	return nil
}

// senderProfile gives the notices user the configured display name and
// avatar, when its profile differs (a changed configuration): new rooms'
// member events carry them, and profile changes reach the old rooms.
func (s *Service) senderProfile(ctx context.Context, sender string) error {
	p, err := s.Profiles.Get(ctx, sender)
	if err != nil && !errors.Is(err, profile.ErrNotFound) {
		return err
	}
	c := s.Config
	if c.SystemMxidDisplayName != "" && p.DisplayName != c.SystemMxidDisplayName {
		if err := s.Profiles.Set(ctx, sender, profile.DisplayName, c.SystemMxidDisplayName); err != nil {
			return err
		}
	}
	if p.AvatarURL != c.SystemMxidAvatarURL {
		if err := s.Profiles.Set(ctx, sender, profile.AvatarURL, c.SystemMxidAvatarURL); err != nil {
			return err
		}
	}
	return nil
}
