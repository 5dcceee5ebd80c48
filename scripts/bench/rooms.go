package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/cirrus-matrix/cirrus/shared/search"
)

// The bench room: the bench user creates it and a second user joins it, so
// that messages are sent into a two-member room, the case the project's
// cost goal is set for.
const (
	benchMember = "bench2"
	// messageBody is a plain text message of a typical length.
	messageBody = `{"msgtype":"m.text","body":"` + sentBody + `"}`
	sentBody    = "A plain text message from the bench, about as long as a chat line."
	// messagesLimit is how many events the larger messages workload asks
	// for (a smaller one asks for 20, a screen of a timeline).
	messagesLimit = 100
)

// The project's goals for sending a plain message into a two-member room.
const (
	maxWCUPerMessage = 3.0 // Cirrus's write capacity units per message sent, for the room itself
	// syncEntriesPerMessage is what telling the bench room's two local
	// members' syncs adds to a message: one stream entry of 1 WCU each, the
	// fan-out the sync design asks for (docs/storage.md, "Sync"). The goal
	// counts the room's own writes; the results table shows the total.
	syncEntriesPerMessage = 2.0
	minSendSpeedup        = 5.0 // Cirrus's send throughput at c=8 over Dendrite's
	goalConcurrency       = 8   // the send workload the throughput goal is for
)

// indexWritesPerMessage is what the search index adds to a bench message:
// one item of 1 WCU per distinct word (docs/storage.md, "Server-side
// search"), a feature of its own (enable_search) that the room's goal
// leaves out.
var indexWritesPerMessage = float64(search.IndexedWords(sentBody))

// benchRoom is a server's bench room: its ID, or why there is none.
type benchRoom struct {
	ID  string
	Err error
}

// sendMessage is PUT /rooms/{roomId}/send/m.room.message/{txnId} into the
// bench room from c concurrent clients, all with the bench user's token and
// a new transaction ID every request.
func sendMessage(c int) endpoint {
	return endpoint{
		Label: fmt.Sprintf("send c=%d", c), Method: http.MethodPut, Auth: true, Concurrency: c,
		Path: "/_matrix/client/v3/rooms/{roomId}/send/m.room.message/{txnId}", Body: messageBody,
		Modelled: true,
	}
}

// roomMessages is GET /rooms/{roomId}/messages of limit events backwards
// from the end of the bench room, once it holds at least limit messages
// (the room is given that many before it is measured).
func roomMessages(limit int) endpoint {
	return endpoint{
		Label: fmt.Sprintf("messages %d", limit), Auth: true, Fill: limit, Modelled: true,
		Check: func(_ *server, body []byte) error { return checkMessages(body, limit) },
		Path:  fmt.Sprintf("/_matrix/client/v3/rooms/{roomId}/messages?dir=b&limit=%d", limit),
	}
}

// screenMessages is /messages of 20 events, a screen of a timeline, from
// one client: the request a user waits for on opening a room.
func screenMessages() endpoint {
	ep := roomMessages(20)
	ep.Concurrency = 1
	return ep
}

// checkMessages checks that a /messages answer holds the last limit events
// of the room, all of them messages the bench has just sent.
func checkMessages(body []byte, limit int) error {
	var page struct {
		Chunk []struct {
			Type    string `json:"type"`
			Content struct {
				Body string `json:"body"`
			} `json:"content"`
		} `json:"chunk"`
	}
	if err := json.Unmarshal(body, &page); err != nil {
		return fmt.Errorf("decode the answer: %w", err)
	}
	if len(page.Chunk) != limit {
		return fmt.Errorf("the chunk holds %d events, want %d", len(page.Chunk), limit)
	}
	for i, e := range page.Chunk {
		if e.Type != "m.room.message" || e.Content.Body != sentBody {
			return fmt.Errorf("event %d of the chunk is %s %q, want one of the messages sent", i, e.Type, e.Content.Body)
		}
	}
	return nil
}

// setupRoom registers the second bench user on s, has the bench user create
// a private room and invite it, has it join, and returns the room's ID.
func setupRoom(ctx context.Context, s *server) (string, error) {
	memberID, memberToken, err := register(ctx, s, benchMember, benchPassword)
	if err != nil {
		return "", err
	}
	var created struct {
		RoomID string `json:"room_id"`
	}
	err = requestJSON(ctx, s, http.MethodPost, s.ClientURL+"/_matrix/client/v3/createRoom", s.token,
		map[string]any{"preset": "private_chat"}, &created)
	if err != nil {
		return "", fmt.Errorf("create the room: %w", err)
	}
	if created.RoomID == "" {
		return "", errors.New("create the room: no room_id in the answer")
	}
	room := url.PathEscape(created.RoomID)
	err = requestJSON(ctx, s, http.MethodPost, s.ClientURL+"/_matrix/client/v3/rooms/"+room+"/invite", s.token,
		map[string]any{"user_id": memberID}, nil)
	if err != nil {
		return "", fmt.Errorf("invite %s: %w", memberID, err)
	}
	err = requestJSON(ctx, s, http.MethodPost, s.ClientURL+"/_matrix/client/v3/join/"+room, memberToken,
		map[string]any{}, nil)
	if err != nil {
		return "", fmt.Errorf("join as %s: %w", memberID, err)
	}
	return created.RoomID, nil
}

// fillRoom sends n messages, unmeasured, into the bench room of s.
func fillRoom(ctx context.Context, s *server, n int) error {
	ep := sendMessage(goalConcurrency)
	l := load(ctx, s, ep, endpointURL(s, ep), n, ep.Concurrency)
	if l.errors > 0 {
		return fmt.Errorf("send %d messages into the room: %d failed, the first: %w", n, l.errors, l.firstErr)
	}
	return nil
}

// goal is one of the project's targets, checked against a run.
type goal struct {
	Name   string   `json:"name"`
	Target string   `json:"target"`
	Value  *float64 `json:"value,omitempty"`
	Met    bool     `json:"met"`
	// Missing says why the value could not be measured.
	Missing string `json:"missing,omitempty"`
}

// goals checks the results against the project's goals for sending: the
// WCU per message of every send workload, and the send throughput at
// goalConcurrency over Dendrite's.
func goals(results []result) []goal {
	var out []goal
	for _, c := range []int{1, goalConcurrency} {
		name := sendMessage(c).name()
		g := goal{Name: name + ": room WCU per message (cirrus)", Target: fmt.Sprintf("<= %g", maxWCUPerMessage)}
		r, ok := findResult(results, name, "cirrus")
		if g.Missing = unmeasured(r, ok, "cirrus"); g.Missing == "" && r.WCU == nil {
			g.Missing = "no request log line matched"
		}
		if g.Missing == "" {
			own := *r.WCU - syncEntriesPerMessage - indexWritesPerMessage
			g.Value, g.Met = &own, own <= maxWCUPerMessage
		}
		out = append(out, g)
	}

	name := sendMessage(goalConcurrency).name()
	g := goal{Name: name + ": req/s cirrus / dendrite", Target: fmt.Sprintf(">= %gx", minSendSpeedup)}
	c, okC := findResult(results, name, "cirrus")
	d, okD := findResult(results, name, "dendrite")
	if g.Missing = unmeasured(c, okC, "cirrus"); g.Missing == "" {
		g.Missing = unmeasured(d, okD, "dendrite")
	}
	if g.Missing == "" {
		v := c.PerSecond / d.PerSecond
		g.Value, g.Met = &v, v >= minSendSpeedup
	}
	return append(out, g)
}

// findResult returns the result of an endpoint on a server.
func findResult(results []result, endpoint, server string) (result, bool) {
	for _, r := range results {
		if r.Endpoint == endpoint && r.Server == server {
			return r, true
		}
	}
	return result{}, false
}

// unmeasured says why the result of a server, found or not, has no
// figures, or "" when it has them.
func unmeasured(r result, found bool, server string) string {
	switch {
	case !found:
		return server + " not measured"
	case r.Failed != "":
		return server + " failed"
	case r.PerSecond <= 0:
		return server + ": no successful request"
	}
	return ""
}
