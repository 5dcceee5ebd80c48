package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// errUnchanged ends a membership change that is already in effect.
var errUnchanged = errors.New("membership unchanged")

// change is one membership change asked for by sender.
type change struct {
	sender, roomID, target string
	membership, reason     string
	direct                 bool
	// extra content, such as the authoriser of a restricted join.
	extra map[string]any
	// want refuses the change unless the target's current membership is
	// one of these ("" means none), with the message given.
	want    []string
	refusal string
}

func (s *Service) changeMembership(ctx context.Context, c change) (events.PDU, error) {
	if !ValidUserID(c.target) {
		return nil, refuse(ErrInvalid, "invalid user ID %q", c.target)
	}
	if !s.isLocal(c.target) && c.membership == "invite" {
		// Kicks, bans and unbans of another server's users are events
		// like any other; the sender takes them to the user's server.
		return s.inviteRemote(ctx, c)
	}
	content := s.memberContent(ctx, c.target, c.membership, c.reason, c.direct)
	for k, v := range c.extra {
		content[k] = v
	}
	if c.target != c.sender {
		delete(content, "displayname")
		delete(content, "avatar_url")
	}
	raw, err := json.Marshal(content)
	if err != nil {
		return nil, err
	}
	target := events.StateKeyTuple{Type: events.Member, StateKey: c.target}
	ev, err := s.send(ctx, c.roomID, sendRequest{
		proto: events.Proto{Sender: c.sender, Type: events.Member, StateKey: &c.target, Content: raw},
		also:  []events.StateKeyTuple{target},
		check: func(_ string, state map[events.StateKeyTuple]events.PDU) error {
			now := ""
			if ev := state[target]; ev != nil {
				now, _ = ev.Membership()
			}
			if now == c.membership && now == "join" && c.target == c.sender {
				return errUnchanged
			}
			if c.want == nil {
				return nil
			}
			for _, w := range c.want {
				if now == w {
					return nil
				}
			}
			return refuse(ErrForbidden, "%s", c.refusal)
		},
	})
	if errors.Is(err, errUnchanged) {
		return nil, nil
	}
	return ev, s.sendError(err)
}

// sendError maps what an append can fail with to the client's error.
func (s *Service) sendError(err error) error {
	var na *events.NotAllowedError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &na):
		return refuse(ErrForbidden, "%s", na.Reason)
	case errors.Is(err, ErrUnknownRoom):
		return refuse(ErrForbidden, "you are not in this room, or it does not exist on this server")
	case errors.Is(err, events.ErrTooLarge):
		return refuse(ErrTooLarge, "%s", err.Error())
	case errors.Is(err, store.ErrItemTooLarge):
		return refuse(ErrTooLarge, "event too large to store")
	}
	return err
}

// Join makes userID join roomID, by the room's join rules.
func (s *Service) Join(ctx context.Context, userID, roomID, reason string) error {
	extra, err := s.restrictedJoin(ctx, userID, roomID)
	if err != nil {
		return err
	}
	_, err = s.changeMembership(ctx, change{sender: userID, roomID: roomID, target: userID, membership: "join", reason: reason, extra: extra})
	if err != nil && s.RemoteJoin != nil {
		if _, ierr := s.Info(ctx, roomID); errors.Is(ierr, ErrUnknownRoom) {
			return s.joinRemote(ctx, userID, roomID, reason)
		}
		if errors.Is(err, ErrForbidden) && s.RemoteMembers != nil {
			// A room this server left: its state here is stale, the
			// resident servers decide.
			if out, oerr := s.Outside(ctx, roomID); oerr == nil && out {
				return s.rejoinRemote(ctx, userID, roomID, reason)
			}
		}
	}
	return s.notFoundIfUnknown(ctx, roomID, err)
}

// notFoundIfUnknown turns the refusal of a join or knock into the 404 the
// spec gives for a room that cannot be found, when this server holds
// nothing of the room.
func (s *Service) notFoundIfUnknown(ctx context.Context, roomID string, err error) error {
	if errors.Is(err, ErrForbidden) {
		if _, ierr := s.Info(ctx, roomID); errors.Is(ierr, ErrUnknownRoom) {
			return refuse(ErrNotFound, "room %s is not known to this server; rooms on other servers need federation, which this server does not support yet", roomID)
		}
	}
	return err
}

// Invite sends an invite of target from sender.
func (s *Service) Invite(ctx context.Context, sender, roomID, target, reason string, direct bool) error {
	_, err := s.changeMembership(ctx, change{
		sender: sender, roomID: roomID, target: target, membership: "invite", reason: reason, direct: direct,
		want: []string{"", "leave", "invite", "knock"}, refusal: target + " is already in the room or banned from it",
	})
	return err
}

// Leave makes userID leave roomID, or rejects an invite or knock; one of
// a room this server does not hold goes through a server that holds it
// (leaveRemote).
func (s *Service) Leave(ctx context.Context, userID, roomID, reason string) error {
	if s.RemoteMembers != nil {
		item, err := s.remoteMembership(ctx, userID, roomID)
		if err != nil {
			return err
		}
		if item != nil {
			return s.leaveRemote(ctx, userID, roomID, reason, item)
		}
	}
	_, err := s.changeMembership(ctx, change{
		sender: userID, roomID: roomID, target: userID, membership: "leave", reason: reason,
		want: []string{"join", "invite", "knock"}, refusal: "you are not in this room",
	})
	return err
}

// Kick removes target from the room.
func (s *Service) Kick(ctx context.Context, sender, roomID, target, reason string) error {
	_, err := s.changeMembership(ctx, change{
		sender: sender, roomID: roomID, target: target, membership: "leave", reason: reason,
		want: []string{"join", "invite", "knock"}, refusal: target + " is not in the room",
	})
	return err
}

// Ban bans target from the room.
func (s *Service) Ban(ctx context.Context, sender, roomID, target, reason string) error {
	_, err := s.changeMembership(ctx, change{sender: sender, roomID: roomID, target: target, membership: "ban", reason: reason})
	return err
}

// Unban lifts target's ban.
func (s *Service) Unban(ctx context.Context, sender, roomID, target, reason string) error {
	_, err := s.changeMembership(ctx, change{
		sender: sender, roomID: roomID, target: target, membership: "leave", reason: reason,
		want: []string{"ban"}, refusal: target + " is not banned",
	})
	return err
}

// Knock asks to join a room whose join rule is knock; a room this server
// does not hold is knocked on through another server (knockRemote).
func (s *Service) Knock(ctx context.Context, userID, roomID, reason string) error {
	if s.RemoteMembers != nil {
		if out, held, err := s.outside(ctx, roomID); err != nil {
			return err
		} else if out {
			return s.knockRemote(ctx, userID, roomID, reason, held)
		}
	}
	_, err := s.changeMembership(ctx, change{
		sender: userID, roomID: roomID, target: userID, membership: "knock", reason: reason,
		want: []string{"", "leave"}, refusal: "you are already in the room, invited or banned",
	})
	return s.notFoundIfUnknown(ctx, roomID, err)
}

// Forget hides a room the user has left from them.
func (s *Service) Forget(ctx context.Context, userID, roomID string) error {
	m, err := s.membership(ctx, userID, roomID)
	if err != nil {
		return err
	}
	switch m.Membership {
	case "join", "invite", "knock":
		return refuse(ErrNotLeft, "you are still in room %s (%s); leave it first", roomID, m.Membership)
	case "":
		return refuse(ErrNotFound, "you were never in room %s", roomID)
	}
	m.Forgotten = true
	if err := s.Store.Put(ctx, m); err != nil {
		return fmt.Errorf("forget %s: %w", roomID, err)
	}
	return nil
}

// restrictedJoin checks the allow conditions of a restricted room for a
// user who is not invited, and names a local member who may invite as the
// join's authoriser, as the auth rules of room versions 8 on require.
func (s *Service) restrictedJoin(ctx context.Context, userID, roomID string) (map[string]any, error) {
	rules, err := s.StateEvent(ctx, roomID, events.JoinRules, "")
	if err != nil {
		return nil, nil // no room or no rules: the auth rules decide
	}
	var c struct {
		JoinRule string `json:"join_rule"`
		Allow    []struct {
			Type   string `json:"type"`
			RoomID string `json:"room_id"`
		} `json:"allow"`
	}
	if json.Unmarshal(rules.Content(), &c) != nil || (c.JoinRule != "restricted" && c.JoinRule != "knock_restricted") {
		return nil, nil
	}
	if m, err := s.Membership(ctx, userID, roomID); err != nil || m == "join" || m == "invite" {
		return nil, err
	}
	allowed := false
	for _, a := range c.Allow {
		if a.Type != "m.room_membership" || a.RoomID == "" {
			continue
		}
		if m, err := s.Membership(ctx, userID, a.RoomID); err != nil {
			return nil, err
		} else if m == "join" {
			allowed = true
			break
		}
	}
	if !allowed {
		return nil, refuse(ErrForbidden, "this room is restricted: you must be invited or be in one of the rooms its join rules allow")
	}
	authoriser, err := s.localInviter(ctx, roomID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"join_authorised_via_users_server": authoriser}, nil
}

// localInviter finds a joined local member with the power to invite.
func (s *Service) localInviter(ctx context.Context, roomID string) (string, error) {
	members, err := s.Members(ctx, roomID)
	if err != nil {
		return "", err
	}
	for _, ev := range members {
		u := *ev.StateKey()
		if m, _ := ev.Membership(); m != "join" || !s.isLocal(u) {
			continue
		}
		p, err := s.powerOf(ctx, roomID, u)
		if err != nil {
			return "", err
		}
		if p.user >= p.levels.Invite {
			return u, nil
		}
	}
	return "", refuse(ErrForbidden, "no member of this server may authorise your join to this restricted room")
}
