package keybackup_test

import (
	"fmt"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestCosts pins what docs/storage.md gives for key backup: reads and
// writes per endpoint, with session keys of Element's size (about 1 KB an
// item: a 700-character ciphertext).
func TestCosts(t *testing.T) {
	st := servertest.Start(t)
	au := st.Register(t, "alice")
	alice := st.Client(t, au)

	want := servertest.Want
	check := func(what, route string, w servertest.Cost) {
		t.Helper()
		st.CheckCost(t, what, route, w)
	}
	const room = "!Kd3dhYWQ5ZTg2NTI0ZjJmYTYxZGI1OWU2NTc1NzE0M2QwYjE"
	real := func(i int) mautrix.ReqKeyBackupData {
		k := key(false, i, 0, strings.Repeat("c", 700))
		k.SessionData = []byte(fmt.Sprintf(`{"ciphertext":%q,"ephemeral":%q,"mac":"T7xq9qHm4Js"}`, strings.Repeat("c", 700), strings.Repeat("e", 43)))
		return k
	}
	sessionID := func(i int) id.SessionID { return id.SessionID(fmt.Sprintf("%043d", i)) }
	upload := func(version id.KeyBackupVersion, from, n int) {
		t.Helper()
		rk := mautrix.ReqRoomKeyBackup{Sessions: map[id.SessionID]mautrix.ReqKeyBackupData{}}
		for i := from; i < from+n; i++ {
			rk.Sessions[sessionID(i)] = real(5)
		}
		if _, err := alice.PutKeysInBackupForRoom(bg, version, room, &rk); err != nil {
			t.Fatal(err)
		}
	}

	// auth; the versions' Query; PutItem of the version.
	newBackup(t, alice)
	check("create the first version", "/room_keys/version", want(3, 2, 1))
	// The new version and the old one's rev, in one transaction.
	newBackup(t, alice)
	check("create with a current version", "/room_keys/version", want(3, 2, 4))
	if err := alice.DeleteKeyBackupVersion(bg, "2"); err != nil {
		t.Fatal(err)
	}
	// auth; GetItem and PutIf of the version; the Query of its keys.
	check("delete an empty version", "/room_keys/version/", want(4, 3, 1))
	if _, err := alice.GetKeyBackupLatestVersion(bg); err != nil {
		t.Fatal(err)
	}
	check("current version", "/room_keys/version", want(2, 2, 0))

	st.Do(t, "GET", versionPath+"/1", au.AccessToken, nil)
	check("a version by ID", "/room_keys/version/", want(2, 2, 0))
	st.Do(t, "PUT", versionPath+"/1", au.AccessToken, map[string]any{
		"algorithm": id.KeyBackupAlgorithmMegolmBackupV1, "auth_data": map[string]any{"public_key": "k"}})
	check("update auth_data", "/room_keys/version/", want(3, 2, 1))

	k := real(5)
	if _, err := alice.PutKeysInBackupForRoomAndSession(bg, "1", room, sessionID(0), &k); err != nil {
		t.Fatal(err)
	}
	// auth; Query; BatchGetItem; the key and the version item in a
	// transaction, 2 WCU each.
	check("put one new key", "/room_keys/keys/", want(4, 3, 4))
	if _, err := alice.PutKeysInBackupForRoomAndSession(bg, "1", room, sessionID(0), &k); err != nil {
		t.Fatal(err)
	}
	check("put one key, not better", "/room_keys/keys/", want(3, 3, 0))
	better := real(1)
	if _, err := alice.PutKeysInBackupForRoomAndSession(bg, "1", room, sessionID(0), &better); err != nil {
		t.Fatal(err)
	}
	check("put one better key", "/room_keys/keys/", want(4, 3, 4))
	// A missing key read costs 1 RCU; 99 keys and the version item fill
	// one transaction, 100 need two.
	upload("1", 1, 99)
	check("put 99 new keys", "/room_keys/keys/", want(4, 101, 200))
	upload("1", 100, 100)
	check("put 100 new keys", "/room_keys/keys/", want(6, 102, 204))
	upload("1", 0, 200)
	check("put 200 keys, none better", "/room_keys/keys/", want(5, 202, 0))

	st.Do(t, "GET", keysURL("1", room, string(sessionID(3))), au.AccessToken, nil)
	// The version item and the key in one BatchGetItem.
	check("get one key", "/room_keys/keys/", want(2, 3, 0))
	st.Do(t, "GET", keysURL("1", room, ""), au.AccessToken, nil)
	// 200 KB of keys in one Query: 1 RCU per 4 KB.
	check("get a room of 200 keys", "/room_keys/keys/", want(3, 49, 0))
	st.Do(t, "DELETE", keysURL("1", room, string(sessionID(3))), au.AccessToken, nil)
	check("delete one key", "/room_keys/keys/", want(4, 3, 4))
	newBackup(t, alice)
	st.Do(t, "PUT", keysURL("1", room, "s"), au.AccessToken, k)
	check("put to an old version", "/room_keys/keys/", want(3, 3, 0))
	st.Do(t, "DELETE", keysURL("1", room, ""), au.AccessToken, nil)
	// Three transactions: 2 WCU per key and per version item.
	check("delete a room of 199 keys", "/room_keys/keys/", want(6, 48, 404))
	upload("3", 0, 199)
	if err := alice.DeleteKeyBackupVersion(bg, "3"); err != nil {
		t.Fatal(err)
	}
	// The PutIf of the version, then a Query and 8 BatchWriteItems of
	// tombstones: 1 WCU per key.
	check("delete a version of 199 keys", "/room_keys/version/", want(12, 48, 200))
}
