package rooms

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// A remote join's take-in (TakeJoined) writes thousands of items before
// the room is held (its info, written last with the head). Its claim is
// an item of its own, so that a take-in cut short (a Lambda timeout, a
// failed write) does not keep the room from being joined: a later join
// takes a claim older than takeInStale over and writes the room again, and
// a join that finds a fresh claim waits for the room to be held and joins
// it as it then stands.

// takeInStale is the age past which a take-in's claim is taken over: well
// beyond a join's 25 s.
const takeInStale = 2 * time.Minute

// takeInPoll is how often a join waiting for another's take-in looks.
const takeInPoll = 250 * time.Millisecond

const takeInSK = "takein"

// takeInClaim is the claim of a take-in in progress or done.
type takeInClaim struct {
	PK string `dynamodbav:"pk"` // room|<room ID>
	SK string `dynamodbav:"sk"` // takein
	// At is when the take-in began (Unix ms).
	At int64 `dynamodbav:"at"`
}

// claimTakeIn claims roomID for a take-in, and returns the claim's time,
// which releaseTakeIn needs, and whether it took over another's claim. A
// room held already (its info), or whose take-in by another join ends
// while this one waits, is ErrExists; a claim older than takeInStale is
// taken over.
func (s *Service) claimTakeIn(ctx context.Context, roomID string) (int64, bool, error) {
	for {
		c := takeInClaim{PK: roomPK(roomID), SK: takeInSK, At: s.now().UnixMilli()}
		claimErr := s.Store.Create(ctx, c)
		if claimErr != nil && !errors.Is(claimErr, store.ErrExists) {
			return 0, false, claimErr
		}
		// The info is a room held, claimed or not (a room taken in before
		// claims were written has none).
		if held, err := s.held(ctx, roomID); err != nil || held {
			if err == nil {
				err = fmt.Errorf("take in %s: %w", roomID, store.ErrExists)
			}
			return 0, false, err
		}
		if claimErr == nil {
			return c.At, false, nil
		}
		var old takeInClaim
		if err := s.Store.Get(ctx, store.Key{PK: c.PK, SK: c.SK}, &old); err != nil && !errors.Is(err, store.ErrNotFound) {
			return 0, false, err
		}
		if s.now().Sub(time.UnixMilli(old.At)) > takeInStale {
			err := s.Store.PutIf(ctx, c, "at", old.At)
			if err == nil {
				return c.At, true, nil
			}
			if !errors.Is(err, store.ErrConflict) {
				return 0, false, err
			}
			continue // another join took it over first
		}
		// Another join is taking the room in: wait for it to end.
		select {
		case <-ctx.Done():
			return 0, false, fmt.Errorf("take in %s: another join is taking the room in: %w", roomID, ctx.Err())
		case <-time.After(takeInPoll):
		}
	}
}

// releaseTakeIn lets go of the claim made at `at` by a take-in that
// failed, unless the room has its head (the slots below it failed): the
// claim is dated 0, as old as a claim gets, so that the next join takes
// it over at once rather than waiting out takeInStale. A claim taken over
// meanwhile is left alone. It runs on when ctx has ended (a join out of
// time), for a few seconds.
func (s *Service) releaseTakeIn(ctx context.Context, roomID string, at int64) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if held, err := s.held(ctx, roomID); err != nil || held {
		return
	}
	_ = s.Store.PutIf(ctx, takeInClaim{PK: roomPK(roomID), SK: takeInSK}, "at", at)
}

// held reports whether roomID has its room info: a room this server holds.
func (s *Service) held(ctx context.Context, roomID string) (bool, error) {
	var i info
	err := s.Store.Get(ctx, store.Key{PK: roomPK(roomID), SK: infoSK}, &i)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// clearSlots deletes the slots of a take-in cut short, before the one that
// took its claim over writes its own: they may lie above its head.
func (s *Service) clearSlots(ctx context.Context, roomID string) error {
	cursor := ""
	for {
		var page []struct {
			PK string `dynamodbav:"pk"`
			SK string `dynamodbav:"sk"`
		}
		next, err := s.Store.QueryPage(ctx, store.Query{PK: roomPK(roomID), Prefix: slotPrefix, Cursor: cursor}, &page)
		if err != nil {
			return fmt.Errorf("clear slots of %s: %w", roomID, err)
		}
		keys := make([]store.Key, 0, len(page))
		for _, it := range page {
			keys = append(keys, store.Key{PK: it.PK, SK: it.SK})
		}
		if err := s.Store.DeleteEach(ctx, keys); err != nil {
			return fmt.Errorf("clear slots of %s: %w", roomID, err)
		}
		if next == "" {
			return nil
		}
		cursor = next
	}
}
