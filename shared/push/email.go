package push

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
)

// Email pushers: notification mail (shared/notify) goes to the address that
// is an email pusher's pushkey. Synapse's rules: the app ID is "m.email",
// and the address must be one bound to the account.
const (
	// EmailKind is the kind of an email pusher.
	EmailKind = "email"
	// EmailAppID is the app ID every email pusher has.
	EmailAppID = "m.email"
	// emailAppName is the app_display_name of the pushers made for new
	// users, Synapse's.
	emailAppName = "Email Notifications"
)

// pusherData checks the data object for the kind of pusher and returns it
// as compact JSON: email pushers when the service can tell which addresses
// a user owns (OwnsAddress), else what checkPusherData allows.
func (s *Service) pusherData(ctx context.Context, userID, kind, appID, pushKey string, raw json.RawMessage) (string, error) {
	if kind != EmailKind || s.OwnsAddress == nil {
		return checkPusherData(kind, raw)
	}
	if appID != EmailAppID {
		return "", httpapi.InvalidParam("the app_id of an email pusher must be %q", EmailAppID)
	}
	var data struct {
		Brief *json.RawMessage `json:"brief"`
	}
	if err := json.Unmarshal(raw, &data); err != nil || bytes.TrimSpace(raw)[0] != '{' {
		return "", httpapi.BadJSON("data must be an object")
	}
	if data.Brief != nil {
		var b bool
		if err := json.Unmarshal(*data.Brief, &b); err != nil {
			return "", httpapi.BadJSON("data.brief must be a boolean")
		}
	}
	owns, err := s.OwnsAddress(ctx, userID, pushKey)
	if err != nil {
		return "", fmt.Errorf("email pusher: %w", err)
	}
	if !owns {
		// Synapse's answer for an address not bound to the account.
		return "", httpapi.Errorf(http.StatusBadRequest, "M_THREEPID_NOT_FOUND",
			"the pushkey of an email pusher must be an email address bound to your account")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return "", httpapi.BadJSON("data must be an object")
	}
	return buf.String(), nil
}

// AddEmailPusher gives the user an email pusher for address, as Synapse
// does for each user who registers with an address when
// email.notif_for_new_users is on. An existing one is replaced.
func (s *Service) AddEmailPusher(ctx context.Context, userID, address string) error {
	k := pusherKey(userID, EmailAppID, address)
	item := pusherItem{PK: k.PK, SK: k.SK, GSI1PK: "pusher|" + pusherID(EmailAppID, address), GSI1SK: userID,
		UserID: userID, Kind: EmailKind, AppID: EmailAppID, PushKey: address,
		AppDisplayName: emailAppName, DeviceDisplayName: address, Data: "{}", CreatedTS: s.now().UnixMilli()}
	if err := s.Store.Put(ctx, item); err != nil {
		return fmt.Errorf("add email pusher: %w", err)
	}
	return nil
}
