package federation_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/cirrus-matrix/cirrus/shared/protocol"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestDendrite: Dendrite 0.13.8, a real homeserver, reads what its users
// ask of Cirrus's users and rooms through Cirrus's federation read
// endpoints, and parses every answer: a profile (/query/profile), an
// alias (/query/directory), the published room directory (/publicRooms),
// device keys (/user/keys/query, signed by the device) and a one-time key
// claimed (/user/keys/claim).
func TestDendrite(t *testing.T) {
	st, _ := servertest.StartNamed(t)
	d := servertest.StartDendrite(t, nil)
	name := st.Name()
	alice := st.Member(t, "alice")
	if err := alice.SetDisplayName(background, "Alice of Cirrus"); err != nil {
		t.Fatal(err)
	}
	room, err := alice.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", Name: "Lobby", RoomAliasName: "lobby"})
	if err != nil {
		t.Fatal(err)
	}
	uploadSignedKeys(t, st, alice.User)
	_, dendrite := dendriteUser(t, d, "bob")

	profile := dendrite("GET", "/_matrix/client/v3/profile/"+url.PathEscape(alice.User.ID), nil)
	if profile["displayname"] != "Alice of Cirrus" {
		t.Errorf("profile through Dendrite: %v", profile)
	}

	alias := dendrite("GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#lobby:"+name), nil)
	wantEqual(t, "alias through Dendrite", alias, map[string]any{"room_id": string(room.RoomID), "servers": []any{name}})

	dir := dendrite("POST", "/_matrix/client/v3/publicRooms?server="+url.QueryEscape(name), map[string]any{"limit": 10})
	chunk, _ := dir["chunk"].([]any)
	if len(chunk) != 1 || chunk[0].(map[string]any)["room_id"] != string(room.RoomID) || chunk[0].(map[string]any)["name"] != "Lobby" {
		t.Errorf("directory through Dendrite: %v", dir)
	}

	keys := dendrite("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{alice.User.ID: []string{}}})
	byUser, _ := keys["device_keys"].(map[string]any)
	devices, _ := byUser[alice.User.ID].(map[string]any)
	dev, _ := devices[alice.User.DeviceID].(map[string]any)
	if dev["device_id"] != alice.User.DeviceID || dev["user_id"] != alice.User.ID {
		t.Errorf("keys through Dendrite: %v", keys)
	}

	claimed := dendrite("POST", "/_matrix/client/v3/keys/claim", map[string]any{"one_time_keys": map[string]any{alice.User.ID: map[string]string{alice.User.DeviceID: "signed_curve25519"}}})
	otks, _ := claimed["one_time_keys"].(map[string]any)
	got, _ := otks[alice.User.ID].(map[string]any)
	key, _ := got[alice.User.DeviceID].(map[string]any)
	if _, ok := key["signed_curve25519:AAAA"]; !ok {
		t.Errorf("claim through Dendrite: %v", claimed)
	}

	// Each answer came from Cirrus's federation tree, to Dendrite's
	// signed request.
	for _, route := range []string{"/query/profile", "/query/directory", "/publicRooms", "/user/keys/query", "/user/keys/claim"} {
		if r := st.LastRequestTo(t, "/_matrix/federation/v1"+route); r.Status != http.StatusOK {
			t.Errorf("%s: Cirrus answered %d", route, r.Status)
		}
	}
}

// uploadSignedKeys uploads device keys for u's device signed with a fresh
// ed25519 key, as a client would, and one signed one-time key.
func uploadSignedKeys(t *testing.T, st *servertest.Stack, u servertest.User) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawStdEncoding.EncodeToString
	sign := func(v any) json.RawMessage {
		t.Helper()
		doc, _ := json.Marshal(v)
		signed, err := protocol.SignJSON(u.ID, "ed25519:"+u.DeviceID, priv, doc)
		if err != nil {
			t.Fatal(err)
		}
		return signed
	}
	curve := make([]byte, 32)
	rand.Read(curve)
	deviceKeys := sign(map[string]any{
		"user_id": u.ID, "device_id": u.DeviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"curve25519:" + u.DeviceID: b64(curve), "ed25519:" + u.DeviceID: b64(pub)},
	})
	otk := sign(map[string]any{"key": b64(curve)})
	r := st.Do(t, "POST", "/_matrix/client/v3/keys/upload", u.AccessToken, map[string]any{
		"device_keys":   deviceKeys,
		"one_time_keys": map[string]any{"signed_curve25519:AAAA": otk},
	})
	if r.Status != http.StatusOK || !strings.Contains(string(r.Raw), "signed_curve25519") {
		t.Fatalf("upload keys: %d %s", r.Status, r.Raw)
	}
}
