package keybackup_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/backup"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

var bg = context.Background()

const keysPath = "/_matrix/client/v3/room_keys/keys"
const versionPath = "/_matrix/client/v3/room_keys/version"

// newBackup creates a backup version as a client does: a fresh curve25519
// key, its public half in auth_data.
func newBackup(t *testing.T, c *mautrix.Client) (id.KeyBackupVersion, *backup.MegolmBackupKey) {
	t.Helper()
	key, err := backup.NewMegolmBackupKey()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.CreateKeyBackupVersion(bg, &mautrix.ReqRoomKeysVersionCreate[backup.MegolmAuthData]{
		Algorithm: id.KeyBackupAlgorithmMegolmBackupV1,
		AuthData:  backup.MegolmAuthData{PublicKey: base64Pub(key)},
	})
	if err != nil {
		t.Fatalf("create backup version: %v", err)
	}
	return resp.Version, key
}

// key is a session key whose session_data carries tag, so that a test can
// tell which upload the server kept.
func key(verified bool, firstIndex, forwarded int, tag string) mautrix.ReqKeyBackupData {
	return mautrix.ReqKeyBackupData{
		FirstMessageIndex: firstIndex, ForwardedCount: forwarded, IsVerified: verified,
		SessionData: []byte(fmt.Sprintf(`{"ciphertext":%q,"ephemeral":"eph","mac":"mac"}`, tag)),
	}
}

// tagOf reads the tag of a stored key's session_data.
func tagOf(t *testing.T, body map[string]any) string {
	t.Helper()
	data, _ := body["session_data"].(map[string]any)
	tag, ok := data["ciphertext"].(string)
	if !ok {
		t.Fatalf("no session_data.ciphertext in %v", body)
	}
	return tag
}

// keysURL is the path of the keys of room and session ("" for all) in
// version, escaped as a client sends it.
func keysURL(version id.KeyBackupVersion, room, session string) string {
	p := keysPath
	if room != "" {
		p += "/" + url.PathEscape(room)
	}
	if session != "" {
		p += "/" + url.PathEscape(session)
	}
	if version != "" {
		p += "?version=" + url.QueryEscape(string(version))
	}
	return p
}

// put uploads one session with raw HTTP and returns the reply.
func put(t *testing.T, st *servertest.Stack, u servertest.User, version id.KeyBackupVersion, room, session string, k mautrix.ReqKeyBackupData) servertest.Reply {
	t.Helper()
	return st.Do(t, "PUT", keysURL(version, room, session), u.AccessToken, k)
}

// status reads the etag and count of a reply to a change of keys.
func status(t *testing.T, r servertest.Reply) (string, int) {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("status %d: %s", r.Status, r.Raw)
	}
	etag, ok := r.Body["etag"].(string)
	count, ok2 := r.Body["count"].(float64)
	if !ok || !ok2 {
		t.Fatalf("no etag and count in %s", r.Raw)
	}
	return etag, int(count)
}

// wantError checks a reply's status and errcode.
func wantError(t *testing.T, what string, r servertest.Reply, status int, errcode string) {
	t.Helper()
	if r.Status != status || r.Body["errcode"] != errcode {
		t.Errorf("%s: %d %s, want %d %s", what, r.Status, r.Raw, status, errcode)
	}
}

// wantHTTPError checks a mautrix call's error for status and errcode.
func wantHTTPError(t *testing.T, what string, err error, status int, errcode string) {
	t.Helper()
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.Response == nil || httpErr.Response.StatusCode != status ||
		httpErr.RespError == nil || httpErr.RespError.ErrCode != errcode {
		t.Errorf("%s: got %v, want %d %s", what, err, status, errcode)
	}
}

// login opens another device of u, as a second client of the same user.
func login(t *testing.T, st *servertest.Stack, u servertest.User) servertest.User {
	t.Helper()
	local, _, _ := strings.Cut(strings.TrimPrefix(u.ID, "@"), ":")
	r := st.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{
		"type": "m.login.password", "password": "correct horse battery staple",
		"identifier": map[string]any{"type": "m.id.user", "user": local}})
	if r.Status != http.StatusOK {
		t.Fatalf("login %s: %d %s", u.ID, r.Status, r.Raw)
	}
	out := u
	out.DeviceID, _ = r.Body["device_id"].(string)
	out.AccessToken, _ = r.Body["access_token"].(string)
	return out
}

func b64(b []byte) string { return base64.RawStdEncoding.EncodeToString(b) }

// sessionsOf reads the sessions of a reply to GET of a room's keys.
func sessionsOf(t *testing.T, r servertest.Reply) map[string]any {
	t.Helper()
	sessions, ok := r.Body["sessions"].(map[string]any)
	if r.Status != http.StatusOK || !ok {
		t.Fatalf("keys of a room: %d %s", r.Status, r.Raw)
	}
	return sessions
}
