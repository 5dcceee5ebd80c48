package federation_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/keys"
)

// corpusRoom is a public room of alice's, version 12, that the remote's
// bob joined through /send: the room the corpus's PDUs claim to be of.
type corpusRoom struct {
	fs     *fedStack
	rm     *remote
	id     string
	signer events.Signer
}

func newCorpusRoom(t *testing.T) corpusRoom {
	t.Helper()
	rm := newRemote(t)
	fs := startFed(t, nil)
	r := fs.Do(t, "POST", "/_matrix/client/v3/createRoom", fs.Alice.AccessToken, map[string]any{"preset": "public_chat", "room_version": "12"})
	room, _ := r.Body["room_id"].(string)
	if r.Status != http.StatusOK {
		t.Fatalf("createRoom: %d %s", r.Status, r.Raw)
	}
	c := corpusRoom{fs: fs, rm: rm, id: room, signer: events.Signer{ServerName: rm.Name, Key: rm.Key}}
	bob := c.user("bob")
	join := c.build(t, c.signer, events.Proto{Sender: bob, Type: events.Member, StateKey: &bob, Content: json.RawMessage(`{"membership":"join"}`)})
	if res := pduResults(t, rm.send(t, fs.FedURL, "join", []json.RawMessage{join.JSON()}, nil)); len(res[join.EventID()]) != 0 {
		t.Fatalf("bob's join: %v", res)
	}
	fs.work(t)
	return c
}

func (c corpusRoom) user(local string) string { return "@" + local + ":" + c.rm.Name }

// build signs p in the room as signer, after the room's extremities, with
// auth events from its current state.
func (c corpusRoom) build(t *testing.T, signer events.Signer, p events.Proto) events.PDU {
	t.Helper()
	ctx := context.Background()
	current, err := c.fs.Server.Rooms.CurrentState(ctx, c.id)
	if err != nil {
		t.Fatal(err)
	}
	state, err := events.NewState(current)
	if err != nil {
		t.Fatal(err)
	}
	ext, depth, err := c.fs.Server.Rooms.Extremities(ctx, c.id)
	if err != nil {
		t.Fatal(err)
	}
	p.RoomID = c.id
	ev, err := signer.Build("12", p, events.Graph{PrevEvents: ext, Depth: depth + 1}, state, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func (c corpusRoom) message(t *testing.T, sender, body string) events.PDU {
	t.Helper()
	content, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": body})
	return c.build(t, c.signer, events.Proto{Sender: sender, Type: "m.room.message", Content: content})
}

// edit changes the JSON of ev with change, leaving hashes and signatures.
func edit(t *testing.T, ev events.PDU, change func(map[string]any)) json.RawMessage {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(ev.JSON(), &doc); err != nil {
		t.Fatal(err)
	}
	change(doc)
	raw, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// resign gives raw, a version 12 PDU, the content hash and signature of
// signer, as no library builds PDUs the spec forbids.
func resign(t *testing.T, signer events.Signer, raw json.RawMessage) json.RawMessage {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	delete(doc, "signatures")
	delete(doc, "unsigned")
	delete(doc, "hashes")
	sum := sha256.Sum256(canonical(t, doc))
	doc["hashes"] = map[string]string{"sha256": base64.RawStdEncoding.EncodeToString(sum[:])}
	full, _ := json.Marshal(doc)
	redacted, err := gomatrixserverlib.MustGetRoomVersion("12").RedactEventJSON(full)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := gomatrixserverlib.SignJSON(signer.ServerName, gomatrixserverlib.KeyID(signer.Key.ID), signer.Key.Private, redacted)
	if err != nil {
		t.Fatal(err)
	}
	var sigs struct {
		Signatures map[string]any `json:"signatures"`
	}
	json.Unmarshal(signed, &sigs)
	doc["signatures"] = sigs.Signatures
	out, _ := json.Marshal(doc)
	return out
}

// refID is the event ID of raw, a version 12 PDU: the hash of its
// redacted form.
func refID(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	redacted, err := gomatrixserverlib.MustGetRoomVersion("12").RedactEventJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	json.Unmarshal(redacted, &doc)
	delete(doc, "signatures")
	delete(doc, "unsigned")
	sum := sha256.Sum256(canonical(t, doc))
	return "$" + base64.RawURLEncoding.EncodeToString(sum[:])
}

func canonical(t *testing.T, doc map[string]any) []byte {
	t.Helper()
	raw, _ := json.Marshal(doc)
	out, err := gomatrixserverlib.CanonicalJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSend_Corpus: forged and invalid PDUs sent to /send by a remote
// server in a room it is in. Each is refused, in /send's answer or by the
// room engine (stored rejected, outside the timeline), never shown to
// alice (/messages, /sync), and logged with its reason. A PDU whose content
// does not match its hash is kept redacted: its content never shows. The
// send_join of a non-join and the send_leave of a non-leave are refused at
// those endpoints (TestSendJoin_Errors: LeaveToSendJoin, JoinToSendLeave).
func TestSend_Corpus(t *testing.T) {
	c := newCorpusRoom(t)
	fs, rm := c.fs, c.rm
	bob := c.user("bob")

	// carol joins, then alice bans her: her next message is a banned
	// user's.
	carol := c.user("carol")
	carolJoin := c.build(t, c.signer, events.Proto{Sender: carol, Type: events.Member, StateKey: &carol, Content: json.RawMessage(`{"membership":"join"}`)})
	rm.send(t, fs.FedURL, "carol", []json.RawMessage{carolJoin.JSON()}, nil)
	fs.work(t)
	if r := fs.Do(t, "POST", "/_matrix/client/v3/rooms/"+c.id+"/ban", fs.Alice.AccessToken, map[string]any{"user_id": carol}); r.Status != http.StatusOK {
		t.Fatalf("ban carol: %d %s", r.Status, r.Raw)
	}

	forger, _ := keys.Generate()
	forger.ID = rm.Key.ID
	forged := c.build(t, events.Signer{ServerName: rm.Name, Key: forger}, events.Proto{Sender: bob, Type: "m.room.message", Content: json.RawMessage(`{"msgtype":"m.text","body":"forged"}`)})
	hashed := c.message(t, bob, "original")
	withID := c.message(t, bob, "with an event_id")
	empty := ""
	// A version 12 create event names no room; one that names this room
	// is signed by hand, as no library builds it.
	secondCreate := resign(t, c.signer, edit(t, c.message(t, bob, "create"), func(d map[string]any) {
		d["type"], d["state_key"], d["content"] = events.Create, empty, map[string]any{"room_version": "12"}
	}))
	power := c.build(t, c.signer, events.Proto{Sender: bob, Type: events.PowerLevels, StateKey: &empty, Content: json.RawMessage(`{"users":{"` + bob + `":100}}`)})
	banned := c.message(t, carol, "from a banned user")
	// In version 12 the create event is the room ID's, never an auth event.
	createAuth := resign(t, c.signer, edit(t, c.message(t, bob, "create as auth event"), func(d map[string]any) {
		d["auth_events"] = append(d["auth_events"].([]any), "$"+strings.TrimPrefix(c.id, "!"))
	}))
	content, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": "after a gap"})
	gap, err := c.signer.Build("12", events.Proto{RoomID: c.id, Sender: bob, Type: "m.room.message", Content: content},
		events.Graph{PrevEvents: []string{"$nosuchevent0000000000000000000000000000000"}, Depth: 50}, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	big := resign(t, c.signer, edit(t, c.message(t, bob, "big"), func(d map[string]any) {
		d["content"] = map[string]any{"msgtype": "m.text", "body": strings.Repeat("x", 70_000)}
	}))

	for _, tc := range []struct {
		name string
		id   string
		pdu  json.RawMessage
		// refused is what /send answers for the PDU, "" when it takes it
		// for the engine; reason is what the logs say of it.
		refused, reason string
	}{
		{"BadSignature", forged.EventID(), forged.JSON(), "signature", "signature"},
		{"BadContentHash", hashed.EventID(), edit(t, hashed, func(d map[string]any) {
			d["content"] = map[string]any{"msgtype": "m.text", "body": "tampered"}
		}), "", "content hash"},
		{"EventIDFieldInV12", withID.EventID(), edit(t, withID, func(d map[string]any) { d["event_id"] = withID.EventID() }), "event_id", "event_id"},
		{"SecondCreate", refID(t, secondCreate), secondCreate, "", "create"},
		{"NotAllowedByAuthEvents", power.EventID(), power.JSON(), "", "kept out"},
		{"CreateInAuthEventsV12", refID(t, createAuth), createAuth, "", "kept out"},
		{"BannedUser", banned.EventID(), banned.JSON(), "", "kept out"},
		{"UnfetchablePrevEvents", gap.EventID(), gap.JSON(), "", "dropped"},
		{"Oversize", refID(t, big), big, "65536 bytes", "65536 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rm.send(t, fs.FedURL, "corpus-"+tc.name, []json.RawMessage{tc.pdu}, nil)
			if r.Status != http.StatusOK {
				t.Fatalf("send: %d %s", r.Status, r.Raw)
			}
			res := pduResults(t, r)[tc.id]
			msg, _ := res["error"].(string)
			switch {
			case tc.refused != "" && !strings.Contains(msg, tc.refused):
				t.Errorf("/send answered %v for it, want an error about %q", res, tc.refused)
			case tc.refused == "" && (res == nil || msg != ""):
				t.Errorf("/send answered %v for it, want it taken for the room engine", res)
			}
			fs.work(t)
			for _, line := range strings.Split(fs.Logs(), "\n") {
				if strings.Contains(line, tc.id) && strings.Contains(line, tc.reason) {
					t.Log(line)
					return
				}
			}
			t.Errorf("no log line names %s with %q", tc.id, tc.reason)
		})
	}

	// None shows to alice; the PDU with the wrong hash shows redacted.
	refused := map[string]bool{}
	for _, id := range []string{forged.EventID(), withID.EventID(), refID(t, secondCreate), refID(t, createAuth), power.EventID(), banned.EventID(), gap.EventID(), refID(t, big)} {
		refused[id] = true
	}
	r := fs.Do(t, "GET", "/_matrix/client/v3/rooms/"+c.id+"/messages?dir=b&limit=100", fs.Alice.AccessToken, nil)
	chunk, _ := r.Body["chunk"].([]any)
	sync := fs.Do(t, "GET", "/_matrix/client/v3/sync?timeout=0", fs.Alice.AccessToken, nil)
	rooms, _ := sync.Body["rooms"].(map[string]any)
	joined, _ := rooms["join"].(map[string]any)
	room, _ := joined[c.id].(map[string]any)
	timeline, _ := room["timeline"].(map[string]any)
	syncEvents, _ := timeline["events"].([]any)
	var seenHashed bool
	for what, evs := range map[string][]any{"/messages": chunk, "/sync": syncEvents} {
		var ids []string
		for _, e := range evs {
			ev, _ := e.(map[string]any)
			id, _ := ev["event_id"].(string)
			ids = append(ids, id)
			if refused[id] {
				t.Errorf("%s shows refused event %s: %v", what, id, ev)
			}
			if id == hashed.EventID() {
				seenHashed = true
				if got := fmt.Sprint(ev["content"]); got != "map[]" {
					t.Errorf("%s shows the PDU whose hash failed with content %s, want it redacted", what, got)
				}
			}
		}
		if what == "/messages" && !slices.Contains(ids, carolJoin.EventID()) {
			t.Errorf("/messages %v lacks carol's join: the room's timeline is not what the test set up", ids)
		}
	}
	if !seenHashed {
		t.Errorf("the PDU whose hash failed is not in the timeline, want it there redacted")
	}
	if strings.Contains(string(r.Raw)+string(sync.Raw), "tampered") {
		t.Errorf("the tampered content shows to alice")
	}
}
