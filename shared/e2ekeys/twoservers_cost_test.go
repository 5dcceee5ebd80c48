package e2ekeys_test

import (
	"context"
	"encoding/json"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// TestTwoServers_Costs pins what docs/storage.md gives for keys and device
// lists across servers: alice on A and bob on B share one room.
func TestTwoServers_Costs(t *testing.T) {
	ctx := context.Background()
	ts := startTwoServers(t)
	alice, bob := ts.alice, ts.bob
	want := servertest.Want
	bob.upload(t, 5)
	alice.upload(t, 5)

	// A's /keys/query of bob: auth (and, for users with a master key, one
	// BatchGetItem of the signatures alice made on them); the keys come
	// from B, whose answer reads the requesting server's key, the user's
	// keys and devices.
	// The first request from A may find B without A's signing key (a
	// fetch and a write, the first time only): that one is not counted.
	for range 2 {
		if _, err := alice.c.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{id.UserID(bob.user.ID): {}}}); err != nil {
			t.Fatal(err)
		}
	}
	ts.a.CheckCost(t, "/keys/query of a remote user, asking", "/keys/query", want(1, 1, 0))
	ts.b.CheckCost(t, "/user/keys/query served, one user with one device", "/user/keys/query", want(3, 3, 0))
	if _, err := alice.c.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{
		id.UserID(bob.user.ID): {bob.id(): id.KeyAlgorithmSignedCurve25519}}}); err != nil {
		t.Fatal(err)
	}
	ts.a.CheckCost(t, "/keys/claim of a remote device, asking", "/keys/claim", want(1, 1, 0))
	ts.b.CheckCost(t, "/user/keys/claim served, one device", "/user/keys/claim", want(4, 2, 2))

	// A new device of bob's: auth, the device keys (GetItem, PutItem), the
	// one-time keys, the counts, the device-list entries of the syncs (as
	// for a user alone), then for A: the user's rooms and each room's
	// members (Servers), the stream counter (UpdateItem), the device's
	// keys and name (two Queries), A's outbox (counter and entry).
	phone := login(t, ts.b, bob.user, "PHONE", "")
	phone.upload(t, 5)
	ts.b.CheckCost(t, "/keys/upload of a new device in one shared room, sending the update", "/keys/upload", want(20, 9, 11))

	// A takes the update in: bob's partition (rooms, stream; one Query), the
	// stream ID (PutItem), then the syncs: the room's local members
	// (GetItem), one entry (BatchWriteItem). prev_id names no ID seen here
	// (stream 0 was never one): A asks B's /user/devices.
	content, _ := json.Marshal(map[string]any{"user_id": bob.user.ID, "device_id": "PHONE", "stream_id": 99,
		"prev_id": []int64{0}, "keys": map[string]any{}})
	mctx, meter := store.WithMeter(ctx)
	if err := ts.a.Server.E2EKeys.HandleDeviceListUpdate(mctx, ts.b.Name(), content); err != nil {
		t.Fatal(err)
	}
	servertest.CheckUsage(t, "inbound m.device_list_update, one local user told", meter.Usage(), want(4, 2, 2))

	// To-device from B to alice's device: the message ID (conditional
	// create), alice's devices (Query), the message, her sync's entry.
	// And the other way: auth, the transaction (create, then PutItem),
	// B's outbox (counter, entry).
	edu, _ := json.Marshal(map[string]any{"sender": bob.user.ID, "type": "m.test", "message_id": "cost1",
		"messages": map[string]any{alice.user.ID: map[string]any{alice.user.DeviceID: map[string]string{"body": "x"}}}})
	mctx, meter = store.WithMeter(ctx)
	if err := ts.a.Server.ToDevice.HandleDirectToDevice(mctx, ts.b.Name(), edu); err != nil {
		t.Fatal(err)
	}
	servertest.CheckUsage(t, "inbound m.direct_to_device, one device", meter.Usage(), want(4, 1, 3))
	_, err := alice.c.SendToDevice(ctx, event.Type{Type: "m.test", Class: event.ToDeviceEventType}, &mautrix.ReqSendToDevice{
		Messages: map[id.UserID]map[id.DeviceID]*event.Content{id.UserID(bob.user.ID): {bob.id(): {Raw: map[string]any{"body": "y"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	ts.a.CheckCost(t, "/sendToDevice to one remote device", "/sendToDevice/", want(5, 1, 4))
}
