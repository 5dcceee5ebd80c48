package rooms_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestLimits_KeyParts: what a client names an item by (event types, state
// keys, transaction IDs, room and event IDs in paths) becomes part of the
// table's keys. What cannot be stored as given (a NUL, which separates a
// state event's type from its state key, invalid UTF-8, which the SDK
// would replace) or is over 255 bytes is refused before anything is read:
// only the access token's read is made.
func TestLimits_KeyParts(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Register(t, "alice")
	room := createRoom(t, st, alice, map[string]any{})
	msg, err := send(t, st, alice, room, "m1", "hello")
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("k", 256)
	text := map[string]any{"msgtype": "m.text", "body": "x"}
	rp := roomPath(room)
	for _, tc := range []struct {
		name, method, path string
		body               any
		status             int
		code               string
	}{
		{"NULInType", "PUT", rp + "/send/m.room%00message/t1", text, 400, "M_INVALID_PARAM"},
		{"InvalidUTF8InType", "PUT", rp + "/send/m.room.%FF/t2", text, 400, "M_INVALID_PARAM"},
		{"NULInTxnID", "PUT", rp + "/send/m.room.message/t%00", text, 400, "M_INVALID_PARAM"},
		{"InvalidUTF8InTxnID", "PUT", rp + "/send/m.room.message/t%FF", text, 400, "M_INVALID_PARAM"},
		{"LongTxnID", "PUT", rp + "/send/m.room.message/" + long, text, 400, "M_INVALID_PARAM"},
		{"LongType", "PUT", rp + "/send/" + long + "/t3", text, 413, "M_TOO_LARGE"},
		{"NULInStateType", "PUT", rp + "/state/com.example%00a/b", map[string]any{}, 400, "M_INVALID_PARAM"},
		{"NULInStateKey", "PUT", rp + "/state/com.example.a/b%00c", map[string]any{}, 400, "M_INVALID_PARAM"},
		{"InvalidUTF8InStateKey", "PUT", rp + "/state/com.example.a/%C3", map[string]any{}, 400, "M_INVALID_PARAM"},
		{"LongStateKey", "PUT", rp + "/state/com.example.a/" + long, map[string]any{}, 413, "M_TOO_LARGE"},
		{"ContentOver64KiB", "PUT", rp + "/send/m.room.message/t4", map[string]any{"body": strings.Repeat("b", 70_000)}, 413, "M_TOO_LARGE"},
		{"NULInRedactionTxnID", "PUT", rp + "/redact/" + url.PathEscape(msg) + "/r%00", map[string]any{}, 400, "M_INVALID_PARAM"},
		{"LongRedactionTxnID", "PUT", rp + "/redact/" + url.PathEscape(msg) + "/" + long, map[string]any{}, 400, "M_INVALID_PARAM"},
		{"InvalidUTF8InEventID", "PUT", rp + "/redact/$a%FF/r1", map[string]any{}, 400, "M_INVALID_PARAM"},
		{"InvalidUTF8InEventIDOfEvent", "GET", rp + "/event/$a%FF", nil, 400, "M_INVALID_PARAM"},
		{"InvalidUTF8InRoomID", "GET", "/_matrix/client/v3/rooms/!a%FF:example.org/messages?dir=b", nil, 400, "M_INVALID_PARAM"},
		{"NULInStateTypeOfGET", "GET", rp + "/state/com.example%00a/", nil, 400, "M_INVALID_PARAM"},
		{"NULInInitialStateType", "POST", "/_matrix/client/v3/createRoom", map[string]any{"initial_state": []any{map[string]any{"type": "com.example\x00a", "state_key": "", "content": map[string]any{}}}}, 400, "M_BAD_JSON"},
		{"NULInInitialStateKey", "POST", "/_matrix/client/v3/createRoom", map[string]any{"initial_state": []any{map[string]any{"type": "com.example.a", "state_key": "b\x00c", "content": map[string]any{}}}}, 400, "M_BAD_JSON"},
		{"LongInitialStateKey", "POST", "/_matrix/client/v3/createRoom", map[string]any{"initial_state": []any{map[string]any{"type": "com.example.a", "state_key": long, "content": map[string]any{}}}}, 400, "M_BAD_JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := st.Do(t, tc.method, tc.path, alice.AccessToken, tc.body)
			if r.Status != tc.status || r.Body["errcode"] != tc.code {
				t.Fatalf("got %d %s, want %d %s", r.Status, r.Raw, tc.status, tc.code)
			}
			if u := st.LastRequest(t).DynamoDB; u.Calls != 1 || u.WriteUnits != 0 {
				t.Fatalf("%d DynamoDB calls, %.0f WCU; want 1 call (the access token), no write", u.Calls, u.WriteUnits)
			}
		})
	}
	// Two state events that a NUL would have made one: neither is stored.
	for _, ev := range []string{"com.example.a%00b/c", "com.example.a/b%00c"} {
		st.Do(t, "PUT", rp+"/state/"+ev, alice.AccessToken, map[string]any{})
	}
	if n := countTypes(t, st, alice, room); n["com.example.a"]+n["com.example.a\x00b"] != 0 {
		t.Fatalf("state events stored: %v", n)
	}

	// A relation to something that is no event ID (too long for a key) is
	// kept as a message and indexed nowhere.
	body := map[string]any{"msgtype": "m.text", "body": "odd reply", "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": "$" + strings.Repeat("e", 2000)}}
	if r := st.Do(t, "PUT", rp+"/send/m.room.message/odd", alice.AccessToken, body); r.Status != http.StatusOK {
		t.Fatalf("message relating to an overlong ID: %d %s", r.Status, r.Raw)
	}
}

// TestMessages_TokenBounds: a token past any position a room can hold is
// 400 M_INVALID_PARAM (paging forward from the largest int64 overflowed);
// the last position a key can hold gives an empty page.
func TestMessages_TokenBounds(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Register(t, "alice")
	room := createRoom(t, st, alice, map[string]any{})
	if _, err := send(t, st, alice, room, "m1", "hello"); err != nil {
		t.Fatal(err)
	}
	rp := roomPath(room)
	for _, q := range []string{
		"from=t9223372036854775807&dir=f",
		"from=t9223372036854775807&dir=b",
		"from=t9223372036854775808&dir=f",
		"from=t1000000000000&dir=f",
		"from=t-1&dir=f",
		"from=t0&to=t9223372036854775807&dir=f",
	} {
		r := st.Do(t, "GET", rp+"/messages?"+q, alice.AccessToken, nil)
		if r.Status != 400 || r.Body["errcode"] != "M_INVALID_PARAM" {
			t.Errorf("messages?%s: %d %s, want 400 M_INVALID_PARAM", q, r.Status, r.Raw)
		}
	}
	r := st.Do(t, "GET", rp+"/messages?from=t999999999999&dir=f", alice.AccessToken, nil)
	if chunk, _ := r.Body["chunk"].([]any); r.Status != 200 || len(chunk) != 0 || r.Body["end"] != nil {
		t.Errorf("messages from the last position: %d %s, want an empty page", r.Status, r.Raw)
	}
	r = st.Do(t, "GET", "/_matrix/client/v1/rooms/"+url.PathEscape(room)+"/relations/"+url.PathEscape("$x")+"?dir=f&from=t9223372036854775807", alice.AccessToken, nil)
	if r.Status != 400 && r.Status != 404 {
		t.Errorf("relations from the largest int64: %d %s", r.Status, r.Raw)
	}
}
