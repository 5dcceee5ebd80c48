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
// configuration's default_room_version), and whose users may add and remove
// email addresses when threePIDChanges (there is an email block to
// validate them).
func Current(defaultRoomVersion string, threePIDChanges bool) map[string]any {
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
		// Email addresses, validated by mail (shared/threepid); no phones.
		"m.3pid_changes": enabled{threePIDChanges},
		// No POST /login/get_token.
		"m.get_login_token": enabled{false},
	}
}

// Handler serves GET /_matrix/client/v3/capabilities, Current's object; it needs an access token
// (wrap it in accounts.Service.RequireAuth) but reads nothing more.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3capabilities
func Handler(defaultRoomVersion string, threePIDChanges bool) http.HandlerFunc {
	caps := map[string]any{"capabilities": Current(defaultRoomVersion, threePIDChanges)}
	return func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteJSON(w, http.StatusOK, caps)
	}
}
