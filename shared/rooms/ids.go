package rooms

import (
	"strings"
	"unicode/utf8"

	"github.com/cirrus-matrix/cirrus/shared/protocol"
)

// The spec's grammar for identifiers, checked where clients hand them in, so
// that a bad one is M_INVALID_PARAM rather than a confusing lookup miss.

// ValidUserID checks @localpart:server (historical localparts allowed, as
// other servers may have them).
func ValidUserID(id string) bool {
	local, server, ok := sigiled(id, '@')
	if !ok || len(id) > 255 || local == "" {
		return false
	}
	for _, c := range local {
		if c < 0x21 || c > 0x7e || c == ':' {
			return false
		}
	}
	return protocol.ValidServerName(server)
}

// ValidRoomID checks !opaque:server, or the server-less !opaque of room
// version 12.
func ValidRoomID(id string) bool {
	if len(id) < 2 || len(id) > 255 || id[0] != '!' {
		return false
	}
	opaque, server, ok := strings.Cut(id[1:], ":")
	if opaque == "" || strings.ContainsAny(opaque, " \t\n\x00") || !utf8.ValidString(opaque) {
		return false
	}
	return !ok || protocol.ValidServerName(server)
}

// ValidEventID checks $opaque with an optional :server (room versions 1 and
// 2). A "/" is allowed: version 3 IDs are standard base64, which has it.
func ValidEventID(id string) bool {
	if len(id) < 2 || len(id) > 255 || id[0] != '$' {
		return false
	}
	return !strings.ContainsAny(id, " \t\n\x00") && utf8.ValidString(id)
}

// ValidAlias checks #localpart:server.
func ValidAlias(a string) error {
	local, server, ok := sigiled(a, '#')
	if !ok || local == "" || len(a) > 255 || strings.ContainsAny(local, " \t\n\x00") || !utf8.ValidString(local) || !protocol.ValidServerName(server) {
		return errBadAlias
	}
	return nil
}

func sigiled(id string, sigil byte) (string, string, bool) {
	if len(id) < 4 || id[0] != sigil {
		return "", "", false
	}
	return strings.Cut(id[1:], ":")
}

// MaxKeyPart bounds what a client names an item by: event types, state
// keys and transaction IDs, 255 bytes as the spec bounds types and state
// keys. They become parts of the table's keys (a sort key holds at most
// 1,024 bytes).
const MaxKeyPart = 255

// ValidKeyPart reports whether s can be stored as part of a key as it was
// given: valid UTF-8 (the SDK would replace invalid bytes, so that two
// values share one key) and no NUL (which separates a state event's type
// from its state key in the room's keys).
func ValidKeyPart(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}
