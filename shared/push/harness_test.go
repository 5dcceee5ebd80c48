package push_test

import (
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/server"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// homeserver is the real client handler tree over the embedded DynamoDB
// API server (servertest), with the short names these tests use.
type homeserver struct {
	URL string
	srv *server.Server
	st  *servertest.Stack
}

func startHomeserver(t *testing.T) *homeserver {
	t.Helper()
	st := servertest.Start(t)
	return &homeserver{URL: st.URL, srv: st.Server, st: st}
}

type user struct {
	ID, Device, Token string
}

// register creates a user through Synapse's shared-secret registration API,
// as `cirrus register` does.
func (h *homeserver) register(t *testing.T, localpart string) user {
	t.Helper()
	u := h.st.Register(t, localpart)
	return user{ID: u.ID, Device: u.DeviceID, Token: u.AccessToken}
}

type reply struct {
	status int
	body   map[string]any
	raw    []byte
}

// call sends body (a string as it is, anything else as JSON) with the access
// token, and reads a JSON object back.
func call(t *testing.T, method, url, token string, body any) reply {
	t.Helper()
	r := servertest.Call(t, method, url, token, body)
	return reply{status: r.Status, body: r.Body, raw: r.Raw}
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
