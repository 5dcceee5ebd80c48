package accountdata

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
)

// Register adds the account data endpoints to rt, each behind requireAuth
// (accounts.Service.RequireAuth).
func (s *Service) Register(rt *httpapi.Router, requireAuth func(http.HandlerFunc) http.HandlerFunc) {
	const global = "/_matrix/client/v3/user/{userId}/account_data/{type}"
	const room = "/_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}"
	rt.HandleFunc("GET "+global, requireAuth(httpapi.Handle(s.handleGet)))
	rt.HandleFunc("PUT "+global, requireAuth(httpapi.Handle(s.handlePut)))
	rt.HandleFunc("GET "+room, requireAuth(httpapi.Handle(s.handleGet)))
	rt.HandleFunc("PUT "+room, requireAuth(httpapi.Handle(s.handlePut)))
	// MSC3391's deletes, under the unstable prefix Synapse serves them at.
	const unstable = "/_matrix/client/unstable/org.matrix.msc3391/user/{userId}"
	rt.HandleFunc("DELETE "+unstable+"/account_data/{type}", requireAuth(httpapi.Handle(s.handleDelete)))
	rt.HandleFunc("DELETE "+unstable+"/rooms/{roomId}/account_data/{type}", requireAuth(httpapi.Handle(s.handleDelete)))
}

// handleGet serves GET /_matrix/client/v3/user/{userId}/account_data/{type}
// and GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}:
// the content, or 404 M_NOT_FOUND.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3useruseridaccount_datatype
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3useruseridroomsroomidaccount_datatype
func (s *Service) handleGet(w http.ResponseWriter, r *http.Request) error {
	userID, roomID, typ := r.PathValue("userId"), r.PathValue("roomId"), r.PathValue("type")
	if err := checkKey(roomID, typ); err != nil {
		return httpError(err)
	}
	if err := checkOwn(r, userID); err != nil {
		return err
	}
	if compute := s.Computed[typ]; compute != nil && roomID == "" {
		content, err := compute(r.Context(), userID)
		if err != nil {
			return err
		}
		httpapi.WriteJSON(w, http.StatusOK, content)
		return nil
	}
	content, err := s.Get(r.Context(), userID, roomID, typ)
	if err != nil {
		return httpError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, content)
	return nil
}

// handlePut serves PUT /_matrix/client/v3/user/{userId}/account_data/{type}
// and PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3useruseridaccount_datatype
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3useruseridroomsroomidaccount_datatype
func (s *Service) handlePut(w http.ResponseWriter, r *http.Request) error {
	userID, roomID, typ := r.PathValue("userId"), r.PathValue("roomId"), r.PathValue("type")
	if err := checkKey(roomID, typ); err != nil {
		return httpError(err)
	}
	var content json.RawMessage
	if err := httpapi.DecodeJSON(r, &content); err != nil {
		return err
	}
	if err := checkOwn(r, userID); err != nil {
		return err
	}
	if err := s.Put(r.Context(), userID, roomID, typ, content); err != nil {
		return httpError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// handleDelete serves MSC3391's
// DELETE /_matrix/client/unstable/org.matrix.msc3391/user/{userId}/account_data/{type}
// and its per-room form: 200 {} whether or not there was data, 405
// M_BAD_JSON for the types the server manages, as Synapse answers.
// https://github.com/matrix-org/matrix-spec-proposals/pull/3391
func (s *Service) handleDelete(w http.ResponseWriter, r *http.Request) error {
	userID, roomID, typ := r.PathValue("userId"), r.PathValue("roomId"), r.PathValue("type")
	if err := checkKey(roomID, typ); err != nil {
		return httpError(err)
	}
	if err := checkOwn(r, userID); err != nil {
		return err
	}
	if err := s.Remove(r.Context(), userID, roomID, typ); err != nil {
		return httpError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// checkOwn lets callers touch only their own account data.
func checkOwn(r *http.Request, userID string) error {
	if caller := accounts.Caller(r.Context()).UserID; caller != userID {
		return httpapi.Forbidden("you may only access your own account data, not that of %s", userID)
	}
	return nil
}

// httpError turns the package's errors into Matrix errors; others stay as
// they are and become a 500.
func httpError(err error) error {
	switch {
	case errors.Is(err, ErrNotFound):
		return httpapi.NotFound("account data not found")
	case errors.Is(err, ErrServerManaged):
		// The spec's answer: 405, with M_BAD_JSON.
		return httpapi.Errorf(http.StatusMethodNotAllowed, "M_BAD_JSON", "%v: clients cannot set it through this API", err)
	case errors.Is(err, ErrInvalidRoomID), errors.Is(err, ErrInvalidType):
		return httpapi.InvalidParam("%v", err)
	case errors.Is(err, ErrNotObject):
		return httpapi.BadJSON("%v", err)
	case errors.Is(err, ErrTooLarge):
		return httpapi.TooLarge("%v", err)
	}
	return err
}
