package capabilities_test

import (
	"context"
	"errors"
	"strconv"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

func TestCapabilities_Mautrix(t *testing.T) {
	st := servertest.Start(t)
	kim := st.Register(t, "kim")
	cli, err := mautrix.NewClient(st.URL, id.UserID(kim.ID), kim.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	caps, err := cli.Capabilities(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if c := st.LastRequest(t).DynamoDB; c.Calls != 1 || c.ReadUnits != 1 {
		t.Fatalf("capabilities cost %+v, want the auth read only", c)
	}
	for name, c := range map[string]*mautrix.CapBooleanTrue{
		"m.change_password": caps.ChangePassword, "m.set_displayname": caps.SetDisplayname, "m.set_avatar_url": caps.SetAvatarURL,
	} {
		if c == nil || !c.Enabled {
			t.Errorf("%s: %+v, want enabled", name, c)
		}
	}
	for name, c := range map[string]*mautrix.CapBooleanTrue{"m.3pid_changes": caps.ThreePIDChanges, "m.get_login_token": caps.GetLoginToken} {
		if c == nil || c.Enabled {
			t.Errorf("%s: %+v, want present and disabled", name, c)
		}
	}
	rv := caps.RoomVersions
	if rv == nil || rv.Default != "12" || len(rv.Available) != 12 {
		t.Fatalf("m.room_versions: %+v", rv)
	}
	for v := 1; v <= 12; v++ {
		if !rv.IsStable(strconv.Itoa(v)) {
			t.Errorf("room version %d is not stable: %+v", v, rv.Available)
		}
	}
	pf, _ := caps.Custom["m.profile_fields"].(map[string]any)
	if pf["enabled"] != true || len(pf["allowed"].([]any)) != 2 {
		t.Errorf("m.profile_fields: %v", caps.Custom["m.profile_fields"])
	}

	anon, _ := mautrix.NewClient(st.URL, "", "")
	if _, err := anon.Capabilities(context.Background()); !errors.Is(err, mautrix.MMissingToken) {
		t.Fatalf("capabilities without a token: %v, want M_MISSING_TOKEN", err)
	}
	if r := st.Do(t, "GET", "/_matrix/client/v3/capabilities", "cirrus_forged", nil); r.Status != 401 || r.Body["errcode"] != "M_UNKNOWN_TOKEN" {
		t.Fatalf("capabilities with an unknown token: %d %s", r.Status, r.Raw)
	}
}

// With an email block, users may add and remove addresses (shared/threepid).
func TestCapabilities_ThreePIDChangesWithMail(t *testing.T) {
	st := servertest.Start(t, "CIRRUS_EMAIL_NOTIF_FROM=Cirrus <noreply@example.org>")
	kim := st.Register(t, "kim")
	cli, err := mautrix.NewClient(st.URL, id.UserID(kim.ID), kim.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	caps, err := cli.Capabilities(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if c := caps.ThreePIDChanges; c == nil || !c.Enabled {
		t.Fatalf("m.3pid_changes: %+v, want enabled", c)
	}
}
