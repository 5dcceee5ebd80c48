package rooms_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/keys"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestCompletePartialState_CutShort: a room of remote.test's with 20
// members is taken in with partial state (its members left out). A load
// of its state dies after writing the current state (the halt), before
// the room info's count and the mark: the room stays partial. The load
// done again finds what the first wrote, and ends with every member in
// the current state and counted once; a third load does nothing.
func TestCompletePartialState_CutShort(t *testing.T) {
	st := servertest.Start(t)
	rms := st.Server.Rooms
	k, err := keys.FromSeed("remote.test signing key")
	if err != nil {
		t.Fatal(err)
	}
	signer := events.Signer{ServerName: "remote.test", Key: k}
	clock := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var full []events.PDU
	var last events.PDU
	roomID := ""
	add := func(s events.Signer, sender, typ, key, content string) events.PDU {
		t.Helper()
		state, err := events.NewState(full)
		if err != nil {
			t.Fatal(err)
		}
		g := events.Graph{Depth: int64(len(full) + 1)}
		if last != nil {
			g.PrevEvents = []string{last.EventID()}
		}
		clock = clock.Add(time.Second)
		ev, err := s.Build("12", events.Proto{RoomID: roomID, Sender: sender, Type: typ, StateKey: &key, Content: json.RawMessage(content)}, g, state, clock)
		if err != nil {
			t.Fatal(err)
		}
		if roomID == "" {
			roomID = events.RoomID(ev)
		}
		last = ev
		return ev
	}
	creator := "@creator:remote.test"
	for _, e := range [][3]string{
		{events.Create, "", `{"room_version":"12"}`},
		{events.Member, creator, `{"membership":"join"}`},
		{events.PowerLevels, "", `{}`},
		{events.JoinRules, "", `{"join_rule":"public"}`},
		{events.Name, "", `{"name":"partial"}`},
	} {
		sender := creator
		full = append(full, add(signer, sender, e[0], e[1], e[2]))
	}
	partial := append([]events.PDU(nil), full...)
	const members = 20
	for i := range members {
		u := fmt.Sprintf("@u%d:remote.test", i)
		full = append(full, add(signer, u, events.Member, u, `{"membership":"join"}`))
	}
	alice := "@alice:" + rms.Signer.ServerName
	join := add(rms.Signer, alice, events.Member, alice, `{"membership":"join"}`)
	if err := rms.TakeJoined(bg, join, partial, []string{"remote.test"}); err != nil {
		t.Fatal(err)
	}
	info, err := rms.Info(bg, roomID)
	if err != nil || info.Joined != 2 {
		t.Fatalf("joined after the partial join: %d %v, want 2", info.Joined, err)
	}

	rooms.SetHalt(rms, func(point string) bool { return point == "partial-count" })
	if _, err := rms.CompletePartialState(bg, roomID, join.EventID(), full); err == nil {
		t.Fatal("the halted load did not fail")
	}
	rooms.SetHalt(rms, nil)
	if p, err := rms.PartialServers(bg, roomID); err != nil || p == nil {
		t.Fatalf("partial servers after the load cut short: %v %v, want remote.test", p, err)
	}
	added, err := rms.CompletePartialState(bg, roomID, join.EventID(), full)
	if err != nil {
		t.Fatal(err)
	}
	if len(added) != members {
		t.Fatalf("the second load added %d, want %d", len(added), members)
	}
	got, err := rms.Members(bg, roomID)
	if err != nil || len(got) != members+2 {
		t.Fatalf("%d member events %v, want %d", len(got), err, members+2)
	}
	if info, err = rms.Info(bg, roomID); err != nil || info.Joined != members+2 {
		t.Fatalf("joined: %d %v, want %d", info.Joined, err, members+2)
	}
	if p, err := rms.PartialServers(bg, roomID); err != nil || p != nil {
		t.Fatalf("partial servers after the load: %v %v, want none", p, err)
	}
	if added, err = rms.CompletePartialState(bg, roomID, join.EventID(), full); err != nil || added != nil {
		t.Fatalf("a third load: %v %v, want nothing", added, err)
	}
	if info, err = rms.Info(bg, roomID); err != nil || info.Joined != members+2 {
		t.Fatalf("joined after a third load: %d %v, want %d", info.Joined, err, members+2)
	}
}
