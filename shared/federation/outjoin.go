package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/fedclient"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Joiner joins local users to rooms this server does not hold, through a
// server in the room (server-server API, "Joining Rooms"): make_join,
// the template signed, send_join, the answer checked, the room taken in
// (rooms.Service.TakeJoined). It is rooms.Service.RemoteJoin.
type Joiner struct {
	Rooms  *rooms.Service
	Client *fedclient.Client
	// Verifier checks the signatures of the state and auth chain:
	// serverkeys.Keys.Ring().
	Verifier gomatrixserverlib.JSONVerifier
	Logger   *slog.Logger
	// Timeout bounds the whole join, every server tried; 0 is 25 s, under
	// API Gateway's 30.
	Timeout time.Duration
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// Resync loads the rest of the state of a room joined with partial
	// state (Resync.Start). When set, joins ask for partial state
	// (omit_members): a room of any size is then taken in within the
	// join's time, its members loaded in the background.
	Resync *Resync
	// StateWait bounds the wait, after a send_join answered with partial
	// state, for the whole state (GET /state at the join), which the room
	// is then taken in with as if send_join had given it: only a room too
	// large to fetch within it is taken in with partial state. 0 is 10 s;
	// negative takes every such room in with partial state at once.
	StateWait time.Duration
	// MaxWholeState is the largest state taken in whole that way; 0 is
	// maxWholeState.
	MaxWholeState int
}

// Join asks servers in turn until one lets userID join roomID. A server
// that refuses (make_join's 403, 404, an unsupported room version) or
// does not answer is passed over; when none lets the user in, the most
// telling refusal is the answer: 403 from any server, else 404, else the
// last failure (502 when no server answered).
func (j *Joiner) Join(ctx context.Context, userID, roomID string, servers []string, reason string) error {
	limit := j.Timeout
	if limit == 0 {
		limit = 25 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var refusal, last error
	for _, server := range servers {
		err := j.joinVia(ctx, userID, roomID, server, reason)
		if err == nil {
			return nil
		}
		j.log().Info("remote join failed", "room", roomID, "via", server, "err", err)
		last = err
		if errors.Is(err, rooms.ErrForbidden) || (refusal == nil && errors.Is(err, rooms.ErrNotFound)) {
			refusal = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	if refusal != nil {
		return refusal
	}
	var re *rooms.Refusal
	if errors.As(last, &re) {
		return last
	}
	return httpapi.Errorf(http.StatusBadGateway, "M_UNKNOWN", "no server let this server join %s: %v", roomID, last)
}

func (j *Joiner) log() *slog.Logger {
	if j.Logger != nil {
		return j.Logger
	}
	return slog.Default()
}

// joinVia joins through one server.
func (j *Joiner) joinVia(ctx context.Context, userID, roomID, server, reason string) error {
	q := url.Values{"ver": events.Versions()}
	path := "/_matrix/federation/v1/make_join/" + url.PathEscape(roomID) + "/" + url.PathEscape(userID) + "?" + q.Encode()
	var tmpl templateAnswer
	if err := j.Client.Get(ctx, server, path, &tmpl); err != nil {
		return remoteRefusal(server, "make_join", err)
	}
	v := tmpl.RoomVersion
	if v == "" {
		v = "1" // the spec: absent means version 1 or 2, whose events are alike
	}
	if !events.Supported(v) {
		return rooms.Refuse(rooms.ErrForbidden, "%s offers room version %q, which this server does not support", server, v)
	}
	now := time.Now
	if j.Now != nil {
		now = j.Now
	}
	ev, err := j.Rooms.Signer.SignJoinTemplate(v, roomID, userID, tmpl.Event, j.Rooms.JoinContent(ctx, userID, reason), now())
	if err != nil {
		return fmt.Errorf("%s's make_join template: %w", server, err)
	}
	if events.RoomID(ev) != roomID {
		return fmt.Errorf("%s's template is of room %s", server, events.RoomID(ev))
	}
	var answer events.SendJoinAnswer
	path = "/_matrix/federation/v2/send_join/" + url.PathEscape(roomID) + "/" + url.PathEscape(ev.EventID())
	if j.Resync != nil {
		path += "?omit_members=true"
	}
	t0, u0 := time.Now(), store.MeterFrom(ctx).Usage()
	if err := j.Client.Put(ctx, server, path, json.RawMessage(ev.JSON()), &answer); err != nil {
		return remoteRefusal(server, "send_join", err)
	}
	t1, u1 := time.Now(), store.MeterFrom(ctx).Usage()
	// The thousands of events of a large room's state are signed by a
	// handful of servers: each key is read from the table once, not once
	// per event (5,000 sequential reads would be 25 s of the join's 30).
	join, state, err := events.CheckSendJoin(ctx, v, &answer, ev, memoVerifier(j.Verifier))
	if err != nil {
		return fmt.Errorf("%s's send_join answer: %w", server, err)
	}
	var partial []string
	if answer.MembersOmitted && j.Resync != nil {
		servers := serversInRoom(server, answer.ServersInRoom, j.Rooms.Signer.ServerName)
		if full, err := j.wholeState(ctx, roomID, v, join.EventID(), server); err == nil {
			state = full
		} else {
			j.log().Info("remote join: partial state", "room", roomID, "via", server, "why", err)
			partial = servers
		}
	}
	t2, u2 := time.Now(), store.MeterFrom(ctx).Usage()
	err = j.Rooms.TakeJoined(ctx, join, state, partial)
	t3, u3 := time.Now(), store.MeterFrom(ctx).Usage()
	// The phases of a join, for the rooms whose joins take long.
	j.log().LogAttrs(ctx, slog.LevelInfo, "remote join phases", slog.String("room", roomID), slog.String("via", server),
		slog.Int("state", len(answer.State)), slog.Int("auth_chain", len(answer.AuthChain)),
		slog.Duration("send_join", t1.Sub(t0)), slog.Int64("send_join_calls", u1.Calls-u0.Calls),
		slog.Duration("check", t2.Sub(t1)), slog.Int64("check_calls", u2.Calls-u1.Calls),
		slog.Duration("take_in", t3.Sub(t2)), slog.Int64("take_in_calls", u3.Calls-u2.Calls),
		slog.Float64("take_in_wcu", u3.WriteUnits-u2.WriteUnits), slog.Bool("partial", partial != nil))
	if err == nil && partial != nil {
		return j.Resync.Start(ctx, roomID, v, join.EventID(), partial)
	}
	if errors.Is(err, store.ErrExists) {
		// Another local user took the room in meanwhile: the join goes
		// into the room as it stands.
		_, err = j.Rooms.Receive(ctx, join)
	}
	return err
}

// remoteRefusal turns a resident server's refusal into the room engine's
// (403 and 404 stay what they were, with the server's message); other
// failures pass as they are.
func remoteRefusal(server, what string, err error) error {
	e, ok := fedclient.AsError(err)
	if !ok {
		return fmt.Errorf("%s to %s: %w", what, server, err)
	}
	msg := strings.TrimSpace(server + " refused the join: " + e.Message)
	switch {
	case e.Status == http.StatusForbidden:
		return rooms.Refuse(rooms.ErrForbidden, "%s", msg)
	case e.Status == http.StatusNotFound && e.Code != "M_UNRECOGNIZED":
		return rooms.Refuse(rooms.ErrNotFound, "%s", msg)
	case e.Code == "M_INCOMPATIBLE_ROOM_VERSION":
		return rooms.Refuse(rooms.ErrForbidden, "%s", msg)
	}
	return fmt.Errorf("%s to %s: %w", what, server, err)
}

// LookupAlias resolves another server's room alias through that server
// (GET /_matrix/federation/v1/query/directory): the room ID and the
// servers it names. An alias it does not know is 404 M_NOT_FOUND; a
// server that does not answer, 502.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1querydirectory
func (j *Joiner) LookupAlias(ctx context.Context, alias string) (string, []string, error) {
	_, server, _ := strings.Cut(alias, ":")
	var answer struct {
		RoomID  string   `json:"room_id"`
		Servers []string `json:"servers"`
	}
	err := j.Client.Get(ctx, server, "/_matrix/federation/v1/query/directory?room_alias="+url.QueryEscape(alias), &answer)
	if e, ok := fedclient.AsError(err); ok && e.Status == http.StatusNotFound {
		return "", nil, httpapi.NotFound("room alias %s not found", alias)
	}
	if err != nil {
		return "", nil, httpapi.Errorf(http.StatusBadGateway, "M_UNKNOWN", "%s did not resolve %s: %v", server, alias, err)
	}
	if !rooms.ValidRoomID(answer.RoomID) {
		return "", nil, httpapi.Errorf(http.StatusBadGateway, "M_UNKNOWN", "%s resolved %s to an invalid room ID", server, alias)
	}
	return answer.RoomID, answer.Servers, nil
}

// wholeState fetches the state before the join joinID from server, which
// answered the join with partial state, within StateWait.
func (j *Joiner) wholeState(ctx context.Context, roomID, v, joinID, server string) ([]events.PDU, error) {
	wait := j.StateWait
	switch {
	case wait < 0:
		return nil, errors.New("taken in with partial state at once (StateWait)")
	case wait == 0:
		wait = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	limit := j.MaxWholeState
	if limit == 0 {
		limit = maxWholeState
	}
	return j.Resync.fetch(ctx, resyncJob{Room: roomID, Version: v, Join: joinID}, server, limit)
}

// maxWholeState is the largest state a join takes in whole after a
// send_join with partial state: about 6 s of writes on AWS (5,000 members
// take 2 to 3 s), so that the join, having waited for the state, still
// ends well within API Gateway's 30 s.
const maxWholeState = 10_000

// serversInRoom are the servers to send a room joined with partial state
// to, and to ask for its state: via, the server that answered the join,
// first, then the others send_join named, once each, never this server.
func serversInRoom(via string, named []string, self string) []string {
	out := []string{via}
	for _, srv := range named {
		if srv != "" && srv != self && !slices.Contains(out, srv) {
			out = append(out, srv)
		}
	}
	return out
}
