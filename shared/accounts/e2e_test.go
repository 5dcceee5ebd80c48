package accounts_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/server"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// homeserver is the client tree over the embedded DynamoDB API, served on
// loopback: the code `cirrus serve` and the client Lambda run.
type homeserver struct {
	URL   string
	srv   *server.Server
	clock time.Time // zero: real time
}

func startHomeserver(t *testing.T, openRegistration bool, env ...string) *homeserver {
	t.Helper()
	st := servertest.Start(t, append(env, "CIRRUS_ENABLE_REGISTRATION="+strconv.FormatBool(openRegistration))...)
	hs := &homeserver{URL: st.URL, srv: st.Server}
	hs.useClock()
	return hs
}

// useClock has the server's accounts tell the time by hs.clock.
func (hs *homeserver) useClock() {
	hs.srv.Accounts.Now = func() time.Time {
		if hs.clock.IsZero() {
			return time.Now()
		}
		return hs.clock
	}
}

// user creates an account directly and returns a logged-out client for it.
func (hs *homeserver) user(t *testing.T, localpart, password string) *mautrix.Client {
	t.Helper()
	if _, err := hs.srv.Accounts.Register(context.Background(), accounts.NewUser{Localpart: localpart, Password: password, InhibitLogin: true}); err != nil {
		t.Fatal(err)
	}
	c, err := mautrix.NewClient(hs.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func login(t *testing.T, c *mautrix.Client, user, password string, req mautrix.ReqLogin) *mautrix.RespLogin {
	t.Helper()
	req.Type = mautrix.AuthTypePassword
	req.Identifier = mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: user}
	req.Password = password
	req.StoreCredentials = true
	resp, err := c.Login(context.Background(), &req)
	if err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	return resp
}

// raw sends a request the client library does not make.
func raw(t *testing.T, method, url, token, body string) (int, map[string]any) {
	t.Helper()
	r := servertest.Call(t, method, url, token, body)
	return r.Status, r.Body
}

func wantErr(t *testing.T, err error, code mautrix.RespError) {
	t.Helper()
	if !errors.Is(err, code) {
		t.Fatalf("error %v, want %s", err, code.ErrCode)
	}
}

func TestLogin(t *testing.T) {
	hs := startHomeserver(t, false)
	c := hs.user(t, "alice", "correct horse")
	ctx := context.Background()

	flows, err := c.GetLoginFlows(ctx)
	if err != nil || !flows.HasFlow(mautrix.AuthTypePassword) {
		t.Fatalf("login flows %+v, %v", flows, err)
	}
	resp := login(t, c, "alice", "correct horse", mautrix.ReqLogin{InitialDeviceDisplayName: "Phone"})
	if resp.UserID != "@alice:example.org" || resp.DeviceID == "" || resp.WellKnown == nil || resp.WellKnown.Homeserver.BaseURL == "" {
		t.Fatalf("login response %+v", resp)
	}
	who, err := c.Whoami(ctx)
	if err != nil || who.UserID != "@alice:example.org" || who.DeviceID != resp.DeviceID {
		t.Fatalf("whoami %+v, %v", who, err)
	}
	dev, err := c.GetDeviceInfo(ctx, resp.DeviceID)
	if err != nil || dev.DisplayName != "Phone" {
		t.Fatalf("device %+v, %v", dev, err)
	}

	// Full user ID with an upper-case localpart, and the legacy user field.
	other, _ := mautrix.NewClient(hs.URL, "", "")
	login(t, other, "@ALICE:example.org", "correct horse", mautrix.ReqLogin{})
	code, body := raw(t, "POST", hs.URL+"/_matrix/client/v3/login", "", `{"type":"m.login.password","user":"alice","password":"correct horse"}`)
	if code != 200 || body["access_token"] == nil {
		t.Fatalf("legacy user field: %d %v", code, body)
	}

	// Wrong password and unknown user give the same answer.
	_, errWrong := other.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: "nope"})
	_, errNobody := other.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "nobody"}, Password: "nope"})
	wantErr(t, errWrong, mautrix.MForbidden)
	wantErr(t, errNobody, mautrix.MForbidden)
	var h1, h2 mautrix.HTTPError
	errors.As(errWrong, &h1)
	errors.As(errNobody, &h2)
	if h1.RespError.Err != h2.RespError.Err {
		t.Fatalf("failed logins differ: %q vs %q", h1.RespError.Err, h2.RespError.Err)
	}
	if code, body := raw(t, "POST", hs.URL+"/_matrix/client/v3/login", "", `{"type":"m.login.token","token":"x"}`); code != 400 || body["errcode"] != "M_UNKNOWN" {
		t.Fatalf("unknown login type: %d %v", code, body)
	}
	if code, body := raw(t, "POST", hs.URL+"/_matrix/client/v3/login", "", `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"}}`); code != 400 || body["errcode"] != "M_MISSING_PARAM" {
		t.Fatalf("no password: %d %v", code, body)
	}
	if code, body := raw(t, "POST", hs.URL+"/_matrix/client/v3/login", "", `{"type":"m.login.password",`); code != 400 || body["errcode"] != "M_NOT_JSON" {
		t.Fatalf("broken body: %d %v", code, body)
	}

	// Reusing a device ID revokes that device's old token and keeps its name.
	oldToken := c.AccessToken
	again := login(t, c, "alice", "correct horse", mautrix.ReqLogin{DeviceID: resp.DeviceID})
	if again.DeviceID != resp.DeviceID || again.AccessToken == oldToken {
		t.Fatalf("device reuse: %+v", again)
	}
	if code, body := raw(t, "GET", hs.URL+"/_matrix/client/v3/account/whoami", oldToken, ""); code != 401 || body["errcode"] != "M_UNKNOWN_TOKEN" {
		t.Fatalf("old token of a reused device: %d %v", code, body)
	}
	if dev, _ := c.GetDeviceInfo(ctx, resp.DeviceID); dev == nil || dev.DisplayName != "Phone" {
		t.Fatalf("reused device lost its name: %+v", dev)
	}

	// Logout revokes the token; logout/all every other one too.
	if _, err := c.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = c.Whoami(ctx)
	wantErr(t, err, mautrix.MUnknownToken)
	if _, err := other.LogoutAll(ctx); err != nil {
		t.Fatal(err)
	}
	if code, body := raw(t, "GET", hs.URL+"/_matrix/client/v3/account/whoami", body["access_token"].(string), ""); code != 401 || body["errcode"] != "M_UNKNOWN_TOKEN" {
		t.Fatalf("token after logout/all: %d %v", code, body)
	}
	if code, body := raw(t, "POST", hs.URL+"/_matrix/client/v3/logout", "", ""); code != 401 || body["errcode"] != "M_MISSING_TOKEN" {
		t.Fatalf("logout without a token: %d %v", code, body)
	}
}

func TestRefreshTokens(t *testing.T) {
	hs := startHomeserver(t, false)
	c := hs.user(t, "bob", "pw")
	resp := login(t, c, "bob", "pw", mautrix.ReqLogin{RefreshToken: true})
	if resp.RefreshToken == "" || resp.ExpiresInMS != accounts.RefreshableLifetime.Milliseconds() {
		t.Fatalf("refreshable login %+v", resp)
	}
	// Past its lifetime the token is soft-logged-out: refresh, don't log in.
	hs.clock = time.Now().Add(accounts.RefreshableLifetime + time.Second)
	code, body := raw(t, "GET", hs.URL+"/_matrix/client/v3/account/whoami", resp.AccessToken, "")
	if code != 401 || body["errcode"] != "M_UNKNOWN_TOKEN" || body["soft_logout"] != true {
		t.Fatalf("expired token: %d %v", code, body)
	}
	refresh := func(tok string) (int, map[string]any) {
		return raw(t, "POST", hs.URL+"/_matrix/client/v3/refresh", "", `{"refresh_token":"`+tok+`"}`)
	}
	code, first := refresh(resp.RefreshToken)
	if code != 200 || first["access_token"] == nil || first["refresh_token"] == resp.RefreshToken {
		t.Fatalf("refresh: %d %v", code, first)
	}
	// The answer was lost: the old refresh token still works, and revokes the first exchange.
	code, second := refresh(resp.RefreshToken)
	if code != 200 {
		t.Fatalf("retried refresh: %d %v", code, second)
	}
	if code, body := refresh(first["refresh_token"].(string)); code != 401 || body["errcode"] != "M_UNKNOWN_TOKEN" {
		t.Fatalf("refresh token of a superseded exchange: %d %v", code, body)
	}
	// Using the new refresh token retires the old one.
	code, third := refresh(second["refresh_token"].(string))
	if code != 200 {
		t.Fatalf("refresh with the new token: %d %v", code, third)
	}
	if code, body := refresh(resp.RefreshToken); code != 401 || body["soft_logout"] != false {
		t.Fatalf("old refresh token after the new one was used: %d %v", code, body)
	}
	if code, body := raw(t, "GET", hs.URL+"/_matrix/client/v3/account/whoami", third["access_token"].(string), ""); code != 200 || body["user_id"] != "@bob:example.org" {
		t.Fatalf("refreshed token: %d %v", code, body)
	}
	if code, body := raw(t, "GET", hs.URL+"/_matrix/client/v3/account/whoami", second["access_token"].(string), ""); code != 401 {
		t.Fatalf("access token replaced by a refresh still works: %d %v", code, body)
	}
}

func TestDevicesAndUIA(t *testing.T) {
	hs := startHomeserver(t, false)
	ctx := context.Background()
	c := hs.user(t, "carol", "pw")
	phone := login(t, c, "carol", "pw", mautrix.ReqLogin{InitialDeviceDisplayName: "Phone"})
	laptop, _ := mautrix.NewClient(hs.URL, "", "")
	lap := login(t, laptop, "carol", "pw", mautrix.ReqLogin{InitialDeviceDisplayName: "Laptop"})
	tablet, _ := mautrix.NewClient(hs.URL, "", "")
	tab := login(t, tablet, "carol", "pw", mautrix.ReqLogin{})

	list, err := c.GetDevicesInfo(ctx)
	if err != nil || len(list.Devices) != 3 {
		t.Fatalf("devices %+v, %v", list, err)
	}
	if err := c.SetDeviceInfo(ctx, lap.DeviceID, &mautrix.ReqDeviceInfo{DisplayName: "Work laptop"}); err != nil {
		t.Fatal(err)
	}
	if d, _ := c.GetDeviceInfo(ctx, lap.DeviceID); d.DisplayName != "Work laptop" {
		t.Fatalf("renamed device %+v", d)
	}
	_, err = c.GetDeviceInfo(ctx, "NOSUCHDEVICE")
	wantErr(t, err, mautrix.MNotFound)

	// Delete: first a challenge, then a wrong password, then the right one.
	code, body := raw(t, "DELETE", hs.URL+"/_matrix/client/v3/devices/"+string(lap.DeviceID), phone.AccessToken, "")
	if code != 401 || body["session"] == "" || body["flows"] == nil {
		t.Fatalf("delete without auth: %d %v", code, body)
	}
	session := body["session"].(string)
	auth := func(pw string) string {
		return `{"auth":{"type":"m.login.password","session":"` + session + `","identifier":{"type":"m.id.user","user":"carol"},"password":"` + pw + `"}}`
	}
	code, body = raw(t, "DELETE", hs.URL+"/_matrix/client/v3/devices/"+string(lap.DeviceID), phone.AccessToken, auth("wrong"))
	if code != 401 || body["errcode"] != "M_FORBIDDEN" || body["session"] != session {
		t.Fatalf("delete with a wrong password: %d %v", code, body)
	}
	code, body = raw(t, "DELETE", hs.URL+"/_matrix/client/v3/devices/"+string(tab.DeviceID), phone.AccessToken, auth("pw"))
	if code != 403 {
		t.Fatalf("a session used for another request: %d %v", code, body)
	}
	code, body = raw(t, "DELETE", hs.URL+"/_matrix/client/v3/devices/"+string(lap.DeviceID), phone.AccessToken, auth("pw"))
	if code != 200 {
		t.Fatalf("delete with the password: %d %v", code, body)
	}
	_, err = laptop.Whoami(ctx)
	wantErr(t, err, mautrix.MUnknownToken) // revoked at once

	// delete_devices through the client library's UIA types.
	err = c.DeleteDevices(ctx, &mautrix.ReqDeleteDevices[any]{Devices: []id.DeviceID{tab.DeviceID, "UNKNOWN"}, Auth: &mautrix.ReqUIAuthLogin{
		BaseAuthData: mautrix.BaseAuthData{Type: mautrix.AuthTypePassword}, User: "carol", Password: "pw"}})
	if err != nil {
		t.Fatalf("delete_devices: %v", err)
	}
	_, err = tablet.Whoami(ctx)
	wantErr(t, err, mautrix.MUnknownToken)
	if code, body := raw(t, "POST", hs.URL+"/_matrix/client/v3/delete_devices", phone.AccessToken, `{}`); code != 400 || body["errcode"] != "M_MISSING_PARAM" {
		t.Fatalf("delete_devices without devices: %d %v", code, body)
	}
}

func TestPasswordChangeAndDeactivate(t *testing.T) {
	hs := startHomeserver(t, false)
	ctx := context.Background()
	c := hs.user(t, "dave", "old pw")
	login(t, c, "dave", "old pw", mautrix.ReqLogin{})
	other, _ := mautrix.NewClient(hs.URL, "", "")
	login(t, other, "dave", "old pw", mautrix.ReqLogin{})

	change := func(pw, newPW, extra string) (int, map[string]any) {
		return raw(t, "POST", hs.URL+"/_matrix/client/v3/account/password", c.AccessToken,
			`{"new_password":"`+newPW+`","auth":{"type":"m.login.password","identifier":{"type":"m.id.user","user":"dave"},"password":"`+pw+`"}`+extra+`}`)
	}
	if code, body := raw(t, "POST", hs.URL+"/_matrix/client/v3/account/password", c.AccessToken, `{"new_password":"x"}`); code != 401 || body["flows"] == nil {
		t.Fatalf("password change without auth: %d %v", code, body)
	}
	if code, body := change("wrong", "new pw", ""); code != 401 || body["errcode"] != "M_FORBIDDEN" {
		t.Fatalf("password change with a wrong password: %d %v", code, body)
	}
	// Auth naming another user is refused whatever its password, as Synapse
	// refuses it: 403, not a new challenge.
	hs.user(t, "erin", "erin pw")
	for _, path := range []string{"/account/password", "/account/deactivate"} {
		code, body := raw(t, "POST", hs.URL+"/_matrix/client/v3"+path, c.AccessToken,
			`{"new_password":"n","auth":{"type":"m.login.password","identifier":{"type":"m.id.user","user":"erin"},"password":"erin pw"}}`)
		if code != 403 || body["errcode"] != "M_FORBIDDEN" {
			t.Fatalf("%s with erin's password: %d %v, want 403 M_FORBIDDEN", path, code, body)
		}
	}
	if code, body := change("old pw", "new pw", ""); code != 200 {
		t.Fatalf("password change: %d %v", code, body)
	}
	if _, err := c.Whoami(ctx); err != nil {
		t.Fatalf("the changing device was logged out: %v", err)
	}
	_, err := other.Whoami(ctx)
	wantErr(t, err, mautrix.MUnknownToken) // logout_devices defaults to true
	_, err = other.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "dave"}, Password: "old pw"})
	wantErr(t, err, mautrix.MForbidden)
	login(t, other, "dave", "new pw", mautrix.ReqLogin{})
	if code, _ := change("new pw", "newer pw", `,"logout_devices":false`); code != 200 {
		t.Fatal("second change")
	}
	if _, err := other.Whoami(ctx); err != nil {
		t.Fatalf("logout_devices false logged out another device: %v", err)
	}

	code, body := raw(t, "POST", hs.URL+"/_matrix/client/v3/account/deactivate", c.AccessToken,
		`{"auth":{"type":"m.login.password","identifier":{"type":"m.id.user","user":"dave"},"password":"newer pw"}}`)
	if code != 200 || body["id_server_unbind_result"] != "no-support" {
		t.Fatalf("deactivate: %d %v", code, body)
	}
	_, err = other.Whoami(ctx)
	wantErr(t, err, mautrix.MUnknownToken)
	_, err = other.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "dave"}, Password: "newer pw"})
	wantErr(t, err, mautrix.MUserDeactivated)
}

func TestRegistration(t *testing.T) {
	ctx := context.Background()
	closed := startHomeserver(t, false)
	anon, _ := mautrix.NewClient(closed.URL, "", "")
	_, err := anon.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "eve", Password: "pw"})
	wantErr(t, err, mautrix.MForbidden)
	if avail, err := anon.RegisterAvailable(ctx, "eve"); err != nil || !avail.Available {
		t.Fatalf("available while closed: %+v, %v", avail, err)
	}
	if code, body := raw(t, "POST", closed.URL+"/_matrix/client/v3/register?kind=guest", "", `{}`); code != 403 || body["errcode"] != "M_GUEST_ACCESS_FORBIDDEN" {
		t.Fatalf("guest registration: %d %v", code, body)
	}

	open := startHomeserver(t, true)
	c, _ := mautrix.NewClient(open.URL, "", "")
	resp, err := c.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "Eve", Password: "pw", InitialDeviceDisplayName: "Web"})
	if err != nil || resp.UserID != "@eve:example.org" || resp.AccessToken == "" || resp.DeviceID == "" {
		t.Fatalf("register: %+v, %v", resp, err)
	}
	_, err = c.RegisterAvailable(ctx, "eve")
	wantErr(t, err, mautrix.MUserInUse)
	_, err = c.RegisterAvailable(ctx, "not valid")
	wantErr(t, err, mautrix.MInvalidUsername)
	_, err = c.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "eve", Password: "pw"})
	wantErr(t, err, mautrix.MUserInUse)
	_, err = c.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "_bridge", Password: "pw"})
	wantErr(t, err, mautrix.MInvalidUsername)

	// The raw flow: a challenge, then the dummy stage, and inhibit_login.
	code, body := raw(t, "POST", open.URL+"/_matrix/client/v3/register", "", `{"username":"frank","password":"pw","inhibit_login":true}`)
	if code != 401 || body["session"] == "" {
		t.Fatalf("register without auth: %d %v", code, body)
	}
	code, body = raw(t, "POST", open.URL+"/_matrix/client/v3/register", "",
		`{"username":"frank","password":"pw","inhibit_login":true,"auth":{"type":"m.login.dummy","session":"`+body["session"].(string)+`"}}`)
	if code != 200 || body["user_id"] != "@frank:example.org" || body["access_token"] != nil {
		t.Fatalf("register with inhibit_login: %d %v", code, body)
	}
	var buf bytes.Buffer
	json.NewEncoder(&buf).Encode(map[string]any{"username": 7})
	if code, body := raw(t, "POST", open.URL+"/_matrix/client/v3/register", "", buf.String()); code != 400 || body["errcode"] != "M_BAD_JSON" {
		t.Fatalf("username of the wrong type: %d %v", code, body)
	}
}

func TestAdminAPI(t *testing.T) {
	hs := startHomeserver(t, false)
	ctx := context.Background()
	if _, err := hs.srv.Accounts.Register(ctx, accounts.NewUser{Localpart: "root", Password: "pw", Admin: true, InhibitLogin: true}); err != nil {
		t.Fatal(err)
	}
	admin, _ := mautrix.NewClient(hs.URL, "", "")
	tok := login(t, admin, "root", "pw", mautrix.ReqLogin{}).AccessToken
	user := hs.user(t, "mallory", "pw")
	userTok := login(t, user, "mallory", "pw", mautrix.ReqLogin{}).AccessToken
	base := hs.URL + "/_synapse/admin"

	if code, body := raw(t, "GET", base+"/v2/users", userTok, ""); code != 403 || body["errcode"] != "M_FORBIDDEN" {
		t.Fatalf("non-admin lists users: %d %v", code, body)
	}
	if code, body := raw(t, "GET", base+"/v2/users", "", ""); code != 401 || body["errcode"] != "M_MISSING_TOKEN" {
		t.Fatalf("no token: %d %v", code, body)
	}
	code, body := raw(t, "PUT", base+"/v2/users/@new:example.org", tok, `{"password":"np","displayname":"New Person","admin":false}`)
	if code != 201 || body["name"] != "@new:example.org" || body["displayname"] != "New Person" {
		t.Fatalf("admin creates a user: %d %v", code, body)
	}
	code, body = raw(t, "GET", base+"/v2/users?limit=2", tok, "")
	if code != 200 || len(body["users"].([]any)) != 2 || body["next_token"] == nil {
		t.Fatalf("first page of users: %d %v", code, body)
	}
	code, body = raw(t, "GET", base+"/v2/users?limit=2&from="+body["next_token"].(string), tok, "")
	if code != 200 || len(body["users"].([]any)) != 1 {
		t.Fatalf("second page of users: %d %v", code, body)
	}
	if code, body := raw(t, "GET", base+"/v2/users/@mallory:example.org", tok, ""); code != 200 || body["admin"] != false || body["deactivated"] != false {
		t.Fatalf("get user: %d %v", code, body)
	}
	if code, body := raw(t, "GET", base+"/v2/users/@nobody:example.org", tok, ""); code != 404 || body["errcode"] != "M_NOT_FOUND" {
		t.Fatalf("get unknown user: %d %v", code, body)
	}
	if code, body := raw(t, "POST", base+"/v1/reset_password/@mallory:example.org", tok, `{"new_password":"reset"}`); code != 200 {
		t.Fatalf("reset password: %d %v", code, body)
	}
	_, err := user.Whoami(ctx)
	wantErr(t, err, mautrix.MUnknownToken)
	login(t, user, "mallory", "reset", mautrix.ReqLogin{})
	if code, body := raw(t, "POST", base+"/v1/reset_password/@mallory:example.org", tok, `{}`); code != 400 || body["errcode"] != "M_MISSING_PARAM" {
		t.Fatalf("reset without a password: %d %v", code, body)
	}
	if code, body := raw(t, "PUT", base+"/v2/users/@mallory:example.org", tok, `{"admin":true}`); code != 200 || body["admin"] != true {
		t.Fatalf("make admin: %d %v", code, body)
	}
	if code, body := raw(t, "POST", base+"/v1/deactivate/@new:example.org", tok, `{"erase":false}`); code != 200 {
		t.Fatalf("deactivate: %d %v", code, body)
	}
	_, err = admin.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "new"}, Password: "np"})
	wantErr(t, err, mautrix.MUserDeactivated)
	if code, body := raw(t, "GET", base+"/v2/users/@x:other.org", tok, ""); code != 400 || body["errcode"] != "M_INVALID_PARAM" {
		t.Fatalf("remote user: %d %v", code, body)
	}
}

func TestRateLimits(t *testing.T) {
	hs := startHomeserver(t, true)
	hs.srv.Accounts.Limits.LoginAddress.Burst = 3
	hs.srv.Accounts.Limits.RegisterAddress.Burst = 1
	// One fixed instant: the attempts must not straddle the end of a
	// minute window, which would start the count again.
	now := time.Now()
	hs.srv.Accounts.Limiter.Now = func() time.Time { return now }
	hs.user(t, "gina", "pw")
	attempt := func(pw string) (int, map[string]any) {
		return raw(t, "POST", hs.URL+"/_matrix/client/v3/login", "", `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"gina"},"password":"`+pw+`"}`)
	}
	for i, pw := range []string{"wrong", "wrong", "pw"} {
		if code, body := attempt(pw); code == 429 {
			t.Fatalf("attempt %d limited early: %v", i+1, body)
		}
	}
	code, body := attempt("pw")
	if code != 429 || body["errcode"] != "M_LIMIT_EXCEEDED" || body["retry_after_ms"] == nil {
		t.Fatalf("fourth login in a minute: %d %v", code, body)
	}
	code, _ = raw(t, "POST", hs.URL+"/_matrix/client/v3/register", "", `{"username":"h1","password":"pw"}`)
	if code != 401 {
		t.Fatalf("first registration attempt: %d", code)
	}
	if code, body := raw(t, "POST", hs.URL+"/_matrix/client/v3/register", "", `{"username":"h2","password":"pw"}`); code != 429 || body["errcode"] != "M_LIMIT_EXCEEDED" {
		t.Fatalf("second registration attempt: %d %v", code, body)
	}
}

func TestRegistrationTokens(t *testing.T) {
	hs := startHomeserver(t, true, "CIRRUS_REGISTRATION_REQUIRES_TOKEN=true")
	ctx := context.Background()
	if _, err := hs.srv.Accounts.Register(ctx, accounts.NewUser{Localpart: "root", Password: "pw", Admin: true, InhibitLogin: true}); err != nil {
		t.Fatal(err)
	}
	admin, _ := mautrix.NewClient(hs.URL, "", "")
	tok := login(t, admin, "root", "pw", mautrix.ReqLogin{}).AccessToken
	base := hs.URL + "/_synapse/admin/v1/registration_tokens"

	code, body := raw(t, "POST", base+"/new", tok, `{"token":"invite-1","uses_allowed":1}`)
	if code != 200 || body["token"] != "invite-1" || body["uses_allowed"] != float64(1) || body["completed"] != float64(0) {
		t.Fatalf("new token: %d %v", code, body)
	}
	if code, body := raw(t, "POST", base+"/new", tok, `{"token":"invite-1"}`); code != 400 || body["errcode"] != "M_INVALID_PARAM" {
		t.Fatalf("token twice: %d %v", code, body)
	}
	if code, body := raw(t, "POST", base+"/new", tok, `{"length":8}`); code != 200 || len(body["token"].(string)) != 8 {
		t.Fatalf("generated token: %d %v", code, body)
	}
	validity := hs.URL + "/_matrix/client/v1/register/m.login.registration_token/validity?token="
	if code, body := raw(t, "GET", validity+"invite-1", "", ""); code != 200 || body["valid"] != true {
		t.Fatalf("validity: %d %v", code, body)
	}
	if code, body := raw(t, "GET", validity+"nope", "", ""); code != 200 || body["valid"] != false {
		t.Fatalf("validity of an unknown token: %d %v", code, body)
	}

	code, body = raw(t, "POST", hs.URL+"/_matrix/client/v3/register", "", `{"username":"ivy","password":"pw"}`)
	flows, _ := json.Marshal(body["flows"])
	if code != 401 || !strings.Contains(string(flows), "m.login.registration_token") {
		t.Fatalf("challenge: %d %v", code, body)
	}
	session := body["session"].(string)
	try := func(user, token string) (int, map[string]any) {
		return raw(t, "POST", hs.URL+"/_matrix/client/v3/register", "",
			`{"username":"`+user+`","password":"pw","auth":{"type":"m.login.registration_token","token":"`+token+`","session":"`+session+`"}}`)
	}
	if code, body := try("ivy", "wrong"); code != 401 || body["errcode"] != "M_UNAUTHORIZED" {
		t.Fatalf("wrong token: %d %v", code, body)
	}
	if code, body := try("ivy", "invite-1"); code != 200 || body["user_id"] != "@ivy:example.org" {
		t.Fatalf("register with the token: %d %v", code, body)
	}
	if code, body := raw(t, "GET", base+"/invite-1", tok, ""); code != 200 || body["completed"] != float64(1) {
		t.Fatalf("token after one use: %d %v", code, body)
	}
	session = "" // the first session ended with ivy's registration
	if code, body := try("jim", "invite-1"); code != 401 || body["errcode"] != "M_UNAUTHORIZED" {
		t.Fatalf("a used-up token: %d %v", code, body)
	}
	if code, body := raw(t, "PUT", base+"/invite-1", tok, `{"uses_allowed":null}`); code != 200 || body["uses_allowed"] != nil {
		t.Fatalf("unlimited uses: %d %v", code, body)
	}
	if code, body := raw(t, "GET", base+"?valid=true", tok, ""); code != 200 || len(body["registration_tokens"].([]any)) != 2 {
		t.Fatalf("list valid tokens: %d %v", code, body)
	}
	if code, _ := raw(t, "DELETE", base+"/invite-1", tok, ""); code != 200 {
		t.Fatal("delete token")
	}
	if code, body := raw(t, "GET", base+"/invite-1", tok, ""); code != 404 || body["errcode"] != "M_NOT_FOUND" {
		t.Fatalf("deleted token: %d %v", code, body)
	}
	if code, body := raw(t, "POST", base+"/new", tok, `{"expiry_time":1}`); code != 400 || body["errcode"] != "M_INVALID_PARAM" {
		t.Fatalf("expiry in the past: %d %v", code, body)
	}
}

func TestLogoutRemovesPushers(t *testing.T) {
	hs := startHomeserver(t, false)
	c := hs.user(t, "pam", "pw")
	tok := login(t, c, "pam", "pw", mautrix.ReqLogin{}).AccessToken
	pusher := `{"kind":"http","app_id":"im.example.app","pushkey":"pk1","app_display_name":"App","device_display_name":"Phone","lang":"en","data":{"url":"https://push.example.org/_matrix/push/v1/notify"}}`
	if code, body := raw(t, "POST", hs.URL+"/_matrix/client/v3/pushers/set", tok, pusher); code != 200 {
		t.Fatalf("set pusher: %d %v", code, body)
	}
	other, _ := mautrix.NewClient(hs.URL, "", "")
	otherTok := login(t, other, "pam", "pw", mautrix.ReqLogin{}).AccessToken
	if code, body := raw(t, "GET", hs.URL+"/_matrix/client/v3/pushers", otherTok, ""); code != 200 || len(body["pushers"].([]any)) != 1 {
		t.Fatalf("pushers before logout: %d %v", code, body)
	}
	if code, _ := raw(t, "POST", hs.URL+"/_matrix/client/v3/logout", tok, ""); code != 200 {
		t.Fatal("logout")
	}
	if code, body := raw(t, "GET", hs.URL+"/_matrix/client/v3/pushers", otherTok, ""); code != 200 || len(body["pushers"].([]any)) != 0 {
		t.Fatalf("pushers after their device logged out: %d %v", code, body)
	}
}
