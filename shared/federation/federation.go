// Package federation serves the server-server API: what other servers ask
// of this one. Service answers the read endpoints (events, state, auth
// chains, backfill, missing events, queries, the published room directory,
// device keys, the space hierarchy); Inbox receives transactions (send.go)
// and its queue worker gives their PDUs to the room engine (worker.go).
//
// Every endpoint goes behind serverkeys.Keys.RequireServer: the X-Matrix
// signature is checked first, and the handlers read the verified origin
// with serverkeys.Origin. Room endpoints answer only servers in the room
// that its server ACL lets in.
package federation

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/e2ekeys"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/media"
	"github.com/cirrus-matrix/cirrus/shared/profile"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/serverkeys"
	"github.com/cirrus-matrix/cirrus/shared/spaces"
)

// Service answers other servers' read requests over this server's rooms,
// profiles and keys.
type Service struct {
	ServerName string
	Rooms      *rooms.Service
	Profiles   *profile.Service
	E2EKeys    *e2ekeys.Service
	Spaces     *spaces.Service
	// Media is the content repository, whose own files other servers
	// download (media.go); nil answers 404.
	Media *media.Service
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Register adds the read endpoints to rt, each behind auth, which must
// verify the X-Matrix signature and put the origin where serverkeys.Origin
// finds it (serverkeys.Keys.RequireServer).
func (s *Service) Register(rt *httpapi.Router, auth func(http.Handler) http.Handler) {
	const v1 = "/_matrix/federation/v1"
	for pattern, h := range map[string]func(http.ResponseWriter, *http.Request) error{
		"GET " + v1 + "/event/{eventId}":               s.handleEvent,
		"GET " + v1 + "/state/{roomId}":                s.handleState,
		"GET " + v1 + "/state_ids/{roomId}":            s.handleStateIDs,
		"GET " + v1 + "/event_auth/{roomId}/{eventId}": s.handleEventAuth,
		"GET " + v1 + "/backfill/{roomId}":             s.handleBackfill,
		"POST " + v1 + "/get_missing_events/{roomId}":  s.handleMissingEvents,
		"GET " + v1 + "/query/directory":               s.handleQueryDirectory,
		"GET " + v1 + "/query/profile":                 s.handleQueryProfile,
		"GET " + v1 + "/publicRooms":                   s.handlePublicRooms,
		"POST " + v1 + "/publicRooms":                  s.handlePublicRooms,
		"GET " + v1 + "/user/devices/{userId}":         s.handleUserDevices,
		"POST " + v1 + "/user/keys/query":              s.handleKeysQuery,
		"POST " + v1 + "/user/keys/claim":              s.handleKeysClaim,
		"GET " + v1 + "/hierarchy/{roomId}":            s.handleHierarchy,
		"GET " + v1 + "/media/download/{mediaId}":      s.handleMediaDownload,
		"GET " + v1 + "/media/thumbnail/{mediaId}":     s.handleMediaThumbnail,
	} {
		rt.Handle(pattern, auth(httpapi.Handle(h)))
	}
}

// origin is the server a request was verified to come from.
func origin(r *http.Request) string { return serverkeys.Origin(r.Context()) }

// transaction is the envelope of /event and /backfill answers.
type transaction struct {
	Origin         string `json:"origin"`
	OriginServerTS int64  `json:"origin_server_ts"`
	PDUs           []any  `json:"pdus"`
}

// roomParam reads and checks the {roomId} path parameter.
func roomParam(r *http.Request) (string, error) {
	id := r.PathValue("roomId")
	if !rooms.ValidRoomID(id) {
		return "", httpapi.InvalidParam("invalid room ID %q", id)
	}
	return id, nil
}

// eventParam checks an event ID read from the path or query.
func eventParam(name, id string) (string, error) {
	if id == "" {
		return "", httpapi.MissingParam("%s is required", name)
	}
	if !rooms.ValidEventID(id) {
		return "", httpapi.InvalidParam("invalid event ID %q in %s", id, name)
	}
	return id, nil
}

// userServer is the server name of a user ID, "" when it is not one.
func userServer(userID string) string {
	if !strings.HasPrefix(userID, "@") {
		return ""
	}
	_, server, _ := strings.Cut(userID, ":")
	return server
}

// notFoundEvent maps the engine's unknown event and room to 404.
func notFoundEvent(err error, eventID string) error {
	if errors.Is(err, rooms.ErrUnknownEvent) || errors.Is(err, rooms.ErrUnknownRoom) {
		return httpapi.NotFound("could not find event %s", eventID)
	}
	return err
}

// checkRoom lets through only a server that has a joined member in the
// room's current state and that the room's server ACL allows: otherwise
// 403 M_FORBIDDEN, also for a room this server does not hold, so that a
// server not in a room learns nothing of it. Cost: one Query of the
// room's member events, one GetItem of the ACL.
func (s *Service) checkRoom(ctx context.Context, roomID, server string) error {
	m, err := s.Rooms.ServerMembership(ctx, roomID, server)
	if err != nil {
		return err
	}
	if m != "join" {
		return httpapi.Forbidden("%s is not in room %s", server, roomID)
	}
	ok, err := s.ACLAllows(ctx, roomID, server)
	if err != nil {
		return err
	}
	if !ok {
		return httpapi.Forbidden("the server ACL of room %s denies %s", roomID, server)
	}
	return nil
}
