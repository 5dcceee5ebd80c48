package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

// ServerACL is the event type of a room's server access control list.
const ServerACL = "m.room.server_acl"

// ACLAllows reports whether the server ACL in the room's current state
// lets serverName in; a room without one (or one this server does not
// hold) lets every server in. Cost: one GetItem.
// https://spec.matrix.org/v1.19/server-server-api/#server-access-control-lists-acls
func (s *Service) ACLAllows(ctx context.Context, roomID, serverName string) (bool, error) {
	ev, err := s.Rooms.StateEvent(ctx, roomID, ServerACL, "")
	if errors.Is(err, rooms.ErrUnknownEvent) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return ACLContentAllows(ev.Content(), serverName), nil
}

// ACLContentAllows applies the content of an m.room.server_acl event to
// serverName, in the order the event's definition gives: an IP literal
// when allow_ip_literals is false is denied; then a match in deny denies,
// a match in allow allows, and anything else is denied. Patterns are
// case-insensitive globs over the name without its port; entries that
// are not strings are ignored, and a field of the wrong type counts as
// absent (allow_ip_literals defaults to true).
func ACLContentAllows(content json.RawMessage, serverName string) bool {
	var c struct {
		AllowIPLiterals any `json:"allow_ip_literals"`
		Allow           any `json:"allow"`
		Deny            any `json:"deny"`
	}
	if json.Unmarshal(content, &c) != nil {
		// Content the auth rules let through whatever its shape: nothing
		// of it applies, and an empty allow list denies.
		return false
	}
	host := hostOf(serverName)
	if b, ok := c.AllowIPLiterals.(bool); ok && !b && net.ParseIP(strings.Trim(host, "[]")) != nil {
		return false
	}
	host = strings.ToLower(host)
	if matchesAny(c.Deny, host) {
		return false
	}
	return matchesAny(c.Allow, host)
}

// hostOf strips the port off a server name: host, IPv4:port, [IPv6]:port.
func hostOf(serverName string) string {
	if strings.HasPrefix(serverName, "[") {
		if end := strings.IndexByte(serverName, ']'); end >= 0 {
			return serverName[:end+1]
		}
		return serverName
	}
	if i := strings.LastIndexByte(serverName, ':'); i >= 0 {
		return serverName[:i]
	}
	return serverName
}

func matchesAny(list any, host string) bool {
	entries, _ := list.([]any)
	for _, e := range entries {
		if p, ok := e.(string); ok && glob(strings.ToLower(p), host) {
			return true
		}
	}
	return false
}

// glob matches s against pattern, where * is any run of characters and ?
// exactly one (the spec's glob-style matching).
func glob(pattern, s string) bool {
	p, i := []rune(pattern), []rune(s)
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(i) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == i[si]):
			pi++
			si++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}
