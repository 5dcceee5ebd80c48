package federation

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

// Joins lets other servers' users join and leave the rooms this server
// holds: make_join and make_leave offer a template built on the room's
// forward extremities, send_join and send_leave take the signed event back
// into the room through the room engine. It also takes other servers'
// invites of this server's users (invite.go).
type Joins struct {
	ServerName string
	Rooms      *rooms.Service
	// Verifier checks the joining server's signature:
	// serverkeys.Keys.Ring().
	Verifier gomatrixserverlib.JSONVerifier
	// UserExists reports whether a local user has an account; nil takes
	// every invite of a valid user ID of this server.
	UserExists func(ctx context.Context, userID string) (bool, error)
}

// Register adds the join and leave endpoints to rt, each behind auth,
// which must verify the X-Matrix signature and put the origin where
// serverkeys.Origin finds it (serverkeys.Keys.RequireServer).
func (j *Joins) Register(rt *httpapi.Router, auth func(http.Handler) http.Handler) {
	const v1, v2 = "/_matrix/federation/v1", "/_matrix/federation/v2"
	for pattern, h := range map[string]func(http.ResponseWriter, *http.Request) error{
		"GET " + v1 + "/make_join/{roomId}/{userId}":   j.makeHandler("join"),
		"GET " + v1 + "/make_leave/{roomId}/{userId}":  j.makeHandler("leave"),
		"PUT " + v2 + "/send_join/{roomId}/{eventId}":  j.sendHandler("join", false),
		"PUT " + v1 + "/send_join/{roomId}/{eventId}":  j.sendHandler("join", true),
		"PUT " + v2 + "/send_leave/{roomId}/{eventId}": j.sendHandler("leave", false),
		"PUT " + v1 + "/send_leave/{roomId}/{eventId}": j.sendHandler("leave", true),
		"PUT " + v2 + "/invite/{roomId}/{eventId}":     j.handleInvite,
		"GET " + v1 + "/make_knock/{roomId}/{userId}":  j.makeHandler("knock"),
		"PUT " + v1 + "/send_knock/{roomId}/{eventId}": j.sendHandler("knock", false),
	} {
		rt.Handle(pattern, auth(httpapi.Handle(h)))
	}
}

// makeResponse is the answer to make_join and make_leave.
type makeResponse struct {
	RoomVersion string          `json:"room_version"`
	Event       json.RawMessage `json:"event"`
}

// makeHandler serves GET /_matrix/federation/v1/make_join/{roomId}/{userId}
// (membership "join"), make_leave ("leave") and make_knock ("knock"): the
// user must be one of the requesting server's (else 403), the room one
// this server is in (else 404); a knock needs a room of version 7 on (else
// 400 M_INCOMPATIBLE_ROOM_VERSION); a join's or knock's ver parameters must hold the room's version (else
// 400 M_INCOMPATIBLE_ROOM_VERSION; none given means version 1 only, as the
// spec says). A membership the auth rules refuse as the room stands, or
// an origin the server ACL denies, is 403.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1make_joinroomiduserid
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1make_leaveroomiduserid
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1make_knockroomiduserid
func (j *Joins) makeHandler(membership string) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		ctx := r.Context()
		from := origin(r)
		roomID, err := roomParam(r)
		if err != nil {
			return err
		}
		userID := r.PathValue("userId")
		if !rooms.ValidUserID(userID) {
			return httpapi.InvalidParam("invalid user ID %q", userID)
		}
		if userServer(userID) != from {
			return httpapi.Forbidden("%s is not a user of %s", userID, from)
		}
		info, err := j.Rooms.Info(ctx, roomID)
		if errors.Is(err, rooms.ErrUnknownRoom) {
			return httpapi.NotFound("this server is not in room %s", roomID)
		}
		if err != nil {
			return err
		}
		if membership != "leave" {
			if err := partialRefusal(ctx, j.Rooms, roomID); err != nil {
				return err
			}
		}
		if membership == "knock" && !events.Knocking(info.Version) {
			e := httpapi.Errorf(http.StatusBadRequest, "M_INCOMPATIBLE_ROOM_VERSION",
				"room %s is of version %s, which has no knocking (version 7 on)", roomID, info.Version)
			e.Extra = map[string]any{"room_version": info.Version}
			return e
		}
		if membership == "join" || membership == "knock" {
			vers := r.URL.Query()["ver"]
			if len(vers) == 0 {
				vers = []string{"1"}
			}
			if !slices.Contains(vers, info.Version) {
				e := httpapi.Errorf(http.StatusBadRequest, "M_INCOMPATIBLE_ROOM_VERSION",
					"room %s is of version %s, which %s does not list as supported", roomID, info.Version, from)
				e.Extra = map[string]any{"room_version": info.Version}
				return e
			}
		}
		if err := j.checkACL(r, roomID, from); err != nil {
			return err
		}
		v, tmpl, err := j.Rooms.MembershipTemplate(ctx, roomID, userID, membership)
		if errors.Is(err, rooms.ErrUnknownRoom) {
			return httpapi.NotFound("this server is not in room %s", roomID)
		}
		if err != nil {
			return err
		}
		httpapi.WriteJSON(w, http.StatusOK, makeResponse{RoomVersion: v, Event: tmpl})
		return nil
	}
}

// checkACL refuses an origin the room's server ACL denies.
func (j *Joins) checkACL(r *http.Request, roomID, server string) error {
	ok, err := (&Service{Rooms: j.Rooms}).ACLAllows(r.Context(), roomID, server)
	if err != nil {
		return err
	}
	if !ok {
		return httpapi.Forbidden("the server ACL of room %s denies %s", roomID, server)
	}
	return nil
}

// sendJoinResponse is the answer to send_join (v2; v1 wraps it as
// [200, it]).
type sendJoinResponse struct {
	Origin         string            `json:"origin"`
	State          []json.RawMessage `json:"state"`
	AuthChain      []json.RawMessage `json:"auth_chain"`
	Event          json.RawMessage   `json:"event"`
	MembersOmitted bool              `json:"members_omitted"`
	ServersInRoom  []string          `json:"servers_in_room"`
}

// sendHandler serves PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}
// (membership "join"), send_leave ("leave"), their deprecated v1 forms,
// and PUT /_matrix/federation/v1/send_knock ("knock"), answered with the
// room's stripped state as PDUs (knock_room_state). The event must parse
// for the room's version, its content hash checked (else 400 M_BAD_JSON),
// be the one the path names, a membership of its sender setting
// membership, sent by a user of the origin and signed by it (else 400
// M_INVALID_PARAM, as the spec asks); it then goes to the room engine,
// which refuses what the auth rules or the current state refuse (403). A join is answered with the
// state before it and that state's auth chain. With omit_members=true (v2
// only; a value other than true or false is 400 M_INVALID_PARAM, checked
// before the join is taken in) the member events are left out of the
// state but for the heroes' of an unnamed room and those the join's auth
// rest on, the auth chain without the events of that state, and
// members_omitted is true (rooms.Service.OmitMembers): a partial-state
// join's answer no longer grows with the room's members.
// https://spec.matrix.org/v1.19/server-server-api/#put_matrixfederationv2send_joinroomideventid
// https://spec.matrix.org/v1.19/server-server-api/#put_matrixfederationv2send_leaveroomideventid
func (j *Joins) sendHandler(membership string, v1 bool) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
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
		omit := false
		if membership == "join" && !v1 {
			if omit, err = boolParam(r, "omit_members"); err != nil {
				return err
			}
		}
		info, err := j.Rooms.Info(ctx, roomID)
		if errors.Is(err, rooms.ErrUnknownRoom) {
			return httpapi.NotFound("this server is not in room %s", roomID)
		}
		if err != nil {
			return err
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return httpapi.BadJSON("read body: %v", err)
		}
		ev, err := events.ParseUntrusted(info.Version, body)
		if err != nil {
			return httpapi.BadJSON("not an event of room version %s: %s", info.Version, trimLib(err))
		}
		if err := checkMembership(ev, roomID, eventID, membership, from); err != nil {
			return err
		}
		if err := j.checkACL(r, roomID, from); err != nil {
			return err
		}
		if err := events.VerifyOrigin(ctx, j.Verifier, from, ev); err != nil {
			var na *events.NotAllowedError
			if errors.As(err, &na) {
				return httpapi.InvalidParam("%s", na.Reason)
			}
			return err
		}
		got, err := j.Rooms.ReceiveMembership(ctx, ev)
		if err != nil {
			return err
		}
		var answer any = struct{}{}
		if membership == "knock" {
			state, err := j.Rooms.StrippedStatePDUs(ctx, roomID, "")
			if err != nil {
				return err
			}
			answer = map[string]any{"knock_room_state": rawPDUs(state)}
		}
		if membership == "join" {
			servers, err := j.Rooms.JoinedServers(ctx, roomID)
			if err != nil {
				return err
			}
			state, chain := got.State, got.AuthChain
			if omit {
				if state, chain, err = j.Rooms.OmitMembers(ctx, got.Event, got.State); err != nil {
					return err
				}
			}
			answer = sendJoinResponse{
				Origin: j.ServerName, State: rawPDUs(state), AuthChain: rawPDUs(chain),
				Event: got.Event.JSON(), MembersOmitted: omit, ServersInRoom: servers,
			}
		}
		if v1 {
			answer = []any{http.StatusOK, answer}
		}
		httpapi.WriteJSON(w, http.StatusOK, answer)
		return nil
	}
}

// checkMembership checks that ev is the event the path names: in roomID,
// of ID eventID, a member event of its sender setting membership, the
// sender a user of origin.
func checkMembership(ev events.PDU, roomID, eventID, membership, origin string) error {
	if got := events.RoomID(ev); got != roomID {
		return httpapi.InvalidParam("the event is in room %s, not %s", got, roomID)
	}
	if ev.EventID() != eventID {
		return httpapi.InvalidParam("the event's ID is %s, not %s", ev.EventID(), eventID)
	}
	sender := events.Sender(ev)
	if ev.Type() != events.Member || ev.StateKey() == nil || *ev.StateKey() != sender {
		return httpapi.InvalidParam("the event is not a member event of its sender")
	}
	if m, _ := ev.Membership(); m != membership {
		return httpapi.InvalidParam("the event's membership is %q, not %q", m, membership)
	}
	if userServer(sender) != origin {
		return httpapi.InvalidParam("%s is not a user of %s", sender, origin)
	}
	return nil
}

// boolParam reads the boolean query parameter name: "true" or "false",
// as the spec's schemas write booleans; absent is false.
func boolParam(r *http.Request, name string) (bool, error) {
	switch v := r.URL.Query().Get(name); v {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	default:
		return false, httpapi.InvalidParam("%s must be true or false, not %q", name, v)
	}
}

// rawPDUs is evs as JSON, never null.
func rawPDUs(evs []events.PDU) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(evs))
	for _, ev := range evs {
		out = append(out, ev.JSON())
	}
	return out
}

// partialRefusal is 404 M_NOT_FOUND for a room this server holds with
// partial state (rooms/partial.go), as Synapse answers: a joining server
// then asks another, and no server takes an incomplete state from here.
func partialRefusal(ctx context.Context, rms *rooms.Service, roomID string) error {
	partial, err := rms.PartialServers(ctx, roomID)
	if err != nil {
		return err
	}
	if partial != nil {
		return httpapi.NotFound("this server is still loading the state of room %s (it joined with partial state); ask another server", roomID)
	}
	return nil
}
