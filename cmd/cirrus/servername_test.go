package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/config"
)

// otherName is the name of the server these tests run: not the default
// localhost:8008, so that a user ID completed with the default names a user
// of another server.
const otherName = "chat.example.test"

// TestResetPassword_ServerNameFromServer resets a password by localpart, as
// docs/operations.md says for a deployed server, against a server whose
// name the operator's machine does not know: with a URL, the name comes
// from the server (whoami of the admin token); without one, from the config.
func TestResetPassword_ServerNameFromServer(t *testing.T) {
	t.Setenv("CIRRUS_SERVER_NAME", otherName)
	at, _ := startServe(t, t.TempDir())
	// The operator's machine has no config: the default name, localhost:8008.
	os.Unsetenv("CIRRUS_SERVER_NAME")
	ctx := context.Background()

	var out bytes.Buffer
	for _, u := range []string{"-admin -u root", "-no-admin -u bob"} {
		if err := register(ctx, append(strings.Fields(u), at.ClientURL), registerIO{in: strings.NewReader("first\n"), out: &out}); err != nil {
			t.Fatal(err)
		}
	}
	// Shared-secret registration sends the localpart and prints the user ID
	// the server made: it never completes one itself.
	for _, want := range []string{"Created @root:" + otherName + " (admin)", "Created @bob:" + otherName + "."} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("cirrus register said %q, want %q", out.String(), want)
		}
	}
	login := func(user, password string) reply {
		return do(t, http.DefaultClient, "POST", at.ClientURL+"/_matrix/client/v3/login",
			strings.NewReader(`{"type":"m.login.password","identifier":{"type":"m.id.user","user":"`+user+`"},"password":"`+password+`"}`), nil)
	}
	r := login("root", "first")
	if r.status != 200 {
		t.Fatalf("admin login: %d %s", r.status, r.raw)
	}
	admin := r.body["access_token"].(string)

	for _, tc := range []struct {
		name    string
		env     map[string]string
		args    []string
		token   string
		want    string // in the output; empty when an error is wanted
		wantErr []string
	}{
		{name: "LocalpartAndURL", args: []string{"-u", "bob", at.ClientURL}, want: "Password of @bob:" + otherName + " reset."},
		{name: "CapitalsAndURL", args: []string{"-u", "Bob", at.ClientURL + "/"}, want: "Password of @bob:" + otherName + " reset."},
		{name: "UserIDAndURL", args: []string{"-u", "@bob:" + otherName, at.ClientURL}, want: "Password of @bob:" + otherName + " reset."},
		{
			// The config names the server that its public_baseurl points at.
			name: "NoURLConfigName", env: map[string]string{"CIRRUS_PUBLIC_BASEURL": at.ClientURL, "CIRRUS_SERVER_NAME": otherName},
			args: []string{"-u", "bob"}, want: "Password of @bob:" + otherName + " reset.",
		},
		{
			// Without a URL the config is trusted, as before: a config that
			// does not match its server is the operator's to fix.
			name: "NoURLDefaultName", env: map[string]string{"CIRRUS_PUBLIC_BASEURL": at.ClientURL},
			args: []string{"-u", "bob"}, wantErr: []string{"M_INVALID_PARAM", "@bob:localhost:8008"},
		},
		{
			name: "UnknownToken", args: []string{"-u", "bob", at.ClientURL}, token: "cirrus_nope",
			wantErr: []string{"server name", "whoami", "M_UNKNOWN_TOKEN"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			token := admin
			if tc.token != "" {
				token = tc.token
			}
			password := "pw-" + tc.name
			var out bytes.Buffer
			args := append([]string{"-token", token}, tc.args...)
			err := resetPassword(ctx, args, registerIO{in: strings.NewReader(password + "\n"), out: &out})
			if tc.wantErr != nil {
				for _, w := range tc.wantErr {
					if err == nil || !strings.Contains(err.Error(), w) {
						t.Fatalf("reset-password %v: error %v, want one saying %q", tc.args, err, w)
					}
				}
				return
			}
			if err != nil || !strings.Contains(out.String(), tc.want) {
				t.Fatalf("reset-password %v: %v, said %q; want %q", tc.args, err, out.String(), tc.want)
			}
			if r := login("bob", password); r.status != 200 {
				t.Fatalf("bob's login with the new password: %d %s", r.status, r.raw)
			}
		})
	}
}

// TestServe_RootPage opens the server's address in a "browser": a page, not
// a 404, with the server name, the version and the configured web client;
// the banner of `cirrus serve` points there.
func TestServe_RootPage(t *testing.T) {
	t.Setenv("CIRRUS_SERVER_NAME", otherName)
	t.Setenv("CIRRUS_WEB_CLIENT_LOCATION", "https://element.example.test/")
	at, _ := startServe(t, t.TempDir())

	for _, method := range []string{http.MethodGet, http.MethodHead} {
		req, _ := http.NewRequest(method, at.ClientURL+"/", nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/html; charset=utf-8" {
			t.Fatalf("%s /: %d %q", method, res.StatusCode, res.Header.Get("Content-Type"))
		}
		if method == http.MethodHead {
			continue
		}
		for _, want := range []string{"Cirrus is running", "<strong>" + otherName + "</strong>", `<a href="https://element.example.test/">`, "<code>" + at.ClientURL + "</code>"} {
			if !strings.Contains(string(body), want) {
				t.Errorf("GET / lacks %q:\n%s", want, body)
			}
		}
	}
	// Only / itself is the page; other unknown paths stay Matrix errors.
	if r := do(t, http.DefaultClient, "GET", at.ClientURL+"/index.html", nil, nil); r.status != 404 || r.body["errcode"] != "M_UNRECOGNIZED" {
		t.Fatalf("GET /index.html: %d %s", r.status, r.raw)
	}

	cfg, err := config.Load("", func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	var banner bytes.Buffer
	printBanner(&banner, cfg, at, true, "")
	if want := "Open " + cfg.PublicBaseURL + " in a browser"; !strings.Contains(banner.String(), want) {
		t.Errorf("the banner does not say %q:\n%s", want, banner.String())
	}
}
