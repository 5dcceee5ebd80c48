package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestServe_TwoServersFederate runs two `cirrus serve` instances on
// loopback as two homeservers would run: names 127.0.0.1:<port>, each
// federation listener at its name's port with a certificate minted from
// one CA, which each trusts through federation_custom_ca_list (no
// verification turned off), and ip_range_whitelist letting loopback
// through. bob of B joins alice's room on A by its ID; messages and a
// topic go both ways; both servers' /messages list the same events in
// the same order.
func TestServe_TwoServersFederate(t *testing.T) {
	dir := t.TempDir()
	caCert, caKey := writeCA(t, dir)
	const secret = "two servers, one test"
	start := func(tag string) homeserver {
		name := "127.0.0.1:" + freePort(t)
		t.Setenv("CIRRUS_SERVER_NAME", name)
		t.Setenv("CIRRUS_CLIENT_LISTEN", "127.0.0.1:0")
		t.Setenv("CIRRUS_FEDERATION_LISTEN", "") // the name's port
		t.Setenv("CIRRUS_DATA_DIR", filepath.Join(dir, tag))
		t.Setenv("CIRRUS_TLS_CA_CERTIFICATE_PATH", caCert)
		t.Setenv("CIRRUS_TLS_CA_KEY_PATH", caKey)
		t.Setenv("CIRRUS_FEDERATION_CUSTOM_CA_LIST", caCert)
		t.Setenv("CIRRUS_IP_RANGE_WHITELIST", "127.0.0.0/8")
		t.Setenv("CIRRUS_REGISTRATION_SHARED_SECRET", secret)
		at, _ := runServe(t)
		return homeserver{name: name, url: at.ClientURL}
	}
	a, b := start("a"), start("b")
	alice := a.user(t, secret, "alice")
	bob := b.user(t, secret, "bob")

	r := alice.call(t, "POST", "/createRoom", map[string]any{"preset": "public_chat", "name": "Across"})
	roomID, _ := r.body["room_id"].(string)
	if r.status != 200 || roomID == "" {
		t.Fatalf("createRoom on A: %d %s", r.status, r.raw)
	}
	room := url.PathEscape(roomID)
	if r := bob.call(t, "POST", "/join/"+room+"?server_name="+url.QueryEscape(a.name), map[string]any{}); r.status != 200 {
		t.Fatalf("bob joins through A: %d %s", r.status, r.raw)
	}

	fromA := alice.send(t, room, "hello from A")
	bob.waitFor(t, room, fromA)
	fromB := bob.send(t, room, "hello from B")
	alice.waitFor(t, room, fromB)
	r = alice.call(t, "PUT", "/rooms/"+room+"/state/m.room.topic/", map[string]any{"topic": "set on A"})
	topic, _ := r.body["event_id"].(string)
	if r.status != 200 {
		t.Fatalf("topic on A: %d %s", r.status, r.raw)
	}
	bob.waitFor(t, room, topic)
	if r := bob.call(t, "GET", "/rooms/"+room+"/state/m.room.topic/", nil); r.status != 200 || r.body["topic"] != "set on A" {
		t.Fatalf("topic on B: %d %s", r.status, r.raw)
	}
	last := bob.send(t, room, "seen the topic")
	alice.waitFor(t, room, last)

	// B took the room in with bob's join, the state before it laid out in
	// its own order: from the join on, A's timeline must be B's, event for
	// event.
	onA, onB := alice.timeline(t, room), bob.timeline(t, room)
	joinID := bob.joinEvent(t, room)
	fromJoin := func(ids []string) []string {
		if i := slices.Index(ids, joinID); i >= 0 {
			return ids[i:]
		}
		return nil
	}
	if a, b := fromJoin(onA), fromJoin(onB); len(a) == 0 || !slices.Equal(a, b) {
		t.Fatalf("timelines from bob's join %s differ:\nA %v\nB %v", joinID, onA, onB)
	}
	for _, id := range []string{fromA, fromB, topic, last} {
		if !slices.Contains(fromJoin(onB), id) {
			t.Fatalf("%s missing from both timelines after the join: %v", id, onB)
		}
	}

	// A fork: both send at once. Each
	// server ends with every event and the same current state; the arrival
	// order may differ, which the spec allows.
	sent := make(chan []string, 1)
	go func() {
		var ids []string
		for i := range 3 {
			ids = append(ids, alice.trySend(room, fmt.Sprintf("A, at once %d", i)))
		}
		sent <- ids
	}()
	var forked []string
	for i := range 3 {
		forked = append(forked, bob.send(t, room, fmt.Sprintf("B, at once %d", i)))
	}
	forked = append(forked, <-sent...)
	if slices.Contains(forked, "") {
		t.Fatalf("a concurrent send failed: %v", forked)
	}
	for _, id := range forked {
		alice.waitFor(t, room, id)
		bob.waitFor(t, room, id)
	}
	after := func(c client) []string {
		ids := slices.Clone(fromJoin(c.timeline(t, room)))
		slices.Sort(ids)
		return ids
	}
	if a, b := after(alice), after(bob); !slices.Equal(a, b) {
		t.Fatalf("after the fork the servers hold different events:\nA %v\nB %v", a, b)
	}
	for _, c := range []client{alice, bob} {
		if r := c.call(t, "GET", "/rooms/"+room+"/state/m.room.topic/", nil); r.status != 200 || r.body["topic"] != "set on A" {
			t.Fatalf("topic after the fork on %s: %d %s", c.base, r.status, r.raw)
		}
	}
}

// homeserver is a running `cirrus serve` of the test.
type homeserver struct{ name, url string }

// user registers localpart through the shared-secret API and logs in.
func (h homeserver) user(t *testing.T, secret, localpart string) client {
	t.Helper()
	const password = "correct horse battery staple"
	if _, err := sharedSecretRegister(context.Background(), h.url, secret, localpart, password, false); err != nil {
		t.Fatalf("register %s on %s: %v", localpart, h.name, err)
	}
	c := client{base: h.url + "/_matrix/client/v3"}
	r := c.call(t, "POST", "/login", map[string]any{
		"type": "m.login.password", "password": password,
		"identifier": map[string]any{"type": "m.id.user", "user": localpart},
	})
	c.token, _ = r.body["access_token"].(string)
	if r.status != 200 || c.token == "" {
		t.Fatalf("login %s on %s: %d %s", localpart, h.name, r.status, r.raw)
	}
	return c
}

// client is a logged-in user of one server.
type client struct{ base, token string }

func (c client) call(t *testing.T, method, path string, body any) reply {
	t.Helper()
	var rd *strings.Reader
	if body != nil {
		doc, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = strings.NewReader(string(doc))
	} else {
		rd = strings.NewReader("")
	}
	header := map[string]string{"Content-Type": "application/json"}
	if c.token != "" {
		header["Authorization"] = "Bearer " + c.token
	}
	return do(t, http.DefaultClient, method, c.base+path, rd, header)
}

// send sends a text message and returns its event ID.
func (c client) send(t *testing.T, room, text string) string {
	t.Helper()
	r := c.call(t, "PUT", fmt.Sprintf("/rooms/%s/send/m.room.message/%d", room, time.Now().UnixNano()),
		map[string]any{"msgtype": "m.text", "body": text})
	id, _ := r.body["event_id"].(string)
	if r.status != 200 || id == "" {
		t.Fatalf("send %q: %d %s", text, r.status, r.raw)
	}
	return id
}

// trySend is send for another goroutine: "" when it failed.
func (c client) trySend(room, text string) string {
	body := fmt.Sprintf(`{"msgtype":"m.text","body":%q}`, text)
	req, err := http.NewRequest("PUT", fmt.Sprintf("%s/rooms/%s/send/m.room.message/%d", c.base, room, time.Now().UnixNano()), strings.NewReader(body))
	if err != nil {
		return ""
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	defer res.Body.Close()
	var out struct {
		EventID string `json:"event_id"`
	}
	if res.StatusCode != http.StatusOK || json.NewDecoder(res.Body).Decode(&out) != nil {
		return ""
	}
	return out.EventID
}

// timeline lists the room's event IDs, oldest first, as /messages gives them.
func (c client) timeline(t *testing.T, room string) []string {
	t.Helper()
	r := c.call(t, "GET", "/rooms/"+room+"/messages?dir=b&limit=100", nil)
	if r.status != 200 {
		t.Fatalf("messages: %d %s", r.status, r.raw)
	}
	chunk, _ := r.body["chunk"].([]any)
	var ids []string
	for i := len(chunk) - 1; i >= 0; i-- {
		ev, _ := chunk[i].(map[string]any)
		id, _ := ev["event_id"].(string)
		ids = append(ids, id)
	}
	return ids
}

// joinEvent is the ID of the user's join in the room, from /messages.
func (c client) joinEvent(t *testing.T, room string) string {
	t.Helper()
	r := c.call(t, "GET", "/account/whoami", nil)
	me, _ := r.body["user_id"].(string)
	r = c.call(t, "GET", "/rooms/"+room+"/messages?dir=b&limit=100", nil)
	chunk, _ := r.body["chunk"].([]any)
	for _, e := range chunk {
		ev, _ := e.(map[string]any)
		content, _ := ev["content"].(map[string]any)
		if ev["type"] == "m.room.member" && ev["state_key"] == me && content["membership"] == "join" {
			id, _ := ev["event_id"].(string)
			return id
		}
	}
	t.Fatalf("no join of %s in %s", me, r.raw)
	return ""
}

// waitFor waits until the event is in the user's timeline of the room,
// long-polling /sync between looks. The bound only ends a hung run.
func (c client) waitFor(t *testing.T, room, eventID string) {
	t.Helper()
	since := ""
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); {
		if slices.Contains(c.timeline(t, room), eventID) {
			return
		}
		q := "/sync?timeout=5000"
		if since != "" {
			q += "&since=" + url.QueryEscape(since)
		}
		r := c.call(t, "GET", q, nil)
		since, _ = r.body["next_batch"].(string)
	}
	t.Fatalf("%s never reached %s", eventID, c.base)
}
