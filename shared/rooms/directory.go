package rooms

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// ErrUnknownAlias is an alias that points nowhere.
var ErrUnknownAlias = errors.New("unknown alias")

var errBadAlias = refuse(ErrInvalid, "room alias must look like #name:server")

// aliasItem maps an alias to its room; a twin in the room's partition lists
// the room's aliases with one query.
type aliasItem struct {
	PK      string `dynamodbav:"pk"` // alias|<alias>, or room|<room ID>
	SK      string `dynamodbav:"sk"` // alias, or alias|<alias>
	RoomID  string `dynamodbav:"room"`
	Creator string `dynamodbav:"creator"`
}

func aliasKey(alias string) store.Key { return store.Key{PK: "alias|" + alias, SK: "alias"} }

// createAlias points alias at roomID; a taken alias is ErrAliasInUse.
func (s *Service) createAlias(ctx context.Context, alias, roomID, creator string) error {
	if err := ValidAlias(alias); err != nil {
		return err
	}
	if !strings.HasSuffix(alias, ":"+s.Signer.ServerName) {
		return refuse(ErrInvalid, "alias %s is not on this server", alias)
	}
	k := aliasKey(alias)
	err := s.Store.Transact(ctx,
		store.CreateOp(aliasItem{PK: k.PK, SK: k.SK, RoomID: roomID, Creator: creator}),
		store.PutOp(aliasItem{PK: roomPK(roomID), SK: "alias|" + alias, RoomID: roomID, Creator: creator}),
	)
	if errors.Is(err, store.ErrConflict) {
		return refuse(ErrAliasInUse, "alias %s is already taken", alias)
	}
	return err
}

func (s *Service) deleteAlias(ctx context.Context, alias string) error {
	var a aliasItem
	if err := s.Store.Get(ctx, aliasKey(alias), &a); err != nil {
		return err
	}
	return s.Store.Transact(ctx, store.DeleteOp(aliasKey(alias)), store.DeleteOp(store.Key{PK: roomPK(a.RoomID), SK: "alias|" + alias}))
}

// ResolveAlias returns the room alias points at.
func (s *Service) ResolveAlias(ctx context.Context, alias string) (string, error) {
	if err := ValidAlias(alias); err != nil {
		return "", err
	}
	var a aliasItem
	if err := s.Store.Get(ctx, aliasKey(alias), &a); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return "", fmt.Errorf("%w %s", ErrUnknownAlias, alias)
		}
		return "", err
	}
	return a.RoomID, nil
}

// SetAlias is PUT /directory/room/{alias}: only members may point an alias
// at a room, as Synapse asks.
func (s *Service) SetAlias(ctx context.Context, userID, alias, roomID string) error {
	if !ValidRoomID(roomID) {
		return refuse(ErrInvalid, "invalid room ID %q", roomID)
	}
	if _, err := s.Info(ctx, roomID); errors.Is(err, ErrUnknownRoom) {
		return refuse(ErrNotFound, "room %s is not known to this server", roomID)
	} else if err != nil {
		return err
	}
	if m, err := s.Membership(ctx, userID, roomID); err != nil {
		return err
	} else if m != "join" {
		return refuse(ErrForbidden, "you must be in room %s to give it an alias", roomID)
	}
	return s.createAlias(ctx, alias, roomID, userID)
}

// RemoveAlias is DELETE /directory/room/{alias}: its creator, a server
// admin, or a room member allowed to send m.room.canonical_alias may.
func (s *Service) RemoveAlias(ctx context.Context, userID string, admin bool, alias string) error {
	var a aliasItem
	if err := s.Store.Get(ctx, aliasKey(alias), &a); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return refuse(ErrNotFound, "alias %s does not exist", alias)
		}
		return err
	}
	if a.Creator != userID && !admin {
		ok, err := s.canSendState(ctx, userID, a.RoomID, "m.room.canonical_alias")
		if err != nil {
			return err
		}
		if !ok {
			return refuse(ErrForbidden, "only the alias's creator, an admin or a room moderator can remove it")
		}
	}
	return s.deleteAlias(ctx, alias)
}

// canSendState reports whether userID has the power to send state evType.
func (s *Service) canSendState(ctx context.Context, userID, roomID, evType string) (bool, error) {
	if m, err := s.Membership(ctx, userID, roomID); err != nil || m != "join" {
		return false, err
	}
	level, err := s.powerOf(ctx, roomID, userID)
	if err != nil {
		return false, err
	}
	return level.user >= level.event(evType, true), nil
}

// Aliases lists the local aliases of a room.
func (s *Service) Aliases(ctx context.Context, roomID string) ([]string, error) {
	var page []aliasItem
	if _, err := s.Store.QueryPage(ctx, store.Query{PK: roomPK(roomID), Prefix: "alias|"}, &page); err != nil {
		return nil, err
	}
	out := []string{}
	for _, a := range page {
		out = append(out, strings.TrimPrefix(a.SK, "alias|"))
	}
	return out, nil
}

const publicIndex = "publicrooms"

// SetPublished lists or unlists the room in the public room directory. It
// writes the room's info over the revision it read, so a state change
// landing at the same moment cannot undo it, nor it the state change.
func (s *Service) SetPublished(ctx context.Context, roomID string, public bool) error {
	err := s.updateInfo(ctx, roomID, func(i *info) {
		i.GSI1PK = ""
		if public {
			i.GSI1PK = publicIndex
		}
	})
	if errors.Is(err, store.ErrNotFound) {
		return refuse(ErrNotFound, "room %s is not known to this server", roomID)
	}
	return err
}

// PublicRoom is one entry of the public room directory.
type PublicRoom struct {
	RoomID        string `json:"room_id"`
	Name          string `json:"name,omitempty"`
	Topic         string `json:"topic,omitempty"`
	AvatarURL     string `json:"avatar_url,omitempty"`
	Alias         string `json:"canonical_alias,omitempty"`
	Joined        int64  `json:"num_joined_members"`
	WorldReadable bool   `json:"world_readable"`
	GuestCanJoin  bool   `json:"guest_can_join"`
	JoinRule      string `json:"join_rule,omitempty"`
	RoomType      string `json:"room_type,omitempty"`
}

// PublicRooms is one page of the directory.
type PublicRooms struct {
	Chunk     []PublicRoom `json:"chunk"`
	NextBatch string       `json:"next_batch,omitempty"`
	// Total is given only when the page is the whole directory, the one
	// case where it is known without counting; the spec makes it optional.
	Total *int `json:"total_room_count_estimate,omitempty"`
}

// DirectoryQuery selects rooms of the directory.
type DirectoryQuery struct {
	Limit     int
	Since     string
	Search    string
	RoomTypes []*string // nil entry: rooms without a type
}

// ListPublic reads the public room directory, most members first. Paging is
// by index cursor; a search term filters as pages are read.
func (s *Service) ListPublic(ctx context.Context, q DirectoryQuery) (PublicRooms, error) {
	if q.Limit <= 0 || q.Limit > 500 {
		q.Limit = 500
	}
	out := PublicRooms{Chunk: []PublicRoom{}}
	cursor := q.Since
	for {
		var page []info
		next, err := s.Store.QueryPage(ctx, store.Query{PK: publicIndex, Index: "gsi1", Limit: q.Limit - len(out.Chunk), Cursor: cursor}, &page)
		if err != nil {
			return out, refuse(ErrInvalid, "bad since token")
		}
		for _, i := range page {
			if r := i.entry(); q.matches(r) {
				out.Chunk = append(out.Chunk, r)
			}
		}
		cursor = next
		if next == "" || len(out.Chunk) >= q.Limit {
			break
		}
	}
	out.NextBatch = cursor
	if q.Since == "" && out.NextBatch == "" && q.Search == "" && q.RoomTypes == nil {
		n := len(out.Chunk)
		out.Total = &n
	}
	return out, nil
}

func (i info) entry() PublicRoom {
	return PublicRoom{
		RoomID: strings.TrimPrefix(i.PK, "room|"), Name: i.Name, Topic: i.Topic, AvatarURL: i.Avatar,
		Alias: i.Alias, Joined: i.Joined, WorldReadable: at(i.Visibility, 1<<62) == "world_readable",
		GuestCanJoin: i.Guests, JoinRule: i.JoinRule, RoomType: i.RoomType,
	}
}

func (q DirectoryQuery) matches(r PublicRoom) bool {
	if q.Search != "" {
		term := strings.ToLower(q.Search)
		hay := strings.ToLower(r.Name + "\x00" + r.Topic + "\x00" + r.Alias + "\x00" + r.RoomID)
		if !strings.Contains(hay, term) {
			return false
		}
	}
	if q.RoomTypes == nil {
		return true
	}
	for _, t := range q.RoomTypes {
		if (t == nil && r.RoomType == "") || (t != nil && *t == r.RoomType) {
			return true
		}
	}
	return false
}

// VisibleAliases lists the local aliases of a room userID may see
// (GET /rooms/{roomId}/aliases): a member's, or anyone's when the room is
// world-readable.
func (s *Service) VisibleAliases(ctx context.Context, userID, roomID string) ([]string, error) {
	if _, err := s.viewerOf(ctx, userID, roomID); err != nil {
		return nil, err
	}
	return s.Aliases(ctx, roomID)
}

// Listed reports whether the room is in the public room directory.
func (s *Service) Listed(ctx context.Context, roomID string) (bool, error) {
	info, err := s.Info(ctx, roomID)
	if errors.Is(err, ErrUnknownRoom) {
		return false, refuse(ErrNotFound, "room %s not found", roomID)
	}
	return info.Public, err
}

// Publish lists the room in the public room directory, or unlists it, for
// userID: a member with the power to send m.room.canonical_alias, as
// Synapse asks. An unknown room is ErrNotFound before the permission check.
func (s *Service) Publish(ctx context.Context, userID, roomID string, public bool) error {
	if _, err := s.Info(ctx, roomID); errors.Is(err, ErrUnknownRoom) {
		return refuse(ErrNotFound, "room %s not found", roomID)
	} else if err != nil {
		return err
	}
	ok, err := s.canSendState(ctx, userID, roomID, events.CanonicalAlias)
	if err != nil {
		return err
	}
	if !ok {
		return refuse(ErrForbidden, "only room moderators can change whether the room is listed")
	}
	return s.SetPublished(ctx, roomID, public)
}
