package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cirrus-matrix/cirrus/shared/events"
)

// Other servers' users joining and leaving rooms this server holds
// (server-server API, "Joining Rooms", "Leaving Rooms"): the templates
// make_join and make_leave offer, and the signed events send_join and
// send_leave bring back, taken in through Receive.

// MembershipTemplate builds the event another server's user userID asks
// this server to make for them, setting their membership ("join" or
// "leave") in roomID: built on the room's forward extremities with auth
// events from its current state, and allowed by the auth rules as it
// stands. A join of a restricted room that the user may make names a local
// member who may invite in join_authorised_via_users_server. It returns
// the room version and the template. ErrUnknownRoom when this server has no
// joined member in the room; a *Refusal of kind ErrForbidden when the auth
// rules or the join rules refuse.
// Cost: one Query of the member events, one of the head, one BatchGetItem
// of the auth state; a restricted room adds reads of its join rules and of
// the user's membership in the rooms they allow.
func (s *Service) MembershipTemplate(ctx context.Context, roomID, userID, membership string) (string, json.RawMessage, error) {
	in, err := s.ServerMembership(ctx, roomID, s.Signer.ServerName)
	if err != nil {
		return "", nil, err
	}
	if in != "join" {
		return "", nil, fmt.Errorf("%w %s", ErrUnknownRoom, roomID)
	}
	content := map[string]any{"membership": membership}
	if membership == "leave" {
		// The auth rules allow a leave only from join, invite and knock;
		// the library also lets leave follow leave.
		m, err := s.memberIn(ctx, roomID, userID)
		if err != nil {
			return "", nil, err
		}
		if m != "join" && m != "invite" && m != "knock" {
			return "", nil, refuse(ErrForbidden, "%s is not in the room, invited or knocking: there is nothing to leave", userID)
		}
	}
	if membership == "join" {
		via, err := s.authorisedVia(ctx, roomID, userID)
		if err != nil {
			return "", nil, err
		}
		if via != "" {
			content["join_authorised_via_users_server"] = via
		}
	}
	raw, err := json.Marshal(content)
	if err != nil {
		return "", nil, err
	}
	p := events.Proto{RoomID: roomID, Sender: userID, Type: events.Member, StateKey: &userID, Content: raw}
	for attempt := 0; attempt < maxAttempts; attempt++ {
		v, tmpl, err := s.template(ctx, roomID, p)
		if errors.Is(err, errMoved) {
			if err := raceBackoff.Wait(ctx, attempt); err != nil {
				return "", nil, err
			}
			continue
		}
		return v, tmpl, err
	}
	return "", nil, fmt.Errorf("template for %s: gave up after %d attempts", roomID, maxAttempts)
}

// template builds p on the room's head; errMoved when the head moved while
// its state was read.
func (s *Service) template(ctx context.Context, roomID string, p events.Proto) (string, json.RawMessage, error) {
	h, err := s.readHead(ctx, roomID)
	if err != nil {
		return "", nil, err
	}
	tuples, err := events.AuthStateNeeded(h.Version, p)
	if err != nil {
		return "", nil, err
	}
	byKey, err := s.stateFor(ctx, roomID, h, tuples)
	if err != nil {
		return "", nil, err
	}
	st := make([]events.PDU, 0, len(byKey))
	for _, ev := range byKey {
		st = append(st, ev)
	}
	state, err := events.NewState(st)
	if err != nil {
		return "", nil, err
	}
	tmpl, ev, err := s.Signer.Template(h.Version, p, h.graph(), state, s.now())
	if err != nil {
		return "", nil, err
	}
	if err := events.Allowed(ev, state); err != nil {
		return "", nil, refuse(ErrForbidden, "the auth rules refuse this membership: %v", err)
	}
	return h.Version, tmpl, nil
}

// authorisedVia names the local member who authorises userID's join when
// the room is restricted and the user is neither joined nor invited:
// "" when the join rules need none. A user in none of the allowed rooms is
// refused (ErrForbidden); when this server is in none of them it cannot
// tell (ErrUnableToAuthorise).
// https://spec.matrix.org/v1.19/server-server-api/#restricted-rooms
func (s *Service) authorisedVia(ctx context.Context, roomID, userID string) (string, error) {
	rules, err := s.StateEvent(ctx, roomID, events.JoinRules, "")
	if errors.Is(err, ErrUnknownEvent) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var c struct {
		JoinRule string `json:"join_rule"`
		Allow    []struct {
			Type   string `json:"type"`
			RoomID string `json:"room_id"`
		} `json:"allow"`
	}
	if json.Unmarshal(rules.Content(), &c) != nil || (c.JoinRule != "restricted" && c.JoinRule != "knock_restricted") {
		return "", nil
	}
	if m, err := s.memberIn(ctx, roomID, userID); err != nil || m == "join" || m == "invite" {
		return "", err
	}
	resident := false
	for _, a := range c.Allow {
		if a.Type != "m.room_membership" || a.RoomID == "" {
			continue
		}
		in, err := s.ServerMembership(ctx, a.RoomID, s.Signer.ServerName)
		if err != nil {
			return "", err
		}
		if in != "join" {
			continue
		}
		resident = true
		if m, err := s.memberIn(ctx, a.RoomID, userID); err != nil {
			return "", err
		} else if m == "join" {
			return s.localInviter(ctx, roomID)
		}
	}
	if !resident {
		return "", refuse(ErrUnableToAuthorise, "this server is in none of the rooms the join rules allow: it cannot authorise the join")
	}
	return "", refuse(ErrForbidden, "this room is restricted: %s is in none of the rooms its join rules allow", userID)
}

// memberIn is userID's membership in the room's current state, "" when
// it has none.
func (s *Service) memberIn(ctx context.Context, roomID, userID string) (string, error) {
	ev, err := s.StateEvent(ctx, roomID, events.Member, userID)
	if errors.Is(err, ErrUnknownEvent) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	m, _ := ev.Membership()
	return m, nil
}

// Received is a membership event another server sent through send_join or
// send_leave, once taken into the room.
type Received struct {
	// Event is the event as this server stored it (with its signature
	// when it authorised a restricted join).
	Event events.PDU
	// State is the room state before the event and AuthChain that
	// state's auth chain; set for joins only.
	State, AuthChain []events.PDU
}

// ReceiveMembership takes in a join or leave that another server's user
// made from a template and signed, after the caller has checked its
// format, its sender's server and signatures: through Receive, so that it
// is stored once however often it is sent. A join of a restricted room
// authorised by a local member is countersigned by this server first. An
// event the auth rules or the current state refuse is a *Refusal of kind
// ErrForbidden, one built on events this server does not hold ErrInvalid.
// For a join it returns the state before the event and its auth chain, as
// send_join answers.
func (s *Service) ReceiveMembership(ctx context.Context, ev events.PDU) (Received, error) {
	roomID := events.RoomID(ev)
	m, _ := ev.Membership()
	if m == "join" {
		var c struct {
			Via string `json:"join_authorised_via_users_server"`
		}
		if json.Unmarshal(ev.Content(), &c) == nil && c.Via != "" && s.isLocal(c.Via) {
			ev = s.Signer.Countersign(ev)
		}
	}
	out, err := s.Receive(ctx, ev)
	var missing *MissingEventsError
	switch {
	case errors.As(err, &missing):
		return Received{}, refuse(ErrInvalid, "the event builds on events this server does not hold: %v %v", missing.IDs, missing.AuthIDs)
	case errors.Is(err, ErrBadEvent):
		return Received{}, refuse(ErrInvalid, "%v", err)
	case err != nil:
		return Received{}, err
	}
	if out.Status != Accepted {
		return Received{}, refuse(ErrForbidden, "the %s of %s is not allowed: %s", m, events.Sender(ev), out.Reason)
	}
	got, err := s.EventsByID(ctx, roomID, []string{ev.EventID()})
	if err != nil {
		return Received{}, err
	}
	stored, ok := got[ev.EventID()]
	if !ok {
		return Received{}, fmt.Errorf("receive membership: %w %s after it was accepted", ErrUnknownEvent, ev.EventID())
	}
	r := Received{Event: stored.PDU}
	if m != "join" {
		return r, nil
	}
	if r.State, err = s.StateBefore(ctx, roomID, stored); err != nil {
		return Received{}, err
	}
	if r.AuthChain, err = s.AuthChain(ctx, roomID, append(r.State, stored.PDU)); err != nil {
		return Received{}, err
	}
	return r, nil
}
