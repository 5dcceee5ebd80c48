package federation

import (
	"net/http"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
)

// handleUserDevices serves GET /_matrix/federation/v1/user/devices/{userId}:
// a local user's devices with their identity keys and the user's master
// and self-signing keys. A user of another server is 400 M_INVALID_PARAM;
// an unknown local user has no devices.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1userdevicesuserid
func (s *Service) handleUserDevices(w http.ResponseWriter, r *http.Request) error {
	userID := r.PathValue("userId")
	if userServer(userID) != s.ServerName {
		return httpapi.InvalidParam("user %q is not hosted on this server", userID)
	}
	out, err := s.E2EKeys.DevicesForServer(r.Context(), userID)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

// handleKeysQuery serves POST /_matrix/federation/v1/user/keys/query: the
// identity keys of local users' devices and their cross-signing keys;
// users of other servers are left out.
// https://spec.matrix.org/v1.19/server-server-api/#post_matrixfederationv1userkeysquery
func (s *Service) handleKeysQuery(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		DeviceKeys map[string][]string `json:"device_keys"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.DeviceKeys == nil {
		return httpapi.BadJSON("device_keys must be a JSON object")
	}
	out, err := s.E2EKeys.QueryForServer(r.Context(), req.DeviceKeys)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

// handleKeysClaim serves POST /_matrix/federation/v1/user/keys/claim: a
// one-time key (else the fallback key) of each local device asked for.
// https://spec.matrix.org/v1.19/server-server-api/#post_matrixfederationv1userkeysclaim
func (s *Service) handleKeysClaim(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.OneTimeKeys == nil {
		return httpapi.BadJSON("one_time_keys must be a JSON object")
	}
	out, err := s.E2EKeys.ClaimForServer(r.Context(), req.OneTimeKeys)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"one_time_keys": out})
	return nil
}

// handleHierarchy serves GET /_matrix/federation/v1/hierarchy/{roomId}:
// the space and its direct children the origin may peek or join
// (spaces.Service.HierarchyForServer).
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1hierarchyroomid
func (s *Service) handleHierarchy(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomParam(r)
	if err != nil {
		return err
	}
	suggested := false
	switch v := r.URL.Query().Get("suggested_only"); v {
	case "", "false":
	case "true":
		suggested = true
	default:
		return httpapi.InvalidParam("suggested_only must be true or false")
	}
	out, err := s.Spaces.HierarchyForServer(r.Context(), roomID, origin(r), suggested)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}
