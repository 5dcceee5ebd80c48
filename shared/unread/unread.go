// Package unread counts the events in a room that notify a user since they
// last read it, by their push rules: the unread_notifications of /sync.
package unread

import (
	"context"
	"encoding/json"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/push"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

// MaxCounted bounds the events read for one count: a room with more unread
// shows this many, as clients show "99+" anyway.
const MaxCounted = 100

// Service counts unread notifications.
type Service struct {
	Rooms *rooms.Service
	Push  *push.Service
	// ReadUpTo is the position of the newest event the user read.
	ReadUpTo func(ctx context.Context, userID, roomID string) (int64, error)
}

// Counts are the spec's unread_notifications of a room.
type Counts struct {
	Notifications int `json:"notification_count"`
	Highlights    int `json:"highlight_count"`
}

// Count evaluates the user's push rules on the events they can see after
// their read receipt, newest first, up to MaxCounted of them.
func (s *Service) Count(ctx context.Context, userID, roomID string) (Counts, error) {
	upTo, err := s.ReadUpTo(ctx, userID, roomID)
	if err != nil {
		return Counts{}, err
	}
	page, err := s.Rooms.Messages(ctx, userID, roomID, rooms.MessagesQuery{Backward: true, Limit: MaxCounted, To: rooms.Token(upTo)})
	if err != nil || len(page.Chunk) == 0 {
		return Counts{}, err
	}
	rules, err := s.Push.Rules(ctx, userID)
	if err != nil {
		return Counts{}, err
	}
	c, err := s.context(ctx, userID, roomID)
	if err != nil {
		return Counts{}, err
	}
	var out Counts
	for _, raw := range page.Chunk {
		o := rules.Evaluate(raw, c.forSender(raw))
		if o.Notify {
			out.Notifications++
		}
		if o.Highlight {
			out.Highlights++
		}
	}
	return out, nil
}

// roomContext is what the rules need of the room, read once per count.
type roomContext struct {
	push.EventContext
	levels *events.PowerLevelContent
	create events.PDU
}

func (s *Service) context(ctx context.Context, userID, roomID string) (*roomContext, error) {
	info, err := s.Rooms.Info(ctx, roomID)
	if err != nil {
		return nil, err
	}
	c := &roomContext{EventContext: push.EventContext{UserID: userID, MemberCount: int(info.Joined)}}
	if me, err := s.Rooms.StateEvent(ctx, roomID, events.Member, userID); err == nil {
		var m struct {
			DisplayName string `json:"displayname"`
		}
		_ = json.Unmarshal(me.Content(), &m)
		c.DisplayName = m.DisplayName
	}
	pl, _ := s.Rooms.StateEvent(ctx, roomID, events.PowerLevels, "")
	if c.levels, err = events.PowerLevelsOf(pl); err != nil {
		return nil, err
	}
	c.NotifLevels = map[string]int64{"room": c.levels.NotificationLevel("room")}
	c.create, _ = s.Rooms.StateEvent(ctx, roomID, events.Create, "")
	return c, nil
}

// forSender completes the context with the sender's power level.
func (c *roomContext) forSender(raw json.RawMessage) push.EventContext {
	var ev struct {
		Sender string `json:"sender"`
	}
	_ = json.Unmarshal(raw, &ev)
	out := c.EventContext
	out.SenderLevel = events.UserLevel(c.levels, ev.Sender)
	if c.create != nil && events.PrivilegedCreators(string(c.create.Version())) {
		for _, u := range events.Creators(c.create) {
			if u == ev.Sender {
				out.SenderLevel = 1 << 53 // creators outrank every level
			}
		}
	}
	return out
}
