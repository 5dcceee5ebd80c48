package rooms_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestSend_ContentSynapseStores sends state whose content Synapse stores
// though it says more than the auth rules use: each is stored as sent, and
// a room whose allow conditions name no room still answers joins (403).
func TestSend_ContentSynapseStores(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Register(t, "alice")
	bob := st.Register(t, "bob")
	room := createRoom(t, st, alice, map[string]any{"preset": "public_chat", "room_version": "10"})
	for _, tc := range []struct {
		name, typ, key, body string
	}{
		{"MemberAvatarNotMXC", "m.room.member", alice.ID, `{"membership":"join","avatar_url":"https://example.org/a.png"}`},
		{"MemberAuthorisedViaNotUser", "m.room.member", alice.ID, `{"membership":"join","join_authorised_via_users_server":"nobody"}`},
		{"RoomAvatarNotMXC", "m.room.avatar", "", `{"url":"https://example.org/a.png"}`},
		{"RoomAvatarNull", "m.room.avatar", "", `{"url":null}`},
		{"AllowPublic", "m.room.join_rules", "", `{"join_rule":"public","allow":[{"type":"m.room_membership"}]}`},
		{"AllowNoRoom", "m.room.join_rules", "", `{"join_rule":"restricted","allow":[{"type":"m.room_membership"},{"room_id":"!x:example.org"},null,{"type":"m.room_membership","room_id":"#alias:example.org"}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := st.URL + roomPath(room) + "/state/" + tc.typ + "/" + url.PathEscape(tc.key)
			if r := servertest.Call(t, "PUT", path, alice.AccessToken, []byte(tc.body)); r.Status != http.StatusOK {
				t.Fatalf("PUT %s %s: %d %s", tc.typ, tc.body, r.Status, r.Raw)
			}
			r := servertest.Call(t, "GET", path, alice.AccessToken, nil)
			if r.Status != http.StatusOK || string(canonical(t, r.Raw)) != string(canonical(t, []byte(tc.body))) {
				t.Fatalf("GET %s: %d %s, want %s", tc.typ, r.Status, r.Raw, tc.body)
			}
		})
	}
	// The last join rules are restricted to conditions no one meets.
	r := st.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(room), bob.AccessToken, map[string]any{})
	if r.Status != http.StatusForbidden || r.Body["errcode"] != "M_FORBIDDEN" {
		t.Fatalf("join of a room restricted to no room: %d %s", r.Status, r.Raw)
	}
	// A join that names an authoriser who is no user is refused by the auth
	// rules that use it.
	r = servertest.Call(t, "PUT", st.URL+roomPath(room)+"/state/m.room.member/"+url.PathEscape(bob.ID), bob.AccessToken,
		[]byte(`{"membership":"join","join_authorised_via_users_server":"nobody"}`))
	if r.Status != http.StatusForbidden {
		t.Fatalf("restricted join authorised by no user: %d %s", r.Status, r.Raw)
	}
}

// canonical re-encodes a JSON object so that two encodings compare equal.
func canonical(t *testing.T, raw []byte) []byte {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	out, _ := json.Marshal(v)
	return out
}
