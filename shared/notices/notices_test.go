package notices_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/notices"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

const (
	sendPath = "/_synapse/admin/v1/send_server_notice"
	notifier = "@notices:example.org"
)

// configured is a server_notices block, through the environment.
var configured = []string{
	"CIRRUS_SERVER_NOTICES_SYSTEM_MXID_LOCALPART=notices",
	"CIRRUS_SERVER_NOTICES_SYSTEM_MXID_DISPLAY_NAME=Server Notices Bot",
	"CIRRUS_SERVER_NOTICES_ROOM_NAME=Notes from the admins",
	"CIRRUS_SERVER_NOTICES_ROOM_TOPIC=Read me",
	"CIRRUS_SERVER_NOTICES_ROOM_AVATAR_URL=mxc://example.org/room",
}

// admin makes a server admin with a logged-in device.
func admin(t *testing.T, st *servertest.Stack) accounts.Session {
	t.Helper()
	sess, err := st.Server.Accounts.Register(context.Background(), accounts.NewUser{Localpart: "root", Password: "pw", Admin: true})
	if err != nil {
		t.Fatal(err)
	}
	return sess
}

func notice(userID, body string) map[string]any {
	return map[string]any{"user_id": userID, "content": map[string]any{"msgtype": "m.text", "body": body}}
}

// send sends a notice as root and returns its event ID.
func send(t *testing.T, st *servertest.Stack, method, path, token string, body any) string {
	t.Helper()
	r := st.Do(t, method, path, token, body)
	id, _ := r.Body["event_id"].(string)
	if r.Status != 200 || !strings.HasPrefix(id, "$") {
		t.Fatalf("%s %s: %d %s", method, path, r.Status, r.Raw)
	}
	return id
}

// bodies lists the notices (messages of the notices user) of a timeline.
func bodies(evs []*event.Event) []string {
	var out []string
	for _, ev := range evs {
		if ev.Type == event.EventMessage && ev.Sender == notifier {
			out = append(out, ev.Content.Raw["body"].(string))
		}
	}
	return out
}

func state(evs []*event.Event, typ event.Type) map[string]any {
	for _, ev := range evs {
		if ev.Type == typ {
			return ev.Content.Raw
		}
	}
	return nil
}

// tagged reports whether the room's account data in a sync tags it
// m.server_notice.
func tagged(t *testing.T, evs []*event.Event) bool {
	t.Helper()
	for _, ev := range evs {
		if ev.Type.Type != "m.tag" {
			continue
		}
		var tags struct {
			Tags map[string]json.RawMessage `json:"tags"`
		}
		if err := json.Unmarshal(ev.Content.VeryRaw, &tags); err != nil {
			t.Fatal(err)
		}
		_, ok := tags.Tags["m.server_notice"]
		return ok
	}
	return false
}

// TestServerNotices drives the admin API and a user's real client: the
// first notice invites the user into a new room named as configured, the
// notice is there once they join, with the room tagged m.server_notice;
// later notices go to the same room; a transaction ID sends once; the user
// cannot speak in the room; leaving it gets a new room with the next notice.
func TestServerNotices(t *testing.T) {
	st := servertest.Start(t, configured...)
	ctx := context.Background()
	root := admin(t, st)
	alice := st.Member(t, "alice")

	first := send(t, st, "POST", sendPath, root.AccessToken, notice(alice.User.ID, "first"))
	c := st.LastRequestTo(t, "send_server_notice").DynamoDB
	t.Logf("the first notice, which makes the room: %d calls, %.1f RCU, %.1f WCU", c.Calls, c.ReadUnits, c.WriteUnits)
	sync1, err := alice.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	if len(sync1.Rooms.Invite) != 1 || len(sync1.Rooms.Join) != 0 {
		t.Fatalf("after the first notice: invited to %d rooms, joined %d; want an invite alone", len(sync1.Rooms.Invite), len(sync1.Rooms.Join))
	}
	var room id.RoomID
	for r, inv := range sync1.Rooms.Invite {
		room = r
		if name := state(inv.State.Events, event.StateRoomName); name["name"] != "Notes from the admins" {
			t.Errorf("invite state name %v, want the configured room_name", name)
		}
		for _, ev := range inv.State.Events {
			if ev.Type == event.StateMember && ev.GetStateKey() == alice.User.ID && ev.Sender != notifier {
				t.Errorf("invited by %s, want %s", ev.Sender, notifier)
			}
		}
	}
	if _, err := alice.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}

	second := send(t, st, "POST", sendPath, root.AccessToken, notice(alice.User.ID, "second"))
	st.CheckCost(t, "a notice into the existing room", "send_server_notice", servertest.Want(8, 5, 5))
	sync2, err := alice.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	j, ok := sync2.Rooms.Join[room]
	if !ok || len(sync2.Rooms.Join) != 1 {
		t.Fatalf("joined rooms %v, want %s alone", sync2.Rooms.Join, room)
	}
	if got := strings.Join(bodies(j.Timeline.Events), ","); got != "first,second" {
		t.Errorf("notices in the room: %q, want first,second", got)
	}
	var ids []id.EventID
	for _, ev := range j.Timeline.Events {
		if ev.Sender == notifier && ev.Type == event.EventMessage {
			ids = append(ids, ev.ID)
		}
	}
	if len(ids) != 2 || string(ids[0]) != first || string(ids[1]) != second {
		t.Errorf("notice event IDs %v, want %s, %s", ids, first, second)
	}
	if !tagged(t, j.AccountData.Events) {
		t.Errorf("the room is not tagged m.server_notice: %v", j.AccountData.Events)
	}
	all := append(j.State.Events, j.Timeline.Events...)
	if topic := state(all, event.StateTopic); topic["topic"] != "Read me" {
		t.Errorf("topic %v", topic)
	}
	if avatar := state(all, event.StateRoomAvatar); avatar["url"] != "mxc://example.org/room" {
		t.Errorf("room avatar %v", avatar)
	}
	for _, ev := range all {
		if ev.Type == event.StateMember && ev.GetStateKey() == notifier && ev.Content.Raw["displayname"] != "Server Notices Bot" {
			t.Errorf("notices user's member event %v, want the configured display name", ev.Content.Raw)
		}
	}

	t.Run("UserCannotSend", func(t *testing.T) {
		_, err := alice.SendText(ctx, room, "may I?")
		if !errors.Is(err, mautrix.MForbidden) {
			t.Fatalf("the user sends into the notices room: %v, want M_FORBIDDEN", err)
		}
	})
	t.Run("TxnIDSendsOnce", func(t *testing.T) {
		a := send(t, st, "PUT", sendPath+"/t1", root.AccessToken, notice(alice.User.ID, "third"))
		b := send(t, st, "PUT", sendPath+"/t1", root.AccessToken, notice(alice.User.ID, "third"))
		if a != b {
			t.Fatalf("the same transaction ID gave %s then %s", a, b)
		}
		c := send(t, st, "PUT", sendPath+"/t2", root.AccessToken, notice(alice.User.ID, "fourth"))
		if c == a {
			t.Fatalf("another transaction ID gave the same event %s", c)
		}
		msgs, err := alice.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatal(err)
		}
		got := bodies(msgs.Chunk)
		if strings.Join(got, ",") != "fourth,third,second,first" {
			t.Fatalf("notices in the room, newest first: %v", got)
		}
	})
	t.Run("NotAdmin", func(t *testing.T) {
		r := st.Do(t, "POST", sendPath, alice.User.AccessToken, notice(alice.User.ID, "from alice"))
		if r.Status != 403 || r.Body["errcode"] != "M_FORBIDDEN" {
			t.Fatalf("a notice from a non-admin: %d %s", r.Status, r.Raw)
		}
		r = st.Do(t, "PUT", sendPath+"/x", alice.User.AccessToken, notice(alice.User.ID, "from alice"))
		if r.Status != 403 || r.Body["errcode"] != "M_FORBIDDEN" {
			t.Fatalf("a PUT notice from a non-admin: %d %s", r.Status, r.Raw)
		}
	})
	t.Run("BadRequests", func(t *testing.T) {
		for _, tc := range []struct {
			name    string
			body    any
			status  int
			errcode string
		}{
			{"RemoteUser", notice("@bob:elsewhere.example", "hi"), 400, "M_UNKNOWN"},
			{"UnknownUser", notice("@nobody:example.org", "hi"), 404, "M_NOT_FOUND"},
			{"InvalidUserID", notice("bob", "hi"), 400, "M_INVALID_PARAM"},
			{"NoContent", map[string]any{"user_id": alice.User.ID}, 400, "M_MISSING_PARAM"},
			{"NoUserID", map[string]any{"content": map[string]any{"body": "x"}}, 400, "M_MISSING_PARAM"},
			{"ContentNotObject", map[string]any{"user_id": alice.User.ID, "content": "text"}, 400, "M_BAD_JSON"},
			{"NotJSON", `{"user_id":`, 400, "M_NOT_JSON"},
			{"NoticesUserItself", notice(notifier, "hi"), 400, "M_INVALID_PARAM"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := st.Do(t, "POST", sendPath, root.AccessToken, tc.body)
				if r.Status != tc.status || r.Body["errcode"] != tc.errcode {
					t.Fatalf("got %d %s, want %d %s", r.Status, r.Raw, tc.status, tc.errcode)
				}
			})
		}
	})
	t.Run("NoticesUserCannotLogIn", func(t *testing.T) {
		r := st.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{
			"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "notices"}, "password": "anything",
		})
		if r.Status != 403 || r.Body["errcode"] != "M_FORBIDDEN" {
			t.Fatalf("login as the notices user: %d %s", r.Status, r.Raw)
		}
	})
	t.Run("NewRoomAfterLeaving", func(t *testing.T) {
		if _, err := alice.LeaveRoom(ctx, room); err != nil {
			t.Fatal(err)
		}
		send(t, st, "POST", sendPath, root.AccessToken, notice(alice.User.ID, "after leaving"))
		s, err := alice.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Rooms.Invite) != 1 {
			t.Fatalf("after leaving: invited to %d rooms, want 1", len(s.Rooms.Invite))
		}
		for r := range s.Rooms.Invite {
			if r == room {
				t.Fatalf("invited again to the room left, %s, want a new one", r)
			}
		}
	})
}

// TestServerNotices_AutoJoin: with auto_join, the user is in the room at
// once and their first sync has the notice, the tag and the room's name.
func TestServerNotices_AutoJoin(t *testing.T) {
	st := servertest.Start(t, append(configured, "CIRRUS_SERVER_NOTICES_AUTO_JOIN=true")...)
	ctx := context.Background()
	root := admin(t, st)
	bob := st.Member(t, "bob")
	ev := send(t, st, "PUT", sendPath+"/once", root.AccessToken, notice(bob.User.ID, "welcome"))
	s, err := bob.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Rooms.Join) != 1 || len(s.Rooms.Invite) != 0 {
		t.Fatalf("joined %d rooms, invited to %d; want one joined", len(s.Rooms.Join), len(s.Rooms.Invite))
	}
	for _, j := range s.Rooms.Join {
		if got := bodies(j.Timeline.Events); len(got) != 1 || got[0] != "welcome" || j.Timeline.Events[len(j.Timeline.Events)-1].ID != id.EventID(ev) {
			t.Errorf("timeline notices %v, want welcome (%s) last", got, ev)
		}
		if name := state(append(j.State.Events, j.Timeline.Events...), event.StateRoomName); name["name"] != "Notes from the admins" {
			t.Errorf("room name %v", name)
		}
		if !tagged(t, j.AccountData.Events) {
			t.Errorf("not tagged m.server_notice: %v", j.AccountData.Events)
		}
	}
}

// TestServerNotices_Disabled: without server_notices, Synapse's 400.
func TestServerNotices_Disabled(t *testing.T) {
	st := servertest.Start(t)
	root := admin(t, st)
	carol := st.Register(t, "carol")
	for _, path := range []string{sendPath, sendPath + "/t"} {
		method := map[bool]string{true: "POST", false: "PUT"}[path == sendPath]
		r := st.Do(t, method, path, root.AccessToken, notice(carol.ID, "hi"))
		if r.Status != 400 || r.Body["error"] != "Server notices are not enabled on this server" {
			t.Fatalf("%s %s unconfigured: %d %s", method, path, r.Status, r.Raw)
		}
	}
	// Nothing was made: no notices account, no room for carol.
	if ok, err := st.Server.Accounts.Exists(context.Background(), notifier); err != nil || ok {
		t.Fatalf("notices account exists: %v %v", ok, err)
	}
	if r := st.Do(t, "GET", "/_matrix/client/v3/joined_rooms", carol.AccessToken, nil); !strings.Contains(string(r.Raw), `"joined_rooms":[]`) {
		t.Fatalf("carol's rooms: %s", r.Raw)
	}
}

// TestServerNotices_ConfigChanged: a notice after the operator changed the
// room's name, topic or the notices user's name brings the user's existing
// room up to date, as Synapse does, before the notice goes in.
func TestServerNotices_ConfigChanged(t *testing.T) {
	st := servertest.Start(t, configured...)
	ctx := context.Background()
	root := admin(t, st)
	dave := st.Member(t, "dave")
	send(t, st, "POST", sendPath, root.AccessToken, notice(dave.User.ID, "before"))
	s1, err := dave.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	var room id.RoomID
	for r := range s1.Rooms.Invite {
		room = r
	}
	if _, err := dave.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}

	changed := *st.Server.Config.ServerNotices
	changed.RoomName, changed.RoomTopic, changed.SystemMxidDisplayName = "Renamed", "", "The Admins"
	srv := st.Server
	svc := &notices.Service{Store: srv.Store, Rooms: srv.Rooms, Accounts: srv.Accounts, AccountData: srv.AccountData,
		Profiles: srv.Profiles, ServerName: srv.Config.ServerName, Config: &changed}
	if _, err := svc.Send(ctx, notices.Origin{AdminID: root.UserID}, notices.Notice{UserID: dave.User.ID,
		Content: json.RawMessage(`{"msgtype":"m.text","body":"after"}`)}); err != nil {
		t.Fatal(err)
	}
	s2, err := dave.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	j, ok := s2.Rooms.Join[room]
	if !ok || len(s2.Rooms.Join) != 1 {
		t.Fatalf("joined rooms %v, want %s alone", s2.Rooms.Join, room)
	}
	all := append(j.State.Events, j.Timeline.Events...)
	if got := bodies(j.Timeline.Events); strings.Join(got, ",") != "before,after" {
		t.Errorf("notices %v", got)
	}
	// The state last in the list is the current one.
	var name, topic, member map[string]any
	for _, ev := range all {
		switch {
		case ev.Type == event.StateRoomName:
			name = ev.Content.Raw
		case ev.Type == event.StateTopic:
			topic = ev.Content.Raw
		case ev.Type == event.StateMember && ev.GetStateKey() == notifier:
			member = ev.Content.Raw
		}
	}
	if name["name"] != "Renamed" || topic["topic"] != "" || member["displayname"] != "The Admins" {
		t.Errorf("after the change: name %v, topic %v, notices user %v", name, topic, member)
	}
}
