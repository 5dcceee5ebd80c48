package rooms

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// A remote join's take-in (TakeJoined) writes thousands of items before
// the room has its head. Its claim is an item of its own, so that a
// take-in cut short (a Lambda timeout, a failed write) does not leave the
// room held but headless for ever: a later join takes a claim older than
// takeInStale over and writes the room again, and a join that finds a
// fresh claim waits for the room's head and joins the room as it then
// stands.

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
// which releaseTakeIn needs. A room with a head already, or whose take-in
// by another join ends while this one waits, is ErrExists; a claim older
// than takeInStale is taken over.
func (s *Service) claimTakeIn(ctx context.Context, roomID string) (int64, error) {
	for {
		c := takeInClaim{PK: roomPK(roomID), SK: takeInSK, At: s.now().UnixMilli()}
		claimErr := s.Store.Create(ctx, c)
		if claimErr != nil && !errors.Is(claimErr, store.ErrExists) {
			return 0, claimErr
		}
		// A head is a room held, claimed or not (a room taken in before
		// claims were written has none).
		if _, err := s.readHead(ctx, roomID); err == nil {
			return 0, fmt.Errorf("take in %s: %w", roomID, store.ErrExists)
		} else if !errors.Is(err, ErrUnknownRoom) {
			return 0, err
		}
		if claimErr == nil {
			return c.At, nil
		}
		var old takeInClaim
		if err := s.Store.Get(ctx, store.Key{PK: c.PK, SK: c.SK}, &old); err != nil && !errors.Is(err, store.ErrNotFound) {
			return 0, err
		}
		if s.now().Sub(time.UnixMilli(old.At)) > takeInStale {
			err := s.Store.PutIf(ctx, c, "at", old.At)
			if err == nil {
				return c.At, nil // taken over
			}
			if !errors.Is(err, store.ErrConflict) {
				return 0, err
			}
			continue // another join took it over first
		}
		// Another join is taking the room in: wait for its head.
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("take in %s: another join is taking the room in: %w", roomID, ctx.Err())
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
	if _, err := s.readHead(ctx, roomID); !errors.Is(err, ErrUnknownRoom) {
		return
	}
	_ = s.Store.PutIf(ctx, takeInClaim{PK: roomPK(roomID), SK: takeInSK}, "at", at)
}
