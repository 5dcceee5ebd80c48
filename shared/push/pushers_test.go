package push_test

import (
	"context"
	"strings"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/push"
)

const (
	pushersAPI = "/_matrix/client/v3/pushers"
	gateway    = "https://push.example.org/_matrix/push/v1/notify"
)

func httpPusher(appID, pushKey, device string) map[string]any {
	return map[string]any{
		"kind": "http", "app_id": appID, "pushkey": pushKey,
		"app_display_name": "Mat Rix", "device_display_name": device, "profile_tag": "xxyyzz", "lang": "en",
		"data": map[string]any{"url": gateway, "format": "event_id_only", "custom": map[string]any{"k": 1}},
	}
}

func listPushers(t *testing.T, h *homeserver, token string) []map[string]any {
	t.Helper()
	r := call(t, "GET", h.URL+pushersAPI, token, nil)
	wantOK(t, "GET /pushers", r)
	list, ok := r.body["pushers"].([]any)
	if !ok {
		t.Fatalf("GET /pushers: %s", r.raw)
	}
	out := []map[string]any{}
	for _, p := range list {
		out = append(out, p.(map[string]any))
	}
	return out
}

func TestPushers_SetListDelete(t *testing.T) {
	h := startHomeserver(t)
	alice := h.register(t, "alice")
	set := func(body any) reply { return call(t, "POST", h.URL+pushersAPI+"/set", alice.Token, body) }

	if got := listPushers(t, h, alice.Token); len(got) != 0 {
		t.Fatalf("new user has pushers: %v", got)
	}
	wantOK(t, "set phone", set(httpPusher("com.example.app.ios", "APA91bHPRgkF3JUikC4ENAHEeMrd41Zxv3hVZjC9KtT8OvPVGJ", "iPhone 9")))
	got := listPushers(t, h, alice.Token)
	if len(got) != 1 || canon(t, got[0]) != canon(t, `{"pushkey":"APA91bHPRgkF3JUikC4ENAHEeMrd41Zxv3hVZjC9KtT8OvPVGJ","kind":"http",
		"app_id":"com.example.app.ios","app_display_name":"Mat Rix","device_display_name":"iPhone 9","profile_tag":"xxyyzz","lang":"en",
		"data":{"url":"`+gateway+`","format":"event_id_only","custom":{"k":1}}}`) {
		t.Fatalf("pushers: %v", got)
	}
	// The same app ID and pushkey again replace it.
	wantOK(t, "update phone", set(httpPusher("com.example.app.ios", "APA91bHPRgkF3JUikC4ENAHEeMrd41Zxv3hVZjC9KtT8OvPVGJ", "iPhone 10")))
	// A pushkey with '|' and an app ID with '|' and '%' stay distinct.
	wantOK(t, "set odd one", set(httpPusher("a|b", "c", "odd")))
	wantOK(t, "set odd two", set(httpPusher("a", "b|c", "odd")))
	wantOK(t, "set odd three", set(httpPusher("a%7Cb", "c", "odd")))
	got = listPushers(t, h, alice.Token)
	if len(got) != 4 {
		t.Fatalf("want 4 pushers, got %v", got)
	}
	byKey := map[string]map[string]any{}
	for _, p := range got {
		byKey[p["app_id"].(string)+" "+p["pushkey"].(string)] = p
	}
	if p := byKey["com.example.app.ios APA91bHPRgkF3JUikC4ENAHEeMrd41Zxv3hVZjC9KtT8OvPVGJ"]; p == nil || p["device_display_name"] != "iPhone 10" {
		t.Errorf("updated pusher: %v", got)
	}
	for _, k := range []string{"a|b c", "a b|c", "a%7Cb c"} {
		if byKey[k] == nil {
			t.Errorf("pusher %q missing from %v", k, got)
		}
	}

	// kind null deletes; deleting what is not there is fine too.
	wantOK(t, "delete odd one", set(map[string]any{"kind": nil, "app_id": "a|b", "pushkey": "c"}))
	wantOK(t, "delete again", set(map[string]any{"kind": nil, "app_id": "a|b", "pushkey": "c"}))
	if got := listPushers(t, h, alice.Token); len(got) != 3 {
		t.Errorf("after delete: %v", got)
	}
}

// Without append, setting a pusher takes the pushkey over from other users;
// with append, both keep it.
func TestPushers_Append(t *testing.T) {
	h := startHomeserver(t)
	alice, bob, carol := h.register(t, "alice"), h.register(t, "bob"), h.register(t, "carol")
	set := func(u user, body map[string]any) {
		t.Helper()
		wantOK(t, "set for "+u.ID, call(t, "POST", h.URL+pushersAPI+"/set", u.Token, body))
	}
	set(alice, httpPusher("com.example.app", "shared-device", "phone"))
	set(alice, httpPusher("com.example.app", "alice-only", "tablet"))
	set(bob, httpPusher("com.example.app", "shared-device", "phone"))
	if got := listPushers(t, h, alice.Token); len(got) != 1 || got[0]["pushkey"] != "alice-only" {
		t.Errorf("alice's pushers after bob took the device: %v", got)
	}
	if got := listPushers(t, h, bob.Token); len(got) != 1 {
		t.Errorf("bob's pushers: %v", got)
	}
	p := httpPusher("com.example.app", "shared-device", "phone")
	p["append"] = true
	set(carol, p)
	if got := listPushers(t, h, bob.Token); len(got) != 1 {
		t.Errorf("bob lost his pusher to an append: %v", got)
	}
	if got := listPushers(t, h, carol.Token); len(got) != 1 {
		t.Errorf("carol's pushers: %v", got)
	}
}

func TestPushers_Errors(t *testing.T) {
	h := startHomeserver(t)
	alice := h.register(t, "alice")
	with := func(change func(map[string]any)) map[string]any {
		p := httpPusher("com.example.app", "key", "phone")
		change(p)
		return p
	}
	for _, c := range []struct {
		name    string
		body    any
		status  int
		errcode string
		says    string
	}{
		{"not JSON", "{", 400, "M_NOT_JSON", ""},
		{"empty object", map[string]any{}, 400, "M_MISSING_PARAM", "kind, app_id, pushkey"},
		{"no kind", with(func(p map[string]any) { delete(p, "kind") }), 400, "M_MISSING_PARAM", "kind"},
		{"no app_id", with(func(p map[string]any) { delete(p, "app_id") }), 400, "M_MISSING_PARAM", "app_id"},
		{"no pushkey", with(func(p map[string]any) { delete(p, "pushkey") }), 400, "M_MISSING_PARAM", "pushkey"},
		{"delete without pushkey", map[string]any{"kind": nil, "app_id": "com.example.app"}, 400, "M_MISSING_PARAM", "pushkey"},
		{"no lang and data", with(func(p map[string]any) { delete(p, "lang"); delete(p, "data") }), 400, "M_MISSING_PARAM", "lang, data"},
		{"no display names", with(func(p map[string]any) { delete(p, "app_display_name"); delete(p, "device_display_name") }), 400, "M_MISSING_PARAM", "app_display_name, device_display_name"},
		{"data null", with(func(p map[string]any) { p["data"] = nil }), 400, "M_MISSING_PARAM", "data"},
		{"no url", with(func(p map[string]any) { p["data"] = map[string]any{"format": "event_id_only"} }), 400, "M_MISSING_PARAM", "data.url"},
		{"kind a number", with(func(p map[string]any) { p["kind"] = 1 }), 400, "M_BAD_JSON", ""},
		{"app_id a number", with(func(p map[string]any) { p["app_id"] = 1 }), 400, "M_BAD_JSON", ""},
		{"append a string", with(func(p map[string]any) { p["append"] = "yes" }), 400, "M_BAD_JSON", ""},
		{"data a string", with(func(p map[string]any) { p["data"] = "https://x" }), 400, "M_BAD_JSON", ""},
		{"url a number", with(func(p map[string]any) { p["data"] = map[string]any{"url": 5} }), 400, "M_BAD_JSON", ""},
		{"plain http url", with(func(p map[string]any) {
			p["data"] = map[string]any{"url": "http://push.example.org/_matrix/push/v1/notify"}
		}), 400, "M_INVALID_PARAM", "HTTPS"},
		{"wrong path", with(func(p map[string]any) { p["data"] = map[string]any{"url": "https://push.example.org/notify"} }), 400, "M_INVALID_PARAM", "/_matrix/push/v1/notify"},
		{"no host", with(func(p map[string]any) { p["data"] = map[string]any{"url": "https:///_matrix/push/v1/notify"} }), 400, "M_INVALID_PARAM", ""},
		{"unknown format", with(func(p map[string]any) { p["data"] = map[string]any{"url": gateway, "format": "full"} }), 400, "M_INVALID_PARAM", "format"},
		{"unknown kind", with(func(p map[string]any) { p["kind"] = "carrier-pigeon" }), 400, "M_INVALID_PARAM", "kind"},
		{"email kind", with(func(p map[string]any) { p["kind"] = "email"; p["app_id"] = "m.email" }), 400, "M_INVALID_PARAM", "email"},
		{"empty pushkey", with(func(p map[string]any) { p["pushkey"] = "" }), 400, "M_INVALID_PARAM", ""},
		{"pushkey over 512 bytes", with(func(p map[string]any) { p["pushkey"] = strings.Repeat("k", 513) }), 400, "M_INVALID_PARAM", "512"},
		{"app_id over 64 characters", with(func(p map[string]any) { p["app_id"] = strings.Repeat("é", 65) }), 400, "M_INVALID_PARAM", "64"},
		{"data over the item limit", with(func(p map[string]any) {
			p["data"] = map[string]any{"url": gateway, "blob": strings.Repeat("b", 420*1024)}
		}), 413, "M_TOO_LARGE", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := call(t, "POST", h.URL+pushersAPI+"/set", alice.Token, c.body)
			wantError(t, c.name, r, c.status, c.errcode)
			if msg, _ := r.body["error"].(string); !strings.Contains(msg, c.says) {
				t.Errorf("%s: message %q does not say %q", c.name, msg, c.says)
			}
		})
	}
	// The longest allowed ones are accepted.
	wantOK(t, "512-byte pushkey, 64-character app ID", call(t, "POST", h.URL+pushersAPI+"/set", alice.Token,
		with(func(p map[string]any) {
			p["pushkey"] = strings.Repeat("k", 512)
			p["app_id"] = strings.Repeat("é", 64)
		})))
	if got := listPushers(t, h, alice.Token); len(got) != 1 {
		t.Errorf("pushers after the errors: %v", got)
	}
	wantError(t, "GET /pushers/set", call(t, "GET", h.URL+pushersAPI+"/set", alice.Token, nil), 405, "M_UNRECOGNIZED")
}

func TestPushers_DeleteDevicePushers(t *testing.T) {
	h := startHomeserver(t)
	alice := h.register(t, "alice")
	wantOK(t, "set", call(t, "POST", h.URL+pushersAPI+"/set", alice.Token, httpPusher("com.example.app", "key", "phone")))
	svc := &push.Service{Store: h.srv.Store}
	if err := svc.DeleteDevicePushers(context.Background(), alice.ID, "OTHERDEVICE"); err != nil {
		t.Fatal(err)
	}
	if got := listPushers(t, h, alice.Token); len(got) != 1 {
		t.Fatalf("another device's deletion removed the pusher: %v", got)
	}
	if err := svc.DeleteDevicePushers(context.Background(), alice.ID, alice.Device); err != nil {
		t.Fatal(err)
	}
	if got := listPushers(t, h, alice.Token); len(got) != 0 {
		t.Errorf("pushers after deleting the device's: %v", got)
	}
}
