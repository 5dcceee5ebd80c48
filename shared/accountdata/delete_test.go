package accountdata_test

import (
	"context"
	"encoding/json"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

func deletePath(userID, roomID, typ string) string {
	p := "/_matrix/client/unstable/org.matrix.msc3391/user/" + url.PathEscape(userID)
	if roomID != "" {
		p += "/rooms/" + url.PathEscape(roomID)
	}
	return p + "/account_data/" + url.PathEscape(typ)
}

// syncData is what one /sync brought of account data: global types, and
// those of room, each with its content as text.
func syncData(t *testing.T, resp *mautrix.RespSync, room string) (global, inRoom map[string]string) {
	t.Helper()
	global, inRoom = map[string]string{}, map[string]string{}
	for _, ev := range resp.AccountData.Events {
		global[ev.Type.Type] = compact(t, ev.Content.VeryRaw)
	}
	if j, ok := resp.Rooms.Join[id.RoomID(room)]; ok {
		for _, ev := range j.AccountData.Events {
			inRoom[ev.Type.Type] = compact(t, ev.Content.VeryRaw)
		}
	}
	return global, inRoom
}

func compact(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("content %q: %v", raw, err)
	}
	doc, _ := json.Marshal(v)
	return string(doc)
}

// TestAccountData_Delete: MSC3391's DELETE, as Synapse serves it. The
// client sees, through a real client library's /sync, the type come with
// content {} in its next incremental sync, and not at all in an initial
// sync; GET answers 404; a PUT brings the data back.
func TestAccountData_Delete(t *testing.T) {
	st := servertest.Start(t)
	ctx := context.Background()
	alice := st.Member(t, "alice")
	bob := st.Register(t, "bob")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	room := string(created.RoomID)

	for _, put := range []struct{ room, typ, content string }{
		{"", "org.example.gone", `{"a":1}`},
		{"", "org.example.kept", `{"b":2}`},
		{room, "org.example.gone", `{"c":3}`},
		{room, "m.tag", `{"tags":{"u.x":{}}}`},
	} {
		path := globalPath(alice.User.ID, put.typ)
		if put.room != "" {
			path = roomPath(alice.User.ID, put.room, put.typ)
		}
		expect(t, st.Do(t, "PUT", path, alice.User.AccessToken, put.content), 200, "")
	}
	first, err := alice.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	if g, r := syncData(t, first, room); g["org.example.gone"] != `{"a":1}` || r["org.example.gone"] != `{"c":3}` {
		t.Fatalf("initial sync before the deletes: global %v, room %v", g, r)
	}

	expect(t, st.Do(t, "DELETE", deletePath(alice.User.ID, "", "org.example.gone"), alice.User.AccessToken, nil), 200, "")
	// The token, the read, the marker and the entry in the sync stream.
	st.CheckCost(t, "DELETE global account data", "msc3391", servertest.Want(4, 2, 2))
	expect(t, st.Do(t, "DELETE", deletePath(alice.User.ID, room, "org.example.gone"), alice.User.AccessToken, nil), 200, "")

	next, err := alice.SyncRequest(ctx, 0, first.NextBatch, "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	g, r := syncData(t, next, room)
	if c, ok := g["org.example.gone"]; !ok || c != `{}` {
		t.Errorf("incremental sync: global org.example.gone %q (present %v), want {}", c, ok)
	}
	if c, ok := r["org.example.gone"]; !ok || c != `{}` {
		t.Errorf("incremental sync: room org.example.gone %q (present %v), want {}", c, ok)
	}
	if _, ok := g["org.example.kept"]; ok {
		t.Errorf("incremental sync brought unchanged data: %v", g)
	}

	initial, err := alice.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	g, r = syncData(t, initial, room)
	if _, ok := g["org.example.gone"]; ok || g["org.example.kept"] != `{"b":2}` {
		t.Errorf("initial sync after the delete: global %v, want org.example.kept alone of the two", g)
	}
	if _, ok := r["org.example.gone"]; ok || r["m.tag"] != `{"tags":{"u.x":{}}}` {
		t.Errorf("initial sync after the delete: room %v, want m.tag alone", r)
	}

	expect(t, st.Do(t, "GET", globalPath(alice.User.ID, "org.example.gone"), alice.User.AccessToken, nil), 404, "M_NOT_FOUND")
	expect(t, st.Do(t, "GET", roomPath(alice.User.ID, room, "org.example.gone"), alice.User.AccessToken, nil), 404, "M_NOT_FOUND")
	if r := st.Do(t, "GET", globalPath(alice.User.ID, "org.example.kept"), alice.User.AccessToken, nil); string(r.Raw) != `{"b":2}` {
		t.Errorf("GET of the data left: %d %s", r.Status, r.Raw)
	}

	t.Run("DeleteAgainOrUnknown", func(t *testing.T) {
		for _, path := range []string{
			deletePath(alice.User.ID, "", "org.example.gone"),
			deletePath(alice.User.ID, "", "org.example.never"),
			deletePath(alice.User.ID, room, "org.example.never"),
		} {
			r := st.Do(t, "DELETE", path, alice.User.AccessToken, nil)
			if r.Status != 200 || string(r.Raw) != `{}` {
				t.Fatalf("DELETE %s: %d %s, want 200 {}", path, r.Status, r.Raw)
			}
			// Nothing to delete: the token and one read, no write.
			st.CheckCost(t, "DELETE of nothing", "msc3391", servertest.Want(2, 2, 0))
		}
	})
	t.Run("PutAgain", func(t *testing.T) {
		expect(t, st.Do(t, "PUT", globalPath(alice.User.ID, "org.example.gone"), alice.User.AccessToken, `{"a":2}`), 200, "")
		if r := st.Do(t, "GET", globalPath(alice.User.ID, "org.example.gone"), alice.User.AccessToken, nil); r.Status != 200 || string(r.Raw) != `{"a":2}` {
			t.Fatalf("GET after a new PUT: %d %s", r.Status, r.Raw)
		}
	})
	for _, tc := range []struct {
		name, path, token string
		status            int
		errcode           string
	}{
		{"OtherUser", deletePath(alice.User.ID, "", "org.example.kept"), bob.AccessToken, 403, "M_FORBIDDEN"},
		{"OtherUserRoom", deletePath(alice.User.ID, room, "m.tag"), bob.AccessToken, 403, "M_FORBIDDEN"},
		{"PushRules", deletePath(alice.User.ID, "", "m.push_rules"), alice.User.AccessToken, 405, "M_BAD_JSON"},
		{"FullyRead", deletePath(alice.User.ID, room, "m.fully_read"), alice.User.AccessToken, 405, "M_BAD_JSON"},
		{"BadRoomID", deletePath(alice.User.ID, "#nope:example.org", "m.tag"), alice.User.AccessToken, 400, "M_INVALID_PARAM"},
		{"NoToken", deletePath(alice.User.ID, "", "org.example.kept"), "", 401, "M_MISSING_TOKEN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			expect(t, st.Do(t, "DELETE", tc.path, tc.token, nil), tc.status, tc.errcode)
		})
	}
	// The refused deletes left alice's data as it was.
	if r := st.Do(t, "GET", globalPath(alice.User.ID, "org.example.kept"), alice.User.AccessToken, nil); string(r.Raw) != `{"b":2}` {
		t.Errorf("after refused deletes: %d %s", r.Status, r.Raw)
	}
	if r := st.Do(t, "GET", roomPath(alice.User.ID, room, "m.tag"), alice.User.AccessToken, nil); r.Status != 200 {
		t.Errorf("m.tag after a refused delete: %d %s", r.Status, r.Raw)
	}
}
