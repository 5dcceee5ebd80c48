package push

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Limits of pusher.yaml.
const (
	maxPushKeyBytes = 512
	maxAppIDChars   = 64
	// notifyPath is the only path a push gateway URL may have.
	notifyPath = "/_matrix/push/v1/notify"
)

// Pusher is a pusher as GET /pushers lists it.
type Pusher struct {
	PushKey           string          `json:"pushkey"`
	Kind              string          `json:"kind"`
	AppID             string          `json:"app_id"`
	AppDisplayName    string          `json:"app_display_name"`
	DeviceDisplayName string          `json:"device_display_name"`
	ProfileTag        string          `json:"profile_tag,omitempty"`
	Lang              string          `json:"lang"`
	Data              json.RawMessage `json:"data"`
}

type pusherItem struct {
	PK string `dynamodbav:"pk"`
	SK string `dynamodbav:"sk"`
	// In gsi1 under pusher|<app ID>|<pushkey>, by user ID: who else has
	// this device's pushkey.
	GSI1PK            string `dynamodbav:"gsi1pk"`
	GSI1SK            string `dynamodbav:"gsi1sk"`
	UserID            string `dynamodbav:"user_id"`
	DeviceID          string `dynamodbav:"device_id,omitempty"`
	Kind              string `dynamodbav:"kind"`
	AppID             string `dynamodbav:"app_id"`
	PushKey           string `dynamodbav:"pushkey"`
	AppDisplayName    string `dynamodbav:"app_display_name,omitempty"`
	DeviceDisplayName string `dynamodbav:"device_display_name,omitempty"`
	ProfileTag        string `dynamodbav:"profile_tag,omitempty"`
	Lang              string `dynamodbav:"lang,omitempty"`
	// Data is the data object as compact JSON.
	Data      string `dynamodbav:"data"`
	CreatedTS int64  `dynamodbav:"created_ts"`
}

// pusherID is "<app ID>|<pushkey>" with '%' and '|' escaped in the app ID,
// so that two different pairs never make the same key.
func pusherID(appID, pushKey string) string {
	esc := strings.NewReplacer("%", "%25", "|", "%7C").Replace(appID)
	return esc + "|" + pushKey
}

func pusherKey(userID, appID, pushKey string) store.Key {
	return store.Key{PK: userPK(userID), SK: "pusher|" + pusherID(appID, pushKey)}
}

// handleGetPushers serves GET /_matrix/client/v3/pushers: the user's
// pushers, one Query of their partition.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3pushers
func (s *Service) handleGetPushers(w http.ResponseWriter, r *http.Request) error {
	items, err := s.pushers(r.Context(), accounts.Caller(r.Context()).UserID)
	if err != nil {
		return err
	}
	out := make([]Pusher, 0, len(items))
	for _, it := range items {
		out = append(out, Pusher{PushKey: it.PushKey, Kind: it.Kind, AppID: it.AppID, AppDisplayName: it.AppDisplayName,
			DeviceDisplayName: it.DeviceDisplayName, ProfileTag: it.ProfileTag, Lang: it.Lang, Data: json.RawMessage(it.Data)})
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"pushers": out})
	return nil
}

func (s *Service) pushers(ctx context.Context, userID string) ([]pusherItem, error) {
	var all []pusherItem
	q := store.Query{PK: userPK(userID), Prefix: "pusher|"}
	for {
		var page []pusherItem
		next, err := s.Store.QueryPage(ctx, q, &page)
		if err != nil {
			return nil, fmt.Errorf("pushers of %s: %w", userID, err)
		}
		all = append(all, page...)
		if next == "" {
			return all, nil
		}
		q.Cursor = next
	}
}

type setPusherRequest struct {
	PushKey           *string         `json:"pushkey"`
	Kind              json.RawMessage `json:"kind"`
	AppID             *string         `json:"app_id"`
	AppDisplayName    *string         `json:"app_display_name"`
	DeviceDisplayName *string         `json:"device_display_name"`
	ProfileTag        string          `json:"profile_tag"`
	Lang              *string         `json:"lang"`
	Data              json.RawMessage `json:"data"`
	Append            bool            `json:"append"`
}

// handleSetPusher serves POST /_matrix/client/v3/pushers/set: with a kind it
// creates or replaces the user's pusher of that app ID and pushkey (and,
// unless append is true, removes other users' pushers of the same pair);
// with kind null it deletes it.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3pushersset
func (s *Service) handleSetPusher(w http.ResponseWriter, r *http.Request) error {
	if err := s.setPusher(r); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

func (s *Service) setPusher(r *http.Request) error {
	ctx := r.Context()
	sess := accounts.Caller(ctx)
	var req setPusherRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	var missing []string
	need := func(name string, present bool) {
		if !present {
			missing = append(missing, name)
		}
	}
	need("kind", req.Kind != nil)
	need("app_id", req.AppID != nil)
	need("pushkey", req.PushKey != nil)
	var kind *string
	if req.Kind != nil && string(req.Kind) != "null" {
		var k string
		if err := json.Unmarshal(req.Kind, &k); err != nil {
			return httpapi.BadJSON("kind must be a string, or null to delete the pusher")
		}
		kind = &k
	}
	if kind != nil {
		need("app_display_name", req.AppDisplayName != nil)
		need("device_display_name", req.DeviceDisplayName != nil)
		need("lang", req.Lang != nil)
		need("data", req.Data != nil && string(req.Data) != "null")
	}
	if len(missing) > 0 {
		return httpapi.MissingParam("Missing parameters: %s", strings.Join(missing, ", "))
	}
	appID, pushKey := *req.AppID, *req.PushKey
	switch {
	case appID == "" || pushKey == "":
		return httpapi.InvalidParam("app_id and pushkey must not be empty")
	case utf8.RuneCountInString(appID) > maxAppIDChars:
		return httpapi.InvalidParam("app_id is longer than %d characters", maxAppIDChars)
	case len(pushKey) > maxPushKeyBytes:
		return httpapi.InvalidParam("pushkey is longer than %d bytes", maxPushKeyBytes)
	}
	if kind == nil {
		return s.Store.Delete(ctx, pusherKey(sess.UserID, appID, pushKey))
	}
	data, err := s.pusherData(ctx, sess.UserID, *kind, appID, pushKey, req.Data)
	if err != nil {
		return err
	}
	k := pusherKey(sess.UserID, appID, pushKey)
	item := pusherItem{PK: k.PK, SK: k.SK, GSI1PK: "pusher|" + pusherID(appID, pushKey), GSI1SK: sess.UserID,
		UserID: sess.UserID, DeviceID: sess.DeviceID, Kind: *kind, AppID: appID, PushKey: pushKey,
		AppDisplayName: *req.AppDisplayName, DeviceDisplayName: *req.DeviceDisplayName, ProfileTag: req.ProfileTag,
		Lang: *req.Lang, Data: data, CreatedTS: s.now().UnixMilli()}
	if err := s.Store.Put(ctx, item); err != nil {
		if errors.Is(err, store.ErrItemTooLarge) {
			return httpapi.TooLarge("the pusher is over DynamoDB's %d KB item limit", store.MaxItemSize/1024)
		}
		return err
	}
	if req.Append {
		return nil
	}
	return s.removeOthers(ctx, sess.UserID, appID, pushKey)
}

// checkPusherData checks the data object of an http pusher and returns it
// as compact JSON. Email pushers are refused here: they are checked by
// pusherData (email.go) when the service knows users' addresses
// (OwnsAddress).
func checkPusherData(kind string, raw json.RawMessage) (string, error) {
	switch kind {
	case "http":
	case "email":
		return "", httpapi.InvalidParam("email pushers are not supported by this server")
	default:
		return "", httpapi.InvalidParam("unknown pusher kind %q: use http, or null to delete", kind)
	}
	var data map[string]json.RawMessage
	if err := json.Unmarshal(raw, &data); err != nil || bytes.TrimSpace(raw)[0] != '{' {
		return "", httpapi.BadJSON("data must be an object")
	}
	rawURL, ok := data["url"]
	if !ok {
		return "", httpapi.MissingParam("data.url is required for http pushers")
	}
	var u string
	if err := json.Unmarshal(rawURL, &u); err != nil || rawURL[0] != '"' {
		return "", httpapi.BadJSON("data.url must be a string")
	}
	parsed, err := url.Parse(u)
	if err != nil || parsed.Scheme != "https" || parsed.Host == "" || parsed.Path != notifyPath {
		return "", httpapi.InvalidParam("data.url must be an HTTPS URL with the path %s", notifyPath)
	}
	if f, ok := data["format"]; ok {
		var format string
		if err := json.Unmarshal(f, &format); err != nil || format != "event_id_only" {
			return "", httpapi.InvalidParam("data.format can only be \"event_id_only\"")
		}
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return "", httpapi.BadJSON("data must be an object")
	}
	return buf.String(), nil
}

// removeOthers deletes other users' pushers of the same app ID and pushkey,
// as the spec asks when append is false: the device now belongs to this
// user. The index is eventually consistent, so a pusher set in the same
// instant by someone else may survive.
func (s *Service) removeOthers(ctx context.Context, userID, appID, pushKey string) error {
	q := store.Query{PK: "pusher|" + pusherID(appID, pushKey), Index: "gsi1"}
	for {
		var page []pusherItem
		next, err := s.Store.QueryPage(ctx, q, &page)
		if err != nil {
			return fmt.Errorf("pushers of %s: %w", pushKey, err)
		}
		for _, it := range page {
			if it.UserID == userID || it.AppID != appID || it.PushKey != pushKey {
				continue
			}
			if err := s.Store.Delete(ctx, store.Key{PK: it.PK, SK: it.SK}); err != nil {
				return err
			}
		}
		if next == "" {
			return nil
		}
		q.Cursor = next
	}
}

// DeleteDevicePushers removes the pushers a device set, for when the device
// is deleted or logs out (Synapse does the same when an access token goes).
func (s *Service) DeleteDevicePushers(ctx context.Context, userID, deviceID string) error {
	items, err := s.pushers(ctx, userID)
	if err != nil {
		return err
	}
	for _, it := range items {
		if it.DeviceID != deviceID {
			continue
		}
		if err := s.Store.Delete(ctx, store.Key{PK: it.PK, SK: it.SK}); err != nil {
			return err
		}
	}
	return nil
}
