package rooms

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/store"

	"golang.org/x/sync/errgroup"
)

// What /sync reads of rooms: a user's memberships, state at a position and
// events as clients see them.

// Membership is a local user's relation to one room.
type Membership struct {
	RoomID     string
	Membership string
	// Seq is the position of the event that set it.
	Seq       int64
	Forgotten bool
	// Joined: the user was joined to the room at some time (from the
	// item's history), as sliding sync's list needs of banned users.
	Joined bool
}

// everJoined reports whether a membership history holds a join.
func everJoined(history []string) bool {
	for _, h := range history {
		if strings.HasSuffix(h, ":join") {
			return true
		}
	}
	return false
}

// Memberships lists every room a local user has a membership in: one
// query of the user's partition.
func (s *Service) Memberships(ctx context.Context, userID string) ([]Membership, error) {
	ms, err := s.memberships(ctx, userID)
	if err != nil {
		return nil, err
	}
	out := make([]Membership, 0, len(ms))
	for _, m := range ms {
		out = append(out, Membership{
			RoomID: strings.TrimPrefix(m.SK, membershipPrefix), Membership: m.Membership,
			Seq: m.Seq, Forgotten: m.Forgotten, Joined: everJoined(m.History),
		})
	}
	return out, nil
}

// StateEvents reads pieces of the room's current state in one
// BatchGetItem; unset ones are absent from the map.
func (s *Service) StateEvents(ctx context.Context, roomID string, tuples []events.StateKeyTuple) (map[events.StateKeyTuple]events.PDU, error) {
	// A request that read (or is reading) the room's whole current state
	// takes them from it (WithReadsShared).
	if state, ok, err := store.SharedSoFar[[]events.PDU](ctx, currentStateKey(roomID)); ok {
		if err != nil {
			return nil, err
		}
		return pick(state, tuples), nil
	}
	return s.stateFor(ctx, roomID, nil, tuples)
}

// pick is the events of state that the tuples name.
func pick(state []events.PDU, tuples []events.StateKeyTuple) map[events.StateKeyTuple]events.PDU {
	want := make(map[events.StateKeyTuple]bool, len(tuples))
	for _, t := range tuples {
		want[t] = true
	}
	out := make(map[events.StateKeyTuple]events.PDU, len(tuples))
	for _, ev := range state {
		if sk := ev.StateKey(); sk != nil {
			if t := (events.StateKeyTuple{Type: ev.Type(), StateKey: *sk}); want[t] {
				out[t] = ev
			}
		}
	}
	return out
}

// MembershipsIn reads a local user's memberships of the given rooms only:
// one BatchGetItem, where Memberships queries every room of the user.
// Rooms without a membership are absent.
func (s *Service) MembershipsIn(ctx context.Context, userID string, roomIDs []string) ([]Membership, error) {
	keys := make([]store.Key, 0, len(roomIDs))
	for _, r := range roomIDs {
		keys = append(keys, store.Key{PK: userPK(userID), SK: membershipPrefix + r})
	}
	var out []Membership
	err := s.Store.GetMany(ctx, keys, func(_ store.Key, decode func(any) error) error {
		var m membership
		if err := decode(&m); err != nil {
			return err
		}
		out = append(out, Membership{RoomID: strings.TrimPrefix(m.SK, membershipPrefix), Membership: m.Membership, Seq: m.Seq, Forgotten: m.Forgotten, Joined: everJoined(m.History)})
		return nil
	})
	return out, err
}

// StateAfter is the room state after the event at position seq.
func (s *Service) StateAfter(ctx context.Context, roomID string, seq int64) ([]events.PDU, error) {
	return s.stateAtToken(ctx, roomID, seq)
}

// Render serializes events for clients.
func (s *Service) Render(ctx context.Context, pdus []events.PDU) ([]json.RawMessage, error) {
	return s.renderPDUs(ctx, pdus)
}

type formatKey struct{}

// WithFormat makes the events rendered for ctx use format f: a sync
// filter's event_format.
func WithFormat(ctx context.Context, f events.Format) context.Context {
	return context.WithValue(ctx, formatKey{}, f)
}

// deviceKey carries the device events are rendered for.
type deviceKey struct{}

// WithDevice is ctx with the device that events read under it are rendered
// for: those it sent carry their transaction IDs (unsigned.transaction_id)
// when the reading user is their sender. Without it none do. Like
// WithFormat, it is a rendering option of the reader, not who reads: the
// user is the reads' explicit userID.
func WithDevice(ctx context.Context, deviceID string) context.Context {
	return context.WithValue(ctx, deviceKey{}, deviceID)
}

func deviceOf(ctx context.Context) string {
	d, _ := ctx.Value(deviceKey{}).(string)
	return d
}

func formatOf(ctx context.Context) events.Format {
	if f, ok := ctx.Value(formatKey{}).(events.Format); ok {
		return f
	}
	return events.FormatClient
}

// Token is the pagination token just after position seq, as /messages
// takes it.
func Token(seq int64) string { return token(seq) }

// ParseToken reads a pagination token.
func ParseToken(t string) (int64, error) { return parseToken(t) }

// LocalJoinedIn lists the local users joined to any of the rooms, each
// once, but for except: whom news of except (presence, device keys) goes
// to. One GetItem of each room's local users, cached with its head.
func (s *Service) LocalJoinedIn(ctx context.Context, roomIDs []string, except string) ([]string, error) {
	// The rooms are read side by side: one round trip for all, not one
	// each (presence and sync ask this of every room a user is in).
	per := make([][]string, len(roomIDs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(64)
	for i, roomID := range roomIDs {
		g.Go(func() (err error) {
			per[i], err = s.LocalJoined(gctx, roomID)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	seen := map[string]bool{except: true}
	var users []string
	for _, members := range per {
		for _, u := range members {
			if !seen[u] {
				seen[u] = true
				users = append(users, u)
			}
		}
	}
	return users, nil
}

// LocalJoined lists the room's joined local users: whom ephemeral news of
// the room (typing, receipts) goes to.
func (s *Service) LocalJoined(ctx context.Context, roomID string) ([]string, error) {
	l, err := s.readLocals(ctx, roomID)
	if err != nil {
		return nil, err
	}
	return l.joined(), nil
}
