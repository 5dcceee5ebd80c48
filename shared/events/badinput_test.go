package events_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestBadContent_ThroughTheClientAPI sends content that cannot be signed as
// it is (numbers canonical JSON does not have, duplicate keys, deep
// nesting) through the real handler tree: each is 400 with the errcode of
// the spec, never 500, and nothing is written.
func TestBadContent_ThroughTheClientAPI(t *testing.T) {
	st := servertest.Start(t)
	alice, bob := st.Register(t, "alice"), st.Register(t, "bob")
	r := st.Do(t, "POST", "/_matrix/client/v3/createRoom", alice.AccessToken, map[string]any{"preset": "private_chat"})
	if r.Status != 200 {
		t.Fatalf("createRoom: %d %s", r.Status, r.Raw)
	}
	room := r.Body["room_id"].(string)
	rooms := "/_matrix/client/v3/rooms/" + url.PathEscape(room)
	r = st.Do(t, "PUT", rooms+"/send/m.room.message/t0", alice.AccessToken, map[string]any{"msgtype": "m.text", "body": "to redact"})
	if r.Status != 200 {
		t.Fatalf("send: %d %s", r.Status, r.Raw)
	}
	target := r.Body["event_id"].(string)
	nest := func(n int) string { return strings.Repeat(`{"a":`, n-1) + `{}` + strings.Repeat("}", n-1) }

	for _, tc := range []struct {
		name, who, method, path, body string
		errcode, error                string
	}{
		{"Float", "alice", "PUT", rooms + "/send/m.room.message/t1", `{"msgtype":"m.text","body":"hi","n":1.5}`,
			"M_BAD_JSON", "m.room.message: content.n: 1.5 is not an integer: canonical JSON has only integers, without fraction or exponent"},
		{"Exponent", "alice", "PUT", rooms + "/send/org.example.x/t2", `{"a":[{"n":1e5}]}`,
			"M_BAD_JSON", "org.example.x: content.a[0].n: 1e5 is not an integer: canonical JSON has only integers, without fraction or exponent"},
		{"MinusZero", "alice", "PUT", rooms + "/state/org.example.s/", `{"n":-0}`,
			"M_BAD_JSON", "org.example.s: content.n: -0 is not an integer: canonical JSON has only integers, without fraction or exponent"},
		{"BigInteger", "alice", "PUT", rooms + "/send/m.room.message/t3", `{"body":"x","ts":9007199254740992}`,
			"M_BAD_JSON", "m.room.message: content.ts: 9007199254740992 is out of the range of canonical JSON, -(2**53)+1 to (2**53)-1"},
		{"HugeInteger", "alice", "PUT", rooms + "/state/m.room.power_levels/", `{"users":{"@alice:example.org":100000000000000000000}}`,
			"M_BAD_JSON", "m.room.power_levels: users.@alice:example.org must be an integer between -(2**53)+1 and (2**53)-1, not 100000000000000000000"},
		{"PowerLevelsTwice", "alice", "PUT", rooms + "/state/m.room.power_levels/",
			`{"users":{"@alice:example.org":100},"users":{"@alice:example.org":100,"@bob:example.org":100}}`,
			"M_BAD_JSON", `request body: key "users" appears twice`},
		{"MembershipTwice", "bob", "PUT", rooms + "/state/m.room.member/" + url.PathEscape(bob.ID),
			`{"membership":"join","membership":"leave"}`,
			"M_BAD_JSON", `request body: key "membership" appears twice`},
		{"DeepInBody", "alice", "PUT", rooms + "/send/m.room.message/t4", `{"body":"x","a":` + nest(10000) + `}`,
			"M_BAD_JSON", "request body: arrays and objects are nested deeper than 100 levels"},
		{"DeepInContent", "alice", "PUT", rooms + "/send/m.room.message/t5", `{"body":"x","a":` + nest(70) + `}`,
			"M_BAD_JSON", "m.room.message: content: arrays and objects are nested deeper than 64 levels"},
		// The content of a redaction is read by another path.
		{"RedactionFloat", "alice", "PUT", rooms + "/send/m.room.redaction/t6", `{"redacts":"` + target + `","n":1.5}`,
			"M_BAD_JSON", "m.room.redaction: content.n: 1.5 is not an integer: canonical JSON has only integers, without fraction or exponent"},
		{"RedactionHuge", "alice", "PUT", rooms + "/send/m.room.redaction/t7", `{"redacts":"` + target + `","n":1e300}`,
			"M_BAD_JSON", "m.room.redaction: content.n: 1e+300 is not an integer: canonical JSON has only integers, without fraction or exponent"},
		{"CreateRoomInitialState", "alice", "POST", "/_matrix/client/v3/createRoom",
			`{"initial_state":[{"type":"org.example.s","state_key":"","content":{"n":0.5}}]}`,
			"M_BAD_JSON", "initial_state org.example.s: org.example.s: content.n: 0.5 is not an integer: canonical JSON has only integers, without fraction or exponent"},
		{"CreateRoomTwice", "alice", "POST", "/_matrix/client/v3/createRoom",
			`{"preset":"public_chat","preset":"private_chat"}`,
			"M_BAD_JSON", `request body: key "preset" appears twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			token := alice.AccessToken
			if tc.who == "bob" {
				token = bob.AccessToken
			}
			r := st.Do(t, tc.method, tc.path, token, tc.body)
			if r.Status != 400 || r.Body["errcode"] != tc.errcode || r.Body["error"] != tc.error {
				t.Fatalf("%s %s: %d %.300s\nwant 400 %s %q", tc.method, tc.path, r.Status, r.Raw, tc.errcode, tc.error)
			}
			if u := st.LastRequest(t).DynamoDB; u.WriteUnits != 0 {
				t.Errorf("%s %s wrote %.1f WCU, want nothing written", tc.method, tc.path, u.WriteUnits)
			}
		})
	}

	// The room is as it was: bob never joined, bob has no power, no event was sent.
	r = st.Do(t, "GET", rooms+"/joined_members", alice.AccessToken, nil)
	if joined, _ := r.Body["joined"].(map[string]any); r.Status != 200 || len(joined) != 1 || joined[alice.ID] == nil {
		t.Errorf("joined members: %d %s, want alice alone", r.Status, r.Raw)
	}
	r = st.Do(t, "GET", rooms+"/state/m.room.power_levels/", alice.AccessToken, nil)
	if users, _ := r.Body["users"].(map[string]any); r.Status != 200 || users[bob.ID] != nil {
		t.Errorf("power levels: %d %s, want none for bob", r.Status, r.Raw)
	}
	r = st.Do(t, "GET", rooms+"/messages?dir=b&limit=50", alice.AccessToken, nil)
	for _, ev := range r.Body["chunk"].([]any) {
		e := ev.(map[string]any)
		switch e["type"] {
		case "m.room.message":
			if e["event_id"] != target {
				t.Errorf("an event refused is in the room: %v", ev)
			}
		case "m.room.redaction", "org.example.x", "org.example.s":
			t.Errorf("an event refused is in the room: %v", ev)
		}
	}
	r = st.Do(t, "GET", "/_matrix/client/v3/joined_rooms", alice.AccessToken, nil)
	if ids, _ := r.Body["joined_rooms"].([]any); len(ids) != 1 {
		t.Errorf("alice's rooms: %s, want the first alone", r.Raw)
	}
}
