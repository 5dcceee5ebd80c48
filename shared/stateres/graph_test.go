package stateres_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/keys"
	"github.com/cirrus-matrix/cirrus/shared/stateres"
)

// graph builds a room's events by hand: each event names its prev_events
// and the state its auth_events are chosen from, so that forks, partial
// synchronisation and stale states can be drawn as in MSC4297.
type graph struct {
	t      *testing.T
	v      string
	signer events.Signer
	roomID string
	base   time.Time
	byName map[string]events.PDU
	names  map[string]string // event ID -> name, for messages
}

func newGraph(t *testing.T, v string) *graph {
	t.Helper()
	k, err := keys.FromSeed("stateres test key")
	if err != nil {
		t.Fatal(err)
	}
	return &graph{
		t: t, v: v,
		signer: events.Signer{ServerName: "test", Key: k},
		base:   time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		byName: map[string]events.PDU{},
		names:  map[string]string{},
	}
}

// node is one event to build: a state event of typ under key by sender,
// after prev, its auth events chosen from the events named in auth (the
// state its sender saw), sent at ts milliseconds after the test's epoch.
type node struct {
	name, sender, typ, key, content string
	prev, auth                      []string
	ts                              int
}

// add builds and signs n, and checks that its auth events allow it, as an
// event accepted into the graph would be.
func (g *graph) add(n node) events.PDU {
	g.t.Helper()
	if _, dup := g.byName[n.name]; dup {
		g.t.Fatalf("event %s added twice", n.name)
	}
	var st *events.State
	if n.typ != events.Create {
		var err error
		if st, err = events.NewState(g.all(n.auth...)); err != nil {
			g.t.Fatalf("%s: auth state: %v", n.name, err)
		}
	}
	var depth int64
	prev := []string{}
	for _, p := range g.all(n.prev...) {
		prev = append(prev, p.EventID())
		depth = max(depth, p.Depth())
	}
	roomID := g.roomID
	if roomID == "" && !events.DomainlessRoomIDs(g.v) {
		roomID = "!room:test"
	}
	key := n.key
	ev, err := g.signer.Build(g.v, events.Proto{
		RoomID: roomID, Sender: n.sender, Type: n.typ, StateKey: &key, Content: json.RawMessage(n.content),
	}, events.Graph{PrevEvents: prev, Depth: depth + 1}, st, g.base.Add(time.Duration(n.ts)*time.Millisecond))
	if err != nil {
		g.t.Fatalf("build %s: %v", n.name, err)
	}
	if st == nil {
		st, _ = events.NewState(nil)
	}
	if err := events.Allowed(ev, st); err != nil {
		g.t.Fatalf("%s is not allowed by its own auth events: %v", n.name, err)
	}
	if g.roomID == "" {
		g.roomID = events.RoomID(ev)
	}
	g.byName[n.name] = ev
	g.names[ev.EventID()] = n.name
	return ev
}

func (g *graph) all(names ...string) []events.PDU {
	g.t.Helper()
	out := make([]events.PDU, 0, len(names))
	for _, n := range names {
		ev, ok := g.byName[n]
		if !ok {
			g.t.Fatalf("no event named %s", n)
		}
		out = append(out, ev)
	}
	return out
}

func (g *graph) id(name string) string { return g.all(name)[0].EventID() }

// state is the state map holding the named events.
func (g *graph) state(names ...string) stateres.StateMap {
	g.t.Helper()
	s := stateres.StateMap{}
	for _, ev := range g.all(names...) {
		k := stateres.Key{Type: ev.Type(), StateKey: *ev.StateKey()}
		if _, dup := s[k]; dup {
			g.t.Fatalf("two events for %v in one state", k)
		}
		s[k] = ev.EventID()
	}
	return s
}

// show prints a state by event names, sorted, for failure messages.
func (g *graph) show(s stateres.StateMap) string {
	var parts []string
	for k, id := range s {
		name := g.names[id]
		if name == "" {
			name = id
		}
		parts = append(parts, fmt.Sprintf("%s/%s=%s", k.Type, k.StateKey, name))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// resolve runs stateres.Resolve over the graph's events and checks the
// result is exactly want, unless want is nil.
func (g *graph) resolve(want stateres.StateMap, states ...stateres.StateMap) *loader {
	g.t.Helper()
	l := g.loader()
	got, err := stateres.Resolve(context.Background(), g.v, states, l)
	if err != nil {
		g.t.Fatalf("resolve: %v", err)
	}
	if want != nil && g.show(got) != g.show(want) {
		g.t.Errorf("resolved state\n got %s\nwant %s", g.show(got), g.show(want))
	}
	l.result = got
	return l
}

func (g *graph) loader() *loader {
	l := &loader{events: map[string]events.PDU{}, rejected: map[string]bool{}}
	for _, ev := range g.byName {
		l.events[ev.EventID()] = ev
	}
	return l
}

// loader serves a graph's events and counts what is asked of it.
type loader struct {
	events   map[string]events.PDU
	rejected map[string]bool
	calls    int
	loaded   int
	result   stateres.StateMap // what resolve returned
}

func (l *loader) Events(_ context.Context, ids []string) (map[string]events.PDU, error) {
	l.calls++
	out := map[string]events.PDU{}
	for _, id := range ids {
		if ev, ok := l.events[id]; ok {
			out[id] = ev
			l.loaded++
		}
	}
	return out, nil
}

func (l *loader) Rejected(id string) bool { return l.rejected[id] }

// Power level contents used throughout: state events and power level
// changes need 50, bans 50.
func powerLevels(users map[string]int) string {
	b, _ := json.Marshal(map[string]any{
		"users": users, "users_default": 0, "events": map[string]int{},
		"state_default": 50, "events_default": 0, "ban": 50, "kick": 50, "redact": 50, "invite": 0,
	})
	return string(b)
}

// pl is powerLevels for this graph's version: from version 12 on the
// creator has unlimited power and is left out of users (MSC4289, and the
// MSC4297 footnote on its examples).
func (g *graph) pl(users map[string]int) string {
	if events.PrivilegedCreators(g.v) {
		delete(users, alice)
	}
	return powerLevels(users)
}

// start builds the room every test forks from: alice creates it, joins,
// sets power levels (users as given, alice 100) and a public join rule.
// Names: create, alice-join, pl, jr-public.
func (g *graph) start(users map[string]int) {
	g.t.Helper()
	create := `{"room_version":"` + g.v + `"}`
	if !events.PrivilegedCreators(g.v) && g.v != "11" {
		create = `{"room_version":"` + g.v + `","creator":"` + alice + `"}`
	}
	users[alice] = 100
	g.add(node{name: "create", sender: alice, typ: events.Create, content: create, ts: 1})
	g.add(node{name: "alice-join", sender: alice, typ: events.Member, key: alice, content: member("join"),
		prev: []string{"create"}, auth: []string{"create"}, ts: 2})
	g.add(node{name: "pl", sender: alice, typ: events.PowerLevels, content: g.pl(users),
		prev: []string{"alice-join"}, auth: []string{"create", "alice-join"}, ts: 3})
	g.add(node{name: "jr-public", sender: alice, typ: events.JoinRules, content: joinRule("public"),
		prev: []string{"pl"}, auth: []string{"create", "alice-join", "pl"}, ts: 4})
}

func member(membership string) string { return `{"membership":"` + membership + `"}` }
func joinRule(rule string) string     { return `{"join_rule":"` + rule + `"}` }
func topic(text string) string        { return `{"topic":"` + text + `"}` }
func displayName(name string) string  { return `{"membership":"join","displayname":"` + name + `"}` }

const (
	alice   = "@alice:test"
	bob     = "@bob:test"
	charlie = "@charlie:test"
	eve     = "@eve:test"
	zara    = "@zara:test"
	dave    = "@dave:test"
)
