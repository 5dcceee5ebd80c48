package federation

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/fedclient"
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

// RemoteDirectory lists other servers' published rooms for this server's
// clients (GET /publicRooms?server=): its PublicRooms is
// rooms.RemoteReads.PublicRooms.
type RemoteDirectory struct {
	Client *fedclient.Client
	// Timeout bounds one listing; 0 is 10 s, within API Gateway's 30.
	Timeout time.Duration
}

// publicRoomsAsk is the body of an outbound POST /publicRooms.
type publicRoomsAsk struct {
	Limit  int    `json:"limit,omitempty"`
	Since  string `json:"since,omitempty"`
	Filter struct {
		Term      string    `json:"generic_search_term,omitempty"`
		RoomTypes []*string `json:"room_types,omitempty"`
	} `json:"filter"`
}

const publicRoomsPath = "/_matrix/federation/v1/publicRooms"

// PublicRooms asks server for its published rooms: GET with limit and
// since, or, with a search term or room types, POST with the filter. A
// server that answers the POST 404, 405, M_UNRECOGNIZED or M_NOT_FOUND (it predates
// filtering over federation) is asked its whole list with GET, filtered
// here by the search term alone, unpaged, as Synapse falls back. The
// answer is the server's, checked to be an object with a chunk list.
func (d *RemoteDirectory) PublicRooms(ctx context.Context, server string, q rooms.DirectoryQuery) (json.RawMessage, error) {
	timeout := d.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var out json.RawMessage
	if q.Search == "" && q.RoomTypes == nil {
		v := url.Values{}
		if q.Limit > 0 {
			v.Set("limit", strconv.Itoa(q.Limit))
		}
		if q.Since != "" {
			v.Set("since", q.Since)
		}
		path := publicRoomsPath
		if len(v) > 0 {
			path += "?" + v.Encode()
		}
		if err := d.Client.Get(ctx, server, path, &out); err != nil {
			return nil, fmt.Errorf("public rooms of %s: %w", server, err)
		}
		return checkPublicRooms(server, out, "")
	}
	ask := publicRoomsAsk{Limit: q.Limit, Since: q.Since}
	ask.Filter.Term, ask.Filter.RoomTypes = q.Search, q.RoomTypes
	err := d.Client.Post(ctx, server, publicRoomsPath, ask, &out)
	if err == nil {
		return checkPublicRooms(server, out, "")
	}
	if e, ok := fedclient.AsError(err); !ok || !(e.Status == http.StatusNotFound || e.Status == http.StatusMethodNotAllowed || e.Code == "M_UNRECOGNIZED" || e.Code == "M_NOT_FOUND") {
		return nil, fmt.Errorf("public rooms of %s: %w", server, err)
	}
	if err := d.Client.Get(ctx, server, publicRoomsPath, &out); err != nil {
		return nil, fmt.Errorf("public rooms of %s: %w", server, err)
	}
	return checkPublicRooms(server, out, q.Search)
}

// checkPublicRooms checks a server's /publicRooms answer and, with a
// search term, keeps the rooms whose name, topic or canonical alias holds
// it (case-insensitive) in a chunk of its own.
func checkPublicRooms(server string, doc json.RawMessage, term string) (json.RawMessage, error) {
	var page struct {
		Chunk []json.RawMessage `json:"chunk"`
	}
	if err := json.Unmarshal(doc, &page); err != nil || page.Chunk == nil {
		return nil, fmt.Errorf("public rooms of %s: %w", server, cmp.Or(err, errors.New("no chunk list in the answer")))
	}
	if term == "" {
		return doc, nil
	}
	term = strings.ToLower(term)
	kept := []json.RawMessage{}
	for _, raw := range page.Chunk {
		var r struct {
			Name  string `json:"name"`
			Topic string `json:"topic"`
			Alias string `json:"canonical_alias"`
		}
		if json.Unmarshal(raw, &r) != nil {
			continue
		}
		if strings.Contains(strings.ToLower(r.Name), term) || strings.Contains(strings.ToLower(r.Topic), term) ||
			strings.Contains(strings.ToLower(r.Alias), term) {
			kept = append(kept, raw)
		}
	}
	return json.Marshal(struct {
		Chunk []json.RawMessage `json:"chunk"`
	}{kept})
}
