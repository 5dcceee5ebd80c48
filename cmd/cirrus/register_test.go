package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
)

// TestRegister_CLIThenAPI creates the first admin with `cirrus register`
// against a running `cirrus serve`, as the banner says, then drives the
// shared-secret API by hand through every error it names.
func TestRegister_CLIThenAPI(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CIRRUS_SERVER_NAME", "localhost:8008")
	at, _ := startServe(t, dir)
	ctx := context.Background()

	var out bytes.Buffer
	err := register(ctx, []string{"-admin", "-u", "Alice", at.ClientURL}, registerIO{in: strings.NewReader("s3cret pass\n"), out: &out})
	if err != nil {
		t.Fatalf("cirrus register: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "Success! Created @alice:localhost:8008 (admin)") {
		t.Fatalf("cirrus register said %q", out.String())
	}
	if strings.Contains(out.String(), "s3cret") {
		t.Fatal("the password was echoed")
	}
	err = register(ctx, []string{"-u", "alice", at.ClientURL}, registerIO{in: strings.NewReader("other\n"), out: &out})
	if err == nil || !strings.Contains(err.Error(), "M_USER_IN_USE") {
		t.Fatalf("registering alice twice: %v", err)
	}

	secret, err := os.ReadFile(filepath.Join(dir, "registration_shared_secret"))
	if err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSpace(string(secret))
	api := at.ClientURL + "/_synapse/admin/v1/register"
	nonce := func() string {
		r := do(t, http.DefaultClient, "GET", api, nil, nil)
		if r.status != 200 || r.body["nonce"] == "" {
			t.Fatalf("nonce: %d %s", r.status, r.raw)
		}
		return r.body["nonce"].(string)
	}
	post := func(body map[string]any) reply {
		b, _ := json.Marshal(body)
		return do(t, http.DefaultClient, "POST", api, bytes.NewReader(b), nil)
	}
	user := func(n, name, password string, admin bool, mac string) map[string]any {
		if mac == "" {
			mac = accounts.RegistrationMAC(key, n, name, password, admin)
		}
		return map[string]any{"nonce": n, "username": name, "password": password, "admin": admin, "mac": mac}
	}

	n := nonce()
	if r := post(user(n, "bob", "pw", false, "00ff")); r.status != 403 || r.body["errcode"] != "M_FORBIDDEN" {
		t.Fatalf("wrong HMAC: %d %s", r.status, r.raw)
	}
	if r := post(user(n, "bob", "pw", false, "")); r.status != 400 || r.body["errcode"] != "M_UNKNOWN" {
		t.Fatalf("nonce used twice: %d %s", r.status, r.raw)
	}
	if r := post(user("never-issued", "bob", "pw", false, "")); r.status != 400 || !strings.Contains(r.body["error"].(string), "nonce") {
		t.Fatalf("unknown nonce: %d %s", r.status, r.raw)
	}
	if r := post(user(nonce(), "bad name!", "pw", false, "")); r.status != 400 || r.body["errcode"] != "M_INVALID_USERNAME" {
		t.Fatalf("invalid username: %d %s", r.status, r.raw)
	}
	if r := do(t, http.DefaultClient, "POST", api, strings.NewReader(`{"nonce":`), nil); r.status != 400 || r.body["errcode"] != "M_NOT_JSON" {
		t.Fatalf("broken JSON: %d %s", r.status, r.raw)
	}
	if r := do(t, http.DefaultClient, "POST", api, strings.NewReader(`{"nonce":1}`), nil); r.status != 400 || r.body["errcode"] != "M_BAD_JSON" {
		t.Fatalf("nonce of the wrong type: %d %s", r.status, r.raw)
	}
	r := post(user(nonce(), "bob", "pw", false, ""))
	if r.status != 200 || r.body["user_id"] != "@bob:localhost:8008" || r.body["device_id"] == "" || r.body["home_server"] != "localhost:8008" {
		t.Fatalf("register bob: %d %s", r.status, r.raw)
	}
	token := r.body["access_token"].(string)

	whoami := at.ClientURL + "/_matrix/client/v3/account/whoami"
	if r := do(t, http.DefaultClient, "GET", whoami, nil, map[string]string{"Authorization": "Bearer " + token}); r.status != 200 ||
		r.body["user_id"] != "@bob:localhost:8008" || r.body["device_id"] == "" || r.body["is_guest"] != false {
		t.Fatalf("whoami: %d %s", r.status, r.raw)
	}
	if r := do(t, http.DefaultClient, "GET", whoami+"?access_token="+token, nil, nil); r.status != 200 {
		t.Fatalf("whoami with the query parameter: %d %s", r.status, r.raw)
	}
	if r := do(t, http.DefaultClient, "GET", whoami, nil, nil); r.status != 401 || r.body["errcode"] != "M_MISSING_TOKEN" {
		t.Fatalf("whoami without a token: %d %s", r.status, r.raw)
	}
	if r := do(t, http.DefaultClient, "GET", whoami, nil, map[string]string{"Authorization": "Bearer cirrus_nope"}); r.status != 401 ||
		r.body["errcode"] != "M_UNKNOWN_TOKEN" || r.body["soft_logout"] != false {
		t.Fatalf("whoami with an unknown token: %d %s", r.status, r.raw)
	}
}

func TestResetPasswordAndHash(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CIRRUS_SERVER_NAME", "localhost:8008")
	at, _ := startServe(t, dir)
	ctx := context.Background()
	for _, u := range []string{"-admin -u root", "-no-admin -u jo"} {
		if err := register(ctx, append(strings.Fields(u), at.ClientURL), registerIO{in: strings.NewReader("first\n"), out: io.Discard}); err != nil {
			t.Fatal(err)
		}
	}
	loginAs := func(user, password string) reply {
		return do(t, http.DefaultClient, "POST", at.ClientURL+"/_matrix/client/v3/login",
			strings.NewReader(`{"type":"m.login.password","identifier":{"type":"m.id.user","user":"`+user+`"},"password":"`+password+`"}`), nil)
	}
	admin := loginAs("root", "first").body["access_token"].(string)
	jo := loginAs("jo", "first").body["access_token"].(string)

	var out bytes.Buffer
	err := resetPassword(ctx, []string{"-u", "jo", "-token", jo, at.ClientURL}, registerIO{in: strings.NewReader("second\n"), out: &out})
	if err == nil || !strings.Contains(err.Error(), "M_FORBIDDEN") {
		t.Fatalf("reset-password with a non-admin token: %v", err)
	}
	if err := resetPassword(ctx, []string{"-u", "jo", "-token", admin, at.ClientURL}, registerIO{in: strings.NewReader("second\n"), out: &out}); err != nil {
		t.Fatalf("reset-password: %v", err)
	}
	if r := loginAs("jo", "first"); r.status != 403 {
		t.Fatalf("old password after reset: %d %s", r.status, r.raw)
	}
	if r := loginAs("jo", "second"); r.status != 200 {
		t.Fatalf("new password after reset: %d %s", r.status, r.raw)
	}

	var hash bytes.Buffer
	if err := hashPassword(nil, registerIO{in: strings.NewReader("hunter2\n"), out: io.Discard}, &hash); err != nil {
		t.Fatal(err)
	}
	h := strings.TrimSpace(hash.String())
	if !strings.HasPrefix(h, "$2b$12$") || bcrypt.CompareHashAndPassword([]byte(h), []byte("hunter2")) != nil {
		t.Fatalf("hash-password printed %q", h)
	}
	// Past bcrypt's 72 bytes: passlib's bcrypt-sha256 form, printed whole.
	long := strings.Repeat("correct horse battery staple ", 4)
	hash.Reset()
	if err := hashPassword(nil, registerIO{in: strings.NewReader(long + "\n"), out: io.Discard}, &hash); err != nil {
		t.Fatal(err)
	}
	h = strings.TrimSpace(hash.String())
	if !strings.HasPrefix(h, "$bcrypt-sha256$") || !accounts.CheckPassword(h, long) || accounts.CheckPassword(h, long[:72]) {
		t.Fatalf("hash-password of %d bytes printed %q", len(long), h)
	}
}

func TestRegister_NeedsTheSecret(t *testing.T) {
	t.Setenv("CIRRUS_DATA_DIR", t.TempDir())
	err := register(context.Background(), []string{"-u", "alice", "http://127.0.0.1:1"}, registerIO{in: strings.NewReader("pw\n"), out: io.Discard})
	if err == nil || !strings.Contains(err.Error(), "registration_shared_secret") {
		t.Fatalf("register with no secret anywhere: %v", err)
	}
}
