package federation

import (
	"errors"
	"net/http"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/profile"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

// handleQueryDirectory serves GET /_matrix/federation/v1/query/directory:
// the room a local alias points at and the servers joined to it. An alias
// of another server is 400 M_INVALID_PARAM (ask that server), an unknown
// one 404 M_NOT_FOUND.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1querydirectory
func (s *Service) handleQueryDirectory(w http.ResponseWriter, r *http.Request) error {
	alias := r.URL.Query().Get("room_alias")
	if alias == "" {
		return httpapi.MissingParam("room_alias is required")
	}
	if err := rooms.ValidAlias(alias); err != nil {
		return err
	}
	if _, server, _ := cutSigil(alias); server != s.ServerName {
		return httpapi.InvalidParam("room alias %s is not hosted on this server", alias)
	}
	ctx := r.Context()
	roomID, err := s.Rooms.ResolveAlias(ctx, alias)
	if errors.Is(err, rooms.ErrUnknownAlias) {
		return httpapi.NotFound("room alias %s not found", alias)
	}
	if err != nil {
		return err
	}
	servers, err := s.Rooms.JoinedServers(ctx, roomID)
	if err != nil {
		return err
	}
	if len(servers) == 0 {
		// Everyone left: this server still holds the room and is where
		// a join would go.
		servers = []string{s.ServerName}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"room_id": roomID, "servers": servers})
	return nil
}

// cutSigil splits a sigiled ID (#alias:server, @user:server) at its first
// colon.
func cutSigil(id string) (local, server string, ok bool) {
	if len(id) < 2 {
		return "", "", false
	}
	for i := 1; i < len(id); i++ {
		if id[i] == ':' {
			return id[1:i], id[i+1:], true
		}
	}
	return "", "", false
}

// handleQueryProfile serves GET /_matrix/federation/v1/query/profile: a
// local user's display name and avatar, or the one field asked for. An
// unset field is left out; an unknown user or a field this server does
// not hold is 404 M_NOT_FOUND; a user of another server is 400
// M_INVALID_PARAM.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1queryprofile
func (s *Service) handleQueryProfile(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	userID, field := q.Get("user_id"), q.Get("field")
	if userID == "" {
		return httpapi.MissingParam("user_id is required")
	}
	if userServer(userID) != s.ServerName {
		return httpapi.InvalidParam("user %s is not hosted on this server", userID)
	}
	if field != "" && field != string(profile.DisplayName) && field != string(profile.AvatarURL) {
		return httpapi.NotFound("this server holds no profile field %q", field)
	}
	p, err := s.Profiles.Get(r.Context(), userID)
	switch {
	case errors.Is(err, profile.ErrNotFound):
		return httpapi.NotFound("user %s does not exist", userID)
	case errors.Is(err, profile.ErrInvalidUserID), errors.Is(err, profile.ErrRemoteUser):
		return httpapi.InvalidParam("invalid user ID %q", userID)
	case err != nil:
		return err
	}
	out := map[string]string{}
	if p.DisplayName != "" && (field == "" || field == string(profile.DisplayName)) {
		out[string(profile.DisplayName)] = p.DisplayName
	}
	if p.AvatarURL != "" && (field == "" || field == string(profile.AvatarURL)) {
		out[string(profile.AvatarURL)] = p.AvatarURL
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}
