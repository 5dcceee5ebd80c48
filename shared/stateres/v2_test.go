package stateres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/stateres"
)

// v2Versions are the room versions the classic cases run on: the first
// and last of state resolution v2 and the one of v2.1, which must agree
// with v2 where no state is stale.
var v2Versions = []string{"2", "11", "12"}

func eachVersion(t *testing.T, f func(t *testing.T, g *graph)) {
	for _, v := range v2Versions {
		t.Run("v"+v, func(t *testing.T) { f(t, newGraph(t, v)) })
	}
}

// A ban and a power level change by the banned moderator race: the ban is
// sent by the more powerful user, so it is applied first and the banned
// user's power levels fail auth, though they were sent earlier.
func TestResolve_BanBeatsPowerLevelsOfTheBanned(t *testing.T) {
	eachVersion(t, func(t *testing.T, g *graph) {
		g.start(map[string]int{bob: 50})
		g.add(node{name: "bob-join", sender: bob, typ: events.Member, key: bob, content: member("join"),
			prev: []string{"jr-public"}, auth: []string{"create", "pl", "jr-public"}, ts: 5})
		g.add(node{name: "charlie-join", sender: charlie, typ: events.Member, key: charlie, content: member("join"),
			prev: []string{"bob-join"}, auth: []string{"create", "pl", "jr-public"}, ts: 6})
		g.add(node{name: "ban", sender: alice, typ: events.Member, key: bob, content: member("ban"),
			prev: []string{"charlie-join"}, auth: []string{"create", "alice-join", "pl", "bob-join"}, ts: 10})
		g.add(node{name: "bob-pl", sender: bob, typ: events.PowerLevels, content: g.pl(map[string]int{alice: 100, bob: 50, charlie: 50}),
			prev: []string{"charlie-join"}, auth: []string{"create", "pl", "bob-join"}, ts: 9})

		g.resolve(g.state("create", "alice-join", "pl", "jr-public", "ban", "charlie-join"),
			g.state("create", "alice-join", "pl", "jr-public", "ban", "charlie-join"),
			g.state("create", "alice-join", "bob-pl", "jr-public", "bob-join", "charlie-join"))
	})
}

// A join under a public join rule races a change to invite-only: power
// events are applied first, so the join is checked against the invite
// rule and left out ("join rule evasion" fails).
func TestResolve_JoinRaceWithInviteOnly(t *testing.T) {
	eachVersion(t, func(t *testing.T, g *graph) {
		g.start(map[string]int{})
		g.add(node{name: "jr-invite", sender: alice, typ: events.JoinRules, content: joinRule("invite"),
			prev: []string{"jr-public"}, auth: []string{"create", "alice-join", "pl"}, ts: 10})
		g.add(node{name: "charlie-join", sender: charlie, typ: events.Member, key: charlie, content: member("join"),
			prev: []string{"jr-public"}, auth: []string{"create", "pl", "jr-public"}, ts: 11})

		g.resolve(g.state("create", "alice-join", "pl", "jr-invite"),
			g.state("create", "alice-join", "pl", "jr-invite"),
			g.state("create", "alice-join", "pl", "jr-public", "charlie-join"))
	})
}

// Concurrent join rule changes are power events, replayed in reverse
// topological power ordering: the more powerful sender first, then the
// earlier origin_server_ts, then the smaller event ID; the last applied
// wins.
func TestResolve_PowerEventOrder(t *testing.T) {
	setup := func(g *graph) {
		g.start(map[string]int{bob: 50, charlie: 50})
		g.add(node{name: "bob-join", sender: bob, typ: events.Member, key: bob, content: member("join"),
			prev: []string{"jr-public"}, auth: []string{"create", "pl", "jr-public"}, ts: 5})
		g.add(node{name: "charlie-join", sender: charlie, typ: events.Member, key: charlie, content: member("join"),
			prev: []string{"bob-join"}, auth: []string{"create", "pl", "jr-public"}, ts: 6})
	}
	base := []string{"create", "alice-join", "pl", "bob-join", "charlie-join"}
	with := func(name string) []string { return append(append([]string(nil), base...), name) }
	jr := func(g *graph, name, sender, rule string, ts int) {
		g.add(node{name: name, sender: sender, typ: events.JoinRules, content: joinRule(rule),
			prev: []string{"charlie-join"}, auth: []string{"create", senderJoin(sender), "pl"}, ts: ts})
	}
	t.Run("power before timestamp", func(t *testing.T) {
		eachVersion(t, func(t *testing.T, g *graph) {
			setup(g)
			jr(g, "alice-jr", alice, "invite", 20)
			jr(g, "bob-jr", bob, "public", 10)
			// alice (100) goes first though later; bob's is applied last.
			g.resolve(g.state(with("bob-jr")...), g.state(with("alice-jr")...), g.state(with("bob-jr")...))
		})
	})
	t.Run("timestamp at equal power", func(t *testing.T) {
		eachVersion(t, func(t *testing.T, g *graph) {
			setup(g)
			jr(g, "bob-jr", bob, "invite", 20)
			jr(g, "charlie-jr", charlie, "public", 10)
			g.resolve(g.state(with("bob-jr")...), g.state(with("bob-jr")...), g.state(with("charlie-jr")...))
		})
	})
	t.Run("event ID at equal power and timestamp", func(t *testing.T) {
		eachVersion(t, func(t *testing.T, g *graph) {
			setup(g)
			jr(g, "bob-jr", bob, "invite", 10)
			jr(g, "charlie-jr", charlie, "public", 10)
			last := "bob-jr"
			if g.id("charlie-jr") > g.id("bob-jr") {
				last = "charlie-jr"
			}
			g.resolve(g.state(with(last)...), g.state(with("bob-jr")...), g.state(with("charlie-jr")...))
		})
	})
}

func senderJoin(user string) string {
	switch user {
	case alice:
		return "alice-join"
	case bob:
		return "bob-join"
	case charlie:
		return "charlie-join"
	}
	panic("no join event for " + user)
}

// Topics are ordinary state, replayed in mainline order: the topic whose
// power levels are further down the resolved power levels' mainline goes
// first, whatever the timestamps; at the same position the timestamp
// decides, then the event ID.
func TestResolve_TopicMainlineOrder(t *testing.T) {
	setup := func(g *graph) {
		g.start(map[string]int{bob: 50})
		g.add(node{name: "bob-join", sender: bob, typ: events.Member, key: bob, content: member("join"),
			prev: []string{"jr-public"}, auth: []string{"create", "pl", "jr-public"}, ts: 5})
		g.add(node{name: "pl2", sender: alice, typ: events.PowerLevels, content: g.pl(map[string]int{alice: 100, bob: 50, charlie: 10}),
			prev: []string{"bob-join"}, auth: []string{"create", "alice-join", "pl"}, ts: 6})
	}
	base := []string{"create", "alice-join", "jr-public", "bob-join"}
	with := func(names ...string) []string { return append(append([]string(nil), base...), names...) }
	t.Run("mainline before timestamp", func(t *testing.T) {
		eachVersion(t, func(t *testing.T, g *graph) {
			setup(g)
			g.add(node{name: "topic-a", sender: alice, typ: events.Topic, content: topic("a"),
				prev: []string{"pl2"}, auth: []string{"create", "alice-join", "pl2"}, ts: 10})
			g.add(node{name: "topic-b", sender: bob, typ: events.Topic, content: topic("b"),
				prev: []string{"bob-join"}, auth: []string{"create", "bob-join", "pl"}, ts: 20})
			// topic-b cites pl, one step further down pl2's mainline: first.
			g.resolve(g.state(with("pl2", "topic-a")...),
				g.state(with("pl2", "topic-a")...), g.state(with("pl", "topic-b")...))
		})
	})
	t.Run("timestamp at one position", func(t *testing.T) {
		eachVersion(t, func(t *testing.T, g *graph) {
			setup(g)
			g.add(node{name: "topic-a", sender: alice, typ: events.Topic, content: topic("a"),
				prev: []string{"pl2"}, auth: []string{"create", "alice-join", "pl2"}, ts: 20})
			g.add(node{name: "topic-b", sender: bob, typ: events.Topic, content: topic("b"),
				prev: []string{"pl2"}, auth: []string{"create", "bob-join", "pl2"}, ts: 10})
			g.resolve(g.state(with("pl2", "topic-a")...),
				g.state(with("pl2", "topic-a")...), g.state(with("pl2", "topic-b")...))
		})
	})
	t.Run("event ID at one position and timestamp", func(t *testing.T) {
		eachVersion(t, func(t *testing.T, g *graph) {
			setup(g)
			g.add(node{name: "topic-a", sender: alice, typ: events.Topic, content: topic("a"),
				prev: []string{"pl2"}, auth: []string{"create", "alice-join", "pl2"}, ts: 10})
			g.add(node{name: "topic-b", sender: bob, typ: events.Topic, content: topic("b"),
				prev: []string{"pl2"}, auth: []string{"create", "bob-join", "pl2"}, ts: 10})
			last := "topic-a"
			if g.id("topic-b") > g.id("topic-a") {
				last = "topic-b"
			}
			g.resolve(g.state(with("pl2", last)...),
				g.state(with("pl2", "topic-a")...), g.state(with("pl2", "topic-b")...))
		})
	})
}

// A topic whose sender lost the power to set it on the other fork is
// rejected when replayed after the demotion.
func TestResolve_DemotionRejectsConcurrentTopic(t *testing.T) {
	eachVersion(t, func(t *testing.T, g *graph) {
		g.start(map[string]int{bob: 50})
		g.add(node{name: "bob-join", sender: bob, typ: events.Member, key: bob, content: member("join"),
			prev: []string{"jr-public"}, auth: []string{"create", "pl", "jr-public"}, ts: 5})
		g.add(node{name: "topic-alice", sender: alice, typ: events.Topic, content: topic("a"),
			prev: []string{"bob-join"}, auth: []string{"create", "alice-join", "pl"}, ts: 6})
		g.add(node{name: "demote", sender: alice, typ: events.PowerLevels, content: g.pl(map[string]int{alice: 100}),
			prev: []string{"topic-alice"}, auth: []string{"create", "alice-join", "pl"}, ts: 7})
		g.add(node{name: "topic-bob", sender: bob, typ: events.Topic, content: topic("b"),
			prev: []string{"topic-alice"}, auth: []string{"create", "bob-join", "pl"}, ts: 8})

		base := []string{"create", "alice-join", "jr-public", "bob-join"}
		g.resolve(g.state(append(base, "demote", "topic-alice")...),
			g.state(append(base, "demote", "topic-alice")...),
			g.state(append(base, "pl", "topic-bob")...))
	})
}

// Resolving one state, or states that agree, returns it without loading.
func TestResolve_NothingToResolve(t *testing.T) {
	g := newGraph(t, "12")
	g.start(map[string]int{})
	s := g.state("create", "alice-join", "pl", "jr-public")
	for _, states := range [][]stateres.StateMap{{s}, {s, s}} {
		l := g.resolve(s, states...)
		if l.calls != 0 {
			t.Errorf("%d states: %d loader calls, want none", len(states), l.calls)
		}
	}
	got, err := stateres.Resolve(context.Background(), "12", nil, g.loader())
	if err != nil || len(got) != 0 {
		t.Errorf("no states: %v, %v; want an empty state", got, err)
	}
}

// Room version 1 resolves by depth and hash, without auth chains: of two
// concurrent topics, the deeper one wins when it passes auth.
func TestResolve_Version1(t *testing.T) {
	g := newGraph(t, "1")
	g.start(map[string]int{})
	g.add(node{name: "room-name", sender: alice, typ: events.Name, content: `{"name":"x"}`,
		prev: []string{"jr-public"}, auth: []string{"create", "alice-join", "pl"}, ts: 5})
	g.add(node{name: "topic-deep", sender: alice, typ: events.Topic, content: topic("deep"),
		prev: []string{"room-name"}, auth: []string{"create", "alice-join", "pl"}, ts: 6})
	g.add(node{name: "topic-shallow", sender: alice, typ: events.Topic, content: topic("shallow"),
		prev: []string{"jr-public"}, auth: []string{"create", "alice-join", "pl"}, ts: 7})
	base := []string{"create", "alice-join", "pl", "jr-public"}
	l := g.resolve(g.state(append(base, "room-name", "topic-deep")...),
		g.state(append(base, "room-name", "topic-deep")...),
		g.state(append(base, "topic-shallow")...))
	if l.loaded != 7 {
		t.Errorf("loaded %d events, want the 7 of the states only", l.loaded)
	}
}

func TestResolve_Errors(t *testing.T) {
	g := newGraph(t, "11")
	g.start(map[string]int{})
	g.add(node{name: "topic", sender: alice, typ: events.Topic, content: topic("t"),
		prev: []string{"jr-public"}, auth: []string{"create", "alice-join", "pl"}, ts: 5})
	full := g.state("create", "alice-join", "pl", "jr-public", "topic")
	other := g.state("create", "alice-join", "pl", "jr-public")
	ctx := context.Background()

	t.Run("unsupported version", func(t *testing.T) {
		_, err := stateres.Resolve(ctx, "99", []stateres.StateMap{full, other}, g.loader())
		if !errors.Is(err, events.ErrUnsupportedVersion) {
			t.Errorf("got %v, want ErrUnsupportedVersion", err)
		}
	})
	t.Run("missing auth event", func(t *testing.T) {
		l := g.loader()
		delete(l.events, g.id("alice-join"))
		_, err := stateres.Resolve(ctx, "11", []stateres.StateMap{
			g.state("create", "pl", "jr-public", "topic"), g.state("create", "pl", "jr-public")}, l)
		if !errors.Is(err, stateres.ErrMissingEvent) {
			t.Errorf("got %v, want ErrMissingEvent", err)
		}
	})
	t.Run("event under another key", func(t *testing.T) {
		bad := stateres.StateMap{{Type: events.Name}: g.id("topic")}
		for k, id := range other {
			bad[k] = id
		}
		_, err := stateres.Resolve(ctx, "11", []stateres.StateMap{full, bad}, g.loader())
		if !errors.Is(err, stateres.ErrBadState) {
			t.Errorf("got %v, want ErrBadState", err)
		}
	})
	t.Run("no create event", func(t *testing.T) {
		_, err := stateres.Resolve(ctx, "11", []stateres.StateMap{
			g.state("alice-join", "pl", "topic"), g.state("alice-join", "pl")}, g.loader())
		if !errors.Is(err, stateres.ErrBadState) {
			t.Errorf("got %v, want ErrBadState", err)
		}
	})
	t.Run("auth event of another room", func(t *testing.T) {
		g1, g2 := newGraph(t, "12"), newGraph(t, "12")
		g2.base = g2.base.Add(time.Hour) // another create event, another room
		g1.start(map[string]int{})
		g2.start(map[string]int{})
		intruder, err := g1.signer.Build("12", events.Proto{RoomID: g1.roomID, Sender: alice, Type: events.Topic,
			StateKey: new(string), Content: []byte(topic("x"))}, events.Graph{PrevEvents: []string{g1.id("jr-public")}, Depth: 5},
			mustState(t, g2.all("create", "alice-join", "pl")...), g1.base)
		if err != nil {
			t.Fatal(err)
		}
		l := g1.loader()
		for _, ev := range g2.byName {
			l.events[ev.EventID()] = ev
		}
		l.events[intruder.EventID()] = intruder
		base := g1.state("create", "alice-join", "pl", "jr-public")
		with := g1.state("create", "alice-join", "pl", "jr-public")
		with[stateres.Key{Type: events.Topic}] = intruder.EventID()
		_, err = stateres.Resolve(ctx, "12", []stateres.StateMap{with, base}, l)
		if !errors.Is(err, stateres.ErrBadState) {
			t.Errorf("got %v, want ErrBadState", err)
		}
	})
	t.Run("loader failure", func(t *testing.T) {
		_, err := stateres.Resolve(ctx, "11", []stateres.StateMap{full, other}, failing{})
		if !errors.Is(err, errLoad) {
			t.Errorf("got %v, want the loader's error", err)
		}
	})
}

var errLoad = fmt.Errorf("table unavailable")

type failing struct{}

func (failing) Events(context.Context, []string) (map[string]events.PDU, error) { return nil, errLoad }

// kickAfterDisplayName draws a moderator, dave, who joins, changes his
// display name and kicks bob on one fork, while the other fork saw none of
// it. Dave's join is in no state, only in the auth difference. Returns
// the two states.
func kickAfterDisplayName(g *graph) (daves, others []string) {
	g.start(map[string]int{dave: 50})
	g.add(node{name: "bob-join", sender: bob, typ: events.Member, key: bob, content: member("join"),
		prev: []string{"jr-public"}, auth: []string{"create", "pl", "jr-public"}, ts: 5})
	g.add(node{name: "dave-join", sender: dave, typ: events.Member, key: dave, content: member("join"),
		prev: []string{"bob-join"}, auth: []string{"create", "pl", "jr-public"}, ts: 10})
	g.add(node{name: "dave-dn", sender: dave, typ: events.Member, key: dave, content: displayName("Dave"),
		prev: []string{"dave-join"}, auth: []string{"create", "pl", "jr-public", "dave-join"}, ts: 11})
	g.add(node{name: "kick", sender: dave, typ: events.Member, key: bob, content: member("leave"),
		prev: []string{"dave-dn"}, auth: []string{"create", "pl", "dave-dn", "bob-join"}, ts: 12})
	base := []string{"create", "alice-join", "pl", "jr-public"}
	return append(append([]string(nil), base...), "dave-dn", "kick"),
		append(append([]string(nil), base...), "bob-join")
}

// A power event pulls the events of its auth chain in the full conflicted
// set into step 1 (v2 spec, Algorithm, step 1), though they are only in
// the auth difference: dave's join is replayed before his display name
// change, not after it with the ordinary events.
func TestResolve_PowerEventPullsInItsAuthChain(t *testing.T) {
	eachVersion(t, func(t *testing.T, g *graph) {
		daves, others := kickAfterDisplayName(g)
		g.resolve(g.state("create", "alice-join", "pl", "jr-public", "dave-dn", "kick"),
			g.state(daves...), g.state(others...))
	})
}

// kickByAbsentModerator draws states that both lack dave's membership
// (partial synchronisation gave them so) while dave's kick of bob is
// conflicted with bob's join. Returns the two states.
func kickByAbsentModerator(g *graph) (kicked, joined []string) {
	g.start(map[string]int{dave: 50})
	g.add(node{name: "bob-join", sender: bob, typ: events.Member, key: bob, content: member("join"),
		prev: []string{"jr-public"}, auth: []string{"create", "pl", "jr-public"}, ts: 5})
	g.add(node{name: "dave-join", sender: dave, typ: events.Member, key: dave, content: member("join"),
		prev: []string{"bob-join"}, auth: []string{"create", "pl", "jr-public"}, ts: 10})
	g.add(node{name: "dave-dn", sender: dave, typ: events.Member, key: dave, content: displayName("Dave"),
		prev: []string{"dave-join"}, auth: []string{"create", "pl", "jr-public", "dave-join"}, ts: 11})
	g.add(node{name: "topic-dave", sender: dave, typ: events.Topic, content: topic("dave's"),
		prev: []string{"dave-dn"}, auth: []string{"create", "pl", "dave-dn"}, ts: 12})
	g.add(node{name: "kick", sender: dave, typ: events.Member, key: bob, content: member("leave"),
		prev: []string{"topic-dave"}, auth: []string{"create", "pl", "dave-dn", "bob-join"}, ts: 13})
	base := []string{"create", "alice-join", "pl", "jr-public", "topic-dave"}
	return append(append([]string(nil), base...), "kick"),
		append(append([]string(nil), base...), "bob-join")
}

// When the partial state lacks a key the auth rules need, the event's own
// auth event for it is used (v2 spec, "Iterative auth checks"): dave's
// membership comes from the kick's auth_events and the kick holds.
func TestResolve_MissingKeyFromAuthEvents(t *testing.T) {
	eachVersion(t, func(t *testing.T, g *graph) {
		kicked, joined := kickByAbsentModerator(g)
		g.resolve(g.state("create", "alice-join", "pl", "jr-public", "topic-dave", "kick"),
			g.state(kicked...), g.state(joined...))
	})
}

// A rejected auth event is not used to fill the gap: with dave's display
// name change marked rejected, dave is not in the room for the kick.
func TestResolve_RejectedAuthEventNotUsed(t *testing.T) {
	g := newGraph(t, "12")
	kicked, joined := kickByAbsentModerator(g)
	l := g.loader()
	l.rejected[g.id("dave-dn")] = true
	got, err := stateres.Resolve(context.Background(), g.v, []stateres.StateMap{g.state(kicked...), g.state(joined...)}, l)
	if err != nil {
		t.Fatal(err)
	}
	want := g.state("create", "alice-join", "pl", "jr-public", "topic-dave", "bob-join")
	if g.show(got) != g.show(want) {
		t.Errorf("resolved state\n got %s\nwant %s", g.show(got), g.show(want))
	}
}

// forkedPowerLevels draws two power level changes on two forks, each
// followed by a topic from bob: topic-x cites the losing power levels, so
// it reaches the mainline one step later than topic-y, which cites the
// common ones directly. Returns the two states.
func forkedPowerLevels(g *graph) (xs, ys []string) {
	g.start(map[string]int{bob: 50})
	g.add(node{name: "bob-join", sender: bob, typ: events.Member, key: bob, content: member("join"),
		prev: []string{"jr-public"}, auth: []string{"create", "pl", "jr-public"}, ts: 5})
	g.add(node{name: "pl-a", sender: alice, typ: events.PowerLevels, content: g.pl(map[string]int{alice: 100, bob: 50, charlie: 10}),
		prev: []string{"bob-join"}, auth: []string{"create", "alice-join", "pl"}, ts: 6})
	g.add(node{name: "topic-x", sender: bob, typ: events.Topic, content: topic("x"),
		prev: []string{"pl-a"}, auth: []string{"create", "bob-join", "pl-a"}, ts: 10})
	g.add(node{name: "topic-y", sender: bob, typ: events.Topic, content: topic("y"),
		prev: []string{"bob-join"}, auth: []string{"create", "bob-join", "pl"}, ts: 20})
	g.add(node{name: "pl-b", sender: alice, typ: events.PowerLevels, content: g.pl(map[string]int{alice: 100, bob: 50, charlie: 20}),
		prev: []string{"topic-y"}, auth: []string{"create", "alice-join", "pl"}, ts: 21})
	base := []string{"create", "alice-join", "jr-public", "bob-join"}
	return append(append([]string(nil), base...), "pl-a", "topic-x"),
		append(append([]string(nil), base...), "pl-b", "topic-y")
}

// The mainline position of an event is that of the first power levels on
// the mainline its auth chain reaches, however many power levels off the
// mainline it passes first: both topics sit at pl's position, so the later
// one, topic-y, is applied last.
func TestResolve_MainlinePositionThroughForkedPowerLevels(t *testing.T) {
	eachVersion(t, func(t *testing.T, g *graph) {
		xs, ys := forkedPowerLevels(g)
		g.resolve(g.state("create", "alice-join", "jr-public", "bob-join", "pl-b", "topic-y"),
			g.state(xs...), g.state(ys...))
	})
}

// The state after a state event holds it; after a message, the state is
// the one before; the state before is left as it was.
func TestAfter(t *testing.T) {
	g := newGraph(t, "12")
	g.start(map[string]int{})
	g.add(node{name: "topic", sender: alice, typ: events.Topic, content: topic("t"),
		prev: []string{"jr-public"}, auth: []string{"create", "alice-join", "pl"}, ts: 5})
	before := g.state("create", "alice-join", "pl", "jr-public")
	after := stateres.After(before, g.all("topic")[0])
	if g.show(after) != g.show(g.state("create", "alice-join", "pl", "jr-public", "topic")) || len(before) != 4 {
		t.Errorf("after %s, before %s", g.show(after), g.show(before))
	}
	msg, err := g.signer.Build("12", events.Proto{RoomID: g.roomID, Sender: alice, Type: "m.room.message",
		Content: []byte(`{"body":"hi","msgtype":"m.text"}`)}, events.Graph{PrevEvents: []string{g.id("topic")}, Depth: 6},
		mustState(t, g.all("create", "alice-join", "pl")...), g.base)
	if err != nil {
		t.Fatal(err)
	}
	if got := stateres.After(before, msg); g.show(got) != g.show(before) {
		t.Errorf("after a message: %s, want %s", g.show(got), g.show(before))
	}
}

func mustState(t *testing.T, evs ...events.PDU) *events.State {
	t.Helper()
	st, err := events.NewState(evs)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// rewire gives the event named name other auth events, as a sender of a
// room version 1 or 2 event, which names its events itself, could: the
// auth event named from is replaced by the one named to. The event is
// parsed back as stored, with its old ID.
func (g *graph) rewire(name, from, to string) {
	g.t.Helper()
	ev := g.all(name)[0]
	var raw map[string]any
	if err := json.Unmarshal(ev.JSON(), &raw); err != nil {
		g.t.Fatal(err)
	}
	auth := raw["auth_events"].([]any)
	for i, a := range auth {
		if pair := a.([]any); pair[0] == g.id(from) {
			auth[i] = []any{g.id(to), pair[1]}
		}
	}
	b, err := json.Marshal(raw)
	if err != nil {
		g.t.Fatal(err)
	}
	rewired, err := events.Parse(g.v, ev.EventID(), b)
	if err != nil {
		g.t.Fatal(err)
	}
	g.byName[name] = rewired
}

// A cycle of power levels in the auth graph, which only room versions
// whose senders name their events can hold, ends the mainline walk rather
// than looping; the resolution still gives a state.
func TestResolve_AuthCycleInVersion2(t *testing.T) {
	g := newGraph(t, "2")
	g.start(map[string]int{})
	pl := func(name string, level int) {
		g.add(node{name: name, sender: alice, typ: events.PowerLevels, content: g.pl(map[string]int{alice: 100, charlie: level}),
			prev: []string{"jr-public"}, auth: []string{"create", "alice-join", "pl"}, ts: 10 + level})
	}
	pl("pl-x", 1)
	pl("pl-y", 2)
	g.rewire("pl-x", "pl", "pl-y")
	g.rewire("pl-y", "pl", "pl-x")
	for _, n := range []struct {
		name, cites string
		ts          int
	}{{"pl-z", "pl-x", 20}, {"pl-w", "pl-y", 21}} {
		g.add(node{name: n.name, sender: alice, typ: events.PowerLevels, content: g.pl(map[string]int{alice: 100, charlie: n.ts}),
			prev: []string{"jr-public"}, auth: []string{"create", "alice-join", n.cites}, ts: n.ts})
	}
	g.add(node{name: "topic", sender: alice, typ: events.Topic, content: topic("t"),
		prev: []string{"jr-public"}, auth: []string{"create", "alice-join", "pl-z"}, ts: 30})
	base := []string{"create", "alice-join", "jr-public"}
	// pl-w is applied last (later); the topic's power levels reach pl-w's
	// mainline round the cycle, and the topic holds.
	g.resolve(g.state(append(base, "pl-w", "topic")...),
		g.state(append(base, "pl-z", "topic")...), g.state(append(base, "pl-w")...))
}
