package userdir_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

const searchRoute = "POST /_matrix/client/v3/user_directory/search"

// found searches as m and returns the user IDs found, in order, and limited.
func found(t *testing.T, m servertest.Member, term string, limit int) ([]string, bool) {
	t.Helper()
	res, err := m.SearchUserDirectory(context.Background(), term, limit)
	if err != nil {
		t.Fatalf("%s searches %q: %v", m.ID, term, err)
	}
	var ids []string
	for _, r := range res.Results {
		ids = append(ids, string(r.UserID))
	}
	return ids, res.Limited
}

func wantFound(t *testing.T, m servertest.Member, term string, want ...string) {
	t.Helper()
	got, limited := found(t, m, term, 10)
	if !slices.Equal(got, want) || limited {
		t.Errorf("%s searches %q: got %v (limited %v), want %v", m.ID, term, got, limited, want)
	}
}

func createRoom(t *testing.T, m servertest.Member, preset string, invite ...servertest.Member) id.RoomID {
	t.Helper()
	ctx := context.Background()
	r, err := m.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: preset})
	if err != nil {
		t.Fatalf("%s creates a %s room: %v", m.ID, preset, err)
	}
	for _, o := range invite {
		if preset != "public_chat" {
			if _, err := m.InviteUser(ctx, r.RoomID, &mautrix.ReqInviteUser{UserID: id.UserID(o.ID)}); err != nil {
				t.Fatalf("invite %s: %v", o.ID, err)
			}
		}
		if _, err := o.JoinRoomByID(ctx, r.RoomID); err != nil {
			t.Fatalf("%s joins: %v", o.ID, err)
		}
	}
	return r.RoomID
}

func setName(t *testing.T, m servertest.Member, name string) {
	t.Helper()
	if err := m.SetDisplayName(context.Background(), name); err != nil {
		t.Fatalf("%s sets display name %q: %v", m.ID, name, err)
	}
}

func TestSearch_SharedRoom(t *testing.T) {
	st := servertest.Start(t)
	alice, bob, carol := st.Member(t, "alice"), st.Member(t, "bob"), st.Member(t, "carol")
	setName(t, bob, "Robert Tables")
	setName(t, carol, "Robert Carol")
	createRoom(t, alice, "private_chat", bob)

	t.Run("LocalpartPrefix", func(t *testing.T) { wantFound(t, alice, "BO", bob.ID) })
	t.Run("DisplayNameWord", func(t *testing.T) { wantFound(t, alice, "tab", bob.ID) })
	t.Run("DisplayNameCaseInsensitive", func(t *testing.T) { wantFound(t, alice, "ROBERT", bob.ID) })
	t.Run("AllWordsMustMatch", func(t *testing.T) {
		wantFound(t, alice, "robert tables", bob.ID)
		wantFound(t, alice, "robert chairs")
	})
	t.Run("FullUserID", func(t *testing.T) {
		wantFound(t, alice, bob.ID, bob.ID)
		wantFound(t, alice, "@bob:example.org", bob.ID)
		wantFound(t, alice, "@bob:other.org")
	})
	t.Run("NoSharedRoom", func(t *testing.T) { wantFound(t, alice, "carol") })
	t.Run("SearcherNotInPublicRoom", func(t *testing.T) { wantFound(t, alice, "alice") })
	t.Run("Symmetric", func(t *testing.T) { wantFound(t, bob, "ali", alice.ID) })

	// Carol joins a public room: everyone finds her, and she finds herself.
	createRoom(t, carol, "public_chat")
	t.Run("PublicRoom", func(t *testing.T) {
		wantFound(t, alice, "carol", carol.ID)
		wantFound(t, bob, "car", carol.ID)
		wantFound(t, carol, "carol", carol.ID)
	})
	t.Run("BestMatchFirst", func(t *testing.T) {
		// Both are Robert; only bob is "bob" whole.
		wantFound(t, alice, "robert", bob.ID, carol.ID)
		wantFound(t, alice, "robert carol", carol.ID)
		wantFound(t, alice, "robert ta", bob.ID)
	})
}

func TestSearch_DisplayNameChange(t *testing.T) {
	st := servertest.Start(t)
	alice, bob := st.Member(t, "alice"), st.Member(t, "bob")
	createRoom(t, alice, "private_chat", bob)
	setName(t, bob, "Zebedee Quux")
	wantFound(t, alice, "zebedee", bob.ID)

	setName(t, bob, "Xavier Quux")
	wantFound(t, alice, "xav", bob.ID)
	wantFound(t, alice, "quux", bob.ID)
	wantFound(t, alice, "zebedee")

	res, err := alice.SearchUserDirectory(context.Background(), "xavier", 10)
	if err != nil {
		t.Fatal(err)
	}
	// mautrix v0.32 reads "displayname" into DisplayName; the spec's
	// display_name lands in Extra.
	if len(res.Results) != 1 || res.Results[0].Extra["display_name"] != "Xavier Quux" {
		t.Errorf("results %+v, want bob with display name Xavier Quux", res.Results)
	}

	// An avatar change keeps the names and shows the avatar.
	if err := bob.SetAvatarURL(context.Background(), id.ContentURI{Homeserver: "example.org", FileID: "abc"}); err != nil {
		t.Fatal(err)
	}
	res, err = alice.SearchUserDirectory(context.Background(), "xavier", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Results) != 1 || res.Results[0].AvatarURL.String() != "mxc://example.org/abc" {
		t.Errorf("results %+v, want bob with avatar mxc://example.org/abc", res.Results)
	}

	// Unset, the display name no longer finds bob; his localpart still does.
	setName(t, bob, "")
	wantFound(t, alice, "xavier")
	wantFound(t, alice, "bob", bob.ID)
}

func TestSearch_Limited(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	var others []servertest.Member
	var want []string
	for i := range 4 {
		m := st.Member(t, fmt.Sprintf("user%d", i))
		others = append(others, m)
		want = append(want, m.ID)
	}
	createRoom(t, alice, "private_chat", others...)

	got, limited := found(t, alice, "user", 3)
	if !slices.Equal(got, want[:3]) || !limited {
		t.Errorf("limit 3: got %v limited %v, want %v limited true", got, limited, want[:3])
	}
	got, limited = found(t, alice, "user", 4)
	if !slices.Equal(got, want) || limited {
		t.Errorf("limit 4: got %v limited %v, want %v limited false", got, limited, want)
	}
	// No limit is the spec's 10.
	r := st.Do(t, "POST", "/_matrix/client/v3/user_directory/search", alice.User.AccessToken, map[string]any{"search_term": "user"})
	if r.Status != http.StatusOK || len(r.Body["results"].([]any)) != 4 || r.Body["limited"] != false {
		t.Errorf("no limit: %d %s", r.Status, r.Raw)
	}
	// The legacy r0 path is the same endpoint.
	r = st.Do(t, "POST", "/_matrix/client/r0/user_directory/search", alice.User.AccessToken, map[string]any{"search_term": "user0"})
	if r.Status != http.StatusOK || len(r.Body["results"].([]any)) != 1 {
		t.Errorf("r0: %d %s", r.Status, r.Raw)
	}
}

func TestSearch_SearchAllUsers(t *testing.T) {
	st := servertest.Start(t, "CIRRUS_USER_DIRECTORY_SEARCH_ALL_USERS=true")
	alice, bob, carol := st.Member(t, "alice"), st.Member(t, "bob"), st.Member(t, "carol")
	setName(t, carol, "Alice's friend Carol")
	// No shared room, no public room: everyone but the searcher.
	wantFound(t, alice, "carol", carol.ID)
	wantFound(t, bob, "ali", alice.ID, carol.ID)
	wantFound(t, alice, "alice", carol.ID)
	// The auth read and one index Query: no room is read.
	st.CheckCost(t, "search of all users", searchRoute, servertest.Want(2, 1.5, 0))
}

func TestSearch_Deactivated(t *testing.T) {
	st := servertest.Start(t)
	alice, bob := st.Member(t, "alice"), st.Member(t, "bob")
	room := createRoom(t, alice, "public_chat", bob)
	wantFound(t, alice, "bob", bob.ID)

	r := st.Do(t, "POST", "/_matrix/client/v3/account/deactivate", bob.User.AccessToken, map[string]any{
		"auth": map[string]any{"type": "m.login.password", "password": "correct horse battery staple",
			"identifier": map[string]any{"type": "m.id.user", "user": bob.ID}},
	})
	if r.Status != http.StatusOK {
		t.Fatalf("deactivate: %d %s", r.Status, r.Raw)
	}
	wantFound(t, alice, "bob")
	// Still joined to the public room, yet never found; and a profile
	// change by an admin does not bring bob back.
	if ms, err := st.Server.Rooms.Membership(context.Background(), bob.ID, room.String()); err != nil || ms != "join" {
		t.Fatalf("bob's membership: %q %v, want join", ms, err)
	}
	if err := st.Server.Profiles.SetDisplayName(context.Background(), bob.ID, "Bob Again"); err != nil {
		t.Fatal(err)
	}
	wantFound(t, alice, "bob")
	wantFound(t, alice, "again")

	// Reactivated by an admin, bob is found again, by his current name.
	ctx := context.Background()
	if _, err := st.Server.Accounts.Register(ctx, accounts.NewUser{Localpart: "admin", Password: "secret password", Admin: true}); err != nil {
		t.Fatal(err)
	}
	admin := st.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": "admin"}, "password": "secret password"})
	token, _ := admin.Body["access_token"].(string)
	r = st.Do(t, "PUT", "/_synapse/admin/v2/users/"+bob.ID, token, map[string]any{"deactivated": false, "password": "new password"})
	if r.Status != http.StatusOK {
		t.Fatalf("reactivate: %d %s", r.Status, r.Raw)
	}
	wantFound(t, alice, "again", bob.ID)
}

func TestSearch_BadRequests(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	for _, tc := range []struct {
		name   string
		body   any
		status int
		code   string
	}{
		{"NoSearchTerm", map[string]any{"limit": 3}, 400, "M_MISSING_PARAM"},
		{"NullSearchTerm", map[string]any{"search_term": nil}, 400, "M_MISSING_PARAM"},
		{"NumberSearchTerm", map[string]any{"search_term": 3}, 400, "M_BAD_JSON"},
		{"StringLimit", map[string]any{"search_term": "a", "limit": "3"}, 400, "M_BAD_JSON"},
		{"FractionLimit", map[string]any{"search_term": "a", "limit": 1.5}, 400, "M_BAD_JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := st.Do(t, "POST", "/_matrix/client/v3/user_directory/search", alice.User.AccessToken, tc.body)
			if r.Status != tc.status || r.Body["errcode"] != tc.code {
				t.Errorf("%v: %d %s, want %d %s", tc.body, r.Status, r.Raw, tc.status, tc.code)
			}
		})
	}
	t.Run("NoToken", func(t *testing.T) {
		r := st.Do(t, "POST", "/_matrix/client/v3/user_directory/search", "", map[string]any{"search_term": "a"})
		if r.Status != http.StatusUnauthorized || r.Body["errcode"] != "M_MISSING_TOKEN" {
			t.Errorf("%d %s, want 401 M_MISSING_TOKEN", r.Status, r.Raw)
		}
	})
	t.Run("WordlessTerm", func(t *testing.T) { wantFound(t, alice, " @: ") })
	t.Run("HugeLimitAndWord", func(t *testing.T) {
		long := make([]byte, 2000)
		for i := range long {
			long[i] = 'a'
		}
		r := st.Do(t, "POST", "/_matrix/client/v3/user_directory/search", alice.User.AccessToken,
			map[string]any{"search_term": string(long), "limit": 1e9})
		if r.Status != http.StatusOK {
			t.Errorf("%d %s, want 200", r.Status, r.Raw)
		}
	})
}

func TestSearch_Disabled(t *testing.T) {
	st := servertest.Start(t, "CIRRUS_USER_DIRECTORY_ENABLED=false")
	alice, bob := st.Member(t, "alice"), st.Member(t, "bob")
	createRoom(t, alice, "public_chat", bob)
	wantFound(t, alice, "bob")
	// As Synapse, the body is not even read.
	r := st.Do(t, "POST", "/_matrix/client/v3/user_directory/search", alice.User.AccessToken, map[string]any{})
	if r.Status != http.StatusOK || r.Body["limited"] != false {
		t.Errorf("%d %s, want 200 and no one", r.Status, r.Raw)
	}
	st.CheckCost(t, "search while off", searchRoute, servertest.Want(1, 1, 0))
}

// TestSearch_Cost pins what docs/storage.md says a search and a change of
// the index cost.
func TestSearch_Cost(t *testing.T) {
	st := servertest.Start(t)
	alice, bob, carol := st.Member(t, "alice"), st.Member(t, "bob"), st.Member(t, "carol")
	createRoom(t, alice, "private_chat", bob)
	createRoom(t, carol, "public_chat")
	setName(t, bob, "Bob Tables")
	setName(t, carol, "Carol Tables")

	// The auth read, one eventually consistent index Query, a Query of
	// the searcher's rooms, one of each candidate's rooms (bob shares one;
	// carol's public room is one BatchGetItem of its info item).
	wantFound(t, alice, "tables", bob.ID, carol.ID)
	st.CheckCost(t, "search", searchRoute, servertest.Want(6, 5.5, 0))
	wantFound(t, alice, "bob", bob.ID)
	st.CheckCost(t, "search", searchRoute, servertest.Want(4, 3.5, 0))

	// A new display name: a GetItem of the user's item, one transaction
	// that puts the three words (bob, robert, tables) and the user's item.
	ctx, m := store.WithMeter(context.Background())
	if err := st.Server.UserDir.ProfileChanged(ctx, bob.ID, "Robert Tables", ""); err != nil {
		t.Fatal(err)
	}
	servertest.CheckUsage(t, "profile change", m.Usage(), servertest.Want(2, 1, 8))
	// Deactivation: the same read, the three words deleted, the item kept.
	ctx, m = store.WithMeter(context.Background())
	if err := st.Server.UserDir.ActiveChanged(ctx, bob.ID, false); err != nil {
		t.Fatal(err)
	}
	servertest.CheckUsage(t, "deactivation", m.Usage(), servertest.Want(2, 1, 8))
	wantFound(t, alice, "robert")
}

func TestSearch_PublicRoomsChange(t *testing.T) {
	st := servertest.Start(t)
	ctx := context.Background()
	alice, carol := st.Member(t, "alice"), st.Member(t, "carol")
	public := createRoom(t, carol, "public_chat")
	wantFound(t, alice, "carol", carol.ID)

	// Leaving the public room, carol is no longer found.
	if _, err := carol.LeaveRoom(ctx, public); err != nil {
		t.Fatal(err)
	}
	wantFound(t, alice, "carol")

	// A private room whose history anyone may read counts as public, as in
	// Synapse.
	room := createRoom(t, carol, "private_chat")
	wantFound(t, alice, "carol")
	if _, err := carol.SendStateEvent(ctx, room, event.StateHistoryVisibility, "",
		map[string]any{"history_visibility": "world_readable"}); err != nil {
		t.Fatal(err)
	}
	wantFound(t, alice, "carol", carol.ID)
}

func TestSearch_ConcurrentProfileChanges(t *testing.T) {
	st := servertest.Start(t, "CIRRUS_USER_DIRECTORY_SEARCH_ALL_USERS=true")
	alice, bob := st.Member(t, "alice"), st.Member(t, "bob")
	names := []string{"Umberto Alpha", "Vittorio Beta", "Walter Gamma", "Xeno Delta"}
	errs := make(chan error, len(names))
	for _, n := range names {
		go func() { errs <- st.Server.UserDir.ProfileChanged(context.Background(), bob.ID, n, "") }()
	}
	for range names {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// Whichever change came last, bob is found by its words alone: no
	// word of the others is left behind.
	var last []string
	for _, n := range names {
		first := strings.Fields(n)[0]
		if got, _ := found(t, alice, first, 10); len(got) > 0 {
			last = append(last, n)
		}
	}
	if len(last) != 1 {
		t.Fatalf("bob is found by the names %q, want exactly one", last)
	}
	wantFound(t, alice, strings.Fields(last[0])[1], bob.ID)
}
