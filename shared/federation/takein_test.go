package federation_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// joinedCount is the number of joined members alice's server lists.
func joinedCount(t *testing.T, c *mautrix.Client, room id.RoomID) int {
	t.Helper()
	joined, err := c.JoinedMembers(background, room)
	if err != nil {
		t.Fatal(err)
	}
	return len(joined.Joined)
}

// TestJoin_Concurrent: two local users join a room only a fake peer holds
// at the same time: one join takes the room in, the other waits for its
// head and joins the room as it then stands; both are members, once.
func TestJoin_Concurrent(t *testing.T) {
	const members = 300
	p := newPeer(t, "peer.test", "12", members)
	st := servertest.Start(t, p.env()...)
	alice, bob := st.Member(t, "alice"), st.Member(t, "bob")
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, m := range []servertest.Member{alice, bob} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = m.JoinRoom(background, p.roomID, &mautrix.ReqJoinRoom{Via: []string{p.name}})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("join %d: %v", i, err)
		}
	}
	room := id.RoomID(p.roomID)
	for _, m := range []servertest.Member{alice, bob} {
		if n := joinedCount(t, m.Client, room); n != members+2 {
			t.Errorf("%s sees %d joined members, want %d", m.UserID, n, members+2)
		}
	}
	if _, err := bob.SendText(background, room, "both in"); err != nil {
		t.Fatal(err)
	}
	if got := messageIDs(t, alice.Client, room); len(got) < 3 {
		t.Errorf("alice's /messages: %v, want both joins and bob's message", got)
	}
}

// claim is a take-in's claim as the room engine writes it.
type claim struct {
	PK string `dynamodbav:"pk"`
	SK string `dynamodbav:"sk"`
	At int64  `dynamodbav:"at"`
}

// TestJoin_StaleTakeIn: a take-in cut short three minutes ago (a Lambda
// timeout midway) left its claim and a slot, and no room info nor head,
// which come last; the next join takes the claim over, clears the slot,
// and takes the room in: alice's message follows her join.
func TestJoin_StaleTakeIn(t *testing.T) {
	const members = 20
	p := newPeer(t, "peer.test", "12", members)
	st := servertest.Start(t, p.env()...)
	alice := st.Member(t, "alice")
	old := claim{PK: "room|" + p.roomID, SK: "takein", At: time.Now().Add(-3 * time.Minute).UnixMilli()}
	// And a slot it wrote, above where this join's head goes (the state
	// it was answered was larger).
	slot := struct {
		PK      string `dynamodbav:"pk"`
		SK      string `dynamodbav:"sk"`
		EventID string `dynamodbav:"id"`
		PDU     string `dynamodbav:"pdu"`
		Version string `dynamodbav:"v"`
	}{"room|" + p.roomID, fmt.Sprintf("ev|%012d", 100_000_009_999), "$cut", "{}", "12"}
	for _, item := range []any{old, slot} {
		if err := st.Server.Store.Put(context.Background(), item); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := alice.JoinRoom(background, p.roomID, &mautrix.ReqJoinRoom{Via: []string{p.name}}); err != nil {
		t.Fatalf("join after a take-in cut short: %v", err)
	}
	room := id.RoomID(p.roomID)
	if n := joinedCount(t, alice.Client, room); n != members+1 {
		t.Errorf("alice sees %d joined members, want %d", n, members+1)
	}
	sent, err := alice.SendText(background, room, "after the cut")
	if err != nil {
		t.Fatal(err)
	}
	if got := messageIDs(t, alice.Client, room); len(got) < 2 || got[len(got)-1] != string(sent.EventID) {
		t.Errorf("alice's /messages ends %v, want her message last", got)
	}
}
