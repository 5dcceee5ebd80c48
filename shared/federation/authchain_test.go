package federation_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestWorker_FetchesMissingAuthEvents: bob's server changes bob's display
// name (D), which this server never gets, and sends a message (M) whose
// prev_events are held but whose auth events name D. The worker fetches
// D (/event_auth of M) and M is placed: alice's /messages shows it after
// bob's join. Alice then bans bob while bob's server, not yet told, sends
// a second message (M2) on the same fork, its auth events naming a second
// display name change (D2) this server lacks: D2 is fetched, M2 is
// checked against the state before it (bob joined) and the current state
// (bob banned), and soft failed; bob stays banned and /messages is
// unchanged.
func TestWorker_FetchesMissingAuthEvents(t *testing.T) {
	gs := newGapServer(t)
	rm := gs.rm
	fs := startFed(t, nil)
	ctx := context.Background()
	br := newBobRoom(t, gs, fs, gs.keep)
	room, state, bob, join := br.room, br.state, br.bob, br.join
	build := func(p events.Proto, prev []string) events.PDU {
		t.Helper()
		return br.build(t, p, prev)
	}
	cur, err := fs.Server.Rooms.CurrentState(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range cur {
		gs.keep(ev)
	}

	rename := func(name string) {
		t.Helper()
		d := build(events.Proto{Sender: bob, Type: "m.room.member", StateKey: &bob, Content: json.RawMessage(`{"membership":"join","displayname":"` + name + `"}`)}, []string{join.EventID()})
		if err := state.Add(d); err != nil {
			t.Fatal(err)
		}
	}
	rename("Bob 1")
	m := build(events.Proto{Sender: bob, Type: "m.room.message", Content: json.RawMessage(`{"msgtype":"m.text","body":"m1"}`)}, []string{join.EventID()})
	if r := rm.send(t, fs.FedURL, "m1", []json.RawMessage{m.JSON()}, nil); r.Status != 200 {
		t.Fatalf("send: %d %s", r.Status, r.Raw)
	}
	fs.work(t)
	if got := fs.pageBodies(t, room, 10); !slices.Equal(got, []string{"m1"}) {
		t.Fatalf("/messages after M: %v, want [m1]", got)
	}
	asked := false
	for _, a := range gs.Asked() {
		asked = asked || strings.HasPrefix(a, "GET /_matrix/federation/v1/event_auth/")
	}
	if !asked {
		t.Fatalf("the remote was asked %q, want /event_auth", gs.Asked())
	}

	r := fs.Do(t, "POST", "/_matrix/client/v3/rooms/"+room+"/ban", fs.Alice.AccessToken, map[string]any{"user_id": bob, "reason": "spam"})
	if r.Status != 200 {
		t.Fatalf("ban: %d %s", r.Status, r.Raw)
	}
	rename("Bob 2")
	m2 := build(events.Proto{Sender: bob, Type: "m.room.message", Content: json.RawMessage(`{"msgtype":"m.text","body":"m2"}`)}, []string{m.EventID()})
	if r := rm.send(t, fs.FedURL, "m2", []json.RawMessage{m2.JSON()}, nil); r.Status != 200 {
		t.Fatalf("send: %d %s", r.Status, r.Raw)
	}
	fs.work(t)
	out, err := fs.Server.Rooms.Receive(ctx, m2)
	if err != nil || out.Status != "soft_failed" {
		t.Fatalf("M2 on this server: %+v %v, want soft failed", out, err)
	}
	if got := fs.pageBodies(t, room, 10); !slices.Equal(got, []string{"m1"}) {
		t.Fatalf("/messages after the ban and M2: %v, want [m1]", got)
	}
	if got := membershipOf(t, fs, room, bob); got != "ban" {
		t.Fatalf("bob's membership: %q, want ban", got)
	}
}

func membershipOf(t *testing.T, fs *fedStack, room, user string) string {
	t.Helper()
	r := fs.Do(t, "GET", "/_matrix/client/v3/rooms/"+room+"/state/m.room.member/"+user, fs.Alice.AccessToken, nil)
	if r.Status != 200 {
		t.Fatalf("member state: %d %s", r.Status, r.Raw)
	}
	m, _ := r.Body["membership"].(string)
	return m
}

// TestEventAuth_AfterBan: once alice bans bob, bob's server has no user
// in the room: it may still have the auth chain of the ban (sent to it,
// and needed to check it), and of nothing else (403 M_FORBIDDEN).
func TestEventAuth_AfterBan(t *testing.T) {
	gs := newGapServer(t)
	rm := gs.rm
	fs := startFed(t, nil)
	room, version, state, ext, depth := fs.publicRoomTip(t)
	bob := "@bob:" + rm.Name
	signer := events.Signer{ServerName: rm.Name, Key: rm.Key}
	join, err := signer.Build(version, events.Proto{RoomID: room, Sender: bob, Type: "m.room.member", StateKey: &bob, Content: json.RawMessage(`{"membership":"join"}`)}, events.Graph{PrevEvents: ext, Depth: depth + 1}, state, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if r := rm.send(t, fs.FedURL, "join", []json.RawMessage{join.JSON()}, nil); r.Status != 200 {
		t.Fatalf("send: %d %s", r.Status, r.Raw)
	}
	fs.work(t)
	if status, _ := rm.get(t, fs.FedURL, "/_matrix/federation/v1/event_auth/"+url.PathEscape(room)+"/"+url.PathEscape(join.EventID())); status != 200 {
		t.Fatalf("event_auth of bob's join while joined: %d, want 200", status)
	}
	r := fs.Do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/ban", fs.Alice.AccessToken, map[string]any{"user_id": bob})
	if r.Status != 200 {
		t.Fatalf("ban: %d %s", r.Status, r.Raw)
	}
	ban, _ := r.Body["event_id"].(string)
	if ban == "" {
		ev, err := fs.Server.Rooms.StateEvent(context.Background(), room, "m.room.member", bob)
		if err != nil {
			t.Fatal(err)
		}
		ban = ev.EventID()
	}
	status, raw := rm.get(t, fs.FedURL, "/_matrix/federation/v1/event_auth/"+url.PathEscape(room)+"/"+url.PathEscape(ban))
	if status != 200 || !strings.Contains(raw, `"state_key":"`+bob+`"`) {
		t.Fatalf("event_auth of the ban: %d %s, want 200 with bob's join", status, raw)
	}
	status, raw = rm.get(t, fs.FedURL, "/_matrix/federation/v1/event_auth/"+url.PathEscape(room)+"/"+url.PathEscape(join.EventID()))
	if status != 403 || !strings.Contains(raw, "M_FORBIDDEN") {
		t.Fatalf("event_auth of bob's join after the ban: %d %s, want 403 M_FORBIDDEN", status, raw)
	}
}

// get is a GET of path signed as rm: the status and body.
func (rm *remote) get(t *testing.T, base, path string) (int, string) {
	t.Helper()
	fr := fclient.NewFederationRequest("GET", spec.ServerName(rm.Name), servertest.ServerName, path)
	if err := fr.Sign(spec.ServerName(rm.Name), gomatrixserverlib.KeyID(rm.Key.ID), rm.Key.Private); err != nil {
		t.Fatal(err)
	}
	hr, err := fr.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", base+path, nil)
	req.Header.Set("Authorization", hr.Header.Get("Authorization"))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(raw)
}
