package accounts_test

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"
)

// TestDeleteDevice_AuthOfAnotherUser checks that user-interactive auth
// naming another user, even with that user's right password, deletes
// nothing and is answered 403 M_FORBIDDEN, as Synapse answers it, not with
// a new challenge.
func TestDeleteDevice_AuthOfAnotherUser(t *testing.T) {
	hs := startHomeserver(t, false)
	ctx := context.Background()
	c := hs.user(t, "ida", "ida pw")
	ida := login(t, c, "ida", "ida pw", mautrix.ReqLogin{})
	other, _ := mautrix.NewClient(hs.URL, "", "")
	hs.user(t, "jon", "jon pw")
	login(t, other, "jon", "jon pw", mautrix.ReqLogin{})

	authAs := func(user, pw string) string {
		return `"auth":{"type":"m.login.password","identifier":{"type":"m.id.user","user":"` + user + `"},"password":"` + pw + `"}`
	}
	deviceURL := hs.URL + "/_matrix/client/v3/devices/" + string(ida.DeviceID)
	deleteURL := hs.URL + "/_matrix/client/v3/delete_devices"
	for _, tc := range []struct {
		name, method, url, body string
	}{
		{"DeleteDevice", "DELETE", deviceURL, `{` + authAs("jon", "jon pw") + `}`},
		{"DeleteDeviceFullID", "DELETE", deviceURL, `{` + authAs("@jon:example.org", "jon pw") + `}`},
		{"DeleteDeviceWrongPassword", "DELETE", deviceURL, `{` + authAs("jon", "wrong") + `}`},
		{"DeleteDevices", "POST", deleteURL, `{"devices":["` + string(ida.DeviceID) + `"],` + authAs("jon", "jon pw") + `}`},
		{"DeleteDevicesRemoteUser", "POST", deleteURL, `{"devices":["` + string(ida.DeviceID) + `"],` + authAs("@ida:elsewhere.example", "ida pw") + `}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, body := raw(t, tc.method, tc.url, c.AccessToken, tc.body); code != 403 || body["errcode"] != "M_FORBIDDEN" {
				t.Fatalf("%s %s with another user's auth: %d %v, want 403 M_FORBIDDEN", tc.method, tc.url, code, body)
			}
		})
	}
	if _, err := c.Whoami(ctx); err != nil {
		t.Fatalf("the device is gone after auth of another user: %v", err)
	}
	if _, err := other.Whoami(ctx); err != nil {
		t.Fatalf("the other user's device is gone: %v", err)
	}
	// The caller's own password, named in any form, still deletes.
	if code, body := raw(t, "DELETE", deviceURL, c.AccessToken, `{`+authAs("@IDA:example.org", "ida pw")+`}`); code != 200 {
		t.Fatalf("delete with the caller's own auth: %d %v", code, body)
	}
}
