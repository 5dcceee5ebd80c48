package sync_test

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestSync_AnotherUsersToken: a since token made for another user is read,
// as Synapse reads it, as a point in time only: the sync answers with the
// caller's news since then, with the caller's key counts and to-device
// messages, and neither the answer nor its next_batch carries anything of
// the other user's. /messages still refuses such a token.
func TestSync_AnotherUsersToken(t *testing.T) {
	st := servertest.Start(t)
	aliceU, bobU := st.Register(t, "alice"), st.Register(t, "bob")
	alice, bob := st.Client(t, aliceU), st.Client(t, bobU)
	ours, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	secret, err := bob.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if r := st.Do(t, "POST", "/_matrix/client/v3/keys/upload", bobU.AccessToken, map[string]any{
		"one_time_keys": map[string]any{"curve25519:AAAA": "b0bkey", "curve25519:AAAB": "b0bkey2"},
	}); r.Status != http.StatusOK {
		t.Fatalf("bob's key upload: %d %s", r.Status, r.Raw)
	}
	// A to-device message for bob, delivered by the sync that makes his token.
	if r := st.Do(t, "PUT", "/_matrix/client/v3/sendToDevice/m.test/txn1", aliceU.AccessToken, map[string]any{
		"messages": map[string]any{bobU.ID: map[string]any{bobU.DeviceID: map[string]any{"for": "bob"}}},
	}); r.Status != http.StatusOK {
		t.Fatalf("to-device: %d %s", r.Status, r.Raw)
	}
	bobs := rawSync(t, st, bobU.AccessToken, url.Values{}).Body["next_batch"].(string)
	say(t, bob, secret.RoomID, "bob's secret")
	say(t, alice, ours.RoomID, "after bob's token")

	r := st.Do(t, "GET", "/_matrix/client/v3/sync?since="+url.QueryEscape(bobs), aliceU.AccessToken, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("alice's sync from bob's token: %d %s, want 200", r.Status, r.Raw)
	}
	if strings.Contains(string(r.Raw), string(secret.RoomID)) || strings.Contains(string(r.Raw), "bob's secret") || strings.Contains(string(r.Raw), `"for":"bob"`) {
		t.Fatalf("alice's sync from bob's token shows bob's data: %s", r.Raw)
	}
	j := joinedRoom(t, r.Body, ours.RoomID)
	if got := timelineBodies(j); len(got) == 0 || got[len(got)-1] != "after bob's token" {
		t.Fatalf("alice's timeline from bob's token: %v", got)
	}
	// Alice's own key counts: bob's two keys are not hers.
	if counts, _ := r.Body["device_one_time_keys_count"].(map[string]any); counts["curve25519"] != nil {
		t.Fatalf("alice's key counts from bob's token: %v", counts)
	}
	next := r.Body["next_batch"].(string)
	doc, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(next, "s"))
	if err != nil || strings.Contains(string(doc), string(secret.RoomID)) {
		t.Fatalf("next_batch from bob's token names bob's room or is not a token: %s %v", doc, err)
	}
	// The next_batch is alice's: the next sync takes it, with news only.
	say(t, alice, ours.RoomID, "next")
	again := rawSync(t, st, aliceU.AccessToken, url.Values{"since": {next}})
	if got := timelineBodies(joinedRoom(t, again.Body, ours.RoomID)); len(got) != 1 || got[0] != "next" {
		t.Fatalf("alice's sync from her own next token: %v, want [next]", got)
	}

	// Bob's own sync from his token is untouched by alice's use of it.
	mine := rawSync(t, st, bobU.AccessToken, url.Values{"since": {bobs}})
	if got := timelineBodies(joinedRoom(t, mine.Body, secret.RoomID)); len(got) != 1 || got[0] != "bob's secret" {
		t.Fatalf("bob's sync from his token: %v", got)
	}
	if counts, _ := mine.Body["device_one_time_keys_count"].(map[string]any); counts["curve25519"] != float64(2) {
		t.Fatalf("bob's key counts: %v", mine.Body["device_one_time_keys_count"])
	}

	// A token that is no token is still refused, and /messages still refuses
	// another user's token.
	for _, bad := range []string{"garbage", "s" + url.QueryEscape("{}")} {
		r := st.Do(t, "GET", "/_matrix/client/v3/sync?since="+url.QueryEscape(bad), aliceU.AccessToken, nil)
		if r.Status != http.StatusBadRequest || r.Body["errcode"] != "M_INVALID_PARAM" {
			t.Fatalf("since %q: %d %s, want 400 M_INVALID_PARAM", bad, r.Status, r.Raw)
		}
	}
	r = st.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(string(ours.RoomID))+"/messages?dir=b&from="+url.QueryEscape(bobs), aliceU.AccessToken, nil)
	if r.Status != http.StatusBadRequest || r.Body["errcode"] != "M_INVALID_PARAM" {
		t.Fatalf("/messages from bob's token: %d %s, want 400 M_INVALID_PARAM", r.Status, r.Raw)
	}
}

// timelineBodies lists the bodies of the messages in a room's timeline.
func timelineBodies(room map[string]any) []string {
	tl, _ := room["timeline"].(map[string]any)
	evs, _ := tl["events"].([]any)
	var out []string
	for _, e := range evs {
		ev := e.(map[string]any)
		if ev["type"] != "m.room.message" {
			continue
		}
		content, _ := ev["content"].(map[string]any)
		b, _ := content["body"].(string)
		out = append(out, b)
	}
	return out
}

// TestSync_AnotherDevicesToken: a since token another device of the same
// user made is a position in the user's stream for this device, with this
// device's key counts and to-device inbox: the other device's messages
// neither show here nor are lost to it.
func TestSync_AnotherDevicesToken(t *testing.T) {
	st := servertest.Start(t)
	aliceU := st.Register(t, "alice")
	login := st.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"},
		"password": "correct horse battery staple",
	})
	second, _ := login.Body["access_token"].(string)
	if login.Status != http.StatusOK || second == "" {
		t.Fatalf("second login: %d %s", login.Status, login.Raw)
	}
	if r := st.Do(t, "POST", "/_matrix/client/v3/keys/upload", aliceU.AccessToken, map[string]any{
		"one_time_keys": map[string]any{"curve25519:AAAA": "firstkey"},
	}); r.Status != http.StatusOK {
		t.Fatalf("key upload: %d %s", r.Status, r.Raw)
	}
	first := rawSync(t, st, aliceU.AccessToken, url.Values{}).Body["next_batch"].(string)
	if r := st.Do(t, "PUT", "/_matrix/client/v3/sendToDevice/m.test/t1", aliceU.AccessToken, map[string]any{
		"messages": map[string]any{aliceU.ID: map[string]any{aliceU.DeviceID: map[string]any{"for": "first"}}},
	}); r.Status != http.StatusOK {
		t.Fatalf("to-device: %d %s", r.Status, r.Raw)
	}

	r := rawSync(t, st, second, url.Values{"since": {first}})
	if strings.Contains(string(r.Raw), `"for":"first"`) {
		t.Fatalf("the second device got the first one's message: %s", r.Raw)
	}
	if counts, _ := r.Body["device_one_time_keys_count"].(map[string]any); counts["curve25519"] != nil {
		t.Fatalf("the second device's key counts: %v", counts)
	}
	mine := rawSync(t, st, aliceU.AccessToken, url.Values{"since": {first}})
	if !strings.Contains(string(mine.Raw), `"for":"first"`) {
		t.Fatalf("the first device lost its message: %s", mine.Raw)
	}
	if counts, _ := mine.Body["device_one_time_keys_count"].(map[string]any); counts["curve25519"] != float64(1) {
		t.Fatalf("the first device's key counts: %v", counts)
	}
}
