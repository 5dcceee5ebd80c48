package keybackup_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestBadInput sends what clients must not, and expects the spec's
// errcodes through the one error writer, and nothing stored.
func TestBadInput(t *testing.T) {
	st := servertest.Start(t)
	au := st.Register(t, "alice")
	version, _ := newBackup(t, st.Client(t, au))
	v := string(version)
	good := `{"first_message_index":0,"forwarded_count":0,"is_verified":false,"session_data":{"ciphertext":"c"}}`
	session := func(fields string) string { return `{"rooms":{"!r:example.org":{"sessions":{"s":` + fields + `}}}}` }

	cases := []struct {
		name, method, path, body string
		status                   int
		errcode                  string
	}{
		{"CreateNotJSON", "POST", versionPath, `{"algorithm":`, 400, "M_NOT_JSON"},
		{"CreateArray", "POST", versionPath, `[]`, 400, "M_BAD_JSON"},
		{"CreateNotUTF8", "POST", versionPath, "{\"algorithm\":\"\xff\"}", 400, "M_NOT_JSON"},
		{"CreateEmpty", "POST", versionPath, `{}`, 400, "M_MISSING_PARAM"},
		{"CreateNoAuthData", "POST", versionPath, `{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2"}`, 400, "M_MISSING_PARAM"},
		{"CreateAlgorithmNumber", "POST", versionPath, `{"algorithm":5,"auth_data":{}}`, 400, "M_BAD_JSON"},
		{"CreateAuthDataString", "POST", versionPath, `{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2","auth_data":"opaque"}`, 400, "M_BAD_JSON"},
		{"CreateNoPublicKey", "POST", versionPath, `{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2","auth_data":{"signatures":{}}}`, 400, "M_INVALID_PARAM"},
		{"UpdateNoAlgorithm", "PUT", versionPath + "/" + v, `{"auth_data":{"public_key":"k"}}`, 400, "M_MISSING_PARAM"},
		{"UpdateVersionNumber", "PUT", versionPath + "/" + v, `{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2","auth_data":{"public_key":"k"},"version":1}`, 400, "M_BAD_JSON"},

		{"PutNotJSON", "PUT", keysURL(version, "", ""), `rooms`, 400, "M_NOT_JSON"},
		{"PutNoRooms", "PUT", keysURL(version, "", ""), `{}`, 400, "M_MISSING_PARAM"},
		{"PutRoomsArray", "PUT", keysURL(version, "", ""), `{"rooms":[]}`, 400, "M_BAD_JSON"},
		{"PutNoSessions", "PUT", keysURL(version, "", ""), `{"rooms":{"!r:example.org":{}}}`, 400, "M_MISSING_PARAM"},
		{"PutRoomNoSessions", "PUT", keysURL(version, "!r:example.org", ""), `{"session":{}}`, 400, "M_MISSING_PARAM"},
		{"PutNotARoomID", "PUT", keysURL(version, "", ""), `{"rooms":{"#alias:example.org":{"sessions":{"s":` + good + `}}}}`, 400, "M_INVALID_PARAM"},
		{"PutLongSessionID", "PUT", keysURL(version, "", ""), `{"rooms":{"!r:example.org":{"sessions":{"` + strings.Repeat("s", 256) + `":` + good + `}}}}`, 400, "M_INVALID_PARAM"},
		{"PutPathNotARoomID", "PUT", keysURL(version, "room", "s"), good, 400, "M_INVALID_PARAM"},
		{"PutNoVersion", "PUT", keysURL("", "", ""), session(good), 400, "M_MISSING_PARAM"},
		{"PutNoIsVerified", "PUT", keysURL(version, "", ""), session(`{"first_message_index":0,"forwarded_count":0,"session_data":{}}`), 400, "M_MISSING_PARAM"},
		{"PutNoFirstIndex", "PUT", keysURL(version, "", ""), session(`{"forwarded_count":0,"is_verified":true,"session_data":{}}`), 400, "M_MISSING_PARAM"},
		{"PutNoForwarded", "PUT", keysURL(version, "", ""), session(`{"first_message_index":0,"is_verified":true,"session_data":{}}`), 400, "M_MISSING_PARAM"},
		{"PutNullSessionData", "PUT", keysURL(version, "", ""), session(`{"first_message_index":0,"forwarded_count":0,"is_verified":true,"session_data":null}`), 400, "M_MISSING_PARAM"},
		{"PutIsVerifiedString", "PUT", keysURL(version, "", ""), session(`{"first_message_index":0,"forwarded_count":0,"is_verified":"true","session_data":{}}`), 400, "M_BAD_JSON"},
		{"PutFirstIndexString", "PUT", keysURL(version, "", ""), session(`{"first_message_index":"0","forwarded_count":0,"is_verified":true,"session_data":{}}`), 400, "M_BAD_JSON"},
		{"PutFirstIndexFraction", "PUT", keysURL(version, "", ""), session(`{"first_message_index":1.5,"forwarded_count":0,"is_verified":true,"session_data":{}}`), 400, "M_BAD_JSON"},
		{"PutFirstIndexNegative", "PUT", keysURL(version, "", ""), session(`{"first_message_index":-1,"forwarded_count":0,"is_verified":true,"session_data":{}}`), 400, "M_INVALID_PARAM"},
		{"PutForwardedHuge", "PUT", keysURL(version, "", ""), session(`{"first_message_index":0,"forwarded_count":9007199254740992,"is_verified":true,"session_data":{}}`), 400, "M_INVALID_PARAM"},
		{"PutSessionDataString", "PUT", keysURL(version, "", ""), session(`{"first_message_index":0,"forwarded_count":0,"is_verified":true,"session_data":"c2Vzc2lvbg"}`), 400, "M_BAD_JSON"},
		{"PutOneBadAmongGood", "PUT", keysURL(version, "", ""), `{"rooms":{"!a:example.org":{"sessions":{"s":` + good + `}},"!b:example.org":{"sessions":{"s":{"is_verified":1}}}}}`, 400, "M_BAD_JSON"},
		{"PutOverBodyLimit", "PUT", keysURL(version, "", ""), session(`{"first_message_index":0,"forwarded_count":0,"is_verified":true,"session_data":{"ciphertext":"` + strings.Repeat("A", 1<<20) + `"}}`), 413, "M_TOO_LARGE"},

		{"GetNoVersion", "GET", keysURL("", "", ""), "", 400, "M_MISSING_PARAM"},
		{"GetPathNotARoomID", "GET", keysURL(version, "@alice:example.org", ""), "", 400, "M_INVALID_PARAM"},
		{"DeleteNoVersion", "DELETE", keysURL("", "!r:example.org", "s"), "", 400, "M_MISSING_PARAM"},
		{"Unrecognized", "POST", keysURL(version, "", ""), good, 405, "M_UNRECOGNIZED"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body any
			if tc.body != "" {
				body = tc.body
			}
			wantError(t, tc.method+" "+tc.path, st.Do(t, tc.method, tc.path, au.AccessToken, body), tc.status, tc.errcode)
		})
	}
	t.Run("NoToken", func(t *testing.T) {
		wantError(t, "no token", st.Do(t, "GET", versionPath, "", nil), 401, "M_MISSING_TOKEN")
		wantError(t, "no token", st.Do(t, "PUT", keysURL(version, "", ""), "", session(good)), 401, "M_MISSING_TOKEN")
	})
	info := st.Do(t, "GET", versionPath+"/"+v, au.AccessToken, nil)
	if info.Body["count"] != 0.0 || info.Body["etag"] != "0" {
		t.Errorf("after refused requests the version is %s; want it untouched", info.Raw)
	}
	if r := st.Do(t, "GET", versionPath, au.AccessToken, nil); r.Body["version"] != v {
		t.Errorf("current version %v after refused creates, want %s", r.Body["version"], v)
	}
}

// TestKeys_TooLarge: with a body limit above DynamoDB's item size, a
// session whose key would not fit in one item is refused with M_TOO_LARGE,
// before anything is written; a large one that fits is stored.
func TestKeys_TooLarge(t *testing.T) {
	st := servertest.Start(t, "CIRRUS_MAX_REQUEST_SIZE=2000000")
	au := st.Register(t, "alice")
	version, _ := newBackup(t, st.Client(t, au))
	body := func(size int) string {
		return `{"rooms":{"!r:example.org":{"sessions":{"small":{"first_message_index":0,"forwarded_count":0,"is_verified":false,"session_data":{}},` +
			`"big":{"first_message_index":0,"forwarded_count":0,"is_verified":false,"session_data":{"ciphertext":"` + strings.Repeat("A", size) + `"}}}}}}`
	}
	wantError(t, "a 500 KB key", st.Do(t, "PUT", keysURL(version, "", ""), au.AccessToken, body(500_000)), http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	if _, count := status(t, st.Do(t, "GET", versionPath+"/"+string(version), au.AccessToken, nil)); count != 0 {
		t.Errorf("count %d after a refused upload", count)
	}
	if _, count := status(t, st.Do(t, "PUT", keysURL(version, "", ""), au.AccessToken, body(300_000))); count != 2 {
		t.Errorf("count %d after a 300 KB key and a small one", count)
	}
	wantError(t, "a 500 KB auth_data", st.Do(t, "POST", versionPath, au.AccessToken,
		`{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2","auth_data":{"public_key":"`+strings.Repeat("k", 500_000)+`"}}`),
		http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
}

// TestKeys_RoomIDsThatLookLikeKeys: room IDs holding the sort key's
// separator or its escape stay apart from each other and from room IDs
// they begin with.
func TestKeys_RoomIDsThatLookLikeKeys(t *testing.T) {
	st := servertest.Start(t)
	au := st.Register(t, "alice")
	version, _ := newBackup(t, st.Client(t, au))
	rooms := []string{"!a:example.org", "!a:example.org|x", "!a:example.org%7Cx", "!a:example.org%", "!a:example.org|"}
	for i, room := range rooms {
		status(t, put(t, st, au, version, room, "s", key(false, i, 0, room)))
	}
	for _, room := range rooms {
		got := sessionsOf(t, st.Do(t, "GET", keysURL(version, room, ""), au.AccessToken, nil))
		k, _ := got["s"].(map[string]any)
		if len(got) != 1 || tagOf(t, k) != room {
			t.Errorf("keys of %q: %v", room, got)
		}
	}
	all := st.Do(t, "GET", keysURL(version, "", ""), au.AccessToken, nil)
	byRoom, _ := all.Body["rooms"].(map[string]any)
	for _, room := range rooms {
		if _, ok := byRoom[room]; !ok {
			t.Errorf("all keys lack room %q: %s", room, all.Raw)
		}
	}
	if _, count := status(t, st.Do(t, "DELETE", keysURL(version, rooms[1], ""), au.AccessToken, nil)); count != len(rooms)-1 {
		t.Errorf("deleting the keys of %q left %d of %d", rooms[1], count, len(rooms))
	}
}
