package keybackup

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
)

// Register adds the key backup endpoints to rt, each behind requireAuth
// (accounts.Service.RequireAuth).
func (s *Service) Register(rt *httpapi.Router, requireAuth func(http.HandlerFunc) http.HandlerFunc) {
	const base = "/_matrix/client/v3/room_keys"
	type route struct {
		pattern string
		handler func(http.ResponseWriter, *http.Request) error
	}
	routes := []route{
		{"POST " + base + "/version", s.handleCreateVersion},
		{"GET " + base + "/version", s.handleGetVersion},
		{"GET " + base + "/version/{version}", s.handleGetVersion},
		{"PUT " + base + "/version/{version}", s.handleUpdateVersion},
		{"DELETE " + base + "/version/{version}", s.handleDeleteVersion},
	}
	for _, path := range []string{"/keys", "/keys/{roomId}", "/keys/{roomId}/{sessionId}"} {
		routes = append(routes,
			route{"PUT " + base + path, s.handlePutKeys},
			route{"GET " + base + path, s.handleGetKeys},
			route{"DELETE " + base + path, s.handleDeleteKeys})
	}
	for _, e := range routes {
		rt.HandleFunc(e.pattern, requireAuth(httpapi.Handle(e.handler)))
	}
}

// versionRequest is the body of POST /room_keys/version and PUT
// /room_keys/version/{version}.
type versionRequest struct {
	Algorithm *string         `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	// Version, in PUT only, must repeat the path's.
	Version *string `json:"version"`
}

func (req *versionRequest) validate() error {
	switch {
	case req.Algorithm == nil || *req.Algorithm == "":
		return httpapi.MissingParam("algorithm is required")
	case absent(req.AuthData):
		return httpapi.MissingParam("auth_data is required")
	case req.AuthData[0] != '{':
		return httpapi.BadJSON("auth_data must be an object")
	}
	if *req.Algorithm == AlgorithmCurve25519 {
		// The spec requires it of this algorithm; a backup without it is
		// one no client can write to.
		var auth struct {
			PublicKey any `json:"public_key"`
		}
		json.Unmarshal(req.AuthData, &auth)
		if key, ok := auth.PublicKey.(string); !ok || key == "" {
			return httpapi.InvalidParam("auth_data.public_key must be the backup's public key, a string, for %s", AlgorithmCurve25519)
		}
	}
	return nil
}

// handleCreateVersion serves POST /_matrix/client/v3/room_keys/version.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3room_keysversion
func (s *Service) handleCreateVersion(w http.ResponseWriter, r *http.Request) error {
	var req versionRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	if err := req.validate(); err != nil {
		return err
	}
	version, err := s.Create(r.Context(), caller(r), *req.Algorithm, req.AuthData)
	if err != nil {
		return httpError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"version": version})
	return nil
}

// handleGetVersion serves GET /_matrix/client/v3/room_keys/version (the
// current version) and GET /_matrix/client/v3/room_keys/version/{version}.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3room_keysversion
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3room_keysversionversion
func (s *Service) handleGetVersion(w http.ResponseWriter, r *http.Request) error {
	v, err := s.Get(r.Context(), caller(r), r.PathValue("version"))
	if err != nil {
		return httpError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, v)
	return nil
}

// handleUpdateVersion serves PUT /_matrix/client/v3/room_keys/version/{version}.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3room_keysversionversion
func (s *Service) handleUpdateVersion(w http.ResponseWriter, r *http.Request) error {
	version := r.PathValue("version")
	var req versionRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	if err := req.validate(); err != nil {
		return err
	}
	if req.Version != nil && *req.Version != version {
		return httpapi.InvalidParam("version in body does not match the version in the path")
	}
	if err := s.Update(r.Context(), caller(r), version, *req.Algorithm, req.AuthData); err != nil {
		return httpError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// handleDeleteVersion serves DELETE /_matrix/client/v3/room_keys/version/{version}.
// https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3room_keysversionversion
func (s *Service) handleDeleteVersion(w http.ResponseWriter, r *http.Request) error {
	if err := s.Delete(r.Context(), caller(r), r.PathValue("version")); err != nil {
		return httpError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// keyRequest is one session's KeyBackupData in an upload.
type keyRequest struct {
	FirstMessageIndex *int64          `json:"first_message_index"`
	ForwardedCount    *int64          `json:"forwarded_count"`
	IsVerified        *bool           `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

// roomRequest is the body of PUT /room_keys/keys/{roomId}, and one room of
// PUT /room_keys/keys.
type roomRequest struct {
	Sessions map[string]keyRequest `json:"sessions"`
}

// keysRequest is the body of PUT /room_keys/keys.
type keysRequest struct {
	Rooms map[string]roomRequest `json:"rooms"`
}

func (k *keyRequest) data(roomID, sessionID string) (KeyData, error) {
	where := fmt.Sprintf("session %q of room %q", sessionID, roomID)
	switch {
	case k.FirstMessageIndex == nil:
		return KeyData{}, httpapi.MissingParam("%s: first_message_index is required", where)
	case k.ForwardedCount == nil:
		return KeyData{}, httpapi.MissingParam("%s: forwarded_count is required", where)
	case k.IsVerified == nil:
		return KeyData{}, httpapi.MissingParam("%s: is_verified is required", where)
	case absent(k.SessionData):
		return KeyData{}, httpapi.MissingParam("%s: session_data is required", where)
	case k.SessionData[0] != '{':
		return KeyData{}, httpapi.BadJSON("%s: session_data must be an object", where)
	case *k.FirstMessageIndex < 0 || *k.FirstMessageIndex > maxSafeInt:
		return KeyData{}, httpapi.InvalidParam("%s: first_message_index must be an integer from 0 to 2^53-1", where)
	case *k.ForwardedCount < 0 || *k.ForwardedCount > maxSafeInt:
		return KeyData{}, httpapi.InvalidParam("%s: forwarded_count must be an integer from 0 to 2^53-1", where)
	}
	return KeyData{FirstMessageIndex: *k.FirstMessageIndex, ForwardedCount: *k.ForwardedCount,
		IsVerified: *k.IsVerified, SessionData: k.SessionData}, nil
}

// decodeUpload reads the body of a PUT of keys, whose shape depends on how
// much of (roomID, sessionID) the path names, into a list of sessions.
func decodeUpload(r *http.Request, roomID, sessionID string) ([]Session, error) {
	var rooms map[string]roomRequest
	switch {
	case sessionID != "":
		var req keyRequest
		if err := httpapi.DecodeJSON(r, &req); err != nil {
			return nil, err
		}
		rooms = map[string]roomRequest{roomID: {Sessions: map[string]keyRequest{sessionID: req}}}
	case roomID != "":
		var req roomRequest
		if err := httpapi.DecodeJSON(r, &req); err != nil {
			return nil, err
		}
		if req.Sessions == nil {
			return nil, httpapi.MissingParam("sessions is required")
		}
		rooms = map[string]roomRequest{roomID: req}
	default:
		var req keysRequest
		if err := httpapi.DecodeJSON(r, &req); err != nil {
			return nil, err
		}
		if req.Rooms == nil {
			return nil, httpapi.MissingParam("rooms is required")
		}
		rooms = req.Rooms
	}
	return flatten(rooms)
}

// flatten checks an upload's IDs and keys, in a stable order so that the
// same bad body always gets the same error.
func flatten(rooms map[string]roomRequest) ([]Session, error) {
	var out []Session
	for _, roomID := range sortedKeys(rooms) {
		if !validRoomID(roomID) {
			return nil, httpapi.InvalidParam("%q is not a room ID", roomID)
		}
		sessions := rooms[roomID].Sessions
		if sessions == nil {
			return nil, httpapi.MissingParam("room %q: sessions is required", roomID)
		}
		for _, sessionID := range sortedKeys(sessions) {
			if !validSessionID(sessionID) {
				return nil, httpapi.InvalidParam("room %q: %q is not a session ID", roomID, sessionID)
			}
			req := sessions[sessionID]
			data, err := req.data(roomID, sessionID)
			if err != nil {
				return nil, err
			}
			out = append(out, Session{RoomID: roomID, SessionID: sessionID, Data: data})
		}
	}
	return out, nil
}

// handlePutKeys serves PUT /_matrix/client/v3/room_keys/keys,
// .../keys/{roomId} and .../keys/{roomId}/{sessionId}.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3room_keyskeys
func (s *Service) handlePutKeys(w http.ResponseWriter, r *http.Request) error {
	roomID, sessionID, version, err := keysParams(r)
	if err != nil {
		return err
	}
	sessions, err := decodeUpload(r, roomID, sessionID)
	if err != nil {
		return err
	}
	st, err := s.Put(r.Context(), caller(r), version, sessions)
	if err != nil {
		return httpError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, st)
	return nil
}

// handleGetKeys serves GET /_matrix/client/v3/room_keys/keys (every room),
// .../keys/{roomId} ({"sessions": {}} for a room without keys, as the spec
// says) and .../keys/{roomId}/{sessionId} (404 for a session without one).
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3room_keyskeys
func (s *Service) handleGetKeys(w http.ResponseWriter, r *http.Request) error {
	roomID, sessionID, version, err := keysParams(r)
	if err != nil {
		return err
	}
	if sessionID != "" {
		data, err := s.Key(r.Context(), caller(r), version, roomID, sessionID)
		if err != nil {
			return httpError(err)
		}
		httpapi.WriteJSON(w, http.StatusOK, data)
		return nil
	}
	rooms, err := s.Keys(r.Context(), caller(r), version, roomID)
	if err != nil {
		return httpError(err)
	}
	if roomID == "" {
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"rooms": rooms})
		return nil
	}
	room, ok := rooms[roomID]
	if !ok {
		room = RoomKeys{Sessions: map[string]KeyData{}}
	}
	httpapi.WriteJSON(w, http.StatusOK, room)
	return nil
}

// handleDeleteKeys serves DELETE /_matrix/client/v3/room_keys/keys,
// .../keys/{roomId} and .../keys/{roomId}/{sessionId}.
// https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3room_keyskeys
func (s *Service) handleDeleteKeys(w http.ResponseWriter, r *http.Request) error {
	roomID, sessionID, version, err := keysParams(r)
	if err != nil {
		return err
	}
	st, err := s.DeleteKeys(r.Context(), caller(r), version, roomID, sessionID)
	if err != nil {
		return httpError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, st)
	return nil
}

// keysParams reads and checks the path's room and session IDs (either may
// be "") and the version query parameter, which every keys endpoint needs.
func keysParams(r *http.Request) (roomID, sessionID, version string, err error) {
	roomID, sessionID = r.PathValue("roomId"), r.PathValue("sessionId")
	if roomID != "" && !validRoomID(roomID) {
		return "", "", "", httpapi.InvalidParam("%q is not a room ID", roomID)
	}
	if sessionID != "" && !validSessionID(sessionID) {
		return "", "", "", httpapi.InvalidParam("%q is not a session ID", sessionID)
	}
	version = r.URL.Query().Get("version")
	if version == "" {
		return "", "", "", httpapi.MissingParam("the version query parameter is required")
	}
	return roomID, sessionID, version, nil
}

// validRoomID checks what the keys need of a room ID: the sigil, UTF-8 and
// a length that keeps the sort key within DynamoDB's limit. The room need
// not be known here: a backup holds keys of rooms long left.
func validRoomID(id string) bool {
	return len(id) >= 2 && len(id) <= MaxIDLength && id[0] == '!' && utf8.ValidString(id)
}

// validSessionID checks a megolm session ID (unpadded base64, which may
// hold '/' and '+') for UTF-8 and length.
func validSessionID(id string) bool {
	return id != "" && len(id) <= MaxIDLength && utf8.ValidString(id)
}

// absent reports whether a field was left out or sent as null.
func absent(raw json.RawMessage) bool { return len(raw) == 0 || string(raw) == "null" }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func caller(r *http.Request) string { return accounts.Caller(r.Context()).UserID }

// httpError turns the package's errors into the spec's; others stay as
// they are and become a 500.
func httpError(err error) error {
	var wrong *WrongVersionError
	switch {
	case errors.As(err, &wrong):
		return &httpapi.Error{Status: http.StatusForbidden, Code: "M_WRONG_ROOM_KEYS_VERSION",
			Message: "Wrong backup version.", Extra: map[string]any{"current_version": wrong.Current}}
	case errors.Is(err, ErrNoBackup):
		return httpapi.NotFound("No current backup version")
	case errors.Is(err, ErrUnknownVersion):
		return httpapi.NotFound("Unknown backup version")
	case errors.Is(err, ErrKeyNotFound):
		return httpapi.NotFound("Key not found.")
	case errors.Is(err, ErrAlgorithmMismatch):
		return httpapi.InvalidParam("Algorithm does not match")
	case errors.Is(err, ErrNotObject):
		return httpapi.BadJSON("%v", err)
	case errors.Is(err, ErrTooLarge):
		return httpapi.TooLarge("%v", err)
	case errors.Is(err, ErrBusy):
		// Other clients of the user keep winning the races: a client
		// that waits and tries again will get through.
		return httpapi.LimitExceeded(time.Second)
	}
	return err
}
