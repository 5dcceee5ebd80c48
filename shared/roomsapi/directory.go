package roomsapi

import (
	"errors"
	"net/http"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

func (a *API) handleAliases(w http.ResponseWriter, r *http.Request) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	aliases, err := a.Rooms.VisibleAliases(r.Context(), caller(r).UserID, id)
	return reply(w, map[string]any{"aliases": aliases}, err)
}

func (a *API) handleSetAlias(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		RoomID string `json:"room_id"`
	}
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return err
	}
	return reply(w, struct{}{}, a.Rooms.SetAlias(r.Context(), caller(r).UserID, r.PathValue("roomAlias"), body.RoomID))
}

func (a *API) handleGetAlias(w http.ResponseWriter, r *http.Request) error {
	alias := r.PathValue("roomAlias")
	id, err := a.Rooms.ResolveAlias(r.Context(), alias)
	if errors.Is(err, rooms.ErrUnknownAlias) {
		return httpapi.NotFound("room alias %s not found", alias)
	}
	return reply(w, map[string]any{"room_id": id, "servers": []string{a.Rooms.Signer.ServerName}}, err)
}

func (a *API) handleDeleteAlias(w http.ResponseWriter, r *http.Request, admin bool) error {
	return reply(w, struct{}{}, a.Rooms.RemoveAlias(r.Context(), caller(r).UserID, admin, r.PathValue("roomAlias")))
}

func (a *API) handleGetListing(w http.ResponseWriter, r *http.Request) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	public, err := a.Rooms.Listed(r.Context(), id)
	vis := "private"
	if public {
		vis = "public"
	}
	return reply(w, map[string]string{"visibility": vis}, err)
}

func (a *API) handleSetListing(w http.ResponseWriter, r *http.Request) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	var body struct {
		Visibility string `json:"visibility"`
	}
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return err
	}
	if body.Visibility == "" {
		body.Visibility = "public" // the spec's default
	}
	if body.Visibility != "public" && body.Visibility != "private" {
		return httpapi.InvalidParam(`visibility must be "public" or "private"`)
	}
	return reply(w, struct{}{}, a.Rooms.Publish(r.Context(), caller(r).UserID, id, body.Visibility == "public"))
}

func (a *API) handlePublicRooms(w http.ResponseWriter, r *http.Request) error {
	q := rooms.DirectoryQuery{Since: r.URL.Query().Get("since")}
	var err error
	if q.Limit, err = intParam(r, "limit", 0); err != nil {
		return err
	}
	if r.Method == http.MethodPost {
		var body struct {
			Limit  int    `json:"limit"`
			Since  string `json:"since"`
			Filter struct {
				Term      string    `json:"generic_search_term"`
				RoomTypes []*string `json:"room_types"`
			} `json:"filter"`
		}
		if err := httpapi.DecodeJSON(r, &body); err != nil {
			return err
		}
		q = rooms.DirectoryQuery{Limit: body.Limit, Since: body.Since, Search: body.Filter.Term, RoomTypes: body.Filter.RoomTypes}
	}
	if server := r.URL.Query().Get("server"); server != "" && server != a.Rooms.Signer.ServerName {
		// Another server's list, through federation.
		out, err := a.Rooms.PublicRoomsOf(r.Context(), server, q)
		return reply(w, out, err)
	}
	out, err := a.Rooms.ListPublic(r.Context(), q)
	return reply(w, out, err)
}
