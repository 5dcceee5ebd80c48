package userdir

import (
	"encoding/json"
	"math"
	"net/http"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
)

// defaultLimit and maxLimit are Synapse's: the spec's default of 10, and at
// most 50 results whatever the client asks.
const (
	defaultLimit = 10
	maxLimit     = 50
)

// Register adds the user directory endpoint to rt; requireAuth guards it
// (accounts.Service.RequireAuth).
func (s *Service) Register(rt *httpapi.Router, requireAuth func(http.HandlerFunc) http.HandlerFunc) {
	rt.HandleFunc("POST /_matrix/client/v3/user_directory/search", requireAuth(httpapi.Handle(s.handleSearch)))
}

// handleSearch serves POST /_matrix/client/v3/user_directory/search. As
// Synapse: with the directory off the answer is empty whatever the body; a
// limit is held to 0..50. A body without search_term is 400, with the
// spec's M_MISSING_PARAM where Synapse says M_UNKNOWN.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3user_directorysearch
func (s *Service) handleSearch(w http.ResponseWriter, r *http.Request) error {
	if !s.Enabled {
		httpapi.WriteJSON(w, http.StatusOK, Results{Results: []Result{}})
		return nil
	}
	var req struct {
		SearchTerm *string          `json:"search_term"`
		Limit      *json.RawMessage `json:"limit"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.SearchTerm == nil {
		return httpapi.MissingParam("search_term is required")
	}
	limit := defaultLimit
	if req.Limit != nil {
		var n float64
		if err := json.Unmarshal(*req.Limit, &n); err != nil || n != math.Trunc(n) {
			return httpapi.BadJSON("limit must be an integer")
		}
		limit = int(max(0, min(n, maxLimit)))
	}
	res, err := s.Search(r.Context(), accounts.Caller(r.Context()).UserID, *req.SearchTerm, limit)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, res)
	return nil
}
