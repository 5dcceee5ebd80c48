package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cirrus-matrix/cirrus/shared/events"
)

// ProfileChanged sends a new member event with userID's display name and
// avatar into every room they are joined to, as Synapse does, so that other
// members see the change.
func (s *Service) ProfileChanged(ctx context.Context, userID, displayName, avatarURL string) error {
	rooms, err := s.JoinedRooms(ctx, userID)
	if err != nil {
		return err
	}
	var errs []error
	for _, roomID := range rooms {
		if err := s.updateMember(ctx, userID, roomID, displayName, avatarURL); err != nil {
			errs = append(errs, fmt.Errorf("room %s: %w", roomID, err))
		}
	}
	return errors.Join(errs...)
}

func (s *Service) updateMember(ctx context.Context, userID, roomID, displayName, avatarURL string) error {
	cur, err := s.StateEvent(ctx, roomID, events.Member, userID)
	if err != nil {
		return err
	}
	content := map[string]any{}
	if err := json.Unmarshal(cur.Content(), &content); err != nil {
		return err
	}
	if content["displayname"] == nilIfEmpty(displayName) && content["avatar_url"] == nilIfEmpty(avatarURL) {
		return nil
	}
	set := func(k, v string) {
		if v == "" {
			delete(content, k)
		} else {
			content[k] = v
		}
	}
	set("displayname", displayName)
	set("avatar_url", avatarURL)
	content["membership"] = "join"
	delete(content, "reason")
	raw, err := json.Marshal(content)
	if err != nil {
		return err
	}
	_, err = s.send(ctx, roomID, sendRequest{proto: events.Proto{Sender: userID, Type: events.Member, StateKey: &userID, Content: raw}})
	return s.sendError(err)
}

// nilIfEmpty compares like a decoded JSON field: absent is nil.
func nilIfEmpty(v string) any {
	if v == "" {
		return nil
	}
	return v
}
