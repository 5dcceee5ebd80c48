package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/events"
)

// Sent is an event a client sent.
type Sent struct {
	Sender, Device, TxnID string
}

// Send sends an event of type evType (a state event when stateKey is not
// nil) into roomID. The same sender, device and transaction ID give back the
// first event's ID without sending again.
func (s *Service) Send(ctx context.Context, who Sent, roomID, evType string, stateKey *string, content json.RawMessage) (string, error) {
	if stateKey != nil {
		who.TxnID = "" // state PUTs are idempotent by their content, not a txn ID
	}
	t := claimFor(who, roomID, false)
	if t != nil && relates(content) {
		// A message with a relation writes its relation item, keyed by the
		// position it is to take, beside its record (commitMessage): a
		// retry through a process whose cached head is behind would write
		// it over the relation of the event at that position, were the
		// record not read first, as every send did before.
		if id, err := s.awaitTxn(ctx, t); err != nil || id != "" {
			return id, err
		}
	}
	return s.once(ctx, t, func() (string, error) {
		return s.sendEvent(ctx, who, t, roomID, evType, stateKey, content)
	})
}

// relates reports whether content carries a relation (m.relates_to with a
// rel_type), which relationOf indexes.
func relates(content json.RawMessage) bool {
	var c struct {
		RelatesTo *struct {
			RelType string `json:"rel_type"`
		} `json:"m.relates_to"`
	}
	return json.Unmarshal(content, &c) == nil && c.RelatesTo != nil && c.RelatesTo.RelType != ""
}

// once runs send, the append of a request whose transaction is t (nil
// without a transaction ID). The record is not read first (txn.go): a
// retry this process served is answered from memory, and any other
// request goes on to append, where the record's create decides. A request
// that fails before it wrote or read the record (a refusal, a bad body, a
// read that failed) reads it then: a retry of a request that stored its
// event gets that event's ID, as the spec has transaction IDs, even if
// the sender could not send it now (they left the room since, say) or
// sent another body the second time.
func (s *Service) once(ctx context.Context, t *txnClaim, send func() (string, error)) (string, error) {
	if t == nil {
		return send()
	}
	if id := s.sent.get(t.key(), s.now().Unix()); id != "" {
		return id, nil
	}
	id, err := send()
	if err == nil || t.checked {
		return id, err
	}
	prev, rerr := s.awaitTxn(ctx, t)
	if rerr != nil || prev == "" {
		return "", err
	}
	return prev, nil
}

// sendEvent is Send once the transaction is known to be new, or not known.
func (s *Service) sendEvent(ctx context.Context, who Sent, t *txnClaim, roomID, evType string, stateKey *string, content json.RawMessage) (string, error) {
	if evType == events.Create {
		if hashRoomID(roomID) {
			// Synapse's answer (MSC4291): the create event is the room's ID,
			// so another one would name another room.
			return "", refuse(ErrInvalid, "cannot resend m.room.create event: it is sent only by createRoom")
		}
		return "", refuse(ErrForbidden, "m.room.create is sent only by createRoom")
	}
	if evType == events.Redaction && stateKey == nil {
		return s.sendRedaction(ctx, who, t, roomID, content)
	}
	if err := events.ValidateContent(evType, stateKey, content); err != nil {
		if evType == events.CanonicalAlias && errors.Is(err, events.ErrBadContent) {
			return "", refuse(ErrInvalid, "%s", err.Error()) // the spec's code for aliases of bad syntax
		}
		return "", contentError(err)
	}
	req := sendRequest{proto: events.Proto{Sender: who.Sender, Type: evType, StateKey: stateKey, Content: content}, txn: t}
	if stateKey != nil {
		cur := events.StateKeyTuple{Type: evType, StateKey: *stateKey}
		self := events.StateKeyTuple{Type: events.Member, StateKey: who.Sender}
		req.also = []events.StateKeyTuple{cur, self}
		req.check = func(version string, state map[events.StateKeyTuple]events.PDU) error {
			// Only a member gets the answer; others meet the auth rules.
			if joined(state[self]) && sameState(state[cur], who.Sender, content) {
				return &unchangedState{eventID: state[cur].EventID()}
			}
			if evType == events.CanonicalAlias && *stateKey == "" {
				return s.checkCanonicalAlias(ctx, roomID, content, state[cur])
			}
			if evType == events.PowerLevels && *stateKey == "" {
				return creatorsUnlisted(version, state[events.StateKeyTuple{Type: events.Create}], content)
			}
			return nil
		}
	}
	ev, err := s.send(ctx, roomID, req)
	if id, ok := answered(err); ok {
		return id, nil
	}
	if err != nil {
		return "", s.sendError(err)
	}
	return ev.EventID(), nil
}

func joined(member events.PDU) bool {
	if member == nil {
		return false
	}
	m, _ := member.Membership()
	return m == "join"
}

// answered returns the event a send ended on without appending one: the
// state it would repeat, or the event its transaction ID stored before.
func answered(err error) (string, bool) {
	var same *unchangedState
	if errors.As(err, &same) {
		return same.eventID, true
	}
	var sent *sentBefore
	if errors.As(err, &sent) {
		return sent.eventID, true
	}
	return "", false
}

// unchangedState ends a state PUT that would repeat the current state.
type unchangedState struct{ eventID string }

func (u *unchangedState) Error() string { return "state unchanged: " + u.eventID }

// sameState reports whether cur, the current state, was sent by sender
// with content: PUT /state cannot carry a transaction ID, so a retry sends
// the same content again, and gets the event already sent, as Synapse
// answers it (deduplicate_state_event).
func sameState(cur events.PDU, sender string, content json.RawMessage) bool {
	if cur == nil || events.Sender(cur) != sender {
		return false
	}
	var a, b any
	if json.Unmarshal(cur.Content(), &a) != nil || json.Unmarshal(content, &b) != nil {
		return false
	}
	return reflect.DeepEqual(a, b)
}

// Redact sends a redaction of eventID.
func (s *Service) Redact(ctx context.Context, who Sent, roomID, eventID, reason string) (string, error) {
	t := claimFor(who, roomID, true)
	return s.once(ctx, t, func() (string, error) {
		return s.redactEvent(ctx, who, t, roomID, eventID, reason)
	})
}

// redactEvent is Redact once the transaction is known to be new, or not
// known.
func (s *Service) redactEvent(ctx context.Context, who Sent, t *txnClaim, roomID, eventID, reason string) (string, error) {
	info, err := s.Info(ctx, roomID)
	if err != nil {
		return "", s.sendError(err)
	}
	content := map[string]any{}
	if reason != "" {
		content["reason"] = reason
	}
	// Room versions 11 on carry the target in the content; older ones at the
	// top level only. Both are set on 11 on, as Synapse does, for clients
	// that read either.
	if redactsInContent(info.Version) {
		content["redacts"] = eventID
	}
	return s.redact(ctx, who, t, roomID, eventID, content)
}

func redactsInContent(v string) bool { return v == "11" || v == "12" }

// sendRedaction serves an m.room.redaction sent through /send, which the
// spec requires for every room version: the target is content.redacts,
// moved to the top level before version 11.
func (s *Service) sendRedaction(ctx context.Context, who Sent, t *txnClaim, roomID string, raw json.RawMessage) (string, error) {
	var content map[string]any
	if err := json.Unmarshal(raw, &content); err != nil {
		return "", refuse(ErrMalformed, "m.room.redaction: %v", err)
	}
	target, _ := content["redacts"].(string)
	if !ValidEventID(target) {
		return "", refuse(ErrMalformed, "m.room.redaction needs the ID of the event to redact in content.redacts")
	}
	info, err := s.Info(ctx, roomID)
	if err != nil {
		return "", s.sendError(err)
	}
	if !redactsInContent(info.Version) {
		delete(content, "redacts")
	}
	return s.redact(ctx, who, t, roomID, target, content)
}

// redact sends the redaction of eventID with content, if the sender may
// redact it.
func (s *Service) redact(ctx context.Context, who Sent, t *txnClaim, roomID, eventID string, content map[string]any) (string, error) {
	raw, err := json.Marshal(content)
	if err != nil {
		return "", err
	}
	target, err := s.Event(ctx, roomID, eventID)
	if errors.Is(err, ErrUnknownEvent) {
		return "", refuse(ErrNotFound, "event %s is not in room %s", eventID, roomID)
	} else if err != nil {
		return "", err
	}
	if err := unredactable(target.PDU); err != nil {
		return "", err
	}
	ev, err := s.send(ctx, roomID, sendRequest{
		proto: events.Proto{Sender: who.Sender, Type: events.Redaction, Content: raw, Redacts: eventID},
		txn:   t,
		check: func(_ string, state map[events.StateKeyTuple]events.PDU) error {
			return mayRedact(state, who.Sender, target.PDU)
		},
	})
	if id, ok := answered(err); ok {
		return id, nil
	}
	if err != nil {
		return "", s.sendError(err)
	}
	return ev.EventID(), nil
}

// hashRoomID reports whether roomID is the hash of its create event, as
// room IDs are from version 12 on (MSC4291): no server name after it.
func hashRoomID(roomID string) bool { return !strings.Contains(roomID, ":") }

// creatorsUnlisted refuses power levels content that names a creator in
// users in a room whose creators have unlimited power (MSC4289, version 12
// on): the auth rules reject it, and Synapse refuses it with a 400 before
// they run, the request being wrong rather than the sender's power. create
// is the room's create event.
func creatorsUnlisted(version string, create events.PDU, content json.RawMessage) error {
	if create == nil || !events.PrivilegedCreators(version) {
		return nil
	}
	var pl struct {
		Users map[string]json.RawMessage `json:"users"`
	}
	if json.Unmarshal(content, &pl) != nil {
		return nil // the content check and the auth rules say why
	}
	for _, c := range events.Creators(create) {
		if _, ok := pl.Users[c]; ok {
			return refuse(ErrMalformed, "creator %s must not appear in content.users: the creators of a version %s room have unlimited power", c, version)
		}
	}
	return nil
}

// unredactable refuses, as Synapse does, redactions of the create event
// (before version 11 its redaction drops room_version, and clients would
// read the room as version 1) and of the server ACL (whose redaction
// lifts every ban of a server).
func unredactable(target events.PDU) error {
	switch target.Type() {
	case events.Create:
		return refuse(ErrForbidden, "the m.room.create event cannot be redacted")
	case events.ServerACL:
		return refuse(ErrForbidden, "m.room.server_acl events cannot be redacted")
	}
	return nil
}

// contentError maps a content check failure to a refusal.
func contentError(err error) error {
	if errors.Is(err, events.ErrTooLarge) {
		return refuse(ErrTooLarge, "%s", err.Error())
	}
	return refuse(ErrMalformed, "%s", err.Error())
}

// checkCanonicalAlias applies the spec's rule: every alias an
// m.room.canonical_alias event adds to the current one, old (nil if
// none), must point at this room. Aliases already listed are not checked
// again, so a stale one does not block other changes.
func (s *Service) checkCanonicalAlias(ctx context.Context, roomID string, content json.RawMessage, old events.PDU) error {
	all, err := canonicalAliases(content)
	if err != nil {
		return refuse(ErrMalformed, "m.room.canonical_alias: %v", err)
	}
	listed := map[string]bool{}
	if old != nil {
		prev, _ := canonicalAliases(old.Content())
		for _, a := range prev {
			listed[a] = true
		}
	}
	for _, a := range all {
		if listed[a] {
			continue
		}
		target, err := s.ResolveAlias(ctx, a)
		if err != nil && !errors.Is(err, ErrUnknownAlias) {
			return err
		}
		if target != roomID {
			return refuse(ErrBadAlias, "alias %s does not point to this room", a)
		}
	}
	return nil
}

// canonicalAliases lists the alias and alt_aliases of canonical alias
// content.
func canonicalAliases(content []byte) ([]string, error) {
	var c struct {
		Alias    string   `json:"alias"`
		AltAlias []string `json:"alt_aliases"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return nil, err
	}
	if c.Alias == "" {
		return c.AltAlias, nil
	}
	return append([]string{c.Alias}, c.AltAlias...), nil
}

// mayRedact applies the rule the auth rules leave to servers: the auth
// rules let anyone on the sender's server redact, but only the original
// sender or a user with the redact level may.
func mayRedact(state map[events.StateKeyTuple]events.PDU, sender string, target events.PDU) error {
	if events.Sender(target) == sender {
		return nil
	}
	p, err := powerIn(state, sender)
	if err != nil {
		return err
	}
	if p.user < p.levels.Redact {
		return refuse(ErrForbidden, "redacting other users' events needs power level %d; you have %d", p.levels.Redact, p.user)
	}
	return nil
}
