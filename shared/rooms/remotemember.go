package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Membership changes that need another server's part (server-server API,
// "Inviting to a room", "Leaving Rooms (Rejecting Invites)", "Knocking
// upon a room"): an invite of another server's user goes to that server to
// be countersigned before it enters the room; a local user invited to or
// knocking on a room this server does not hold leaves it, and knocks on
// it, through a server that holds it.

// RemoteMembers is the federation side of those changes
// (federation.Memberships).
type RemoteMembers interface {
	// Invite sends ev, this server's invite of another server's user, to
	// that user's server (PUT /invite v2) with state, the room's stripped
	// state as PDUs, and returns the event as that server signed it.
	Invite(ctx context.Context, ev events.PDU, state []events.PDU) (events.PDU, error)
	// Leave makes userID leave roomID through the first of servers that
	// lets it (make_leave, send_leave v2) and returns the leave sent.
	Leave(ctx context.Context, userID, roomID string, servers []string, reason string) (events.PDU, error)
	// Knock makes userID knock on roomID through the first of servers
	// that lets it (make_knock, send_knock) with content, and returns the
	// knock sent, the room's stripped state that server answered, and the
	// server.
	Knock(ctx context.Context, userID, roomID string, servers []string, content map[string]any) (events.PDU, []events.StrippedStateEvent, string, error)
	// Rejoin joins userID to roomID, which this server holds but left,
	// through the first of servers that lets it (make_join, send_join v2),
	// the join taken in with the state send_join answered
	// (ReceiveWithState): the events since this server left are missing
	// here.
	Rejoin(ctx context.Context, userID, roomID string, servers []string, reason string) error
}

// Outside reports whether this server is outside roomID: it holds nothing
// of it, or none of its users is joined to it, so that its state here may
// be stale and changes go through a resident server. Cost: one Query (room
// info) and, for a room held, one GetItem (its local users).
func (s *Service) Outside(ctx context.Context, roomID string) (bool, error) {
	out, _, err := s.outside(ctx, roomID)
	return out, err
}

// outside is Outside, and whether the room is held here.
func (s *Service) outside(ctx context.Context, roomID string) (out, held bool, err error) {
	_, err = s.Info(ctx, roomID)
	if errors.Is(err, ErrUnknownRoom) {
		return true, false, nil
	}
	if err != nil {
		return false, false, err
	}
	l, err := s.readLocals(ctx, roomID)
	if err != nil {
		return false, true, err
	}
	for _, m := range l.Users {
		if m == "join" {
			return false, true, nil
		}
	}
	return true, true, nil
}

// heldServers are the servers joined to roomID as this server last saw
// it, when it holds the room (one Query); none otherwise.
func (s *Service) heldServers(ctx context.Context, roomID string, held bool) []string {
	if !held {
		return nil
	}
	joined, _ := s.JoinedServers(ctx, roomID)
	return joined
}

// rejoinRemote joins a room this server left through the servers a join
// of an unknown room would ask, then those its stale state lists as
// joined.
func (s *Service) rejoinRemote(ctx context.Context, userID, roomID, reason string) error {
	via := append(s.joinCandidates(ctx, userID, roomID), s.heldServers(ctx, roomID, true)...)
	servers := s.candidates(via)
	if len(servers) == 0 {
		return refuse(ErrForbidden, "this server left room %s and knows no server in it to join through (via)", roomID)
	}
	return s.RemoteMembers.Rejoin(ctx, userID, roomID, servers, reason)
}

// strippedTuples are the state an invitee or knocker is shown of a room
// (client-server API, "Stripped state"), besides the inviter's member
// event.
var strippedTuples = []events.StateKeyTuple{
	{Type: events.Create}, {Type: events.JoinRules}, {Type: events.Name}, {Type: events.Avatar},
	{Type: events.CanonicalAlias}, {Type: events.Encryption}, {Type: events.Topic},
}

// StrippedStatePDUs is the room's current state an invitee or knocker on
// another server is shown (invite_room_state, knock_room_state), as PDUs,
// which the spec asks for since v1.16, the create event first; with the
// member event of sender when sender is not "". Cost: one BatchGetItem.
func (s *Service) StrippedStatePDUs(ctx context.Context, roomID, sender string) ([]events.PDU, error) {
	want := strippedTuples
	if sender != "" {
		want = append(want[:len(want):len(want)], events.StateKeyTuple{Type: events.Member, StateKey: sender})
	}
	got, err := s.stateFor(ctx, roomID, nil, want)
	if err != nil {
		return nil, err
	}
	return authOnly(got, want), nil
}

// inviteRemote invites c.target, a user of another server: the invite is
// built and checked as a local event would be, sent to the target's
// server, and the event it signed taken into the room through Receive,
// which tells the local members and the other servers. The target's
// server refusing is 403.
func (s *Service) inviteRemote(ctx context.Context, c change) (events.PDU, error) {
	if s.RemoteMembers == nil {
		return nil, refuse(ErrNeedsFederation, "%s is on another server, and this server does not federate", c.target)
	}
	content := s.memberContent(ctx, c.target, "invite", c.reason, c.direct)
	raw, err := json.Marshal(content)
	if err != nil {
		return nil, err
	}
	p := events.Proto{RoomID: c.roomID, Sender: c.sender, Type: events.Member, StateKey: &c.target, Content: raw}
	var ev events.PDU
	var stripped []events.PDU
	for attempt := 0; ; attempt++ {
		ev, stripped, err = s.buildInvite(ctx, c, p)
		if !errors.Is(err, errMoved) || attempt == maxAttempts {
			break
		}
		if err := raceBackoff.Wait(ctx, attempt); err != nil {
			return nil, err
		}
	}
	if err != nil {
		return nil, s.sendError(err)
	}
	signed, err := s.RemoteMembers.Invite(ctx, ev, stripped)
	if err != nil {
		return nil, err
	}
	if signed.EventID() != ev.EventID() {
		return nil, fmt.Errorf("invite of %s: the signed invite is %s, not %s", c.target, signed.EventID(), ev.EventID())
	}
	out, err := s.Receive(ctx, signed)
	if err != nil {
		return nil, s.sendError(err)
	}
	if out.Status != Accepted {
		return nil, refuse(ErrForbidden, "the invite of %s is not allowed: %s", c.target, out.Reason)
	}
	return signed, nil
}

// buildInvite builds p on the room's head, after c's check of the
// target's membership and the auth rules; errMoved when the head moved
// while the state was read. It returns the room's stripped state too.
func (s *Service) buildInvite(ctx context.Context, c change, p events.Proto) (events.PDU, []events.PDU, error) {
	h, err := s.readHead(ctx, c.roomID)
	if err != nil {
		return nil, nil, err
	}
	tuples, err := events.AuthStateNeeded(h.Version, p)
	if err != nil {
		return nil, nil, err
	}
	target := events.StateKeyTuple{Type: events.Member, StateKey: c.target}
	mine := events.StateKeyTuple{Type: events.Member, StateKey: c.sender}
	want := append(append(tuples[:len(tuples):len(tuples)], target, mine), strippedTuples...)
	state, err := s.stateFor(ctx, c.roomID, h, want)
	if err != nil {
		return nil, nil, err
	}
	now := ""
	if ev := state[target]; ev != nil {
		now, _ = ev.Membership()
	}
	if !wanted(c.want, now) {
		return nil, nil, refuse(ErrForbidden, "%s", c.refusal)
	}
	ev, err := s.buildLocal(h, p, state, tuples)
	if err != nil {
		return nil, nil, err
	}
	return ev, authOnly(state, append(strippedTuples[:len(strippedTuples):len(strippedTuples)], mine)), nil
}

func wanted(want []string, now string) bool {
	if want == nil {
		return true
	}
	for _, w := range want {
		if now == w {
			return true
		}
	}
	return false
}

// remoteMembership is the membership item of a local user in a room this
// server is outside of (remoteInvite), when it is one: invite or knock.
// Cost: one GetItem; for such an item, Outside's reads.
func (s *Service) remoteMembership(ctx context.Context, userID, roomID string) (*remoteInvite, error) {
	item, err := s.outsideItem(ctx, userID, roomID)
	if err != nil || item == nil || (item.Membership != "invite" && item.Membership != "knock") {
		return nil, err
	}
	out, held, err := s.outside(ctx, roomID)
	if err != nil || !out {
		return nil, err
	}
	item.held = held
	return item, nil
}

// outsideItem is userID's membership item in roomID when it holds the
// event of a membership made outside the room's graph here (remoteInvite:
// an invite, a knock, or their rejection or withdrawal), else nil.
// Cost: one GetItem.
func (s *Service) outsideItem(ctx context.Context, userID, roomID string) (*remoteInvite, error) {
	var item remoteInvite
	err := s.Store.Get(ctx, store.Key{PK: userPK(userID), SK: membershipPrefix + roomID}, &item)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("membership of %s in %s: %w", userID, roomID, err)
	}
	if item.PDU == "" {
		return nil, nil
	}
	return &item, nil
}

// leaveRemote rejects an invite to, or withdraws a knock on, a room this
// server does not hold, through the servers that may hold it: the server
// that answered the knock or sent the invite, those of the stripped
// state's senders, the room ID's. When none lets the leave through, the
// invite is rejected here alone (Synapse's "out-of-band" leave): the user
// is told of a leave that no other server sees, and the client's request
// succeeds, so that an unreachable server cannot keep an unwanted invite
// in a user's list.
func (s *Service) leaveRemote(ctx context.Context, userID, roomID, reason string, item *remoteInvite) error {
	prior, err := events.Parse(item.Version, item.EventID, []byte(item.PDU))
	if err != nil {
		return fmt.Errorf("leave %s: %w", roomID, err)
	}
	via := []string{item.Server, senderServer(prior)}
	via = append(via, s.heldServers(ctx, roomID, item.held)...) // who was in it
	if item.State != "" {
		var st []events.StrippedStateEvent
		if json.Unmarshal([]byte(item.State), &st) == nil {
			for _, e := range st {
				_, server, _ := strings.Cut(e.Sender, ":")
				via = append(via, server)
			}
		}
	}
	if _, server, ok := strings.Cut(roomID, ":"); ok {
		via = append(via, server)
	}
	leave, err := s.RemoteMembers.Leave(ctx, userID, roomID, s.candidates(via), reason)
	if err != nil {
		if leave, err = s.outOfBandLeave(ctx, userID, prior, reason); err != nil {
			return err
		}
	}
	return s.recordRemote(ctx, userID, leave, "leave", "", nil)
}

// candidates are servers once each, in order, never this one.
func (s *Service) candidates(via []string) []string {
	var out []string
	seen := map[string]bool{s.Signer.ServerName: true, "": true}
	for _, v := range via {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// outOfBandLeave is the leave of a rejected invite that no resident server
// took: signed by this server, built on the invite, never sent.
func (s *Service) outOfBandLeave(ctx context.Context, userID string, prior events.PDU, reason string) (events.PDU, error) {
	tmpl, err := json.Marshal(map[string]any{
		"room_id": events.RoomID(prior), "prev_events": []string{}, "auth_events": []string{}, "depth": prior.Depth() + 1,
	})
	if err != nil {
		return nil, err
	}
	content := map[string]any{}
	if reason != "" {
		content["reason"] = reason
	}
	return s.Signer.SignMemberTemplate(string(prior.Version()), events.RoomID(prior), userID, "leave", tmpl, content, s.now())
}

// recordRemote keeps ev as userID's membership of a room this server does
// not hold, with the stripped state and the server that answered (for a
// knock), and tells the user's /sync. Cost: one PutItem, one sync stream
// entry.
func (s *Service) recordRemote(ctx context.Context, userID string, ev events.PDU, membership, server string, state []events.StrippedStateEvent) error {
	roomID := events.RoomID(ev)
	item := remoteInvite{
		PK: userPK(userID), SK: membershipPrefix + roomID, Membership: membership, EventID: ev.EventID(),
		Seq: remoteInviteSeq, Version: string(ev.Version()), PDU: string(ev.JSON()), Server: server,
	}
	if state != nil {
		own, err := events.StrippedState(ev)
		if err != nil {
			return err
		}
		st, err := json.Marshal(append(state[:len(state):len(state)], own))
		if err != nil {
			return fmt.Errorf("%s of %s in %s: %w", membership, userID, roomID, err)
		}
		item.State = string(st)
	}
	if err := s.Store.Put(ctx, item); err != nil {
		return fmt.Errorf("%s of %s in %s: %w", membership, userID, roomID, err)
	}
	return s.notify(ctx, []Appended{{RoomID: roomID, Seq: remoteInviteSeq, Event: ev, To: []string{userID}}})
}

// knockRemote knocks on a room this server does not hold or left, through
// the servers the client named (via, server_name), the room ID's server and
// those in the room when this server left it (held):
// the knock and the room's stripped state the resident server answered
// become the user's membership, shown in /sync's rooms.knock.
func (s *Service) knockRemote(ctx context.Context, userID, roomID, reason string, held bool) error {
	via, _ := ctx.Value(viaKey{}).([]string)
	if _, server, ok := strings.Cut(roomID, ":"); ok {
		via = append(via[:len(via):len(via)], server)
	}
	via = append(via[:len(via):len(via)], s.heldServers(ctx, roomID, held)...) // who was in it
	servers := s.candidates(via)
	if len(servers) == 0 {
		return refuse(ErrNotFound, "room %s is not known to this server and no server to knock through was given (via)", roomID)
	}
	content := map[string]any{}
	if reason != "" {
		content["reason"] = reason
	}
	if s.Profile != nil {
		name, avatar := s.Profile(ctx, userID)
		if name != "" {
			content["displayname"] = name
		}
		if avatar != "" {
			content["avatar_url"] = avatar
		}
	}
	knock, state, server, err := s.RemoteMembers.Knock(ctx, userID, roomID, servers, content)
	if err != nil {
		return err
	}
	if state == nil {
		state = []events.StrippedStateEvent{}
	}
	return s.recordRemote(ctx, userID, knock, "knock", server, state)
}

// OutsideLeave is userID's leave of roomID when it was made outside the
// room's graph here (leaveRemote: a rejected invite or withdrawn knock of
// a room this server did not hold), as a client event, which /sync shows
// as the left room's timeline; nil for any other membership, whose room
// this server holds. Cost: one GetItem.
func (s *Service) OutsideLeave(ctx context.Context, userID, roomID string) (json.RawMessage, error) {
	item, err := s.outsideItem(ctx, userID, roomID)
	if err != nil || item == nil || item.Membership != "leave" {
		return nil, err
	}
	ev, err := events.Parse(item.Version, item.EventID, []byte(item.PDU))
	if err != nil {
		return nil, fmt.Errorf("leave of %s in %s: %w", userID, roomID, err)
	}
	return events.ClientEvent(ev, events.FormatClient, s.now())
}
