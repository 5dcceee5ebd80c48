package e2ekeys_test

import (
	"context"
	"fmt"
	"net/url"
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
	// Woken, not timed out: any loaded machine answers well before 10 s.
	if took := time.Since(began); took >= 9*time.Second {
		t.Fatalf("bob's sync answered %v after alice's upload: at its timeout, not woken", took)
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

// TestKeyCountsInEverySync: every sync response carries the device's key
// counts, the spec taking missing counts for zero (and matrix-js-sdk
// uploading more keys at each such sync): initial, incremental with and
// without news, and a long-poll that times out. An upload and a claim each
// change them in the device's next sync; the counts a token carries are
// its device's alone.
func TestKeyCountsInEverySync(t *testing.T) {
	st := servertest.Start(t)
	ctx := context.Background()
	alice := newDevice(t, st, st.Register(t, "alice"))
	bob := newDevice(t, st, st.Register(t, "bob"))
	alice.upload(t, 3)
	room, err := alice.c.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}

	// rawSync is a sync as it comes on the wire: absent fields stay absent.
	rawSync := func(d *device, since string, timeout time.Duration) (string, map[string]any, []any) {
		t.Helper()
		path := fmt.Sprintf("/_matrix/client/v3/sync?timeout=%d", timeout.Milliseconds())
		if since != "" {
			path += "&since=" + url.QueryEscape(since)
		}
		r := st.Do(t, "GET", path, d.user.AccessToken, nil)
		if r.Status != 200 {
			t.Fatalf("sync since %q: %d %s", since, r.Status, r.Raw)
		}
		otk, ok1 := r.Body["device_one_time_keys_count"].(map[string]any)
		fallback, ok2 := r.Body["device_unused_fallback_key_types"].([]any)
		if !ok1 || !ok2 {
			t.Fatalf("sync since %q lacks the key counts: %s", since, r.Raw)
		}
		return r.Body["next_batch"].(string), otk, fallback
	}
	want := func(what string, otk map[string]any, fallback []any, n int, fallbacks ...any) {
		t.Helper()
		if otk["signed_curve25519"] != float64(n) || !slices.Equal(fallback, fallbacks) {
			t.Fatalf("%s: one-time keys %v, unused fallback types %v; want %d signed_curve25519 and %v", what, otk, fallback, n, fallbacks)
		}
	}

	next, otk, fallback := rawSync(alice, "", 0)
	want("initial sync", otk, fallback, 3)
	next, otk, fallback = rawSync(alice, next, 0)
	want("incremental sync without news", otk, fallback, 3)
	next, otk, fallback = rawSync(alice, next, 300*time.Millisecond)
	want("long-poll that timed out", otk, fallback, 3)
	if _, err := bob.c.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	next, otk, fallback = rawSync(alice, next, 0)
	want("incremental sync with a join", otk, fallback, 3)

	// alice's upload wakes her waiting sync with the new counts.
	type syncResult struct {
		next     string
		otk      map[string]any
		fallback []any
	}
	got := make(chan syncResult, 1)
	go func() {
		n, o, f := rawSync(alice, next, 10*time.Second)
		got <- syncResult{n, o, f}
	}()
	time.Sleep(100 * time.Millisecond)
	if r := st.Do(t, "POST", keysPath+"upload", alice.user.AccessToken, map[string]any{
		"one_time_keys": alice.oneTimeKeys(t, 2), "fallback_keys": alice.fallbackKey(t)}); r.Status != 200 {
		t.Fatalf("upload: %d %s", r.Status, r.Raw)
	}
	woken := <-got
	want("sync after an upload", woken.otk, woken.fallback, 5, "signed_curve25519")

	if _, err := bob.c.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{
		id.UserID(alice.user.ID): {alice.id(): id.KeyAlgorithmSignedCurve25519}}}); err != nil {
		t.Fatal(err)
	}
	next, otk, fallback = rawSync(alice, woken.next, 0)
	want("sync after a claim", otk, fallback, 4, "signed_curve25519")
	_, otk, fallback = rawSync(alice, next, 300*time.Millisecond)
	want("long-poll after the claim that timed out", otk, fallback, 4, "signed_curve25519")

	// bob has no keys. alice's token is read as a point in time for him, as
	// Synapse reads it, and never hands him alice's counts.
	_, otk, fallback = rawSync(bob, "", 0)
	want("bob's initial sync", otk, fallback, 0)
	_, otk, fallback = rawSync(bob, next, 0)
	want("bob syncing with alice's token", otk, fallback, 0)
}
