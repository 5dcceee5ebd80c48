package profile_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/profile"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

func TestNormalize(t *testing.T) {
	for _, tc := range []struct {
		name  string
		field profile.Field
		in    string
		want  string
		ok    bool
	}{
		{"display name", profile.DisplayName, "Alice", "Alice", true},
		{"display name trimmed", profile.DisplayName, "  Alice \n", "Alice", true},
		{"display name empty unsets", profile.DisplayName, "", "", true},
		{"display name of 256 characters", profile.DisplayName, strings.Repeat("é", 256), strings.Repeat("é", 256), true},
		{"display name of 257 characters", profile.DisplayName, strings.Repeat("a", 257), "", false},
		{"avatar", profile.AvatarURL, "mxc://example.org/AbC_12-x", "mxc://example.org/AbC_12-x", true},
		{"avatar on a server with a port", profile.AvatarURL, "mxc://localhost:8008/abc", "mxc://localhost:8008/abc", true},
		{"avatar empty unsets", profile.AvatarURL, "", "", true},
		{"avatar over https, stored as Synapse stores it", profile.AvatarURL, "https://example.org/a.png", "https://example.org/a.png", true},
		{"avatar over 1000 bytes", profile.AvatarURL, "mxc://example.org/" + strings.Repeat("a", 1000), "", false},
		{"unknown field", profile.Field("m.tz"), "Europe/Rome", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := profile.Normalize(tc.field, tc.in)
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("Normalize(%s, %q) = %q, %v; want %q, ok=%v", tc.field, tc.in, got, err, tc.want, tc.ok)
			}
			if err != nil && !errors.Is(err, profile.ErrInvalidValue) {
				t.Fatalf("error %v does not wrap ErrInvalidValue", err)
			}
		})
	}
}

func TestServerOf(t *testing.T) {
	for in, want := range map[string]string{
		"@alice:example.org": "example.org", "@a:localhost:8008": "localhost:8008", "@a:[::1]:8448": "[::1]:8448",
		"alice": "", "@alice": "", "@:example.org": "", "#room:example.org": "", "@a:bad name": "",
		"@" + strings.Repeat("a", 250) + ":example.org": "",
	} {
		got, err := profile.ServerOf(in)
		if got != want || (err == nil) != (want != "") {
			t.Errorf("ServerOf(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// TestProfile_HTTP drives every profile endpoint over HTTP through the
// real handler tree and store, with each error the endpoints name.
func TestProfile_HTTP(t *testing.T) {
	st := servertest.Start(t)
	alice, bob := st.Register(t, "alice"), st.Register(t, "bob")
	base := "/_matrix/client/v3/profile/"
	expect := func(t *testing.T, r servertest.Reply, status int, errcode string) {
		t.Helper()
		if r.Status != status || (errcode != "" && r.Body["errcode"] != errcode) {
			t.Fatalf("got %d %s, want %d %s", r.Status, r.Raw, status, errcode)
		}
	}

	t.Run("RegistrationSetsTheDisplayName", func(t *testing.T) {
		r := st.Do(t, "GET", base+alice.ID, "", nil)
		expect(t, r, 200, "")
		if r.Body["displayname"] != "alice" || len(r.Body) != 1 {
			t.Fatalf("profile after registration: %s", r.Raw)
		}
		// A profile read needs no token and costs one read.
		if c := st.LastRequest(t).DynamoDB; c.Calls != 1 || c.ReadUnits != 1 || c.WriteUnits != 0 {
			t.Fatalf("GET profile cost %+v, want 1 call of 1 RCU", c)
		}
	})
	t.Run("SetBothFields", func(t *testing.T) {
		expect(t, st.Do(t, "PUT", base+alice.ID+"/displayname", alice.AccessToken, map[string]any{"displayname": "  Alice Liddell "}), 200, "")
		// Token, profile read, write, and the query of joined rooms (none
		// yet) whose member events follow the profile; then the user
		// directory's read of its entry and its transaction (the words
		// alice and liddell, the entry: 6 WCU; shared/userdir).
		if c := st.LastRequest(t).DynamoDB; c.Calls != 6 || c.ReadUnits != 4 || c.WriteUnits != 7 {
			t.Fatalf("PUT displayname cost %+v, want 6 calls: 4 RCU, 7 WCU", c)
		}
		expect(t, st.Do(t, "PUT", base+alice.ID+"/avatar_url", alice.AccessToken, map[string]any{"avatar_url": "mxc://example.org/rabbit"}), 200, "")
		r := st.Do(t, "GET", base+alice.ID, "", nil)
		if r.Body["displayname"] != "Alice Liddell" || r.Body["avatar_url"] != "mxc://example.org/rabbit" {
			t.Fatalf("profile: %s", r.Raw)
		}
		r = st.Do(t, "GET", base+alice.ID+"/displayname", "", nil)
		if r.Status != 200 || r.Body["displayname"] != "Alice Liddell" || len(r.Body) != 1 {
			t.Fatalf("GET displayname: %d %s", r.Status, r.Raw)
		}
		r = st.Do(t, "GET", base+alice.ID+"/avatar_url", bob.AccessToken, nil)
		if r.Status != 200 || r.Body["avatar_url"] != "mxc://example.org/rabbit" || len(r.Body) != 1 {
			t.Fatalf("GET avatar_url: %d %s", r.Status, r.Raw)
		}
	})
	t.Run("EmptyAndDeleteUnset", func(t *testing.T) {
		expect(t, st.Do(t, "PUT", base+bob.ID+"/displayname", bob.AccessToken, map[string]any{"displayname": ""}), 200, "")
		expect(t, st.Do(t, "GET", base+bob.ID+"/displayname", "", nil), 404, "M_NOT_FOUND")
		expect(t, st.Do(t, "GET", base+bob.ID, "", nil), 404, "M_NOT_FOUND") // nothing set, as Synapse
		expect(t, st.Do(t, "PUT", base+bob.ID+"/avatar_url", bob.AccessToken, map[string]any{"avatar_url": "mxc://example.org/b0b"}), 200, "")
		r := st.Do(t, "GET", base+bob.ID, "", nil)
		if r.Status != 200 || r.Body["avatar_url"] != "mxc://example.org/b0b" || r.Body["displayname"] != nil {
			t.Fatalf("profile with only an avatar: %d %s", r.Status, r.Raw)
		}
		expect(t, st.Do(t, "DELETE", base+bob.ID+"/avatar_url", bob.AccessToken, nil), 200, "")
		expect(t, st.Do(t, "DELETE", base+bob.ID+"/avatar_url", bob.AccessToken, nil), 200, "") // already unset
		expect(t, st.Do(t, "GET", base+bob.ID+"/avatar_url", "", nil), 404, "M_NOT_FOUND")
	})

	for _, tc := range []struct {
		name, method, path, token string
		body                      any
		status                    int
		errcode                   string
	}{
		{"PutOtherUser", "PUT", base + bob.ID + "/displayname", alice.AccessToken, `{"displayname":"Mallory"}`, 403, "M_FORBIDDEN"},
		{"DeleteOtherUser", "DELETE", base + bob.ID + "/displayname", alice.AccessToken, nil, 403, "M_FORBIDDEN"},
		{"PutRemoteUser", "PUT", base + "@alice:other.example/displayname", alice.AccessToken, `{"displayname":"x"}`, 403, "M_FORBIDDEN"},
		{"PutWithoutToken", "PUT", base + alice.ID + "/displayname", "", `{"displayname":"x"}`, 401, "M_MISSING_TOKEN"},
		{"PutUnknownToken", "PUT", base + alice.ID + "/displayname", "cirrus_forged", `{"displayname":"x"}`, 401, "M_UNKNOWN_TOKEN"},
		{"DisplayNameTooLong", "PUT", base + alice.ID + "/displayname", alice.AccessToken, map[string]any{"displayname": strings.Repeat("x", 257)}, 400, "M_INVALID_PARAM"},
		{"AvatarTooLong", "PUT", base + alice.ID + "/avatar_url", alice.AccessToken, map[string]any{"avatar_url": "mxc://example.org/" + strings.Repeat("a", 1000)}, 400, "M_INVALID_PARAM"},
		{"DisplayNameNumber", "PUT", base + alice.ID + "/displayname", alice.AccessToken, `{"displayname":5}`, 400, "M_BAD_JSON"},
		{"DisplayNameNull", "PUT", base + alice.ID + "/displayname", alice.AccessToken, `{"displayname":null}`, 400, "M_BAD_JSON"},
		{"AvatarObject", "PUT", base + alice.ID + "/avatar_url", alice.AccessToken, `{"avatar_url":{"url":"mxc://example.org/a"}}`, 400, "M_BAD_JSON"},
		{"DisplayNameMissing", "PUT", base + alice.ID + "/displayname", alice.AccessToken, `{}`, 400, "M_MISSING_PARAM"},
		{"AvatarMissing", "PUT", base + alice.ID + "/avatar_url", alice.AccessToken, `{"displayname":"x"}`, 400, "M_MISSING_PARAM"},
		{"BodyNotJSON", "PUT", base + alice.ID + "/displayname", alice.AccessToken, `displayname=x`, 400, "M_NOT_JSON"},
		{"BodyNotObject", "PUT", base + alice.ID + "/displayname", alice.AccessToken, `["x"]`, 400, "M_BAD_JSON"},
		{"PutInvalidUserID", "PUT", base + "alice/displayname", alice.AccessToken, `{"displayname":"x"}`, 400, "M_INVALID_PARAM"},
		{"GetUnknownUser", "GET", base + "@nobody:example.org", "", nil, 404, "M_NOT_FOUND"},
		{"GetUnknownUserField", "GET", base + "@nobody:example.org/displayname", "", nil, 404, "M_NOT_FOUND"},
		// other.example does not resolve: Synapse's 502.
		{"GetRemoteUser", "GET", base + "@alice:other.example", "", nil, 502, "M_UNKNOWN"},
		{"GetRemoteUserField", "GET", base + "@alice:other.example/avatar_url", "", nil, 502, "M_UNKNOWN"},
		{"GetInvalidUserID", "GET", base + "alice", "", nil, 400, "M_INVALID_PARAM"},
		{"GetOtherField", "GET", base + alice.ID + "/m.tz", "", nil, 404, "M_UNRECOGNIZED"},
		{"PostNotAllowed", "POST", base + alice.ID + "/displayname", alice.AccessToken, `{}`, 405, "M_UNRECOGNIZED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			expect(t, st.Do(t, tc.method, tc.path, tc.token, tc.body), tc.status, tc.errcode)
			// Refusals are decided before the store: the auth read at most.
			if c := st.LastRequest(t).DynamoDB; tc.status != 404 && (c.Calls > 1 || c.WriteUnits != 0) {
				t.Fatalf("a refused request cost %+v", c)
			}
		})
	}
	t.Run("RemoteUserSaysWhy", func(t *testing.T) {
		r := st.Do(t, "GET", base+"@alice:other.example", "", nil)
		if msg, _ := r.Body["error"].(string); !strings.Contains(msg, "other.example") {
			t.Fatalf("remote profile: %s", r.Raw)
		}
	})
	t.Run("NothingChangedByRefusals", func(t *testing.T) {
		r := st.Do(t, "GET", base+alice.ID, "", nil)
		if r.Body["displayname"] != "Alice Liddell" || r.Body["avatar_url"] != "mxc://example.org/rabbit" {
			t.Fatalf("alice's profile after the refused requests: %s", r.Raw)
		}
	})
	if strings.Contains(st.Logs(), alice.AccessToken) {
		t.Fatal("an access token was logged")
	}
}

// TestProfile_Mautrix drives the endpoints with a real Matrix client library.
func TestProfile_Mautrix(t *testing.T) {
	st := servertest.Start(t)
	ctx := context.Background()
	carol := st.Register(t, "carol")
	cli, err := mautrix.NewClient(st.URL, id.UserID(carol.ID), carol.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.SetDisplayName(ctx, "Carol Danvers"); err != nil {
		t.Fatal(err)
	}
	name, err := cli.GetOwnDisplayName(ctx)
	if err != nil || name.DisplayName != "Carol Danvers" {
		t.Fatalf("GetOwnDisplayName: %+v, %v", name, err)
	}
	avatar := id.ContentURI{Homeserver: "example.org", FileID: "marvel"}
	if err := cli.SetAvatarURL(ctx, avatar); err != nil {
		t.Fatal(err)
	}
	if got, err := cli.GetOwnAvatarURL(ctx); err != nil || got != avatar {
		t.Fatalf("GetOwnAvatarURL: %v, %v", got, err)
	}
	p, err := cli.GetProfile(ctx, cli.UserID)
	if err != nil || p.DisplayName != "Carol Danvers" || p.AvatarURL != avatar {
		t.Fatalf("GetProfile: %+v, %v", p, err)
	}
	if err := cli.DeleteProfileField(ctx, "displayname"); err != nil {
		t.Fatal(err)
	}
	// mautrix reads the spec's 404 for an unset field as an empty name.
	if name, err := cli.GetOwnDisplayName(ctx); err != nil || name.DisplayName != "" {
		t.Fatalf("display name after delete: %+v, %v", name, err)
	}
	if err := cli.SetAvatarURL(ctx, id.ContentURI{}); err != nil {
		t.Fatalf("unsetting the avatar: %v", err)
	}
	if _, err := cli.GetProfile(ctx, cli.UserID); !errors.Is(err, mautrix.MNotFound) {
		t.Fatalf("empty profile: %v, want M_NOT_FOUND", err)
	}
	if _, err := cli.GetProfile(ctx, "@nobody:example.org"); !errors.Is(err, mautrix.MNotFound) {
		t.Fatalf("unknown user: %v, want M_NOT_FOUND", err)
	}
	if err := cli.SetProfileField(ctx, "displayname", 42); !errors.Is(err, mautrix.MBadJSON) {
		t.Fatalf("a number as display name: %v, want M_BAD_JSON", err)
	}

	// A client whose token is another user's cannot write this profile.
	dave := st.Register(t, "dave")
	impostor, _ := mautrix.NewClient(st.URL, id.UserID(carol.ID), dave.AccessToken)
	err = impostor.SetDisplayName(ctx, "not carol")
	var httpErr mautrix.HTTPError
	if !errors.Is(err, mautrix.MForbidden) || !errors.As(err, &httpErr) || !httpErr.IsStatus(http.StatusForbidden) {
		t.Fatalf("setting another user's name: %v, want 403 M_FORBIDDEN", err)
	}
}
