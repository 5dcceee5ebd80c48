package todevice

import (
	"strconv"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
)

// ackCursor says which messages one sync response delivered: every message
// whose time is at most newest less lateWrites, and those younger named by
// ID. Messages older than that landed before the inbox was read, so they
// were read, and they sort before the newest delivered, so they were
// delivered; younger ones may have landed after the read, so only the IDs
// tell. Usually a response's messages are seconds apart and all named.
type ackCursor struct {
	count  int   // messages delivered
	newest int64 // Unix µs of the newest
	ids    map[string]bool
}

// delivered is the cursor of msgs, read in key order.
func delivered(msgs []message) ackCursor {
	c := ackCursor{count: len(msgs), ids: map[string]bool{}}
	if len(msgs) == 0 {
		return c
	}
	c.newest, _, _ = parseMsgSK(msgs[len(msgs)-1].SK) // Deliver checked the keys
	for _, m := range msgs {
		us, id, _ := parseMsgSK(m.SK)
		if us > c.newest-lateWrites.Microseconds() {
			c.ids[id] = true
		}
	}
	return c
}

// has reports whether the message of time us (Unix µs) and ID id was
// delivered.
func (c ackCursor) has(us int64, id string) bool {
	if c.count == 0 || us > c.newest {
		return false
	}
	return us <= c.newest-lateWrites.Microseconds() || c.ids[id]
}

// encode writes the cursor as "<count>.<newest>[.<id>]...", or "" when
// nothing was delivered.
func (c ackCursor) encode() string {
	if c.count == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString(strconv.Itoa(c.count))
	b.WriteByte('.')
	b.WriteString(strconv.FormatInt(c.newest, 10))
	for id := range c.ids {
		b.WriteByte('.')
		b.WriteString(id)
	}
	return b.String()
}

// parseCursor reads a cursor that encode wrote; sync keeps it in its since
// token, which clients hand back.
func parseCursor(s string) (ackCursor, error) {
	c := ackCursor{ids: map[string]bool{}}
	if s == "" {
		return c, nil
	}
	parts := strings.Split(s, ".")
	bad := httpapi.InvalidParam("since token has a bad to-device part")
	if len(parts) < 2 {
		return c, bad
	}
	var err1, err2 error
	c.count, err1 = strconv.Atoi(parts[0])
	c.newest, err2 = strconv.ParseInt(parts[1], 10, 64)
	if err1 != nil || err2 != nil || c.count <= 0 || c.count > MaxPerSync {
		return c, bad
	}
	for _, id := range parts[2:] {
		c.ids[id] = true
	}
	return c, nil
}
