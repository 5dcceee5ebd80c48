package accounts_test

import (
	"encoding/base64"
	"net/url"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// A signed token's request runs before its read confirms it (RequireAuth's
// speculation): these check that a token the read refuses has done nothing
// and seen nothing, and that tokens that cannot speculate still work.
func TestSpeculativeAuth_RefusedTokenWritesAndShowsNothing(t *testing.T) {
	st, hs, gone, kept := twoSessions(t, "pam")
	if parts := strings.Split(strings.TrimPrefix(gone, "cirrus_"), "."); !strings.HasPrefix(gone, "cirrus_") || len(parts) != 3 {
		t.Fatalf("token %q is not of the signed form", redact(gone))
	}

	data := hs.URL + "/_matrix/client/v3/user/" + url.PathEscape("@pam:"+st.Server.Config.ServerName) + "/account_data/"
	if code, body := raw(t, "PUT", data+"org.example.secret", kept, `{"pin":"1234"}`); code != 200 {
		t.Fatalf("put account data: %d %v", code, body)
	}
	if code, body := raw(t, "GET", hs.URL+"/_matrix/client/v3/account/whoami", gone, ""); code != 200 || body["user_id"] != "@pam:"+st.Server.Config.ServerName {
		t.Fatalf("whoami before logout: %d %v", code, body)
	}
	st.CheckRoundTrips(t, "whoami with a signed token", "/whoami", 1)
	if code, _ := raw(t, "POST", hs.URL+"/_matrix/client/v3/logout", gone, ""); code != 200 {
		t.Fatal("logout")
	}

	// A write: refused, and not made.
	code, body := raw(t, "PUT", data+"org.example.after", gone, `{"x":1}`)
	if code != 401 || body["errcode"] != "M_UNKNOWN_TOKEN" || body["soft_logout"] != false {
		t.Fatalf("write with a logged-out token: %d %v, want 401 M_UNKNOWN_TOKEN", code, body)
	}
	if code, body := raw(t, "GET", data+"org.example.after", kept, ""); code != 404 {
		t.Fatalf("account data the refused request would have written: %d %v, want 404", code, body)
	}
	// A read: refused, and what was read is not sent.
	code, body = raw(t, "GET", data+"org.example.secret", gone, "")
	if code != 401 || body["errcode"] != "M_UNKNOWN_TOKEN" || body["pin"] != nil {
		t.Fatalf("read with a logged-out token: %d %v, want 401 M_UNKNOWN_TOKEN", code, body)
	}
	// A long-poll: answered at once with 401, not after its timeout.
	code, body = raw(t, "GET", hs.URL+"/_matrix/client/v3/sync?timeout=600000", gone, "")
	if code != 401 || body["errcode"] != "M_UNKNOWN_TOKEN" {
		t.Fatalf("sync with a logged-out token: %d %v, want 401 M_UNKNOWN_TOKEN", code, body)
	}
}

func TestSpeculativeAuth_ExpiredTokenIsSoftLogout(t *testing.T) {
	st := servertest.Start(t)
	hs := &homeserver{URL: st.URL, srv: st.Server}
	hs.useClock()
	c := hs.user(t, "rae", "pw")
	tok := login(t, c, "rae", "pw", mautrix.ReqLogin{RefreshToken: true}).AccessToken
	hs.clock = time.Now().Add(accounts.RefreshableLifetime + time.Minute)
	data := hs.URL + "/_matrix/client/v3/user/" + url.PathEscape("@rae:"+st.Server.Config.ServerName) + "/account_data/org.example.late"
	code, body := raw(t, "PUT", data, tok, `{"x":1}`)
	if code != 401 || body["errcode"] != "M_UNKNOWN_TOKEN" || body["soft_logout"] != true {
		t.Fatalf("write with an expired token: %d %v, want 401 M_UNKNOWN_TOKEN soft_logout", code, body)
	}
	hs.clock = time.Time{}
	fresh, _ := mautrix.NewClient(hs.URL, "", "")
	kept := login(t, fresh, "rae", "pw", mautrix.ReqLogin{}).AccessToken
	if code, body := raw(t, "GET", data, kept, ""); code != 404 {
		t.Fatalf("account data the expired token's request would have written: %d %v, want 404", code, body)
	}
}

func TestSpeculativeAuth_TokensThatCannotSpeculate(t *testing.T) {
	st := servertest.Start(t)
	hs := &homeserver{URL: st.URL, srv: st.Server}
	c := hs.user(t, "ned", "pw")
	key := st.Server.Accounts.TokenKey
	// A token issued before tokens were signed is random alone; it waits
	// for its read and works as it did.
	st.Server.Accounts.TokenKey = nil
	old := login(t, c, "ned", "pw", mautrix.ReqLogin{}).AccessToken
	st.Server.Accounts.TokenKey = key
	if strings.Contains(old, ".") {
		t.Fatalf("unsigned token %q has the signed form", redact(old))
	}
	data := hs.URL + "/_matrix/client/v3/user/" + url.PathEscape("@ned:"+st.Server.Config.ServerName) + "/account_data/org.example.old"
	if code, body := raw(t, "PUT", data, old, `{"x":1}`); code != 200 {
		t.Fatalf("write with an unsigned token: %d %v", code, body)
	}
	if code, body := raw(t, "GET", data, old, ""); code != 200 || body["x"] != float64(1) {
		t.Fatalf("read with an unsigned token: %d %v", code, body)
	}
	st.CheckRoundTrips(t, "account data read with an unsigned token (the token's read, then the item's)", "/account_data/", 2)

	// A signed token whose claim is changed fails its signature: it is
	// looked up like an unsigned one, and unknown.
	signed := login(t, c, "ned", "pw", mautrix.ReqLogin{}).AccessToken
	parts := strings.Split(strings.TrimPrefix(signed, "cirrus_"), ".")
	parts[0] = base64.RawURLEncoding.EncodeToString([]byte("@ned:" + st.Server.Config.ServerName + "\x00OTHERDEVICE"))
	forged := "cirrus_" + strings.Join(parts, ".")
	code, body := raw(t, "PUT", data, forged, `{"x":2}`)
	if code != 401 || body["errcode"] != "M_UNKNOWN_TOKEN" {
		t.Fatalf("write with a forged claim: %d %v, want 401 M_UNKNOWN_TOKEN", code, body)
	}
	st.CheckRoundTrips(t, "a forged claim (the token's read alone)", "/account_data/", 1)
	if code, body := raw(t, "GET", data, signed, ""); code != 200 || body["x"] != float64(1) {
		t.Fatalf("account data after the forged write: %d %v, want x 1", code, body)
	}
	// The signed token's read runs beside the item's: one round trip
	// where calls take milliseconds; on the embedded store the token's
	// read may end before the handler's begins.
	st.CheckRoundTripsWithin(t, "account data read with a signed token", "/account_data/", 1, 2)
}

// redact keeps a token out of a failure message.
func redact(tok string) string {
	if len(tok) > 12 {
		return tok[:12] + "…"
	}
	return tok
}

// TestSpeculativeAuth_RefusedMessageLeavesNoEvent: a message sent with a
// logged-out token writes its pointer and transaction record beside the
// token's read (gate.Ahead), never its slot: it gets 401, no member sees
// it, and the room's next message takes the position it would have.
func TestSpeculativeAuth_RefusedMessageLeavesNoEvent(t *testing.T) {
	_, hs, gone, kept := twoSessions(t, "sam")
	code, body := raw(t, "POST", hs.URL+"/_matrix/client/v3/createRoom", kept, `{"preset":"private_chat"}`)
	if code != 200 {
		t.Fatalf("createRoom: %d %v", code, body)
	}
	room := hs.URL + "/_matrix/client/v3/rooms/" + url.PathEscape(body["room_id"].(string))
	send := func(token, txn, text string) (int, map[string]any) {
		return raw(t, "PUT", room+"/send/m.room.message/"+txn, token, `{"msgtype":"m.text","body":"`+text+`"}`)
	}
	// The device that logs out has sent before: this process knows the
	// room's head, and the next send writes ahead of the token's read.
	if code, body := send(gone, "t1", "before"); code != 200 {
		t.Fatalf("send before logout: %d %v", code, body)
	}
	if code, _ := raw(t, "POST", hs.URL+"/_matrix/client/v3/logout", gone, ""); code != 200 {
		t.Fatal("logout")
	}
	if code, body := send(gone, "t2", "refused"); code != 401 || body["errcode"] != "M_UNKNOWN_TOKEN" {
		t.Fatalf("send with a logged-out token: %d %v, want 401 M_UNKNOWN_TOKEN", code, body)
	}
	if code, body := send(kept, "t2", "after"); code != 200 {
		t.Fatalf("send after: %d %v", code, body)
	}
	if bodies, _ := newestBodies(t, room, kept); strings.Join(bodies, ",") != "after,before" {
		t.Fatalf("the room's newest messages: %q, want after, before", bodies)
	}
}

// TestSpeculativeAuth_ExpiredSendRetriedAfterRefresh: a message sent with
// an expired token gets 401 soft_logout and hands back the transaction
// record it wrote beside the token's read; the client refreshes its token
// and retries the transaction through the same device, which stores the
// message once, at once, not after the record's lease.
func TestSpeculativeAuth_ExpiredSendRetriedAfterRefresh(t *testing.T) {
	st := servertest.Start(t)
	hs := &homeserver{URL: st.URL, srv: st.Server}
	hs.useClock()
	c := hs.user(t, "tia", "pw")
	session := login(t, c, "tia", "pw", mautrix.ReqLogin{RefreshToken: true})
	code, body := raw(t, "POST", hs.URL+"/_matrix/client/v3/createRoom", session.AccessToken, `{"preset":"private_chat"}`)
	if code != 200 {
		t.Fatalf("createRoom: %d %v", code, body)
	}
	room := hs.URL + "/_matrix/client/v3/rooms/" + url.PathEscape(body["room_id"].(string))
	send := func(token, txn, text string) (int, map[string]any) {
		return raw(t, "PUT", room+"/send/m.room.message/"+txn, token, `{"msgtype":"m.text","body":"`+text+`"}`)
	}
	if code, body := send(session.AccessToken, "t1", "first"); code != 200 {
		t.Fatalf("first send: %d %v", code, body)
	}
	hs.clock = time.Now().Add(accounts.RefreshableLifetime + time.Minute)
	if code, body := send(session.AccessToken, "t2", "later"); code != 401 || body["soft_logout"] != true {
		t.Fatalf("send with the expired token: %d %v, want 401 soft_logout", code, body)
	}
	code, body = raw(t, "POST", hs.URL+"/_matrix/client/v3/refresh", "", `{"refresh_token":"`+session.RefreshToken+`"}`)
	fresh, _ := body["access_token"].(string)
	if code != 200 || fresh == "" {
		t.Fatalf("refresh: %d %v", code, body)
	}
	hs.clock = time.Time{}
	code, body = send(fresh, "t2", "later")
	if code != 200 {
		t.Fatalf("the retry: %d %v", code, body)
	}
	// The refused request handed its record back (or, refused before it
	// got that far, wrote none): the retry takes it over at once, a read
	// and a write more than a send from a cold cache (9 calls), instead of
	// reading it again and again until its lease ends.
	if u := st.LastRequestTo(t, "/send/").DynamoDB; u.Calls > 13 {
		t.Fatalf("the retry after the refresh: %d calls, want at most 13 (it waited for the record's lease)", u.Calls)
	}
	if bodies, ids := newestBodies(t, room, fresh); strings.Join(bodies, ",") != "later,first" || ids[0] != body["event_id"] {
		t.Fatalf("the room's newest messages: %q %q, want later, first, the retry's event first", bodies, ids)
	}
}

// newestBodies reads the bodies and event IDs of the newest messages of the
// room (a /rooms/{roomId} URL), newest first.
func newestBodies(t *testing.T, room, token string) (bodies []string, ids []any) {
	t.Helper()
	code, page := raw(t, "GET", room+"/messages?dir=b&limit=3", token, "")
	chunk, _ := page["chunk"].([]any)
	if code != 200 {
		t.Fatalf("messages: %d %v", code, page)
	}
	for _, ev := range chunk {
		ev := ev.(map[string]any)
		if content, _ := ev["content"].(map[string]any); content["body"] != nil {
			bodies = append(bodies, content["body"].(string))
			ids = append(ids, ev["event_id"])
		}
	}
	return bodies, ids
}

// twoSessions starts a server with a user of the localpart given, logged
// in twice: gone, a session the test ends, and kept.
func twoSessions(t *testing.T, localpart string) (st *servertest.Stack, hs *homeserver, gone, kept string) {
	t.Helper()
	st = servertest.Start(t)
	hs = &homeserver{URL: st.URL, srv: st.Server}
	c := hs.user(t, localpart, "pw")
	gone = login(t, c, localpart, "pw", mautrix.ReqLogin{}).AccessToken
	other, _ := mautrix.NewClient(hs.URL, "", "")
	kept = login(t, other, localpart, "pw", mautrix.ReqLogin{}).AccessToken
	return st, hs, gone, kept
}
