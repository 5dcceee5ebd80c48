package rooms_test

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

func createRoom(t *testing.T, st *servertest.Stack, u servertest.User, body map[string]any) string {
	t.Helper()
	r := st.Do(t, "POST", "/_matrix/client/v3/createRoom", u.AccessToken, body)
	id, _ := r.Body["room_id"].(string)
	if r.Status != http.StatusOK || id == "" {
		t.Fatalf("createRoom: %d %s", r.Status, r.Raw)
	}
	return id
}

func send(t *testing.T, st *servertest.Stack, u servertest.User, room, txn, body string) string {
	t.Helper()
	r := st.Do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/send/m.room.message/"+txn, u.AccessToken,
		map[string]any{"msgtype": "m.text", "body": body})
	id, _ := r.Body["event_id"].(string)
	if r.Status != http.StatusOK || id == "" {
		t.Fatalf("send: %d %s", r.Status, r.Raw)
	}
	return id
}

func TestSmoke(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Register(t, "alice")
	room := createRoom(t, st, alice, map[string]any{"preset": "private_chat", "name": "Hello"})
	id := send(t, st, alice, room, "t1", "hi")
	if again := send(t, st, alice, room, "t1", "hi"); again != id {
		t.Fatalf("same txn gave %s then %s", id, again)
	}
	r := st.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?dir=b&limit=100", alice.AccessToken, nil)
	chunk, _ := r.Body["chunk"].([]any)
	if r.Status != 200 || len(chunk) < 8 {
		t.Fatalf("messages: %d %s", r.Status, r.Raw)
	}
	fmt.Println(string(r.Raw)[:400])
}
