// Package servertest starts the real client handler tree for end-to-end
// tests: the embedded DynamoDB API server on loopback, the table created
// through the real SDK, server.Open and ClientHandler behind an
// httptest.Server. Requests go over real HTTP, through every middleware, to
// the real store; users are made with the shared-secret registration API,
// as an operator would.
//
// Only tests import this package: Lambda binaries never link it.
package servertest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/bigbody/fakes3"
	"github.com/cirrus-matrix/cirrus/shared/config"
	"github.com/cirrus-matrix/cirrus/shared/server"
	"github.com/cirrus-matrix/cirrus/shared/store"
	"github.com/cirrus-matrix/cirrus/shared/store/embedded"
)

// ServerName is the server name of every Stack.
const ServerName = "example.org"

// Stack is a running client API.
type Stack struct {
	// URL is the base URL of the client API, without a trailing slash.
	URL    string
	Server *server.Server
	secret string
	logs   *lockedBuffer
	cfg    *config.Config
}

// Start runs a Stack until the test ends. env adds or overrides
// configuration as KEY=VALUE environment entries, such as
// "CIRRUS_ENABLE_REGISTRATION=true".
func Start(t testing.TB, env ...string) *Stack {
	t.Helper()
	ctx := context.Background()
	db, err := embedded.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	var b [16]byte
	rand.Read(b[:])
	secret := hex.EncodeToString(b[:])
	dir := t.TempDir()
	vars := map[string]string{
		"CIRRUS_SERVER_NAME":                "example.org",
		"CIRRUS_DYNAMODB_ENDPOINT":          db.URL(),
		"CIRRUS_DATA_DIR":                   dir,
		"CIRRUS_SIGNING_KEY_PATH":           filepath.Join(dir, "signing.key"),
		"CIRRUS_REGISTRATION_SHARED_SECRET": secret,
		"CIRRUS_CLIENT_LISTEN":              "127.0.0.1:0",
		"CIRRUS_FEDERATION_LISTEN":          "127.0.0.1:0",
	}
	// The listener comes first, so that a stack with an email block has
	// its address as public_baseurl: the links in its mail lead back to it.
	hs := httptest.NewUnstartedServer(nil)
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
		if strings.HasPrefix(k, "CIRRUS_EMAIL_") && vars["CIRRUS_PUBLIC_BASEURL"] == "" {
			vars["CIRRUS_PUBLIC_BASEURL"] = "http://" + hs.Listener.Addr().String() + "/"
		}
	}
	cfg, err := config.Load("", func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	// CIRRUS_LAMBDA_RESPONSE_LIMIT sends larger answers to an S3 API.
	localS3, err := fakes3.ForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if localS3 != nil {
		t.Cleanup(func() { localS3.Close() })
	}
	logs := &lockedBuffer{}
	srv, err := server.Open(ctx, cfg, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Store.CreateTable(ctx); err != nil {
		t.Fatal(err)
	}
	hs.Config.Handler = srv.ClientHandler()
	hs.Start()
	t.Cleanup(hs.Close)
	return &Stack{URL: hs.URL, Server: srv, secret: secret, logs: logs, cfg: cfg}
}

// Twin runs another server on the same table and signing key, as a second
// Lambda instance runs beside the first: nothing in memory is shared.
func (s *Stack) Twin(t testing.TB) *Stack {
	t.Helper()
	srv, err := server.Open(context.Background(), s.cfg, slog.New(slog.NewJSONHandler(s.logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.ClientHandler())
	t.Cleanup(hs.Close)
	return &Stack{URL: hs.URL, Server: srv, secret: s.secret, logs: s.logs, cfg: s.cfg}
}

// User is a registered user with a logged-in device.
type User struct {
	ID, DeviceID, AccessToken string
}

// Register creates the user localpart through POST /_synapse/admin/v1/register.
func (s *Stack) Register(t testing.TB, localpart string) User {
	t.Helper()
	r := s.Do(t, "GET", "/_synapse/admin/v1/register", "", nil)
	nonce, _ := r.Body["nonce"].(string)
	if r.Status != http.StatusOK || nonce == "" {
		t.Fatalf("registration nonce: %d %s", r.Status, r.Raw)
	}
	const password = "correct horse battery staple"
	r = s.Do(t, "POST", "/_synapse/admin/v1/register", "", map[string]any{
		"nonce": nonce, "username": localpart, "password": password,
		"mac": accounts.RegistrationMAC(s.secret, nonce, localpart, password, false),
	})
	if r.Status != http.StatusOK {
		t.Fatalf("register %s: %d %s", localpart, r.Status, r.Raw)
	}
	u := User{}
	u.ID, _ = r.Body["user_id"].(string)
	u.DeviceID, _ = r.Body["device_id"].(string)
	u.AccessToken, _ = r.Body["access_token"].(string)
	if u.ID == "" || u.AccessToken == "" {
		t.Fatalf("register %s: %s", localpart, r.Raw)
	}
	return u
}

// Reply is a response with its JSON object body decoded.
type Reply struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    []byte
}

// Do sends a request to path (escaped as it goes on the wire) with token as
// the bearer token when not empty; see Call.
func (s *Stack) Do(t testing.TB, method, path, token string, body any) Reply {
	t.Helper()
	return Call(t, method, s.URL+path, token, body)
}

// Call sends a request to url with token as the bearer token when not
// empty. body is sent as it is when it is a string or []byte, and as JSON
// otherwise. A body that is not a JSON object fails the test: every Matrix
// answer is one.
func Call(t testing.TB, method, url, token string, body any) Reply {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		doc, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(doc)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := Reply{Status: res.StatusCode, Header: res.Header, Raw: raw}
	if err := json.Unmarshal(raw, &r.Body); err != nil {
		t.Fatalf("%s %s: body is not a JSON object: %q", method, url, raw)
	}
	return r
}

// Request is the log line of one request, as httpapi.Logging writes it.
type Request struct {
	Method   string      `json:"method"`
	Route    string      `json:"route"`
	Path     string      `json:"path"`
	Status   int         `json:"status"`
	DynamoDB store.Usage `json:"dynamodb"`
}

// Requests returns the log lines of the requests served so far, oldest first.
func (s *Stack) Requests(t testing.TB) []Request {
	t.Helper()
	var out []Request
	sc := bufio.NewScanner(strings.NewReader(s.logs.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line struct {
			Msg string `json:"msg"`
			Request
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("log line is not JSON: %q", sc.Text())
		}
		if line.Msg == "request" {
			out = append(out, line.Request)
		}
	}
	return out
}

// LastRequest returns the log line of the last request served.
func (s *Stack) LastRequest(t testing.TB) Request {
	t.Helper()
	reqs := s.Requests(t)
	if len(reqs) == 0 {
		t.Fatal("no request logged")
	}
	return reqs[len(reqs)-1]
}

// LastRequestTo returns the log line of the last request whose route
// contains route.
func (s *Stack) LastRequestTo(t testing.TB, route string) Request {
	t.Helper()
	reqs := s.Requests(t)
	for i := len(reqs) - 1; i >= 0; i-- {
		if strings.Contains(reqs[i].Route, route) {
			return reqs[i]
		}
	}
	t.Fatalf("no request to %s logged", route)
	return Request{}
}

// Cost is what a request is expected to cost in DynamoDB, as the cost
// tests pin it (docs/storage.md quotes them).
type Cost struct {
	Calls    int64
	RCU, WCU float64
}

// Want is the Cost of calls DynamoDB calls, rcu read units and wcu write
// units.
func Want(calls int64, rcu, wcu float64) Cost { return Cost{Calls: calls, RCU: rcu, WCU: wcu} }

// CheckCost fails the test unless the last request whose route contains
// route cost want; what names it in the log and the failure.
func (s *Stack) CheckCost(t testing.TB, what, route string, want Cost) {
	t.Helper()
	CheckUsage(t, what, s.LastRequestTo(t, route).DynamoDB, want)
}

// CheckUsage fails the test unless got is want.
func CheckUsage(t testing.TB, what string, got store.Usage, want Cost) {
	t.Helper()
	t.Logf("%s: %d calls, %.1f RCU, %.1f WCU", what, got.Calls, got.ReadUnits, got.WriteUnits)
	if got.Calls != want.Calls || got.ReadUnits != want.RCU || got.WriteUnits != want.WCU {
		t.Errorf("%s: %d calls, %.1f RCU, %.1f WCU; want %d, %.1f, %.1f", what, got.Calls, got.ReadUnits, got.WriteUnits, want.Calls, want.RCU, want.WCU)
	}
}

// CheckRoundTrips fails the test unless the last request whose route
// contains route made want sequential DynamoDB round trips (store.Meter
// says what they are); what names it in the log and the failure.
func (s *Stack) CheckRoundTrips(t testing.TB, what, route string, want int64) {
	t.Helper()
	s.CheckRoundTripsWithin(t, what, route, want, want)
}

// CheckRoundTripsWithin is CheckRoundTrips for a request whose parallel
// calls may or may not overlap as the scheduler decides: on the embedded
// store a call takes a tenth of a millisecond, less than a goroutine may
// take to start the call beside it. Its round trips are at least least,
// the steps its code makes one after the other, and at most most.
func (s *Stack) CheckRoundTripsWithin(t testing.TB, what, route string, least, most int64) {
	t.Helper()
	u := s.LastRequestTo(t, route).DynamoDB
	t.Logf("%s: %d round trips (%d calls)", what, u.RoundTrips, u.Calls)
	switch {
	case least == most && u.RoundTrips != least:
		t.Errorf("%s: %d round trips (%d calls), want %d", what, u.RoundTrips, u.Calls, least)
	case u.RoundTrips < least || u.RoundTrips > most:
		t.Errorf("%s: %d round trips (%d calls), want %d to %d", what, u.RoundTrips, u.Calls, least, most)
	}
}

// Member is a registered user with a mautrix-go client logged in as them.
type Member struct {
	User
	*mautrix.Client
}

// Member registers localpart and logs a client in as them.
func (s *Stack) Member(t testing.TB, localpart string) Member {
	t.Helper()
	u := s.Register(t, localpart)
	return Member{User: u, Client: s.Client(t, u)}
}

// Client is a mautrix-go client logged in as u, the real client library
// the end-to-end tests drive the server with; it does not retry.
func (s *Stack) Client(t testing.TB, u User) *mautrix.Client {
	t.Helper()
	c, err := mautrix.NewClient(s.URL, id.UserID(u.ID), u.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	c.DeviceID = id.DeviceID(u.DeviceID)
	c.DefaultHTTPRetries = 0
	return c
}

// Logs is everything the server logged.
func (s *Stack) Logs() string { return s.logs.String() }

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
