// Package capabilities serves GET /_matrix/client/v3/capabilities: what a
// user of this server may do, in the spec's "Capabilities negotiation".
package capabilities

import (
	"net/http"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
)

// ProfileFields are the profile fields users may set (shared/profile).
var ProfileFields = []string{"displayname", "avatar_url"}

type enabled struct {
	Enabled bool `json:"enabled"`
}

// Current is the capabilities object of this server, whose new rooms are
// of version defaultRoomVersion ("" is events.DefaultVersion; the
// configuration's default_room_version).
func Current(defaultRoomVersion string) map[string]any {
	if defaultRoomVersion == "" {
		defaultRoomVersion = events.DefaultVersion
	}
	// Every stable version rooms can be created and held in (shared/events).
	available := map[string]string{}
	for _, v := range events.Versions() {
		available[v] = "stable"
	}
	return map[string]any{
		"m.change_password": enabled{true},
		"m.room_versions":   map[string]any{"default": defaultRoomVersion, "available": available},
		// Deprecated since v1.16 in favour of m.profile_fields, which a
		// server offering displayname and avatar_url there must mirror.
		"m.set_displayname": enabled{true},
		"m.set_avatar_url":  enabled{true},
		"m.profile_fields":  map[string]any{"enabled": true, "allowed": ProfileFields},
		// No third-party identifiers (email, phone) are bound to accounts.
		"m.3pid_changes": enabled{false},
		// No POST /login/get_token.
		"m.get_login_token": enabled{false},
	}
}

// Handler serves GET /_matrix/client/v3/capabilities for a server whose
// new rooms are of version defaultRoomVersion; it needs an access token
// (wrap it in accounts.Service.RequireAuth) but reads nothing more.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3capabilities
func Handler(defaultRoomVersion string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"capabilities": Current(defaultRoomVersion)})
	}
}
