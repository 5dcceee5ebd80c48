package events

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
)

// Format is the event_format of a filter: how events are shown to clients.
type Format string

// The formats of the spec's Filter.event_format.
const (
	// FormatClient is the ClientEvent schema, the default.
	FormatClient Format = "client"
	// FormatFederation is the event as servers exchange it.
	FormatFederation Format = "federation"
)

// Option changes how ClientEvent serializes one event.
type Option func(*formatOptions)

type formatOptions struct {
	withoutRoomID   bool
	transactionID   string
	membership      string
	prevContent     json.RawMessage
	redactedBecause json.RawMessage
	relations       json.RawMessage
}

// WithoutRoomID leaves room_id out, for /sync, where the room is the key
// the event sits under (ClientEventWithoutRoomID).
func WithoutRoomID() Option {
	return func(o *formatOptions) { o.withoutRoomID = true }
}

// WithTransactionID sets unsigned.transaction_id. Pass it only when the
// device asking is the one that sent the event: the spec shows the ID to
// the sender alone, so a transaction_id stored in the PDU is never shown.
func WithTransactionID(txnID string) Option {
	return func(o *formatOptions) { o.transactionID = txnID }
}

// WithMembership sets unsigned.membership, the membership of the user
// asking at the time of the event. Like transaction_id it depends on who
// asks, so a stored one is never shown.
func WithMembership(membership string) Option {
	return func(o *formatOptions) { o.membership = membership }
}

// WithPrevContent sets unsigned.prev_content, the content of the state
// event this one replaced, when the client may see it.
func WithPrevContent(content json.RawMessage) Option {
	return func(o *formatOptions) { o.prevContent = content }
}

// WithRedactedBecause sets unsigned.redacted_because, the redaction event
// already serialized by ClientEvent.
func WithRedactedBecause(redaction json.RawMessage) Option {
	return func(o *formatOptions) { o.redactedBecause = redaction }
}

// WithRelations sets unsigned.m.relations, the aggregations of the event.
func WithRelations(relations json.RawMessage) Option {
	return func(o *formatOptions) { o.relations = relations }
}

func (o *formatOptions) check() error {
	for _, f := range [...]struct {
		name string
		raw  json.RawMessage
	}{{"prev_content", o.prevContent}, {"redacted_because", o.redactedBecause}, {"m.relations", o.relations}} {
		if f.raw != nil && !json.Valid(f.raw) {
			return fmt.Errorf("unsigned %s is not valid JSON", f.name)
		}
	}
	return nil
}

// ClientEvent serializes pdu for a client at time now. FormatClient (or "")
// gives the spec's ClientEvent: content, event_id, origin_server_ts,
// redacts for redactions, room_id (also for a version 12 create event,
// whose room ID is its own hash), sender, state_key for state events, type,
// unsigned. FormatFederation gives the PDU as servers exchange it, with
// event_id added (later room versions leave it out) and the same unsigned.
//
// unsigned.age is now minus origin_server_ts. invite_room_state and
// knock_room_state (stripped to the StrippedStateEvent keys), m.relations,
// prev_content, redacted_because and replaces_state are kept from the PDU's
// unsigned; the With options set or replace them.
func ClientEvent(pdu gomatrixserverlib.PDU, format Format, now time.Time, opts ...Option) (json.RawMessage, error) {
	var o formatOptions
	for _, opt := range opts {
		opt(&o)
	}
	out, err := serialize(pdu, format, now, &o)
	if err != nil {
		return nil, fmt.Errorf("client event %s: %w", pdu.EventID(), err)
	}
	return out, nil
}

func serialize(pdu gomatrixserverlib.PDU, format Format, now time.Time, o *formatOptions) (json.RawMessage, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	switch format {
	case FormatClient, "":
		return appendClientEvent(make([]byte, 0, len(pdu.Content())+len(pdu.Unsigned())+512), pdu, now, o)
	case FormatFederation:
		return federationEvent(pdu, now, o)
	}
	return nil, fmt.Errorf("unknown event format %q", format)
}

// appendClientEvent writes the keys in canonical (sorted) order, straight
// from the PDU's fields: content is copied, never decoded, but for
// redactions.
func appendClientEvent(dst []byte, pdu gomatrixserverlib.PDU, now time.Time, o *formatOptions) ([]byte, error) {
	content, redacts, err := redactionView(pdu)
	if err != nil {
		return nil, err
	}
	dst = append(dst, `{"content":`...)
	dst = append(dst, content...)
	dst = append(dst, `,"event_id":`...)
	dst = appendString(dst, pdu.EventID())
	dst = append(dst, `,"origin_server_ts":`...)
	dst = strconv.AppendUint(dst, uint64(pdu.OriginServerTS()), 10)
	if redacts != "" {
		dst = append(dst, `,"redacts":`...)
		dst = appendString(dst, redacts)
	}
	if !o.withoutRoomID {
		dst = append(dst, `,"room_id":`...)
		dst = appendString(dst, pdu.RoomID().String())
	}
	dst = append(dst, `,"sender":`...)
	dst = appendString(dst, string(pdu.SenderID()))
	if sk := pdu.StateKey(); sk != nil {
		dst = append(dst, `,"state_key":`...)
		dst = appendString(dst, *sk)
	}
	dst = append(dst, `,"type":`...)
	dst = appendString(dst, pdu.Type())
	dst = append(dst, `,"unsigned":`...)
	if dst, err = appendUnsigned(dst, pdu, now, o); err != nil {
		return nil, err
	}
	return append(dst, '}'), nil
}

// redactionView returns the content to show and, for a redaction, its
// target. Room versions 1 to 10 carry the target at the top level and 11 on
// in content; the spec (room version 11, "Moving the redacts property")
// asks servers to show it in both places, so old clients and new ones find
// it. The room version's own place wins when both are set.
func redactionView(pdu gomatrixserverlib.PDU) (content []byte, redacts string, err error) {
	content = pdu.Content()
	if pdu.Type() != "m.room.redaction" {
		return content, "", nil
	}
	c, err := parseObject("content", content)
	if err != nil {
		return content, pdu.Redacts(), nil // shown as stored rather than failing a whole page
	}
	var inContent string
	if raw, ok := c["redacts"]; ok {
		_ = json.Unmarshal(raw, &inContent) // a non-string is no target
	}
	redacts = inContent
	if redacts == "" || (pdu.Redacts() != "" && !redactsInContent(pdu.Version())) {
		redacts = pdu.Redacts()
	}
	if redacts == "" || redacts == inContent {
		return content, redacts, nil
	}
	c["redacts"], _ = json.Marshal(redacts)
	content, err = json.Marshal(c)
	return content, redacts, err
}

// redactsInContent reports whether version v keeps a redaction's target in
// content (11 on, and the unstable versions built on them) rather than at
// the top level (1 to 10).
func redactsInContent(v gomatrixserverlib.RoomVersion) bool {
	n, err := strconv.Atoi(string(v))
	return err != nil || n >= 11
}

// appendUnsigned writes the unsigned object: age, the keys of the PDU's
// unsigned that the spec defines for clients, and what the options set.
// Other stored keys (age_ts, server bookkeeping) are dropped, and so are a
// stored transaction_id and membership, which depend on who asks.
func appendUnsigned(dst []byte, pdu gomatrixserverlib.PDU, now time.Time, o *formatOptions) ([]byte, error) {
	stored, err := storedUnsigned(pdu.Unsigned())
	if err != nil {
		return nil, err
	}
	dst = append(dst, `{"age":`...)
	dst = strconv.AppendInt(dst, now.UnixMilli()-int64(pdu.OriginServerTS()), 10)
	for _, key := range [...]string{"invite_room_state", "knock_room_state", "m.relations", "membership",
		"prev_content", "redacted_because", "replaces_state", "transaction_id"} {
		raw := o.unsigned(key)
		if raw == nil {
			raw = stored[key]
		}
		if raw == nil {
			continue
		}
		dst = append(dst, ',')
		dst = appendString(dst, key)
		dst = append(dst, ':')
		dst = append(dst, raw...)
	}
	return append(dst, '}'), nil
}

// unsigned returns what the options set for an unsigned key, or nil.
func (o *formatOptions) unsigned(key string) json.RawMessage {
	switch key {
	case "prev_content":
		return o.prevContent
	case "redacted_because":
		return o.redactedBecause
	case "m.relations":
		return o.relations
	case "transaction_id":
		if o.transactionID != "" {
			return appendString(nil, o.transactionID)
		}
	case "membership":
		if o.membership != "" {
			return appendString(nil, o.membership)
		}
	}
	return nil
}

// storedUnsigned reads the keys of a PDU's unsigned that may reach clients.
func storedUnsigned(unsigned []byte) (map[string]json.RawMessage, error) {
	unsigned = bytes.TrimSpace(unsigned)
	if len(unsigned) <= 2 { // absent or {}
		return nil, nil
	}
	var stored map[string]json.RawMessage
	if err := json.Unmarshal(unsigned, &stored); err != nil {
		return nil, fmt.Errorf("stored unsigned: %w", err)
	}
	delete(stored, "transaction_id")
	delete(stored, "membership")
	for _, key := range [...]string{"invite_room_state", "knock_room_state"} {
		raw, ok := stored[key]
		if !ok {
			continue
		}
		stripped, err := stripStateList(raw)
		if err != nil {
			return nil, fmt.Errorf("stored unsigned %s: %w", key, err)
		}
		stored[key] = stripped
	}
	return stored, nil
}

// stripStateList prunes a list of state events to StrippedStateEvents:
// since Matrix 1.16 the events an invite or knock brings over federation
// (full PDUs for the create event) must not reach clients as they came.
func stripStateList(raw json.RawMessage) (json.RawMessage, error) {
	// The wire's origin_server_ts is read apart: another server may send
	// anything there, and only a create event's integer is kept.
	var wire []struct {
		StrippedStateEvent
		TS json.RawMessage `json:"origin_server_ts"`
	}
	if err := json.Unmarshal(raw, &wire); err != nil {
		return nil, err
	}
	evs := make([]StrippedStateEvent, len(wire))
	for i, w := range wire {
		evs[i] = w.StrippedStateEvent
		if ts, err := strconv.ParseInt(string(w.TS), 10, 64); err == nil && w.Type == Create && w.StateKey == "" {
			evs[i].OriginServerTS = ts
		}
	}
	return json.Marshal(evs)
}

// federationEvent is the PDU as stored, with event_id (absent from the PDU
// in room versions 3 on) and the unsigned a client may see.
func federationEvent(pdu gomatrixserverlib.PDU, now time.Time, o *formatOptions) (json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(pdu.JSON(), &m); err != nil {
		return nil, fmt.Errorf("federation format: %w", err)
	}
	unsigned, err := appendUnsigned(nil, pdu, now, o)
	if err != nil {
		return nil, err
	}
	m["event_id"] = appendString(nil, pdu.EventID())
	m["unsigned"] = unsigned
	return json.Marshal(m)
}

// appendString appends s as a JSON string. IDs and types are almost always
// plain ASCII, which is copied as is; anything else goes through
// encoding/json, which escapes and repairs invalid UTF-8.
func appendString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			b, _ := json.Marshal(s) // a string always marshals
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// StrippedStateEvent is the spec's StrippedStateEvent: the part of a state
// event shown to users invited to or knocking on a room.
type StrippedStateEvent struct {
	Content  json.RawMessage `json:"content"`
	Sender   string          `json:"sender"`
	StateKey string          `json:"state_key"`
	Type     string          `json:"type"`
	// OriginServerTS is kept for the create event only, as MSC4311 has it
	// reach invitees whole (Synapse passes it as its PDU): a client shows
	// when the room was made.
	OriginServerTS int64 `json:"origin_server_ts,omitempty"`
}

// StrippedState strips pdu, a state event, for invite_room_state,
// knock_room_state and the invite_state and knock_state of /sync. Since
// Matrix 1.16 servers must strip what they pass on, never forward the full
// events they received over federation.
func StrippedState(pdu gomatrixserverlib.PDU) (StrippedStateEvent, error) {
	sk := pdu.StateKey()
	if sk == nil {
		return StrippedStateEvent{}, fmt.Errorf("stripped state of %s: %w", pdu.EventID(), ErrNotState)
	}
	st := StrippedStateEvent{
		Content:  pdu.Content(),
		Sender:   string(pdu.SenderID()),
		StateKey: *sk,
		Type:     pdu.Type(),
	}
	if st.Type == Create && st.StateKey == "" {
		st.OriginServerTS = int64(pdu.OriginServerTS())
	}
	return st, nil
}
