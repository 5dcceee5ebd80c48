package federation_test

import (
	"context"
	"encoding/json"
	"slices"
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
