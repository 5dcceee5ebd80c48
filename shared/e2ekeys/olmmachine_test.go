//go:build goolm

// mautrix-go's crypto package needs either libolm through cgo or, with the
// goolm tag, its pure-Go Olm; scripts/test.sh runs every test with goolm.

package e2ekeys_test

import (
	"context"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestOlmMachine_CrossSigningAndRoomKeys drives the key endpoints with
// mautrix-go's OlmMachine, a complete client implementation rather than
// the hand-made requests of the other tests: each user publishes device
// keys and cross-signing keys and signs their own device and master key;
// bob fetches alice's keys, trusts her on first use, signs her master key
// and then sees her device as verified; a Megolm room key goes each way
// in an Olm-encrypted to-device message (a claimed one-time key one way,
// the session it began the other), delivered by /sync, and decrypts a
// Megolm event.
func TestOlmMachine_CrossSigningAndRoomKeys(t *testing.T) {
	st := servertest.Start(t)
	ctx := context.Background()
	// The room exists only in the machines' state: the room keys travel as
	// to-device messages, and the Megolm events are decrypted as built.
	room := id.RoomID("!olm:" + servertest.ServerName)
	alice := newOlmMachine(ctx, t, st, "alice", room)
	bob := newOlmMachine(ctx, t, st, "bob", room)
	a := alice.Client.UserID

	for _, m := range []*crypto.OlmMachine{alice, bob} {
		if _, err := m.FetchKeys(ctx, []id.UserID{m.Client.UserID}, true); err != nil {
			t.Fatal(err)
		}
		mk, ssk, usk, err := m.GetOwnCrossSigningVerificationStatus(ctx)
		if err != nil || !mk || !ssk || !usk {
			t.Fatalf("%s's own cross-signing keys as served: master %v, self-signing %v, user-signing %v (%v), want all signed",
				m.Client.UserID, mk, ssk, usk, err)
		}
	}

	devices, err := bob.FetchKeys(ctx, []id.UserID{a}, true)
	if err != nil {
		t.Fatalf("bob fetches alice's keys: %v", err)
	}
	own := alice.OwnIdentity()
	dev := devices[a][own.DeviceID]
	if len(devices[a]) != 1 || dev == nil || dev.IdentityKey != own.IdentityKey || dev.SigningKey != own.SigningKey {
		t.Fatalf("alice's devices for bob: %+v, want only %s with curve25519 %s and ed25519 %s", devices[a], own.DeviceID, own.IdentityKey, own.SigningKey)
	}
	pk, err := bob.GetCrossSigningPublicKeys(ctx, a)
	if err != nil || pk == nil {
		t.Fatalf("alice's cross-signing keys for bob: %v %v", pk, err)
	}
	if own, _ := alice.GetOwnCrossSigningPublicKeys(ctx); own == nil || pk.MasterKey != own.MasterKey || pk.SelfSigningKey != own.SelfSigningKey {
		t.Fatalf("alice's cross-signing keys for bob: %+v, alice's own: %+v", pk, own)
	}
	if trust := bob.ResolveTrust(dev); trust != id.TrustStateCrossSignedTOFU {
		t.Fatalf("alice's device for bob before he signs her: %s, want %s", trust, id.TrustStateCrossSignedTOFU)
	}

	if err := bob.SignUser(ctx, a, pk.MasterKey); err != nil {
		t.Fatalf("bob signs alice's master key: %v", err)
	}
	// The trust bob now has comes from his signature as the server serves
	// it back, not from his memory of making it.
	if devices, err = bob.FetchKeys(ctx, []id.UserID{a}, true); err != nil {
		t.Fatal(err)
	}
	if trusted, err := bob.IsUserTrusted(ctx, a); !trusted || err != nil {
		t.Fatalf("bob trusts alice after signing her: %v %v", trusted, err)
	}
	if trust := bob.ResolveTrust(devices[a][own.DeviceID]); trust != id.TrustStateCrossSignedVerified {
		t.Fatalf("alice's device for bob after he signs her: %s, want %s", trust, id.TrustStateCrossSignedVerified)
	}

	send := func(from, to *crypto.OlmMachine, body string) {
		t.Helper()
		if err := from.ShareGroupSession(ctx, room, []id.UserID{to.Client.UserID}); err != nil {
			t.Fatalf("%s shares a room key: %v", from.Client.UserID, err)
		}
		enc, err := from.EncryptMegolmEvent(ctx, room, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: body})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := to.Client.SyncRequest(ctx, 0, "", "", true, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		olm := 0
		for _, evt := range resp.ToDevice.Events {
			if evt.Type.Type == event.ToDeviceEncrypted.Type && evt.Sender == from.Client.UserID {
				olm++
			}
		}
		if olm != 1 {
			t.Fatalf("%s's to-device events: %d Olm messages from %s, want 1", to.Client.UserID, olm, from.Client.UserID)
		}
		to.ProcessSyncResponse(ctx, resp, "")
		evt := &event.Event{Sender: from.Client.UserID, Type: event.EventEncrypted, RoomID: room, ID: id.EventID("$sent-by-" + from.Client.DeviceID),
			Content: event.Content{Parsed: enc}}
		dec, err := to.DecryptMegolmEvent(ctx, evt)
		if err != nil {
			t.Fatalf("%s decrypts %s's message: %v", to.Client.UserID, from.Client.UserID, err)
		}
		if got := dec.Content.AsMessage().Body; dec.Type != event.EventMessage || got != body {
			t.Fatalf("%s decrypted %s %q, want m.room.message %q", to.Client.UserID, dec.Type.Type, got, body)
		}
	}
	claims := func() (n int) {
		for _, r := range st.Requests(t) {
			if strings.HasSuffix(r.Route, "/keys/claim") {
				n++
			}
		}
		return n
	}
	before := claims()
	send(alice, bob, "hello bob")
	send(bob, alice, "hello alice")
	// bob answers on the Olm session alice's pre-key message began, so
	// only alice claimed a one-time key.
	if n := claims() - before; n != 1 {
		t.Errorf("%d key claims for a room key each way, want 1", n)
	}
}

// newOlmMachine registers localpart and loads a new Olm account for its
// device, with memory stores in which room is encrypted and has alice and
// bob as members; it uploads the device's keys, publishes cross-signing
// keys (the first upload needs no user-interactive auth) and signs the
// device and the master key with them.
func newOlmMachine(ctx context.Context, t *testing.T, st *servertest.Stack, localpart string, room id.RoomID) *crypto.OlmMachine {
	t.Helper()
	u := st.Register(t, localpart)
	state := mautrix.NewMemoryStateStore()
	state.SetEncryptionEvent(ctx, room, &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1})
	for _, member := range []string{"alice", "bob"} {
		state.SetMembership(ctx, room, id.NewUserID(member, servertest.ServerName), event.MembershipJoin)
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).With().Str("user", u.ID).Logger()
	m := crypto.NewOlmMachine(st.Client(t, u), &log, crypto.NewMemoryStore(nil), state.(crypto.StateStore))
	if err := m.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.ShareKeys(ctx, -1); err != nil {
		t.Fatalf("%s uploads device keys: %v", u.ID, err)
	}
	keys, err := m.GenerateCrossSigningKeys()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.PublishCrossSigningKeys(ctx, keys, nil); err != nil {
		t.Fatalf("%s publishes cross-signing keys: %v", u.ID, err)
	}
	if err := m.SignOwnDevice(ctx, m.OwnIdentity()); err != nil {
		t.Fatalf("%s signs their device: %v", u.ID, err)
	}
	if err := m.SignOwnMasterKey(ctx); err != nil {
		t.Fatalf("%s signs their master key: %v", u.ID, err)
	}
	return m
}
