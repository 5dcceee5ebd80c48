package accounts_test

import (
	"context"
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
	"github.com/cirrus-matrix/cirrus/shared/testenv"
	"github.com/cirrus-matrix/cirrus/shared/threepid"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// stackPassword is the password servertest.Stack.Register gives users.
const stackPassword = "correct horse battery staple"

// startMailStack runs a stack with an email block, its mail going to the
// SES stand-in. Validation requests are limited per client address, and
// every request of a test comes from 127.0.0.1: the burst is raised.
func startMailStack(t *testing.T, env ...string) (*servertest.Stack, *servertest.Mailbox) {
	t.Helper()
	st := servertest.Start(t, append([]string{
		"CIRRUS_EMAIL_NOTIF_FROM=Cirrus <noreply@example.org>",
		"CIRRUS_RC_3PID_VALIDATION_BURST_COUNT=100",
	}, env...)...)
	return st, st.UseSES(t)
}

// requestToken asks for a validation mail on the requestToken endpoint
// under path and returns the session ID.
func requestToken(t *testing.T, st *servertest.Stack, path, address, secret string) string {
	t.Helper()
	r := st.Do(t, "POST", "/_matrix/client/v3"+path, "", map[string]any{
		"client_secret": secret, "email": address, "send_attempt": 1})
	sid, _ := r.Body["sid"].(string)
	if r.Status != http.StatusOK || sid == "" {
		t.Fatalf("requestToken %s for %s: %d %s", path, address, r.Status, r.Raw)
	}
	return sid
}

var (
	formAction = regexp.MustCompile(`<form[^>]*action="([^"]*)"`)
	formInput  = regexp.MustCompile(`<input[^>]*name="([^"]*)"[^>]*value="([^"]*)"`)
)

// followMail does what the reader of the n-th mail to address does in a
// browser: opens its link (a page with a form) and presses the button,
// which posts the form's fields to its action.
func followMail(t *testing.T, st *servertest.Stack, mb *servertest.Mailbox, address string, n int) {
	t.Helper()
	mail := mb.Wait(t, address, n)[n-1]
	link := mail.LinkTo(t, st.URL+threepid.SubmitPath)
	res, err := http.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	action := formAction.FindSubmatch(page)
	if res.StatusCode != http.StatusOK || action == nil {
		t.Fatalf("GET the mail's link: %d, no form: %s", res.StatusCode, page)
	}
	form := url.Values{}
	for _, in := range formInput.FindAllSubmatch(page, -1) {
		form.Set(html.UnescapeString(string(in[1])), html.UnescapeString(string(in[2])))
	}
	target, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	target, err = target.Parse(html.UnescapeString(string(action[1])))
	if err != nil {
		t.Fatal(err)
	}
	res, err = http.PostForm(target.String(), form)
	if err != nil {
		t.Fatal(err)
	}
	page, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.Contains(string(page), "confirmed") {
		t.Fatalf("confirm the address: %d %s", res.StatusCode, page)
	}
}

// wantReply checks a reply's status and errcode ("" for none).
func wantReply(t *testing.T, what string, r servertest.Reply, status int, errcode string) {
	t.Helper()
	if got, _ := r.Body["errcode"].(string); r.Status != status || got != errcode {
		t.Fatalf("%s: %d %s, want %d %s", what, r.Status, r.Raw, status, errcode)
	}
}

// flowsOf lists a 401's flows as their stages joined by ",".
func flowsOf(r servertest.Reply) []string {
	var out []string
	flows, _ := r.Body["flows"].([]any)
	for _, f := range flows {
		var stages []string
		for _, s := range f.(map[string]any)["stages"].([]any) {
			stages = append(stages, s.(string))
		}
		out = append(out, strings.Join(stages, ","))
	}
	return out
}

func wantFlows(t *testing.T, what string, r servertest.Reply, want ...string) {
	t.Helper()
	if got := flowsOf(r); r.Status != http.StatusUnauthorized || !slices.Equal(got, want) {
		t.Fatalf("%s: %d flows %q, want 401 %q: %s", what, r.Status, got, want, r.Raw)
	}
}

func loginBy(identifier map[string]any, password string) map[string]any {
	return map[string]any{"type": "m.login.password", "identifier": identifier, "password": password}
}

// TestEmailLogin: a bound address logs in as m.id.thirdparty (mautrix-go),
// in any case and with spaces around it, and in the deprecated top-level
// medium and address; an unknown or malformed address and a wrong
// password get one and the same 403. GET /login is unchanged. Deactivating
// the account unbinds its address.
func TestEmailLogin(t *testing.T) {
	ctx := context.Background()
	st, _ := startMailStack(t)
	alice := st.Register(t, "alice")
	if err := st.Server.ThreePIDs.Bind(ctx, alice.ID, "email", "alice@example.com"); err != nil {
		t.Fatal(err)
	}

	c, err := mautrix.NewClient(st.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeThirdParty, Medium: "email", Address: " Alice@Example.COM "},
		Password:   stackPassword})
	if err != nil {
		t.Fatalf("mautrix login by address: %v", err)
	}
	if resp.UserID.String() != alice.ID || resp.AccessToken == "" {
		t.Fatalf("login by address: %+v", resp)
	}

	r := st.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{
		"type": "m.login.password", "medium": "email", "address": "alice@example.com", "password": stackPassword})
	wantReply(t, "deprecated medium and address", r, http.StatusOK, "")
	if r.Body["user_id"] != alice.ID {
		t.Fatalf("deprecated medium and address: %s", r.Raw)
	}
	// The spec's own example of a third-party identifier has no type.
	r = st.Do(t, "POST", "/_matrix/client/v3/login", "", loginBy(map[string]any{"medium": "email", "address": "alice@example.com"}, stackPassword))
	wantReply(t, "identifier without a type", r, http.StatusOK, "")

	third := func(address string) map[string]any {
		return map[string]any{"type": "m.id.thirdparty", "medium": "email", "address": address}
	}
	wrong := st.Do(t, "POST", "/_matrix/client/v3/login", "", loginBy(third("alice@example.com"), "wrong password"))
	wantReply(t, "wrong password", wrong, http.StatusForbidden, "M_FORBIDDEN")
	for what, body := range map[string]map[string]any{
		"unknown address":            loginBy(third("nobody@example.com"), stackPassword),
		"malformed address":          loginBy(third("not an address"), stackPassword),
		"msisdn":                     loginBy(map[string]any{"type": "m.id.thirdparty", "medium": "msisdn", "address": "447700900000"}, stackPassword),
		"unknown, deprecated fields": {"type": "m.login.password", "medium": "email", "address": "nobody@example.com", "password": stackPassword},
	} {
		r := st.Do(t, "POST", "/_matrix/client/v3/login", "", body)
		if r.Status != wrong.Status || string(r.Raw) != string(wrong.Raw) {
			t.Errorf("%s: %d %s, want what a wrong password gets: %d %s", what, r.Status, r.Raw, wrong.Status, wrong.Raw)
		}
	}
	r = st.Do(t, "POST", "/_matrix/client/v3/login", "", loginBy(third("alice@example.com"), ""))
	wantReply(t, "no password", r, http.StatusBadRequest, "M_MISSING_PARAM")
	r = st.Do(t, "POST", "/_matrix/client/v3/login", "", loginBy(third(strings.Repeat("a", 300)+"@example.com"), stackPassword))
	wantReply(t, "an address over 255 bytes", r, http.StatusBadRequest, "M_INVALID_PARAM")

	r = st.Do(t, "GET", "/_matrix/client/v3/login", "", nil)
	if string(r.Raw) != `{"flows":[{"type":"m.login.password"}]}` {
		t.Errorf("GET /login: %s", r.Raw)
	}

	// Deactivation: the address is free again and logs nobody in.
	r = st.Do(t, "POST", "/_matrix/client/v3/account/deactivate", alice.AccessToken, map[string]any{
		"auth": map[string]any{"type": "m.login.password", "identifier": third("alice@example.com"), "password": stackPassword}})
	wantReply(t, "deactivate, with the address as the UIA identifier", r, http.StatusOK, "")
	if owner, err := st.Server.ThreePIDs.UserOf(ctx, "email", "alice@example.com"); err != nil || owner != "" {
		t.Fatalf("owner of a deactivated account's address: %q %v", owner, err)
	}
	r = st.Do(t, "POST", "/_matrix/client/v3/login", "", loginBy(third("alice@example.com"), stackPassword))
	wantReply(t, "login by a deactivated account's address", r, http.StatusForbidden, "M_FORBIDDEN")
}

// resetBody is a password reset's body with the email stage.
func resetBody(sid, secret, newPassword string, logout *bool) map[string]any {
	body := map[string]any{"new_password": newPassword, "auth": map[string]any{
		"type": "m.login.email.identity", "threepid_creds": map[string]any{"sid": sid, "client_secret": secret}}}
	if logout != nil {
		body["logout_devices"] = *logout
	}
	return body
}

// TestPasswordResetByEmail: a forgotten password is reset by the mail's
// link: the flows offered without an access token, the stage refused
// until the link is followed, then the new password works, the old one
// does not, and every device is logged out; with logout_devices false
// they stay. Bad input: no threepid_creds, creds of the wrong shape, a
// session never validated, and a validated address bound to nobody.
func TestPasswordResetByEmail(t *testing.T) {
	ctx := context.Background()
	st, mb := startMailStack(t)
	bob := st.Register(t, "bob")
	if err := st.Server.ThreePIDs.Bind(ctx, bob.ID, "email", "bob@example.com"); err != nil {
		t.Fatal(err)
	}
	const path = "/_matrix/client/v3/account/password"

	r := st.Do(t, "POST", path, "", map[string]any{"new_password": "new one"})
	wantFlows(t, "no access token", r, "m.login.email.identity")
	session, _ := r.Body["session"].(string)

	sid := requestToken(t, st, "/account/password/email/requestToken", "Bob@Example.com", "secret1")
	body := resetBody(sid, "secret1", "brand new password", nil)
	body["auth"].(map[string]any)["session"] = session
	r = st.Do(t, "POST", path, "", body)
	wantFlows(t, "before the link is followed", r, "m.login.email.identity")
	wantReply(t, "before the link is followed", r, http.StatusUnauthorized, "M_THREEPID_AUTH_FAILED")

	for what, auth := range map[string]map[string]any{
		"no threepid_creds":       {"type": "m.login.email.identity"},
		"no sid":                  {"type": "m.login.email.identity", "threepid_creds": map[string]any{"client_secret": "secret1"}},
		"threepid_creds a string": {"type": "m.login.email.identity", "threepid_creds": "x"},
		"a session never made":    {"type": "m.login.email.identity", "threepid_creds": map[string]any{"sid": "nosuchsid", "client_secret": "secret1"}},
		"another stage":           {"type": "m.login.dummy"},
	} {
		r := st.Do(t, "POST", path, "", map[string]any{"new_password": "x", "auth": auth})
		want, code := http.StatusUnauthorized, map[string]string{
			"no threepid_creds": "M_MISSING_PARAM", "no sid": "M_MISSING_PARAM", "threepid_creds a string": "M_BAD_JSON",
			"a session never made": "M_THREEPID_AUTH_FAILED", "another stage": "M_UNRECOGNIZED"}[what]
		if code == "M_BAD_JSON" {
			want = http.StatusBadRequest
		}
		wantReply(t, what, r, want, code)
	}

	followMail(t, st, mb, "bob@example.com", 1)
	r = st.Do(t, "POST", path, "", body)
	wantReply(t, "after the link is followed", r, http.StatusOK, "")
	if r := st.Do(t, "GET", "/_matrix/client/v3/account/whoami", bob.AccessToken, nil); r.Status != http.StatusUnauthorized {
		t.Fatalf("bob's device after the reset: %d %s", r.Status, r.Raw)
	}
	r = st.Do(t, "POST", "/_matrix/client/v3/login", "", loginBy(map[string]any{"type": "m.id.user", "user": "bob"}, stackPassword))
	wantReply(t, "the old password", r, http.StatusForbidden, "M_FORBIDDEN")
	r = st.Do(t, "POST", "/_matrix/client/v3/login", "", loginBy(map[string]any{"type": "m.id.user", "user": "bob"}, "brand new password"))
	wantReply(t, "the new password", r, http.StatusOK, "")
	device, _ := r.Body["access_token"].(string)
	// The session reset the password once: whoever holds its secret cannot
	// set another.
	r = st.Do(t, "POST", path, "", resetBody(sid, "secret1", "fourth password", nil))
	wantReply(t, "the same session again", r, http.StatusUnauthorized, "M_THREEPID_AUTH_FAILED")

	// logout_devices false keeps them; the legacy threepidCreds works.
	sid = requestToken(t, st, "/account/password/email/requestToken", "bob@example.com", "secret2")
	followMail(t, st, mb, "bob@example.com", 2)
	keep := false
	body = resetBody(sid, "secret2", "third password", &keep)
	auth := body["auth"].(map[string]any)
	auth["threepidCreds"], auth["threepid_creds"] = auth["threepid_creds"], nil
	r = st.Do(t, "POST", path, "", body)
	wantReply(t, "logout_devices false, threepidCreds", r, http.StatusOK, "")
	if r := st.Do(t, "GET", "/_matrix/client/v3/account/whoami", device, nil); r.Status != http.StatusOK {
		t.Fatalf("a device after a reset with logout_devices false: %d %s", r.Status, r.Raw)
	}

	// With an access token: the password and the email stage are both
	// offered; the address must be the caller's.
	r = st.Do(t, "POST", path, device, map[string]any{"new_password": "x"})
	wantFlows(t, "with an access token", r, "m.login.password", "m.login.email.identity")
	// (The reset used its session up: a new one.)
	sid = requestToken(t, st, "/account/password/email/requestToken", "bob@example.com", "secret4")
	followMail(t, st, mb, "bob@example.com", 3)
	carol := st.Register(t, "carol")
	r = st.Do(t, "POST", path, carol.AccessToken, resetBody(sid, "secret4", "x", nil))
	wantReply(t, "carol with bob's address", r, http.StatusForbidden, "M_FORBIDDEN")
	r = st.Do(t, "POST", path, device, resetBody(sid, "secret4", "fourth password", &keep))
	wantReply(t, "bob with his address and his token", r, http.StatusOK, "")

	// An address validated (for registration) but bound to nobody:
	// Synapse's 404 M_NOT_FOUND.
	sid = requestToken(t, st, "/register/email/requestToken", "stranger@example.com", "secret3")
	followMail(t, st, mb, "stranger@example.com", 1)
	r = st.Do(t, "POST", path, "", resetBody(sid, "secret3", "x", nil))
	wantReply(t, "an address bound to nobody", r, http.StatusNotFound, "M_NOT_FOUND")

	// No email block: the usual 401 for a missing token.
	plain := servertest.Start(t)
	r = plain.Do(t, "POST", path, "", map[string]any{"new_password": "x"})
	wantReply(t, "no email block", r, http.StatusUnauthorized, "M_MISSING_TOKEN")
}

// TestRegisterWithEmail: with registrations_require_3pid email, the flows
// all validate an address (after the registration token when one is
// required); the dummy stage is refused; the email stage completes once
// the mail's link is followed, and the address is then the account's.
// With email configured but not required, both kinds of flow are offered.
func TestRegisterWithEmail(t *testing.T) {
	ctx := context.Background()
	st, mb := startMailStack(t, "CIRRUS_ENABLE_REGISTRATION=true", "CIRRUS_REGISTRATIONS_REQUIRE_3PID=email")
	const path = "/_matrix/client/v3/register"
	req := map[string]any{"username": "dave", "password": "dave's password"}

	r := st.Do(t, "POST", path, "", req)
	wantFlows(t, "email required", r, "m.login.email.identity")
	session, _ := r.Body["session"].(string)

	r = st.Do(t, "POST", path, "", map[string]any{"username": "dave", "password": "p", "auth": map[string]any{"type": "m.login.dummy", "session": session}})
	wantReply(t, "the dummy stage", r, http.StatusUnauthorized, "M_UNRECOGNIZED")
	wantFlows(t, "the dummy stage", r, "m.login.email.identity")

	sid := requestToken(t, st, "/register/email/requestToken", "dave@example.com", "dsecret")
	req["auth"] = map[string]any{"type": "m.login.email.identity", "session": session,
		"threepid_creds": map[string]any{"sid": sid, "client_secret": "dsecret"}}
	r = st.Do(t, "POST", path, "", req)
	wantReply(t, "before the link is followed", r, http.StatusUnauthorized, "M_THREEPID_AUTH_FAILED")
	r = st.Do(t, "POST", path, "", map[string]any{"username": "dave", "password": "p",
		"auth": map[string]any{"type": "m.login.email.identity", "session": session}})
	wantReply(t, "no threepid_creds", r, http.StatusUnauthorized, "M_MISSING_PARAM")
	if ok, _ := st.Server.Accounts.Exists(ctx, "@dave:"+servertest.ServerName); ok {
		t.Fatal("dave exists before his address is validated")
	}

	followMail(t, st, mb, "dave@example.com", 1)
	r = st.Do(t, "POST", path, "", req)
	wantReply(t, "after the link is followed", r, http.StatusOK, "")
	token, _ := r.Body["access_token"].(string)
	r = st.Do(t, "GET", "/_matrix/client/v3/account/3pid", token, nil)
	if !strings.Contains(string(r.Raw), `"address":"dave@example.com"`) {
		t.Fatalf("dave's addresses: %d %s", r.Status, r.Raw)
	}
	if owner, _ := st.Server.ThreePIDs.UserOf(ctx, "email", "dave@example.com"); owner != "@dave:"+servertest.ServerName {
		t.Fatalf("owner of dave's address: %q", owner)
	}
	r = st.Do(t, "POST", "/_matrix/client/v3/login", "", loginBy(map[string]any{"type": "m.id.thirdparty", "medium": "email", "address": "dave@example.com"}, "dave's password"))
	wantReply(t, "dave logs in by his address", r, http.StatusOK, "")

	// The same validated session again, for another name: the address is
	// taken now.
	req["username"], req["auth"].(map[string]any)["session"] = "dave2", nil
	r = st.Do(t, "POST", path, "", req)
	wantReply(t, "an address already bound", r, http.StatusBadRequest, "M_THREEPID_IN_USE")

	// Shared-secret registration is unaffected.
	st.Register(t, "erin")

	// Tokens required too: the token first, then the address.
	tok := servertest.Start(t, "CIRRUS_EMAIL_NOTIF_FROM=Cirrus <noreply@example.org>", "CIRRUS_ENABLE_REGISTRATION=true",
		"CIRRUS_REGISTRATIONS_REQUIRE_3PID=email", "CIRRUS_REGISTRATION_REQUIRES_TOKEN=true")
	wantFlows(t, "email and token required", tok.Do(t, "POST", path, "", map[string]any{}), "m.login.registration_token,m.login.email.identity")

	// Email configured, not required: the dummy flow, and the email one.
	open := servertest.Start(t, "CIRRUS_EMAIL_NOTIF_FROM=Cirrus <noreply@example.org>", "CIRRUS_ENABLE_REGISTRATION=true")
	wantFlows(t, "email configured", open.Do(t, "POST", path, "", map[string]any{}), "m.login.dummy", "m.login.email.identity")
	openTok := servertest.Start(t, "CIRRUS_EMAIL_NOTIF_FROM=Cirrus <noreply@example.org>", "CIRRUS_ENABLE_REGISTRATION=true",
		"CIRRUS_REGISTRATION_REQUIRES_TOKEN=true")
	wantFlows(t, "email configured, token required", openTok.Do(t, "POST", path, "", map[string]any{}),
		"m.login.registration_token", "m.login.registration_token,m.login.email.identity")
	// No email block: as before.
	plain := servertest.Start(t, "CIRRUS_ENABLE_REGISTRATION=true")
	wantFlows(t, "no email block", plain.Do(t, "POST", path, "", map[string]any{}), "m.login.dummy")
}

// TestPasswordResetWithJSSDK: Element's "Forgot password" through
// matrix-js-sdk (scripts/jsclient/password_reset.mjs): requestPasswordEmailToken,
// setPassword with the email stage refused until the mail's link is
// followed, then accepted, then a login with the new password. The old
// device is logged out.
func TestPasswordResetWithJSSDK(t *testing.T) {
	const timeout = 45 * time.Second
	st, mb := startMailStack(t)
	frank := st.Register(t, "frank")
	if err := st.Server.ThreePIDs.Bind(context.Background(), frank.ID, "email", "frank@example.com"); err != nil {
		t.Fatal(err)
	}
	out, err := testenv.RunJS(t, timeout+30*time.Second, "password_reset.mjs",
		"CIRRUS_URL="+st.URL,
		"CIRRUS_USERS="+frank.ID,
		"CIRRUS_PASSWORD="+stackPassword,
		"CIRRUS_EMAIL=Frank@example.com",
		"CIRRUS_MAIL_STORE="+mb.Endpoint+"/store",
		"CIRRUS_TIMEOUT_MS="+strconv.FormatInt(timeout.Milliseconds(), 10),
	)
	if err != nil {
		t.Fatalf("matrix-js-sdk password_reset.mjs: %v; its output:\n%s", err, out)
	}
	if !strings.Contains(out, "\nPASS in ") {
		t.Fatalf("matrix-js-sdk password_reset.mjs exited 0 without PASS; its output:\n%s", out)
	}
	t.Logf("matrix-js-sdk password_reset.mjs:\n%s", out)
	if r := st.Do(t, "GET", "/_matrix/client/v3/account/whoami", frank.AccessToken, nil); r.Status != http.StatusUnauthorized {
		t.Fatalf("frank's old device after the reset: %d %s", r.Status, r.Raw)
	}
}

// TestEmailLogin_RateLimited: a login by address counts as a login by the
// account it names: wrong passwords given with the address lock the
// account out of this address as wrong passwords given with its user ID
// do, and an unknown address counts under the address's own key. Password
// resets count under the address limit too.
func TestEmailLogin_RateLimited(t *testing.T) {
	st, _ := startMailStack(t, "CIRRUS_RATE_LIMITS_LOGIN_PER_ACCOUNT=2", "CIRRUS_RATE_LIMITS_LOGIN_PER_ADDRESS=8")
	// One fixed instant: the attempts must not straddle the end of a
	// minute window, which would start the counts again (a loaded
	// machine took long enough for that once).
	now := time.Now()
	st.Server.Accounts.Limiter.Now = func() time.Time { return now }
	st.Server.ThreePIDs.Limiter.Now = st.Server.Accounts.Limiter.Now
	gina := st.Register(t, "gina")
	if err := st.Server.ThreePIDs.Bind(context.Background(), gina.ID, "email", "gina@example.com"); err != nil {
		t.Fatal(err)
	}
	byAddress := map[string]any{"type": "m.id.thirdparty", "medium": "email", "address": "gina@example.com"}
	byID := map[string]any{"type": "m.id.user", "user": "gina"}
	for i := range 2 {
		r := st.Do(t, "POST", "/_matrix/client/v3/login", "", loginBy(byAddress, "wrong password"))
		wantReply(t, "wrong password "+strconv.Itoa(i), r, http.StatusForbidden, "M_FORBIDDEN")
	}
	r := st.Do(t, "POST", "/_matrix/client/v3/login", "", loginBy(byID, stackPassword))
	wantReply(t, "the right password by user ID after two failures by address", r, http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")

	unknown := map[string]any{"type": "m.id.thirdparty", "medium": "email", "address": "nobody@example.com"}
	for i := range 2 {
		r := st.Do(t, "POST", "/_matrix/client/v3/login", "", loginBy(unknown, "x"))
		wantReply(t, "unknown address "+strconv.Itoa(i), r, http.StatusForbidden, "M_FORBIDDEN")
	}
	r = st.Do(t, "POST", "/_matrix/client/v3/login", "", loginBy(unknown, "x"))
	wantReply(t, "unknown address, third try", r, http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")

	// 6 password checks so far; 2 more reset requests, then 429.
	for i := range 2 {
		r := st.Do(t, "POST", "/_matrix/client/v3/account/password", "", map[string]any{"new_password": "x"})
		wantReply(t, "reset request "+strconv.Itoa(i), r, http.StatusUnauthorized, "")
	}
	r = st.Do(t, "POST", "/_matrix/client/v3/account/password", "", map[string]any{"new_password": "x"})
	wantReply(t, "reset request over the address limit", r, http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
}

// TestCost_Email pins what logins, resets and registrations by email
// address cost, with the default rate limits on.
func TestCost_Email(t *testing.T) {
	st, mb := startMailStack(t, "CIRRUS_ENABLE_REGISTRATION=true")
	hal := st.Register(t, "hal")
	if err := st.Server.ThreePIDs.Bind(context.Background(), hal.ID, "email", "hal@example.com"); err != nil {
		t.Fatal(err)
	}
	// A login by user ID, plus the GetItem of the address's binding.
	st.Do(t, "POST", "/_matrix/client/v3/login", "", loginBy(map[string]any{"type": "m.id.thirdparty", "medium": "email", "address": "hal@example.com"}, stackPassword))
	st.CheckCost(t, "login by address", "POST /_matrix/client/v3/login", servertest.Want(5, 4, 5))

	sid := requestToken(t, st, "/account/password/email/requestToken", "hal@example.com", "hsecret")
	followMail(t, st, mb, "hal@example.com", 1)
	// UpdateItem (the address's limit), GetItem (the validation session),
	// GetItem (the binding), GetItem and PutItem (the account), then the
	// logout of hal's two devices: the Query of devices, and what each
	// device's deletion costs (its tokens, pushers, to-device messages,
	// account data and keys), and the validation session's DeleteItem.
	st.Do(t, "POST", "/_matrix/client/v3/account/password", "", resetBody(sid, "hsecret", "new password", nil))
	st.CheckCost(t, "password reset", "POST /_matrix/client/v3/account/password", servertest.Want(20, 12, 16))

	sid = requestToken(t, st, "/register/email/requestToken", "ida@example.com", "isecret")
	followMail(t, st, mb, "ida@example.com", 1)
	st.Do(t, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "ida", "password": "ida's password",
		"auth": map[string]any{"type": "m.login.email.identity", "threepid_creds": map[string]any{"sid": sid, "client_secret": "isecret"}}})
	// UpdateItem (the address's limit), GetItem (the name is free),
	// GetItem (the validation session), GetItem (the address is free), the
	// registration's TransactWriteItems, and the binding's.
	st.CheckCost(t, "registration with an address", "POST /_matrix/client/v3/register", servertest.Want(6, 3, 19))
}

// TestRegisterWithEmail_Pusher: with email.enable_notifs (and
// notif_for_new_users unset, so on), registering with an address gives
// the new account an email pusher for it, through the EmailBound hook the
// server sets. Without notifications (no hook), no pusher.
func TestRegisterWithEmail_Pusher(t *testing.T) {
	st, mb := startMailStack(t, "CIRRUS_ENABLE_REGISTRATION=true", "CIRRUS_EMAIL_ENABLE_NOTIFS=true")
	sid := requestToken(t, st, "/register/email/requestToken", "Jo@example.com", "jsecret")
	followMail(t, st, mb, "jo@example.com", 1)
	r := st.Do(t, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "jo", "password": "jo's password",
		"auth": map[string]any{"type": "m.login.email.identity", "threepid_creds": map[string]any{"sid": sid, "client_secret": "jsecret"}}})
	wantReply(t, "register with an address", r, http.StatusOK, "")
	token, _ := r.Body["access_token"].(string)
	r = st.Do(t, "GET", "/_matrix/client/v3/pushers", token, nil)
	pushers, _ := r.Body["pushers"].([]any)
	if len(pushers) != 1 {
		t.Fatalf("jo's pushers: %s", r.Raw)
	}
	if p := pushers[0].(map[string]any); p["kind"] != "email" || p["pushkey"] != "jo@example.com" {
		t.Fatalf("jo's pusher: %s", r.Raw)
	}

	// Without notifications, no pusher.
	st, mb = startMailStack(t, "CIRRUS_ENABLE_REGISTRATION=true")
	sid = requestToken(t, st, "/register/email/requestToken", "kay@example.com", "ksecret")
	followMail(t, st, mb, "kay@example.com", 1)
	r = st.Do(t, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "kay", "password": "kay's password",
		"auth": map[string]any{"type": "m.login.email.identity", "threepid_creds": map[string]any{"sid": sid, "client_secret": "ksecret"}}})
	wantReply(t, "register with an address, no notifications", r, http.StatusOK, "")
	token, _ = r.Body["access_token"].(string)
	if r := st.Do(t, "GET", "/_matrix/client/v3/pushers", token, nil); string(r.Raw) != `{"pushers":[]}` {
		t.Fatalf("kay's pushers: %s", r.Raw)
	}
}
