package ephemeral

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

// Register adds the typing, receipt and read marker endpoints to rt, each
// behind requireAuth (accounts.Service.RequireAuth).
func (s *Service) Register(rt *httpapi.Router, requireAuth func(http.HandlerFunc) http.HandlerFunc) {
	const v3 = "/_matrix/client/v3/rooms/{roomId}"
	rt.HandleFunc("PUT "+v3+"/typing/{userId}", requireAuth(httpapi.Handle(s.handleTyping)))
	rt.HandleFunc("POST "+v3+"/receipt/{receiptType}/{eventId}", requireAuth(httpapi.Handle(s.handleReceipt)))
	rt.HandleFunc("POST "+v3+"/read_markers", requireAuth(httpapi.Handle(s.handleReadMarkers)))
}

// typingRequest is the body of PUT /rooms/{roomId}/typing/{userId}. The
// timeout is a number of milliseconds; the spec says an integer, and a
// fraction is taken as it comes rather than refused.
type typingRequest struct {
	Typing  *bool    `json:"typing"`
	Timeout *float64 `json:"timeout"`
}

// handleTyping serves PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}:
// only for the caller (403 M_FORBIDDEN for anyone else, as Dendrite; Synapse
// answers 400 M_FORBIDDEN), only when joined (403). A missing timeout is 30
// seconds, a longer one than 2 minutes is cut to that (Synapse's values).
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3roomsroomidtypinguserid
func (s *Service) handleTyping(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomParam(r)
	if err != nil {
		return err
	}
	userID := r.PathValue("userId")
	if !rooms.ValidUserID(userID) {
		return httpapi.InvalidParam("invalid user ID %q", userID)
	}
	var req typingRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.Typing == nil {
		return httpapi.MissingParam("typing is required")
	}
	timeout := DefaultTypingTimeout
	if req.Timeout != nil {
		if *req.Timeout < 0 {
			return httpapi.InvalidParam("timeout must not be negative")
		}
		timeout = time.Duration(min(*req.Timeout, float64(MaxTypingTimeout.Milliseconds())) * float64(time.Millisecond))
	}
	if caller := accounts.Caller(r.Context()).UserID; caller != userID {
		return httpapi.Forbidden("you may only set your own typing state, not that of %s", userID)
	}
	if err := s.SetTyping(r.Context(), userID, roomID, *req.Typing, timeout); err != nil {
		return httpError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// receiptRequest is the body of POST /rooms/{roomId}/receipt/...: the
// thread ID is read raw, so that a value that is not a string is the
// spec's 400 M_INVALID_PARAM rather than M_BAD_JSON.
type receiptRequest struct {
	ThreadID json.RawMessage `json:"thread_id"`
}

// handleReceipt serves POST
// /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidreceiptreceipttypeeventid
func (s *Service) handleReceipt(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomParam(r)
	if err != nil {
		return err
	}
	typ := r.PathValue("receiptType")
	switch typ {
	case Read, ReadPrivate, FullyRead:
	default:
		return httpapi.InvalidParam("receipt type must be %s, %s or %s, not %q", Read, ReadPrivate, FullyRead, typ)
	}
	eventID := r.PathValue("eventId")
	if !rooms.ValidEventID(eventID) {
		return httpapi.InvalidParam("invalid event ID %q", eventID)
	}
	var req receiptRequest
	// The spec requires a body; clients that send none mean no thread.
	if r.ContentLength != 0 {
		if err := httpapi.DecodeJSON(r, &req); err != nil {
			return err
		}
	}
	thread := ""
	if req.ThreadID != nil {
		if json.Unmarshal(req.ThreadID, &thread) != nil || thread == "" {
			return httpapi.InvalidParam("thread_id field must be a non-empty string")
		}
		if typ == FullyRead {
			return httpapi.InvalidParam("thread_id is not compatible with %s", FullyRead)
		}
		if thread != MainThread && !rooms.ValidEventID(thread) {
			return httpapi.InvalidParam("thread_id must be %q or a thread root's event ID, not %q", MainThread, thread)
		}
	}
	me := accounts.Caller(r.Context()).UserID
	if err := s.SendReceipt(r.Context(), me, roomID, typ, eventID, thread); err != nil {
		return httpError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// handleReadMarkers serves POST /_matrix/client/v3/rooms/{roomId}/read_markers.
// Keys other than the three are ignored, as Synapse does; an empty event ID
// sets nothing.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidread_markers
func (s *Service) handleReadMarkers(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomParam(r)
	if err != nil {
		return err
	}
	var req ReadMarkers
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	for key, id := range map[string]string{FullyRead: req.FullyRead, Read: req.Read, ReadPrivate: req.ReadPrivate} {
		if id != "" && !rooms.ValidEventID(id) {
			return httpapi.InvalidParam("%s: invalid event ID %q", key, id)
		}
	}
	me := accounts.Caller(r.Context()).UserID
	if err := s.SetReadMarkers(r.Context(), me, roomID, req); err != nil {
		return httpError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// roomParam reads and checks the {roomId} path parameter.
func roomParam(r *http.Request) (string, error) {
	id := r.PathValue("roomId")
	if !rooms.ValidRoomID(id) {
		return "", httpapi.InvalidParam("invalid room ID %q", id)
	}
	return id, nil
}

// httpError turns the package's errors into Matrix errors; others stay as
// they are and become a 500.
func httpError(err error) error {
	switch {
	case errors.Is(err, ErrNotJoined):
		return httpapi.Forbidden("you are not joined to this room")
	case errors.Is(err, ErrUnknownEvent):
		return httpapi.NotFound("%v", err)
	case errors.Is(err, ErrInvalidThread), errors.Is(err, ErrUnknownType):
		return httpapi.InvalidParam("%v", err)
	}
	return err
}
