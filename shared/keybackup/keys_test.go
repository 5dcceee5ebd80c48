package keybackup_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/backup"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// TestKeys_RoundTrip backs up real encrypted session keys with mautrix's
// backup code, through each shape of PUT, reads them back through each
// shape of GET, and decrypts them: the server keeps session_data byte for
// byte. Session IDs are base64 and may hold '/' and '+'.
func TestKeys_RoundTrip(t *testing.T) {
	st := servertest.Start(t)
	au := st.Register(t, "alice")
	alice := st.Client(t, au)
	version, bk := newBackup(t, alice)

	rooms := []id.RoomID{"!one:example.org", "!Kd3dhYWQ5ZTg2NTI0ZjJmYTYxZGI1OWU2NTc"}
	sessions := []id.SessionID{"4a/b+c9kPrtDLxnU2Y3Z6K8ZbqQd0ZJ7A2J6vZGzQ0c", "plain"}
	encrypt := func(room id.RoomID, session id.SessionID) mautrix.ReqKeyBackupData {
		t.Helper()
		data, err := backup.EncryptSessionData(bk, backup.MegolmSessionData{
			Algorithm: id.AlgorithmMegolmV1, SenderKey: "sender+key", SessionKey: "export of " + string(session) + " in " + string(room),
			SenderClaimedKeys: backup.SenderClaimedKeys{Ed25519: "claimed"}, ForwardingKeyChain: []string{},
		})
		if err != nil {
			t.Fatal(err)
		}
		doc, err := json.Marshal(data)
		if err != nil {
			t.Fatal(err)
		}
		return mautrix.ReqKeyBackupData{FirstMessageIndex: 0, IsVerified: true, SessionData: doc}
	}

	// One request per shape of PUT: all rooms, one room, one session.
	resp, err := alice.PutKeysInBackup(bg, version, &mautrix.ReqKeyBackup{Rooms: map[id.RoomID]mautrix.ReqRoomKeyBackup{
		rooms[0]: {Sessions: map[id.SessionID]mautrix.ReqKeyBackupData{sessions[0]: encrypt(rooms[0], sessions[0])}},
	}})
	if err != nil || resp.Count != 1 {
		t.Fatalf("put all rooms: %+v, %v", resp, err)
	}
	resp, err = alice.PutKeysInBackupForRoom(bg, version, rooms[0], &mautrix.ReqRoomKeyBackup{
		Sessions: map[id.SessionID]mautrix.ReqKeyBackupData{sessions[1]: encrypt(rooms[0], sessions[1])}})
	if err != nil || resp.Count != 2 {
		t.Fatalf("put one room: %+v, %v", resp, err)
	}
	for _, s := range sessions {
		d := encrypt(rooms[1], s)
		resp, err = alice.PutKeysInBackupForRoomAndSession(bg, version, rooms[1], s, &d)
		if err != nil {
			t.Fatalf("put session %s: %v", s, err)
		}
	}
	if resp.Count != 4 {
		t.Fatalf("count %d after four sessions", resp.Count)
	}

	decrypt := func(where string, d backup.EncryptedSessionData[backup.MegolmSessionData], room id.RoomID, session id.SessionID) {
		t.Helper()
		plain, err := d.Decrypt(bk)
		if err != nil {
			t.Fatalf("%s: decrypt %s of %s: %v", where, session, room, err)
		}
		if want := "export of " + string(session) + " in " + string(room); plain.SessionKey != want {
			t.Errorf("%s: session key %q, want %q", where, plain.SessionKey, want)
		}
	}
	all, err := alice.GetKeyBackup(bg, version)
	if err != nil {
		t.Fatal(err)
	}
	for _, room := range rooms {
		if n := len(all.Rooms[room].Sessions); n != 2 {
			t.Errorf("all keys: %d sessions in %s, want 2", n, room)
		}
		for _, s := range sessions {
			k := all.Rooms[room].Sessions[s]
			if !k.IsVerified || k.FirstMessageIndex != 0 {
				t.Errorf("all keys: %s of %s: %+v", s, room, k)
			}
			decrypt("all keys", k.SessionData, room, s)
		}
	}
	one, err := alice.GetKeyBackupForRoom(bg, version, rooms[1])
	if err != nil || len(one.Sessions) != 2 {
		t.Fatalf("keys of a room: %+v, %v", one, err)
	}
	decrypt("keys of a room", one.Sessions[sessions[0]].SessionData, rooms[1], sessions[0])
	k, err := alice.GetKeyBackupForRoomAndSession(bg, version, rooms[0], sessions[0])
	if err != nil {
		t.Fatal(err)
	}
	decrypt("one key", k.SessionData, rooms[0], sessions[0])

	// The spec and Synapse: an empty room is {"sessions": {}}; a missing
	// session is 404.
	r := st.Do(t, "GET", keysURL(version, "!nokeys:example.org", ""), au.AccessToken, nil)
	if r.Status != http.StatusOK || string(r.Raw) != `{"sessions":{}}` {
		t.Errorf("keys of a room without any: %d %s", r.Status, r.Raw)
	}
	wantError(t, "a session not backed up", st.Do(t, "GET", keysURL(version, string(rooms[0]), "nosuch"), au.AccessToken, nil),
		http.StatusNotFound, "M_NOT_FOUND")
	v2, _ := newBackup(t, alice)
	if r := st.Do(t, "GET", keysURL(v2, "", ""), au.AccessToken, nil); r.Status != http.StatusOK || string(r.Raw) != `{"rooms":{}}` {
		t.Errorf("keys of an empty version: %d %s", r.Status, r.Raw)
	}
	// Another user's version of the same number is another backup.
	bu := st.Register(t, "bob")
	bob := st.Client(t, bu)
	newBackup(t, bob)
	if r := st.Do(t, "GET", keysURL("1", "", ""), bu.AccessToken, nil); r.Status != http.StatusOK || string(r.Raw) != `{"rooms":{}}` {
		t.Errorf("bob's version 1: %d %s", r.Status, r.Raw)
	}
}

// TestKeys_Replacement checks each step of the spec's rule for a key
// uploaded over a stored one: is_verified first, then the lower
// first_message_index, then the lower forwarded_count. Two cases are where
// Synapse's reading of the rule differs from the spec's text; the spec's
// wins here.
func TestKeys_Replacement(t *testing.T) {
	st := servertest.Start(t)
	au := st.Register(t, "alice")
	version, _ := newBackup(t, st.Client(t, au))
	const room = "!room:example.org"

	type q struct {
		verified          bool
		firstIndex, fwded int
	}
	cases := []struct {
		name          string
		stored, cand  q
		wantReplaced  bool
		synapseDiffer bool
	}{
		{name: "VerifiedBeatsUnverified", stored: q{false, 0, 0}, cand: q{true, 10, 10}, wantReplaced: true},
		{name: "UnverifiedNeverReplacesVerified", stored: q{true, 10, 10}, cand: q{false, 0, 0}, synapseDiffer: true},
		{name: "LowerFirstIndex", stored: q{false, 5, 0}, cand: q{false, 3, 9}, wantReplaced: true},
		{name: "HigherFirstIndex", stored: q{true, 3, 0}, cand: q{true, 5, 0}},
		{name: "LowerForwardedAtSameIndex", stored: q{true, 2, 2}, cand: q{true, 2, 1}, wantReplaced: true},
		{name: "HigherForwardedAtSameIndex", stored: q{false, 2, 1}, cand: q{false, 2, 3}},
		{name: "ForwardedOnlyBreaksTies", stored: q{false, 1, 5}, cand: q{false, 2, 0}, synapseDiffer: true},
		{name: "EqualKeepsStored", stored: q{false, 1, 1}, cand: q{false, 1, 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			session := tc.name
			put(t, st, au, version, room, session, key(tc.stored.verified, tc.stored.firstIndex, tc.stored.fwded, "stored"))
			etag0, count0 := status(t, put(t, st, au, version, room, session,
				key(tc.stored.verified, tc.stored.firstIndex, tc.stored.fwded, "stored again")))
			etag, count := status(t, put(t, st, au, version, room, session, key(tc.cand.verified, tc.cand.firstIndex, tc.cand.fwded, "candidate")))
			r := st.Do(t, "GET", keysURL(version, room, session), au.AccessToken, nil)
			want := "stored"
			if tc.wantReplaced {
				want = "candidate"
			}
			if got := tagOf(t, r.Body); got != want {
				note := ""
				if tc.synapseDiffer {
					note = "; Synapse's reading of the rule would keep it, the spec's does not"
				}
				t.Errorf("kept %q, want %q (stored %+v, uploaded %+v)%s", got, want, tc.stored, tc.cand, note)
			}
			if count != count0 {
				t.Errorf("count went from %d to %d on a session already stored", count0, count)
			}
			if (etag != etag0) != tc.wantReplaced {
				t.Errorf("etag %q -> %q; it should change only when a key is replaced", etag0, etag)
			}
			if q, _ := r.Body["first_message_index"].(float64); tc.wantReplaced && int(q) != tc.cand.firstIndex {
				t.Errorf("first_message_index %v, want the candidate's %d", r.Body["first_message_index"], tc.cand.firstIndex)
			}
		})
	}
}

// TestKeys_WrongVersion: keys are written to the current version only;
// older versions answer M_WRONG_ROOM_KEYS_VERSION with the current one,
// unknown ones M_NOT_FOUND; reads and deletes take any live version.
func TestKeys_WrongVersion(t *testing.T) {
	st := servertest.Start(t)
	au := st.Register(t, "alice")
	alice := st.Client(t, au)
	const room = "!room:example.org"
	k := key(false, 0, 0, "k")

	wantError(t, "put with no backup", put(t, st, au, "1", room, "s", k), http.StatusNotFound, "M_NOT_FOUND")
	v1, _ := newBackup(t, alice)
	status(t, put(t, st, au, v1, room, "s", k))
	v2, _ := newBackup(t, alice)

	r := put(t, st, au, v1, room, "s2", k)
	wantError(t, "put to the old version", r, http.StatusForbidden, "M_WRONG_ROOM_KEYS_VERSION")
	if r.Body["current_version"] != string(v2) {
		t.Errorf("current_version %v, want %s", r.Body["current_version"], v2)
	}
	_, err := alice.PutKeysInBackup(bg, v1, &mautrix.ReqKeyBackup{Rooms: map[id.RoomID]mautrix.ReqRoomKeyBackup{}})
	wantHTTPError(t, "mautrix put to the old version", err, http.StatusForbidden, "M_WRONG_ROOM_KEYS_VERSION")
	for _, v := range []id.KeyBackupVersion{"3", "abc", "-1", "01"} {
		wantError(t, "put to version "+string(v), put(t, st, au, v, room, "s", k), http.StatusNotFound, "M_NOT_FOUND")
		wantError(t, "get of version "+string(v), st.Do(t, "GET", keysURL(v, "", ""), au.AccessToken, nil), http.StatusNotFound, "M_NOT_FOUND")
		wantError(t, "get of a session of version "+string(v), st.Do(t, "GET", keysURL(v, room, "s"), au.AccessToken, nil), http.StatusNotFound, "M_NOT_FOUND")
		wantError(t, "delete from version "+string(v), st.Do(t, "DELETE", keysURL(v, "", ""), au.AccessToken, nil), http.StatusNotFound, "M_NOT_FOUND")
	}

	// The old version stays readable, and its keys can be deleted.
	if r := st.Do(t, "GET", keysURL(v1, room, "s"), au.AccessToken, nil); r.Status != http.StatusOK || tagOf(t, r.Body) != "k" {
		t.Errorf("key in the old version: %d %s", r.Status, r.Raw)
	}
	if _, count := status(t, st.Do(t, "DELETE", keysURL(v1, room, "s"), au.AccessToken, nil)); count != 0 {
		t.Errorf("old version's count after delete: %d", count)
	}

	// With version 2 deleted, version 1 is the current one again.
	if err := alice.DeleteKeyBackupVersion(bg, v2); err != nil {
		t.Fatal(err)
	}
	wantError(t, "put to the deleted version", put(t, st, au, v2, room, "s", k), http.StatusNotFound, "M_NOT_FOUND")
	if _, count := status(t, put(t, st, au, v1, room, "s3", k)); count != 1 {
		t.Errorf("count of version 1 after a put: %d", count)
	}
}

// TestKeys_CountAndETag follows count and etag through new keys,
// replacements, keys kept, and each shape of DELETE.
func TestKeys_CountAndETag(t *testing.T) {
	st := servertest.Start(t)
	au := st.Register(t, "alice")
	alice := st.Client(t, au)
	version, _ := newBackup(t, alice)
	const a, b = "!a:example.org", "!b:example.org"
	upload := func(rooms map[string][]string, k mautrix.ReqKeyBackupData) (string, int) {
		t.Helper()
		req := &mautrix.ReqKeyBackup{Rooms: map[id.RoomID]mautrix.ReqRoomKeyBackup{}}
		for room, sessions := range rooms {
			rk := mautrix.ReqRoomKeyBackup{Sessions: map[id.SessionID]mautrix.ReqKeyBackupData{}}
			for _, s := range sessions {
				rk.Sessions[id.SessionID(s)] = k
			}
			req.Rooms[id.RoomID(room)] = rk
		}
		resp, err := alice.PutKeysInBackup(bg, version, req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.ETag, resp.Count
	}
	check := func(what string, gotETag string, gotCount int, etagChanged bool, prevETag string, wantCount int) {
		t.Helper()
		if gotCount != wantCount || (gotETag != prevETag) != etagChanged {
			t.Errorf("%s: etag %q (before %q), count %d; want count %d, etag changed: %v", what, gotETag, prevETag, gotCount, wantCount, etagChanged)
		}
		info, err := alice.GetKeyBackupVersion(bg, version)
		if err != nil || info.Count != gotCount || info.ETag != gotETag {
			t.Errorf("%s: GET version says %+v, %v; the change said etag %q, count %d", what, info, err, gotETag, gotCount)
		}
	}

	e0 := "0"
	e1, n := upload(map[string][]string{a: {"a1", "a2"}, b: {"b1"}}, key(false, 5, 0, "first"))
	check("three new keys", e1, n, true, e0, 3)
	e2, n := upload(map[string][]string{a: {"a1", "a2"}, b: {"b1"}}, key(false, 5, 0, "same again"))
	check("the same keys again", e2, n, false, e1, 3)
	e3, n := upload(map[string][]string{a: {"a1"}}, key(false, 1, 0, "better"))
	check("one better key", e3, n, true, e2, 3)
	e4, n := upload(map[string][]string{a: {"a1", "a3"}, b: {"b2"}}, key(false, 1, 0, "better"))
	check("two new keys and one equal", e4, n, true, e3, 5)

	del := func(room, session string) (string, int) {
		t.Helper()
		return status(t, st.Do(t, "DELETE", keysURL(version, room, session), au.AccessToken, nil))
	}
	e5, n := del(a, "a2")
	check("delete a session", e5, n, true, e4, 4)
	e6, n := del(a, "nosuch")
	check("delete a session not there", e6, n, false, e5, 4)
	e7, n := del("!empty:example.org", "")
	check("delete a room without keys", e7, n, false, e6, 4)
	e8, n := del(a, "")
	check("delete a room", e8, n, true, e7, 2)
	resp, err := alice.DeleteKeyBackup(bg, version)
	if err != nil {
		t.Fatal(err)
	}
	check("delete all", resp.ETag, resp.Count, true, e8, 0)
	if r := st.Do(t, "GET", keysURL(version, "", ""), au.AccessToken, nil); string(r.Raw) != `{"rooms":{}}` {
		t.Errorf("keys after deleting all: %s", r.Raw)
	}
	e9, n := upload(map[string][]string{b: {"b1"}}, key(false, 5, 0, "back"))
	check("a key again after deleting all", e9, n, true, resp.ETag, 1)
}

// TestDeleteVersion_DeletesKeys: deleting a version takes its keys with
// it, from the API and from the table, however many transactions they took
// to write.
func TestDeleteVersion_DeletesKeys(t *testing.T) {
	st := servertest.Start(t)
	au := st.Register(t, "alice")
	alice := st.Client(t, au)
	version, _ := newBackup(t, alice)
	req := &mautrix.ReqKeyBackup{Rooms: map[id.RoomID]mautrix.ReqRoomKeyBackup{}}
	for r := range 3 {
		rk := mautrix.ReqRoomKeyBackup{Sessions: map[id.SessionID]mautrix.ReqKeyBackupData{}}
		for s := range 50 {
			rk.Sessions[id.SessionID(fmt.Sprintf("s%d", s))] = key(true, 0, 0, "k")
		}
		req.Rooms[id.RoomID(fmt.Sprintf("!r%d:example.org", r))] = rk
	}
	resp, err := alice.PutKeysInBackup(bg, version, req)
	if err != nil || resp.Count != 150 {
		t.Fatalf("put: %+v, %v", resp, err)
	}
	if err := alice.DeleteKeyBackupVersion(bg, version); err != nil {
		t.Fatal(err)
	}
	wantError(t, "keys of the deleted version", st.Do(t, "GET", keysURL(version, "", ""), au.AccessToken, nil), http.StatusNotFound, "M_NOT_FOUND")
	wantError(t, "a key of the deleted version", st.Do(t, "GET", keysURL(version, "!r0:example.org", "s0"), au.AccessToken, nil), http.StatusNotFound, "M_NOT_FOUND")
	// docs/storage.md: the keys' partition is backupkeys|<user>|<version>.
	var left []store.Key
	if _, err := st.Server.Store.QueryPage(context.Background(), store.Query{PK: "backupkeys|" + au.ID + "|" + string(version)}, &left); err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("%d keys left in the table after deleting their version", len(left))
	}
}

// TestKeys_Concurrent: devices of one user upload overlapping keys at
// once, through two server instances on one table, as two Lambda instances
// would: count stays exact and each session keeps its best key.
func TestKeys_Concurrent(t *testing.T) {
	st := servertest.Start(t)
	twin := st.Twin(t)
	au := st.Register(t, "alice")
	version, _ := newBackup(t, st.Client(t, au))
	const room = "!busy:example.org"
	const devices, batches, perBatch, pool = 6, 3, 40, 150

	// Device d's batch b holds sessions (d*37 + b*41 + i) mod pool, with a
	// first_message_index unique to the upload, so the best key of each
	// session is known.
	want := map[string]int{}
	batch := func(d, b int) mautrix.ReqRoomKeyBackup {
		rk := mautrix.ReqRoomKeyBackup{Sessions: map[id.SessionID]mautrix.ReqKeyBackupData{}}
		index := 1 + d*batches + b
		for i := range perBatch {
			s := fmt.Sprintf("s%03d", (d*37+b*41+i)%pool)
			rk.Sessions[id.SessionID(s)] = key(false, index, 0, fmt.Sprint(index))
		}
		return rk
	}
	for d := range devices {
		for b := range batches {
			for s, k := range batch(d, b).Sessions {
				if cur, ok := want[string(s)]; !ok || k.FirstMessageIndex < cur {
					want[string(s)] = k.FirstMessageIndex
				}
			}
		}
	}

	var wg sync.WaitGroup
	start := make(chan struct{})
	for d := range devices {
		on := st
		if d%2 == 1 {
			on = twin
		}
		c := on.Client(t, login(t, st, au))
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for b := range batches {
				rk := batch(d, b)
				if _, err := c.PutKeysInBackupForRoom(bg, version, room, &rk); err != nil {
					t.Errorf("device %d batch %d: %v", d, b, err)
				}
			}
		}()
	}
	close(start)
	wg.Wait()

	info, err := st.Client(t, au).GetKeyBackupVersion(bg, version)
	if err != nil {
		t.Fatal(err)
	}
	got := sessionsOf(t, st.Do(t, "GET", keysURL(version, room, ""), au.AccessToken, nil))
	if info.Count != len(want) || len(got) != len(want) {
		t.Errorf("count %d, %d sessions stored; %d distinct sessions were uploaded", info.Count, len(got), len(want))
	}
	for s, index := range want {
		k, _ := got[s].(map[string]any)
		if tag := tagOf(t, k); tag != fmt.Sprint(index) {
			t.Errorf("session %s kept the key of upload %s, want the best uploaded, %d", s, tag, index)
		}
	}
}

// TestKeys_LargeUpload: a thousand sessions in one PUT (a client importing
// keys) land in transactions of 99 with the version item, and go again in
// as many on DELETE.
func TestKeys_LargeUpload(t *testing.T) {
	st := servertest.Start(t)
	au := st.Register(t, "alice")
	alice := st.Client(t, au)
	version, _ := newBackup(t, alice)
	req := &mautrix.ReqKeyBackup{Rooms: map[id.RoomID]mautrix.ReqRoomKeyBackup{}}
	for r := range 10 {
		rk := mautrix.ReqRoomKeyBackup{Sessions: map[id.SessionID]mautrix.ReqKeyBackupData{}}
		for s := range 100 {
			rk.Sessions[id.SessionID(fmt.Sprintf("%s%03d", strings.Repeat("x", 40), s))] = key(true, s, 0, strings.Repeat("c", 200))
		}
		req.Rooms[id.RoomID(fmt.Sprintf("!room%d:example.org", r))] = rk
	}
	resp, err := alice.PutKeysInBackup(bg, version, req)
	if err != nil || resp.Count != 1000 {
		t.Fatalf("put of 1000: %+v, %v", resp, err)
	}
	// auth, the versions' Query, then per 99 keys a BatchGetItem and a
	// TransactWriteItems: 11 of each.
	if u := st.LastRequestTo(t, "/room_keys/keys").DynamoDB; u.Calls != 2+2*11 {
		t.Errorf("put of 1000 made %d DynamoDB calls, want %d", u.Calls, 2+2*11)
	}
	r := st.Do(t, "GET", keysURL(version, "", ""), au.AccessToken, nil)
	rooms, _ := r.Body["rooms"].(map[string]any)
	n := 0
	for _, rk := range rooms {
		n += len(rk.(map[string]any)["sessions"].(map[string]any))
	}
	if n != 1000 {
		t.Errorf("GET of all keys gave %d", n)
	}
	del, err := alice.DeleteKeyBackup(bg, version)
	if err != nil || del.Count != 0 {
		t.Fatalf("delete of all: %+v, %v", del, err)
	}
}
