package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// EDU is the type of the server-server spec's presence EDU.
const EDU = "m.presence"

// ErrRefused is an inbound presence update this server does not take: of
// a user of another server than the sender, or of a user who shares no
// room with this server's users.
var ErrRefused = errors.New("presence refused")

// The rooms of other servers' users are not in their partitions (rooms
// keeps memberships of local users only), so presence keeps its own index
// of them, from the member events appended (MembersChanged): item
// presence|room|<room ID> in partition user|<user ID>, while they are
// joined. An inbound update reads it to find whom to tell.
const roomPrefix = "presence|room|"

type roomItem struct {
	PK string `dynamodbav:"pk"`
	SK string `dynamodbav:"sk"`
}

// update is one entry of an m.presence EDU's push.
type update struct {
	UserID          string  `json:"user_id"`
	Presence        string  `json:"presence"`
	StatusMsg       *string `json:"status_msg,omitempty"`
	LastActiveAgo   int64   `json:"last_active_ago"`
	CurrentlyActive bool    `json:"currently_active"`
}

// federate sends userID's presence to the servers of the rooms.
func (s *Service) federate(ctx context.Context, userID string, joined []string, st Status) error {
	if s.Federate == nil || len(joined) == 0 {
		return nil
	}
	u := update{UserID: userID, Presence: st.Presence, StatusMsg: st.StatusMsg}
	if st.LastActiveAgo != nil {
		u.LastActiveAgo = *st.LastActiveAgo
	}
	if st.CurrentlyActive != nil {
		u.CurrentlyActive = *st.CurrentlyActive
	}
	doc, err := json.Marshal(map[string]any{"push": []update{u}})
	if err != nil {
		return fmt.Errorf("send presence of %s: %w", userID, err)
	}
	if err := s.Federate(ctx, joined, EDU, doc); err != nil {
		return fmt.Errorf("send presence of %s: %w", userID, err)
	}
	return nil
}

// ReceivePresence takes an m.presence EDU from origin (federation.
// EDUHandler). Each update is taken or refused by itself: its user must be
// of origin and share a room with this server's users. A change of
// presence, status message or activity is told to the local users of the
// rooms the user is in, who see it in /sync as a local user's.
//
// Cost per update: one Query of the user's room index, GetItem and
// PutItem of their presence item; on a change, GetItem of each room's
// local users and a stream entry for each.
func (s *Service) ReceivePresence(ctx context.Context, origin string, raw json.RawMessage) error {
	if !s.Enabled {
		return nil
	}
	var c struct {
		Push []json.RawMessage `json:"push"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return fmt.Errorf("%w: m.presence from %s is malformed: %v", ErrRefused, origin, err)
	}
	var errs []error
	for _, p := range c.Push {
		if err := s.receive(ctx, origin, p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *Service) receive(ctx context.Context, origin string, raw json.RawMessage) error {
	var u update
	if err := json.Unmarshal(raw, &u); err != nil {
		return fmt.Errorf("%w: an update of m.presence from %s is malformed: %v", ErrRefused, origin, err)
	}
	if !Valid(u.Presence) || !rooms.ValidUserID(u.UserID) || u.LastActiveAgo < 0 {
		return fmt.Errorf("%w: an update of m.presence from %s lacks a valid user ID, presence or last_active_ago", ErrRefused, origin)
	}
	if _, server, _ := strings.Cut(u.UserID, ":"); server != origin {
		return fmt.Errorf("%w: %s may not send the presence of %s", ErrRefused, origin, u.UserID)
	}
	joined, err := s.roomsOf(ctx, u.UserID)
	if err != nil {
		return err
	}
	if len(joined) == 0 {
		return fmt.Errorf("%w: %s shares no room with this server", ErrRefused, u.UserID)
	}
	k := key(u.UserID)
	var old state
	if err := s.Store.Get(ctx, k, &old); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	next := state{PK: k.PK, SK: k.SK, Presence: u.Presence, LastActive: s.now().UnixMilli() - u.LastActiveAgo,
		Remote: true, Active: u.CurrentlyActive}
	if u.StatusMsg != nil {
		next.StatusMsg = *u.StatusMsg
	}
	if err := s.Store.Put(ctx, next); err != nil {
		return fmt.Errorf("set presence of %s: %w", u.UserID, err)
	}
	if old.Presence == next.Presence && old.StatusMsg == next.StatusMsg && old.Active == next.Active {
		return nil
	}
	return s.tell(ctx, u.UserID, joined)
}

// roomsOf reads the rooms held here that another server's user is joined
// to: one Query of the index.
func (s *Service) roomsOf(ctx context.Context, userID string) ([]string, error) {
	q := store.Query{PK: key(userID).PK, Prefix: roomPrefix}
	var out []string
	for {
		var page []roomItem
		next, err := s.Store.QueryPage(ctx, q, &page)
		if err != nil {
			return nil, fmt.Errorf("rooms of %s: %w", userID, err)
		}
		for _, it := range page {
			out = append(out, strings.TrimPrefix(it.SK, roomPrefix))
		}
		if next == "" {
			return out, nil
		}
		q.Cursor = next
	}
}

// MembersChanged keeps the room index of other servers' users in step with
// the member events among evs: the rooms.Service.Appended hook, while
// presence is on. The first local user to join a room indexes the remote
// members the room has (a room taken in through a remote join tells no
// one of the state before the join); from then on each member event of
// another server's user is appended with a local user to tell, and kept.
//
// Cost: a write (put or delete) per member event of another server's user,
// none for other events; for the first local join of a room, a Query of
// its member events (none when the join took the room in: it carries
// them) and a write per joined remote member (BatchWriteItem, 25 a call,
// 16 calls at a time).
func (s *Service) MembersChanged(ctx context.Context, evs []rooms.Appended) error {
	if !s.Enabled {
		return nil
	}
	// The last member event of a user in a room decides.
	last := map[store.Key]bool{}
	var order []store.Key
	set := func(userID, roomID string, joined bool) {
		if _, server, _ := strings.Cut(userID, ":"); server == s.ServerName {
			return
		}
		k := store.Key{PK: key(userID).PK, SK: roomPrefix + roomID}
		if _, ok := last[k]; !ok {
			order = append(order, k)
		}
		last[k] = joined
	}
	for _, a := range evs {
		ev := a.Event
		if ev == nil || ev.Type() != events.Member || ev.StateKey() == nil {
			continue
		}
		userID := *ev.StateKey()
		m, _ := ev.Membership()
		if m == "invite" || m == "knock" {
			continue // the auth rules let no joined user be invited or knock: nothing to drop
		}
		if m == "join" && len(a.To) == 1 && a.To[0] == userID {
			if err := s.indexRoom(ctx, a, set); err != nil {
				return err
			}
		}
		set(userID, a.RoomID, m == "join")
	}
	var puts []any
	var dels []store.Key
	for _, k := range order {
		if last[k] {
			puts = append(puts, roomItem{PK: k.PK, SK: k.SK})
		} else {
			dels = append(dels, k)
		}
	}
	if len(puts) > 0 {
		if err := s.Store.PutMany(ctx, puts); err != nil {
			return fmt.Errorf("index rooms of remote members: %w", err)
		}
	}
	if len(dels) > 0 {
		if err := s.Store.DeleteEach(ctx, dels); err != nil {
			return fmt.Errorf("index rooms of remote members: %w", err)
		}
	}
	return nil
}

// indexRoom sets the joined members of the room a local user joined
// through set: the members the join carries when it took the room in
// (rooms.Appended.Members), else one Query of the room's member events.
func (s *Service) indexRoom(ctx context.Context, join rooms.Appended, set func(userID, roomID string, joined bool)) error {
	members := join.Members
	if members == nil {
		var err error
		if members, err = s.Rooms.Members(ctx, join.RoomID); err != nil {
			return fmt.Errorf("index remote members of %s: %w", join.RoomID, err)
		}
	}
	for _, ev := range members {
		if m, _ := ev.Membership(); m == "join" && ev.StateKey() != nil {
			set(*ev.StateKey(), join.RoomID, true)
		}
	}
	return nil
}
