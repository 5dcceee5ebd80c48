package federation_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// TestWorker_RejectsForgedAuthEvent: bob's server forges a power levels
// event (P) by bob, who has no power to send it, giving bob 100, signed
// correctly, and sends a message (M) whose auth events name it. P reaches
// this server only through /event_auth of M, as an outlier: it must pass
// the auth rules against its own auth events like any received event, so
// it is stored rejected, and M, resting on a rejected auth event, is
// rejected too and never shown in alice's /messages.
func TestWorker_RejectsForgedAuthEvent(t *testing.T) {
	gs := newGapServer(t)
	fs := startFed(t, nil)
	ctx := context.Background()
	br := newBobRoom(t, gs, fs, gs.keep)
	room, bob := br.room, br.bob
	cur, err := fs.Server.Rooms.CurrentState(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range cur {
		gs.keep(ev)
	}
	empty := ""
	forged := br.build(t, events.Proto{Sender: bob, Type: events.PowerLevels, StateKey: &empty,
		Content: json.RawMessage(`{"users":{"` + bob + `":100,"` + fs.Alice.ID + `":100}}`)}, []string{br.join.EventID()})
	if err := br.state.Add(forged); err != nil {
		t.Fatal(err)
	}
	m := br.build(t, events.Proto{Sender: bob, Type: "m.room.message", Content: json.RawMessage(`{"msgtype":"m.text","body":"forged"}`)}, []string{br.join.EventID()})
	if !slices.Contains(m.AuthEventIDs(), forged.EventID()) {
		t.Fatalf("M's auth events %v do not name the forged event %s", m.AuthEventIDs(), forged.EventID())
	}
	if r := gs.rm.send(t, fs.FedURL, "m", []json.RawMessage{m.JSON()}, nil); r.Status != 200 {
		t.Fatalf("send: %d %s", r.Status, r.Raw)
	}
	fs.work(t)
	if got := fs.pageBodies(t, room, 10); len(got) != 0 {
		t.Fatalf("/messages after M: %v, want none", got)
	}
	for id, want := range map[string]string{forged.EventID(): "rejected", m.EventID(): "rejected"} {
		var p struct {
			Status string `dynamodbav:"st"`
			Reason string `dynamodbav:"why"`
		}
		if err := fs.Server.Store.Get(ctx, store.Key{PK: "event|" + id, SK: "event"}, &p); err != nil {
			t.Fatalf("pointer of %s: %v", id, err)
		}
		if p.Status != want {
			t.Errorf("%s stored as %q (%s), want %s", id, p.Status, p.Reason, want)
		}
	}
}

// TestGap_ForgedStateRejected: the state bob's server gives for a gap
// (/state_ids) holds a forged power levels event (P, by bob, who has no
// power to send it). P is stored rejected and is not taken as state, and
// the event above the gap (M), whose auth events name P, is rejected: it
// is never shown in alice's /messages.
func TestGap_ForgedStateRejected(t *testing.T) {
	gs := newGapServer(t)
	fs := startFed(t, nil)
	ctx := context.Background()
	br := newBobRoom(t, gs, fs, gs.keep)
	room, bob := br.room, br.bob
	cur, err := fs.Server.Rooms.CurrentState(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	empty := ""
	forged := br.build(t, events.Proto{Sender: bob, Type: events.PowerLevels, StateKey: &empty,
		Content: json.RawMessage(`{"users":{"` + bob + `":100}}`)}, []string{br.join.EventID()})
	if err := br.state.Add(forged); err != nil {
		t.Fatal(err)
	}
	m := br.build(t, events.Proto{Sender: bob, Type: "m.room.message", Content: json.RawMessage(`{"msgtype":"m.text","body":"gapped"}`)}, []string{forged.EventID()})
	gs.mu.Lock()
	for _, ev := range cur {
		gs.byID[ev.EventID()] = ev
		if ev.Type() != events.PowerLevels {
			gs.state = append(gs.state, ev)
		}
	}
	gs.state = append(gs.state, forged)
	gs.mu.Unlock()
	if r := gs.rm.send(t, fs.FedURL, "m", []json.RawMessage{m.JSON()}, nil); r.Status != 200 {
		t.Fatalf("send: %d %s", r.Status, r.Raw)
	}
	fs.work(t)
	asked := false
	for _, a := range gs.Asked() {
		asked = asked || strings.HasPrefix(a, "GET /_matrix/federation/v1/state_ids/")
	}
	if !asked {
		t.Fatalf("the remote was asked %q, want /state_ids", gs.Asked())
	}
	if got := fs.pageBodies(t, room, 10); len(got) != 0 {
		t.Fatalf("/messages after M: %v, want none", got)
	}
	for _, id := range []string{forged.EventID(), m.EventID()} {
		var p struct {
			Status string `dynamodbav:"st"`
			Reason string `dynamodbav:"why"`
		}
		if err := fs.Server.Store.Get(ctx, store.Key{PK: "event|" + id, SK: "event"}, &p); err != nil {
			t.Fatalf("pointer of %s: %v", id, err)
		}
		if p.Status != "rejected" {
			t.Errorf("%s stored as %q (%s), want rejected", id, p.Status, p.Reason)
		}
	}
	r := fs.Do(t, "GET", "/_matrix/client/v3/rooms/"+room+"/state/m.room.power_levels/", fs.Alice.AccessToken, nil)
	if r.Status != 200 || strings.Contains(string(r.Raw), bob) {
		t.Fatalf("power levels after M: %d %s, want alice's, without bob", r.Status, r.Raw)
	}
}
