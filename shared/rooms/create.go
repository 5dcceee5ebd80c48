package rooms

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/events"
)

// CreateRequest is the body of POST /createRoom.
type CreateRequest struct {
	Visibility                string            `json:"visibility"`
	RoomAliasName             string            `json:"room_alias_name"`
	Name                      *string           `json:"name"`
	Topic                     *string           `json:"topic"`
	Invite                    []string          `json:"invite"`
	Invite3PID                []json.RawMessage `json:"invite_3pid"`
	RoomVersion               string            `json:"room_version"`
	CreationContent           jsonObject        `json:"creation_content"`
	InitialState              []InitialState    `json:"initial_state"`
	Preset                    string            `json:"preset"`
	IsDirect                  bool              `json:"is_direct"`
	PowerLevelContentOverride jsonObject        `json:"power_level_content_override"`
}

// jsonObject is a JSON object from a client that becomes event content:
// its numbers stay as the client wrote them (json.Number), so that the
// content check refuses 1e5 or 2.0 rather than signing 100000 or 2.
type jsonObject map[string]any

func (o *jsonObject) UnmarshalJSON(doc []byte) error {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return err
	}
	*o = m
	return nil
}

// InitialState is one state event of createRoom's initial_state.
type InitialState struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

func (req *CreateRequest) validate(server, defaultVersion string) error {
	switch req.Visibility {
	case "", "private", "public":
	default:
		return refuse(ErrInvalid, `visibility must be "public" or "private"`)
	}
	switch req.Preset {
	case "", "private_chat", "public_chat", "trusted_private_chat":
	default:
		return refuse(ErrInvalid, "unknown preset %q", req.Preset)
	}
	if req.RoomVersion == "" {
		req.RoomVersion = defaultVersion
	}
	if req.RoomVersion == "" {
		req.RoomVersion = events.DefaultVersion
	}
	if !events.Supported(req.RoomVersion) {
		return refuse(ErrUnsupportedVersion, "room version %q is not supported; supported: %s", req.RoomVersion, strings.Join(events.Versions(), ", "))
	}
	if req.RoomAliasName != "" {
		if err := ValidAlias("#" + req.RoomAliasName + ":" + server); err != nil || strings.Contains(req.RoomAliasName, ":") {
			return refuse(ErrInvalid, "room_alias_name must be a valid alias localpart without ':'")
		}
	}
	for _, u := range req.Invite {
		if !ValidUserID(u) {
			return refuse(ErrInvalid, "invite holds an invalid user ID: %s", u)
		}
	}
	if len(req.Invite3PID) > 0 {
		return refuse(ErrUnsupported, "invite_3pid is not supported by this server: there is no identity server")
	}
	for _, st := range req.InitialState {
		if st.Type == "" {
			return refuse(ErrMalformed, "initial_state entries need a type")
		}
		if st.Type == events.Create {
			return refuse(ErrMalformed, "m.room.create cannot be in initial_state; use creation_content")
		}
		// Type and state key become parts of the room's keys.
		if !ValidKeyPart(st.Type) || !ValidKeyPart(st.StateKey) || len(st.Type) > MaxKeyPart || len(st.StateKey) > MaxKeyPart {
			return refuse(ErrMalformed, "initial_state: type and state_key must be at most %d bytes, without NUL", MaxKeyPart)
		}
	}
	return nil
}

// CreateRoom makes a new room for creator as createRoom asks, and returns
// its ID. The initial events are appended together, so the room appears
// whole or not at all.
func (s *Service) CreateRoom(ctx context.Context, creator string, req CreateRequest) (string, error) {
	id, err := s.createRoom(ctx, creator, req)
	return id, s.sendError(err)
}

func (s *Service) createRoom(ctx context.Context, creator string, req CreateRequest) (string, error) {
	if err := req.validate(s.Signer.ServerName, s.DefaultRoomVersion); err != nil {
		return "", err
	}
	alias := ""
	if req.RoomAliasName != "" {
		alias = "#" + req.RoomAliasName + ":" + s.Signer.ServerName
	}
	protos, err := s.initialEvents(ctx, creator, &req, alias)
	if err != nil {
		return "", err
	}
	roomID, finish, err := s.createChain(ctx, req.RoomVersion, protos, alias, creator)
	if err != nil {
		return "", err
	}
	if err := finish(ctx); err != nil {
		return "", err
	}
	if req.Visibility == "public" {
		if err := s.SetPublished(ctx, roomID, true); err != nil {
			return "", err
		}
	}
	for _, u := range req.Invite {
		if err := s.Invite(ctx, creator, roomID, u, "", req.IsDirect); err != nil {
			return "", fmt.Errorf("invite %s: %w", u, err)
		}
	}
	return roomID, nil
}

// createChain builds the room's first events and stores them. A version 12
// room's ID is the hash of its create event, so two identical requests of
// one user in the same millisecond make the same room ID: the second loses
// the transaction and builds again a millisecond later. Transactions also
// fail when others touch the same items at the same moment; those are
// tried again too.
func (s *Service) createChain(ctx context.Context, version string, protos []events.Proto, alias, creator string) (string, func(context.Context) error, error) {
	for attempt := 0; ; attempt++ {
		roomID, evs, err := s.buildChain(version, protos, time.Duration(attempt)*time.Millisecond)
		if err != nil {
			return "", nil, err
		}
		if alias != "" {
			if err := s.createAlias(ctx, alias, roomID, creator); err != nil {
				return "", nil, err
			}
		}
		_, finish, err := s.commit(ctx, roomID, nil, evs, map[events.StateKeyTuple]events.PDU{}, nil, &locals{Users: map[string]string{}})
		if err == nil {
			return roomID, finish, nil
		}
		if alias != "" {
			_ = s.deleteAlias(ctx, alias)
		}
		if !errors.Is(err, errMoved) || attempt == 10 {
			return "", nil, err
		}
		if err := raceBackoff.Wait(ctx, attempt); err != nil {
			return "", nil, err
		}
	}
}

// buildChain builds and auth-checks the initial events one after another.
func (s *Service) buildChain(v string, protos []events.Proto, later time.Duration) (string, []events.PDU, error) {
	var (
		roomID string
		evs    []events.PDU
		prev   []string
	)
	state, err := events.NewState(nil)
	if err != nil {
		return "", nil, err
	}
	if !events.DomainlessRoomIDs(v) {
		roomID = "!" + randomString(18) + ":" + s.Signer.ServerName
	}
	now := s.now().Add(later)
	for i, p := range protos {
		p.RoomID = roomID
		var st *events.State
		if i > 0 {
			st = state
		}
		ev, err := s.Signer.Build(v, p, events.Graph{PrevEvents: prev, Depth: int64(i + 1)}, st, now)
		if err != nil {
			return "", nil, badState(p.Type, err)
		}
		if err := events.Allowed(ev, state); err != nil {
			return "", nil, invalidRoomState(err)
		}
		if i == 0 {
			roomID = events.RoomID(ev)
		}
		if err := state.Add(ev); err != nil {
			return "", nil, err
		}
		evs = append(evs, ev)
		prev = []string{ev.EventID()}
	}
	return roomID, evs, nil
}

// initialEvents lists the events createRoom sends, in the spec's order.
func (s *Service) initialEvents(ctx context.Context, creator string, req *CreateRequest, alias string) ([]events.Proto, error) {
	trusted := req.Preset == "trusted_private_chat"
	privileged := events.PrivilegedCreators(req.RoomVersion)
	create := map[string]any{}
	for k, v := range req.CreationContent {
		create[k] = v
	}
	create["room_version"] = req.RoomVersion
	// The spec has the server overwrite creator; from version 12 on the
	// sender is the creator and the key is gone.
	delete(create, "creator")
	if !privileged {
		create["creator"] = creator
	} else if trusted && len(req.Invite) > 0 {
		create["additional_creators"] = appendUnique(create["additional_creators"], req.Invite)
	}
	var out []events.Proto
	add := func(typ string, key *string, content any) error {
		raw, err := json.Marshal(content)
		if err != nil {
			return err
		}
		if err := events.ValidateContent(typ, key, raw); err != nil {
			return refuse(ErrMalformed, "%s", err.Error())
		}
		out = append(out, events.Proto{Sender: creator, Type: typ, StateKey: key, Content: raw})
		return nil
	}
	empty := ""
	if err := add(events.Create, &empty, create); err != nil {
		return nil, err
	}
	if err := add(events.Member, &creator, s.memberContent(ctx, creator, "join", "", false)); err != nil {
		return nil, err
	}
	if err := add(events.PowerLevels, &empty, powerLevels(creator, req, privileged, trusted)); err != nil {
		return nil, err
	}
	if alias != "" {
		if err := add(events.CanonicalAlias, &empty, map[string]any{"alias": alias}); err != nil {
			return nil, err
		}
	}
	preset := req.Preset
	if preset == "" {
		preset = "private_chat"
		if req.Visibility == "public" {
			preset = "public_chat"
		}
	}
	joinRule, guests := "invite", "can_join"
	if preset == "public_chat" {
		joinRule, guests = "public", "forbidden"
	}
	for _, e := range []struct {
		typ     string
		content map[string]any
	}{
		{events.JoinRules, map[string]any{"join_rule": joinRule}},
		{events.HistoryVisibility, map[string]any{"history_visibility": "shared"}},
		{events.GuestAccess, map[string]any{"guest_access": guests}},
	} {
		if err := add(e.typ, &empty, e.content); err != nil {
			return nil, err
		}
	}
	for _, st := range req.InitialState {
		key := st.StateKey
		out = append(out, events.Proto{Sender: creator, Type: st.Type, StateKey: &key, Content: st.Content})
		if err := events.ValidateContent(st.Type, &key, st.Content); err != nil {
			return nil, refuse(ErrMalformed, "initial_state %s: %v", st.Type, err)
		}
	}
	if req.Name != nil {
		if err := add(events.Name, &empty, map[string]any{"name": *req.Name}); err != nil {
			return nil, err
		}
	}
	if req.Topic != nil {
		// The spec sends createRoom's topic with a text/plain m.topic block
		// too, for clients that read the richer form.
		plain := []any{map[string]any{"body": *req.Topic, "mimetype": "text/plain"}}
		if err := add(events.Topic, &empty, map[string]any{"topic": *req.Topic, "m.topic": map[string]any{"m.text": plain}}); err != nil {
			return nil, err
		}
	}
	return dedupeState(out), nil
}

// dedupeState resolves state set twice, as Synapse does: initial_state
// replaces the preset's events, which are then left out, and its power
// levels take the place of the default ones, before anything that needs
// them. The creator's join stays as made. No state is written twice in the
// room's first transaction.
func dedupeState(in []events.Proto) []events.Proto {
	last := map[string]int{}
	for i, p := range in {
		last[p.Type+"\x00"+*p.StateKey] = i
	}
	var out []events.Proto
	for i, p := range in {
		k := p.Type + "\x00" + *p.StateKey
		switch {
		case i < 2:
		case k == in[1].Type+"\x00"+*in[1].StateKey:
			continue // the creator's own join is not replaced
		case p.Type == events.PowerLevels && *p.StateKey == "" && i == 2:
			p.Content = in[last[k]].Content
		case last[k] != i || (p.Type == events.PowerLevels && *p.StateKey == ""):
			continue
		}
		out = append(out, p)
	}
	return out
}

func appendUnique(existing any, add []string) []any {
	var out []any
	seen := map[string]bool{}
	if list, ok := existing.([]any); ok {
		for _, v := range list {
			if s, ok := v.(string); ok && !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	for _, s := range add {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// powerLevels is the default power levels of a new room, as Synapse makes
// them, with the request's override on top.
func powerLevels(creator string, req *CreateRequest, privileged, trusted bool) map[string]any {
	tombstone := 100
	if privileged {
		tombstone = 150 // the spec: above state_default's 100 for creators' successors
	}
	users := map[string]any{}
	if !privileged {
		users[creator] = 100
		if trusted {
			for _, u := range req.Invite {
				users[u] = 100
			}
		}
	}
	invite := 50
	if req.Preset != "public_chat" && !(req.Preset == "" && req.Visibility == "public") {
		invite = 0
	}
	pl := map[string]any{
		"users":          users,
		"users_default":  0,
		"events_default": 0,
		"state_default":  50,
		"ban":            50,
		"kick":           50,
		"redact":         50,
		"invite":         invite,
		"events": map[string]any{
			events.Name:              50,
			events.PowerLevels:       100,
			events.HistoryVisibility: 100,
			events.CanonicalAlias:    50,
			events.Avatar:            50,
			events.Tombstone:         tombstone,
			events.ServerACL:         100,
			events.Encryption:        100,
		},
		"notifications": map[string]any{"room": 50},
	}
	for k, v := range req.PowerLevelContentOverride {
		pl[k] = v
	}
	return pl
}

// memberContent is the content of a member event for a local user, with
// their profile when joining.
func (s *Service) memberContent(ctx context.Context, userID, m, reason string, direct bool) map[string]any {
	c := map[string]any{"membership": m}
	if m == "join" && s.Profile != nil {
		name, avatar := s.Profile(ctx, userID)
		if name != "" {
			c["displayname"] = name
		}
		if avatar != "" {
			c["avatar_url"] = avatar
		}
	}
	if reason != "" {
		c["reason"] = reason
	}
	if direct {
		c["is_direct"] = true
	}
	return c
}

func randomString(n int) string {
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return string(b)
}

// badState maps a build failure of an initial event to a refusal.
func badState(typ string, err error) error {
	var r *Refusal
	if errors.As(err, &r) {
		return err
	}
	return refuse(ErrMalformed, "cannot build %s event: %v", typ, err)
}

// invalidRoomState maps an auth rule refusal of an initial event to
// ErrInvalidState: the request, not the user, is at fault.
func invalidRoomState(err error) error {
	var na *events.NotAllowedError
	if errors.As(err, &na) {
		return refuse(ErrInvalidState, "the initial state is invalid: %s", na.Reason)
	}
	return err
}
