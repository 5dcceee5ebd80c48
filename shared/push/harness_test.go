package push_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/config"
	"github.com/cirrus-matrix/cirrus/shared/server"
	"github.com/cirrus-matrix/cirrus/shared/store/embedded"
)

const sharedSecret = "push-test-shared-secret"

// homeserver is the real client handler tree of server.Open over the
// embedded DynamoDB API server, on a loopback listener.
type homeserver struct {
	URL string
	srv *server.Server
	// logs holds the request log lines, for reading the DynamoDB meter.
	logs *lockedBuffer
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func startHomeserver(t *testing.T) *homeserver {
	t.Helper()
	db, err := embedded.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	cfg := config.Defaults()
	dir := t.TempDir()
	cfg.DataDir = dir
	cfg.DynamoDBEndpoint = db.URL()
	cfg.DynamoDBTable = "cirrus"
	cfg.SigningKeyPath = filepath.Join(dir, "signing.key")
	cfg.RegistrationSharedSecret = sharedSecret
	logs := &lockedBuffer{}
	ctx := context.Background()
	srv, err := server.Open(ctx, &cfg, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Store.CreateTable(ctx); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.ClientHandler())
	t.Cleanup(ts.Close)
	return &homeserver{URL: ts.URL, srv: srv, logs: logs}
}

type user struct {
	ID, Device, Token string
}

// register creates a user through Synapse's shared-secret registration API,
// as `cirrus register` does.
func (h *homeserver) register(t *testing.T, localpart string) user {
	t.Helper()
	api := h.URL + "/_synapse/admin/v1/register"
	r := call(t, "GET", api, "", nil)
	if r.status != 200 {
		t.Fatalf("nonce: %d %s", r.status, r.raw)
	}
	nonce := r.body["nonce"].(string)
	mac := accounts.RegistrationMAC(sharedSecret, nonce, localpart, "pw-"+localpart, false)
	r = call(t, "POST", api, "", map[string]any{"nonce": nonce, "username": localpart, "password": "pw-" + localpart, "admin": false, "mac": mac})
	if r.status != 200 {
		t.Fatalf("register %s: %d %s", localpart, r.status, r.raw)
	}
	return user{ID: r.body["user_id"].(string), Device: r.body["device_id"].(string), Token: r.body["access_token"].(string)}
}

type reply struct {
	status int
	body   map[string]any
	raw    []byte
}

// call sends body (a string is sent as it is, anything else as JSON) with
// the access token, and reads a JSON object back.
func call(t *testing.T, method, url, token string, body any) reply {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewReader([]byte(b))
	default:
		enc, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(enc)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := reply{status: res.StatusCode, raw: raw}
	if err := json.Unmarshal(raw, &r.body); err != nil {
		t.Fatalf("%s %s: body is not a JSON object: %q", method, url, raw)
	}
	return r
}

// wantError checks a Matrix error reply.
func wantError(t *testing.T, what string, r reply, status int, errcode string) {
	t.Helper()
	if r.status != status || r.body["errcode"] != errcode {
		t.Errorf("%s: got %d %s, want %d %s", what, r.status, r.raw, status, errcode)
	}
}

func wantOK(t *testing.T, what string, r reply) {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("%s: got %d %s, want 200", what, r.status, r.raw)
	}
}
