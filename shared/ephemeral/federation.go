package ephemeral

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

// EDU types of the server-server spec's "Typing Notifications" and
// "Receipts".
const (
	TypingEDU  = "m.typing"
	ReceiptEDU = "m.receipt"
)

// ErrRefused is an inbound EDU this server does not take: about a user of
// another server than the one that sent it, a room it does not hold, or a
// user not joined to the room. Such EDUs are dropped, never answered.
var ErrRefused = errors.New("EDU refused")

// typingContent is the content of an m.typing EDU.
type typingContent struct {
	RoomID string `json:"room_id"`
	UserID string `json:"user_id"`
	Typing *bool  `json:"typing"`
}

// federateTyping tells the other servers in the room that userID types.
func (s *Service) federateTyping(ctx context.Context, userID, roomID string, typing bool) error {
	if s.Federate == nil {
		return nil
	}
	content := mustJSON(typingContent{RoomID: roomID, UserID: userID, Typing: &typing})
	if err := s.Federate(ctx, roomID, TypingEDU, content); err != nil {
		return fmt.Errorf("send typing of %s in %s: %w", userID, roomID, err)
	}
	return nil
}

// receiptEDU is the content of an m.receipt EDU: room ID, receipt type,
// user ID, then the user's receipt.
type receiptEDU map[string]map[string]map[string]userReceipt

type userReceipt struct {
	EventIDs []string    `json:"event_ids"`
	Data     receiptData `json:"data"`
}

type receiptData struct {
	TS       int64  `json:"ts"`
	ThreadID string `json:"thread_id,omitempty"`
}

// federateReceipt tells the other servers in the room of userID's public
// read receipt, set at ts.
func (s *Service) federateReceipt(ctx context.Context, userID, roomID, eventID, thread string, ts int64) error {
	if s.Federate == nil {
		return nil
	}
	content := mustJSON(receiptEDU{roomID: {Read: {userID: {
		EventIDs: []string{eventID}, Data: receiptData{TS: ts, ThreadID: thread},
	}}}})
	if err := s.Federate(ctx, roomID, ReceiptEDU, content); err != nil {
		return fmt.Errorf("send receipt of %s in %s: %w", userID, roomID, err)
	}
	return nil
}

// ReceiveTyping takes an m.typing EDU from origin (federation.EDUHandler):
// the user must be of origin and joined to a room this server holds, whose
// server ACL lets origin in (ErrRefused otherwise). Typing lasts
// RemoteTypingTimeout unless renewed; local users see it as they see local
// typing.
//
// Cost: GetItem of the user's member event and of the room's ACL, then
// what SetTyping costs after its membership check.
func (s *Service) ReceiveTyping(ctx context.Context, origin string, raw json.RawMessage) error {
	var c typingContent
	if err := json.Unmarshal(raw, &c); err != nil {
		return fmt.Errorf("%w: m.typing from %s is malformed: %v", ErrRefused, origin, err)
	}
	if c.Typing == nil || !rooms.ValidRoomID(c.RoomID) || !rooms.ValidUserID(c.UserID) {
		return fmt.Errorf("%w: m.typing from %s lacks a room ID, user ID or typing", ErrRefused, origin)
	}
	if err := s.remoteJoined(ctx, origin, c.UserID, c.RoomID); err != nil {
		return err
	}
	return s.setTyping(ctx, c.UserID, c.RoomID, *c.Typing, RemoteTypingTimeout, false)
}

// ReceiveReceipts takes an m.receipt EDU from origin (federation.
// EDUHandler). Each receipt is taken or refused by itself: its user must
// be of origin and joined to a room this server holds, whose server ACL
// lets origin in. Only m.read receipts are taken (m.read.private never
// leaves its server). The event need not be held here yet: receipts are
// not ordered by it then. Local users see them as they see local
// receipts; nothing else changes (unread counts are of local users'
// receipts).
//
// Cost per receipt: GetItem of the user's member event, of the room's
// ACL, of the event's pointer and slot, of the current receipt, then one
// BatchWriteItem and the news of the room's local users.
func (s *Service) ReceiveReceipts(ctx context.Context, origin string, raw json.RawMessage) error {
	var c map[string]map[string]map[string]json.RawMessage
	if err := json.Unmarshal(raw, &c); err != nil {
		return fmt.Errorf("%w: m.receipt from %s is malformed: %v", ErrRefused, origin, err)
	}
	var errs []error
	for roomID, byType := range c {
		for typ, byUser := range byType {
			if typ != Read {
				continue // unknown receipt types are ignored
			}
			changed := false
			for userID, r := range byUser {
				ok, err := s.receiveReceipt(ctx, origin, roomID, userID, r)
				if err != nil {
					errs = append(errs, err)
				}
				changed = changed || ok
			}
			if changed {
				if err := s.tell(ctx, roomID, nil); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// receiveReceipt checks and sets one user's receipt of an m.receipt EDU; it
// reports whether it changed anything.
func (s *Service) receiveReceipt(ctx context.Context, origin, roomID, userID string, raw json.RawMessage) (bool, error) {
	var r userReceipt
	if err := json.Unmarshal(raw, &r); err != nil {
		return false, fmt.Errorf("%w: m.receipt from %s for %s is malformed: %v", ErrRefused, origin, userID, err)
	}
	if len(r.EventIDs) == 0 || !rooms.ValidEventID(r.EventIDs[0]) || !rooms.ValidRoomID(roomID) || !rooms.ValidUserID(userID) {
		return false, fmt.Errorf("%w: m.receipt from %s lacks a valid room, user or event ID", ErrRefused, origin)
	}
	thread := r.Data.ThreadID
	if thread != "" && thread != MainThread && !rooms.ValidEventID(thread) {
		return false, fmt.Errorf("%w: m.receipt from %s has an invalid thread ID", ErrRefused, origin)
	}
	if err := s.remoteJoined(ctx, origin, userID, roomID); err != nil {
		return false, err
	}
	// The last event ID, as Synapse takes it (the spec allows only one).
	eventID := r.EventIDs[len(r.EventIDs)-1]
	var seq int64
	ev, err := s.Rooms.Event(ctx, roomID, eventID)
	switch {
	case err == nil:
		seq = ev.Seq
	case !errors.Is(err, rooms.ErrUnknownEvent):
		return false, fmt.Errorf("read event %s: %w", eventID, err)
	}
	_, changed, err := s.setReceipt(ctx, userID, roomID, receipt{typ: Read, thread: thread, eventID: eventID, seq: seq, remoteTS: r.Data.TS})
	return changed, err
}

// remoteJoined checks that userID is a user of origin joined to the room,
// which this server holds, and that the room's server ACL lets origin in:
// one GetItem of the user's member event, one of the ACL.
func (s *Service) remoteJoined(ctx context.Context, origin, userID, roomID string) error {
	if _, server, _ := strings.Cut(userID, ":"); server != origin {
		return fmt.Errorf("%w: %s may not send EDUs about %s", ErrRefused, origin, userID)
	}
	if s.ACLAllows != nil {
		ok, err := s.ACLAllows(ctx, roomID, origin)
		if err != nil {
			return fmt.Errorf("server ACL of %s: %w", roomID, err)
		}
		if !ok {
			return fmt.Errorf("%w: the server ACL of %s denies %s", ErrRefused, roomID, origin)
		}
	}
	ev, err := s.Rooms.StateEvent(ctx, roomID, events.Member, userID)
	if errors.Is(err, rooms.ErrUnknownEvent) {
		return fmt.Errorf("%w: %s is not in room %s here", ErrRefused, userID, roomID)
	}
	if err != nil {
		return fmt.Errorf("membership of %s in %s: %w", userID, roomID, err)
	}
	if m, _ := ev.Membership(); m != "join" {
		return fmt.Errorf("%w: %s is not joined to %s", ErrRefused, userID, roomID)
	}
	return nil
}
