package rooms_test

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// The e2e_*_test.go files drive the room endpoints with mautrix-go, a real
// client library, against the real handler tree and the embedded DynamoDB.

// mxUser is a registered user with a mautrix client logged in as them.
type mxUser = servertest.Member

var bg = context.Background()

// wantErr checks that err is the Matrix error code with HTTP status.
func wantErr(t *testing.T, what string, err error, code string, status int) {
	t.Helper()
	var he mautrix.HTTPError
	if !errors.As(err, &he) || he.RespError == nil {
		t.Fatalf("%s: got error %v, want %d %s", what, err, status, code)
	}
	if he.RespError.ErrCode != code || he.Response.StatusCode != status {
		t.Fatalf("%s: got %d %s (%s), want %d %s", what, he.Response.StatusCode, he.RespError.ErrCode, he.RespError.Err, status, code)
	}
}

func must[T any](t *testing.T, what string) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
}

// create makes a room and returns its ID.
func create(t *testing.T, u mxUser, req *mautrix.ReqCreateRoom) id.RoomID {
	t.Helper()
	resp, err := u.CreateRoom(bg, req)
	if err != nil {
		t.Fatalf("createRoom by %s: %v", u.ID, err)
	}
	return resp.RoomID
}

// say sends a text message and returns its ID.
func say(t *testing.T, u mxUser, room id.RoomID, body string) id.EventID {
	t.Helper()
	resp, err := u.SendText(bg, room, body)
	if err != nil {
		t.Fatalf("%s sends %q: %v", u.ID, body, err)
	}
	return resp.EventID
}

// stateOf reads the content of one piece of state as a generic object.
func stateOf(t *testing.T, u mxUser, room id.RoomID, typ, key string) map[string]any {
	t.Helper()
	var c map[string]any
	if err := u.StateEvent(bg, room, event.NewEventType(typ), key, &c); err != nil {
		t.Fatalf("state %s/%q of %s as %s: %v", typ, key, room, u.ID, err)
	}
	return c
}

// raw sends a request the typed client has no method for, with the
// client's token, and decodes the answer into out when not nil.
func raw(u mxUser, method string, body, out any, path ...any) error {
	_, err := u.MakeRequest(bg, method, u.BuildClientURL(path...), body, out)
	return err
}

// rawQuery sends a GET with query parameters.
func rawQuery(u mxUser, query map[string]string, out any, path ...any) error {
	_, err := u.MakeRequest(bg, "GET", u.BuildURLWithQuery(mautrix.ClientURLPath(path), query), nil, out)
	return err
}

// rawBytes sends body exactly as given.
func rawBytes(u mxUser, method string, body []byte, path ...any) error {
	_, err := u.MakeFullRequest(bg, mautrix.FullRequest{Method: method, URL: u.BuildClientURL(path...), RequestBytes: body})
	return err
}

// bodies lists the body of each m.room.message in evs, in order.
func bodies(evs []*event.Event) []string {
	out := []string{}
	for _, ev := range evs {
		if ev.Type.Type == "m.room.message" {
			b, _ := ev.Content.Raw["body"].(string)
			out = append(out, b)
		}
	}
	return out
}

// types lists the type of each event.
func types(evs []*event.Event) []string {
	out := []string{}
	for _, ev := range evs {
		out = append(out, ev.Type.Type)
	}
	return out
}

func wantEqual(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: got %#v, want %#v", what, got, want)
	}
}
