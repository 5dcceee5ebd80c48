package stateres_test

import (
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/events"
)

// problemA draws MSC4297's problem A: alice makes the room public, bob and
// charlie join, alice makes it invite-only and leaves; bob and charlie then
// change display names on two forks. Charlie's server got the state of its
// fork by partial synchronisation and holds the stale public join rule.
// It returns the two states: bob's (correct) and charlie's (stale).
func problemA(g *graph) (bobs, charlies []string) {
	g.start(map[string]int{})
	g.add(node{name: "bob-join", sender: bob, typ: events.Member, key: bob, content: member("join"),
		prev: []string{"jr-public"}, auth: []string{"create", "pl", "jr-public"}, ts: 5})
	g.add(node{name: "charlie-join", sender: charlie, typ: events.Member, key: charlie, content: member("join"),
		prev: []string{"bob-join"}, auth: []string{"create", "pl", "jr-public"}, ts: 6})
	g.add(node{name: "jr-invite", sender: alice, typ: events.JoinRules, content: joinRule("invite"),
		prev: []string{"charlie-join"}, auth: []string{"create", "alice-join", "pl"}, ts: 7})
	g.add(node{name: "alice-leave", sender: alice, typ: events.Member, key: alice, content: member("leave"),
		prev: []string{"jr-invite"}, auth: []string{"create", "alice-join", "pl"}, ts: 8})
	g.add(node{name: "bob-dn", sender: bob, typ: events.Member, key: bob, content: displayName("Bob"),
		prev: []string{"alice-leave"}, auth: []string{"create", "pl", "jr-invite", "bob-join"}, ts: 9})
	g.add(node{name: "charlie-dn", sender: charlie, typ: events.Member, key: charlie, content: displayName("Charlie"),
		prev: []string{"alice-leave"}, auth: []string{"create", "pl", "jr-invite", "charlie-join"}, ts: 10})
	return []string{"create", "pl", "alice-leave", "jr-invite", "bob-dn", "charlie-join"},
		[]string{"create", "pl", "alice-leave", "jr-public", "bob-join", "charlie-dn"}
}

// Problem A under v2 (room version 11): the unconflicted state has alice
// gone, so both join rules fail when replayed and the room is left with no
// join rules at all: the state reset the MSC describes.
func TestMSC4297_ProblemA_V2Resets(t *testing.T) {
	g := newGraph(t, "11")
	bobs, charlies := problemA(g)
	g.resolve(g.state("create", "pl", "alice-leave", "bob-dn", "charlie-dn"),
		g.state(bobs...), g.state(charlies...))
}

// Problem A under v2.1 (room version 12): starting from an empty state map
// (modification 1), the join rules are authorised by their own auth events
// (alice still joined) and invite-only, the latest, holds.
func TestMSC4297_ProblemA_V21(t *testing.T) {
	g := newGraph(t, "12")
	bobs, charlies := problemA(g)
	l := g.resolve(g.state("create", "pl", "alice-leave", "jr-invite", "bob-dn", "charlie-dn"),
		g.state(bobs...), g.state(charlies...))
	// Every event of the room is in the states or their auth chains.
	if l.loaded != len(g.byName) || l.calls != 2 {
		t.Errorf("loaded %d events in %d calls, want %d in 2", l.loaded, l.calls, len(g.byName))
	}
}

// problemB draws MSC4297's problem B: alice gives bob 50, bob gives charlie
// 50; eve and zara join on two forks, and eve's server holds the first
// power levels in its state (partial synchronisation) while eve's join
// cites bob's. Returns eve's (stale) and zara's states.
func problemB(g *graph) (eves, zaras []string) {
	return problemBCiting(g, "pl3")
}

// problemBCiting is problemB with eve's display name change citing the
// power levels named evePL.
func problemBCiting(g *graph, evePL string) (eves, zaras []string) {
	g.start(map[string]int{})
	g.add(node{name: "bob-join", sender: bob, typ: events.Member, key: bob, content: member("join"),
		prev: []string{"jr-public"}, auth: []string{"create", "pl", "jr-public"}, ts: 5})
	g.add(node{name: "charlie-join", sender: charlie, typ: events.Member, key: charlie, content: member("join"),
		prev: []string{"bob-join"}, auth: []string{"create", "pl", "jr-public"}, ts: 6})
	g.add(node{name: "pl2", sender: alice, typ: events.PowerLevels, content: g.pl(map[string]int{alice: 100, bob: 50}),
		prev: []string{"charlie-join"}, auth: []string{"create", "alice-join", "pl"}, ts: 7})
	g.add(node{name: "pl3", sender: bob, typ: events.PowerLevels, content: g.pl(map[string]int{alice: 100, bob: 50, charlie: 50}),
		prev: []string{"pl2"}, auth: []string{"create", "bob-join", "pl2"}, ts: 8})
	g.add(node{name: "eve-join", sender: eve, typ: events.Member, key: eve, content: member("join"),
		prev: []string{"pl3"}, auth: []string{"create", "pl3", "jr-public"}, ts: 9})
	g.add(node{name: "zara-join", sender: zara, typ: events.Member, key: zara, content: member("join"),
		prev: []string{"pl3"}, auth: []string{"create", "pl3", "jr-public"}, ts: 10})
	g.add(node{name: "eve-dn", sender: eve, typ: events.Member, key: eve, content: displayName("Eve"),
		prev: []string{"eve-join"}, auth: []string{"create", evePL, "jr-public", "eve-join"}, ts: 11})
	common := []string{"create", "alice-join", "jr-public", "bob-join", "charlie-join"}
	return append(append([]string(nil), common...), "pl", "eve-dn"),
		append(append([]string(nil), common...), "pl3", "zara-join")
}

// Problem B under v2 (room version 11): bob's promotion (pl2) is in both
// auth chains, so not in the auth difference, and is not replayed; bob's
// power levels then fail against alice's first ones: the power levels
// reset to the first.
func TestMSC4297_ProblemB_V2Resets(t *testing.T) {
	g := newGraph(t, "11")
	eves, zaras := problemB(g)
	g.resolve(g.state("create", "alice-join", "jr-public", "bob-join", "charlie-join", "pl", "eve-dn", "zara-join"),
		g.state(eves...), g.state(zaras...))
}

// Problem B under v2.1 (room version 12): pl2 lies on the auth path from
// pl3 to pl, both conflicted, so the conflicted state subgraph
// (modification 2) replays it and bob's power levels hold.
func TestMSC4297_ProblemB_V21(t *testing.T) {
	g := newGraph(t, "12")
	eves, zaras := problemB(g)
	g.resolve(g.state("create", "alice-join", "jr-public", "bob-join", "charlie-join", "pl3", "eve-dn", "zara-join"),
		g.state(eves...), g.state(zaras...))
}

// Synapse's variant of problem B (tests/state/test_v21.py): eve's display
// name change cites the first power levels directly, and bob's only
// through her join. In v2.1 it sits furthest down the mainline, so it is
// replayed before her join, which then holds.
func TestMSC4297_ProblemB_V21_StaleCitation(t *testing.T) {
	g := newGraph(t, "12")
	eves, zaras := problemBCiting(g, "pl")
	g.resolve(g.state("create", "alice-join", "jr-public", "bob-join", "charlie-join", "pl3", "eve-join", "zara-join"),
		g.state(eves...), g.state(zaras...))
}
