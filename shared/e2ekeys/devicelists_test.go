package e2ekeys_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

func syncOf(t *testing.T, d *device, since string, timeout time.Duration) *mautrix.RespSync {
	t.Helper()
	resp, err := d.c.FullSyncRequest(context.Background(), mautrix.ReqSync{Since: since, Timeout: int(timeout.Milliseconds())})
	if err != nil {
		t.Fatalf("sync of %s: %v", d.user.ID, err)
	}
	return resp
}

func changed(resp *mautrix.RespSync) []string {
	var out []string
	for _, u := range resp.DeviceLists.Changed {
		out = append(out, string(u))
	}
	return out
}

func left(resp *mautrix.RespSync) []string {
	var out []string
	for _, u := range resp.DeviceLists.Left {
		out = append(out, string(u))
	}
	return out
}

// TestDeviceLists: the syncs of users who share a room hear of each
// other's key changes, joins and leaves in device_lists, woken at once;
// /keys/changes says the same between two tokens.
func TestDeviceLists(t *testing.T) {
	st := servertest.Start(t)
	ctx := context.Background()
	alice := newDevice(t, st, st.Register(t, "alice"))
	bob := newDevice(t, st, st.Register(t, "bob"))
	carol := newDevice(t, st, st.Register(t, "carol"))
	room, err := alice.c.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.c.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	base := syncOf(t, bob, "", 0)
	if len(base.DeviceLists.Changed) != 0 {
		t.Fatalf("initial sync has device_lists %v", base.DeviceLists)
	}

	// A waiting sync of bob's wakes when alice uploads her device keys.
	began := time.Now()
	got := make(chan *mautrix.RespSync, 1)
	go func() { got <- syncOf(t, bob, base.NextBatch, 10*time.Second) }()
	time.Sleep(100 * time.Millisecond)
	alice.upload(t, 5)
	woken := <-got
	if took := time.Since(began); took > 3*time.Second {
		t.Fatalf("bob's sync answered %v after alice's upload", took)
	}
	if !slices.Equal(changed(woken), []string{alice.user.ID}) {
		t.Fatalf("bob's device_lists after alice's upload: %+v", woken.DeviceLists)
	}
	// carol shares no room with alice: she hears nothing.
	carolBase := syncOf(t, carol, "", 0)
	alice.upload(t, 5) // more one-time keys: no device list change
	if again := syncOf(t, bob, woken.NextBatch, 500*time.Millisecond); len(again.DeviceLists.Changed) != 0 {
		t.Fatalf("one-time keys alone changed bob's device_lists: %v", again.DeviceLists)
	}

	// carol joins: bob and alice must fetch her devices, and she theirs.
	if _, err := carol.c.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	joined := syncOf(t, bob, woken.NextBatch, 0)
	if !slices.Contains(changed(joined), carol.user.ID) {
		t.Fatalf("bob's device_lists after carol joined: %+v", joined.DeviceLists)
	}
	carolJoined := syncOf(t, carol, carolBase.NextBatch, 0)
	if c := changed(carolJoined); !slices.Contains(c, alice.user.ID) || !slices.Contains(c, bob.user.ID) {
		t.Fatalf("carol's device_lists after she joined: %+v", carolJoined.DeviceLists)
	}

	// carol leaves the only room she shares with bob: she is left.
	if _, err := carol.c.LeaveRoom(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	gone := syncOf(t, bob, joined.NextBatch, 0)
	if !slices.Equal(left(gone), []string{carol.user.ID}) || slices.Contains(changed(gone), carol.user.ID) {
		t.Fatalf("bob's device_lists after carol left: %+v", gone.DeviceLists)
	}
	// carol's own sync: alice and bob are gone from her view.
	carolGone := syncOf(t, carol, carolJoined.NextBatch, 0)
	if l := left(carolGone); !slices.Contains(l, alice.user.ID) || !slices.Contains(l, bob.user.ID) {
		t.Fatalf("carol's device_lists after she left: %+v", carolGone.DeviceLists)
	}

	// A user who leaves one room but shares another is not left.
	other, err := alice.c.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.c.JoinRoomByID(ctx, other.RoomID); err != nil {
		t.Fatal(err)
	}
	before := syncOf(t, alice, "", 0)
	if _, err := bob.c.LeaveRoom(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	after := syncOf(t, alice, before.NextBatch, 0)
	if slices.Contains(left(after), bob.user.ID) {
		t.Fatalf("alice's device_lists say bob left, though he is in another room with her: %+v", after.DeviceLists)
	}

	// /keys/changes between bob's first token and his token after carol
	// left: alice changed, carol left.
	var changes struct {
		Changed []string `json:"changed"`
		Left    []string `json:"left"`
	}
	u := bob.c.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "keys", "changes"}, map[string]string{"from": base.NextBatch, "to": gone.NextBatch})
	if _, err := bob.c.MakeRequest(ctx, "GET", u, nil, &changes); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(changes.Changed, alice.user.ID) || !slices.Equal(changes.Left, []string{carol.user.ID}) {
		t.Fatalf("/keys/changes: %+v", changes)
	}
	bad := bob.c.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "keys", "changes"}, map[string]string{"from": "nonsense", "to": gone.NextBatch})
	_, err = bob.c.MakeRequest(ctx, "GET", bad, nil, nil)
	wantErr(t, "/keys/changes from a bad token", err, 400, "M_INVALID_PARAM")
	_, err = bob.c.MakeRequest(ctx, "GET", bob.c.BuildClientURL("v3", "keys", "changes"), nil, nil)
	wantErr(t, "/keys/changes without tokens", err, 400, "M_MISSING_PARAM")
}

// TestKeyCountsInSync: an initial sync carries the device's key counts;
// a claim of one of its keys wakes its sync with the new counts; other
// devices of the user are not told.
func TestKeyCountsInSync(t *testing.T) {
	st := servertest.Start(t)
	ctx := context.Background()
	alice := newDevice(t, st, st.Register(t, "alice"))
	bob := newDevice(t, st, st.Register(t, "bob"))
	alice.upload(t, 3)
	other := login(t, st, alice.user, "OTHER", "")

	first := syncOf(t, alice, "", 0)
	if n := first.DeviceOTKCount.SignedCurve25519; n != 3 {
		t.Fatalf("initial sync: %d signed_curve25519 keys, want 3 (%+v)", n, first.DeviceOTKCount)
	}
	otherFirst := syncOf(t, other, "", 0)

	got := make(chan *mautrix.RespSync, 1)
	go func() { got <- syncOf(t, alice, first.NextBatch, 10*time.Second) }()
	time.Sleep(100 * time.Millisecond)
	if _, err := bob.c.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{
		id.UserID(alice.user.ID): {alice.id(): id.KeyAlgorithmSignedCurve25519}}}); err != nil {
		t.Fatal(err)
	}
	claimed := <-got
	if n := claimed.DeviceOTKCount.SignedCurve25519; n != 2 {
		t.Fatalf("sync after a claim: %d signed_curve25519 keys, want 2 (%+v)", n, claimed.DeviceOTKCount)
	}
	if quiet := syncOf(t, other, otherFirst.NextBatch, 500*time.Millisecond); quiet.DeviceOTKCount.SignedCurve25519 != 0 || len(quiet.Rooms.Join) != 0 {
		t.Fatalf("the claim reached alice's other device: %+v", quiet.DeviceOTKCount)
	}
}
