package capabilities_test

import (
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestCapabilities_DefaultRoomVersion: the configured default_room_version
// is the default /capabilities announces, and the version of a room
// created without one.
func TestCapabilities_DefaultRoomVersion(t *testing.T) {
	st := servertest.Start(t, "CIRRUS_DEFAULT_ROOM_VERSION=10")
	kim := st.Register(t, "kim")
	r := st.Do(t, "GET", "/_matrix/client/v3/capabilities", kim.AccessToken, nil)
	caps, _ := r.Body["capabilities"].(map[string]any)
	rv, _ := caps["m.room_versions"].(map[string]any)
	if r.Status != 200 || rv["default"] != "10" {
		t.Fatalf("capabilities with default_room_version 10: %d %s", r.Status, r.Raw)
	}
	if avail, _ := rv["available"].(map[string]any); len(avail) != 12 || avail["12"] != "stable" {
		t.Fatalf("available room versions with default_room_version 10: %v", rv["available"])
	}
	for _, tc := range []struct {
		name string
		body map[string]any
		want string
	}{
		{"Default", map[string]any{}, "10"},
		{"Asked", map[string]any{"room_version": "11"}, "11"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := st.Do(t, "POST", "/_matrix/client/v3/createRoom", kim.AccessToken, tc.body)
			room, _ := r.Body["room_id"].(string)
			if r.Status != 200 || room == "" {
				t.Fatalf("createRoom: %d %s", r.Status, r.Raw)
			}
			r = st.Do(t, "GET", "/_matrix/client/v3/rooms/"+room+"/state/m.room.create/", kim.AccessToken, nil)
			if r.Status != 200 || r.Body["room_version"] != tc.want {
				t.Fatalf("create event of a room made with %v: %d %s, want room_version %s", tc.body, r.Status, r.Raw, tc.want)
			}
		})
	}
}
