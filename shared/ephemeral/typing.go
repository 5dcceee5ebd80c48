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

// SetTyping says that the user types in the room for timeout from now
// (typing), or has stopped. The user must be joined (ErrNotJoined). Only a
// change tells the room's joined local users: starting to type, or
// stopping while typing. Typing again before the timeout only moves it, as
// Synapse does, so that a client's periodic renewals write no news.
//
// Cost: GetItem of the membership and of the typing item; PutItem (start)
// or DeleteItem (stop while typing), nothing for a stop while not typing;
// on a change, GetItem of the room's local users and their stream entries.
func (s *Service) SetTyping(ctx context.Context, userID, roomID string, typing bool, timeout time.Duration) error {
	if err := s.joined(ctx, userID, roomID); err != nil {
		return err
	}
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
			return nil
		}
		if err := s.Store.Delete(ctx, key); err != nil {
			return fmt.Errorf("stop typing of %s in %s: %w", userID, roomID, err)
		}
		return s.tell(ctx, roomID, nil)
	}
	until := now.Add(min(timeout, MaxTypingTimeout))
	it := item{PK: key.PK, SK: key.SK, User: userID, Until: until.UnixMilli(), Expires: until.Add(typingKeep).Unix() + 1}
	if err := s.Store.Put(ctx, it); err != nil {
		return fmt.Errorf("start typing of %s in %s: %w", userID, roomID, err)
	}
	if was {
		return nil
	}
	return s.tell(ctx, roomID, nil)
}

// Typing lists the users typing in the room now: one Query.
func (s *Service) Typing(ctx context.Context, roomID string) ([]string, error) {
	items, err := s.query(ctx, store.Query{PK: roomPK(roomID), Prefix: typingPrefix})
	if err != nil {
		return nil, err
	}
	return typingUsers(items, s.now()), nil
}
