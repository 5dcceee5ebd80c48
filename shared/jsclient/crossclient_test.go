//go:build goolm

// mautrix-go's crypto package needs either libolm through cgo or, with the
// goolm tag, its pure-Go Olm; scripts/test.sh runs every test with goolm.

package jsclient_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
	"github.com/cirrus-matrix/cirrus/shared/testenv"
)

// TestEncryptedExchangeMautrixAndRustCrypto: two independent
// implementations of Olm and Megolm talk through Cirrus. alice is
// mautrix-go with its OlmMachine (goolm); bob is matrix-js-sdk with its
// Rust crypto (scripts/jsclient/peer.mjs). alice creates an encrypted room
// and invites bob; bob joins and decrypts alice's message; alice decrypts
// bob's encrypted reply. Each side's room key reaches the other only as an
// Olm-encrypted to-device message delivered by /sync.
func TestEncryptedExchangeMautrixAndRustCrypto(t *testing.T) {
	const timeout = 30 * time.Second
	st := servertest.Start(t)
	aliceUser := st.Register(t, "alice")
	bobUser := st.Register(t, "bob")
	bobID := id.UserID(bobUser.ID)
	// RunJSContext below runs on another goroutine, where an install
	// failure could not fail the test: install on this one.
	testenv.JSClient(t)

	// The script's own deadline comes first, so that it says at which step
	// it was; then RunJSContext's; then the test's.
	ctx, cancel := context.WithTimeout(context.Background(), timeout+10*time.Second)
	defer cancel()
	alice := startCryptoClient(ctx, t, st, aliceUser)

	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset: "private_chat",
		Invite: []id.UserID{bobID},
		InitialState: []*event.Event{{
			Type:    event.StateEncryption,
			Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}},
		}},
	})
	if err != nil {
		t.Fatalf("create room: %v", err)
	}
	roomID := room.RoomID

	nonce := strconv.FormatInt(time.Now().UnixNano(), 36)
	first := "alice's secret for rust crypto " + nonce
	reply := "bob's secret for mautrix " + nonce
	type result struct {
		out string
		err error
	}
	peer := make(chan result, 1)
	go func() {
		out, err := testenv.RunJSContext(ctx, t, timeout+5*time.Second, "peer.mjs",
			"CIRRUS_URL="+st.URL,
			"CIRRUS_USER="+bobUser.ID,
			"CIRRUS_PASSWORD="+password,
			"CIRRUS_PEER="+aliceUser.ID,
			"CIRRUS_ROOM="+roomID.String(),
			"CIRRUS_FIRST="+first,
			"CIRRUS_REPLY="+reply,
			"CIRRUS_TIMEOUT_MS="+strconv.FormatInt(timeout.Milliseconds(), 10),
		)
		peer <- result{out, err}
	}()
	var peerOut string
	peerDone := false
	// peerFailed fails the test when the script has ended before its part
	// was seen: nothing it would have done can come any more.
	peerFailed := func(r result, waiting string) {
		t.Helper()
		peerDone, peerOut = true, r.out
		t.Fatalf("matrix-js-sdk peer.mjs ended (%v) while alice waited for %s; its output:\n%s", r.err, waiting, r.out)
	}
	defer func() {
		if t.Failed() && !peerDone {
			cancel()
			r := <-peer
			t.Logf("matrix-js-sdk peer.mjs, stopped: %v; its output:\n%s", r.err, r.out)
		}
	}()

	// alice shares the room key once she sees bob's join: peer.mjs joins
	// only once its device keys are on the server, so the share includes
	// its device.
	for joined := false; !joined; {
		select {
		case evt := <-alice.members:
			joined = evt.RoomID == roomID && evt.GetStateKey() == bobID.String() &&
				evt.Content.AsMember().Membership == event.MembershipJoin
		case r := <-peer:
			peerFailed(r, "bob's join")
		case <-ctx.Done():
			t.Fatalf("bob's join not seen by alice's sync: %v", ctx.Err())
		}
	}

	members, err := alice.StateStore.GetRoomJoinedOrInvitedMembers(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.mach.ShareGroupSession(ctx, roomID, members); err != nil {
		t.Fatalf("share the room key with %v: %v", members, err)
	}
	enc, err := alice.mach.EncryptMegolmEvent(ctx, roomID, event.EventMessage,
		&event.MessageEventContent{MsgType: event.MsgText, Body: first})
	if err != nil {
		t.Fatalf("encrypt: %v", err)
	}
	sent, err := alice.SendMessageEvent(ctx, roomID, event.EventEncrypted, enc)
	if err != nil {
		t.Fatalf("send the encrypted message: %v", err)
	}

	var got decryptedEvent
	for got.dec == nil {
		select {
		case d := <-alice.decrypted:
			if d.raw.Sender != bobID {
				continue
			}
			if d.err != nil {
				t.Fatalf("alice cannot decrypt bob's %s: %v", d.raw.ID, d.err)
			}
			got = d
		case r := <-peer:
			if !peerDone {
				peerDone, peerOut = true, r.out
				if r.err != nil {
					peerFailed(r, "bob's reply")
				}
			}
			// A peer that passed has sent its reply: alice's sync
			// brings it.
			peer = nil
		case <-ctx.Done():
			t.Fatalf("bob's reply not decrypted by alice: %v", ctx.Err())
		}
	}
	if got.dec.Type != event.EventMessage || got.dec.Content.AsMessage().Body != reply {
		t.Fatalf("bob's %s decrypted to %s %s, want m.room.message with body %q", got.raw.ID, got.dec.Type.Type, got.dec.Content.VeryRaw, reply)
	}
	if !peerDone {
		select {
		case r := <-peer:
			peerDone, peerOut = true, r.out
			if r.err != nil {
				t.Fatalf("matrix-js-sdk peer.mjs: %v; its output:\n%s", r.err, r.out)
			}
		case <-ctx.Done():
			t.Fatalf("peer.mjs did not exit: %v", ctx.Err())
		}
	}
	if !strings.Contains(peerOut, "\nPASS in ") {
		t.Fatalf("matrix-js-sdk peer.mjs exited 0 without PASS; its output:\n%s", peerOut)
	}
	if !strings.Contains(peerOut, "\nREPLY "+got.raw.ID.String()+"\n") {
		t.Fatalf("alice decrypted %s, not the reply peer.mjs says it sent; its output:\n%s", got.raw.ID, peerOut)
	}
	t.Logf("matrix-js-sdk peer.mjs:\n%s", peerOut)

	// What the server holds is ciphertext both ways, whatever either client
	// believes it sent.
	for _, c := range []struct {
		eventID id.EventID
		text    string
	}{{sent.EventID, first}, {got.raw.ID, reply}} {
		r := st.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID.String())+"/event/"+url.PathEscape(c.eventID.String()), aliceUser.AccessToken, nil)
		content, _ := r.Body["content"].(map[string]any)
		ciphertext, _ := content["ciphertext"].(string)
		if r.Status != 200 || r.Body["type"] != "m.room.encrypted" || content["algorithm"] != string(id.AlgorithmMegolmV1) ||
			ciphertext == "" || strings.Contains(string(r.Raw), c.text) {
			t.Errorf("the server holds %s as %d %s, want m.room.encrypted with Megolm ciphertext", c.eventID, r.Status, r.Raw)
		}
	}
	checkServed(t, st)
}

// cryptoClient is a mautrix-go client with end-to-end encryption, wired as
// mautrix's cryptohelper wires it but with the memory stores: its sync loop
// feeds the OlmMachine (to-device messages, device lists, one-time key
// counts, membership changes) and the state store, and reports what it
// sees on its channels.
type cryptoClient struct {
	*mautrix.Client
	mach *crypto.OlmMachine
	// members gets every m.room.member event the sync loop sees.
	members chan *event.Event
	// decrypted gets every m.room.encrypted room event with what it
	// decrypted to, or why it could not be.
	decrypted chan decryptedEvent
}

type decryptedEvent struct {
	raw, dec *event.Event
	err      error
}

// startCryptoClient loads a new Olm account for u's device, uploads its
// keys, and syncs until ctx ends or the test does.
func startCryptoClient(ctx context.Context, t *testing.T, st *servertest.Stack, u servertest.User) *cryptoClient {
	t.Helper()
	cli := st.Client(t, u)
	cli.StateStore = mautrix.NewMemoryStateStore()
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).With().Str("user", u.ID).Logger()
	// The client warns of the long-poll the test's end cancels.
	cli.Log = log.Level(zerolog.ErrorLevel)
	mach := crypto.NewOlmMachine(cli, &log, crypto.NewMemoryStore(nil), cli.StateStore.(crypto.StateStore))
	if err := mach.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if err := mach.ShareKeys(ctx, -1); err != nil {
		t.Fatalf("upload the device keys of %s: %v", u.ID, err)
	}
	c := &cryptoClient{Client: cli, mach: mach,
		members: make(chan *event.Event, 64), decrypted: make(chan decryptedEvent, 64)}

	report := func(ctx context.Context, d decryptedEvent) {
		select {
		case c.decrypted <- d:
		case <-ctx.Done():
		}
	}
	syncer := cli.Syncer.(mautrix.ExtensibleSyncer)
	syncer.OnSync(mach.ProcessSyncResponse)
	syncer.OnEvent(cli.StateStoreSyncHandler)
	syncer.OnEventType(event.StateMember, mach.HandleMemberEvent)
	syncer.OnEventType(event.StateMember, func(ctx context.Context, evt *event.Event) {
		select {
		case c.members <- evt:
		case <-ctx.Done():
		}
	})
	syncer.OnEventType(event.EventEncrypted, func(ctx context.Context, evt *event.Event) {
		dec, err := mach.DecryptMegolmEvent(ctx, evt)
		if !errors.Is(err, crypto.ErrNoSessionFound) {
			report(ctx, decryptedEvent{evt, dec, err})
			return
		}
		// The room key may come in a later sync than the event.
		content := evt.Content.AsEncrypted()
		go func() {
			if !mach.WaitForSession(ctx, evt.RoomID, content.SenderKey, content.SessionID, 10*time.Second) {
				report(ctx, decryptedEvent{evt, nil, fmt.Errorf("no room key came: %w", err)})
				return
			}
			dec, err := mach.DecryptMegolmEvent(ctx, evt)
			report(ctx, decryptedEvent{evt, dec, err})
		}()
	})

	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cli.SyncWithContext(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("sync loop of %s: %v", u.ID, err)
		}
	})
	return c
}
