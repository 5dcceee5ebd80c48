package ephemeral

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// typingKeep is how long a typing item outlives its timeout before
// DynamoDB's TTL may delete it; readers leave it out from its timeout on.
const typingKeep = time.Minute

// Typing over federation. An m.typing EDU carries no timeout: the
// receiving server times it out. Synapse's values: a remote user types for
// a minute after an EDU says so, and a server repeats a typing user's EDU
// every 40 seconds, under that minute.
const (
	RemoteTypingTimeout = time.Minute
	typingPing          = 40 * time.Second
)

// SetTyping says that the user types in the room for timeout from now
// (typing), or has stopped. The user must be joined (ErrNotJoined). Only a
// change tells the room's joined local users: starting to type, or
// stopping while typing. Typing again before the timeout only moves it, as
// Synapse does, so that a client's periodic renewals write no news.
//
// The other servers in the room get an m.typing EDU on a change, and on a
// renewal at least typingPing after the last one they got. Nothing runs
// when a typing user's timeout passes: they hear of the stop when the user
// says so, else time it out themselves (RemoteTypingTimeout).
//
// Cost: GetItem of the membership and of the typing item; PutItem (start)
// or DeleteItem (stop while typing), nothing for a stop while not typing;
// on a change, GetItem of the room's local users and their stream entries;
// for an EDU, what Federate costs.
func (s *Service) SetTyping(ctx context.Context, userID, roomID string, typing bool, timeout time.Duration) error {
	if err := s.joined(ctx, userID, roomID); err != nil {
		return err
	}
	return s.setTyping(ctx, userID, roomID, typing, timeout, true)
}

// setTyping sets the typing item of a user known to be joined; local says
// the user is this server's, whose typing goes to the other servers.
func (s *Service) setTyping(ctx context.Context, userID, roomID string, typing bool, timeout time.Duration, local bool) error {
	now := s.now()
	key := store.Key{PK: roomPK(roomID), SK: typingSK(userID)}
	var old item
	err := s.Store.Get(ctx, key, &old)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("typing of %s in %s: %w", userID, roomID, err)
	}
	was := err == nil && old.Until > now.UnixMilli()
	if !typing || timeout <= 0 {
		if !was {
			// Timed out here, but other servers may still show it.
			if local && err == nil && old.Sent > now.Add(-RemoteTypingTimeout).UnixMilli() {
				return s.federateTyping(ctx, userID, roomID, false)
			}
			return nil
		}
		if err := s.Store.Delete(ctx, key); err != nil {
			return fmt.Errorf("stop typing of %s in %s: %w", userID, roomID, err)
		}
		if err := s.tell(ctx, roomID, nil); err != nil {
			return err
		}
		if local {
			return s.federateTyping(ctx, userID, roomID, false)
		}
		return nil
	}
	until := now.Add(min(timeout, MaxTypingTimeout))
	it := item{PK: key.PK, SK: key.SK, User: userID, Until: until.UnixMilli(), Expires: until.Add(typingKeep).Unix() + 1}
	if was {
		it.Sent = old.Sent
	}
	ping := local && (!was || now.UnixMilli()-old.Sent >= typingPing.Milliseconds())
	if ping {
		it.Sent = now.UnixMilli()
	}
	if err := s.Store.Put(ctx, it); err != nil {
		return fmt.Errorf("start typing of %s in %s: %w", userID, roomID, err)
	}
	if !was {
		if err := s.tell(ctx, roomID, nil); err != nil {
			return err
		}
	}
	if ping {
		return s.federateTyping(ctx, userID, roomID, true)
	}
	return nil
}

// Typing lists the users typing in the room now: one Query.
func (s *Service) Typing(ctx context.Context, roomID string) ([]string, error) {
	items, err := s.query(ctx, store.Query{PK: roomPK(roomID), Prefix: typingPrefix})
	if err != nil {
		return nil, err
	}
	return typingUsers(items, s.now()), nil
}
