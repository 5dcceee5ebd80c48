package todevice_test

import (
	"strings"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestCosts pins the costs docs/storage.md gives for to-device messages: a
// send writes one item per recipient device, one stream entry per device
// named or one per user for all of them, and its transaction record twice
// (claimed, then marked sent); a
// sync reads the inbox only when its stream or token says so, so an idle
// poll stays one small read of the stream.
func TestCosts(t *testing.T) {
	st := servertest.Start(t, "CIRRUS_SYNC_POLL_INTERVAL_MS=250")
	alice := st.Client(t, st.Register(t, "alice"))
	bu := st.Register(t, "bob")
	bob := st.Client(t, bu)
	login(t, st, bu, "")
	login(t, st, bu, "")
	base := sync(t, bob, "", 0)

	want := servertest.Want
	check := func(what, route string, w servertest.Cost) {
		t.Helper()
		st.CheckCost(t, what, route, w)
	}

	// auth, bob's devices; the claim of the transaction record, the
	// message, the stream entry, the record marked sent.
	send(t, alice, bob.UserID, map[string]any{"n": 1}, bob.DeviceID.String())
	check("send to one device", "/sendToDevice/", want(6, 2, 4))
	// An Olm-sized message (about 1.5 KB of ciphertext) takes 2 WCU.
	send(t, alice, bob.UserID, map[string]any{"n": 2, "ciphertext": strings.Repeat("A", 1500)}, bob.DeviceID.String())
	check("send of 1.5 KB to one device", "/sendToDevice/", want(6, 2, 5))
	// Three messages, one entry for all of bob's devices.
	send(t, alice, bob.UserID, map[string]any{"n": 3}, "*")
	check(`send to "*" of 3 devices`, "/sendToDevice/", want(6, 2, 6))
	r := st.Do(t, "PUT", "/_matrix/client/v3/sendToDevice/"+ping.Type+"/again", alice.AccessToken, map[string]any{"messages": map[string]any{}})
	if r.Status != 200 {
		t.Fatal(r.Status)
	}
	st.Do(t, "PUT", "/_matrix/client/v3/sendToDevice/"+ping.Type+"/again", alice.AccessToken, map[string]any{"messages": map[string]any{}})
	// auth, the failed claim (billed as a write), the record read.
	check("retry of a transaction", "/sendToDevice/", want(3, 2, 1))

	// auth, stream, inbox.
	got := sync(t, bob, base.NextBatch, 0)
	if n := len(got.ToDevice.Events); n != 3 {
		t.Fatalf("sync delivered %d messages, want 3", n)
	}
	check("sync delivering 3 messages", "/sync", want(3, 2.5, 0))
	// auth, stream, inbox, the 3 deletes (the 1.5 KB message is 2 WCU).
	acked := sync(t, bob, got.NextBatch, 0)
	check("sync acknowledging them", "/sync", want(6, 2.5, 4))

	// Entries of the messages just handled are still in the stream's
	// window: they must not bring a read of the inbox at each poll.
	sync(t, bob, acked.NextBatch, time.Second)
	u := st.LastRequestTo(t, "/sync").DynamoDB
	polls := u.Calls - 1
	t.Logf("idle sync of 1 s, 250 ms polls, after to-device messages: %d calls, %.1f RCU", u.Calls, u.ReadUnits)
	if polls < 3 || (u.ReadUnits-1)/float64(polls) > 0.5 || u.WriteUnits != 0 {
		t.Errorf("idle sync: %+v, want only polls of the stream at 0.5 RCU", u)
	}
}
