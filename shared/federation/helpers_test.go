package federation_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// Setups the two-server and Dendrite tests share.

// twoServers starts A and B, named by their federation listeners, with
// their queues running; env goes to both.
func twoServers(t *testing.T, env ...string) (a, b *servertest.Stack) {
	t.Helper()
	a, _ = servertest.StartNamed(t, env...)
	a.RunQueue(t)
	b, _ = servertest.StartNamed(t, env...)
	b.RunQueue(t)
	return a, b
}

// withDendrite starts a Cirrus server, named, with its queue running, and
// a Dendrite 0.13.8 beside it.
func withDendrite(t *testing.T) (*servertest.Stack, *servertest.Dendrite) {
	t.Helper()
	st, _ := servertest.StartNamed(t)
	st.RunQueue(t)
	return st, servertest.StartDendrite(t, nil)
}

// dendriteUser registers user on d: its access token, and do, a request
// of the user's to Dendrite that must answer 200 with a JSON object.
func dendriteUser(t *testing.T, d *servertest.Dendrite, user string) (token string, do func(method, path string, body any) map[string]any) {
	t.Helper()
	token = d.Register(t, user, "correct horse battery staple")
	return token, func(method, path string, body any) map[string]any {
		t.Helper()
		return dendriteDo(t, d, token, method, path, body)
	}
}

// dendriteDo is a request to Dendrite with token, which must answer 200
// with a JSON object.
func dendriteDo(t *testing.T, d *servertest.Dendrite, token, method, path string, body any) map[string]any {
	t.Helper()
	status, raw := d.Do(t, method, path, token, body)
	var out map[string]any
	if status != http.StatusOK || json.Unmarshal([]byte(raw), &out) != nil {
		t.Fatalf("Dendrite %s %s: %d %s\n%s", method, path, status, raw, d.LogTail())
	}
	return out
}

// publicRoom is a new public version 12 room of c's.
func publicRoom(t *testing.T, c servertest.Member) id.RoomID {
	t.Helper()
	created, err := c.CreateRoom(background, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "12"})
	if err != nil {
		t.Fatal(err)
	}
	return created.RoomID
}

// joinVia joins c to room through server.
func joinVia(t *testing.T, c servertest.Member, room id.RoomID, server string) {
	t.Helper()
	if _, err := c.JoinRoom(background, string(room), &mautrix.ReqJoinRoom{Via: []string{server}}); err != nil {
		t.Fatalf("%s joins through %s: %v", c.UserID, server, err)
	}
}

// publicRoomTip creates a public room of alice's on fs and returns what a
// remote event in it builds on: the room, its version, its current state
// and its forward extremities with their depth.
func (fs *fedStack) publicRoomTip(t *testing.T) (room, version string, state *events.State, ext []string, depth int64) {
	t.Helper()
	r := fs.Do(t, "POST", "/_matrix/client/v3/createRoom", fs.Alice.AccessToken, map[string]any{"preset": "public_chat"})
	room, _ = r.Body["room_id"].(string)
	if r.Status != http.StatusOK {
		t.Fatalf("createRoom: %d %s", r.Status, r.Raw)
	}
	info, err := fs.Server.Rooms.Info(background, room)
	if err != nil {
		t.Fatal(err)
	}
	current, err := fs.Server.Rooms.CurrentState(background, room)
	if err != nil {
		t.Fatal(err)
	}
	if state, err = events.NewState(current); err != nil {
		t.Fatal(err)
	}
	if ext, depth, err = fs.Server.Rooms.Extremities(background, room); err != nil {
		t.Fatal(err)
	}
	return room, info.Version, state, ext, depth
}

// timelineOf is the timeline of room, a joined room, in a /sync answer:
// its events.
func timelineOf(sync map[string]any, room string) []map[string]any {
	rooms, _ := sync["rooms"].(map[string]any)
	join, _ := rooms["join"].(map[string]any)
	r, _ := join[room].(map[string]any)
	tl, _ := r["timeline"].(map[string]any)
	evs, _ := tl["events"].([]any)
	out := make([]map[string]any, 0, len(evs))
	for _, e := range evs {
		ev, _ := e.(map[string]any)
		out = append(out, ev)
	}
	return out
}
