// Package stateres resolves forks in a room's state: given the states after
// each of an event's prev_events, it computes the state before the event,
// with the algorithm of the room's version (v1 for room version 1, v2 for
// versions 2 to 11, v2.1 for version 12).
//
// The v2 and v2.1 algorithms are implemented here rather than taken from
// gomatrixserverlib: its v2.1 entry point (ResolveConflictsNew, marked
// "WIP: Untested" in the pinned version) panics on ordinary v12 forks and,
// like its v2 code, fills gaps in the partial state with the event being
// checked instead of its auth event; see docs/architecture.md and
// library_test.go. The library's auth rules (events.Allowed) and power level
// parsing are still used, so that resolution and the room engine agree on
// what an event may do.
package stateres

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// Key names one piece of room state: an event type and a state key.
type Key = events.StateKeyTuple

// StateMap is a room state: the ID of the event holding each key.
type StateMap map[Key]string

// Loader gives events of the room by ID.
type Loader interface {
	// Events returns the events it holds among ids, keyed by event ID; an ID
	// it does not hold is left out of the map, not an error.
	Events(ctx context.Context, ids []string) (map[string]events.PDU, error)
}

// Rejecter is implemented by a Loader that knows which events were
// rejected: iterative auth checks never take a rejected event from an
// event's auth_events (room v2 spec, "Rejected events").
type Rejecter interface {
	Rejected(eventID string) bool
}

var (
	// ErrMissingEvent is an event named by a state or an auth chain that the
	// Loader does not hold: auth chains must be complete before resolving.
	ErrMissingEvent = errors.New("stateres: missing event")
	// ErrBadState is input that cannot be a room's state: an event under
	// another key than its own, events of another room, no create event.
	ErrBadState = errors.New("stateres: bad state")
)

// After is the state after ev given the state before it (the spec's
// S'(E)): the same, with ev under its key if ev is a state event.
func After(before StateMap, ev events.PDU) StateMap {
	out := make(StateMap, len(before)+1)
	for k, id := range before {
		out[k] = id
	}
	if ev.StateKey() != nil {
		out[keyOf(ev)] = ev.EventID()
	}
	return out
}

// Resolve returns the resolution of states, the states after the
// prev_events of an event in a room of version v.
//
// Cost: room version 1 loads the events of the states and no more. Versions
// 2 on load the events of the states and then the whole auth chain of every
// one of them, breadth first: one Loader call per level of the auth graph
// (its depth bounds the calls), each event loaded once. Identical or single
// states are returned without loading anything. The auth chain of a room
// holds every membership change, so a resolution in a large room reads
// every member's join and more; a per-room auth chain index (as Synapse's
// chain cover) would bound it to the auth difference, and is not built yet.
func Resolve(ctx context.Context, v string, states []StateMap, l Loader) (StateMap, error) {
	impl, err := roomVersion(v)
	if err != nil {
		return nil, err
	}
	if same(states) {
		out := StateMap{}
		if len(states) > 0 {
			for k, id := range states[0] {
				out[k] = id
			}
		}
		return out, nil
	}
	unconflicted, conflicted := split(states)
	r := &resolver{
		ctx:     ctx,
		version: v,
		algo:    impl.StateResAlgorithm(),
		loader:  l,
		events:  map[string]events.PDU{},
	}
	if rj, ok := l.(Rejecter); ok {
		r.rejected = rj.Rejected
	}
	if err := r.loadStates(states); err != nil {
		return nil, err
	}
	switch r.algo {
	case gomatrixserverlib.StateResV1:
		return r.resolveV1(states)
	case gomatrixserverlib.StateResV2, gomatrixserverlib.StateResV2_1:
		return r.resolveV2(states, unconflicted, conflicted)
	default:
		return nil, fmt.Errorf("%w %q: no state resolution algorithm", events.ErrUnsupportedVersion, v)
	}
}

func roomVersion(v string) (gomatrixserverlib.IRoomVersion, error) {
	if !events.Supported(v) {
		return nil, fmt.Errorf("%w %q", events.ErrUnsupportedVersion, v)
	}
	return gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(v))
}

// same reports whether there is nothing to resolve.
func same(states []StateMap) bool {
	for _, s := range states[min(1, len(states)):] {
		if len(s) != len(states[0]) {
			return false
		}
		for k, id := range s {
			if states[0][k] != id {
				return false
			}
		}
	}
	return true
}

// split divides the states into the unconflicted state map, the keys every
// state holds with the same event, and the conflicted state set (v2 spec,
// "Unconflicted state map and conflicted state set"): every other event. A
// key some state lacks is conflicted, whatever the others hold.
func split(states []StateMap) (unconflicted StateMap, conflicted []string) {
	unconflicted = StateMap{}
	seen := map[string]bool{}
	for _, s := range states {
		for k, id := range s {
			if agreed(states, k, id) {
				unconflicted[k] = id
			} else if !seen[id] {
				seen[id] = true
				conflicted = append(conflicted, id)
			}
		}
	}
	sort.Strings(conflicted)
	return unconflicted, conflicted
}

func agreed(states []StateMap, k Key, id string) bool {
	for _, s := range states {
		if got, ok := s[k]; !ok || got != id {
			return false
		}
	}
	return true
}

// resolver holds one resolution's events and settings.
type resolver struct {
	ctx      context.Context
	version  string
	algo     gomatrixserverlib.StateResAlgorithm
	loader   Loader
	rejected func(eventID string) bool
	events   map[string]events.PDU // every event loaded, by ID
	create   events.PDU
	roomID   string
}

// loadStates loads the events of the states and checks that each sits
// under its own key and that they share one room and one create event.
func (r *resolver) loadStates(states []StateMap) error {
	want := map[string]Key{}
	for _, s := range states {
		for k, id := range s {
			if prev, ok := want[id]; ok && prev != k {
				return fmt.Errorf("%w: %s is under two keys", ErrBadState, id)
			}
			want[id] = k
		}
	}
	ids := make([]string, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	if err := r.load(ids); err != nil {
		return err
	}
	for id, k := range want {
		ev := r.events[id]
		if ev.StateKey() == nil || ev.Type() != k.Type || *ev.StateKey() != k.StateKey {
			return fmt.Errorf("%w: %s is not a %s state event with key %q", ErrBadState, id, k.Type, k.StateKey)
		}
		if ev.Type() == events.Create && k.StateKey == "" {
			if r.create != nil {
				return fmt.Errorf("%w: two create events, %s and %s", ErrBadState, r.create.EventID(), id)
			}
			r.create = ev
		}
		if room := events.RoomID(ev); r.roomID == "" {
			r.roomID = room
		} else if room != r.roomID {
			return fmt.Errorf("%w: %s is in room %s, not %s", ErrBadState, id, room, r.roomID)
		}
	}
	if r.create == nil {
		return fmt.Errorf("%w: no create event", ErrBadState)
	}
	return nil
}

// load fetches the events among ids not loaded yet, in one Loader call.
func (r *resolver) load(ids []string) error {
	var missing []string
	for _, id := range ids {
		if _, ok := r.events[id]; !ok {
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	got, err := r.loader.Events(r.ctx, missing)
	if err != nil {
		return fmt.Errorf("stateres: load events: %w", err)
	}
	for _, id := range missing {
		ev, ok := got[id]
		if !ok || ev == nil {
			return fmt.Errorf("%w: %s", ErrMissingEvent, id)
		}
		if ev.EventID() != id {
			return fmt.Errorf("%w: asked for %s, got %s", ErrBadState, id, ev.EventID())
		}
		if room := events.RoomID(ev); r.roomID != "" && room != r.roomID {
			return fmt.Errorf("%w: %s is in room %s, not %s", ErrBadState, id, room, r.roomID)
		}
		r.events[id] = ev
	}
	return nil
}

// loadAuthChains loads the auth chains of every loaded event, one level of
// the auth graph per Loader call.
func (r *resolver) loadAuthChains() error {
	frontier := make([]string, 0, len(r.events))
	for id := range r.events {
		frontier = append(frontier, id)
	}
	for len(frontier) > 0 {
		var next []string
		queued := map[string]bool{}
		for _, id := range frontier {
			for _, a := range r.events[id].AuthEventIDs() {
				if _, ok := r.events[a]; !ok && !queued[a] {
					queued[a] = true
					next = append(next, a)
				}
			}
		}
		sort.Strings(next)
		if err := r.load(next); err != nil {
			return err
		}
		frontier = next
	}
	return nil
}

func (r *resolver) isRejected(id string) bool {
	return r.rejected != nil && r.rejected(id)
}

// resolveV1 runs the room version 1 algorithm, which gomatrixserverlib has
// long implemented: R starts as the union of the states without the keys
// they hold different events for (a key some state lacks is no conflict in
// version 1), and conflicts are resolved by depth and hash against it. It
// needs no auth chains.
func (r *resolver) resolveV1(states []StateMap) (StateMap, error) {
	values := map[Key][]string{}
	for _, s := range states {
		for k, id := range s {
			if !contains(values[k], id) {
				values[k] = append(values[k], id)
			}
		}
	}
	unconflicted := StateMap{}
	var base, confl []events.PDU
	for k, ids := range values {
		if len(ids) == 1 {
			unconflicted[k] = ids[0]
			base = append(base, r.events[ids[0]])
			continue
		}
		for _, id := range ids {
			confl = append(confl, r.events[id])
		}
	}
	out := StateMap{}
	for _, ev := range gomatrixserverlib.ResolveStateConflicts(confl, base, userIDForSender) {
		out[keyOf(ev)] = ev.EventID()
	}
	for k, id := range unconflicted {
		out[k] = id
	}
	return out, nil
}

func contains(ids []string, id string) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// userIDForSender maps sender IDs to user IDs: the same string in every
// room version this server holds (pseudonymous IDs are not supported).
func userIDForSender(_ spec.RoomID, s spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(s), true)
}

func keyOf(ev events.PDU) Key {
	return Key{Type: ev.Type(), StateKey: *ev.StateKey()}
}
