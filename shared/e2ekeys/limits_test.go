package e2ekeys_test

import (
	"context"
	"strings"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestKeys_IDLimits: user IDs and device IDs past the spec's 255 bytes in
// /keys/query, /keys/claim and /keys/signatures/upload are 400
// M_INVALID_PARAM, answered before anything is read or written: they would
// become parts of the table's keys.
func TestKeys_IDLimits(t *testing.T) {
	st := servertest.Start(t)
	alice := newDevice(t, st, st.Register(t, "alice"))
	alice.upload(t, 2)
	tok := alice.user.AccessToken
	const keys = "/_matrix/client/v3/keys/"

	// What authentication alone costs: a body that is not JSON is refused
	// before any read.
	r := st.Do(t, "POST", keys+"query", tok, `{`)
	if r.Status != 400 || r.Body["errcode"] != "M_NOT_JSON" {
		t.Fatalf("query with a broken body: %d %s", r.Status, r.Raw)
	}
	auth := st.LastRequestTo(t, "/keys/query").DynamoDB

	longUser := "@" + strings.Repeat("a", 256) + ":example.org"
	longDevice := strings.Repeat("D", 256)
	huge := "@" + strings.Repeat("a", 4000) + ":example.org"
	me := alice.user.ID
	for _, tc := range []struct {
		name, endpoint string
		body           map[string]any
		want           string
	}{
		{"QueryUser", "query", map[string]any{"device_keys": map[string]any{longUser: []string{}}},
			`device_keys: user ID "@aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"... is 269 bytes, over the limit of 255 bytes`},
		{"QueryHugeUser", "query", map[string]any{"device_keys": map[string]any{huge: []string{}}},
			`device_keys: user ID "@aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"... is 4013 bytes, over the limit of 255 bytes`},
		{"QueryDevice", "query", map[string]any{"device_keys": map[string]any{me: []string{longDevice}}},
			`device_keys: device ID "DDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDD"... is 256 bytes, over the limit of 255 bytes`},
		{"ClaimUser", "claim", map[string]any{"one_time_keys": map[string]any{longUser: map[string]string{"DEV": "signed_curve25519"}}},
			`one_time_keys: user ID "@aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"... is 269 bytes, over the limit of 255 bytes`},
		// With a device that has keys: none is handed out.
		{"ClaimDevice", "claim", map[string]any{"one_time_keys": map[string]any{me: map[string]string{
			alice.user.DeviceID: "signed_curve25519", longDevice: "signed_curve25519"}}},
			`one_time_keys: device ID "DDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDD"... is 256 bytes, over the limit of 255 bytes`},
		{"SignaturesUser", "signatures/upload", map[string]any{longUser: map[string]any{"KEY": map[string]any{}}},
			`signatures: user ID "@aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"... is 269 bytes, over the limit of 255 bytes`},
		{"SignaturesDevice", "signatures/upload", map[string]any{me: map[string]any{longDevice: map[string]any{}}},
			`signatures: device ID or key "DDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDD"... is 256 bytes, over the limit of 255 bytes`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := st.Do(t, "POST", keys+tc.endpoint, tok, tc.body)
			if r.Status != 400 || r.Body["errcode"] != "M_INVALID_PARAM" || r.Body["error"] != tc.want {
				t.Fatalf("%s: %d %s; want 400 M_INVALID_PARAM %q", tc.endpoint, r.Status, r.Raw, tc.want)
			}
			servertest.CheckUsage(t, tc.name, st.LastRequestTo(t, "/keys/"+tc.endpoint).DynamoDB,
				servertest.Want(auth.Calls, auth.ReadUnits, auth.WriteUnits))
		})
	}

	// At the limit, the IDs are merely unknown.
	atUser := "@" + strings.Repeat("a", 255-len("@:example.org")) + ":example.org"
	atDevice := strings.Repeat("D", 255)
	r = st.Do(t, "POST", keys+"query", tok, map[string]any{"device_keys": map[string]any{atUser: []string{}, me: []string{atDevice}}})
	if r.Status != 200 {
		t.Fatalf("query of 255-byte IDs: %d %s", r.Status, r.Raw)
	}
	r = st.Do(t, "POST", keys+"claim", tok, map[string]any{"one_time_keys": map[string]any{me: map[string]string{atDevice: "signed_curve25519"}}})
	if r.Status != 200 {
		t.Fatalf("claim of a 255-byte device ID: %d %s", r.Status, r.Raw)
	}
	// The refused claim took none of the device's one-time keys.
	counts, err := st.Server.E2EKeys.Counts(context.Background(), me, alice.user.DeviceID)
	if err != nil {
		t.Fatal(err)
	}
	if n := counts.OneTimeKeys["signed_curve25519"]; n != 2 {
		t.Errorf("one-time keys left after the refused claims: %d, want 2", n)
	}
}
