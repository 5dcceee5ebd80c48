// Package presence keeps whether users are online, what they say about it,
// and tells the users who share a room with them when it changes: local
// users through their sync streams, other servers' users through an
// m.presence EDU to their servers (federation.go), whose EDUs come in the
// same way.
package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sync/errgroup"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Service keeps presence. A change costs one write of the user's item and
// one stream entry for each local user who shares a room with them, so a
// server may turn presence off (Enabled false): then it is always offline
// and nobody is told anything.
type Service struct {
	Store   *store.Store
	Rooms   *rooms.Service
	Enabled bool
	// Touch writes news of userID's presence into the streams of users.
	Touch func(ctx context.Context, userID string, users []string) error
	// ServerName tells this server's users from others' (federation.go).
	ServerName string
	// Federate sends an EDU to the other servers with a joined member in
	// any of the rooms (sender.Sender.SendRoomsEDU); nil sends nothing.
	Federate func(ctx context.Context, roomIDs []string, eduType string, content json.RawMessage) error
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// state is a user's presence item.
type state struct {
	PK         string `dynamodbav:"pk"` // user|<user ID>
	SK         string `dynamodbav:"sk"` // presence
	Presence   string `dynamodbav:"presence"`
	StatusMsg  string `dynamodbav:"status_msg,omitempty"`
	LastActive int64  `dynamodbav:"last_active"`
	// Remote marks a user of another server, whose currently_active is
	// theirs to say (Active), for as long as a local user's would last
	// after LastActive.
	Remote bool `dynamodbav:"remote,omitempty"`
	Active bool `dynamodbav:"active,omitempty"`
}

func key(userID string) store.Key { return store.Key{PK: "user|" + userID, SK: "presence"} }

// Valid reports whether p is a presence the spec knows.
func Valid(p string) bool { return p == "online" || p == "offline" || p == "unavailable" }

// Set records userID's presence and status message; a change is told to
// everyone who shares a room with them.
func (s *Service) Set(ctx context.Context, userID, presence, statusMsg string) error {
	if !s.Enabled {
		return nil
	}
	if !Valid(presence) {
		return httpapi.InvalidParam("presence must be online, offline or unavailable")
	}
	k := key(userID)
	var old state
	if err := s.Store.Get(ctx, k, &old); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	next := state{PK: k.PK, SK: k.SK, Presence: presence, StatusMsg: statusMsg, LastActive: s.now().UnixMilli()}
	put := func() error {
		if err := s.Store.Put(ctx, next); err != nil {
			return fmt.Errorf("set presence of %s: %w", userID, err)
		}
		return nil
	}
	if old.Presence == presence && old.StatusMsg == statusMsg {
		return put() // only activity: nobody needs waking
	}
	// Whom to tell is read beside the write; they are told after it, so
	// that what wakes them reads the new presence.
	var joined, users []string
	var g errgroup.Group
	g.Go(put)
	g.Go(func() (err error) {
		if joined, err = s.Rooms.JoinedRooms(ctx, userID); err != nil {
			return err
		}
		// Not the user themselves: the sync that set their presence
		// would wake itself.
		users, err = s.Rooms.LocalJoinedIn(ctx, joined, userID)
		return err
	})
	if err := g.Wait(); err != nil {
		return err
	}
	if len(users) > 0 {
		if err := s.Touch(ctx, userID, users); err != nil {
			return err
		}
	}
	return s.federate(ctx, userID, joined, s.status(next))
}

// tell writes news of userID's presence to the local users of the rooms
// (theirs).
func (s *Service) tell(ctx context.Context, userID string, joined []string) error {
	// Not the user themselves: the sync that set their presence would wake
	// itself.
	users, err := s.Rooms.LocalJoinedIn(ctx, joined, userID)
	if err != nil {
		return err
	}
	if len(users) == 0 {
		return nil
	}
	return s.Touch(ctx, userID, users)
}

// Status is a user's presence as the spec's GET and m.presence show it.
type Status struct {
	Presence        string  `json:"presence"`
	LastActiveAgo   *int64  `json:"last_active_ago,omitempty"`
	StatusMsg       *string `json:"status_msg,omitempty"`
	CurrentlyActive *bool   `json:"currently_active,omitempty"`
}

// activeFor is how long after their last activity a user counts as
// currently active, as Synapse does.
const activeFor = 5 * time.Minute

// Get reads userID's presence: offline when never set or turned off.
func (s *Service) Get(ctx context.Context, userID string) (Status, error) {
	if !s.Enabled {
		return Status{Presence: "offline"}, nil
	}
	var st state
	err := s.Store.Get(ctx, key(userID), &st)
	if errors.Is(err, store.ErrNotFound) {
		return Status{Presence: "offline"}, nil
	}
	if err != nil {
		return Status{}, err
	}
	return s.status(st), nil
}

func (s *Service) status(st state) Status {
	ago := s.now().UnixMilli() - st.LastActive
	active := st.Presence == "online" && time.Duration(ago)*time.Millisecond < activeFor
	if st.Remote {
		// Theirs to say, until their news is older than ours would be.
		active = st.Active && time.Duration(ago)*time.Millisecond < activeFor
	}
	out := Status{Presence: st.Presence, LastActiveAgo: &ago, CurrentlyActive: &active}
	if st.StatusMsg != "" {
		out.StatusMsg = &st.StatusMsg
	}
	return out
}

// Events is the m.presence events of those of users who ever set a
// presence, for /sync: one BatchGetItem per 100 users.
func (s *Service) Events(ctx context.Context, users []string) ([]json.RawMessage, error) {
	if !s.Enabled {
		return nil, nil
	}
	keys := make([]store.Key, 0, len(users))
	for _, u := range users {
		keys = append(keys, key(u))
	}
	var out []json.RawMessage
	err := s.Store.GetMany(ctx, keys, func(k store.Key, decode func(any) error) error {
		var st state
		if err := decode(&st); err != nil {
			return err
		}
		ev, err := json.Marshal(map[string]any{"type": "m.presence", "sender": strings.TrimPrefix(k.PK, "user|"), "content": s.status(st)})
		if err != nil {
			return err
		}
		out = append(out, ev)
		return nil
	})
	return out, err
}

// Register adds GET and PUT /presence/{userId}/status behind requireAuth.
func (s *Service) Register(rt *httpapi.Router, requireAuth func(http.HandlerFunc) http.HandlerFunc) {
	const path = "/_matrix/client/v3/presence/{userId}/status"
	rt.HandleFunc("GET "+path, requireAuth(func(w http.ResponseWriter, r *http.Request) {
		userID := r.PathValue("userId")
		if err := checkUserID(userID); err != nil {
			httpapi.WriteError(w, r, err)
			return
		}
		st, err := s.Get(r.Context(), userID)
		if err != nil {
			httpapi.WriteError(w, r, err)
			return
		}
		httpapi.WriteJSON(w, http.StatusOK, st)
	}))
	rt.HandleFunc("PUT "+path, requireAuth(func(w http.ResponseWriter, r *http.Request) {
		if err := s.put(r); err != nil {
			httpapi.WriteError(w, r, err)
			return
		}
		httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	}))
}

// maxUserIDBytes is the spec's limit on user IDs. The user ID of the path
// is part of the key read, so a longer one is refused before any read.
const maxUserIDBytes = 255

// checkUserID refuses a user ID of the path that cannot name a user: over
// the spec's 255 bytes, or not UTF-8 (400 M_INVALID_PARAM).
func checkUserID(userID string) error {
	if len(userID) > maxUserIDBytes {
		return httpapi.InvalidParam("user ID %q... is %d bytes, over the limit of %d bytes",
			strings.ToValidUTF8(userID[:32], ""), len(userID), maxUserIDBytes)
	}
	if !utf8.ValidString(userID) {
		return httpapi.InvalidParam("user ID %q is not valid UTF-8", userID)
	}
	return nil
}

func (s *Service) put(r *http.Request) error {
	me := accounts.Caller(r.Context()).UserID
	if err := checkUserID(r.PathValue("userId")); err != nil {
		return err
	}
	if r.PathValue("userId") != me {
		return httpapi.Forbidden("you can only set your own presence")
	}
	var body struct {
		Presence  string `json:"presence"`
		StatusMsg string `json:"status_msg"`
	}
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return err
	}
	if body.Presence == "" {
		return httpapi.MissingParam("presence is required")
	}
	if !Valid(body.Presence) {
		return httpapi.InvalidParam("presence must be online, offline or unavailable")
	}
	return s.Set(r.Context(), me, body.Presence, body.StatusMsg)
}
