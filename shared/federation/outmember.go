package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/fedclient"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

// Memberships sends the membership changes of this server's users that
// need another server's part: invites of other servers' users (PUT
// /invite v2), leaves of rooms this server does not hold (make_leave,
// send_leave v2: rejecting an invite, withdrawing a knock) and knocks on
// them (make_knock, send_knock). It is rooms.Service.RemoteMembers.
type Memberships struct {
	Rooms  *rooms.Service
	Client *fedclient.Client
	// Verifier checks the invited server's signature:
	// serverkeys.Keys.Ring().
	Verifier gomatrixserverlib.JSONVerifier
	Logger   *slog.Logger
	// Timeout bounds each change, every server tried; 0 is 25 s, under
	// API Gateway's 30.
	Timeout time.Duration
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

var _ rooms.RemoteMembers = (*Memberships)(nil)

func (m *Memberships) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	limit := m.Timeout
	if limit == 0 {
		limit = 25 * time.Second
	}
	return context.WithTimeout(ctx, limit)
}

func (m *Memberships) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

func (m *Memberships) log() *slog.Logger {
	if m.Logger != nil {
		return m.Logger
	}
	return slog.Default()
}

// inviteAnswer is the answer to PUT /invite v2.
type inviteAnswer struct {
	Event json.RawMessage `json:"event"`
}

// Invite sends ev, an invite of another server's user, to that server with
// the room's stripped state as PDUs (the spec's format since v1.16, which
// servers before it read as stripped state too), and checks what comes
// back: the same event, signed by the invitee's server. A refusal (4xx)
// reaches the client as the invitee's server gave it; no answer is 502.
// https://spec.matrix.org/v1.19/server-server-api/#put_matrixfederationv2inviteroomideventid
func (m *Memberships) Invite(ctx context.Context, ev events.PDU, state []events.PDU) (events.PDU, error) {
	ctx, cancel := m.bound(ctx)
	defer cancel()
	target := *ev.StateKey()
	server := userServer(target)
	body := map[string]any{"room_version": string(ev.Version()), "event": json.RawMessage(ev.JSON()), "invite_room_state": rawPDUs(state)}
	path := "/_matrix/federation/v2/invite/" + url.PathEscape(events.RoomID(ev)) + "/" + url.PathEscape(ev.EventID())
	var answer inviteAnswer
	if err := m.Client.Put(ctx, server, path, body, &answer); err != nil {
		return nil, passRefusal(server, "invite "+target, err)
	}
	signed, err := events.ParseUntrusted(string(ev.Version()), answer.Event)
	if err != nil {
		return nil, httpapi.Errorf(http.StatusBadGateway, "M_UNKNOWN", "%s answered the invite with an invalid event: %s", server, trimLib(err))
	}
	if signed.EventID() != ev.EventID() {
		return nil, httpapi.Errorf(http.StatusBadGateway, "M_UNKNOWN", "%s answered the invite with another event, %s", server, signed.EventID())
	}
	if err := events.VerifyOrigin(ctx, m.Verifier, server, signed); err != nil {
		return nil, httpapi.Errorf(http.StatusBadGateway, "M_UNKNOWN", "%s did not sign the invite: %v", server, err)
	}
	return signed, nil
}

// passRefusal gives the client a remote server's 4xx as it came (Synapse
// passes such errors through), anything else as 502.
func passRefusal(server, what string, err error) error {
	if e, ok := fedclient.AsError(err); ok && e.Status/100 == 4 && e.Code != "" {
		return httpapi.Errorf(e.Status, e.Code, "%s refused to %s: %s", server, what, e.Message)
	}
	return httpapi.Errorf(http.StatusBadGateway, "M_UNKNOWN", "%s did not take the request to %s: %v", server, what, err)
}

// templateAnswer is make_join's, make_leave's and make_knock's answer.
type templateAnswer struct {
	RoomVersion string          `json:"room_version"`
	Event       json.RawMessage `json:"event"`
}

// Leave makes userID leave roomID through the first of servers that lets
// it: make_leave, the template signed, send_leave v2. It returns the leave
// sent; when no server took it, the most telling refusal (403, then 404,
// then the last failure).
// https://spec.matrix.org/v1.19/server-server-api/#leaving-rooms-rejecting-invites
func (m *Memberships) Leave(ctx context.Context, userID, roomID string, servers []string, reason string) (events.PDU, error) {
	ctx, cancel := m.bound(ctx)
	defer cancel()
	content := map[string]any{}
	if reason != "" {
		content["reason"] = reason
	}
	var out events.PDU
	err := m.each(ctx, servers, "leave "+roomID, func(server string) error {
		ev, err := m.makeAndSign(ctx, server, "leave", userID, roomID, content, nil)
		if err != nil {
			return err
		}
		path := "/_matrix/federation/v2/send_leave/" + url.PathEscape(roomID) + "/" + url.PathEscape(ev.EventID())
		if err := m.Client.Put(ctx, server, path, json.RawMessage(ev.JSON()), nil); err != nil {
			return memberRefusal(server, "send_leave", err)
		}
		out = ev
		return nil
	})
	return out, err
}

// Rejoin joins userID to roomID, which this server holds but left, through
// the first of servers that lets it: make_join, the template signed,
// v2/send_join, the answer checked (events.CheckSendJoin), and the join
// taken in with the state before it that the answer gave
// (rooms.Service.ReceiveWithState), since the events since this server
// left are not held here.
func (m *Memberships) Rejoin(ctx context.Context, userID, roomID string, servers []string, reason string) error {
	ctx, cancel := m.bound(ctx)
	defer cancel()
	content := m.Rooms.JoinContent(ctx, userID, reason)
	return m.each(ctx, servers, "join "+roomID, func(server string) error {
		ev, err := m.makeAndSign(ctx, server, "join", userID, roomID, content, events.Versions())
		if err != nil {
			return err
		}
		var answer events.SendJoinAnswer
		path := "/_matrix/federation/v2/send_join/" + url.PathEscape(roomID) + "/" + url.PathEscape(ev.EventID())
		if err := m.Client.Put(ctx, server, path, json.RawMessage(ev.JSON()), &answer); err != nil {
			return memberRefusal(server, "send_join", err)
		}
		v := string(ev.Version())
		join, state, err := events.CheckSendJoin(ctx, v, &answer, ev, m.Verifier)
		if err != nil {
			return fmt.Errorf("%s's send_join answer: %w", server, err)
		}
		chain := make([]events.PDU, 0, len(answer.AuthChain))
		for _, raw := range answer.AuthChain {
			if pdu, err := events.ParseUntrusted(v, raw); err == nil {
				chain = append(chain, pdu)
			}
		}
		if err := m.catchUp(ctx, userID, state, chain); err != nil {
			return err
		}
		out, err := m.Rooms.ReceiveWithState(ctx, join, state, chain)
		if err != nil {
			return err
		}
		if out.Status != rooms.Accepted {
			return rooms.Refuse(rooms.ErrForbidden, "the join %s let through is not allowed here: %s", server, out.Reason)
		}
		return nil
	})
}

// catchUp takes in, before the join, the events of state this server
// does not hold that decide whether userID may join: their member event
// (the invite the join answers, most often), the join rules and the power
// levels. The join is checked against this server's current state, which,
// stale since it left, would still show the old ones. Each goes in by
// depth with the state given less the ones not yet in (which would
// otherwise be stored as outliers, and then taken for placed), and with
// the auth chain less all of them.
func (m *Memberships) catchUp(ctx context.Context, userID string, state, chain []events.PDU) error {
	decisive := func(ev events.PDU) bool {
		k := ev.StateKey()
		return k != nil && ((ev.Type() == events.Member && *k == userID) ||
			(*k == "" && (ev.Type() == events.JoinRules || ev.Type() == events.PowerLevels)))
	}
	var ids []string
	for _, ev := range state {
		if decisive(ev) {
			ids = append(ids, ev.EventID())
		}
	}
	if len(ids) == 0 {
		return nil
	}
	roomID := events.RoomID(state[0])
	held, err := m.Rooms.EventsByID(ctx, roomID, ids)
	if err != nil {
		return err
	}
	pending := map[string]bool{}
	var todo []events.PDU
	for _, ev := range state {
		if _, ok := held[ev.EventID()]; decisive(ev) && !ok {
			pending[ev.EventID()] = true
			todo = append(todo, ev)
		}
	}
	sort.SliceStable(todo, func(i, j int) bool { return todo[i].Depth() < todo[j].Depth() })
	others := make([]events.PDU, 0, len(chain))
	for _, ev := range chain {
		if !pending[ev.EventID()] {
			others = append(others, ev)
		}
	}
	for _, ev := range todo {
		before := make([]events.PDU, 0, len(state))
		for _, x := range state {
			if !pending[x.EventID()] {
				before = append(before, x)
			}
		}
		out, err := m.Rooms.ReceiveWithState(ctx, ev, before, others)
		if err != nil {
			return err
		}
		delete(pending, ev.EventID())
		if out.Status != rooms.Accepted {
			m.log().Info("rejoin: an event of the room's state kept out", "room", roomID, "event", ev.EventID(), "status", out.Status, "reason", out.Reason)
		}
	}
	return nil
}

// knockAnswer is send_knock's answer.
type knockAnswer struct {
	State []json.RawMessage `json:"knock_room_state"`
}

// Knock makes userID knock on roomID through the first of servers that
// lets it: make_knock (with the room versions that allow knocks), the
// template signed with content, send_knock. It returns the knock, the
// stripped state the server answered, and the server.
// https://spec.matrix.org/v1.19/server-server-api/#knocking-upon-a-room
func (m *Memberships) Knock(ctx context.Context, userID, roomID string, servers []string, content map[string]any) (events.PDU, []events.StrippedStateEvent, string, error) {
	ctx, cancel := m.bound(ctx)
	defer cancel()
	var knocking []string
	for _, v := range events.Versions() {
		if events.Knocking(v) {
			knocking = append(knocking, v)
		}
	}
	var out events.PDU
	var state []events.StrippedStateEvent
	var via string
	err := m.each(ctx, servers, "knock on "+roomID, func(server string) error {
		ev, err := m.makeAndSign(ctx, server, "knock", userID, roomID, content, knocking)
		if err != nil {
			return err
		}
		path := "/_matrix/federation/v1/send_knock/" + url.PathEscape(roomID) + "/" + url.PathEscape(ev.EventID())
		var answer knockAnswer
		if err := m.Client.Put(ctx, server, path, json.RawMessage(ev.JSON()), &answer); err != nil {
			return memberRefusal(server, "send_knock", err)
		}
		out, state, via = ev, strippedOf(answer.State), server
		return nil
	})
	return out, state, via, err
}

// strippedOf reads knock_room_state: PDUs, or stripped state from servers
// before v1.16, kept as stripped state (origin_server_ts for the create
// event only); entries that are not state are skipped.
func strippedOf(raw []json.RawMessage) []events.StrippedStateEvent {
	out := make([]events.StrippedStateEvent, 0, len(raw))
	for _, r := range raw {
		var st events.StrippedStateEvent
		if json.Unmarshal(r, &st) != nil || st.Type == "" {
			continue
		}
		if st.Type != events.Create {
			st.OriginServerTS = 0
		}
		out = append(out, st)
	}
	return out
}

// makeAndSign asks server for a template of membership (make_leave,
// make_knock with vers) and signs it.
func (m *Memberships) makeAndSign(ctx context.Context, server, membership, userID, roomID string, content map[string]any, vers []string) (events.PDU, error) {
	path := "/_matrix/federation/v1/make_" + membership + "/" + url.PathEscape(roomID) + "/" + url.PathEscape(userID)
	if len(vers) > 0 {
		path += "?" + url.Values{"ver": vers}.Encode()
	}
	var tmpl templateAnswer
	if err := m.Client.Get(ctx, server, path, &tmpl); err != nil {
		return nil, memberRefusal(server, "make_"+membership, err)
	}
	v := tmpl.RoomVersion
	if v == "" {
		v = "1" // absent means version 1 or 2, whose events are alike
	}
	if !events.Supported(v) || (membership == "knock" && !events.Knocking(v)) {
		e := httpapi.Errorf(http.StatusBadRequest, "M_INCOMPATIBLE_ROOM_VERSION", "%s offers room version %q, which this server cannot %s in", server, v, membership)
		e.Extra = map[string]any{"room_version": v}
		return nil, e
	}
	if err := checkTemplate(tmpl.Event, roomID, userID, membership); err != nil {
		return nil, fmt.Errorf("%s's make_%s template: %w", server, membership, err)
	}
	ev, err := m.Rooms.Signer.SignMemberTemplate(v, roomID, userID, membership, tmpl.Event, content, m.now())
	if err != nil {
		return nil, fmt.Errorf("%s's make_%s template: %w", server, membership, err)
	}
	return ev, nil
}

// checkTemplate makes the checks the spec asks of a template before it is
// signed: its room, sender, state key, type and membership are those
// asked for.
func checkTemplate(raw json.RawMessage, roomID, userID, membership string) error {
	var t struct {
		RoomID   string `json:"room_id"`
		Sender   string `json:"sender"`
		StateKey string `json:"state_key"`
		Type     string `json:"type"`
		Content  struct {
			Membership string `json:"membership"`
		} `json:"content"`
	}
	if err := json.Unmarshal(raw, &t); err != nil {
		return err
	}
	if t.RoomID != roomID || t.Sender != userID || t.StateKey != userID || t.Type != events.Member || t.Content.Membership != membership {
		return fmt.Errorf("not a %s of %s in %s", membership, userID, roomID)
	}
	return nil
}

// each tries servers in turn until try succeeds: a refusal (403, 404, an
// unsupported room version) or no answer passes to the next; when none
// succeeds the answer is a 403 from any server, else a 404, else the last
// failure (502 when no server answered).
func (m *Memberships) each(ctx context.Context, servers []string, what string, try func(server string) error) error {
	var refusal, last error
	for _, server := range servers {
		err := try(server)
		if err == nil {
			return nil
		}
		m.log().Info("remote membership change failed", "what", what, "via", server, "err", err)
		last = err
		if errors.Is(err, rooms.ErrForbidden) || (refusal == nil && errors.Is(err, rooms.ErrNotFound)) {
			refusal = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	switch {
	case refusal != nil:
		return refusal
	case last == nil:
		return rooms.Refuse(rooms.ErrNotFound, "no server to %s through", what)
	}
	var re *rooms.Refusal
	var he *httpapi.Error
	if errors.As(last, &re) || errors.As(last, &he) {
		return last
	}
	return httpapi.Errorf(http.StatusBadGateway, "M_UNKNOWN", "no server let this server %s: %v", what, last)
}

// memberRefusal turns a resident server's refusal into the room engine's
// (403 and 404 keep the server's message; M_INCOMPATIBLE_ROOM_VERSION
// stays itself); other failures pass as they are.
func memberRefusal(server, what string, err error) error {
	e, ok := fedclient.AsError(err)
	if !ok {
		return fmt.Errorf("%s to %s: %w", what, server, err)
	}
	msg := server + " refused " + what + ": " + e.Message
	switch {
	case e.Status == http.StatusForbidden:
		return rooms.Refuse(rooms.ErrForbidden, "%s", msg)
	case e.Status == http.StatusNotFound && e.Code != "M_UNRECOGNIZED":
		return rooms.Refuse(rooms.ErrNotFound, "%s", msg)
	case e.Code == "M_INCOMPATIBLE_ROOM_VERSION":
		he := httpapi.Errorf(http.StatusBadRequest, e.Code, "%s", msg)
		return he
	}
	return fmt.Errorf("%s to %s: %w", what, server, err)
}
