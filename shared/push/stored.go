package push

import (
	"context"
	"encoding/json"
)

// Stored is a pusher as the push worker (shared/notify) reads it: the
// pusher of GET /pushers, with its user and when its pushkey was set.
type Stored struct {
	Pusher
	UserID   string
	DeviceID string
	// CreatedTS is when the pusher was set, in Unix ms: the pushkey_ts of
	// a notification (in seconds there).
	CreatedTS int64
}

// Pushers lists the user's pushers: one Query of their partition.
func (s *Service) Pushers(ctx context.Context, userID string) ([]Stored, error) {
	items, err := s.pushers(ctx, userID)
	if err != nil {
		return nil, err
	}
	out := make([]Stored, 0, len(items))
	for _, it := range items {
		out = append(out, Stored{Pusher: Pusher{PushKey: it.PushKey, Kind: it.Kind, AppID: it.AppID,
			AppDisplayName: it.AppDisplayName, DeviceDisplayName: it.DeviceDisplayName, ProfileTag: it.ProfileTag,
			Lang: it.Lang, Data: json.RawMessage(it.Data)}, UserID: it.UserID, DeviceID: it.DeviceID, CreatedTS: it.CreatedTS})
	}
	return out, nil
}

// RemovePusher deletes the user's pusher of appID and pushKey, as a push
// gateway's "rejected" answer asks; removing one that is gone is no error.
func (s *Service) RemovePusher(ctx context.Context, userID, appID, pushKey string) error {
	return s.Store.Delete(ctx, pusherKey(userID, appID, pushKey))
}
