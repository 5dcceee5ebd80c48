package filters

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
)

// Register adds the filter endpoints to rt, each behind requireAuth
// (accounts.Service.RequireAuth).
func (s *Service) Register(rt *httpapi.Router, requireAuth func(http.HandlerFunc) http.HandlerFunc) {
	rt.HandleFunc("POST /_matrix/client/v3/user/{userId}/filter", requireAuth(httpapi.Handle(s.handleCreate)))
	rt.HandleFunc("GET /_matrix/client/v3/user/{userId}/filter/{filterId}", requireAuth(httpapi.Handle(s.handleGet)))
}

// handleCreate serves POST /_matrix/client/v3/user/{userId}/filter.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3useruseridfilter
func (s *Service) handleCreate(w http.ResponseWriter, r *http.Request) error {
	userID := r.PathValue("userId")
	var filter json.RawMessage
	if err := httpapi.DecodeJSON(r, &filter); err != nil {
		return err
	}
	if err := Validate(filter); err != nil {
		return httpError(err)
	}
	if err := checkOwn(r, userID); err != nil {
		return err
	}
	id, err := s.Create(r.Context(), userID, filter)
	if err != nil {
		return httpError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"filter_id": id})
	return nil
}

// handleGet serves GET /_matrix/client/v3/user/{userId}/filter/{filterId}.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3useruseridfilterfilterid
func (s *Service) handleGet(w http.ResponseWriter, r *http.Request) error {
	userID := r.PathValue("userId")
	if err := checkOwn(r, userID); err != nil {
		return err
	}
	filter, err := s.Get(r.Context(), userID, r.PathValue("filterId"))
	if err != nil {
		return httpError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, filter)
	return nil
}

// checkOwn lets callers upload and read only their own filters.
func checkOwn(r *http.Request, userID string) error {
	if caller := accounts.Caller(r.Context()).UserID; caller != userID {
		return httpapi.Forbidden("you may only use your own filters, not those of %s", userID)
	}
	return nil
}

// httpError turns the package's errors into Matrix errors; others stay as
// they are and become a 500.
func httpError(err error) error {
	switch {
	case errors.Is(err, ErrNotFound):
		return httpapi.NotFound("filter not found")
	case errors.Is(err, ErrInvalid):
		return httpapi.BadJSON("%v", err)
	case errors.Is(err, ErrTooLarge):
		return httpapi.TooLarge("%v", err)
	}
	return err
}
