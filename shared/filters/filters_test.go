package filters_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/filters"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// specExample is the filter of the spec's POST /user/{userId}/filter example.
const specExample = `{
  "room": {
    "state": {"types": ["m.room.*"], "not_rooms": ["!726s6s6q:example.com"]},
    "timeline": {"limit": 10, "types": ["m.room.message"], "not_rooms": ["!726s6s6q:example.com"], "not_senders": ["@spam:example.com"]},
    "ephemeral": {"types": ["m.receipt", "m.typing"], "not_rooms": ["!726s6s6q:example.com"], "not_senders": ["@spam:example.com"]}
  },
  "presence": {"types": ["m.presence"], "not_senders": ["@alice:example.com"]},
  "event_format": "client",
  "event_fields": ["type", "content", "sender"]
}`

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name, filter, mention string
	}{
		{"SpecExample", specExample, ""},
		{"Empty", `{}`, ""},
		{"UnknownKeysKept", `{"org.example.x":{"y":1},"room":{"timeline":{"limit":0,"org.matrix.msc":true}}}`, ""},
		{"LazyLoading", `{"room":{"state":{"lazy_load_members":true,"include_redundant_members":false},"include_leave":true}}`, ""},
		{"LimitString", `{"room":{"timeline":{"limit":"ten"}}}`, "room.timeline.limit"},
		{"LimitFraction", `{"presence":{"limit":1.5}}`, "presence.limit"},
		{"LimitNegative", `{"account_data":{"limit":-1}}`, "account_data.limit"},
		{"EventFormat", `{"event_format":"xml"}`, "event_format"},
		{"EventFieldsNotList", `{"event_fields":"type"}`, "event_fields"},
		{"TypesOfNumbers", `{"room":{"state":{"types":[1]}}}`, "room.state.types"},
		{"SenderNotUser", `{"room":{"timeline":{"senders":["bob"]}}}`, "room.timeline.senders"},
		{"NotSenderNotUser", `{"presence":{"not_senders":["!room:x"]}}`, "presence.not_senders"},
		{"RoomNotRoom", `{"room":{"rooms":["#alias:example.org"]}}`, "room.rooms"},
		{"EventRoomNotRoom", `{"room":{"ephemeral":{"not_rooms":["@u:x"]}}}`, "room.ephemeral.not_rooms"},
		{"IncludeLeaveString", `{"room":{"include_leave":"yes"}}`, "room.include_leave"},
		{"RoomNotObject", `{"room":[]}`, "room"},
		// What canonical JSON, the stored form, would change.
		{"LoneSurrogate", `{"room":{"timeline":{"types":["\ud800"]}}}`, "room.timeline.types[0]: a string holds a lone UTF-16 surrogate"},
		{"MinusSign", `{"org.example":{"x":1e-05}}`, "1e-05 would lose a minus sign"},
		{"QuoteInKey", `{"org.example":{"a\"b":1}}`, `key "a\"b" holds a quote`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := filters.Validate(json.RawMessage(tc.filter))
			if tc.mention == "" {
				if err != nil {
					t.Fatalf("Validate(%s) = %v, want nil", tc.filter, err)
				}
				return
			}
			if !errors.Is(err, filters.ErrInvalid) || !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("Validate(%s) = %v, want ErrInvalid naming %s", tc.filter, err, tc.mention)
			}
		})
	}
}

func expect(t *testing.T, r servertest.Reply, status int, errcode string) {
	t.Helper()
	if r.Status != status || (errcode != "" && r.Body["errcode"] != errcode) {
		t.Fatalf("got %d %s, want %d %s", r.Status, r.Raw, status, errcode)
	}
}

func sameJSON(t *testing.T, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatal(err)
	}
	json.Unmarshal([]byte(want), &w)
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("got %s, want %s", got, want)
	}
}

// TestFilters_HTTP drives both endpoints over HTTP through the real
// handler tree and store, with each error they name.
func TestFilters_HTTP(t *testing.T) {
	st := servertest.Start(t)
	alice, bob := st.Register(t, "alice"), st.Register(t, "bob")
	create := func(u servertest.User) string { return "/_matrix/client/v3/user/" + u.ID + "/filter" }

	r := st.Do(t, "POST", create(alice), alice.AccessToken, specExample)
	expect(t, r, 200, "")
	filterID, _ := r.Body["filter_id"].(string)
	if filterID == "" || strings.HasPrefix(filterID, "{") || len(r.Body) != 1 {
		t.Fatalf("POST filter: %s", r.Raw)
	}
	if c := st.LastRequest(t).DynamoDB; c.Calls != 2 || c.ReadUnits != 1 || c.WriteUnits != 1 {
		t.Fatalf("POST filter cost %+v, want 2 calls: 1 RCU, 1 WCU", c)
	}
	r = st.Do(t, "GET", create(alice)+"/"+filterID, alice.AccessToken, nil)
	expect(t, r, 200, "")
	sameJSON(t, r.Raw, specExample)
	if c := st.LastRequest(t).DynamoDB; c.Calls != 2 || c.ReadUnits != 2 || c.WriteUnits != 0 {
		t.Fatalf("GET filter cost %+v, want 2 calls of 1 RCU", c)
	}

	t.Run("SameFilterSameID", func(t *testing.T) {
		// The same filter with its keys in another order and other spacing.
		r := st.Do(t, "POST", create(alice), alice.AccessToken, `{"event_fields":["type","content","sender"],"event_format":"client",
			"presence":{"not_senders":["@alice:example.com"],"types":["m.presence"]},"room":{"ephemeral":{"not_rooms":["!726s6s6q:example.com"],
			"not_senders":["@spam:example.com"],"types":["m.receipt","m.typing"]},"state":{"not_rooms":["!726s6s6q:example.com"],"types":["m.room.*"]},
			"timeline":{"limit":10,"not_rooms":["!726s6s6q:example.com"],"not_senders":["@spam:example.com"],"types":["m.room.message"]}}}`)
		if r.Body["filter_id"] != filterID {
			t.Fatalf("the same filter got %s, first %s", r.Raw, filterID)
		}
		other := st.Do(t, "POST", create(alice), alice.AccessToken, `{"room":{"timeline":{"limit":11}}}`)
		if other.Body["filter_id"] == filterID || other.Body["filter_id"] == nil {
			t.Fatalf("another filter got %s", other.Raw)
		}
	})
	t.Run("UnknownKeysKept", func(t *testing.T) {
		f := `{"room":{"timeline":{"limit":5,"org.example.flag":true}},"org.example.top":[1,"a"]}`
		id := st.Do(t, "POST", create(bob), bob.AccessToken, f).Body["filter_id"].(string)
		sameJSON(t, st.Do(t, "GET", create(bob)+"/"+id, bob.AccessToken, nil).Raw, f)
	})

	for _, tc := range []struct {
		name, method, path, token string
		body                      any
		status                    int
		errcode                   string
	}{
		{"CreateForOtherUser", "POST", create(bob), alice.AccessToken, `{}`, 403, "M_FORBIDDEN"},
		{"CreateForRemoteUser", "POST", "/_matrix/client/v3/user/@alice:other.example/filter", alice.AccessToken, `{}`, 403, "M_FORBIDDEN"},
		{"GetOtherUsersFilter", "GET", create(alice) + "/" + filterID, bob.AccessToken, nil, 403, "M_FORBIDDEN"},
		// Filters belong to their user: bob has no filter with alice's ID.
		{"GetOwnPathOtherUsersID", "GET", create(bob) + "/" + filterID, bob.AccessToken, nil, 404, "M_NOT_FOUND"},
		{"GetUnknownID", "GET", create(alice) + "/0", alice.AccessToken, nil, 404, "M_NOT_FOUND"},
		{"GetOverlongID", "GET", create(alice) + "/" + strings.Repeat("f", 300), alice.AccessToken, nil, 404, "M_NOT_FOUND"},
		{"LimitString", "POST", create(alice), alice.AccessToken, `{"room":{"timeline":{"limit":"ten"}}}`, 400, "M_BAD_JSON"},
		{"EventFormat", "POST", create(alice), alice.AccessToken, `{"event_format":"xml"}`, 400, "M_BAD_JSON"},
		{"SenderNotUser", "POST", create(alice), alice.AccessToken, `{"presence":{"senders":["bob"]}}`, 400, "M_BAD_JSON"},
		{"BodyArray", "POST", create(alice), alice.AccessToken, `[{}]`, 400, "M_BAD_JSON"},
		{"BodyBroken", "POST", create(alice), alice.AccessToken, `{"room":`, 400, "M_NOT_JSON"},
		{"Over400KB", "POST", create(alice), alice.AccessToken, `{"room":{"timeline":{"not_types":["` + strings.Repeat("x", 500<<10) + `"]}}}`, 413, "M_TOO_LARGE"},
		{"CreateWithoutToken", "POST", create(alice), "", `{}`, 401, "M_MISSING_TOKEN"},
		{"GetWithoutToken", "GET", create(alice) + "/" + filterID, "", nil, 401, "M_MISSING_TOKEN"},
		{"PutUnsupported", "PUT", create(alice) + "/" + filterID, alice.AccessToken, `{}`, 405, "M_UNRECOGNIZED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			expect(t, st.Do(t, tc.method, tc.path, tc.token, tc.body), tc.status, tc.errcode)
			// Refusals are decided before the store: the auth read at most.
			if c := st.LastRequest(t).DynamoDB; tc.status != 404 && (c.Calls > 1 || c.WriteUnits != 0) {
				t.Fatalf("a refused request cost %+v", c)
			}
		})
	}
}

// TestFilters_Mautrix uploads a filter with a real Matrix client library
// and reads it back.
func TestFilters_Mautrix(t *testing.T) {
	st := servertest.Start(t)
	ctx := context.Background()
	judy := st.Register(t, "judy")
	cli, err := mautrix.NewClient(st.URL, id.UserID(judy.ID), judy.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	f := &mautrix.Filter{
		EventFormat: mautrix.EventFormatClient,
		Room: &mautrix.RoomFilter{
			Timeline: &mautrix.FilterPart{Limit: 50, Types: []event.Type{event.EventMessage}},
			State:    &mautrix.FilterPart{LazyLoadMembers: true},
		},
		Presence: &mautrix.FilterPart{NotTypes: []event.Type{{Type: "*"}}},
	}
	resp, err := cli.CreateFilter(ctx, f)
	if err != nil || resp.FilterID == "" {
		t.Fatalf("CreateFilter: %+v, %v", resp, err)
	}
	var got mautrix.Filter
	_, err = cli.MakeRequest(ctx, "GET", cli.BuildClientURL("v3", "user", cli.UserID, "filter", resp.FilterID), nil, &got)
	if err != nil {
		t.Fatal(err)
	}
	if got.Room == nil || got.Room.Timeline.Limit != 50 || !got.Room.State.LazyLoadMembers || got.Presence.NotTypes[0].Type != "*" {
		t.Fatalf("filter read back: %+v", got)
	}
	again, err := cli.CreateFilter(ctx, f)
	if err != nil || again.FilterID != resp.FilterID {
		t.Fatalf("uploading the same filter again: %+v, %v; first ID %s", again, err, resp.FilterID)
	}

	_, err = cli.MakeRequest(ctx, "GET", cli.BuildClientURL("v3", "user", cli.UserID, "filter", "nope"), nil, &got)
	if !errors.Is(err, mautrix.MNotFound) {
		t.Fatalf("unknown filter: %v, want M_NOT_FOUND", err)
	}
	bad := &mautrix.Filter{EventFormat: "xml"}
	if _, err := cli.CreateFilter(ctx, bad); !errors.Is(err, mautrix.MBadJSON) {
		t.Fatalf("event_format xml: %v, want M_BAD_JSON", err)
	}
	mallory := st.Register(t, "mallory")
	impostor, _ := mautrix.NewClient(st.URL, id.UserID(judy.ID), mallory.AccessToken)
	if _, err := impostor.CreateFilter(ctx, f); !errors.Is(err, mautrix.MForbidden) {
		t.Fatalf("a filter for another user: %v, want M_FORBIDDEN", err)
	}
}
