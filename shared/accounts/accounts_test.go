package accounts_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/store"
	"github.com/cirrus-matrix/cirrus/shared/store/embedded"
)

func newService(t *testing.T) *accounts.Service {
	t.Helper()
	srv, err := embedded.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	st, err := store.Open(context.Background(), store.Options{Table: "t", Endpoint: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CreateTable(context.Background()); err != nil {
		t.Fatal(err)
	}
	return &accounts.Service{Store: st, ServerName: "example.org"}
}

func TestValidLocalpart(t *testing.T) {
	for name, ok := range map[string]bool{
		"alice": true, "a.b_c=d-e/f+g": true, "x1": true,
		"": false, "Alice": false, "al ice": false, "ål": false, "12345": false, "_bridge": false, "a:b": false,
	} {
		if err := accounts.ValidLocalpart(name, "example.org"); (err == nil) != ok {
			t.Errorf("ValidLocalpart(%q) = %v, want ok=%v", name, err, ok)
		}
	}
	long := string(bytes.Repeat([]byte("a"), 250))
	if err := accounts.ValidLocalpart(long, "example.org"); !errors.Is(err, accounts.ErrInvalidUsername) {
		t.Errorf("a 263-byte user ID was accepted")
	}
}

func TestRegister_TakenNameLeavesNothing(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	first, err := s.Register(ctx, accounts.NewUser{Localpart: "Alice", Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	if first.UserID != "@alice:example.org" || len(first.AccessToken) < 43 || len(first.DeviceID) != 10 {
		t.Fatalf("session %+v", first)
	}
	_, err = s.Register(ctx, accounts.NewUser{Localpart: "alice", Password: "pw2", DeviceID: "SECOND"})
	if !errors.Is(err, accounts.ErrUserInUse) {
		t.Fatalf("second alice: %v, want ErrUserInUse", err)
	}
	if sess, err := s.Authenticate(ctx, first.AccessToken); err != nil || sess.UserID != first.UserID || sess.DeviceID != first.DeviceID {
		t.Fatalf("authenticate first token: %+v, %v", sess, err)
	}
	if _, err := s.Authenticate(ctx, "cirrus_forged"); !errors.Is(err, accounts.ErrUnknownToken) {
		t.Fatalf("forged token: %v", err)
	}
	inhibited, err := s.Register(ctx, accounts.NewUser{Localpart: "bob", Password: "pw", InhibitLogin: true})
	if err != nil || inhibited.AccessToken != "" || inhibited.DeviceID != "" {
		t.Fatalf("inhibit_login: %+v, %v", inhibited, err)
	}
}

func TestHashPassword_SynapseCompatible(t *testing.T) {
	h, err := accounts.HashPassword("hunter2")
	if err != nil {
		t.Fatal(err)
	}
	if cost, _ := bcrypt.Cost([]byte(h)); cost != accounts.BcryptCost {
		t.Fatalf("cost %d", cost)
	}
	// Synapse writes $2b$ hashes (hash_password); Go's bcrypt writes $2a$,
	// the same algorithm under another name, and must verify both.
	b, _ := bcrypt.GenerateFromPassword([]byte("hunter2"), 4)
	synapse := "$2b$" + string(b[4:])
	if err := bcrypt.CompareHashAndPassword([]byte(synapse), []byte("hunter2")); err != nil {
		t.Fatalf("a $2b$ hash does not verify: %v", err)
	}
}

// TestWhoami_OneRead checks the cost the docs promise: an authenticated
// request reads one item, the token's.
func TestWhoami_OneRead(t *testing.T) {
	s := newService(t)
	sess, err := s.Register(context.Background(), accounts.NewUser{Localpart: "carol", Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	rt := httpapi.NewRouter()
	s.Routes(rt, false, false, "")
	h := httpapi.Logging(slog.New(slog.NewJSONHandler(&logs, nil)), rt)
	req := httptest.NewRequest("GET", "/_matrix/client/v3/account/whoami", nil)
	req.Header.Set("Authorization", "Bearer "+sess.AccessToken)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("whoami: %d %s", rec.Code, rec.Body)
	}
	var line struct {
		DynamoDB store.Usage `json:"dynamodb"`
	}
	json.Unmarshal(logs.Bytes(), &line)
	if line.DynamoDB.Calls != 1 || line.DynamoDB.ReadUnits != 1 || line.DynamoDB.WriteUnits != 0 {
		t.Fatalf("whoami cost %+v, want one call of one RCU", line.DynamoDB)
	}
	if bytes.Contains(logs.Bytes(), []byte(sess.AccessToken)) {
		t.Fatal("the access token was logged")
	}
}

// TestRegistrationMAC checks the HMAC against values computed the way
// Synapse's register_new_matrix_user does (Python's hmac over the NUL-joined
// fields), so that the script works against Cirrus unchanged.
func TestRegistrationMAC(t *testing.T) {
	for _, tc := range []struct {
		user, password string
		admin          bool
		want           string
	}{
		{"alice", "p@ss w0rd", true, "cdd541849942468304de6e827bec508c62915fd1"},
		{"bob", "pw", false, "689314bef59d09e67bd409952b90712f99325f36"},
	} {
		if got := accounts.RegistrationMAC("shared secret", "abc123nonce", tc.user, tc.password, tc.admin); got != tc.want {
			t.Errorf("RegistrationMAC(%s) = %s, want %s", tc.user, got, tc.want)
		}
	}
}
