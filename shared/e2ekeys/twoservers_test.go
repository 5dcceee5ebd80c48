package e2ekeys_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/signatures"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// twoServers is alice on A and bob on B, both in a room of A's that bob
// joined through A, each server with its sender and inbox worker.
type twoServers struct {
	a, b       *servertest.Stack
	alice, bob *device
	room       id.RoomID
}

func startTwoServers(t *testing.T) *twoServers {
	t.Helper()
	a, _ := servertest.StartNamed(t)
	a.RunQueue(t)
	b, _ := servertest.StartNamed(t)
	b.RunQueue(t)
	ts := &twoServers{a: a, b: b}
	ts.alice = newDevice(t, a, a.Register(t, "alice"))
	ts.bob = newDevice(t, b, b.Register(t, "bob"))
	created, err := ts.alice.c.CreateRoom(context.Background(), &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	ts.room = created.RoomID
	if _, err := ts.bob.c.JoinRoom(context.Background(), string(ts.room), &mautrix.ReqJoinRoom{Via: []string{a.Name()}}); err != nil {
		t.Fatalf("bob joins through %s: %v", a.Name(), err)
	}
	return ts
}

// eventually polls check until it reports done; the minute only keeps a
// broken test from hanging.
func eventually(t *testing.T, what string, check func() (string, bool)) {
	t.Helper()
	var got string
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var ok bool
		if got, ok = check(); ok {
			return
		}
	}
	t.Fatalf("%s: never came; last saw %s", what, got)
}

// hangingServer is a server name whose listener accepts connections and
// never answers.
func hangingServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(conns)
				return
			}
			conns <- c
		}
	}()
	t.Cleanup(func() {
		l.Close()
		for c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

// TestTwoServers_KeysQueryAndClaim: alice@A asks for bob@B's keys through
// her own server, which asks B: /keys/query returns bob's device keys as
// bob signed them and his master and self-signing keys (his user-signing
// key stays his); /keys/claim hands out one of his one-time keys, which B
// then no longer holds. alice's signature of bob's master key by her
// user-signing key is checked against B's copy, kept on A and shown to her
// alone. A server that never answers and one that refuses
// connections go to failures, with bob's keys still there.
func TestTwoServers_KeysQueryAndClaim(t *testing.T) {
	ctx := context.Background()
	ts := startTwoServers(t)
	bob := ts.bob
	if n := bob.upload(t, 3); n != 3 {
		t.Fatalf("bob's count after his upload: %d", n)
	}
	cs := newCrossSigning(bob.user.ID)
	if err := bob.c.UploadCrossSigningKeys(ctx, cs.upload(t), passwordAuth(bob.user.ID)); err != nil {
		t.Fatalf("bob's cross-signing keys: %v", err)
	}
	want := bob.deviceKeys(t)

	q, err := ts.alice.c.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{id.UserID(bob.user.ID): {}}})
	if err != nil {
		t.Fatalf("alice's /keys/query of bob: %v", err)
	}
	if len(q.Failures) != 0 {
		t.Fatalf("failures: %v", q.Failures)
	}
	got, ok := q.DeviceKeys[id.UserID(bob.user.ID)][bob.id()]
	if !ok {
		t.Fatalf("bob's device keys: %+v", q.DeviceKeys)
	}
	if got.Keys[id.NewDeviceKeyID(id.KeyAlgorithmCurve25519, bob.id())] != want.Keys[id.NewDeviceKeyID(id.KeyAlgorithmCurve25519, bob.id())] ||
		got.Signatures[id.UserID(bob.user.ID)][id.NewKeyID(id.KeyAlgorithmEd25519, string(bob.id()))] == "" {
		t.Fatalf("bob's keys on A: %+v, want %+v", got, want)
	}
	if m := q.MasterKeys[id.UserID(bob.user.ID)]; m.Keys[keyID(cs.master)] != id.Ed25519(pub(cs.master)) {
		t.Fatalf("bob's master key on A: %+v", m)
	}
	if ssk := q.SelfSigningKeys[id.UserID(bob.user.ID)]; ssk.Keys[keyID(cs.self)] != id.Ed25519(pub(cs.self)) {
		t.Fatalf("bob's self-signing key on A: %+v", ssk)
	}
	if _, ok := q.UserSigningKeys[id.UserID(bob.user.ID)]; ok {
		t.Fatal("alice sees bob's user-signing key")
	}

	// alice signs bob's master key with her user-signing key: A checks it
	// against the key B holds and keeps it; her /keys/query shows it on
	// bob's master key, B's /user/keys/query (what other servers see) not.
	acs := newCrossSigning(ts.alice.user.ID)
	if err := ts.alice.c.UploadCrossSigningKeys(ctx, acs.upload(t), passwordAuth(ts.alice.user.ID)); err != nil {
		t.Fatal(err)
	}
	b := id.UserID(bob.user.ID)
	alicesView := mautrix.ReqKeysSignatures{UserID: b, Usage: []id.CrossSigningUsage{id.XSUsageMaster},
		Keys: map[id.KeyID]string{keyID(cs.master): pub(cs.master)}}
	alicesView.Signatures = signatures.Signatures{id.UserID(ts.alice.user.ID): {keyID(acs.userSigning): signWith(t, acs.userSigning, alicesView)}}
	aliceSync := newSyncer(t, ts.a, ts.alice.user)
	forged := alicesView
	forged.Signatures = signatures.Signatures{id.UserID(ts.alice.user.ID): {keyID(acs.userSigning): signWith(t, acs.self, alicesView)}}
	sresp, err := ts.alice.c.UploadSignatures(ctx, &mautrix.ReqUploadSignatures{b: {pub(cs.master): forged}})
	if err != nil {
		t.Fatal(err)
	}
	wantFailure(t, sresp, b, pub(cs.master), "M_INVALID_SIGNATURE")
	sresp, err = ts.alice.c.UploadSignatures(ctx, &mautrix.ReqUploadSignatures{b: {pub(cs.master): alicesView}})
	if err != nil || len(sresp.Failures) != 0 {
		t.Fatalf("alice's signature of bob's master key: %+v, %v", sresp, err)
	}
	// Her other devices must fetch bob's keys again.
	if body := aliceSync.next(t); !deviceListChanged(body, bob.user.ID) {
		t.Fatalf("alice's sync after her signature of bob: %v", body["device_lists"])
	}
	q, err = ts.alice.c.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{b: {}}})
	if err != nil {
		t.Fatal(err)
	}
	if m := q.MasterKeys[b]; m.Signatures[id.UserID(ts.alice.user.ID)][keyID(acs.userSigning)] == "" {
		t.Fatalf("alice's signature missing from bob's master key in her query: %+v", m)
	} else if ok, err := signatures.VerifySignatureJSON(m, id.UserID(ts.alice.user.ID), pub(acs.userSigning), id.Ed25519(pub(acs.userSigning))); !ok || err != nil {
		t.Fatalf("alice's signature on bob's master key does not verify: %v", err)
	}
	sq, err := ts.b.Server.E2EKeys.QueryForServer(ctx, map[string][]string{bob.user.ID: {}})
	if err != nil || sq.MasterKeys[bob.user.ID] == nil || strings.Contains(string(sq.MasterKeys[bob.user.ID]), ts.alice.user.ID) {
		t.Fatalf("B's answer to other servers holds alice's signature: %s %v", sq.MasterKeys[bob.user.ID], err)
	}

	claim, err := ts.alice.c.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{
		id.UserID(bob.user.ID): {bob.id(): id.KeyAlgorithmSignedCurve25519}}})
	if err != nil {
		t.Fatalf("alice's /keys/claim of bob: %v", err)
	}
	keys := claim.OneTimeKeys[id.UserID(bob.user.ID)][bob.id()]
	if len(keys) != 1 || len(claim.Failures) != 0 {
		t.Fatalf("claimed: %+v, failures %v", claim.OneTimeKeys, claim.Failures)
	}
	for _, k := range keys {
		if k.Signatures[id.UserID(bob.user.ID)][id.NewKeyID(id.KeyAlgorithmEd25519, string(bob.id()))] == "" {
			t.Fatalf("the claimed key is not signed by bob's device: %+v", k)
		}
	}
	counts, err := ts.b.Server.E2EKeys.Counts(ctx, bob.user.ID, bob.user.DeviceID)
	if err != nil || counts.OneTimeKeys["signed_curve25519"] != 2 {
		t.Fatalf("bob's keys left on B: %v %v, want 2", counts.OneTimeKeys, err)
	}

	// Servers that do not answer: one that hangs (the request's timeout
	// ends the wait) and one that refuses connections.
	hanging := hangingServer(t)
	closed := "127.0.0.1:1"
	r := ts.a.Do(t, "POST", "/_matrix/client/v3/keys/query", ts.alice.user.AccessToken, map[string]any{
		"timeout":     500,
		"device_keys": map[string]any{bob.user.ID: []string{}, "@x:" + hanging: []string{}, "@y:" + closed: []string{}},
	})
	if r.Status != http.StatusOK {
		t.Fatalf("/keys/query with unreachable servers: %d %s", r.Status, r.Raw)
	}
	failures, _ := r.Body["failures"].(map[string]any)
	if _, ok := failures[hanging]; !ok || len(failures) != 2 {
		t.Fatalf("failures: %v, want %s and %s", failures, hanging, closed)
	}
	if _, ok := failures[closed]; !ok {
		t.Fatalf("failures: %v, want %s", failures, closed)
	}
	dk, _ := r.Body["device_keys"].(map[string]any)
	if _, ok := dk[bob.user.ID].(map[string]any)[bob.user.DeviceID]; !ok {
		t.Fatalf("bob's keys missing beside the failures: %s", r.Raw)
	}
	r = ts.a.Do(t, "POST", "/_matrix/client/v3/keys/claim", ts.alice.user.AccessToken, map[string]any{
		"timeout":       500,
		"one_time_keys": map[string]any{"@x:" + hanging: map[string]string{"DEV": "signed_curve25519"}},
	})
	failures, _ = r.Body["failures"].(map[string]any)
	if _, ok := failures[hanging]; r.Status != http.StatusOK || !ok {
		t.Fatalf("/keys/claim of a hanging server: %d %s", r.Status, r.Raw)
	}
}

// syncer follows one user's /sync.
type syncer struct {
	st    *servertest.Stack
	token string
	since string
}

func newSyncer(t *testing.T, st *servertest.Stack, u servertest.User) *syncer {
	t.Helper()
	s := &syncer{st: st, token: u.AccessToken}
	s.next(t)
	return s
}

// next syncs once without waiting and returns the answer.
func (s *syncer) next(t *testing.T) map[string]any {
	t.Helper()
	path := "/_matrix/client/v3/sync?timeout=0"
	if s.since != "" {
		path += "&since=" + url.QueryEscape(s.since)
	}
	r := s.st.Do(t, "GET", path, s.token, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("sync: %d %s", r.Status, r.Raw)
	}
	s.since, _ = r.Body["next_batch"].(string)
	return r.Body
}

// deviceListChanged reports whether a sync answer lists user in
// device_lists.changed.
func deviceListChanged(body map[string]any, user string) bool {
	dl, _ := body["device_lists"].(map[string]any)
	changed, _ := dl["changed"].([]any)
	return slices.Contains(changed, any(user))
}

// toDevice lists the to-device events of a sync answer as "type sender body".
func toDevice(body map[string]any) []string {
	td, _ := body["to_device"].(map[string]any)
	evs, _ := td["events"].([]any)
	var out []string
	for _, e := range evs {
		ev, _ := e.(map[string]any)
		content, _ := ev["content"].(map[string]any)
		out = append(out, fmt.Sprintf("%v %v %v", ev["type"], ev["sender"], content["body"]))
	}
	return out
}

// TestTwoServers_DeviceListsAndToDevice: bob@B's new device with keys
// reaches alice@A's sync as device_lists.changed (m.device_list_update),
// and so does its deletion and bob's new cross-signing keys
// (m.signing_key_update); alice's new device reaches bob's sync on B; B's /user/devices names the stream ID of the
// last update. To-device messages go both ways (m.direct_to_device), to
// one device and to all of a user's devices, each delivered once; the
// same EDU received again delivers nothing.
func TestTwoServers_DeviceListsAndToDevice(t *testing.T) {
	ctx := context.Background()
	ts := startTwoServers(t)
	alice, bob := ts.alice, ts.bob
	alice.upload(t, 1)
	bob.upload(t, 1)
	aliceSync := newSyncer(t, ts.a, alice.user)
	bobSync := newSyncer(t, ts.b, bob.user)

	second := login(t, ts.b, bob.user, "BOBPHONE", "bob's phone")
	second.upload(t, 1)
	eventually(t, "bob's new device in alice's device_lists", func() (string, bool) {
		body := aliceSync.next(t)
		dl, _ := json.Marshal(body["device_lists"])
		return string(dl), deviceListChanged(body, bob.user.ID)
	})
	q, err := alice.c.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{id.UserID(bob.user.ID): {}}})
	if err != nil || len(q.DeviceKeys[id.UserID(bob.user.ID)]) != 2 {
		t.Fatalf("bob's devices seen from A: %v %v", q.DeviceKeys, err)
	}
	// B keeps its devices' names to itself, as Synapse does by default.
	if name, ok := q.DeviceKeys[id.UserID(bob.user.ID)]["BOBPHONE"].Unsigned["device_display_name"]; ok {
		t.Fatalf("the phone's display name on A: %q, want none", name)
	}

	if _, err := second.c.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "bob's deleted device in alice's device_lists", func() (string, bool) {
		body := aliceSync.next(t)
		dl, _ := json.Marshal(body["device_lists"])
		return string(dl), deviceListChanged(body, bob.user.ID)
	})
	q, err = alice.c.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{id.UserID(bob.user.ID): {}}})
	if _, still := q.DeviceKeys[id.UserID(bob.user.ID)]["BOBPHONE"]; err != nil || still {
		t.Fatalf("bob's devices seen from A after the logout: %v %v", q.DeviceKeys, err)
	}

	cs := newCrossSigning(bob.user.ID)
	if err := bob.c.UploadCrossSigningKeys(ctx, cs.upload(t), passwordAuth(bob.user.ID)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "bob's cross-signing keys in alice's device_lists", func() (string, bool) {
		body := aliceSync.next(t)
		dl, _ := json.Marshal(body["device_lists"])
		return string(dl), deviceListChanged(body, bob.user.ID)
	})

	// The other way: alice's new device reaches bob on B, which took the
	// room in through bob's join and so learnt of alice from its member
	// list, not from her join.
	alicePhone := login(t, ts.a, alice.user, "ALICEPHONE", "")
	alicePhone.upload(t, 1)
	eventually(t, "alice's new device in bob's device_lists", func() (string, bool) {
		body := bobSync.next(t)
		dl, _ := json.Marshal(body["device_lists"])
		return string(dl), deviceListChanged(body, alice.user.ID)
	})

	// B's /user/devices names the stream ID of its last update: bob's
	// first upload, the phone, its deletion.
	devs, err := ts.a.Server.E2EKeys.RemoteDevices(ctx, bob.user.ID)
	if err != nil {
		t.Fatal(err)
	}
	if devs.StreamID != 3 || len(devs.Devices) != 1 || devs.MasterKey == nil || devs.SelfSigningKey == nil {
		t.Fatalf("B's /user/devices of bob: stream %d, %d devices, master %s, self-signing %s",
			devs.StreamID, len(devs.Devices), devs.MasterKey, devs.SelfSigningKey)
	}

	// To-device, A to B (one device) and B to A (every device).
	send := func(c *mautrix.Client, to id.UserID, device id.DeviceID, body string) {
		t.Helper()
		_, err := c.SendToDevice(ctx, event.Type{Type: "m.test", Class: event.ToDeviceEventType}, &mautrix.ReqSendToDevice{
			Messages: map[id.UserID]map[id.DeviceID]*event.Content{to: {device: {Raw: map[string]any{"body": body}}}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	send(alice.c, id.UserID(bob.user.ID), bob.id(), "to bob's laptop")
	var bobGot []string
	eventually(t, "alice's to-device message on B", func() (string, bool) {
		bobGot = append(bobGot, toDevice(bobSync.next(t))...)
		return fmt.Sprint(bobGot), len(bobGot) > 0
	})
	if want := []string{"m.test " + alice.user.ID + " to bob's laptop"}; !slices.Equal(bobGot, want) {
		t.Fatalf("bob got %q, want %q", bobGot, want)
	}
	send(bob.c, id.UserID(alice.user.ID), "*", "to all of alice's devices")
	var aliceGot []string
	eventually(t, "bob's to-device message on A", func() (string, bool) {
		aliceGot = append(aliceGot, toDevice(aliceSync.next(t))...)
		return fmt.Sprint(aliceGot), len(aliceGot) > 0
	})
	if want := []string{"m.test " + bob.user.ID + " to all of alice's devices"}; !slices.Equal(aliceGot, want) {
		t.Fatalf("alice got %q, want %q", aliceGot, want)
	}

	// The same EDU again, as a retried transaction brings it: nothing more.
	edu := rawJSON(map[string]any{"sender": bob.user.ID, "type": "m.test", "message_id": "m1",
		"messages": map[string]any{alice.user.ID: map[string]any{"*": map[string]string{"body": "once"}}}})
	for range 2 {
		if err := ts.a.Server.ToDevice.HandleDirectToDevice(ctx, ts.b.Name(), *edu); err != nil {
			t.Fatal(err)
		}
	}
	if got := toDevice(aliceSync.next(t)); !slices.Equal(got, []string{"m.test " + bob.user.ID + " once"}) {
		t.Fatalf("an EDU received twice: alice got %q, want it once", got)
	}
	// A sender of another server than the origin's is refused.
	forged := rawJSON(map[string]any{"sender": "@mallory:" + ts.a.Name(), "type": "m.test", "message_id": "m2",
		"messages": map[string]any{alice.user.ID: map[string]any{"*": map[string]string{"body": "forged"}}}})
	if err := ts.a.Server.ToDevice.HandleDirectToDevice(ctx, ts.b.Name(), *forged); err == nil {
		t.Fatal("a to-device EDU whose sender is not of its origin was taken")
	}
	if got := toDevice(aliceSync.next(t)); len(got) != 0 {
		t.Fatalf("alice got %q after a forged EDU", got)
	}
}

func rawJSON(v any) *json.RawMessage {
	doc, _ := json.Marshal(v)
	raw := json.RawMessage(doc)
	return &raw
}

// deviceListLeft reports whether a sync answer lists user in
// device_lists.left.
func deviceListLeft(body map[string]any, user string) bool {
	dl, _ := body["device_lists"].(map[string]any)
	left, _ := dl["left"].([]any)
	return slices.Contains(left, any(user))
}

// TestTwoServers_DeviceListUpdates: inbound m.device_list_update as the
// spec orders them. One from a server for another server's user is
// refused; one of a user who shares no room here is ignored; one whose
// prev_id names a stream ID not seen makes A ask B's /user/devices; one
// seen already tells nobody again. When bob leaves the only room he
// shares with alice, her sync lists him in device_lists.left, and then
// his updates are ignored.
func TestTwoServers_DeviceListUpdates(t *testing.T) {
	ctx := context.Background()
	ts := startTwoServers(t)
	alice, bob := ts.alice, ts.bob
	aliceSync := newSyncer(t, ts.a, alice.user)
	update := func(user string, stream int64, prev ...int64) []byte {
		doc, _ := json.Marshal(map[string]any{"user_id": user, "device_id": "DEV", "stream_id": stream, "prev_id": prev,
			"keys": map[string]any{}})
		return doc
	}
	handle := func(origin string, content []byte) error {
		return ts.a.Server.E2EKeys.HandleDeviceListUpdate(ctx, origin, content)
	}
	devicesAsked := func() int {
		n := 0
		for _, r := range ts.b.Requests(t) {
			if r.Route != "" && strings.Contains(r.Path, "/user/devices/") && r.Status == http.StatusOK {
				n++
			}
		}
		return n
	}

	if err := handle(ts.a.Name(), update(bob.user.ID, 1)); err == nil {
		t.Fatal("an update of bob's from A's own name was taken")
	}
	if err := handle(ts.b.Name(), update("@stranger:"+ts.b.Name(), 1)); err != nil {
		t.Fatal(err)
	}
	if body := aliceSync.next(t); deviceListChanged(body, "@stranger:"+ts.b.Name()) {
		t.Fatal("an update of a user who shares no room reached alice")
	}

	// The first update seen names prev_id 7, never seen: a gap.
	before := devicesAsked()
	if err := handle(ts.b.Name(), update(bob.user.ID, 8, 7)); err != nil {
		t.Fatal(err)
	}
	if got := devicesAsked(); got != before+1 {
		t.Fatalf("/user/devices asked %d times after a gap, want %d", got, before+1)
	}
	if body := aliceSync.next(t); !deviceListChanged(body, bob.user.ID) {
		t.Fatalf("alice's sync after bob's update: %v", body["device_lists"])
	}
	// The next in order: no resync.
	if err := handle(ts.b.Name(), update(bob.user.ID, 9, 8)); err != nil {
		t.Fatal(err)
	}
	if got := devicesAsked(); got != before+1 {
		t.Fatalf("/user/devices asked again for an update in order: %d", got)
	}
	if body := aliceSync.next(t); !deviceListChanged(body, bob.user.ID) {
		t.Fatalf("alice's sync after bob's next update: %v", body["device_lists"])
	}
	// The same again: nobody is told.
	if err := handle(ts.b.Name(), update(bob.user.ID, 9, 8)); err != nil {
		t.Fatal(err)
	}
	if body := aliceSync.next(t); deviceListChanged(body, bob.user.ID) {
		t.Fatal("an update seen already reached alice again")
	}

	// bob leaves: alice's sync lists him as left.
	if _, err := bob.c.LeaveRoom(ctx, ts.room); err != nil {
		t.Fatal(err)
	}
	eventually(t, "bob in alice's device_lists.left", func() (string, bool) {
		body := aliceSync.next(t)
		dl, _ := json.Marshal(body["device_lists"])
		return string(dl), deviceListLeft(body, bob.user.ID)
	})
	if err := handle(ts.b.Name(), update(bob.user.ID, 10, 9)); err != nil {
		t.Fatal(err)
	}
	if body := aliceSync.next(t); deviceListChanged(body, bob.user.ID) {
		t.Fatal("an update of bob's reached alice after he left")
	}
}
