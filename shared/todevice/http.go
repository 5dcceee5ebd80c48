package todevice

import (
	"bytes"
	"encoding/json"
	"net/http"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

// maxKeyPart bounds the event type and the transaction ID, so that a
// transaction's sort key (the type escaped, at most three times longer)
// stays within DynamoDB's 1,024 bytes.
const maxKeyPart = rooms.MaxKeyPart

// Register adds PUT /sendToDevice to rt behind requireAuth
// (accounts.Service.RequireAuth).
func (s *Service) Register(rt *httpapi.Router, requireAuth func(http.HandlerFunc) http.HandlerFunc) {
	rt.HandleFunc("PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}", requireAuth(httpapi.Handle(s.handleSend)))
}

// sendRequest is the body of PUT /sendToDevice: user ID to device ID ("*"
// for all of the user's devices) to content.
type sendRequest struct {
	Messages map[string]map[string]json.RawMessage `json:"messages"`
}

// handleSend serves PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}.
// A body without messages is M_BAD_JSON (Synapse: M_MISSING_PARAM), an
// invalid user ID M_INVALID_PARAM (Synapse skips it), a message over 64 KB
// M_TOO_LARGE; an event type or transaction ID that is not valid UTF-8,
// holds a NUL or is over 255 bytes M_INVALID_PARAM (they are parts of the
// transaction's key). Nothing is read or sent then.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3sendtodeviceeventtypetxnid
func (s *Service) handleSend(w http.ResponseWriter, r *http.Request) error {
	me := accounts.Caller(r.Context())
	out := Outgoing{Sender: me.UserID, SenderDevice: me.DeviceID, Type: r.PathValue("eventType"), TxnID: r.PathValue("txnId")}
	for _, part := range []string{out.Type, out.TxnID} {
		if !rooms.ValidKeyPart(part) || len(part) > maxKeyPart {
			return httpapi.InvalidParam("event type and transaction ID must be valid UTF-8 without NUL, at most %d bytes", maxKeyPart)
		}
	}
	var req sendRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	if err := req.validate(out.Type, out.Sender); err != nil {
		return err
	}
	out.Messages = req.Messages
	if err := s.Send(r.Context(), out); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{})
	return nil
}

func (req sendRequest) validate(eventType, sender string) error {
	if req.Messages == nil {
		return httpapi.BadJSON("messages is required: an object of user IDs")
	}
	for user, byDevice := range req.Messages {
		if !rooms.ValidUserID(user) {
			return httpapi.InvalidParam("invalid user ID %q in messages", user)
		}
		if byDevice == nil {
			return httpapi.BadJSON("messages of %s must be an object of device IDs", user)
		}
		for device, content := range byDevice {
			if !bytes.HasPrefix(bytes.TrimSpace(content), []byte("{")) {
				return httpapi.BadJSON("the message to %s %s must be a JSON object", user, device)
			}
			ev, err := Event(eventType, sender, content)
			if err != nil {
				return err
			}
			if len(ev) > MaxEventBytes {
				return httpapi.TooLarge("the message to %s %s is %d bytes, over the limit of %d", user, device, len(ev), MaxEventBytes)
			}
		}
	}
	return nil
}
