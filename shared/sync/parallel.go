package sync

import (
	"context"
	"encoding/json"
	gosync "sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/unread"
)

// A sync's latency in AWS is the number of DynamoDB round trips on its
// critical path, not the number of calls: what does not depend on another
// read is read beside it. The helpers here read a joined room's parts that
// need nothing of its timeline (ephemeral events, account data, unread
// counts) so that a room costs its longest chain, not the sum of them.

// roomExtras is a joined room's ephemeral events and account data, read
// beside its timeline (readExtras).
type roomExtras struct {
	ephemeral, data []json.RawMessage
	typingEnds      time.Time
	// typing says the ephemeral events were read, typing among them.
	typing bool
}

// readExtras reads a joined room's ephemeral events and account data
// written since the time given, side by side.
func (s *Service) readExtras(ctx context.Context, userID, roomID string, since time.Time) (roomExtras, error) {
	var out roomExtras
	var g errgroup.Group
	if s.Ephemeral != nil {
		g.Go(func() error {
			var err error
			out.ephemeral, out.typingEnds, err = s.Ephemeral(ctx, userID, roomID, since)
			out.typing = true
			return err
		})
	}
	if data, ok := ctx.Value(roomsDataKey{}).(*roomsData); ok && since.IsZero() {
		g.Go(func() error {
			select {
			case <-data.done:
			case <-ctx.Done():
				return ctx.Err()
			}
			out.data = data.rooms[roomID]
			return data.err
		})
	} else if s.AccountData != nil {
		g.Go(func() error {
			var err error
			out.data, err = s.AccountData(ctx, userID, roomID, since)
			return err
		})
	}
	return out, g.Wait()
}

// roomsData is every room's account data of the user, read once for an
// initial sync (RoomsAccountData) and taken by each room's extras.
type roomsData struct {
	done  chan struct{} // closed once rooms and err are set
	rooms map[string][]json.RawMessage
	err   error
}

type roomsDataKey struct{}

// apply adds the extras to the room, and records in next when its typing
// times out.
func (x roomExtras) apply(roomID string, j *JoinedRoom, next *position) {
	if x.typing {
		j.Ephemeral.Events = append(j.Ephemeral.Events, x.ephemeral...)
		next.typingStops(roomID, x.typingEnds)
	}
	j.AccountData.Events = append(j.AccountData.Events, x.data...)
}

// readCounts reads a joined room's unread counts (counts).
func (s *Service) readCounts(ctx context.Context, req Request, roomID string) (unreadCounts, error) {
	var j JoinedRoom
	err := s.counts(ctx, req, roomID, &j)
	return unreadCounts{main: j.Unread, perThread: j.UnreadThreads}, err
}

// roomSide is what is read of a joined room beside its timeline: its
// extras when wanted, and its unread counts.
type roomSide struct {
	extras roomExtras
	counts unreadCounts
}

// goSide starts reading a joined room's side parts in g: the extras since
// the time given when withExtras, and the unread counts.
// newest, when not nil, gives the room's newest position (waiting for it
// if need be), which spares the counts a round trip (unread.WithNewest).
func (s *Service) goSide(g *errgroup.Group, ctx context.Context, req Request, roomID string, since time.Time, withExtras bool, newest func(context.Context) int64, out *roomSide) {
	if withExtras {
		g.Go(func() error {
			var err error
			out.extras, err = s.readExtras(ctx, req.UserID, roomID, since)
			return err
		})
	}
	g.Go(func() error {
		cctx := ctx
		if newest != nil {
			cctx = unread.WithNewest(ctx, newest)
		}
		var err error
		out.counts, err = s.readCounts(cctx, req, roomID)
		return err
	})
}

// headPromise is a room's newest position, known once its timeline is
// read: the unread counts read beside the timeline wait for it.
type headPromise struct {
	once gosync.Once
	done chan struct{}
	head int64
}

func newHeadPromise() *headPromise { return &headPromise{done: make(chan struct{})} }

// set gives the position (0: unknown); the first call holds.
func (p *headPromise) set(head int64) {
	p.once.Do(func() {
		p.head = head
		close(p.done)
	})
}

func (p *headPromise) wait(ctx context.Context) int64 {
	select {
	case <-p.done:
		return p.head
	case <-ctx.Done():
		return 0
	}
}

type headHookKey struct{}

// withHeadHook is ctx under which joined tells report the room's newest
// position as soon as its timeline is read.
func withHeadHook(ctx context.Context, report func(int64)) context.Context {
	return context.WithValue(ctx, headHookKey{}, report)
}

func reportHead(ctx context.Context, head int64) {
	if report, ok := ctx.Value(headHookKey{}).(func(int64)); ok {
		report(head)
	}
}

// currentAhead starts reading a room's current state, and returns what
// waits for it: an initial sync (or a full_state one) shows the room's
// state at its live end, which needs nothing of its timeline.
func (s *Service) currentAhead(ctx context.Context, roomID string) func() ([]events.PDU, error) {
	type result struct {
		state []events.PDU
		err   error
	}
	ch := make(chan result, 1)
	go func() {
		state, err := s.Rooms.CurrentState(ctx, roomID)
		ch <- result{state, err}
	}()
	var r *result
	return func() ([]events.PDU, error) {
		if r == nil {
			got := <-ch
			r = &got
		}
		return r.state, r.err
	}
}
