package threepid_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/cirrus-matrix/cirrus/shared/mail"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
	"github.com/cirrus-matrix/cirrus/shared/testenv"
	"github.com/cirrus-matrix/cirrus/shared/threepid"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// password is the one servertest.Register gives every user.
const password = "correct horse battery staple"

const (
	addPath      = "/_matrix/client/v3/account/3pid/email/requestToken"
	passwordPath = "/_matrix/client/v3/account/password/email/requestToken"
	registerPath = "/_matrix/client/v3/register/email/requestToken"
)

// start runs a stack with an email block, its mail going to the SES
// stand-in, and a validation rate limit no test reaches unless it sets
// its own.
func start(t *testing.T, env ...string) (*servertest.Stack, *servertest.Mailbox) {
	t.Helper()
	env = append([]string{"CIRRUS_EMAIL_NOTIF_FROM=Cirrus <noreply@example.org>",
		"CIRRUS_RC_3PID_VALIDATION_PER_SECOND=1", "CIRRUS_RC_3PID_VALIDATION_BURST_COUNT=1000"}, env...)
	st := servertest.Start(t, env...)
	return st, st.UseSES(t)
}

func requestToken(t *testing.T, st *servertest.Stack, path, secret, email string, attempt int) servertest.Reply {
	t.Helper()
	return st.Do(t, "POST", path, "", map[string]any{"client_secret": secret, "email": email, "send_attempt": attempt})
}

func wantError(t *testing.T, r servertest.Reply, status int, code string) {
	t.Helper()
	if r.Status != status || r.Body["errcode"] != code {
		t.Fatalf("got %d %s, want %d %s", r.Status, r.Raw, status, code)
	}
}

func sid(t *testing.T, r servertest.Reply) string {
	t.Helper()
	s, _ := r.Body["sid"].(string)
	if r.Status != 200 || s == "" {
		t.Fatalf("requestToken: %d %s", r.Status, r.Raw)
	}
	return s
}

// page is an HTML answer of the validation page.
type page struct {
	status int
	header http.Header
	body   string
}

func get(t *testing.T, link string) page {
	t.Helper()
	resp, err := http.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	return readPage(t, resp)
}

func readPage(t *testing.T, resp *http.Response) page {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return page{resp.StatusCode, resp.Header, string(b)}
}

var hiddenRE = regexp.MustCompile(`<input type="hidden" name="([a-z_]+)" value="([^"]*)">`)
var actionRE = regexp.MustCompile(`<form method="post" action="([^"]+)">`)

// confirm presses the button of the confirm page p (from st).
func confirm(t *testing.T, st *servertest.Stack, p page) page {
	t.Helper()
	m := actionRE.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("confirm page has no POST form: %s", p.body)
	}
	form := url.Values{}
	for _, f := range hiddenRE.FindAllStringSubmatch(p.body, -1) {
		form.Set(f[1], f[2])
	}
	if !strings.HasPrefix(m[1], st.URL+"/") {
		t.Fatalf("the form posts to %s, not to the server's public base URL", m[1])
	}
	return post(t, m[1], form)
}

func post(t *testing.T, target string, form url.Values) page {
	t.Helper()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.PostForm(target, form)
	if err != nil {
		t.Fatal(err)
	}
	return readPage(t, resp)
}

// linkOf is the validation link of the n-th mail (from 1) sent to address.
func linkOf(t *testing.T, st *servertest.Stack, box *servertest.Mailbox, address string, n int) string {
	t.Helper()
	mails := box.Wait(t, address, n)
	return mails[n-1].LinkTo(t, st.URL+threepid.SubmitPath)
}

// addWithPassword calls /account/3pid/add through user-interactive auth.
func addWithPassword(t *testing.T, st *servertest.Stack, u servertest.User, sid, secret string) servertest.Reply {
	t.Helper()
	path := "/_matrix/client/v3/account/3pid/add"
	r := st.Do(t, "POST", path, u.AccessToken, map[string]any{"sid": sid, "client_secret": secret})
	if r.Status != 401 {
		t.Fatalf("add without auth: %d %s, want the 401 of user-interactive auth", r.Status, r.Raw)
	}
	return st.Do(t, "POST", path, u.AccessToken, map[string]any{"sid": sid, "client_secret": secret,
		"auth": map[string]any{"type": "m.login.password", "session": r.Body["session"], "password": password,
			"identifier": map[string]any{"type": "m.id.user", "user": u.ID}}})
}

func TestAddAddress_ByTheLinkInTheMail(t *testing.T) {
	st, box := start(t)
	alice := st.Member(t, "alice")
	const secret, address = "alice_secret.1", "alice.add@example.com"
	s := sid(t, requestToken(t, st, addPath, secret, "  Alice.Add@Example.COM ", 1))
	st.CheckCost(t, "requestToken (new session, mail sent)", "requestToken", servertest.Want(6, 3, 3))
	mails := box.Wait(t, address, 1)
	if !strings.Contains(mails[0].Subject, "Confirm your email address") {
		t.Errorf("subject %q", mails[0].Subject)
	}
	link := mails[0].LinkTo(t, st.URL+threepid.SubmitPath)

	// Following the link shows a button and validates nothing, so that a
	// mail scanner that prefetches it cannot.
	p := get(t, link)
	if p.status != 200 || !strings.Contains(p.body, `<form method="post"`) || !strings.Contains(p.body, address) {
		t.Fatalf("GET link: %d %s", p.status, p.body)
	}
	st.CheckCost(t, "the link's page (GET)", threepid.SubmitPath, servertest.Want(1, 1, 0))
	if strings.Contains(p.body, "<script") {
		t.Error("the page has a script")
	}
	if p.header.Get("X-Frame-Options") != "DENY" || !strings.Contains(p.header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Errorf("page headers: %v", p.header)
	}
	wantError(t, addWithPassword(t, st, alice.User, s, secret), 400, "M_THREEPID_AUTH_FAILED")

	done := confirm(t, st, p)
	if done.status != 200 || !strings.Contains(done.body, "is confirmed") {
		t.Fatalf("confirm: %d %s", done.status, done.body)
	}
	if done.header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("result page headers: %v", done.header)
	}
	st.CheckCost(t, "validate (POST the page)", threepid.SubmitPath, servertest.Want(2, 1, 1))
	// The token works once.
	again := confirm(t, st, p)
	if again.status != 400 || !strings.Contains(again.body, "already used") {
		t.Fatalf("second confirm: %d %s", again.status, again.body)
	}

	if r := addWithPassword(t, st, alice.User, s, secret); r.Status != 200 {
		t.Fatalf("add: %d %s", r.Status, r.Raw)
	}
	st.CheckCost(t, "3pid/add (UIA stage passed, bind)", "/account/3pid/add", servertest.Want(8, 6, 6))
	var list struct {
		ThreePIDs []threepid.ThreePID `json:"threepids"`
	}
	ctx := context.Background()
	if _, err := alice.MakeRequest(ctx, "GET", alice.BuildClientURL("v3", "account", "3pid"), nil, &list); err != nil {
		t.Fatal(err)
	}
	st.CheckCost(t, "GET /account/3pid (one address)", "/account/3pid", servertest.Want(2, 2, 0))
	if len(list.ThreePIDs) != 1 || list.ThreePIDs[0].Address != address || list.ThreePIDs[0].Medium != "email" ||
		list.ThreePIDs[0].ValidatedAt == 0 || list.ThreePIDs[0].AddedAt < list.ThreePIDs[0].ValidatedAt {
		t.Fatalf("threepids: %+v", list.ThreePIDs)
	}
	svc := st.Server.ThreePIDs
	if owner, err := svc.UserOf(ctx, "email", "ALICE.add@example.com"); err != nil || owner != alice.ID {
		t.Errorf("UserOf: %q, %v", owner, err)
	}
	if medium, got, err := svc.Validated(ctx, s, secret); err != nil || medium != "email" || got != address {
		t.Errorf("Validated: %q %q %v", medium, got, err)
	}
	if _, _, err := svc.Validated(ctx, s, "another_secret"); err == nil {
		t.Error("Validated with another client secret")
	}
	if ok, err := svc.Owns(ctx, alice.ID, address); !ok || err != nil {
		t.Errorf("Owns: %v %v", ok, err)
	}

	// Delete, through the client library's request path.
	var del struct {
		Result string `json:"id_server_unbind_result"`
	}
	if _, err := alice.MakeRequest(ctx, "POST", alice.BuildClientURL("v3", "account", "3pid", "delete"),
		map[string]string{"medium": "email", "address": address}, &del); err != nil {
		t.Fatal(err)
	}
	// The last write is the DeleteItem of the address's email pusher.
	st.CheckCost(t, "3pid/delete (no identity server)", "/account/3pid/delete", servertest.Want(6, 3, 3))
	if del.Result != "no-support" {
		t.Errorf("id_server_unbind_result %q, want no-support (no identity server known)", del.Result)
	}
	if _, err := alice.MakeRequest(ctx, "GET", alice.BuildClientURL("v3", "account", "3pid"), nil, &list); err != nil || len(list.ThreePIDs) != 0 {
		t.Fatalf("after delete: %+v %v", list.ThreePIDs, err)
	}
	if owner, _ := svc.UserOf(ctx, "email", address); owner != "" {
		t.Errorf("deleted address still bound to %q", owner)
	}
}

func TestExpiredToken(t *testing.T) {
	st, box := start(t, "CIRRUS_EMAIL_VALIDATION_TOKEN_LIFETIME=1s")
	const address = "expiring@example.com"
	sid(t, requestToken(t, st, addPath, "expiring_secret", address, 1))
	link := linkOf(t, st, box, address, 1)
	p := get(t, link)
	if p.status != 200 {
		// The second may already be over on a slow machine: then the
		// page says so, which is what this test waits for anyway.
		t.Logf("GET link: %d", p.status)
	}
	u, _ := url.Parse(link)
	form := url.Values{"sid": {u.Query().Get("sid")}, "token": {u.Query().Get("token")}}
	deadline := time.Now().Add(time.Minute)
	for get(t, link).status != 400 {
		if time.Now().After(deadline) {
			t.Fatal("the link still works a minute after a lifetime of one second")
		}
		time.Sleep(100 * time.Millisecond)
	}
	res := post(t, st.URL+threepid.SubmitPath, form)
	if res.status != 400 || !strings.Contains(res.body, "not valid or has expired") {
		t.Fatalf("POST expired: %d %s", res.status, res.body)
	}
}

func TestSendAttempt(t *testing.T) {
	st, box := start(t)
	const secret, address = "attempt_secret", "attempts@example.com"
	first := sid(t, requestToken(t, st, addPath, secret, address, 1))
	if got := sid(t, requestToken(t, st, addPath, secret, address, 1)); got != first {
		t.Errorf("same send_attempt: sid %q, want %q", got, first)
	}
	st.CheckCost(t, "requestToken (same send_attempt, nothing sent)", "requestToken", servertest.Want(4, 2, 2))
	if n := len(box.To(t, address)); n != 1 {
		t.Fatalf("%d mails after a repeated send_attempt, want 1", n)
	}
	if got := sid(t, requestToken(t, st, addPath, secret, address, 2)); got != first {
		t.Errorf("greater send_attempt: sid %q, want %q", got, first)
	}
	if got := sid(t, requestToken(t, st, addPath, secret, address, 1)); got != first {
		t.Errorf("smaller send_attempt: sid %q", got)
	}
	mails := box.To(t, address)
	if len(mails) != 2 {
		t.Fatalf("%d mails, want 2", len(mails))
	}
	// The first mail's link still works: the new mail added a token.
	p := get(t, mails[0].LinkTo(t, st.URL+threepid.SubmitPath))
	if res := confirm(t, st, p); res.status != 200 {
		t.Fatalf("first link: %d %s", res.status, res.body)
	}
	// The deprecated POST /account/3pid adds the address of a session
	// this server validated, without UIA (as Synapse).
	hank := st.Register(t, "hank")
	if r := st.Do(t, "POST", "/_matrix/client/v3/account/3pid", hank.AccessToken, map[string]any{
		"three_pid_creds": map[string]string{"client_secret": secret, "sid": first, "id_server": "id.example.org", "id_access_token": "x"}}); r.Status != 200 {
		t.Fatalf("POST /account/3pid: %d %s", r.Status, r.Raw)
	}
	if owner, _ := st.Server.ThreePIDs.UserOf(context.Background(), "email", address); owner != hank.ID {
		t.Errorf("after POST /account/3pid the address belongs to %q", owner)
	}
	// Another client secret is another session.
	if other := sid(t, requestToken(t, st, addPath, "other_secret", address, 1)); other == first {
		t.Error("another client secret got the same sid")
	}
}

func TestInUseAndNotFound(t *testing.T) {
	st, box := start(t, "CIRRUS_REQUEST_TOKEN_INHIBIT_3PID_ERRORS=false")
	ctx := context.Background()
	bob := st.Register(t, "bob")
	carol := st.Register(t, "carol")
	const taken = "taken@example.com"

	// Carol validates an address that bob then gets first.
	s := sid(t, requestToken(t, st, addPath, "carol_secret", taken, 1))
	if res := confirm(t, st, get(t, linkOf(t, st, box, taken, 1))); res.status != 200 {
		t.Fatalf("confirm: %d %s", res.status, res.body)
	}
	if err := st.Server.ThreePIDs.Bind(ctx, bob.ID, "email", taken); err != nil {
		t.Fatal(err)
	}
	if err := st.Server.ThreePIDs.Bind(ctx, bob.ID, "email", "Taken@example.com"); err != nil {
		t.Errorf("binding again to the same user: %v", err)
	}
	if err := st.Server.ThreePIDs.Bind(ctx, carol.ID, "email", taken); err == nil {
		t.Error("Bind gave bob's address to carol")
	}
	wantError(t, addWithPassword(t, st, carol, s, "carol_secret"), 400, "M_THREEPID_IN_USE")

	wantError(t, requestToken(t, st, addPath, "s1", taken, 1), 400, "M_THREEPID_IN_USE")
	wantError(t, requestToken(t, st, registerPath, "s1", taken, 1), 400, "M_THREEPID_IN_USE")
	wantError(t, requestToken(t, st, passwordPath, "s1", "nobody@example.com", 1), 400, "M_THREEPID_NOT_FOUND")
	// A password reset of a bound address sends its own mail.
	sid(t, requestToken(t, st, passwordPath, "s1", taken, 1))
	mails := box.Wait(t, taken, 2)
	if !strings.Contains(mails[1].Subject, "Reset") {
		t.Errorf("password mail subject %q", mails[1].Subject)
	}
}

func TestInhibitErrors(t *testing.T) {
	st, box := start(t)
	ctx := context.Background()
	dave := st.Register(t, "dave")
	const bound, unbound = "dave@example.com", "nobody.here@example.com"
	if err := st.Server.ThreePIDs.Bind(ctx, dave.ID, "email", bound); err != nil {
		t.Fatal(err)
	}
	fake := sid(t, requestToken(t, st, addPath, "inhibit_secret", bound, 1))
	st.CheckCost(t, "requestToken (inhibited error, made-up sid)", "requestToken", servertest.Want(3, 1, 2))
	sid(t, requestToken(t, st, registerPath, "inhibit_secret", bound, 1))
	sid(t, requestToken(t, st, passwordPath, "inhibit_secret", unbound, 1))
	// A real session, to see that the fake ones sent nothing.
	sid(t, requestToken(t, st, passwordPath, "inhibit_secret", bound, 1))
	box.Wait(t, bound, 1)
	if n := len(box.To(t, bound)); n != 1 {
		t.Errorf("%d mails to the bound address, want only the password reset", n)
	}
	if n := len(box.To(t, unbound)); n != 0 {
		t.Errorf("%d mails to an address without account", n)
	}
	// The fake session fails as a wrong token does.
	res := post(t, st.URL+threepid.SubmitPath, url.Values{"sid": {fake}, "token": {"guess"}})
	if res.status != 400 || !strings.Contains(res.body, "not valid or has expired") {
		t.Fatalf("fake session: %d %s", res.status, res.body)
	}
	if _, _, err := st.Server.ThreePIDs.Validated(ctx, fake, "inhibit_secret"); err == nil {
		t.Error("a fake session validated")
	}
}

func TestBadRequests(t *testing.T) {
	st, _ := start(t)
	for _, tc := range []struct {
		name   string
		path   string
		body   any
		status int
		code   string
	}{
		{"secret with a space", addPath, map[string]any{"client_secret": "a b", "email": "x@example.com", "send_attempt": 1}, 400, "M_INVALID_PARAM"},
		{"secret too long", addPath, map[string]any{"client_secret": strings.Repeat("a", 256), "email": "x@example.com", "send_attempt": 1}, 400, "M_INVALID_PARAM"},
		{"no secret", addPath, map[string]any{"email": "x@example.com", "send_attempt": 1}, 400, "M_MISSING_PARAM"},
		{"not an email", passwordPath, map[string]any{"client_secret": "s", "email": "not-an-email", "send_attempt": 1}, 400, "M_INVALID_PARAM"},
		{"email with a name", registerPath, map[string]any{"client_secret": "s", "email": "X <x@example.com>", "send_attempt": 1}, 400, "M_INVALID_PARAM"},
		{"no send_attempt", addPath, map[string]any{"client_secret": "s", "email": "x@example.com"}, 400, "M_MISSING_PARAM"},
		{"send_attempt a string", addPath, map[string]any{"client_secret": "s", "email": "x@example.com", "send_attempt": "1"}, 400, "M_BAD_JSON"},
		{"javascript next_link", addPath, map[string]any{"client_secret": "s", "email": "x@example.com", "send_attempt": 1, "next_link": "javascript:alert(1)"}, 400, "M_INVALID_PARAM"},
		{"not JSON", addPath, "{", 400, "M_NOT_JSON"},
		{"msisdn", "/_matrix/client/v3/account/3pid/msisdn/requestToken", map[string]any{"client_secret": "s", "country": "GB", "phone_number": "07700900000", "send_attempt": 1}, 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED"},
		{"msisdn register", "/_matrix/client/v3/register/msisdn/requestToken", map[string]any{}, 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, st.Do(t, "POST", tc.path, "", tc.body), tc.status, tc.code)
		})
	}
	erin := st.Register(t, "erin")
	wantError(t, st.Do(t, "POST", "/_matrix/client/v3/account/3pid/delete", erin.AccessToken, map[string]string{"medium": "fax", "address": "x"}), 400, "M_INVALID_PARAM")
	wantError(t, st.Do(t, "POST", "/_matrix/client/v3/account/3pid/delete", erin.AccessToken, map[string]string{"medium": "email"}), 400, "M_MISSING_PARAM")
	wantError(t, st.Do(t, "POST", "/_matrix/client/v3/account/3pid/bind", erin.AccessToken, map[string]string{
		"client_secret": "s", "sid": "x", "id_server": "https://id.example.org/path", "id_access_token": "t"}), 400, "M_INVALID_PARAM")
	wantError(t, st.Do(t, "POST", "/_matrix/client/v3/account/3pid", erin.AccessToken, map[string]any{
		"three_pid_creds": map[string]string{"client_secret": "s", "sid": "unknown"}}), 403, "M_THREEPID_AUTH_FAILED")
	// A page link with missing or made-up parts is the failure page.
	if p := get(t, st.URL+threepid.SubmitPath); p.status != 400 || p.header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("page without parameters: %d %v", p.status, p.header)
	}
}

func TestRateLimit(t *testing.T) {
	st, _ := start(t, "CIRRUS_RC_3PID_VALIDATION_PER_SECOND=0.001", "CIRRUS_RC_3PID_VALIDATION_BURST_COUNT=2")
	// One fixed instant: the requests must not straddle the end of a
	// window, which would start the count again.
	now := time.Now()
	st.Server.ThreePIDs.Limiter.Now = func() time.Time { return now }
	sid(t, requestToken(t, st, addPath, "rl", "limited@example.com", 1))
	sid(t, requestToken(t, st, addPath, "rl", "limited@example.com", 2))
	r := requestToken(t, st, addPath, "rl", "limited@example.com", 3)
	wantError(t, r, 429, "M_LIMIT_EXCEEDED")
	if ms, _ := r.Body["retry_after_ms"].(float64); ms <= 0 {
		t.Errorf("retry_after_ms %v", r.Body["retry_after_ms"])
	}
	// The same client IP, another address: the per-IP counter is spent too.
	wantError(t, requestToken(t, st, addPath, "rl", "other.limited@example.com", 1), 429, "M_LIMIT_EXCEEDED")
}

func TestSuppressedAddress(t *testing.T) {
	st, _ := start(t)
	list := &mail.Suppressions{Store: st.Server.Store}
	if err := list.Add(context.Background(), mail.Suppression{Address: "bounced@example.com", Reason: mail.ReasonBounce, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	r := requestToken(t, st, addPath, "s", "Bounced@example.com", 1)
	wantError(t, r, 403, "M_THREEPID_DENIED")
}

func TestNoEmailBlock(t *testing.T) {
	st := servertest.Start(t)
	r := requestToken(t, st, addPath, "s", "x@example.com", 1)
	wantError(t, r, 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED")
	if msg, _ := r.Body["error"].(string); !strings.Contains(msg, "mail is not configured") {
		t.Errorf("error %q", msg)
	}
	wantError(t, requestToken(t, st, registerPath, "s", "x@example.com", 1), 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED")
}

// identityServer is a fake identity server over TLS that records what it
// was sent.
type identityServer struct {
	*httptest.Server
	mu      sync.Mutex
	binds   []map[string]any
	bearer  []string
	unbinds []map[string]any
	auth    []string
	origin  string
}

func newIdentityServer(t *testing.T, key ed25519.PublicKey, keyID string) *identityServer {
	is := &identityServer{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /_matrix/identity/v2/3pid/bind", func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		is.mu.Lock()
		is.binds = append(is.binds, body)
		is.bearer = append(is.bearer, r.Header.Get("Authorization"))
		is.mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer id_token_1" {
			w.WriteHeader(401)
			w.Write([]byte(`{"errcode":"M_UNAUTHORIZED","error":"bad token"}`))
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"medium": "email", "address": "Bound@Example.com", "mxid": body["mxid"],
			"not_before": 1, "not_after": 2, "ts": 1, "signatures": map[string]any{}})
	})
	mux.HandleFunc("POST /_matrix/identity/v2/3pid/unbind", func(w http.ResponseWriter, r *http.Request) {
		// The request is signed by the homeserver: check it.
		fr, res := fclient.VerifyHTTPRequest(r, time.Now(), spec.ServerName(r.Host), nil, keyVerifier{key: key, keyID: keyID})
		is.mu.Lock()
		defer is.mu.Unlock()
		is.auth = append(is.auth, r.Header.Get("Authorization"))
		if fr == nil {
			w.WriteHeader(res.Code)
			w.Write([]byte(`{"errcode":"M_FORBIDDEN","error":"Invalid homeserver signature"}`))
			return
		}
		is.origin = string(fr.Origin())
		var body map[string]any
		json.Unmarshal(fr.Content(), &body)
		is.unbinds = append(is.unbinds, body)
		w.Write([]byte(`{}`))
	})
	is.Server = httptest.NewTLSServer(mux)
	t.Cleanup(is.Close)
	return is
}

// keyVerifier checks signatures with the one key of the stack.
type keyVerifier struct {
	key   ed25519.PublicKey
	keyID string
}

func (v keyVerifier) VerifyJSONs(_ context.Context, reqs []gomatrixserverlib.VerifyJSONRequest) ([]gomatrixserverlib.VerifyJSONResult, error) {
	out := make([]gomatrixserverlib.VerifyJSONResult, len(reqs))
	for i, r := range reqs {
		out[i].Error = gomatrixserverlib.VerifyJSON(string(r.ServerName), gomatrixserverlib.KeyID(v.keyID), v.key, r.Message)
	}
	return out, nil
}

func TestIdentityServer_BindUnbind(t *testing.T) {
	st, _ := start(t)
	key := st.Server.Key
	is := newIdentityServer(t, key.Public(), key.ID)
	st.Server.ThreePIDs.IdentityClient = is.Client()
	idServer := strings.TrimPrefix(is.URL, "https://")
	frank := st.Register(t, "frank")
	const bindPath = "/_matrix/client/v3/account/3pid/bind"

	wantError(t, st.Do(t, "POST", bindPath, frank.AccessToken, map[string]string{
		"client_secret": "id_secret", "sid": "is_sid", "id_server": idServer, "id_access_token": "wrong"}), 401, "M_UNAUTHORIZED")
	r := st.Do(t, "POST", bindPath, frank.AccessToken, map[string]string{
		"client_secret": "id_secret", "sid": "is_sid", "id_server": idServer, "id_access_token": "id_token_1"})
	if r.Status != 200 {
		t.Fatalf("bind: %d %s", r.Status, r.Raw)
	}
	is.mu.Lock()
	got := is.binds[len(is.binds)-1]
	is.mu.Unlock()
	if got["sid"] != "is_sid" || got["client_secret"] != "id_secret" || got["mxid"] != frank.ID {
		t.Errorf("identity server got %v", got)
	}

	// Unbind without naming the server: the one it was bound through.
	r = st.Do(t, "POST", "/_matrix/client/v3/account/3pid/unbind", frank.AccessToken, map[string]string{"medium": "email", "address": "bound@example.com"})
	if r.Status != 200 || r.Body["id_server_unbind_result"] != "success" {
		t.Fatalf("unbind: %d %s", r.Status, r.Raw)
	}
	is.mu.Lock()
	if len(is.unbinds) != 1 || is.origin != "example.org" || !strings.HasPrefix(is.auth[0], "X-Matrix ") {
		t.Errorf("unbind at the identity server: %v from %q (%v)", is.unbinds, is.origin, is.auth)
	} else if tp, _ := is.unbinds[0]["threepid"].(map[string]any); is.unbinds[0]["mxid"] != frank.ID || tp["address"] != "bound@example.com" || tp["medium"] != "email" {
		t.Errorf("unbind body %v", is.unbinds[0])
	}
	is.mu.Unlock()
	// Forgotten once unbound: nothing to unbind from.
	r = st.Do(t, "POST", "/_matrix/client/v3/account/3pid/unbind", frank.AccessToken, map[string]string{"medium": "email", "address": "bound@example.com"})
	if r.Status != 200 || r.Body["id_server_unbind_result"] != "no-support" {
		t.Fatalf("second unbind: %d %s", r.Status, r.Raw)
	}
	// Delete names the identity server.
	r = st.Do(t, "POST", "/_matrix/client/v3/account/3pid/delete", frank.AccessToken, map[string]string{"medium": "email", "address": "bound@example.com", "id_server": idServer})
	if r.Status != 200 || r.Body["id_server_unbind_result"] != "success" {
		t.Fatalf("delete with id_server: %d %s", r.Status, r.Raw)
	}

	// An identity server that is not there is a clear error, not a 500.
	is.Close()
	r = st.Do(t, "POST", bindPath, frank.AccessToken, map[string]string{
		"client_secret": "id_secret", "sid": "is_sid", "id_server": idServer, "id_access_token": "id_token_1"})
	if r.Status != 502 || !strings.Contains(r.Body["error"].(string), "could not be reached") {
		t.Fatalf("bind to a closed server: %d %s", r.Status, r.Raw)
	}
	r = st.Do(t, "POST", "/_matrix/client/v3/account/3pid/unbind", frank.AccessToken, map[string]string{"medium": "email", "address": "bound@example.com", "id_server": idServer})
	if r.Status != 502 {
		t.Fatalf("unbind at a closed server: %d %s", r.Status, r.Raw)
	}
}

func TestRemoveAll(t *testing.T) {
	st, _ := start(t)
	ctx := context.Background()
	gina := st.Register(t, "gina")
	svc := st.Server.ThreePIDs
	for _, a := range []string{"g1@example.com", "g2@example.com"} {
		if err := svc.Bind(ctx, gina.ID, "email", a); err != nil {
			t.Fatal(err)
		}
	}
	if list, err := svc.Addresses(ctx, gina.ID); err != nil || len(list) != 2 {
		t.Fatalf("Addresses: %v %v", list, err)
	}
	if err := svc.RemoveAll(ctx, gina.ID); err != nil {
		t.Fatal(err)
	}
	if list, err := svc.Addresses(ctx, gina.ID); err != nil || len(list) != 0 {
		t.Fatalf("after RemoveAll: %v %v", list, err)
	}
	if owner, _ := svc.UserOf(ctx, "email", "g1@example.com"); owner != "" {
		t.Errorf("g1 still bound to %q", owner)
	}
}

func TestNextLink(t *testing.T) {
	st, box := start(t)
	const address, next = "next.link@example.com", "https://client.example.org/done?step=1&x=2"
	r := st.Do(t, "POST", registerPath, "", map[string]any{"client_secret": "next_secret", "email": address,
		"send_attempt": 1, "next_link": next})
	sid(t, r)
	mails := box.Wait(t, address, 1)
	if !strings.Contains(mails[0].Subject, "register") {
		t.Errorf("registration mail subject %q", mails[0].Subject)
	}
	res := confirm(t, st, get(t, mails[0].LinkTo(t, st.URL+threepid.SubmitPath)))
	if res.status != 200 || !strings.Contains(res.body, `href="https://client.example.org/done?step=1&amp;x=2"`) {
		t.Fatalf("confirm with next_link: %d %s", res.status, res.body)
	}
}
