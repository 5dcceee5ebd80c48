package accounts_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/ratelimit"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// from sends a request to the client tree as the client at addr would.
func from(t *testing.T, h http.Handler, addr, method, path, token, body string) (int, map[string]any) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.RemoteAddr = addr + ":40000"
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var out map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("%s %s: %d %q", method, path, rec.Code, rec.Body)
	}
	return rec.Code, out
}

func loginBody(user, pw string) string {
	return jsonBody(map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": user}, "password": pw})
}

func uiaBody(user, pw string, extra map[string]any) string {
	body := map[string]any{"auth": map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": user}, "password": pw}}
	for k, v := range extra {
		body[k] = v
	}
	return jsonBody(body)
}

// want checks a status and, unless empty, an errcode.
func want(t *testing.T, what string, code int, body map[string]any, wantCode int, errcode string) {
	t.Helper()
	if code != wantCode || (errcode != "" && body["errcode"] != errcode) {
		t.Fatalf("%s: %d %v, want %d %s", what, code, body, wantCode, errcode)
	}
}

// TestRateLimits_PasswordChecks: with a pinned clock (20 s into a minute
// window, so 40 s are left), every password check (logins and
// user-interactive auth of every endpoint) counts under the same limits;
// the account is one whatever the identifier's form; failures count per
// account and address, so a stranger's guesses do not lock the owner out
// from their own address, up to the looser ceiling per account.
func TestRateLimits_PasswordChecks(t *testing.T) {
	hs := startHomeserver(t, false)
	acc := hs.srv.Accounts
	minute := func(name string, n int64) ratelimit.Limit {
		return ratelimit.Limit{Name: name, Burst: n, Window: time.Minute}
	}
	acc.Limits = accounts.Limits{
		LoginAddress:  minute("login.address", 100),
		LoginFailures: minute("login.failed", 3),
		LoginAccount:  minute("login.failed.account", 5),
	}
	now := time.Unix(1_800_000_000, 0).Truncate(time.Minute).Add(20 * time.Second)
	acc.Limiter.Now = func() time.Time { return now }
	h := hs.srv.ClientHandler()
	ctx := context.Background()
	newUser := func(name string) string {
		sess, err := acc.Register(ctx, accounts.NewUser{Localpart: name, Password: "right"})
		if err != nil {
			t.Fatal(err)
		}
		return sess.AccessToken
	}
	limited := func(t *testing.T, what string, code int, body map[string]any) {
		t.Helper()
		want(t, what, code, body, 429, "M_LIMIT_EXCEEDED")
		if body["retry_after_ms"] != float64(40000) {
			t.Fatalf("%s: retry_after_ms %v, want 40000 (the rest of the window)", what, body["retry_after_ms"])
		}
	}
	const v3 = "/_matrix/client/v3"

	t.Run("UIA counts with logins", func(t *testing.T) {
		tok := newUser("dave")
		const a, b = "192.0.2.1", "192.0.2.2"
		// Three wrong passwords through three endpoints behind
		// user-interactive auth, the account named three ways.
		code, body := from(t, h, a, "POST", v3+"/account/password", tok, uiaBody("dave", "wrong", map[string]any{"new_password": "n"}))
		want(t, "wrong password changing the password", code, body, 401, "M_FORBIDDEN")
		code, body = from(t, h, a, "POST", v3+"/delete_devices", tok, uiaBody("@Dave:example.org", "wrong", map[string]any{"devices": []string{}}))
		want(t, "wrong password deleting devices", code, body, 401, "M_FORBIDDEN")
		code, body = from(t, h, a, "POST", v3+"/account/deactivate", tok, uiaBody("DAVE", "wrong", nil))
		want(t, "wrong password deactivating", code, body, 401, "M_FORBIDDEN")
		// Now even the right password is refused from that address, at
		// login and at user-interactive auth alike.
		code, body = from(t, h, a, "POST", v3+"/login", "", loginBody("@dave:example.org", "right"))
		limited(t, "login after three failures", code, body)
		code, body = from(t, h, a, "POST", v3+"/delete_devices", tok, uiaBody("dave", "right", map[string]any{"devices": []string{}}))
		limited(t, "user-interactive auth after three failures", code, body)
		// The owner elsewhere is not refused.
		code, body = from(t, h, b, "POST", v3+"/login", "", loginBody("dave", "right"))
		want(t, "login from another address", code, body, 200, "")
	})

	t.Run("a stranger cannot lock the owner out", func(t *testing.T) {
		tok := newUser("erin")
		const stranger, owner = "198.51.100.66", "198.51.100.1"
		for i, id := range []string{"erin", "@erin:example.org", "ERIN"} {
			code, body := from(t, h, stranger, "POST", v3+"/login", "", loginBody(id, "guess"))
			want(t, "stranger's guess "+string(rune('1'+i)), code, body, 403, "M_FORBIDDEN")
		}
		code, body := from(t, h, stranger, "POST", v3+"/login", "", loginBody("@Erin:example.org", "guess"))
		limited(t, "stranger's fourth guess", code, body)
		code, body = from(t, h, stranger, "POST", v3+"/login", "", loginBody("erin", "right"))
		limited(t, "stranger with the right password", code, body)
		// The owner logs in again and again: successes count as no failure.
		for i := range 5 {
			code, body := from(t, h, owner, "POST", v3+"/login", "", loginBody("erin", "right"))
			want(t, "owner's login "+string(rune('1'+i)), code, body, 200, "")
		}
		code, body = from(t, h, owner, "POST", v3+"/delete_devices", tok, uiaBody("erin", "right", map[string]any{"devices": []string{}}))
		want(t, "owner's user-interactive auth", code, body, 200, "")
	})

	t.Run("the ceiling per account", func(t *testing.T) {
		newUser("fay")
		const s1, s2, owner = "203.0.113.1", "203.0.113.2", "203.0.113.3"
		for range 3 {
			code, body := from(t, h, s1, "POST", v3+"/login", "", loginBody("fay", "guess"))
			want(t, "guess from the first address", code, body, 403, "M_FORBIDDEN")
		}
		for range 2 {
			code, body := from(t, h, s2, "POST", v3+"/login", "", loginBody("fay", "guess"))
			want(t, "guess from the second address", code, body, 403, "M_FORBIDDEN")
		}
		// Five failures in all: the account's ceiling, from anywhere.
		code, body := from(t, h, s2, "POST", v3+"/login", "", loginBody("fay", "guess"))
		limited(t, "third guess from the second address", code, body)
		code, body = from(t, h, owner, "POST", v3+"/login", "", loginBody("fay", "right"))
		limited(t, "owner past the ceiling", code, body)
		now = now.Add(time.Minute)
		defer func() { now = now.Add(-time.Minute) }()
		code, body = from(t, h, owner, "POST", v3+"/login", "", loginBody("fay", "right"))
		want(t, "owner in the next window", code, body, 200, "")
	})

	t.Run("every check counts per address", func(t *testing.T) {
		tok := newUser("gus")
		acc.Limits.LoginAddress.Burst = 3
		defer func() { acc.Limits.LoginAddress.Burst = 100 }()
		const addr = "192.0.2.77"
		code, body := from(t, h, addr, "POST", v3+"/login", "", loginBody("gus", "right"))
		want(t, "first login", code, body, 200, "")
		code, body = from(t, h, addr, "POST", v3+"/delete_devices", tok, uiaBody("gus", "right", map[string]any{"devices": []string{}}))
		want(t, "user-interactive auth", code, body, 200, "")
		code, body = from(t, h, addr, "POST", v3+"/login", "", loginBody("nobody", "x"))
		want(t, "an unknown user", code, body, 403, "M_FORBIDDEN")
		code, body = from(t, h, addr, "POST", v3+"/login", "", loginBody("gus", "right"))
		limited(t, "fourth check from the address", code, body)
	})
}

// TestRateLimits_SharedSecret: the shared-secret registration API counts
// every request (nonces and registrations) per address, and its refused
// registrations (wrong MAC) per address with a lower limit, read before the
// nonce is.
func TestRateLimits_SharedSecret(t *testing.T) {
	hs := startHomeserver(t, false, "CIRRUS_REGISTRATION_SHARED_SECRET="+testSecret)
	acc := hs.srv.Accounts
	acc.Limits = accounts.Limits{
		SharedSecretAddress:  ratelimit.Limit{Name: "register.shared_secret", Burst: 5, Window: time.Minute},
		SharedSecretFailures: ratelimit.Limit{Name: "register.shared_secret.failed", Burst: 2, Window: time.Minute},
	}
	now := time.Unix(1_800_000_000, 0).Truncate(time.Minute)
	acc.Limiter.Now = func() time.Time { return now }
	h := hs.srv.ClientHandler()
	const path = "/_synapse/admin/v1/register"
	nonce := func(addr string) string {
		t.Helper()
		code, body := from(t, h, addr, "GET", path, "", "")
		want(t, "nonce from "+addr, code, body, 200, "")
		return body["nonce"].(string)
	}
	register := func(addr, user, mac string) (int, map[string]any) {
		n := nonce(addr)
		if mac == "" {
			mac = accounts.RegistrationMAC(testSecret, n, user, "pw", false)
		}
		return from(t, h, addr, "POST", path, "", jsonBody(map[string]any{"nonce": n, "username": user, "password": "pw", "mac": mac}))
	}

	const a = "192.0.2.10"
	for _, user := range []string{"op1", "op2"} {
		code, body := register(a, user, "")
		want(t, "registering "+user, code, body, 200, "")
	}
	nonce(a) // the fifth request
	code, body := from(t, h, a, "GET", path, "", "")
	want(t, "sixth request from one address", code, body, 429, "M_LIMIT_EXCEEDED")
	if body["retry_after_ms"] != float64(60000) {
		t.Fatalf("retry_after_ms %v, want 60000", body["retry_after_ms"])
	}

	const b = "192.0.2.11"
	for range 2 {
		code, body := register(b, "guess", "0000")
		want(t, "a wrong MAC", code, body, 403, "M_FORBIDDEN")
	}
	code, body = from(t, h, b, "GET", path, "", "")
	want(t, "a nonce after two wrong MACs", code, body, 429, "M_LIMIT_EXCEEDED")
	if code, body := from(t, h, "192.0.2.12", "GET", path, "", ""); code != 200 {
		t.Fatalf("another address: %d %v", code, body)
	}
}

// TestLongIdentifiers: identifiers that would become parts of table keys
// are checked against the spec's 255 bytes before anything is read: 400
// M_INVALID_PARAM (M_INVALID_USERNAME for a username to register), never a
// 500 from DynamoDB's key limits.
func TestLongIdentifiers(t *testing.T) {
	st := servertest.Start(t, "CIRRUS_ENABLE_REGISTRATION=true")
	admin, err := st.Server.Accounts.Register(context.Background(), accounts.NewUser{Localpart: "root", Password: "pw", Admin: true})
	if err != nil {
		t.Fatal(err)
	}
	user := st.Register(t, "ivan")
	long := strings.Repeat("a", 3000)
	mxid := "@" + long + ":example.org"
	const v3 = "/_matrix/client/v3"
	for _, tc := range []struct {
		name, method, path, token, body, errcode string
		status                                   int
		reads                                    float64 // RCU the request may spend: the auth's, a rate-limit counter's
	}{
		{"login localpart", "POST", v3 + "/login", "", loginBody(strings.Repeat("a", 250), "pw"), "M_INVALID_PARAM", 400, 0},
		{"login user ID", "POST", v3 + "/login", "", loginBody(mxid, "pw"), "M_INVALID_PARAM", 400, 0},
		{"login device ID", "POST", v3 + "/login", "", jsonBody(map[string]any{"type": "m.login.password", "user": "ivan", "password": "pw", "device_id": long}), "M_INVALID_PARAM", 400, 0},
		{"UIA user", "POST", v3 + "/delete_devices", user.AccessToken, uiaBody(mxid, "pw", map[string]any{"devices": []string{}}), "M_INVALID_PARAM", 400, 1},
		{"UIA session", "POST", v3 + "/delete_devices", user.AccessToken, jsonBody(map[string]any{"devices": []string{}, "auth": map[string]any{"session": long}}), "M_INVALID_PARAM", 400, 1},
		{"register session", "POST", v3 + "/register", "", jsonBody(map[string]any{"username": "x", "password": "pw", "auth": map[string]any{"session": long}}), "M_INVALID_PARAM", 400, 0},
		{"register username", "POST", v3 + "/register", "", jsonBody(map[string]any{"username": long, "password": "pw"}), "M_INVALID_USERNAME", 400, 0},
		{"available", "GET", v3 + "/register/available?username=" + long, "", "", "M_INVALID_USERNAME", 400, 0},
		{"device", "GET", v3 + "/devices/" + long, user.AccessToken, "", "M_INVALID_PARAM", 400, 1},
		{"shared-secret nonce", "POST", "/_synapse/admin/v1/register", "", jsonBody(map[string]any{"nonce": long, "username": "x", "password": "pw", "mac": "x"}), "M_INVALID_PARAM", 400, 1},
		{"admin get user", "GET", "/_synapse/admin/v2/users/" + mxid, admin.AccessToken, "", "M_INVALID_PARAM", 400, 2},
		{"admin put user", "PUT", "/_synapse/admin/v2/users/" + mxid, admin.AccessToken, `{"password":"pw"}`, "M_INVALID_PARAM", 400, 2},
		{"admin reset", "POST", "/_synapse/admin/v1/reset_password/" + mxid, admin.AccessToken, `{"new_password":"pw"}`, "M_INVALID_PARAM", 400, 2},
		{"admin deactivate", "POST", "/_synapse/admin/v1/deactivate/" + mxid, admin.AccessToken, `{}`, "M_INVALID_PARAM", 400, 2},
		{"admin registration token", "GET", "/_synapse/admin/v1/registration_tokens/" + long, admin.AccessToken, "", "M_NOT_FOUND", 404, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := st.Do(t, tc.method, tc.path, tc.token, tc.body)
			if r.Status != tc.status || r.Body["errcode"] != tc.errcode {
				t.Fatalf("%s %.60s…: %d %s, want %d %s", tc.method, tc.path, r.Status, r.Raw, tc.status, tc.errcode)
			}
			if got := st.LastRequest(t).DynamoDB.ReadUnits; got != tc.reads {
				t.Fatalf("%s %.60s…: %.1f RCU read, want %.1f (nothing but the caller's auth and rate limits)", tc.method, tc.path, got, tc.reads)
			}
		})
	}
	r := st.Do(t, "GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token="+long, "", nil)
	if r.Status != 200 || r.Body["valid"] != false {
		t.Fatalf("validity of a long token: %d %s", r.Status, r.Raw)
	}
}

// TestAdminDisplayName: a display name the admin API sets goes through the
// profile package, the one writer of profiles, and so reaches the user's
// member events in their rooms, as the user's own change does.
func TestAdminDisplayName(t *testing.T) {
	st := servertest.Start(t)
	admin, err := st.Server.Accounts.Register(context.Background(), accounts.NewUser{Localpart: "root", Password: "pw", Admin: true})
	if err != nil {
		t.Fatal(err)
	}
	jo := st.Register(t, "jo")
	r := st.Do(t, "POST", "/_matrix/client/v3/createRoom", jo.AccessToken, map[string]any{"preset": "private_chat"})
	roomID, _ := r.Body["room_id"].(string)
	if r.Status != 200 || roomID == "" {
		t.Fatalf("createRoom: %d %s", r.Status, r.Raw)
	}
	member := "/_matrix/client/v3/rooms/" + roomID + "/state/m.room.member/" + jo.ID
	if r := st.Do(t, "GET", member, jo.AccessToken, nil); r.Status != 200 || r.Body["displayname"] != "jo" {
		t.Fatalf("member event before: %d %s", r.Status, r.Raw)
	}

	r = st.Do(t, "PUT", "/_synapse/admin/v2/users/"+jo.ID, admin.AccessToken, map[string]any{"displayname": "Jo Renamed"})
	if r.Status != 200 || r.Body["displayname"] != "Jo Renamed" {
		t.Fatalf("admin sets the display name: %d %s", r.Status, r.Raw)
	}
	if r := st.Do(t, "GET", "/_matrix/client/v3/profile/"+jo.ID+"/displayname", "", nil); r.Status != 200 || r.Body["displayname"] != "Jo Renamed" {
		t.Fatalf("profile after: %d %s", r.Status, r.Raw)
	}
	if r := st.Do(t, "GET", member, jo.AccessToken, nil); r.Status != 200 || r.Body["displayname"] != "Jo Renamed" || r.Body["membership"] != "join" {
		t.Fatalf("member event after the admin's change: %d %s", r.Status, r.Raw)
	}
	// A name the profile package refuses is refused before anything
	// changes.
	r = st.Do(t, "PUT", "/_synapse/admin/v2/users/"+jo.ID, admin.AccessToken, map[string]any{"displayname": strings.Repeat("n", 257), "admin": true})
	if r.Status != 400 || r.Body["errcode"] != "M_INVALID_PARAM" {
		t.Fatalf("a 257-character display name: %d %s", r.Status, r.Raw)
	}
	if r := st.Do(t, "GET", "/_synapse/admin/v2/users/"+jo.ID, admin.AccessToken, nil); r.Body["admin"] != false || r.Body["displayname"] != "Jo Renamed" {
		t.Fatalf("user after a refused change: %s", r.Raw)
	}
}
