package accounts

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// devices lists a user's devices with one Query of their partition.
func (s *Service) devices(ctx context.Context, userID string) ([]deviceItem, error) {
	var all []deviceItem
	cursor := ""
	for {
		var page []deviceItem
		next, err := s.Store.QueryPage(ctx, store.Query{PK: userPK(userID), Prefix: "device|", Cursor: cursor}, &page)
		if err != nil {
			return nil, fmt.Errorf("list devices: %w", err)
		}
		all = append(all, page...)
		if next == "" {
			return all, nil
		}
		cursor = next
	}
}

// DeviceIDs lists the IDs of a user's devices: those that to-device
// messages sent to "*" go to. An unknown user has none.
func (s *Service) DeviceIDs(ctx context.Context, userID string) ([]string, error) {
	devs, err := s.devices(ctx, userID)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(devs))
	for i, d := range devs {
		ids[i] = d.DeviceID
	}
	return ids, nil
}

// DeviceNames lists a user's devices, device ID to display name ("" when
// unset): what /keys/query shows of them. An unknown user has none.
func (s *Service) DeviceNames(ctx context.Context, userID string) (map[string]string, error) {
	devs, err := s.devices(ctx, userID)
	if err != nil {
		return nil, err
	}
	names := make(map[string]string, len(devs))
	for _, d := range devs {
		names[d.DeviceID] = d.DisplayName
	}
	return names, nil
}

// deleteDevices removes devices and revokes their tokens at once, in
// transactions of at most 100 actions.
func (s *Service) deleteDevices(ctx context.Context, userID string, devs []deviceItem) error {
	var ops []store.Op
	flush := func() error {
		err := s.Store.Transact(ctx, ops...)
		ops = ops[:0]
		return err
	}
	for _, d := range devs {
		batch := append(revokeOps(d), store.DeleteOp(store.Key{PK: userPK(userID), SK: "device|" + d.DeviceID}))
		if len(ops)+len(batch) > store.MaxTransactActions {
			if err := flush(); err != nil {
				return fmt.Errorf("delete devices: %w", err)
			}
		}
		ops = append(ops, batch...)
	}
	if err := flush(); err != nil {
		return fmt.Errorf("delete devices: %w", err)
	}
	if s.DeviceDeleted != nil {
		for _, d := range devs {
			if err := s.DeviceDeleted(ctx, userID, d.DeviceID); err != nil {
				return fmt.Errorf("delete devices: %w", err)
			}
		}
	}
	return nil
}

func deviceJSON(d deviceItem) map[string]any {
	out := map[string]any{"device_id": d.DeviceID, "display_name": d.DisplayName, "last_seen_ts": d.LastSeenTS}
	if d.DisplayName == "" {
		delete(out, "display_name")
	}
	return out
}

// handleListDevices serves GET /_matrix/client/v3/devices.
func (s *Service) handleListDevices(w http.ResponseWriter, r *http.Request) error {
	devs, err := s.devices(r.Context(), Caller(r.Context()).UserID)
	if err != nil {
		return err
	}
	list := make([]map[string]any, 0, len(devs))
	for _, d := range devs {
		list = append(list, deviceJSON(d))
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"devices": list})
	return nil
}

func (s *Service) device(ctx context.Context, userID, deviceID string) (deviceItem, error) {
	var d deviceItem
	if err := checkDeviceID(deviceID); err != nil {
		return d, err
	}
	err := s.Store.Get(ctx, store.Key{PK: userPK(userID), SK: "device|" + deviceID}, &d)
	if errors.Is(err, store.ErrNotFound) {
		return d, httpapi.NotFound("unknown device %s", deviceID)
	}
	return d, err
}

// handleGetDevice serves GET /_matrix/client/v3/devices/{deviceId}.
func (s *Service) handleGetDevice(w http.ResponseWriter, r *http.Request) error {
	d, err := s.device(r.Context(), Caller(r.Context()).UserID, r.PathValue("deviceId"))
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, deviceJSON(d))
	return nil
}

// handleUpdateDevice serves PUT /_matrix/client/v3/devices/{deviceId}: the
// display name only.
func (s *Service) handleUpdateDevice(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		DisplayName *string `json:"display_name"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	d, err := s.device(r.Context(), Caller(r.Context()).UserID, r.PathValue("deviceId"))
	if err != nil {
		return err
	}
	if req.DisplayName != nil {
		if len(*req.DisplayName) > 100 {
			return httpapi.InvalidParam("display_name is longer than 100 characters")
		}
		renamed := d.DisplayName != *req.DisplayName
		d.DisplayName = *req.DisplayName
		if err := s.Store.Put(r.Context(), d); err != nil {
			return err
		}
		if renamed && s.DeviceRenamed != nil {
			if err := s.DeviceRenamed(r.Context(), Caller(r.Context()).UserID, d.DeviceID); err != nil {
				return err
			}
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{})
	return nil
}

// handleDeleteDevice serves DELETE /_matrix/client/v3/devices/{deviceId},
// behind user-interactive auth; the device's tokens stop working at once.
func (s *Service) handleDeleteDevice(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Auth authData `json:"auth"`
	}
	if err := decodeOptionalJSON(r, &req); err != nil {
		return err
	}
	caller := Caller(r.Context())
	d, err := s.device(r.Context(), caller.UserID, r.PathValue("deviceId"))
	if err != nil {
		return err
	}
	if err := s.authForCaller(r, req.Auth); err != nil {
		return err
	}
	if ok, err := s.passwordUIA(w, r, req.Auth); !ok {
		return err
	}
	if err := s.deleteDevices(r.Context(), caller.UserID, []deviceItem{d}); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{})
	return nil
}

// authForCaller refuses, 403 M_FORBIDDEN as Synapse does, user-interactive
// auth that names a user other than the caller: a user's devices are
// deleted only with that user's own password, so no challenge is answered.
func (s *Service) authForCaller(r *http.Request, auth authData) error {
	user := auth.User
	if auth.Identifier.User != "" {
		user = auth.Identifier.User
	}
	if auth.Type == "" || user == "" {
		return nil
	}
	userID, _, err := s.accountOf(user)
	if err != nil {
		return err
	}
	if userID != Caller(r.Context()).UserID {
		return httpapi.Forbidden("the auth names %s, not the owner of the devices", userID)
	}
	return nil
}

// handleDeleteDevices serves POST /_matrix/client/v3/delete_devices, behind
// user-interactive auth. Unknown device IDs are ignored, as the spec says.
func (s *Service) handleDeleteDevices(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Devices *[]string `json:"devices"`
		Auth    authData  `json:"auth"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.Devices == nil {
		return httpapi.MissingParam("devices is required")
	}
	if err := s.authForCaller(r, req.Auth); err != nil {
		return err
	}
	if ok, err := s.passwordUIA(w, r, req.Auth); !ok {
		return err
	}
	caller := Caller(r.Context())
	all, err := s.devices(r.Context(), caller.UserID)
	if err != nil {
		return err
	}
	wanted := map[string]bool{}
	for _, id := range *req.Devices {
		wanted[id] = true
	}
	var doomed []deviceItem
	for _, d := range all {
		if wanted[d.DeviceID] {
			doomed = append(doomed, d)
		}
	}
	if err := s.deleteDevices(r.Context(), caller.UserID, doomed); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{})
	return nil
}

// handleLogout serves POST /_matrix/client/v3/logout: the caller's device
// and its tokens go.
func (s *Service) handleLogout(w http.ResponseWriter, r *http.Request) error {
	caller := Caller(r.Context())
	d, err := s.device(r.Context(), caller.UserID, caller.DeviceID)
	if err != nil {
		// A token whose device is gone: revoke the token alone.
		d = deviceItem{DeviceID: caller.DeviceID, TokenHash: hashToken(accessToken(r))}
	}
	if err := s.deleteDevices(r.Context(), caller.UserID, []deviceItem{d}); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{})
	return nil
}

// handleLogoutAll serves POST /_matrix/client/v3/logout/all: every device
// of the user and every token.
func (s *Service) handleLogoutAll(w http.ResponseWriter, r *http.Request) error {
	caller := Caller(r.Context())
	if err := s.logoutAll(r.Context(), caller.UserID, ""); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{})
	return nil
}

// logoutAll deletes every device of the user but keep.
func (s *Service) logoutAll(ctx context.Context, userID, keep string) error {
	all, err := s.devices(ctx, userID)
	if err != nil {
		return err
	}
	doomed := all[:0]
	for _, d := range all {
		if d.DeviceID != keep {
			doomed = append(doomed, d)
		}
	}
	return s.deleteDevices(ctx, userID, doomed)
}
