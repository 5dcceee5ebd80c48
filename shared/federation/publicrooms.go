package federation

import (
	"net/http"
	"strconv"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

// publicRoomsRequest is the body of POST /publicRooms.
type publicRoomsRequest struct {
	Limit  int    `json:"limit"`
	Since  string `json:"since"`
	Filter struct {
		Term      string    `json:"generic_search_term"`
		RoomTypes []*string `json:"room_types"`
	} `json:"filter"`
	IncludeAllNetworks   bool   `json:"include_all_networks"`
	ThirdPartyInstanceID string `json:"third_party_instance_id"`
}

// handlePublicRooms serves GET and POST /_matrix/federation/v1/publicRooms:
// the rooms published in this server's directory, most members first, as
// the client API lists them (rooms.ListPublic). This server bridges no
// third-party networks: a third_party_instance_id lists nothing.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1publicrooms
func (s *Service) handlePublicRooms(w http.ResponseWriter, r *http.Request) error {
	var req publicRoomsRequest
	if r.Method == http.MethodPost {
		if err := httpapi.DecodeJSON(r, &req); err != nil {
			return err
		}
	} else {
		q := r.URL.Query()
		req.Since, req.ThirdPartyInstanceID = q.Get("since"), q.Get("third_party_instance_id")
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return httpapi.InvalidParam("limit must be an integer")
			}
			req.Limit = n
		}
		if v := q.Get("include_all_networks"); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return httpapi.InvalidParam("include_all_networks must be true or false")
			}
			req.IncludeAllNetworks = b
		}
	}
	if req.ThirdPartyInstanceID != "" && !req.IncludeAllNetworks {
		httpapi.WriteJSON(w, http.StatusOK, rooms.PublicRooms{Chunk: []rooms.PublicRoom{}})
		return nil
	}
	out, err := s.Rooms.ListPublic(r.Context(), rooms.DirectoryQuery{Limit: req.Limit, Since: req.Since,
		Search: req.Filter.Term, RoomTypes: req.Filter.RoomTypes})
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}
