package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/protocol"
)

// Errors callers can test for with errors.Is. The message of an error that
// wraps one of them says exactly what is wrong and is safe to show clients.
var (
	// ErrTooLarge is an event over a size limit of the spec (M_TOO_LARGE).
	ErrTooLarge = errors.New("event too large")
	// ErrBadContent is content that breaks the schema of its event type
	// (M_BAD_JSON).
	ErrBadContent = errors.New("bad event content")
	// ErrBadFilter is a filter that breaks the spec's RoomEventFilter schema
	// (M_BAD_JSON).
	ErrBadFilter = errors.New("bad filter")
	// ErrNotState is an event without state key where state is needed.
	ErrNotState = errors.New("not a state event")
)

// Size limits of the client-server spec, section "Size limits".
const (
	// MaxPDUBytes bounds the whole event in federation format, signatures
	// included, as canonical JSON.
	MaxPDUBytes = 65536
	// MaxIDBytes bounds sender, room_id, event_id, state_key and type.
	MaxIDBytes = 255
	// MaxContentDepth bounds how deep arrays and objects nest in content,
	// the content object itself being the first level. It leaves room for
	// the levels that carry content on (a request body, a PDU inside a
	// federation transaction) within httpapi.MaxDepth, and within the 128
	// levels past which serde_json, under Rust homeservers, refuses a
	// document.
	MaxContentDepth = 64
)

// maxSafeInteger is the canonical JSON bound on integers, 2**53 - 1.
const maxSafeInteger = 1<<53 - 1

// clientError is an error whose message is written for the client; kind is
// the sentinel it matches with errors.Is.
type clientError struct {
	kind error
	msg  string
}

func (e *clientError) Error() string { return e.msg }
func (e *clientError) Unwrap() error { return e.kind }

// Matrix makes a clientError an httpapi.Public error: M_TOO_LARGE for
// ErrTooLarge, M_BAD_JSON for bad content or filters. Callers that pass
// one on unmapped answer with it rather than with a 500.
func (e *clientError) Matrix() (status int, errcode string) {
	if e.kind == ErrTooLarge {
		return 413, "M_TOO_LARGE"
	}
	return 400, "M_BAD_JSON"
}

// ValidateContent refuses malformed content of the event types whose
// content the server or the auth rules rely on, before the event is built
// and stored. It checks the shape only: whether the sender may send the
// event is for the auth rules. Content of any type must be a JSON object
// that can be signed as it is (CheckContent). The error wraps ErrBadContent
// and starts with the event type.
//
// The rules follow the event schemas of the spec and, for power levels, the
// auth rules of room versions 10 to 12, which refuse levels that are not
// integers; a string of digits is refused whatever the room version, since
// no new event needs one.
func ValidateContent(eventType string, stateKey *string, content []byte) error {
	// Syntax, duplicate keys and depth first: the schema checks below
	// decode the content, and would read one copy of a duplicate key.
	jsonErr := checkContent(content)
	if jsonErr != nil && !errors.Is(jsonErr, protocol.ErrNotCanonical) {
		return &clientError{kind: ErrBadContent, msg: eventType + ": " + jsonErr.Error()}
	}
	if err := validateContent(eventType, stateKey, content); err != nil {
		return &clientError{kind: ErrBadContent, msg: eventType + ": " + err.Error()}
	}
	if jsonErr != nil {
		return &clientError{kind: ErrBadContent, msg: eventType + ": " + jsonErr.Error()}
	}
	return nil
}

// CheckContent refuses content that cannot be signed as it is: what is not
// one JSON value, a key twice in an object, nesting deeper than
// MaxContentDepth, and what canonical JSON cannot hold (numbers that are
// not integers within [-(2**53)+1, (2**53)-1], lone UTF-16 surrogates, keys
// with quotes, backslashes or control characters). The error wraps
// ErrBadContent and says where, as "content.users: ...".
func CheckContent(content []byte) error {
	if err := checkContent(content); err != nil {
		return &clientError{kind: ErrBadContent, msg: err.Error()}
	}
	return nil
}

func checkContent(content []byte) error {
	if len(bytes.TrimSpace(content)) == 0 {
		return errors.New("content is empty, it must be a JSON object")
	}
	err := protocol.CheckCanonicalJSON(content, MaxContentDepth)
	var je *protocol.JSONError
	switch {
	case err == nil:
		return nil
	case !errors.As(err, &je):
		return err
	case errors.Is(err, protocol.ErrSyntax):
		return &contentError{kind: je.Kind, msg: "content is not valid JSON: " + je.Msg}
	case je.Path == "":
		return &contentError{kind: je.Kind, msg: "content: " + je.Msg}
	case je.Path[0] == '[':
		return &contentError{kind: je.Kind, msg: "content" + je.Path + ": " + je.Msg}
	}
	return &contentError{kind: je.Kind, msg: "content." + je.Path + ": " + je.Msg}
}

// contentError is a fault of content as JSON; kind is the protocol error.
type contentError struct {
	kind error
	msg  string
}

func (e *contentError) Error() string { return e.msg }
func (e *contentError) Unwrap() error { return e.kind }

func validateContent(eventType string, stateKey *string, content []byte) error {
	o, err := parseObject("content", content)
	if err != nil {
		return err
	}
	switch eventType {
	case "m.room.create":
		return validateCreate(o)
	case "m.room.member":
		return validateMember(o, stateKey)
	case "m.room.power_levels":
		return validatePowerLevels(o)
	case "m.room.join_rules":
		return validateJoinRules(o)
	case "m.room.history_visibility":
		return requireEnum(o, "history_visibility", "world_readable", "shared", "invited", "joined")
	case "m.room.guest_access":
		return requireEnum(o, "guest_access", "can_join", "forbidden")
	case "m.room.name":
		// The spec dropped its 255-byte limit on names (matrix-spec #3669);
		// absent, null and "" all mean the room has no name.
		return optionalString(o, "name", true)
	case "m.room.topic":
		return optionalString(o, "topic", true)
	case "m.room.avatar":
		// Any URL is stored, as Synapse stores it; null, like absent, means
		// the room has no avatar.
		return optionalString(o, "url", true)
	case "m.room.canonical_alias":
		return validateCanonicalAlias(o)
	case "m.room.encryption":
		return validateEncryption(o)
	case "m.room.server_acl":
		return validateServerACL(o)
	}
	return nil
}

// object is a decoded JSON object whose values are still raw.
type object map[string]json.RawMessage

// parseObject decodes raw, which must be a JSON object; name says what it is
// in the error.
func parseObject(name string, raw []byte) (object, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return nil, fmt.Errorf("%s is empty, it must be a JSON object", name)
	}
	if raw[0] != '{' {
		if !json.Valid(raw) {
			return nil, fmt.Errorf("%s is not valid JSON", name)
		}
		return nil, fmt.Errorf("%s must be a JSON object, not %s", name, kindOf(raw))
	}
	var o object
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, fmt.Errorf("%s is not valid JSON: %v", name, err)
	}
	return o, nil
}

// kindOf names the JSON type of raw for error messages.
func kindOf(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "the number " + string(raw)
}

func isNull(raw json.RawMessage) bool {
	return string(bytes.TrimSpace(raw)) == "null"
}

// stringAt returns the string at key; ok is false when key is absent.
func stringAt(o object, key string) (s string, ok bool, err error) {
	raw, ok := o[key]
	if !ok {
		return "", false, nil
	}
	if err := json.Unmarshal(raw, &s); err != nil || isNull(raw) {
		return "", true, fmt.Errorf("%s must be a string, not %s", key, kindOf(raw))
	}
	return s, true, nil
}

// optionalString refuses a key present with a value that is not a string;
// allowNull accepts null, which some schemas give the meaning "unset".
func optionalString(o object, key string, allowNull bool) error {
	if raw, ok := o[key]; ok && allowNull && isNull(raw) {
		return nil
	}
	_, _, err := stringAt(o, key)
	return err
}

// requireEnum refuses key when it is absent or not one of allowed.
func requireEnum(o object, key string, allowed ...string) error {
	s, ok, err := stringAt(o, key)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s is missing, it must be one of %s", key, strings.Join(allowed, ", "))
	}
	for _, a := range allowed {
		if s == a {
			return nil
		}
	}
	return fmt.Errorf("%s must be one of %s, not %q", key, strings.Join(allowed, ", "), s)
}

// optionalBool refuses key when present and not a boolean.
func optionalBool(o object, key string) error {
	raw, ok := o[key]
	if !ok {
		return nil
	}
	if s := string(bytes.TrimSpace(raw)); s != "true" && s != "false" {
		return fmt.Errorf("%s must be a boolean, not %s", key, kindOf(raw))
	}
	return nil
}

// checkInteger refuses raw unless it is an integer literal within the range
// canonical JSON allows; 1.0 and 1e2 are refused as canonical JSON has no
// such spelling.
func checkInteger(name string, raw json.RawMessage) error {
	raw = bytes.TrimSpace(raw)
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil && !isIntegerLiteral(raw) {
		return fmt.Errorf("%s must be an integer, not %s", name, kindOf(raw))
	}
	if err != nil || n > maxSafeInteger || n < -maxSafeInteger {
		return fmt.Errorf("%s must be an integer between -(2**53)+1 and (2**53)-1, not %s", name, raw)
	}
	return nil
}

// isIntegerLiteral reports whether raw is a JSON number without fraction or
// exponent, however large.
func isIntegerLiteral(raw []byte) bool {
	digits := bytes.TrimPrefix(raw, []byte("-"))
	if len(digits) == 0 {
		return false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// optionalInteger refuses key when present and not an integer.
func optionalInteger(o object, key string) error {
	if raw, ok := o[key]; ok {
		return checkInteger(key, raw)
	}
	return nil
}

// integerMap refuses key when present and not an object of integers;
// checkKey, when set, vets each key of that object.
func integerMap(o object, key string, checkKey func(string) error) error {
	raw, ok := o[key]
	if !ok {
		return nil
	}
	m, err := parseObject(key, raw)
	if err != nil {
		return err
	}
	for k, v := range m {
		if checkKey != nil {
			if err := checkKey(k); err != nil {
				return fmt.Errorf("%s key %q %v", key, k, err)
			}
		}
		if err := checkInteger(key+"."+k, v); err != nil {
			return err
		}
	}
	return nil
}

// stringList refuses key when present and not an array of strings; check,
// when set, vets each string.
func stringList(o object, key string, check func(string) error) error {
	raw, ok := o[key]
	if !ok {
		return nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil || isNull(raw) {
		return fmt.Errorf("%s must be an array of strings, not %s", key, kindOf(raw))
	}
	for i, item := range items {
		var s string
		if err := json.Unmarshal(item, &s); err != nil || isNull(item) {
			return fmt.Errorf("%s[%d] must be a string, not %s", key, i, kindOf(item))
		}
		if check == nil {
			continue
		}
		if err := check(s); err != nil {
			return fmt.Errorf("%s[%d] %q %v", key, i, s, err)
		}
	}
	return nil
}

// checkUserID applies the user ID grammar of the spec's appendix, keeping
// the historical localparts (any character but ':' and NUL) because rooms
// hold such users and must still be able to invite, ban or promote them.
// The error reads after the ID: `"@x" is not a user ID: ...`.
func checkUserID(id string) error {
	return checkID(id, '@', "user ID", false)
}

// checkRoomAlias applies the room alias grammar of the spec's appendix.
func checkRoomAlias(alias string) error {
	return checkID(alias, '#', "room alias", true)
}

func checkID(id string, sigil byte, kind string, emptyLocal bool) error {
	if len(id) > MaxIDBytes {
		return fmt.Errorf("is not a %s: it is %d bytes, over the limit of %d", kind, len(id), MaxIDBytes)
	}
	if len(id) == 0 || id[0] != sigil {
		return fmt.Errorf("is not a %s: it does not start with %q", kind, sigil)
	}
	local, server, ok := strings.Cut(id[1:], ":")
	switch {
	case !ok:
		return fmt.Errorf("is not a %s: it has no ':' before the server name", kind)
	case local == "" && !emptyLocal:
		return fmt.Errorf("is not a %s: its localpart is empty", kind)
	case strings.ContainsRune(local, 0):
		return fmt.Errorf("is not a %s: its localpart contains NUL", kind)
	case !protocol.ValidServerName(server):
		return fmt.Errorf("is not a %s: %q is not a valid server name", kind, server)
	}
	return nil
}

// validateCreate checks the create event's shape only: whether a room may
// still be created is for the caller, which refuses create events sent into
// an existing room.
func validateCreate(o object) error {
	if err := optionalString(o, "room_version", false); err != nil {
		return err
	}
	return stringList(o, "additional_creators", checkUserID)
}

// validateMember checks the membership and the state key, the user whose
// membership changes.
func validateMember(o object, stateKey *string) error {
	if stateKey == nil {
		return errors.New("state_key is missing, it must be the user ID whose membership changes")
	}
	if err := checkUserID(*stateKey); err != nil {
		return fmt.Errorf("state_key %q %v", *stateKey, err)
	}
	if err := requireEnum(o, "membership", "join", "invite", "leave", "ban", "knock"); err != nil {
		return err
	}
	// The auth rules read join_authorised_via_users_server from every
	// member event, so it must be a string (or null) for them to read the
	// event at all; whether it names a user who may authorise the join is
	// theirs to judge, and only on the restricted joins that use it. Synapse
	// stores any other value, and so does this server.
	return optionalString(o, "join_authorised_via_users_server", true)
}

// validatePowerLevels applies the type checks of auth rule 10 of room
// versions 10 to 12 (the range check is canonical JSON's).
func validatePowerLevels(o object) error {
	for _, key := range []string{"ban", "events_default", "invite", "kick", "redact", "state_default", "users_default"} {
		if err := optionalInteger(o, key); err != nil {
			return err
		}
	}
	if err := integerMap(o, "events", nil); err != nil {
		return err
	}
	if err := integerMap(o, "notifications", nil); err != nil {
		return err
	}
	return integerMap(o, "users", checkUserID)
}

// validateJoinRules checks join_rule, which the auth rules use, and only the
// shape of allow that the auth rules need to read the event: null or an
// array of conditions, each null or an object whose type and room_id, when
// present, are strings. What a condition says is not checked: Synapse
// stores conditions of any type, without a room_id or with one that names
// no room, and skips those it cannot use when it evaluates a join, as
// restricted joins here do; the spec makes a condition the server does not
// understand unsatisfiable, not invalid.
func validateJoinRules(o object) error {
	if err := requireEnum(o, "join_rule", "public", "invite", "knock", "restricted", "knock_restricted", "private"); err != nil {
		return err
	}
	raw, ok := o["allow"]
	if !ok || isNull(raw) {
		return nil
	}
	var conds []json.RawMessage
	if err := json.Unmarshal(raw, &conds); err != nil {
		return fmt.Errorf("allow must be an array of objects, not %s", kindOf(raw))
	}
	for i, c := range conds {
		if err := validateAllowCondition(fmt.Sprintf("allow[%d]", i), c); err != nil {
			return err
		}
	}
	return nil
}

func validateAllowCondition(name string, raw json.RawMessage) error {
	if isNull(raw) {
		return nil
	}
	c, err := parseObject(name, raw)
	if err != nil {
		return err
	}
	for _, key := range []string{"type", "room_id"} {
		if err := optionalString(c, key, true); err != nil {
			return fmt.Errorf("%s.%v", name, err)
		}
	}
	return nil
}

// validateCanonicalAlias checks the aliases' grammar; whether they point to
// the room (M_BAD_ALIAS) needs the directory and is for the caller.
func validateCanonicalAlias(o object) error {
	if raw, ok := o["alias"]; ok && !isNull(raw) {
		alias, _, err := stringAt(o, "alias")
		if err != nil {
			return err
		}
		if alias != "" {
			if err := checkRoomAlias(alias); err != nil {
				return fmt.Errorf("alias %q %v", alias, err)
			}
		}
	}
	return stringList(o, "alt_aliases", checkRoomAlias)
}

func validateEncryption(o object) error {
	alg, ok, err := stringAt(o, "algorithm")
	if err != nil {
		return err
	}
	if !ok || alg == "" {
		return errors.New("algorithm is missing, it must name the encryption algorithm, such as m.megolm.v1.aes-sha2")
	}
	if err := optionalInteger(o, "rotation_period_ms"); err != nil {
		return err
	}
	return optionalInteger(o, "rotation_period_msgs")
}

func validateServerACL(o object) error {
	if err := stringList(o, "allow", nil); err != nil {
		return err
	}
	if err := stringList(o, "deny", nil); err != nil {
		return err
	}
	return optionalBool(o, "allow_ip_literals")
}

// CheckSize applies the size limits of the client-server spec to pduJSON,
// the whole event in federation format with its signatures (PDU.JSON()):
// 65536 bytes for the event, 255 bytes for sender, room_id, event_id,
// state_key and type. The error wraps ErrTooLarge, or is a plain error when
// pduJSON is not a JSON object.
func CheckSize(pduJSON []byte) error {
	if len(pduJSON) > MaxPDUBytes {
		return &clientError{kind: ErrTooLarge, msg: fmt.Sprintf(
			"event is %d bytes, over the limit of %d bytes", len(pduJSON), MaxPDUBytes)}
	}
	var f struct {
		Sender   string  `json:"sender"`
		RoomID   string  `json:"room_id"`
		EventID  string  `json:"event_id"`
		StateKey *string `json:"state_key"`
		Type     string  `json:"type"`
	}
	if err := json.Unmarshal(pduJSON, &f); err != nil {
		return fmt.Errorf("check event size: %w", err)
	}
	stateKey := ""
	if f.StateKey != nil {
		stateKey = *f.StateKey
	}
	for _, field := range [...]struct{ name, value string }{
		{"sender", f.Sender}, {"room_id", f.RoomID}, {"event_id", f.EventID},
		{"state_key", stateKey}, {"type", f.Type},
	} {
		if len(field.value) > MaxIDBytes {
			return &clientError{kind: ErrTooLarge, msg: fmt.Sprintf(
				"%s is %d bytes, over the limit of %d bytes", field.name, len(field.value), MaxIDBytes)}
		}
	}
	return nil
}
