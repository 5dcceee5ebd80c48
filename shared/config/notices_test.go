package config_test

import (
	"strings"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/config"
)

// TestLoad_ServerNotices reads Synapse's server_notices block from a file
// and from the environment, and refuses one without its localpart.
func TestLoad_ServerNotices(t *testing.T) {
	c, err := config.Load("", env(nil))
	if err != nil || c.ServerNotices != nil {
		t.Fatalf("no block: %+v, %v; want nil", c.ServerNotices, err)
	}
	file := writeFile(t, "server_notices:\n  system_mxid_localpart: server\n  system_mxid_display_name: Server Notices\n"+
		"  system_mxid_avatar_url: mxc://example.org/a\n  room_name: Notices\n  room_avatar_url: mxc://example.org/r\n"+
		"  room_topic: Read me\n  auto_join: true\n")
	c, err = config.Load(file, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := config.ServerNotices{SystemMxidLocalpart: "server", SystemMxidDisplayName: "Server Notices",
		SystemMxidAvatarURL: "mxc://example.org/a", RoomName: "Notices", RoomAvatarURL: "mxc://example.org/r",
		RoomTopic: "Read me", AutoJoin: true}
	if c.ServerNotices == nil || *c.ServerNotices != want {
		t.Fatalf("from the file: %+v", c.ServerNotices)
	}
	c, err = config.Load("", env(map[string]string{"CIRRUS_SERVER_NOTICES_SYSTEM_MXID_LOCALPART": "notices",
		"CIRRUS_SERVER_NOTICES_AUTO_JOIN": "true"}))
	if err != nil {
		t.Fatal(err)
	}
	if n := c.ServerNotices; n == nil || n.SystemMxidLocalpart != "notices" || !n.AutoJoin || n.RoomName != "" {
		t.Fatalf("from the environment: %+v", n)
	}
	_, err = config.Load("", env(map[string]string{"CIRRUS_SERVER_NOTICES_ROOM_NAME": "Notices"}))
	if err == nil || !strings.Contains(err.Error(), "system_mxid_localpart") {
		t.Fatalf("a block without system_mxid_localpart: %v", err)
	}
}
