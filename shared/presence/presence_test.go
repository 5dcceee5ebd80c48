package presence_test

import (
	"context"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

var bg = context.Background()

// TestPresence: a change reaches the waiting sync of a user sharing a room;
// GET shows it; only the user sets their own.
func TestPresence(t *testing.T) {
	st := servertest.Start(t)
	au, bu := st.Register(t, "alice"), st.Register(t, "bob")
	alice, bob := st.Client(t, au), st.Client(t, bu)
	room, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(bg, room.RoomID); err != nil {
		t.Fatal(err)
	}
	first, err := bob.FullSyncRequest(bg, mautrix.ReqSync{})
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.SetPresence(bg, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: "lunch"}); err != nil {
		t.Fatal(err)
	}
	next, err := bob.FullSyncRequest(bg, mautrix.ReqSync{Since: first.NextBatch, Timeout: 5000})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range next.Presence.Events {
		if ev.Sender == alice.UserID && ev.Content.Raw["presence"] == "unavailable" && ev.Content.Raw["status_msg"] == "lunch" {
			found = true
		}
	}
	if !found {
		t.Fatalf("bob's sync presence: %+v", next.Presence.Events)
	}
	r := st.Do(t, "GET", "/_matrix/client/v3/presence/"+url.PathEscape(au.ID)+"/status", bu.AccessToken, nil)
	if r.Status != 200 || r.Body["presence"] != "unavailable" || r.Body["status_msg"] != "lunch" {
		t.Fatalf("GET presence: %d %s", r.Status, r.Raw)
	}
	r = st.Do(t, "PUT", "/_matrix/client/v3/presence/"+url.PathEscape(au.ID)+"/status", bu.AccessToken, map[string]any{"presence": "online"})
	if r.Status != 403 || r.Body["errcode"] != "M_FORBIDDEN" {
		t.Fatalf("bob setting alice's presence: %d %s", r.Status, r.Raw)
	}
	r = st.Do(t, "PUT", "/_matrix/client/v3/presence/"+url.PathEscape(au.ID)+"/status", au.AccessToken, map[string]any{"presence": "away"})
	if r.Status != 400 || r.Body["errcode"] != "M_INVALID_PARAM" {
		t.Fatalf("unknown presence: %d %s", r.Status, r.Raw)
	}
}

// TestPresenceOff: with presence turned off nothing is stored or sent and
// everyone reads as offline.
func TestPresenceOff(t *testing.T) {
	st := servertest.Start(t, "CIRRUS_PRESENCE_ENABLED=false")
	au := st.Register(t, "alice")
	if r := st.Do(t, "PUT", "/_matrix/client/v3/presence/"+url.PathEscape(au.ID)+"/status", au.AccessToken, map[string]any{"presence": "online"}); r.Status != 200 {
		t.Fatalf("PUT presence: %d %s", r.Status, r.Raw)
	}
	if u := st.LastRequest(t).DynamoDB; u.WriteUnits != 0 {
		t.Fatalf("presence off still wrote: %+v", u)
	}
	r := st.Do(t, "GET", "/_matrix/client/v3/presence/"+url.PathEscape(au.ID)+"/status", au.AccessToken, nil)
	if r.Body["presence"] != "offline" {
		t.Fatalf("GET presence: %s", r.Raw)
	}
}

// TestPresenceInitialSync: an initial sync brings the presence of the users
// who share a room.
func TestPresenceInitialSync(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Client(t, st.Register(t, "alice"))
	bob := st.Client(t, st.Register(t, "bob"))
	room, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(bg, room.RoomID); err != nil {
		t.Fatal(err)
	}
	if err := alice.SetPresence(bg, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "hi"}); err != nil {
		t.Fatal(err)
	}
	resp, err := bob.FullSyncRequest(bg, mautrix.ReqSync{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range resp.Presence.Events {
		if ev.Sender == alice.UserID && ev.Content.Raw["status_msg"] == "hi" {
			return
		}
	}
	t.Fatalf("initial sync presence: %+v", resp.Presence.Events)
}

// TestPresenceOfNewMembers: a user who joins a room brings their presence
// to the incremental syncs of its members, and a user who joins gets the
// presence of the members they find, although neither presence changed.
func TestPresenceOfNewMembers(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Client(t, st.Register(t, "alice"))
	bob := st.Client(t, st.Register(t, "bob"))
	carol := st.Client(t, st.Register(t, "carol"))
	for _, c := range []*mautrix.Client{bob, carol} {
		if err := c.SetPresence(bg, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "here " + c.UserID.String()}); err != nil {
			t.Fatal(err)
		}
	}
	room, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := carol.JoinRoomByID(bg, room.RoomID); err != nil {
		t.Fatal(err)
	}
	aliceFirst, err := alice.FullSyncRequest(bg, mautrix.ReqSync{})
	if err != nil {
		t.Fatal(err)
	}
	bobFirst, err := bob.FullSyncRequest(bg, mautrix.ReqSync{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(bg, room.RoomID); err != nil {
		t.Fatal(err)
	}
	has := func(resp *mautrix.RespSync, who *mautrix.Client) bool {
		for _, ev := range resp.Presence.Events {
			if ev.Sender == who.UserID && ev.Content.Raw["presence"] == "online" {
				return true
			}
		}
		return false
	}
	aliceNext, err := alice.FullSyncRequest(bg, mautrix.ReqSync{Since: aliceFirst.NextBatch})
	if err != nil {
		t.Fatal(err)
	}
	if !has(aliceNext, bob) {
		t.Fatalf("alice's sync after bob joined lacks bob's presence: %+v", aliceNext.Presence.Events)
	}
	bobNext, err := bob.FullSyncRequest(bg, mautrix.ReqSync{Since: bobFirst.NextBatch})
	if err != nil {
		t.Fatal(err)
	}
	if !has(bobNext, carol) {
		t.Fatalf("bob's sync after he joined lacks carol's presence: %+v", bobNext.Presence.Events)
	}
}
