package roomsapi_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestTransactionIDs: the device that sent an event, and only it, reads
// the event's transaction ID wherever it reads the event: /event,
// /messages, /sync and /search. The engine renders for the device the
// client API (and sync, and search) names, not for a caller it reads.
func TestTransactionIDs(t *testing.T) {
	st := servertest.Start(t)
	alice, bob := st.Register(t, "alice"), st.Register(t, "bob")
	r := st.Do(t, "POST", "/_matrix/client/v3/createRoom", alice.AccessToken, map[string]any{"preset": "public_chat"})
	room, _ := r.Body["room_id"].(string)
	if room == "" {
		t.Fatalf("createRoom: %d %s", r.Status, r.Raw)
	}
	rooms := "/_matrix/client/v3/rooms/" + url.PathEscape(room)
	if r := st.Do(t, "POST", rooms+"/join", bob.AccessToken, map[string]any{}); r.Status != http.StatusOK {
		t.Fatalf("join: %d %s", r.Status, r.Raw)
	}
	r = st.Do(t, "PUT", rooms+"/send/m.room.message/tx-7", alice.AccessToken, map[string]any{"msgtype": "m.text", "body": "marjoram"})
	id, _ := r.Body["event_id"].(string)
	if id == "" {
		t.Fatalf("send: %d %s", r.Status, r.Raw)
	}
	r = st.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"},
		"password": "correct horse battery staple",
	})
	phone, _ := r.Body["access_token"].(string)
	if phone == "" {
		t.Fatalf("second login: %s", r.Raw)
	}
	txnIn := func(ev any) any {
		m, _ := ev.(map[string]any)
		if m["event_id"] != id {
			return "not the event"
		}
		unsigned, _ := m["unsigned"].(map[string]any)
		return unsigned["transaction_id"]
	}
	reads := map[string]func(token string) any{
		"event": func(token string) any {
			return txnIn(st.Do(t, "GET", rooms+"/event/"+url.PathEscape(id), token, nil).Body)
		},
		"messages": func(token string) any {
			chunk, _ := st.Do(t, "GET", rooms+"/messages?dir=b&limit=1", token, nil).Body["chunk"].([]any)
			if len(chunk) != 1 {
				return "no chunk"
			}
			return txnIn(chunk[0])
		},
		"sync": func(token string) any {
			r := st.Do(t, "GET", "/_matrix/client/v3/sync", token, nil)
			join, _ := r.Body["rooms"].(map[string]any)["join"].(map[string]any)
			tl, _ := join[room].(map[string]any)["timeline"].(map[string]any)
			evs, _ := tl["events"].([]any)
			if len(evs) == 0 {
				return "no timeline"
			}
			return txnIn(evs[len(evs)-1])
		},
		"search": func(token string) any {
			r := st.Do(t, "POST", "/_matrix/client/v3/search", token, map[string]any{
				"search_categories": map[string]any{"room_events": map[string]any{"search_term": "marjoram"}}})
			cats, _ := r.Body["search_categories"].(map[string]any)
			re, _ := cats["room_events"].(map[string]any)
			results, _ := re["results"].([]any)
			if len(results) != 1 {
				return "no result"
			}
			return txnIn(results[0].(map[string]any)["result"])
		},
	}
	for name, read := range reads {
		t.Run(name, func(t *testing.T) {
			if got := read(alice.AccessToken); got != "tx-7" {
				t.Errorf("the sending device reads transaction_id %v, want tx-7", got)
			}
			if got := read(phone); got != nil {
				t.Errorf("alice's other device reads transaction_id %v", got)
			}
			if got := read(bob.AccessToken); got != nil {
				t.Errorf("bob reads transaction_id %v", got)
			}
		})
	}
}
