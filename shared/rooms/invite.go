package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Invites of local users to rooms this server is not in (server-server
// API, "Inviting to a room"): the invite event is all this server has of
// the room, with the stripped state the inviting server sent, until the
// user joins through a resident server or declines.

// remoteInvite is the membership item of a local user invited to a room
// this server does not hold: a membership item ("invite", the event ID)
// that also keeps the invite event and the room's stripped state, which
// /sync shows in place of the state this server does not have. A join of
// the room later replaces the whole item.
type remoteInvite struct {
	PK         string `dynamodbav:"pk"` // user|<user ID>
	SK         string `dynamodbav:"sk"` // room|<room ID>
	Membership string `dynamodbav:"m"`
	EventID    string `dynamodbav:"id"`
	Seq        int64  `dynamodbav:"seq"`
	Version    string `dynamodbav:"rv"`
	PDU        string `dynamodbav:"inv"`
	// State is the stripped state as JSON: an array of
	// events.StrippedStateEvent, the invite itself last.
	State string `dynamodbav:"ist"`
	// Server is the server that took a knock, which a withdrawal of it
	// asks first.
	Server string `dynamodbav:"srv,omitempty"`
	// held is set when read: the room is held here (left, not unknown).
	held bool
}

// remoteInviteSeq is the position a remote invite's membership item and
// sync entry carry: the room has no timeline here, and 0 is the sync
// stream's mark of ephemeral news.
const remoteInviteSeq = 1

// ReceiveInvite records ev, an invite of a local user to a room this
// server is not in, signed by the inviting server and this one, with the
// stripped state the inviting server sent: the user's membership of the
// room becomes "invite", and their /sync is told. A second receipt of an
// invite writes it again. Cost: one PutItem (1 WCU per KB of the invite
// and its state), one sync stream entry.
func (s *Service) ReceiveInvite(ctx context.Context, ev events.PDU, state []events.StrippedStateEvent) error {
	if ev.StateKey() == nil || !s.isLocal(*ev.StateKey()) {
		return refuse(ErrInvalid, "the invite is not of a user of this server")
	}
	target, roomID := *ev.StateKey(), events.RoomID(ev)
	own, err := events.StrippedState(ev)
	if err != nil {
		return err
	}
	st, err := json.Marshal(append(state[:len(state):len(state)], own))
	if err != nil {
		return fmt.Errorf("invite of %s to %s: %w", target, roomID, err)
	}
	item := remoteInvite{
		PK: userPK(target), SK: membershipPrefix + roomID, Membership: "invite", EventID: ev.EventID(),
		Seq: remoteInviteSeq, Version: string(ev.Version()), PDU: string(ev.JSON()), State: string(st),
	}
	if err := s.Store.Put(ctx, item); err != nil {
		return fmt.Errorf("invite of %s to %s: %w", target, roomID, err)
	}
	return s.notify(ctx, []Appended{{RoomID: roomID, Seq: remoteInviteSeq, Event: ev, To: []string{target}}})
}

// InviteState is the stripped state kept with a local user's invite to,
// or knock on, a room this server is not in, the invite or knock last; nil
// when the user has neither. Cost: one GetItem.
func (s *Service) InviteState(ctx context.Context, roomID, userID string) ([]events.StrippedStateEvent, error) {
	var item remoteInvite
	err := s.Store.Get(ctx, store.Key{PK: userPK(userID), SK: membershipPrefix + roomID}, &item)
	if errors.Is(err, store.ErrNotFound) || (err == nil && (item.Membership != "invite" && item.Membership != "knock" || item.State == "")) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("invite state of %s in %s: %w", userID, roomID, err)
	}
	var out []events.StrippedStateEvent
	if err := json.Unmarshal([]byte(item.State), &out); err != nil {
		return nil, fmt.Errorf("invite state of %s in %s: %w", userID, roomID, err)
	}
	return out, nil
}
