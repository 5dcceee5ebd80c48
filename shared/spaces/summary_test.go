package spaces_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

func summaryOf(t *testing.T, st *servertest.Stack, token, target string) (hierarchyRoom, servertest.Reply) {
	t.Helper()
	r := st.Do(t, "GET", "/_matrix/client/v1/room_summary/"+url.PathEscape(target)+"?via=example.org", token, nil)
	var out hierarchyRoom
	if r.Status == http.StatusOK {
		if err := json.Unmarshal(r.Raw, &out); err != nil {
			t.Fatalf("room summary: %v: %s", err, r.Raw)
		}
	}
	return out, r
}

func stateEvent(typ event.Type, content map[string]any) *event.Event {
	return &event.Event{Type: typ, StateKey: ptr(""), Content: event.Content{Raw: content}}
}

// TestRoomSummary: the summary of a room the caller may see, by ID or
// alias, with or without an access token; 404 for a room they may not see
// or that does not exist, as the spec names.
func TestRoomSummary(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	bob := st.Member(t, "bob")
	carol := st.Member(t, "carol")
	public := create(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Public", Topic: "open to all", RoomAliasName: "pub",
		InitialState: []*event.Event{stateEvent(event.StateEncryption, map[string]any{"algorithm": "m.megolm.v1.aes-sha2"})}})
	private := create(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Private", RoomAliasName: "priv"})
	readable := create(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Readable",
		InitialState: []*event.Event{stateEvent(event.StateHistoryVisibility, map[string]any{"history_visibility": "world_readable"})}})
	knock := create(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Knock",
		InitialState: []*event.Event{stateEvent(event.StateJoinRules, map[string]any{"join_rule": "knock"})}})
	space := create(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Space", CreationContent: map[string]any{"type": "m.space"}})
	restricted := create(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Restricted",
		InitialState: []*event.Event{stateEvent(event.StateJoinRules, map[string]any{
			"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": space}},
		})}})
	if _, err := alice.InviteUser(bg, private, &mautrix.ReqInviteUser{UserID: id.UserID(carol.ID)}); err != nil {
		t.Fatal(err)
	}

	got, r := summaryOf(t, st, bob.User.AccessToken, string(public))
	if r.Status != http.StatusOK {
		t.Fatalf("summary of a public room: %d %s", r.Status, r.Raw)
	}
	wantEqual(t, "public room", got.fields(), []any{string(public), "Public", "open to all", "#pub:example.org", 1, "public", false, false, "", "m.megolm.v1.aes-sha2", "12", []string(nil), "leave"})
	if _, ok := r.Body["children_state"]; ok {
		t.Errorf("summary with children_state: %s", r.Raw)
	}
	got, r = summaryOf(t, st, bob.User.AccessToken, "#pub:example.org")
	wantEqual(t, "public room by alias", []any{r.Status, got.RoomID}, []any{http.StatusOK, string(public)})

	// Through mautrix: it asks the unstable path of servers that
	// advertise no v1.15, this one included.
	sum, err := bob.GetRoomSummary(bg, "#pub:example.org", "example.org")
	if err != nil {
		t.Fatal(err)
	}
	wantEqual(t, "summary through mautrix", []any{sum.RoomID, sum.Name, sum.Membership, sum.RoomVersion, sum.Encryption},
		[]any{public, "Public", event.MembershipLeave, id.RoomVersion("12"), id.AlgorithmMegolmV1})
	r = st.Do(t, "GET", "/_matrix/client/unstable/im.nheko.summary/rooms/"+url.PathEscape(string(public))+"/summary", bob.User.AccessToken, nil)
	wantEqual(t, "the older unstable path", []any{r.Status, r.Body["room_id"]}, []any{http.StatusOK, string(public)})

	for _, tc := range []struct {
		name           string
		token          string
		room           id.RoomID
		membership     string // "" for 404
		worldReadable  bool
		allowedRoomIDs []string
	}{
		{"private, to its creator", alice.User.AccessToken, private, "join", false, nil},
		{"private, to an invitee", carol.User.AccessToken, private, "invite", false, nil},
		{"private, to another user", bob.User.AccessToken, private, "", false, nil},
		{"private, anonymous", "", private, "", false, nil},
		{"public, anonymous", "", public, "-", false, nil},
		{"world readable, to another user", bob.User.AccessToken, readable, "leave", true, nil},
		{"world readable, anonymous", "", readable, "-", true, nil},
		{"knock, to another user", bob.User.AccessToken, knock, "leave", false, nil},
		{"restricted, to one outside the space", bob.User.AccessToken, restricted, "", false, nil},
		{"restricted, to its creator", alice.User.AccessToken, restricted, "join", false, []string{string(space)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, r := summaryOf(t, st, tc.token, string(tc.room))
			if tc.membership == "" {
				wantError(t, tc.name, r, http.StatusNotFound, "M_NOT_FOUND")
				return
			}
			if r.Status != http.StatusOK {
				t.Fatalf("%d %s", r.Status, r.Raw)
			}
			want := tc.membership
			if want == "-" {
				want = "" // anonymous: no membership
			}
			wantEqual(t, "room, membership, world_readable, allowed_room_ids",
				[]any{got.RoomID, got.Membership, got.WorldReadable, got.AllowedRoomIDs},
				[]any{string(tc.room), want, tc.worldReadable, tc.allowedRoomIDs})
		})
	}

	// Once bob is in the space, the restricted room is his to see.
	if _, err := alice.InviteUser(bg, space, &mautrix.ReqInviteUser{UserID: id.UserID(bob.ID)}); err != nil {
		t.Fatal(err)
	}
	_, r = summaryOf(t, st, bob.User.AccessToken, string(restricted))
	wantError(t, "restricted, to one invited to the space", r, http.StatusNotFound, "M_NOT_FOUND")
	if _, err := bob.JoinRoomByID(bg, space); err != nil {
		t.Fatal(err)
	}
	got, r = summaryOf(t, st, bob.User.AccessToken, string(restricted))
	wantEqual(t, "restricted, to a member of the space", []any{r.Status, got.JoinRule, got.AllowedRoomIDs, got.Membership},
		[]any{http.StatusOK, "restricted", []string{string(space)}, "leave"})

	for _, tc := range []struct {
		name, target string
		status       int
		code         string
	}{
		{"unknown room", "!nosuchroom:example.org", http.StatusNotFound, "M_NOT_FOUND"},
		{"room of another server", "!elsewhere:elsewhere.org", http.StatusNotFound, "M_NOT_FOUND"},
		{"unknown alias", "#nosuch:example.org", http.StatusNotFound, "M_NOT_FOUND"},
		{"private room by alias", "#priv:example.org", http.StatusNotFound, "M_NOT_FOUND"},
		{"invalid alias", "#nocolon", http.StatusBadRequest, "M_INVALID_PARAM"},
		{"neither ID nor alias", "room", http.StatusBadRequest, "M_INVALID_PARAM"},
	} {
		_, r := summaryOf(t, st, bob.User.AccessToken, tc.target)
		wantError(t, tc.name, r, tc.status, tc.code)
	}
	_, r = summaryOf(t, st, "not-a-token", string(public))
	wantError(t, "unknown access token", r, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
}

// fields lists what TestRoomSummary checks of a summary, in order.
func (r hierarchyRoom) fields() []any {
	return []any{r.RoomID, r.Name, r.Topic, r.CanonicalAlias, r.Joined, r.JoinRule, r.WorldReadable,
		r.GuestCanJoin, r.RoomType, r.Encryption, r.RoomVersion, r.AllowedRoomIDs, r.Membership}
}
