package accountdata

import (
	"context"
	"encoding/json"
	"errors"
)

// IgnoredUsers reads the users userID ignores (m.ignored_user_list), whose
// invites their syncs leave out. One GetItem; none when the list was never
// set or is not of the spec's shape.
func (s *Service) IgnoredUsers(ctx context.Context, userID string) (map[string]bool, error) {
	doc, err := s.Get(ctx, userID, "", "m.ignored_user_list")
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var list struct {
		Users map[string]json.RawMessage `json:"ignored_users"`
	}
	if json.Unmarshal(doc, &list) != nil {
		return nil, nil
	}
	out := make(map[string]bool, len(list.Users))
	for u := range list.Users {
		out[u] = true
	}
	return out, nil
}
