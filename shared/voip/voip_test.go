package voip_test

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

const path = "/_matrix/client/v3/voip/turnServer"

// TestTurnServer_SharedSecret: credentials a TURN server with the same
// secret accepts (coturn's use-auth-secret): the username is the expiry and
// the user, the password its HMAC-SHA1 under the secret.
func TestTurnServer_SharedSecret(t *testing.T) {
	const secret = "coturn static-auth-secret"
	uris := []any{"turn:turn.example.org?transport=udp", "turn:turn.example.org?transport=tcp"}
	st := servertest.Start(t, "CIRRUS_TURN_URIS=turn:turn.example.org?transport=udp,turn:turn.example.org?transport=tcp",
		"CIRRUS_TURN_SHARED_SECRET="+secret, "CIRRUS_TURN_USER_LIFETIME=1d")
	alice := st.Register(t, "alice")

	before := time.Now().Unix()
	r := st.Do(t, "GET", path, alice.AccessToken, nil)
	after := time.Now().Unix()
	if r.Status != 200 {
		t.Fatalf("turnServer: %d %s", r.Status, r.Raw)
	}
	user, _ := r.Body["username"].(string)
	expiry, who, _ := strings.Cut(user, ":")
	exp, err := strconv.ParseInt(expiry, 10, 64)
	if err != nil || who != alice.ID || exp < before+86400 || exp > after+86400 {
		t.Fatalf("username %q: want <now + 1 day>:%s", user, alice.ID)
	}
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(user))
	if want := base64.StdEncoding.EncodeToString(mac.Sum(nil)); r.Body["password"] != want {
		t.Fatalf("password %v, want %s", r.Body["password"], want)
	}
	if r.Body["ttl"] != float64(86400) || len(r.Body["uris"].([]any)) != 2 || r.Body["uris"].([]any)[1] != uris[1] {
		t.Fatalf("turnServer: %s", r.Raw)
	}
	if r := st.Do(t, "GET", path, "", nil); r.Status != 401 || r.Body["errcode"] != "M_MISSING_TOKEN" {
		t.Fatalf("turnServer without a token: %d %s", r.Status, r.Raw)
	}
}

// TestTurnServer_Configurations: fixed credentials, and Synapse's {} when
// there are no TURN servers or no credentials for them.
func TestTurnServer_Configurations(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"no TURN", nil, `{}`},
		{"URIs without credentials", []string{"CIRRUS_TURN_URIS=turn:turn.example.org"}, `{}`},
		{"fixed credentials", []string{"CIRRUS_TURN_URIS=turns:turn.example.org:5349", "CIRRUS_TURN_USERNAME=calls", "CIRRUS_TURN_PASSWORD=pw"},
			`{"username":"calls","password":"pw","uris":["turns:turn.example.org:5349"],"ttl":3600}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := servertest.Start(t, tc.env...)
			r := st.Do(t, "GET", path, st.Register(t, "alice").AccessToken, nil)
			if r.Status != 200 || strings.TrimSpace(string(r.Raw)) != tc.want {
				t.Fatalf("turnServer: %d %s, want 200 %s", r.Status, r.Raw, tc.want)
			}
		})
	}
}
