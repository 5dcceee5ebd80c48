package accountdata_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/accountdata"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

func globalPath(userID, typ string) string {
	return "/_matrix/client/v3/user/" + url.PathEscape(userID) + "/account_data/" + url.PathEscape(typ)
}

func roomPath(userID, roomID, typ string) string {
	return "/_matrix/client/v3/user/" + url.PathEscape(userID) + "/rooms/" + url.PathEscape(roomID) + "/account_data/" + url.PathEscape(typ)
}

func expect(t *testing.T, r servertest.Reply, status int, errcode string) {
	t.Helper()
	if r.Status != status || (errcode != "" && r.Body["errcode"] != errcode) {
		t.Fatalf("got %d %s, want %d %s", r.Status, r.Raw, status, errcode)
	}
}

func TestSortKey(t *testing.T) {
	for _, tc := range []struct{ room, typ, want string }{
		{"", "m.direct", "account_data||m.direct"},
		{"!abc:example.org", "m.tag", "account_data|!abc:example.org|m.tag"},
		{"!a|b:x", "t", "account_data|!a%7Cb:x|t"},
		{"!a%7Cb:x", "t", "account_data|!a%257Cb:x|t"},
		{"!a", "b:x|t", "account_data|!a|b:x|t"},
	} {
		if got := accountdata.SortKey(tc.room, tc.typ); got != tc.want {
			t.Errorf("SortKey(%q, %q) = %q, want %q", tc.room, tc.typ, got, tc.want)
		}
	}
	if !strings.HasPrefix(accountdata.SortKey("", "x"), accountdata.GlobalPrefix) ||
		!strings.HasPrefix(accountdata.SortKey("!r", "x"), accountdata.RoomsPrefix) ||
		strings.HasPrefix(accountdata.SortKey("!r", "x"), accountdata.GlobalPrefix) {
		t.Error("the prefixes do not split global from per-room data")
	}
}

// TestAccountData_HTTP drives both endpoints over HTTP through the real
// handler tree and store, with each error the spec names.
func TestAccountData_HTTP(t *testing.T) {
	st := servertest.Start(t)
	alice, bob := st.Register(t, "alice"), st.Register(t, "bob")
	const room = "!garden:example.org"

	t.Run("GlobalRoundTrip", func(t *testing.T) {
		body := `{ "theme": "dark", "n": 12345678901234567890, "nested": {"list": [1, 2.50, null, true]} }`
		expect(t, st.Do(t, "PUT", globalPath(alice.ID, "org.example.config"), alice.AccessToken, body), 200, "")
		// The token, the item, and the entry in the user's sync stream.
		if c := st.LastRequest(t).DynamoDB; c.Calls != 3 || c.ReadUnits != 1 || c.WriteUnits != 2 {
			t.Fatalf("PUT account data cost %+v, want 3 calls: 1 RCU, 2 WCU", c)
		}
		r := st.Do(t, "GET", globalPath(alice.ID, "org.example.config"), alice.AccessToken, nil)
		// The content comes back as sent, compacted: numbers keep their text.
		if want := `{"theme":"dark","n":12345678901234567890,"nested":{"list":[1,2.50,null,true]}}`; r.Status != 200 || string(r.Raw) != want {
			t.Fatalf("GET: %d %s, want %s", r.Status, r.Raw, want)
		}
		if c := st.LastRequest(t).DynamoDB; c.Calls != 2 || c.ReadUnits != 2 || c.WriteUnits != 0 {
			t.Fatalf("GET account data cost %+v, want 2 calls of 1 RCU", c)
		}
		expect(t, st.Do(t, "PUT", globalPath(alice.ID, "org.example.config"), alice.AccessToken, `{}`), 200, "")
		if r := st.Do(t, "GET", globalPath(alice.ID, "org.example.config"), alice.AccessToken, nil); string(r.Raw) != `{}` {
			t.Fatalf("after replacing with {}: %s", r.Raw)
		}
	})
	t.Run("RoomRoundTripWithoutFallback", func(t *testing.T) {
		expect(t, st.Do(t, "PUT", roomPath(alice.ID, room, "m.tag"), alice.AccessToken, `{"tags":{"u.work":{"order":0.5}}}`), 200, "")
		r := st.Do(t, "GET", roomPath(alice.ID, room, "m.tag"), alice.AccessToken, nil)
		if r.Status != 200 || string(r.Raw) != `{"tags":{"u.work":{"order":0.5}}}` {
			t.Fatalf("GET room data: %d %s", r.Status, r.Raw)
		}
		// Room data and global data are apart, both ways.
		expect(t, st.Do(t, "GET", globalPath(alice.ID, "m.tag"), alice.AccessToken, nil), 404, "M_NOT_FOUND")
		expect(t, st.Do(t, "GET", roomPath(alice.ID, room, "org.example.config"), alice.AccessToken, nil), 404, "M_NOT_FOUND")
		expect(t, st.Do(t, "GET", roomPath(alice.ID, "!other:example.org", "m.tag"), alice.AccessToken, nil), 404, "M_NOT_FOUND")
	})
	t.Run("AwkwardRoomIDsKeepApart", func(t *testing.T) {
		expect(t, st.Do(t, "PUT", roomPath(alice.ID, "!a|b:x", "t"), alice.AccessToken, `{"which":1}`), 200, "")
		expect(t, st.Do(t, "PUT", roomPath(alice.ID, "!a", "b:x|t"), alice.AccessToken, `{"which":2}`), 200, "")
		if r := st.Do(t, "GET", roomPath(alice.ID, "!a|b:x", "t"), alice.AccessToken, nil); string(r.Raw) != `{"which":1}` {
			t.Fatalf("room !a|b:x: %s", r.Raw)
		}
		if r := st.Do(t, "GET", roomPath(alice.ID, "!a", "b:x|t"), alice.AccessToken, nil); string(r.Raw) != `{"which":2}` {
			t.Fatalf("room !a: %s", r.Raw)
		}
	})

	big := `{"blob":"` + strings.Repeat("x", 500<<10) + `"}`
	for _, tc := range []struct {
		name, method, path, token string
		body                      any
		status                    int
		errcode                   string
	}{
		{"GetMissing", "GET", globalPath(alice.ID, "m.never_set"), alice.AccessToken, nil, 404, "M_NOT_FOUND"},
		{"GetMissingInRoom", "GET", roomPath(alice.ID, room, "m.never_set"), alice.AccessToken, nil, 404, "M_NOT_FOUND"},
		{"GetOtherUser", "GET", globalPath(alice.ID, "org.example.config"), bob.AccessToken, nil, 403, "M_FORBIDDEN"},
		{"GetOtherUserRoom", "GET", roomPath(alice.ID, room, "m.tag"), bob.AccessToken, nil, 403, "M_FORBIDDEN"},
		{"PutOtherUser", "PUT", globalPath(alice.ID, "org.example.config"), bob.AccessToken, `{"theme":"pink"}`, 403, "M_FORBIDDEN"},
		{"PutOtherUserRoom", "PUT", roomPath(alice.ID, room, "m.tag"), bob.AccessToken, `{"tags":{}}`, 403, "M_FORBIDDEN"},
		{"PutRemoteUser", "PUT", globalPath("@alice:other.example", "x.y"), alice.AccessToken, `{}`, 403, "M_FORBIDDEN"},
		{"PutFullyRead", "PUT", globalPath(alice.ID, "m.fully_read"), alice.AccessToken, `{"event_id":"$x"}`, 405, "M_BAD_JSON"},
		{"PutFullyReadInRoom", "PUT", roomPath(alice.ID, room, "m.fully_read"), alice.AccessToken, `{"event_id":"$x"}`, 405, "M_BAD_JSON"},
		{"PutPushRules", "PUT", globalPath(alice.ID, "m.push_rules"), alice.AccessToken, `{"global":{}}`, 405, "M_BAD_JSON"},
		{"PutPushRulesInRoom", "PUT", roomPath(alice.ID, room, "m.push_rules"), alice.AccessToken, `{"global":{}}`, 405, "M_BAD_JSON"},
		{"PutArray", "PUT", globalPath(alice.ID, "x.y"), alice.AccessToken, `[1,2]`, 400, "M_BAD_JSON"},
		{"PutString", "PUT", globalPath(alice.ID, "x.y"), alice.AccessToken, `"dark"`, 400, "M_BAD_JSON"},
		{"PutBrokenJSON", "PUT", roomPath(alice.ID, room, "x.y"), alice.AccessToken, `{"a":`, 400, "M_NOT_JSON"},
		{"PutEmptyBody", "PUT", globalPath(alice.ID, "x.y"), alice.AccessToken, ``, 400, "M_NOT_JSON"},
		{"PutInvalidRoomID", "PUT", roomPath(alice.ID, "garden:example.org", "m.tag"), alice.AccessToken, `{}`, 400, "M_INVALID_PARAM"},
		{"GetInvalidRoomID", "GET", roomPath(alice.ID, "#garden:example.org", "m.tag"), alice.AccessToken, nil, 400, "M_INVALID_PARAM"},
		{"PutLongType", "PUT", globalPath(alice.ID, strings.Repeat("t", 256)), alice.AccessToken, `{}`, 400, "M_INVALID_PARAM"},
		{"PutOver400KB", "PUT", globalPath(alice.ID, "x.big"), alice.AccessToken, big, 413, "M_TOO_LARGE"},
		{"PutOverBodyLimit", "PUT", globalPath(alice.ID, "x.big"), alice.AccessToken, big + strings.Repeat(" ", 1<<20), 413, "M_TOO_LARGE"},
		{"GetWithoutToken", "GET", globalPath(alice.ID, "org.example.config"), "", nil, 401, "M_MISSING_TOKEN"},
		{"PutWithoutToken", "PUT", roomPath(alice.ID, room, "m.tag"), "", `{}`, 401, "M_MISSING_TOKEN"},
		{"DeleteUnsupported", "DELETE", globalPath(alice.ID, "org.example.config"), alice.AccessToken, nil, 405, "M_UNRECOGNIZED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			expect(t, st.Do(t, tc.method, tc.path, tc.token, tc.body), tc.status, tc.errcode)
			// Refusals are decided before the store: the auth read at most.
			if c := st.LastRequest(t).DynamoDB; tc.status != 404 && (c.Calls > 1 || c.WriteUnits != 0) {
				t.Fatalf("a refused request cost %+v", c)
			}
		})
	}
	t.Run("RefusedWritesLeftNothing", func(t *testing.T) {
		if r := st.Do(t, "GET", globalPath(alice.ID, "org.example.config"), alice.AccessToken, nil); string(r.Raw) != `{}` {
			t.Fatalf("alice's config after refused writes: %s", r.Raw)
		}
		for _, typ := range []string{"m.fully_read", "x.big", "x.y"} {
			expect(t, st.Do(t, "GET", globalPath(alice.ID, typ), alice.AccessToken, nil), 404, "M_NOT_FOUND")
		}
		// m.push_rules is the push rules, untouched by the refused PUT.
		r := st.Do(t, "GET", globalPath(alice.ID, "m.push_rules"), alice.AccessToken, nil)
		if r.Status != 200 || !strings.HasPrefix(string(r.Raw), `{"global":{"override":[{"rule_id":".m.rule.master"`) {
			t.Fatalf("m.push_rules after a refused PUT: %d %s", r.Status, r.Raw)
		}
	})
	if strings.Contains(st.Logs(), alice.AccessToken) || strings.Contains(st.Logs(), bob.AccessToken) {
		t.Fatal("an access token was logged")
	}
}

// TestService_SyncReads checks what /sync will rely on: all global data in
// one Query, all per-room data in another, and server-managed types that
// the server writes with Set and clients read as any other.
func TestService_SyncReads(t *testing.T) {
	st := servertest.Start(t)
	erin := st.Register(t, "erin")
	svc := &accountdata.Service{Store: st.Server.Store}
	ctx := context.Background()
	for _, tc := range []struct{ room, typ, content string }{
		{"", "m.direct", `{"@frank:example.org":["!dm:example.org"]}`},
		{"", "m.push_rules", `{"global":{"override":[]}}`},
		{"", "org.example.b", `{"b":2}`},
		{"!r1:example.org", "m.tag", `{"tags":{}}`},
		{"!r1:example.org", "m.fully_read", `{"event_id":"$e1"}`},
		{"!r2:example.org", "m.tag", `{"tags":{"m.favourite":{}}}`},
	} {
		if err := svc.Set(ctx, erin.ID, tc.room, tc.typ, json.RawMessage(tc.content)); err != nil {
			t.Fatalf("Set(%q, %q): %v", tc.room, tc.typ, err)
		}
	}
	if err := svc.Put(ctx, erin.ID, "", "m.push_rules", json.RawMessage(`{}`)); !errors.Is(err, accountdata.ErrServerManaged) {
		t.Fatalf("Put of m.push_rules: %v, want ErrServerManaged", err)
	}
	if err := svc.Set(ctx, erin.ID, "", "x", json.RawMessage(`[]`)); !errors.Is(err, accountdata.ErrNotObject) {
		t.Fatalf("Set of an array: %v, want ErrNotObject", err)
	}
	if _, err := svc.Get(ctx, erin.ID, "", "x"); !errors.Is(err, accountdata.ErrNotFound) {
		t.Fatalf("Get of a missing type: %v, want ErrNotFound", err)
	}

	mctx, meter := store.WithMeter(ctx)
	global, err := svc.Global(mctx, erin.ID)
	if err != nil {
		t.Fatal(err)
	}
	if u := meter.Usage(); u.Calls != 1 || u.ReadUnits != 1 {
		t.Fatalf("Global cost %+v, want one Query of 1 RCU", u)
	}
	var types []string
	for _, e := range global {
		types = append(types, e.Type)
	}
	if strings.Join(types, ",") != "m.direct,m.push_rules,org.example.b" || string(global[0].Content) != `{"@frank:example.org":["!dm:example.org"]}` {
		t.Fatalf("global account data: %v", global)
	}

	mctx, meter = store.WithMeter(ctx)
	rooms, err := svc.Rooms(mctx, erin.ID)
	if err != nil {
		t.Fatal(err)
	}
	if u := meter.Usage(); u.Calls != 1 {
		t.Fatalf("Rooms cost %+v, want one Query", u)
	}
	if len(rooms) != 2 || len(rooms["!r1:example.org"]) != 2 || len(rooms["!r2:example.org"]) != 1 ||
		rooms["!r1:example.org"][0].Type != "m.fully_read" || string(rooms["!r2:example.org"][0].Content) != `{"tags":{"m.favourite":{}}}` {
		t.Fatalf("per-room account data: %v", rooms)
	}

	// Clients read the server-managed types as normal; m.push_rules is
	// computed from the push rules themselves.
	r := st.Do(t, "GET", globalPath(erin.ID, "m.push_rules"), erin.AccessToken, nil)
	if r.Status != 200 || !strings.Contains(string(r.Raw), `"pattern":"@erin:example.org"`) {
		t.Fatalf("GET m.push_rules: %d %s", r.Status, r.Raw)
	}
	r = st.Do(t, "GET", roomPath(erin.ID, "!r1:example.org", "m.fully_read"), erin.AccessToken, nil)
	if r.Status != 200 || r.Body["event_id"] != "$e1" {
		t.Fatalf("GET m.fully_read: %d %s", r.Status, r.Raw)
	}
}

// TestAccountData_Mautrix drives the endpoints with a real Matrix client library.
func TestAccountData_Mautrix(t *testing.T) {
	st := servertest.Start(t)
	ctx := context.Background()
	grace := st.Register(t, "grace")
	cli, err := mautrix.NewClient(st.URL, id.UserID(grace.ID), grace.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	direct := map[id.UserID][]id.RoomID{"@heidi:example.org": {"!dm:example.org"}}
	if err := cli.SetAccountData(ctx, "m.direct", direct); err != nil {
		t.Fatal(err)
	}
	var gotDirect map[id.UserID][]id.RoomID
	if err := cli.GetAccountData(ctx, "m.direct", &gotDirect); err != nil || len(gotDirect["@heidi:example.org"]) != 1 {
		t.Fatalf("GetAccountData: %v, %v", gotDirect, err)
	}
	room := id.RoomID("!lab:example.org")
	tags := map[string]any{"tags": map[string]any{"m.favourite": map[string]any{"order": 0.25}}}
	if err := cli.SetRoomAccountData(ctx, room, "m.tag", tags); err != nil {
		t.Fatal(err)
	}
	var gotTags struct {
		Tags map[string]struct {
			Order float64 `json:"order"`
		} `json:"tags"`
	}
	if err := cli.GetRoomAccountData(ctx, room, "m.tag", &gotTags); err != nil || gotTags.Tags["m.favourite"].Order != 0.25 {
		t.Fatalf("GetRoomAccountData: %+v, %v", gotTags, err)
	}

	var none map[string]any
	if err := cli.GetAccountData(ctx, "m.tag", &none); !errors.Is(err, mautrix.MNotFound) {
		t.Fatalf("missing global data: %v, want M_NOT_FOUND", err)
	}
	err = cli.SetAccountData(ctx, "m.push_rules", map[string]any{})
	var httpErr mautrix.HTTPError
	if !errors.Is(err, mautrix.MBadJSON) || !errors.As(err, &httpErr) || !httpErr.IsStatus(http.StatusMethodNotAllowed) {
		t.Fatalf("setting m.push_rules: %v, want 405 M_BAD_JSON", err)
	}
	if err := cli.SetRoomAccountData(ctx, room, "m.fully_read", map[string]any{"event_id": "$x"}); !errors.Is(err, mautrix.MBadJSON) {
		t.Fatalf("setting m.fully_read: %v, want M_BAD_JSON", err)
	}
	if err := cli.SetAccountData(ctx, "x.list", []int{1}); !errors.Is(err, mautrix.MBadJSON) {
		t.Fatalf("an array as content: %v, want M_BAD_JSON", err)
	}
	if err := cli.SetRoomAccountData(ctx, "not-a-room", "m.tag", tags); !errors.Is(err, mautrix.MInvalidParam) {
		t.Fatalf("a bad room ID: %v, want M_INVALID_PARAM", err)
	}
	ivan := st.Register(t, "ivan")
	impostor, _ := mautrix.NewClient(st.URL, id.UserID(grace.ID), ivan.AccessToken)
	if err := impostor.GetAccountData(ctx, "m.direct", &none); !errors.Is(err, mautrix.MForbidden) {
		t.Fatalf("reading another user's data: %v, want M_FORBIDDEN", err)
	}
}

// TestAccountData_DeviceDeleted: deleting a device removes its local
// notification settings (MSC3890), as Synapse does, and leaves the other
// device's settings and other account data alone.
func TestAccountData_DeviceDeleted(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Register(t, "alice")
	login := st.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"},
		"password": "correct horse battery staple",
	})
	expect(t, login, http.StatusOK, "")
	phone, _ := login.Body["device_id"].(string)
	settings := func(device string) string { return accountdata.LocalNotificationSettingsPrefix + device }
	for _, typ := range []string{settings(alice.DeviceID), settings(phone), "m.direct"} {
		expect(t, st.Do(t, "PUT", globalPath(alice.ID, typ), alice.AccessToken, map[string]any{"is_silenced": true}), http.StatusOK, "")
	}
	del := st.Do(t, "POST", "/_matrix/client/v3/delete_devices", alice.AccessToken, map[string]any{
		"devices": []string{phone},
		"auth": map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"},
			"password": "correct horse battery staple"},
	})
	expect(t, del, http.StatusOK, "")
	for _, c := range []struct {
		typ    string
		status int
	}{
		{settings(phone), http.StatusNotFound},
		{settings(alice.DeviceID), http.StatusOK},
		{"m.direct", http.StatusOK},
	} {
		if r := st.Do(t, "GET", globalPath(alice.ID, c.typ), alice.AccessToken, nil); r.Status != c.status {
			t.Errorf("GET %s after deleting %s: got %d %s, want %d", c.typ, phone, r.Status, r.Raw, c.status)
		}
	}
}
