package presence_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestPresence_UserIDLimits: a user ID in the path that cannot name a user
// (over the spec's 255 bytes, not UTF-8) is 400 M_INVALID_PARAM, answered
// before anything is read or written.
func TestPresence_UserIDLimits(t *testing.T) {
	st := servertest.Start(t)
	au, bu := st.Register(t, "alice"), st.Register(t, "bob")
	const route = "/presence/"
	path := func(userID string) string { return "/_matrix/client/v3/presence/" + userID + "/status" }

	// What authentication alone costs: a PUT for someone else is refused
	// before any read.
	r := st.Do(t, "PUT", path(url.PathEscape(au.ID)), bu.AccessToken, map[string]any{"presence": "online"})
	if r.Status != 403 {
		t.Fatalf("PUT of another's presence: %d %s", r.Status, r.Raw)
	}
	auth := st.LastRequestTo(t, route).DynamoDB

	long := "@" + strings.Repeat("a", 256) + ":example.org"
	for _, tc := range []struct {
		name, method, path string
		body               any
		want               string
	}{
		{"GetLong", "GET", path(url.PathEscape(long)), nil,
			`user ID "@aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"... is 269 bytes, over the limit of 255 bytes`},
		{"GetHuge", "GET", path("@" + strings.Repeat("a", 3000) + ":example.org"), nil,
			`user ID "@aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"... is 3013 bytes, over the limit of 255 bytes`},
		{"GetNotUTF8", "GET", path("@a%FF:example.org"), nil, `user ID "@a\xff:example.org" is not valid UTF-8`},
		{"PutLong", "PUT", path(url.PathEscape(long)), map[string]any{"presence": "online"},
			`user ID "@aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"... is 269 bytes, over the limit of 255 bytes`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := st.Do(t, tc.method, tc.path, au.AccessToken, tc.body)
			if r.Status != 400 || r.Body["errcode"] != "M_INVALID_PARAM" || r.Body["error"] != tc.want {
				t.Fatalf("%s presence: %d %s; want 400 M_INVALID_PARAM %q", tc.method, r.Status, r.Raw, tc.want)
			}
			servertest.CheckUsage(t, tc.name, st.LastRequestTo(t, route).DynamoDB, servertest.Want(auth.Calls, auth.ReadUnits, auth.WriteUnits))
		})
	}

	// At the limit, the user is merely unknown.
	at := "@" + strings.Repeat("a", 255-len("@:example.org")) + ":example.org"
	r = st.Do(t, "GET", path(url.PathEscape(at)), au.AccessToken, nil)
	if r.Status != 200 || r.Body["presence"] != "offline" {
		t.Fatalf("GET presence of a 255-byte user ID: %d %s", r.Status, r.Raw)
	}
}
