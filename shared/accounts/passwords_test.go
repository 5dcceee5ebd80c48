package accounts_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

const testSecret = "shared secret for tests"

// password is a password of n bytes that differs from the others of its
// length after byte 72, where bcrypt stops reading.
func password(n int, tag string) string {
	p := strings.Repeat("x", 72) + tag
	for len(p) < n {
		p += "0123456789"
	}
	return p[:n]
}

// canLogin reports whether user logs in with pw.
func canLogin(t *testing.T, hs *homeserver, user, pw string) bool {
	t.Helper()
	code, body := raw(t, "POST", hs.URL+"/_matrix/client/v3/login", "", jsonBody(map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": user}, "password": pw,
	}))
	if code != 200 && code != 403 {
		t.Fatalf("login of %s with a %d-byte password: %d %v", user, len(pw), code, body)
	}
	return code == 200
}

func jsonBody(v any) string {
	doc, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(doc)
}

// refused checks Synapse's answer to a password over 512 bytes.
func refused(t *testing.T, what string, code int, body map[string]any) {
	t.Helper()
	if code != 400 || body["errcode"] != "M_UNKNOWN" || body["error"] != "Invalid password" {
		t.Fatalf("%s with a 513-byte password: %d %v, want 400 M_UNKNOWN Invalid password", what, code, body)
	}
}

// TestLongPasswords sets passwords of 100 and 512 bytes through every
// endpoint that sets one, logs in with each (and not with a 100-byte one
// that differs only after byte 72, where bcrypt alone would stop reading),
// and refuses 513 bytes with Synapse's error.
func TestLongPasswords(t *testing.T) {
	hs := startHomeserver(t, true, "CIRRUS_REGISTRATION_SHARED_SECRET="+testSecret)
	hs.srv.Accounts.Limits = accounts.Limits{} // not what is tested here
	ctx := context.Background()
	if _, err := hs.srv.Accounts.Register(ctx, accounts.NewUser{Localpart: "root", Password: "pw", Admin: true, InhibitLogin: true}); err != nil {
		t.Fatal(err)
	}
	_, body := raw(t, "POST", hs.URL+"/_matrix/client/v3/login", "", `{"type":"m.login.password","user":"root","password":"pw"}`)
	admin, _ := body["access_token"].(string)
	client := hs.URL + "/_matrix/client/v3"
	adminAPI := hs.URL + "/_synapse/admin"

	// Each way of setting a password, for a user of its own.
	set := map[string]func(t *testing.T, user, pw string) (int, map[string]any){
		"register": func(t *testing.T, user, pw string) (int, map[string]any) {
			return raw(t, "POST", client+"/register", "", jsonBody(map[string]any{
				"username": user, "password": pw, "inhibit_login": true, "auth": map[string]any{"type": "m.login.dummy"},
			}))
		},
		"shared secret": func(t *testing.T, user, pw string) (int, map[string]any) {
			_, n := raw(t, "GET", adminAPI+"/v1/register", "", "")
			nonce, _ := n["nonce"].(string)
			return raw(t, "POST", adminAPI+"/v1/register", "", jsonBody(map[string]any{
				"nonce": nonce, "username": user, "password": pw, "mac": accounts.RegistrationMAC(testSecret, nonce, user, pw, false),
			}))
		},
		"admin create": func(t *testing.T, user, pw string) (int, map[string]any) {
			return raw(t, "PUT", adminAPI+"/v2/users/@"+user+":example.org", admin, jsonBody(map[string]any{"password": pw}))
		},
		"admin modify": func(t *testing.T, user, pw string) (int, map[string]any) {
			if _, err := hs.srv.Accounts.Register(ctx, accounts.NewUser{Localpart: user, Password: "old", InhibitLogin: true}); err != nil && !strings.Contains(err.Error(), "taken") {
				t.Fatal(err)
			}
			return raw(t, "PUT", adminAPI+"/v2/users/@"+user+":example.org", admin, jsonBody(map[string]any{"password": pw}))
		},
		"admin reset": func(t *testing.T, user, pw string) (int, map[string]any) {
			if _, err := hs.srv.Accounts.Register(ctx, accounts.NewUser{Localpart: user, Password: "old", InhibitLogin: true}); err != nil && !strings.Contains(err.Error(), "taken") {
				t.Fatal(err)
			}
			return raw(t, "POST", adminAPI+"/v1/reset_password/@"+user+":example.org", admin, jsonBody(map[string]any{"new_password": pw}))
		},
		"password change": func(t *testing.T, user, pw string) (int, map[string]any) {
			sess, err := hs.srv.Accounts.Register(ctx, accounts.NewUser{Localpart: user, Password: "old"})
			if err != nil && !strings.Contains(err.Error(), "taken") {
				t.Fatal(err)
			}
			tok := sess.AccessToken
			if tok == "" {
				_, b := raw(t, "POST", client+"/login", "", `{"type":"m.login.password","user":"`+user+`","password":"old"}`)
				tok, _ = b["access_token"].(string)
			}
			return raw(t, "POST", client+"/account/password", tok, jsonBody(map[string]any{
				"new_password": pw, "auth": map[string]any{"type": "m.login.password", "user": user, "password": "old"},
			}))
		},
	}
	for name, setPassword := range set {
		t.Run(name, func(t *testing.T) {
			for i, n := range []int{100, 512} {
				user := fmt.Sprintf("%s%d", strings.ReplaceAll(name, " ", "-"), i)
				pw := password(n, "a")
				if code, body := setPassword(t, user, pw); code != 200 && code != 201 {
					t.Fatalf("a %d-byte password: %d %v", n, code, body)
				}
				if !canLogin(t, hs, user, pw) {
					t.Fatalf("%s cannot log in with the %d-byte password just set", user, n)
				}
				if n == 100 && canLogin(t, hs, user, password(n, "b")) {
					t.Fatalf("%s logs in with a %d-byte password that differs after byte 72", user, n)
				}
			}
			user := strings.ReplaceAll(name, " ", "-") + "-long"
			code, body := setPassword(t, user, password(513, "a"))
			refused(t, name, code, body)
		})
	}
}

// TestSynapseHash: an account imported from Synapse, whose hash is bcrypt
// of the first 72 bytes of a 100-byte password, logs in and passes
// user-interactive auth with the whole password, as it did on Synapse.
func TestSynapseHash(t *testing.T) {
	hs := startHomeserver(t, false)
	ctx := context.Background()
	sess, err := hs.srv.Accounts.Register(ctx, accounts.NewUser{Localpart: "imported", Password: "placeholder"})
	if err != nil {
		t.Fatal(err)
	}
	pw := password(100, "s")
	h, err := bcrypt.GenerateFromPassword([]byte(pw[:72]), 4)
	if err != nil {
		t.Fatal(err)
	}
	// What an import writes: the account item with Synapse's $2b$ hash.
	k := store.Key{PK: "user|@imported:example.org", SK: "account"}
	var item map[string]any
	if err := hs.srv.Store.Get(ctx, k, &item); err != nil {
		t.Fatal(err)
	}
	item["password_hash"] = "$2b$" + string(h[4:])
	if err := hs.srv.Store.Put(ctx, item); err != nil {
		t.Fatal(err)
	}
	if !canLogin(t, hs, "imported", pw) {
		t.Fatal("the 100-byte password of a Synapse hash does not log in")
	}
	code, body := raw(t, "POST", hs.URL+"/_matrix/client/v3/delete_devices", sess.AccessToken, jsonBody(map[string]any{
		"devices": []string{"NONE"}, "auth": map[string]any{"type": "m.login.password", "user": "imported", "password": pw},
	}))
	if code != 200 {
		t.Fatalf("user-interactive auth with the Synapse hash: %d %v", code, body)
	}
}
