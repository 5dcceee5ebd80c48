package sender_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/sender"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// TestSender_RoomEDUs: SendRoomEDU sends to the servers with a joined
// member in the room, SendRoomsEDU once to each server of several rooms;
// a room of this server's users alone sends nothing. Their cost is what
// docs/storage.md quotes.
func TestSender_RoomEDUs(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	newRoom := func() string {
		r := f.st.Do(t, "POST", "/_matrix/client/v3/createRoom", f.alice.AccessToken, map[string]any{"preset": "public_chat"})
		if r.Status != http.StatusOK {
			t.Fatalf("createRoom: %d %s", r.Status, r.Raw)
		}
		return r.Body["room_id"].(string)
	}
	shared, alone := newRoom(), newRoom()
	remoteJoin(t, f.st, shared, "@bob:"+remoteName)
	f.q.take()
	snd := f.st.Server.Sender

	if err := snd.SendRoomEDU(ctx, alone, "m.typing", json.RawMessage(`{}`)); err != nil {
		t.Fatal(err)
	}
	if got := f.q.take(); len(got) != 0 {
		t.Fatalf("a room of local users alone queued %v", got)
	}

	mctx, m := store.WithMeter(ctx)
	typing := json.RawMessage(`{"room_id":"` + f.roomID + `","user_id":"` + f.alice.ID + `","typing":true}`)
	if err := snd.SendRoomEDU(mctx, f.roomID, "m.typing", typing); err != nil {
		t.Fatal(err)
	}
	// The room's member events, its server ACL (none), the counter, the
	// entry.
	servertest.CheckUsage(t, "an EDU for a room with one other server", m.Usage(), servertest.Want(4, 2, 2))
	f.run(t)

	presence := json.RawMessage(`{"push":[{"user_id":"` + f.alice.ID + `","presence":"online","last_active_ago":0}]}`)
	if err := snd.SendRoomsEDU(ctx, []string{f.roomID, shared, alone}, "m.presence", presence); err != nil {
		t.Fatal(err)
	}
	got := f.q.take()
	if len(got) != 1 {
		t.Fatalf("three rooms, one other server: queued %v, want one job", got)
	}
	if err := f.q.Send(ctx, sender.Kind, []byte(got[0].Body)); err != nil { // back for run
		t.Fatal(err)
	}
	f.run(t)
	var edus []string
	for _, tx := range f.rm.received(t) {
		edus = append(edus, tx.EDUs...)
	}
	if got := strings.Join(edus, " "); got != "m.typing m.presence" {
		t.Errorf("the remote got EDUs %q, want m.typing then m.presence once", got)
	}
}
