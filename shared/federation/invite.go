package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

// inviteRequest is the body of PUT /_matrix/federation/v2/invite.
type inviteRequest struct {
	RoomVersion string            `json:"room_version"`
	Event       json.RawMessage   `json:"event"`
	State       []json.RawMessage `json:"invite_room_state"`
}

// handleInvite serves PUT /_matrix/federation/v2/invite/{roomId}/{eventId}:
// another server's user invites a user of this server. The event must
// parse for the room version given (one this server supports, else 400
// M_INCOMPATIBLE_ROOM_VERSION), be the one the path names, an invite from
// a user of the origin, signed by it, of a user of this server who exists
// (else 400 M_INVALID_PARAM, 404 for no such user). This server signs it
// and answers it. In a room this server is joined to nothing is written:
// the invite comes again in a transaction and goes through the room
// engine. For any other room (not held, or left: rooms.Service.Outside)
// the invite and its stripped state are kept as the user's membership
// (rooms.Service.ReceiveInvite), shown in their /sync.
// invite_room_state is checked as the spec says for room versions after
// 11 (the create event present, every entry a PDU of the room, signed);
// in versions 1 to 11 stripped entries are taken as they come.
// https://spec.matrix.org/v1.19/server-server-api/#put_matrixfederationv2inviteroomideventid
func (j *Joins) handleInvite(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	from := origin(r)
	roomID, err := roomParam(r)
	if err != nil {
		return err
	}
	eventID, err := eventParam("eventId", r.PathValue("eventId"))
	if err != nil {
		return err
	}
	var req inviteRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.RoomVersion == "" || len(req.Event) == 0 {
		return httpapi.MissingParam("room_version and event are required")
	}
	if !events.Supported(req.RoomVersion) {
		e := httpapi.Errorf(http.StatusBadRequest, "M_INCOMPATIBLE_ROOM_VERSION", "this server does not support room version %q", req.RoomVersion)
		e.Extra = map[string]any{"room_version": req.RoomVersion}
		return e
	}
	ev, err := events.ParseUntrusted(req.RoomVersion, req.Event)
	if err != nil {
		return httpapi.InvalidParam("not an event of room version %s: %s", req.RoomVersion, trimLib(err))
	}
	if err := j.checkInvite(ev, roomID, eventID, from); err != nil {
		return err
	}
	target := *ev.StateKey()
	if j.UserExists != nil {
		ok, err := j.UserExists(ctx, target)
		if err != nil {
			return err
		}
		if !ok {
			return httpapi.NotFound("no user %s here", target)
		}
	}
	if err := events.VerifyOrigin(ctx, j.Verifier, from, ev); err != nil {
		var na *events.NotAllowedError
		if errors.As(err, &na) {
			return httpapi.InvalidParam("%s", na.Reason)
		}
		return err
	}
	signed := j.Rooms.Signer.Countersign(ev)
	outside, err := j.Rooms.Outside(ctx, roomID)
	if err != nil {
		return err
	}
	if outside {
		state, err := j.inviteState(ctx, req, roomID)
		if err != nil {
			return err
		}
		if err := j.Rooms.ReceiveInvite(ctx, signed, state); err != nil {
			return err
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]json.RawMessage{"event": signed.JSON()})
	return nil
}

// checkInvite checks that ev is the invite the path names: in roomID, of
// ID eventID, an invite from a user of origin to a user of this server.
func (j *Joins) checkInvite(ev events.PDU, roomID, eventID, origin string) error {
	if got := events.RoomID(ev); got != roomID {
		return httpapi.InvalidParam("the event is in room %s, not %s", got, roomID)
	}
	if ev.EventID() != eventID {
		return httpapi.InvalidParam("the event's ID is %s, not %s", ev.EventID(), eventID)
	}
	if ev.Type() != events.Member || ev.StateKey() == nil {
		return httpapi.InvalidParam("the event is not a member event")
	}
	if m, _ := ev.Membership(); m != "invite" {
		return httpapi.InvalidParam("the event's membership is %q, not invite", m)
	}
	if userServer(events.Sender(ev)) != origin {
		return httpapi.InvalidParam("the sender %s is not a user of %s", events.Sender(ev), origin)
	}
	if !rooms.ValidUserID(*ev.StateKey()) || userServer(*ev.StateKey()) != j.ServerName {
		return httpapi.InvalidParam("%s is not a user of this server", *ev.StateKey())
	}
	return nil
}

// inviteState reads invite_room_state as stripped state. After room
// version 11 every entry must be a PDU of the room signed by its sender's
// server, the create event among them (400 M_INVALID_PARAM otherwise).
func (j *Joins) inviteState(ctx context.Context, req inviteRequest, roomID string) ([]events.StrippedStateEvent, error) {
	strict := true
	if n, err := strconv.Atoi(req.RoomVersion); err == nil && n <= 11 {
		strict = false
	}
	out := make([]events.StrippedStateEvent, 0, len(req.State))
	create := false
	for _, raw := range req.State {
		var st events.StrippedStateEvent
		if err := json.Unmarshal(raw, &st); err != nil || st.Type == "" {
			if strict {
				return nil, httpapi.InvalidParam("invite_room_state holds an entry that is not an event")
			}
			continue
		}
		if strict {
			ev, err := events.ParseUntrusted(req.RoomVersion, raw)
			if err != nil {
				return nil, httpapi.InvalidParam("invite_room_state: not an event of room version %s: %s", req.RoomVersion, trimLib(err))
			}
			if events.RoomID(ev) != roomID {
				return nil, httpapi.InvalidParam("invite_room_state: %s is in room %s", ev.EventID(), events.RoomID(ev))
			}
			if err := gomatrixserverlib.VerifyEventSignatures(ctx, ev, j.Verifier, senderUserID); err != nil {
				return nil, httpapi.InvalidParam("invite_room_state: %s: %s", ev.EventID(), trimLib(err))
			}
			if st, err = events.StrippedState(ev); err != nil {
				return nil, httpapi.InvalidParam("invite_room_state: %s is not a state event", ev.EventID())
			}
		}
		if st.Type != events.Create {
			st.OriginServerTS = 0 // kept for the create event only
		}
		create = create || (st.Type == events.Create && st.StateKey == "")
		out = append(out, st)
	}
	if strict && !create {
		return nil, httpapi.InvalidParam("invite_room_state lacks the room's create event")
	}
	return out, nil
}
