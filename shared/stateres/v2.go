package stateres

import (
	"container/heap"
	"math"
	"sort"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/matrix-org/gomatrixserverlib"
)

// resolveV2 runs the algorithm of the room version 2 spec ("State
// resolution", Algorithm), with the two changes of v2.1 (room version 12,
// MSC4297) when r.algo says so: the conflicted state subgraph joins the full
// conflicted set, and the first iterative auth checks start from an empty
// state map.
func (r *resolver) resolveV2(states []StateMap, unconflicted StateMap, conflicted []string) (StateMap, error) {
	if err := r.loadAuthChains(); err != nil {
		return nil, err
	}
	full := r.fullConflictedSet(states, conflicted)

	// Step 1: the power events of the full conflicted set and the events of
	// their auth chains in it, in reverse topological power ordering.
	power := r.powerSet(full)
	partial := StateMap{}
	if r.algo == gomatrixserverlib.StateResV2 {
		// Step 2 (v2): iterative auth checks start from the unconflicted
		// state map. MSC4297 modification 1 (v2.1) starts from an empty map
		// instead, so that the auth_events of the events replayed, not a
		// state that may be older than them, authorise them (problem A).
		for k, id := range unconflicted {
			partial[k] = id
		}
	}
	r.iterativeAuthChecks(partial, r.reverseTopologicalPowerOrder(power))

	// Steps 3 and 4: the other events of the full conflicted set, in
	// mainline order based on the power levels of the partial state.
	var rest []string
	for id := range full {
		if !power[id] {
			rest = append(rest, id)
		}
	}
	r.iterativeAuthChecks(partial, r.mainlineOrder(rest, partial[Key{Type: events.PowerLevels}]))

	// Step 5: the unconflicted state map wins.
	for k, id := range unconflicted {
		partial[k] = id
	}
	return partial, nil
}

// fullConflictedSet is the conflicted state set, the auth difference and,
// for v2.1, the conflicted state subgraph.
func (r *resolver) fullConflictedSet(states []StateMap, conflicted []string) map[string]bool {
	full := map[string]bool{}
	for _, id := range conflicted {
		full[id] = true
	}
	// Auth difference: the union of the full auth chains of the states
	// less their intersection.
	count := map[string]int{}
	for _, s := range states {
		roots := make([]string, 0, len(s))
		for _, id := range s {
			roots = append(roots, id)
		}
		for id := range r.authChain(roots) {
			count[id]++
		}
	}
	for id, n := range count {
		if n < len(states) {
			full[id] = true
		}
	}
	if r.algo == gomatrixserverlib.StateResV2_1 {
		// MSC4297 modification 2: add the events on auth_events paths
		// between two conflicted events, so that an old state's newer
		// auth history is replayed in order (problem B).
		for id := range r.conflictedSubgraph(conflicted) {
			full[id] = true
		}
	}
	return full
}

// authChain is the union of the auth chains of roots: every event reachable
// through auth_events, roots themselves excluded unless reached.
func (r *resolver) authChain(roots []string) map[string]bool {
	chain := map[string]bool{}
	stack := append([]string(nil), roots...)
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, a := range r.events[id].AuthEventIDs() {
			if !chain[a] {
				chain[a] = true
				stack = append(stack, a)
			}
		}
	}
	return chain
}

// conflictedSubgraph is the union of all auth_events paths between two
// events of the conflicted state set, endpoints included (room v12 spec,
// "Conflicted state subgraph"): the events reachable from a conflicted
// event from which a conflicted event is reachable. Linear in the auth
// chains, where the library re-walks shared paths.
func (r *resolver) conflictedSubgraph(conflicted []string) map[string]bool {
	isConflicted := map[string]bool{}
	for _, id := range conflicted {
		isConflicted[id] = true
	}
	reached := r.authChain(conflicted)
	for _, id := range conflicted {
		reached[id] = true
	}
	leads := map[string]bool{} // memo: reaches a conflicted event
	var reaches func(id string) bool
	reaches = func(id string) bool {
		if v, ok := leads[id]; ok {
			return v
		}
		leads[id] = isConflicted[id] // until known: no endless walk round a cycle
		v := isConflicted[id]
		for _, a := range r.events[id].AuthEventIDs() {
			if reaches(a) {
				v = true
			}
		}
		leads[id] = v
		return v
	}
	out := map[string]bool{}
	for id := range reached {
		if reaches(id) {
			out[id] = true
		}
	}
	return out
}

// isPowerEvent reports whether ev might take away someone's ability to do
// something (v2 spec, "Power events").
func isPowerEvent(ev events.PDU) bool {
	switch {
	case ev.StateKey() == nil:
		return false
	case ev.Type() == events.PowerLevels || ev.Type() == events.JoinRules:
		return *ev.StateKey() == ""
	case ev.Type() == events.Member:
		if *ev.StateKey() == events.Sender(ev) {
			return false
		}
		m, err := ev.Membership()
		return err == nil && (m == "leave" || m == "ban")
	}
	return false
}

// powerSet is the set X of step 1: the power events of full, enlarged by
// the events of their auth chains that belong to full. The walk goes
// through events of full only, as Synapse's and ruma's do: read literally,
// the spec also reaches events of full behind an event outside it, which
// can differ only with a stale state (an event of full whose auth chain
// every state holds); servers agreeing matters more there. Every auth
// relation inside X is then a direct edge, which the ordering needs.
func (r *resolver) powerSet(full map[string]bool) map[string]bool {
	var stack []string
	for id := range full {
		if isPowerEvent(r.events[id]) {
			stack = append(stack, id)
		}
	}
	x := map[string]bool{}
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if x[id] {
			continue
		}
		x[id] = true
		for _, a := range r.events[id].AuthEventIDs() {
			if full[a] && !x[a] {
				stack = append(stack, a)
			}
		}
	}
	return x
}

// reverseTopologicalPowerOrder sorts set by Kahn's algorithm on the auth
// graph, earliest first, taking at each step the candidate whose sender
// has the greatest power level in its auth_events, then the smallest
// origin_server_ts, then the smallest event ID.
func (r *resolver) reverseTopologicalPowerOrder(set map[string]bool) []string {
	waiting := map[string]int{}         // auth events in set not yet placed
	dependents := map[string][]string{} // auth event -> events in set citing it
	for id := range set {
		for _, a := range r.events[id].AuthEventIDs() {
			if set[a] {
				waiting[id]++
				dependents[a] = append(dependents[a], id)
			}
		}
	}
	h := &candidates{}
	for id := range set {
		if waiting[id] == 0 {
			h.items = append(h.items, r.powerCandidate(id))
		}
	}
	heap.Init(h)
	out := make([]string, 0, len(set))
	for h.Len() > 0 {
		c := heap.Pop(h).(candidate)
		out = append(out, c.id)
		for _, d := range dependents[c.id] {
			if waiting[d]--; waiting[d] == 0 {
				heap.Push(h, r.powerCandidate(d))
			}
		}
	}
	return out
}

func (r *resolver) powerCandidate(id string) candidate {
	ev := r.events[id]
	// The ordering wants the greatest power first: negate it.
	return candidate{rank: -r.senderPower(ev), ts: int64(ev.OriginServerTS()), id: id}
}

// senderPower is the power level of ev's sender as ev's auth_events give
// it: unlimited for the creators of rooms whose creators are privileged
// (version 12, MSC4289), else what the cited power levels say; with none
// cited, the creator's 100 of the auth rules (content.creator before
// version 11, the sender from 11 on) and 0 for everyone else.
func (r *resolver) senderPower(ev events.PDU) int64 {
	sender := events.Sender(ev)
	privileged := events.PrivilegedCreators(r.version)
	if privileged && contains(events.Creators(r.create), sender) {
		return math.MaxInt64 - 1
	}
	if pl := r.authEventOfType(ev, events.PowerLevels); pl != nil {
		c, err := events.PowerLevelsOf(pl)
		if err != nil {
			return 0
		}
		return events.UserLevel(c, sender)
	}
	if !privileged && contains(events.Creators(r.create), sender) {
		return 100
	}
	return 0
}

// authEventOfType is the event of type typ with an empty state key among
// ev's auth_events, or nil.
func (r *resolver) authEventOfType(ev events.PDU, typ string) events.PDU {
	for _, a := range ev.AuthEventIDs() {
		if ae := r.events[a]; ae != nil && ae.Type() == typ && ae.StateKeyEquals("") {
			return ae
		}
	}
	return nil
}

// mainlineOrder sorts ids by their mainline position based on the power
// levels event head (none: every position is the same), earliest first:
// greater position, then smaller origin_server_ts, then smaller event ID.
func (r *resolver) mainlineOrder(ids []string, head string) []string {
	// Event IDs of room versions 1 and 2 are chosen by their senders, so an
	// auth graph could hold a cycle: walks stop at an event seen before.
	mainline := map[string]int64{}
	for i, p := int64(0), r.events[head]; p != nil; i, p = i+1, r.authEventOfType(p, events.PowerLevels) {
		if _, seen := mainline[p.EventID()]; seen {
			break
		}
		mainline[p.EventID()] = i
	}
	known := map[string]int64{} // position of power levels events met on the way
	position := func(ev events.PDU) int64 {
		var path []string
		pos := int64(math.MaxInt64)
		for p := r.authEventOfType(ev, events.PowerLevels); p != nil; p = r.authEventOfType(p, events.PowerLevels) {
			if i, ok := mainline[p.EventID()]; ok {
				pos = i
				break
			}
			if i, ok := known[p.EventID()]; ok {
				pos = i
				break
			}
			if len(path) > len(r.events) {
				break
			}
			path = append(path, p.EventID())
		}
		for _, id := range path {
			known[id] = pos
		}
		return pos
	}
	cs := make([]candidate, 0, len(ids))
	for _, id := range ids {
		ev := r.events[id]
		cs = append(cs, candidate{rank: -position(ev), ts: int64(ev.OriginServerTS()), id: id})
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].less(cs[j]) })
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.id
	}
	return out
}

// iterativeAuthChecks applies each event of list to partial when the auth
// rules allow it against partial, taking a key partial lacks from the
// event's auth_events unless that auth event was rejected (v2 spec,
// "Iterative auth checks").
func (r *resolver) iterativeAuthChecks(partial StateMap, list []string) {
	for _, id := range list {
		ev := r.events[id]
		if ev.StateKey() == nil {
			continue
		}
		st, err := r.authState(ev, partial)
		if err != nil {
			continue // content the auth rules cannot read: not allowed
		}
		if events.Allowed(ev, st) == nil {
			partial[keyOf(ev)] = id
		}
	}
}

// authState is the state ev is checked against during iterative auth
// checks. The create event is the room's: version 12 events do not cite it.
func (r *resolver) authState(ev events.PDU, partial StateMap) (*events.State, error) {
	needed, err := events.AuthStateNeeded(r.version, events.Proto{
		RoomID: r.roomID, Sender: events.Sender(ev), Type: ev.Type(),
		StateKey: ev.StateKey(), Content: ev.Content(),
	})
	if err != nil {
		return nil, err
	}
	cited := map[Key]events.PDU{}
	for _, a := range ev.AuthEventIDs() {
		if ae := r.events[a]; ae != nil && ae.StateKey() != nil && !r.isRejected(a) {
			cited[keyOf(ae)] = ae
		}
	}
	use := []events.PDU{r.create}
	for _, k := range needed {
		if k.Type == events.Create {
			continue
		}
		if id, ok := partial[k]; ok {
			use = append(use, r.events[id])
		} else if ae, ok := cited[k]; ok {
			use = append(use, ae)
		}
	}
	return events.NewState(use)
}

// candidate is an event with its sort keys; smaller sorts first.
type candidate struct {
	rank int64
	ts   int64
	id   string
}

func (c candidate) less(o candidate) bool {
	if c.rank != o.rank {
		return c.rank < o.rank
	}
	if c.ts != o.ts {
		return c.ts < o.ts
	}
	return c.id < o.id
}

// candidates is a min-heap of candidates for Kahn's algorithm.
type candidates struct{ items []candidate }

func (h *candidates) Len() int           { return len(h.items) }
func (h *candidates) Less(i, j int) bool { return h.items[i].less(h.items[j]) }
func (h *candidates) Swap(i, j int)      { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *candidates) Push(x any)         { h.items = append(h.items, x.(candidate)) }
func (h *candidates) Pop() any {
	c := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return c
}
