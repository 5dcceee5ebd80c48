package notices

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

// Register adds Synapse's admin API for server notices to rt, each route
// behind requireAdmin (accounts.Service.RequireAdmin).
// https://element-hq.github.io/synapse/latest/admin_api/server_notices.html
func (s *Service) Register(rt *httpapi.Router, requireAdmin func(http.HandlerFunc) http.HandlerFunc) {
	const path = "/_synapse/admin/v1/send_server_notice"
	rt.HandleFunc("POST "+path, requireAdmin(httpapi.Handle(s.handleSend)))
	rt.HandleFunc("PUT "+path+"/{txnId}", requireAdmin(httpapi.Handle(s.handleSend)))
}

type sendRequest struct {
	UserID   *string         `json:"user_id"`
	Content  json.RawMessage `json:"content"`
	Type     *string         `json:"type"`
	StateKey *string         `json:"state_key"`
}

// handleSend serves POST /_synapse/admin/v1/send_server_notice and PUT
// /_synapse/admin/v1/send_server_notice/{txnId}, with Synapse's answers:
// {"event_id": ...}; 400 when notices are off or the user is not local;
// 404 M_NOT_FOUND for a local user without an account.
func (s *Service) handleSend(w http.ResponseWriter, r *http.Request) error {
	var req sendRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	switch {
	case req.UserID == nil || req.Content == nil:
		return httpapi.MissingParam("missing params: user_id and content are required")
	case !strings.HasPrefix(strings.TrimSpace(string(req.Content)), "{"):
		return httpapi.BadJSON("content must be a JSON object")
	case req.Type != nil && *req.Type == "":
		return httpapi.InvalidParam("type must not be empty")
	}
	if s.Config == nil {
		return httpapi.Errorf(http.StatusBadRequest, "M_UNKNOWN", "Server notices are not enabled on this server")
	}
	userID := *req.UserID
	if !rooms.ValidUserID(userID) {
		return httpapi.InvalidParam("invalid user ID %q", userID)
	}
	if !strings.HasSuffix(userID, ":"+s.ServerName) {
		return httpapi.Errorf(http.StatusBadRequest, "M_UNKNOWN", "Server notices can only be sent to local users")
	}
	if userID == s.SenderID() {
		return httpapi.InvalidParam("%s is the server notices user itself", userID)
	}
	n := Notice{UserID: userID, StateKey: req.StateKey, Content: req.Content}
	if req.Type != nil {
		n.Type = *req.Type
	}
	caller := accounts.Caller(r.Context())
	from := Origin{AdminID: caller.UserID, AdminDevice: caller.DeviceID, TxnID: r.PathValue("txnId")}
	id, err := s.Send(r.Context(), from, n)
	if errors.Is(err, ErrNoSuchUser) {
		return httpapi.NotFound("User not found")
	}
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"event_id": id})
	return nil
}
