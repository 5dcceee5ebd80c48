package httpapi_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestBodies_BadJSONOrNotJSON: across endpoints, JSON whose top level is
// not an object, and JSON with a number JSON does not allow, are 400
// M_BAD_JSON; a body that is not JSON at all stays 400 M_NOT_JSON.
func TestBodies_BadJSONOrNotJSON(t *testing.T) {
	st := servertest.Start(t)
	u := st.Register(t, "alice")
	c := st.Client(t, u)
	room, err := c.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{})
	if err != nil {
		t.Fatal(err)
	}
	r := "/_matrix/client/v3/rooms/" + url.PathEscape(string(room.RoomID))
	endpoints := [][2]string{
		{"PUT", r + "/send/m.room.message/{txn}"},
		{"PUT", r + "/state/m.room.topic/"},
		{"PUT", "/_matrix/client/v3/user/" + url.PathEscape(u.ID) + "/account_data/x.y"},
		{"POST", "/_matrix/client/v3/createRoom"},
		{"POST", "/_matrix/client/v3/keys/query"},
	}
	for i, body := range []struct{ body, errcode string }{
		{`[]`, "M_BAD_JSON"},
		{`"x"`, "M_BAD_JSON"},
		{`1`, "M_BAD_JSON"},
		{`null`, "M_BAD_JSON"},
		{`{"n": NaN}`, "M_BAD_JSON"},
		{`{"n": -Infinity}`, "M_BAD_JSON"},
		{`{"n": 01}`, "M_BAD_JSON"},
		{`{"n": 1.}`, "M_BAD_JSON"},
		{`nope`, "M_NOT_JSON"},
		{`{"n":`, "M_NOT_JSON"},
		{`{"n": 1`, "M_NOT_JSON"},
		{``, "M_NOT_JSON"},
	} {
		for _, ep := range endpoints {
			path := ep[1]
			if strings.Contains(path, "{txn}") {
				path = strings.Replace(path, "{txn}", fmt.Sprint("t", i), 1) // a fresh transaction ID
			}
			rep := st.Do(t, ep[0], path, u.AccessToken, body.body)
			if rep.Status != http.StatusBadRequest || rep.Body["errcode"] != body.errcode {
				t.Errorf("%s %s with %q: %d %s, want 400 %s", ep[0], ep[1], body.body, rep.Status, rep.Raw, body.errcode)
			}
		}
	}
}
