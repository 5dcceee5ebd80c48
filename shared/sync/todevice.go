package sync

import (
	"context"
	"encoding/json"
	"slices"
	"time"
)

// deviceSkew bounds how far apart the clocks of two hosts are. A to-device
// entry is written once its messages are stored, so an entry older than the
// start of an inbox read by more than this was written before the read, and
// the read found its messages.
const deviceSkew = time.Second

// inbox is what one sync knows of its device's to-device messages. The
// inbox itself (shared/todevice) is read only when the token says that an
// acknowledgement is due, or the stream holds an entry for the device that
// may be newer than the last read: never at each poll of a waiting sync.
type inbox struct {
	// cursor is the token's todevice cursor, then the one of what this sync
	// delivers.
	cursor string
	// due says that the token's response delivered messages: the inbox is
	// read before waiting, to delete them and take what follows.
	due bool
	// read and seen are position's DeviceRead and DeviceSeen.
	read int64
	seen []int64
	// events is what this sync delivers.
	events []json.RawMessage
	// limit caps events (sliding sync's to_device limit); 0: the inbox's
	// own cap.
	limit int
}

// deviceTag ties a token's to-device fields to their device without
// showing the device ID.
func deviceTag(deviceID string) string { return userTag(deviceID)[:8] }

// openInbox reads the to-device fields of pos; a token another device of
// the user wrote has none for this one.
func openInbox(pos position, deviceID string) *inbox {
	if pos.Device != deviceTag(deviceID) {
		return &inbox{}
	}
	return &inbox{cursor: pos.ToDevice, due: pos.ToDevice != "", read: pos.DeviceRead, seen: pos.DeviceSeen}
}

// save writes the inbox's state into the next token.
func (b *inbox) save(next *position, deviceID string) {
	next.Device = deviceTag(deviceID)
	next.ToDevice, next.DeviceRead, next.DeviceSeen = b.cursor, b.read, b.seen
}

// pending returns the times of the stream's entries for the device (its
// own, or "~*" for all) that the last read of the inbox may have missed.
func (b *inbox) pending(deviceID string, all []news) []int64 {
	var out []int64
	for _, n := range all {
		if n.RoomID != toDevicePrefix+deviceID && n.RoomID != toDevicePrefix+"*" {
			continue
		}
		if n.TS < b.read-deviceSkew.Milliseconds() || slices.Contains(b.seen, n.TS) {
			continue
		}
		out = append(out, n.TS)
	}
	return out
}

// check reads the device's inbox when the token or the stream entries in
// all say so: it acknowledges what the token's response delivered and
// takes what waits. It reports whether there are messages to deliver.
func (s *Service) check(ctx context.Context, req Request, b *inbox, all []news) (bool, error) {
	if s.ToDevice == nil {
		return false, nil
	}
	pending := b.pending(req.DeviceID, all)
	if !b.due && len(pending) == 0 {
		return false, nil
	}
	return s.readInbox(ctx, req, b, pending)
}

// readInbox reads the device's inbox and records the entries in pending,
// seen before the read, as handled.
func (s *Service) readInbox(ctx context.Context, req Request, b *inbox, pending []int64) (bool, error) {
	read := s.now().UnixMilli()
	var evs []json.RawMessage
	var cursor string
	var err error
	if b.limit > 0 && s.ToDeviceAtMost != nil {
		evs, cursor, err = s.ToDeviceAtMost(ctx, req.UserID, req.DeviceID, b.cursor, b.limit)
	} else {
		evs, cursor, err = s.ToDevice(ctx, req.UserID, req.DeviceID, b.cursor)
	}
	if err != nil {
		return false, err
	}
	var seen []int64
	for _, ts := range append(pending, b.seen...) {
		if ts >= read-deviceSkew.Milliseconds() && !slices.Contains(seen, ts) {
			seen = append(seen, ts)
		}
	}
	b.cursor, b.due, b.read, b.seen, b.events = cursor, false, read, seen, evs
	return len(evs) > 0, nil
}
