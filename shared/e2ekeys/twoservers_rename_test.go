package e2ekeys_test

import (
	"context"
	"encoding/json"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestTwoServers_DeviceRename: bob@B renames his device. B sends an
// m.device_list_update, so alice@A's sync lists bob in
// device_lists.changed and her client reads his keys again; A's
// /keys/query shows his device without its name, which B keeps from other
// servers as Synapse does by default, while B's own shows the new name.
// carol, on B in the same room, hears of it too.
func TestTwoServers_DeviceRename(t *testing.T) {
	ctx := context.Background()
	ts := startTwoServers(t)
	alice, bob := ts.alice, ts.bob
	carol := newDevice(t, ts.b, ts.b.Register(t, "carol"))
	if _, err := carol.c.JoinRoom(ctx, string(ts.room), &mautrix.ReqJoinRoom{Via: []string{ts.a.Name()}}); err != nil {
		t.Fatal(err)
	}
	aliceSync := newSyncer(t, ts.a, alice.user)
	carolSync := newSyncer(t, ts.b, carol.user)
	bob.upload(t, 1)
	changed := func(s *syncer, who string) {
		t.Helper()
		eventually(t, "bob in "+who+"'s device_lists.changed", func() (string, bool) {
			body := s.next(t)
			dl, _ := json.Marshal(body["device_lists"])
			return string(dl), deviceListChanged(body, bob.user.ID)
		})
	}
	changed(aliceSync, "alice")
	changed(carolSync, "carol")

	if err := bob.c.SetDeviceInfo(ctx, bob.id(), &mautrix.ReqDeviceInfo{DisplayName: "bob's new laptop"}); err != nil {
		t.Fatal(err)
	}
	ts.b.CheckCost(t, "rename of a device with keys, one other server", "/devices/", servertest.Want(14, 9, 6))
	changed(aliceSync, "alice")
	changed(carolSync, "carol")

	query := func(c *mautrix.Client) map[string]any {
		t.Helper()
		q, err := c.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{id.UserID(bob.user.ID): {}}})
		if err != nil {
			t.Fatal(err)
		}
		keys, ok := q.DeviceKeys[id.UserID(bob.user.ID)][bob.id()]
		if !ok {
			t.Fatalf("bob's device missing from /keys/query: %v", q.DeviceKeys)
		}
		return keys.Unsigned
	}
	if u := query(alice.c); u["device_display_name"] != nil {
		t.Errorf("bob's device seen from A: unsigned %v, want no display name", u)
	}
	if u := query(carol.c); u["device_display_name"] != "bob's new laptop" {
		t.Errorf("bob's device seen from B: unsigned %v, want the new display name", u)
	}

	// A name that does not change tells nobody.
	if err := bob.c.SetDeviceInfo(ctx, bob.id(), &mautrix.ReqDeviceInfo{DisplayName: "bob's new laptop"}); err != nil {
		t.Fatal(err)
	}
	if body := carolSync.next(t); deviceListChanged(body, bob.user.ID) {
		t.Errorf("an unchanged name told carol: %v", body["device_lists"])
	}
}
