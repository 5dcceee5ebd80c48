package notify_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/fedclient"
	"github.com/cirrus-matrix/cirrus/shared/notify"
)

// TestNewClient_IPRanges: the gateway client keeps to the IP ranges as
// outbound federation does: loopback is refused by the default blacklist
// and reached once whitelisted.
func TestNewClient_IPRanges(t *testing.T) {
	gw := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"rejected":[]}`))
	}))
	defer gw.Close()
	trust := gw.Client().Transport.(*http.Transport).TLSClientConfig
	post := func(c *http.Client) error {
		req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, gw.URL+"/_matrix/push/v1/notify", bytes.NewReader([]byte(`{}`)))
		if err != nil {
			t.Fatal(err)
		}
		res, err := c.Do(req)
		if err == nil {
			res.Body.Close()
		}
		return err
	}
	for _, tc := range []struct {
		name   string
		opts   notify.ClientOptions
		refuse bool
	}{
		{"default blacklist", notify.ClientOptions{}, true},
		{"loopback listed", notify.ClientOptions{IPRangeBlacklist: []string{"127.0.0.0/8"}}, true},
		{"loopback whitelisted", notify.ClientOptions{IPRangeWhitelist: []string{"127.0.0.1"}}, false},
		{"empty blacklist", notify.ClientOptions{IPRangeBlacklist: []string{}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.TLS = trust
			c, err := notify.NewClient(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			err = post(c)
			if refused := errors.Is(err, fedclient.ErrAddressRefused); refused != tc.refuse || (!tc.refuse && err != nil) {
				t.Errorf("post: %v; want refused %v", err, tc.refuse)
			}
		})
	}
	if _, err := notify.NewClient(notify.ClientOptions{IPRangeBlacklist: []string{"not a range"}}); err == nil {
		t.Error("NewClient took a blacklist entry that is not a range")
	}
	// Certificates are checked: without the test CA the gateway is not
	// trusted.
	c, err := notify.NewClient(notify.ClientOptions{IPRangeWhitelist: []string{"127.0.0.1"}, TLS: &tls.Config{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := post(c); err == nil {
		t.Error("an untrusted certificate was accepted")
	}
}

// TestPush_Dropped: a gateway answering 400 has that notification
// dropped, not retried; the next one is sent as usual.
func TestPush_Dropped(t *testing.T) {
	ctx := context.Background()
	gw := newGateway(t)
	gw.answer = func(n int) (int, string) {
		if n == 1 {
			return http.StatusBadRequest, `{"errcode":"M_BAD_JSON","error":"no"}`
		}
		return http.StatusOK, `{}`
	}
	st := startPush(t, gw)
	alice, bob := st.Member(t, "alice"), st.Member(t, "bob")
	setHTTPPusher(t, alice, gw, "alice-key", nil)
	room, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{alice.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	invite := gw.next(t, "alice-key")
	joinRoom(t, alice, room.RoomID)
	hi := sendEvent(t, bob, room.RoomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "hi"})
	n := gw.next(t, "alice-key")
	if n["event_id"] != hi || invite["event_id"] == hi {
		t.Errorf("after the refused invite (%v) came %v, want %s", invite["event_id"], n["event_id"], hi)
	}
	// The invite's job ended before the message's began: its log is all
	// there.
	if logs := st.Logs(); !strings.Contains(logs, "push: notification dropped") || strings.Contains(logs, "retrying") {
		t.Errorf("a 400 was not dropped, or was retried")
	}
}
