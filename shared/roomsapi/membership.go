package roomsapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

type reasonBody struct {
	Reason string `json:"reason"`
	UserID string `json:"user_id"`
}

// enter serves join and knock: the room by ID or alias, the servers to ask
// for it (via, and server_name, its older name), an optional reason.
func (a *API) enter(act func(ctx context.Context, userID, roomOrAlias string, via []string, reason string) (string, error)) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		target := r.PathValue("roomIdOrAlias")
		if id := r.PathValue("roomId"); id != "" {
			target = id
		}
		q := r.URL.Query()
		via := append(q["via"], q["server_name"]...)
		var body reasonBody
		if err := optionalBody(r, &body); err != nil {
			return err
		}
		id, err := act(r.Context(), caller(r).UserID, target, via, body.Reason)
		return reply(w, map[string]string{"room_id": id}, err)
	}
}

// invite adapts Invite to the shape of the other targeted actions.
func (a *API) invite(ctx context.Context, sender, roomID, target, reason string) error {
	return a.Rooms.Invite(ctx, sender, roomID, target, reason, false)
}

// target serves the endpoints that act on another user: invite, kick, ban,
// unban.
func (a *API) target(act func(ctx context.Context, sender, roomID, target, reason string) error) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		id, err := roomID(r)
		if err != nil {
			return err
		}
		var body reasonBody
		if err := httpapi.DecodeJSON(r, &body); err != nil {
			return err
		}
		if body.UserID == "" {
			return httpapi.MissingParam("user_id is required")
		}
		return reply(w, struct{}{}, act(r.Context(), caller(r).UserID, id, body.UserID, body.Reason))
	}
}

func (a *API) handleLeave(w http.ResponseWriter, r *http.Request) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	var body reasonBody
	if err := optionalBody(r, &body); err != nil {
		return err
	}
	return reply(w, struct{}{}, a.Rooms.Leave(r.Context(), caller(r).UserID, id, body.Reason))
}

func (a *API) handleForget(w http.ResponseWriter, r *http.Request) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	return reply(w, struct{}{}, a.Rooms.Forget(r.Context(), caller(r).UserID, id))
}

func (a *API) handleCreate(w http.ResponseWriter, r *http.Request) error {
	var req rooms.CreateRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	id, err := a.Rooms.CreateRoom(r.Context(), caller(r).UserID, req)
	if errors.Is(err, rooms.ErrAliasInUse) {
		// createRoom's answer to a taken room_alias_name is a 400, where
		// PUT /directory/room's is a 409.
		return httpapi.Errorf(http.StatusBadRequest, "M_ROOM_IN_USE", "%s", err.Error())
	}
	return reply(w, map[string]string{"room_id": id}, err)
}

func (a *API) handleUpgrade(w http.ResponseWriter, r *http.Request) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	var body struct {
		NewVersion         string   `json:"new_version"`
		AdditionalCreators []string `json:"additional_creators"`
	}
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return err
	}
	if body.NewVersion == "" {
		return httpapi.MissingParam("new_version is required")
	}
	for _, u := range body.AdditionalCreators {
		if !rooms.ValidUserID(u) {
			return httpapi.InvalidParam("additional_creators holds an invalid user ID: %s", u)
		}
	}
	newID, err := a.Rooms.Upgrade(r.Context(), caller(r).UserID, id, body.NewVersion, body.AdditionalCreators)
	return reply(w, map[string]string{"replacement_room": newID}, err)
}
