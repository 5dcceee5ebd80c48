package search_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

var bg = context.Background()

func must[T any](t *testing.T, what string) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
}

func say(t *testing.T, u servertest.Member, room id.RoomID, body string) id.EventID {
	t.Helper()
	return must[*mautrix.RespSendEvent](t, "send "+body)(u.SendText(bg, room, body)).EventID
}

// search runs req as u and fails the test on an error.
func search(t *testing.T, u servertest.Member, req *mautrix.ReqSearch) *mautrix.RespSearch {
	t.Helper()
	res, err := u.Search(bg, req)
	if err != nil {
		t.Fatalf("search %+v as %s: %v", req, u.ID, err)
	}
	return res
}

// bodiesOf lists the body (or name, or topic) of each result, in order.
func bodiesOf(res *mautrix.RespSearch) []string {
	out := []string{}
	for _, r := range res.Results {
		for _, k := range []string{"body", "name", "topic"} {
			if s, ok := r.Event.Content.Raw[k].(string); ok {
				out = append(out, s)
				break
			}
		}
	}
	return out
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func wantEqual(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: got %#v, want %#v", what, got, want)
	}
}

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

// world is a server with rooms to search: alice is joined to garden and
// kitchen, has left attic, was never in bobs, and joined late to late,
// whose history only members see from when they joined.
type world struct {
	st                                 *servertest.Stack
	alice, bob                         servertest.Member
	garden, kitchen, attic, bobs, late id.RoomID
	love, triple, pesto, withBasil     id.EventID
	inKitchen                          id.EventID
}

func newWorld(t *testing.T) *world {
	t.Helper()
	st := servertest.Start(t)
	w := &world{st: st, alice: st.Member(t, "alice"), bob: st.Member(t, "bob")}
	create := func(u servertest.Member, req *mautrix.ReqCreateRoom) id.RoomID {
		return must[*mautrix.RespCreateRoom](t, "create room")(u.CreateRoom(bg, req)).RoomID
	}
	join := func(u servertest.Member, room id.RoomID) {
		must[*mautrix.RespJoinRoom](t, "join")(u.JoinRoom(bg, room.String(), nil))
	}
	w.garden = create(w.alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Gardening club", Topic: "Tomatoes and basil"})
	join(w.bob, w.garden)
	w.love = say(t, w.alice, w.garden, "I love tomatoes")
	w.triple = say(t, w.bob, w.garden, "Tomatoes, tomatoes, TOMATOES everywhere")
	w.pesto = say(t, w.alice, w.garden, "basil pesto")
	w.withBasil = say(t, w.alice, w.garden, "tomatoes with basil")

	w.kitchen = create(w.alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	w.inKitchen = say(t, w.alice, w.kitchen, "tomatoes in the kitchen")

	w.attic = create(w.bob, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	join(w.alice, w.attic)
	say(t, w.bob, w.attic, "tomatoes in the attic")
	must[*mautrix.RespLeaveRoom](t, "leave")(w.alice.LeaveRoom(bg, w.attic))

	w.bobs = create(w.bob, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	say(t, w.bob, w.bobs, "tomatoes only bob knows")

	w.late = create(w.bob, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{{
		Type: event.StateHistoryVisibility, StateKey: new(string),
		Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}},
	}}})
	say(t, w.bob, w.late, "tomatoes before alice came")
	join(w.alice, w.late)
	say(t, w.bob, w.late, "tomatoes after alice came")
	return w
}

func TestSearch(t *testing.T) {
	w := newWorld(t)
	alice := w.alice

	t.Run("RankAcrossRooms", func(t *testing.T) {
		res := search(t, alice, &mautrix.ReqSearch{SearchTerm: "tomatoes"})
		got := bodiesOf(res)
		// Three matches rank first; only rooms alice is joined to, and in
		// late only what she may see.
		if len(got) == 0 || got[0] != "Tomatoes, tomatoes, TOMATOES everywhere" || res.Results[0].Rank != 3 {
			t.Fatalf("first result: got %q (rank %v)", got, res.Results)
		}
		want := []string{"I love tomatoes", "Tomatoes and basil", "Tomatoes, tomatoes, TOMATOES everywhere",
			"tomatoes after alice came", "tomatoes in the kitchen", "tomatoes with basil"}
		wantEqual(t, "results", sorted(got), want)
		wantEqual(t, "count", res.Count, len(want))
		wantEqual(t, "highlights", res.Highlights, []string{"tomatoes"})
	})

	t.Run("Recent", func(t *testing.T) {
		res := search(t, alice, &mautrix.ReqSearch{SearchTerm: "tomatoes", OrderBy: "recent",
			Filter: &mautrix.FilterPart{Rooms: []id.RoomID{w.garden}}})
		wantEqual(t, "results", bodiesOf(res), []string{"tomatoes with basil", "Tomatoes, tomatoes, TOMATOES everywhere", "I love tomatoes", "Tomatoes and basil"})
		all := search(t, alice, &mautrix.ReqSearch{SearchTerm: "tomatoes", OrderBy: "recent"})
		for i := 1; i < len(all.Results); i++ {
			if all.Results[i-1].Event.Timestamp < all.Results[i].Event.Timestamp {
				t.Fatalf("result %d is newer than %d: %q", i, i-1, bodiesOf(all))
			}
		}
	})

	t.Run("AllTermsMatch", func(t *testing.T) {
		res := search(t, alice, &mautrix.ReqSearch{SearchTerm: "Basil tomatoes"})
		wantEqual(t, "results", sorted(bodiesOf(res)), []string{"Tomatoes and basil", "tomatoes with basil"})
		wantEqual(t, "highlights", res.Highlights, []string{"basil", "tomatoes"})
	})

	t.Run("Keys", func(t *testing.T) {
		res := search(t, alice, &mautrix.ReqSearch{SearchTerm: "tomatoes", Keys: []string{"content.topic"}})
		wantEqual(t, "topic results", bodiesOf(res), []string{"Tomatoes and basil"})
		wantEqual(t, "topic type", res.Results[0].Event.Type, event.StateTopic)
		res = search(t, alice, &mautrix.ReqSearch{SearchTerm: "gardening"})
		wantEqual(t, "name results", bodiesOf(res), []string{"Gardening club"})
		res = search(t, alice, &mautrix.ReqSearch{SearchTerm: "gardening", Keys: []string{"content.body"}})
		wantEqual(t, "name not in body", bodiesOf(res), []string{})
	})

	t.Run("Prefix", func(t *testing.T) {
		res := search(t, alice, &mautrix.ReqSearch{SearchTerm: "pes*"})
		wantEqual(t, "prefix", bodiesOf(res), []string{"basil pesto"})
		res = search(t, alice, &mautrix.ReqSearch{SearchTerm: "pes"})
		wantEqual(t, "whole word", bodiesOf(res), []string{})
	})

	t.Run("Filter", func(t *testing.T) {
		res := search(t, alice, &mautrix.ReqSearch{SearchTerm: "tomatoes", Filter: &mautrix.FilterPart{Rooms: []id.RoomID{w.kitchen}}})
		wantEqual(t, "rooms", bodiesOf(res), []string{"tomatoes in the kitchen"})
		res = search(t, alice, &mautrix.ReqSearch{SearchTerm: "tomatoes", Filter: &mautrix.FilterPart{Senders: []id.UserID{w.bob.UserID}}})
		wantEqual(t, "senders", sorted(bodiesOf(res)), []string{"Tomatoes, tomatoes, TOMATOES everywhere", "tomatoes after alice came"})
		res = search(t, alice, &mautrix.ReqSearch{SearchTerm: "tomatoes", Filter: &mautrix.FilterPart{Rooms: []id.RoomID{w.bobs, w.attic}}})
		wantEqual(t, "rooms alice is not in", bodiesOf(res), []string{})
		res = search(t, alice, &mautrix.ReqSearch{SearchTerm: "tomatoes", Filter: &mautrix.FilterPart{NotTypes: []event.Type{event.EventMessage}}})
		wantEqual(t, "not_types", bodiesOf(res), []string{"Tomatoes and basil"})
	})

	t.Run("EventContext", func(t *testing.T) {
		res := search(t, alice, &mautrix.ReqSearch{SearchTerm: "pesto",
			EventContext: mautrix.SearchEventContext{BeforeLimit: 1, AfterLimit: 2, IncludeProfile: true}})
		if len(res.Results) != 1 || res.Results[0].Context == nil {
			t.Fatalf("got %+v", res.Results)
		}
		c := res.Results[0].Context
		wantEqual(t, "before", bodiesOf(&mautrix.RespSearch{Results: []*mautrix.SearchResult{{Event: c.EventsBefore[0]}}}), []string{"Tomatoes, tomatoes, TOMATOES everywhere"})
		wantEqual(t, "before count", len(c.EventsBefore), 1)
		wantEqual(t, "after", len(c.EventsAfter), 1) // the last event of the room
		wantEqual(t, "after body", c.EventsAfter[0].ID, w.withBasil)
		if c.Start == "" || c.End == "" {
			t.Fatalf("context tokens: start %q end %q", c.Start, c.End)
		}
		// The tokens page on with /messages, from before events_before.
		msgs := must[*mautrix.RespMessages](t, "messages")(alice.Messages(bg, w.garden, c.Start, "", mautrix.DirectionBackward, nil, 1))
		wantEqual(t, "before start", msgs.Chunk[0].ID, w.love)

		var raw struct {
			SearchCategories struct {
				RoomEvents struct {
					Results []struct {
						Context struct {
							ProfileInfo map[string]struct {
								DisplayName string `json:"displayname"`
							} `json:"profile_info"`
						} `json:"context"`
					} `json:"results"`
				} `json:"room_events"`
			} `json:"search_categories"`
		}
		body := map[string]any{"search_categories": map[string]any{"room_events": map[string]any{
			"search_term": "pesto", "event_context": map[string]any{"before_limit": 1, "after_limit": 0, "include_profile": true}}}}
		must[[]byte](t, "search with profiles")(alice.MakeRequest(bg, "POST", alice.BuildClientURL("v3", "search"), body, &raw))
		info := raw.SearchCategories.RoomEvents.Results[0].Context.ProfileInfo
		wantEqual(t, "profile senders", len(info), 2)
		wantEqual(t, "bob's name", info[w.bob.UserID.String()].DisplayName, "bob")
	})

	t.Run("IncludeStateAndGroups", func(t *testing.T) {
		res := search(t, alice, &mautrix.ReqSearch{SearchTerm: "tomatoes", IncludeState: true,
			Groupings: mautrix.SearchGroupings{GroupBy: []mautrix.SearchGroup{{Key: "room_id"}, {Key: "sender"}}}})
		rooms := []string{}
		for r, st := range res.State {
			rooms = append(rooms, r.String())
			var name bool
			for _, ev := range st {
				name = name || ev.Type == event.StateCreate
			}
			if !name {
				t.Fatalf("state of %s has no create event", r)
			}
		}
		wantEqual(t, "state rooms", sorted(rooms), sorted([]string{w.garden.String(), w.kitchen.String(), w.late.String()}))
		byRoom := res.Groups["room_id"]
		wantEqual(t, "garden group", len(byRoom[w.garden.String()].Results), 4)
		wantEqual(t, "kitchen group", byRoom[w.kitchen.String()].Results, []string{w.inKitchen.String()})
		bySender := res.Groups["sender"]
		wantEqual(t, "bob's group", len(bySender[w.bob.UserID.String()].Results), 2)
		wantEqual(t, "alice's group", len(bySender[alice.UserID.String()].Results), 4)
	})

	t.Run("NextBatch", func(t *testing.T) {
		for _, order := range []string{"rank", "recent"} {
			all := bodiesOf(search(t, alice, &mautrix.ReqSearch{SearchTerm: "tomatoes", OrderBy: order}))
			var paged []string
			next := ""
			for pages := 0; ; pages++ {
				if pages > 10 {
					t.Fatalf("%s: more pages than results", order)
				}
				res := search(t, alice, &mautrix.ReqSearch{SearchTerm: "tomatoes", OrderBy: order, NextBatch: next,
					Filter: &mautrix.FilterPart{Limit: 2}})
				if len(res.Results) > 2 {
					t.Fatalf("%s: page of %d", order, len(res.Results))
				}
				paged = append(paged, bodiesOf(res)...)
				if next = res.NextBatch; next == "" {
					break
				}
			}
			wantEqual(t, order+" pages", paged, all)
		}
		// A token of one order is refused in the other.
		first := search(t, alice, &mautrix.ReqSearch{SearchTerm: "tomatoes", Filter: &mautrix.FilterPart{Limit: 1}})
		_, err := alice.Search(bg, &mautrix.ReqSearch{SearchTerm: "tomatoes", OrderBy: "recent", NextBatch: first.NextBatch})
		wantErr(t, "rank token, recent order", err, "M_INVALID_PARAM", 400)
	})

	t.Run("GroupNextBatch", func(t *testing.T) {
		res := search(t, alice, &mautrix.ReqSearch{SearchTerm: "tomatoes", OrderBy: "recent", Filter: &mautrix.FilterPart{Limit: 3},
			Groupings: mautrix.SearchGroupings{GroupBy: []mautrix.SearchGroup{{Key: "room_id"}}}})
		g := res.Groups["room_id"][w.garden.String()]
		if g.NextBatch == "" {
			t.Fatalf("garden group has no next_batch: %+v", res.Groups)
		}
		more := search(t, alice, &mautrix.ReqSearch{SearchTerm: "tomatoes", OrderBy: "recent", NextBatch: g.NextBatch})
		for _, r := range more.Results {
			if r.Event.RoomID != w.garden {
				t.Fatalf("group batch brought an event of %s", r.Event.RoomID)
			}
			if slices.Contains(g.Results, r.Event.ID.String()) {
				t.Fatalf("group batch repeats %s", r.Event.ID)
			}
		}
		wantEqual(t, "garden in two batches", len(g.Results)+len(more.Results), 4)
	})

	t.Run("Redacted", func(t *testing.T) {
		gone := say(t, alice, w.kitchen, "zucchini to forget")
		wantEqual(t, "before redaction", bodiesOf(search(t, alice, &mautrix.ReqSearch{SearchTerm: "zucchini"})), []string{"zucchini to forget"})
		must[*mautrix.RespSendEvent](t, "redact")(alice.RedactEvent(bg, w.kitchen, gone))
		wantEqual(t, "after redaction", bodiesOf(search(t, alice, &mautrix.ReqSearch{SearchTerm: "zucchini"})), []string{})
	})

	t.Run("EncryptedNotFound", func(t *testing.T) {
		must[*mautrix.RespSendEvent](t, "send encrypted")(alice.SendMessageEvent(bg, w.kitchen, event.EventEncrypted, map[string]any{
			"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "secretword", "sender_key": "k", "session_id": "s", "device_id": "d"}))
		wantEqual(t, "encrypted", bodiesOf(search(t, alice, &mautrix.ReqSearch{SearchTerm: "secretword"})), []string{})
	})

	t.Run("LegacyPath", func(t *testing.T) {
		r := w.st.Do(t, "POST", "/_matrix/client/r0/search", alice.User.AccessToken, map[string]any{
			"search_categories": map[string]any{"room_events": map[string]any{"search_term": "pesto"}}})
		if r.Status != http.StatusOK {
			t.Fatalf("r0: %d %s", r.Status, r.Raw)
		}
	})

	t.Run("BadRequests", func(t *testing.T) {
		for _, tc := range []struct {
			name, query string
			body        any
			status      int
			code        string
		}{
			{"not JSON", "", "{", 400, "M_NOT_JSON"},
			{"no categories", "", map[string]any{}, 400, "M_BAD_JSON"},
			{"categories not an object", "", map[string]any{"search_categories": []int{1}}, 400, "M_BAD_JSON"},
			{"unknown category", "", map[string]any{"search_categories": map[string]any{"rooms": map[string]any{}}}, 400, "M_INVALID_PARAM"},
			{"no search_term", "", roomEvents(map[string]any{}), 400, "M_BAD_JSON"},
			{"search_term a number", "", roomEvents(map[string]any{"search_term": 3}), 400, "M_BAD_JSON"},
			{"bad key", "", roomEvents(map[string]any{"search_term": "a", "keys": []string{"content.url"}}), 400, "M_INVALID_PARAM"},
			{"bad order_by", "", roomEvents(map[string]any{"search_term": "a", "order_by": "alphabet"}), 400, "M_INVALID_PARAM"},
			{"bad group_by", "", roomEvents(map[string]any{"search_term": "a", "groupings": map[string]any{"group_by": []any{map[string]any{"key": "type"}}}}), 400, "M_INVALID_PARAM"},
			{"bad filter", "", roomEvents(map[string]any{"search_term": "a", "filter": map[string]any{"senders": []string{"bob"}}}), 400, "M_BAD_JSON"},
			{"negative context", "", roomEvents(map[string]any{"search_term": "a", "event_context": map[string]any{"before_limit": -1}}), 400, "M_INVALID_PARAM"},
			{"bad next_batch", "?next_batch=nonsense", roomEvents(map[string]any{"search_term": "a"}), 400, "M_INVALID_PARAM"},
			{"too many words", "", roomEvents(map[string]any{"search_term": manyWords(17)}), 400, "M_INVALID_PARAM"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := w.st.Do(t, "POST", "/_matrix/client/v3/search"+tc.query, alice.User.AccessToken, tc.body)
				if r.Status != tc.status || r.Body["errcode"] != tc.code {
					t.Fatalf("got %d %s, want %d %s", r.Status, r.Raw, tc.status, tc.code)
				}
			})
		}
		r := w.st.Do(t, "POST", "/_matrix/client/v3/search", "", roomEvents(map[string]any{"search_term": "a"}))
		if r.Status != http.StatusUnauthorized {
			t.Fatalf("no token: %d %s", r.Status, r.Raw)
		}
	})
}

// manyWords is n distinct words, "w0 w1 ...".
func manyWords(n int) string {
	w := make([]string, n)
	for i := range w {
		w[i] = fmt.Sprintf("w%d", i)
	}
	return strings.Join(w, " ")
}

func roomEvents(c map[string]any) map[string]any {
	return map[string]any{"search_categories": map[string]any{"room_events": c}}
}

// TestSearch_Disabled: with enable_search off nothing is indexed and
// /search answers 400.
func TestSearch_Disabled(t *testing.T) {
	st := servertest.Start(t, "CIRRUS_ENABLE_SEARCH=false")
	alice := st.Member(t, "alice")
	room := must[*mautrix.RespCreateRoom](t, "create")(alice.CreateRoom(bg, &mautrix.ReqCreateRoom{})).RoomID
	say(t, alice, room, "tomatoes")
	_, err := alice.Search(bg, &mautrix.ReqSearch{SearchTerm: "tomatoes"})
	wantErr(t, "search", err, "M_UNKNOWN", 400)
}
