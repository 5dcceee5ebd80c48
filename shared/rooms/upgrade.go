package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/cirrus-matrix/cirrus/shared/events"
)

// copiedOnUpgrade is the state an upgrade carries to the new room, as the
// spec lists it.
var copiedOnUpgrade = []string{
	events.JoinRules, events.HistoryVisibility, events.GuestAccess, events.Name, events.Topic,
	events.Avatar, events.Encryption, events.ServerACL, events.CanonicalAlias, "m.room.pinned_events",
}

// Upgrade replaces roomID by a new room of version v: the new room gets the
// old one's state, the old one a tombstone and power levels that stop
// ordinary members from talking there. additional are the new room's other
// creators, in versions that have them; the old room's are not copied.
func (s *Service) Upgrade(ctx context.Context, userID, roomID, v string, additional []string) (string, error) {
	if !events.Supported(v) {
		return "", refuse(ErrUnsupportedVersion, "room version %s is not supported", v)
	}
	ok, err := s.canSendState(ctx, userID, roomID, events.Tombstone)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", refuse(ErrForbidden, "you need the power to send m.room.tombstone to upgrade this room")
	}
	state, err := s.CurrentState(ctx, roomID)
	if err != nil {
		return "", err
	}
	// Before version 12 the spec wants the last known event in
	// predecessor; MSC4291 drops it from rooms named by their create event,
	// whose tombstone must name the new room before the room exists.
	predecessor := map[string]any{"room_id": roomID}
	if !events.DomainlessRoomIDs(v) {
		h, err := s.readHead(ctx, roomID)
		if err != nil {
			return "", err
		}
		predecessor["event_id"] = h.EventID
	}
	req := CreateRequest{RoomVersion: v, CreationContent: map[string]any{"predecessor": predecessor}}
	creators := []string{userID}
	if events.PrivilegedCreators(v) && len(additional) > 0 {
		req.CreationContent["additional_creators"] = additional
		creators = append(creators, additional...)
	}
	var oldPL map[string]any
	space := false
	for _, ev := range state {
		if ev.Type() == events.Create {
			space = copyCreateContent(req.CreationContent, ev.Content())
		}
	}
	for _, ev := range state {
		switch {
		case ev.Type() == events.PowerLevels:
			_ = json.Unmarshal(ev.Content(), &oldPL)
		case slices.Contains(copiedOnUpgrade, ev.Type()) && *ev.StateKey() == "",
			carriedOnUpgrade(ev, space):
			req.InitialState = append(req.InitialState, InitialState{Type: ev.Type(), StateKey: *ev.StateKey(), Content: ev.Content()})
		}
	}
	req.PowerLevelContentOverride = s.upgradedPowerLevels(oldPL, userID, creators, v)
	newID, err := s.CreateRoom(ctx, userID, req)
	if err != nil {
		return "", err
	}
	if err := s.restoreUpgrader(ctx, userID, newID, req.PowerLevelContentOverride, oldPL); err != nil {
		return "", err
	}
	tomb, _ := json.Marshal(map[string]string{"body": "This room has been replaced", "replacement_room": newID})
	empty := ""
	if _, err := s.Send(ctx, Sent{Sender: userID}, roomID, events.Tombstone, &empty, tomb); err != nil {
		return "", err
	}
	if err := s.moveAliases(ctx, roomID, newID); err != nil {
		return "", err
	}
	if err := s.restrictOld(ctx, userID, roomID, oldPL); err != nil {
		return "", err
	}
	return newID, nil
}

// copyCreateContent carries the old room's type and m.federate into the
// new create content, as Synapse does: a space stays a space and a room
// kept from federation stays kept. It reports whether the room is a space.
func copyCreateContent(dst map[string]any, old json.RawMessage) bool {
	var c map[string]any
	_ = json.Unmarshal(old, &c)
	for _, k := range []string{"type", "m.federate"} {
		if v, ok := c[k]; ok {
			dst[k] = v
		}
	}
	return c["type"] == "m.space"
}

// carriedOnUpgrade is the keyed state Synapse carries to the new room
// beyond the spec's list: bans, so that an upgrade lets no banned user
// back in, and a space's children (an empty one is a removed child).
func carriedOnUpgrade(ev events.PDU, space bool) bool {
	switch ev.Type() {
	case events.Member:
		m, _ := ev.Membership()
		return m == "ban"
	case "m.space.child":
		return space && len(ev.Content()) > 2
	}
	return false
}

// upgradedPowerLevels copies the old levels; in a version 12 room the new
// creators have unlimited power and must not be listed.
func (s *Service) upgradedPowerLevels(old map[string]any, userID string, creators []string, v string) map[string]any {
	pl := map[string]any{}
	for k, val := range old {
		pl[k] = val
	}
	users := map[string]any{}
	if u, ok := old["users"].(map[string]any); ok {
		for k, val := range u {
			users[k] = val
		}
	}
	if events.PrivilegedCreators(v) {
		for _, c := range creators {
			delete(users, c)
		}
	} else if lvl, ok := listedLevel(old, userID); !ok || lvl < 100 {
		// Enough to send the copied state; restoreUpgrader gives back a
		// lower level once the room is made. A higher one stays.
		users[userID] = 100
	}
	pl["users"] = users
	return pl
}

// listedLevel is userID's entry in the users of power levels content.
func listedLevel(pl map[string]any, userID string) (int64, bool) {
	users, _ := pl["users"].(map[string]any)
	switch lvl := users[userID].(type) {
	case float64: // as decoded from JSON
		return int64(lvl), true
	case int: // as set by upgradedPowerLevels
		return int64(lvl), true
	}
	return 0, false
}

// restoreUpgrader gives the upgrader back, in the new room, the level the
// old room listed for them, when it was below the 100 they were raised to
// for making the room: as in Synapse, an upgrade promotes nobody.
func (s *Service) restoreUpgrader(ctx context.Context, userID, newID string, made, old map[string]any) error {
	lvl, ok := listedLevel(old, userID)
	if cur, listed := listedLevel(made, userID); !ok || !listed || lvl >= cur {
		return nil
	}
	pl := map[string]any{}
	for k, v := range made {
		pl[k] = v
	}
	users := map[string]any{}
	for k, v := range made["users"].(map[string]any) {
		users[k] = v
	}
	users[userID] = lvl
	pl["users"] = users
	raw, err := json.Marshal(pl)
	if err != nil {
		return err
	}
	empty := ""
	if _, err := s.Send(ctx, Sent{Sender: userID}, newID, events.PowerLevels, &empty, raw); err != nil {
		return fmt.Errorf("restore the upgrader's level in %s: %w", newID, err)
	}
	return nil
}

// restrictOld raises the levels to talk and invite in the old room to the
// greater of 50 and users_default + 1, as the spec suggests, so that
// conversation moves to the new one. Levels already higher stay, and an
// upgrader who may not change the levels leaves them: the spec asks for
// this only "if possible", and the upgrade is done by then.
func (s *Service) restrictOld(ctx context.Context, userID, roomID string, old map[string]any) error {
	pl := map[string]any{}
	for k, v := range old {
		pl[k] = v
	}
	level := int64(50)
	if d, ok := old["users_default"].(float64); ok && int64(d)+1 > level {
		level = int64(d) + 1
	}
	raised := false
	for _, k := range []string{"events_default", "invite"} {
		if cur, ok := old[k].(float64); !ok || int64(cur) < level {
			pl[k], raised = level, true
		}
	}
	if !raised {
		return nil
	}
	raw, err := json.Marshal(pl)
	if err != nil {
		return err
	}
	empty := ""
	_, err = s.Send(ctx, Sent{Sender: userID}, roomID, events.PowerLevels, &empty, raw)
	if errors.Is(err, ErrForbidden) {
		return nil
	}
	return err
}

// moveAliases points the old room's local aliases at the new one.
func (s *Service) moveAliases(ctx context.Context, oldID, newID string) error {
	aliases, err := s.Aliases(ctx, oldID)
	if err != nil {
		return err
	}
	for _, a := range aliases {
		var item aliasItem
		if err := s.Store.Get(ctx, aliasKey(a), &item); err != nil {
			return err
		}
		if err := s.deleteAlias(ctx, a); err != nil {
			return err
		}
		if err := s.createAlias(ctx, a, newID, item.Creator); err != nil {
			return err
		}
	}
	return nil
}
