package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The sliding sync workloads: simplified sliding sync (MSC4186) as Element X
// uses it, for the sync user of the sync workloads (the same 50 rooms),
// beside its /sync on Cirrus. Dendrite v0.13.8 has no sliding sync, so the
// comparison is Cirrus's /sync against Cirrus's sliding sync; on Dendrite
// these workloads are reported failed with that reason.
const (
	slidingPath = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
	// slidingConnID is the conn_id of Element X's room list connection.
	slidingConnID = "room-list"
)

// noSlidingSync is why the sliding sync workloads do not run on Dendrite.
var noSlidingSync = errors.New("Dendrite " + dendriteVersion + " has no sliding sync (MSC4186): compare Cirrus's sliding sync with Cirrus's /sync")

// slidingRequired is the required_state of Element X's room list
// (matrix-rust-sdk's DEFAULT_REQUIRED_STATE).
var slidingRequired = [][2]string{
	{"m.room.name", ""}, {"m.room.encryption", ""}, {"m.room.member", "$LAZY"}, {"m.room.member", "$ME"},
	{"m.room.topic", ""}, {"m.room.avatar", ""}, {"m.room.canonical_alias", ""}, {"m.room.power_levels", ""},
	{"org.matrix.msc3401.call.member", "*"}, {"m.room.join_rules", ""}, {"m.room.tombstone", ""},
	{"m.room.create", ""}, {"m.room.history_visibility", ""}, {"io.element.functional_members", ""},
	{"m.space.parent", "*"}, {"m.space.child", "*"},
}

// slidingBody is the body of Element X's room list request: every room of
// the sync user in one window, the last event of each, and the extensions
// of its room list connection.
func slidingBody() map[string]any {
	return map[string]any{
		"conn_id": slidingConnID,
		"lists": map[string]any{"all_rooms": map[string]any{
			"ranges":         [][2]int{{0, syncRooms - 1}},
			"timeline_limit": 1,
			"required_state": slidingRequired,
		}},
		"extensions": map[string]any{
			"account_data": map[string]any{"enabled": true},
			"receipts":     map[string]any{"enabled": true, "rooms": []string{"*"}},
			"typing":       map[string]any{"enabled": true},
		},
	}
}

// slidingAnswer is the part of a sliding sync answer the bench reads.
type slidingAnswer struct {
	Pos   string `json:"pos"`
	Lists map[string]struct {
		Count int `json:"count"`
	} `json:"lists"`
	Rooms map[string]struct {
		Timeline []struct {
			EventID string `json:"event_id"`
			Type    string `json:"type"`
			Content struct {
				Body string `json:"body"`
			} `json:"content"`
		} `json:"timeline"`
	} `json:"rooms"`
}

func parseSliding(body []byte) (slidingAnswer, error) {
	var a slidingAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return a, fmt.Errorf("decode the sliding sync answer: %w", err)
	}
	if a.Pos == "" {
		return a, errors.New("the sliding sync answer has no pos")
	}
	return a, nil
}

// has reports whether the answer's timeline of a room holds an event that
// match accepts.
func (a slidingAnswer) has(roomID string, match func(eventID, body string) bool) bool {
	for _, e := range a.Rooms[roomID].Timeline {
		if e.Type == "m.room.message" && match(e.EventID, e.Content.Body) {
			return true
		}
	}
	return false
}

func (a slidingAnswer) timelineEvents() int {
	n := 0
	for _, r := range a.Rooms {
		n += len(r.Timeline)
	}
	return n
}

// slidingState is a server's sliding sync connection: the pos of its last
// answer, and the shape of the first request's answer for the report.
type slidingState struct {
	pos, first string
}

var (
	slidingMu     sync.Mutex
	slidingStates = map[*server]*slidingState{}
)

func slidingOf(s *server) *slidingState {
	slidingMu.Lock()
	defer slidingMu.Unlock()
	st := slidingStates[s]
	if st == nil {
		st = &slidingState{}
		slidingStates[s] = st
	}
	return st
}

// slidingRequest posts the room list request as the sync user, from pos
// unless it is empty, with the given timeout in the query (as Element X
// and matrix-js-sdk send it), and reads the whole answer; at is when it was
// read.
func slidingRequest(ctx context.Context, s *server, pos string, timeout time.Duration) (id string, body []byte, at time.Time, err error) {
	q := url.Values{"timeout": {strconv.FormatInt(timeout.Milliseconds(), 10)}}
	if pos != "" {
		q.Set("pos", pos)
	}
	u := s.ClientURL + slidingPath + "?" + q.Encode()
	doc, err := json.Marshal(slidingBody())
	if err != nil {
		return "", nil, time.Time{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(doc))
	if err != nil {
		return "", nil, time.Time{}, err
	}
	req.Header.Set("Authorization", "Bearer "+s.sync.token)
	req.Header.Set("Content-Type", "application/json")
	client := *s.client
	client.Timeout = syncClientTimeout
	res, err := client.Do(req)
	if err != nil {
		return "", nil, time.Time{}, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return "", nil, time.Time{}, statusError(http.MethodPost, u, res.StatusCode, readSome(res.Body))
	}
	body, err = io.ReadAll(res.Body)
	at = time.Now()
	if err != nil {
		return "", nil, at, fmt.Errorf("POST %s: read the answer: %w", u, err)
	}
	return res.Header.Get("X-Request-Id"), body, at, nil
}

// ensureSliding is the sliding workloads' Setup: the sync user and its
// rooms, on Cirrus only.
func ensureSliding(ctx context.Context, s *server) error {
	if s.Name == "dendrite" {
		return noSlidingSync
	}
	return ensureSync(ctx, s)
}

// currentPos is the sliding connection's newest pos, from an unmeasured
// first request when there is none yet.
func currentPos(ctx context.Context, s *server) (string, error) {
	st := slidingOf(s)
	if st.pos != "" {
		return st.pos, nil
	}
	_, body, _, err := slidingRequest(ctx, s, "", 0)
	if err != nil {
		return "", fmt.Errorf("first sliding sync for a pos: %w", err)
	}
	a, err := parseSliding(body)
	if err != nil {
		return "", err
	}
	st.pos = a.Pos
	return a.Pos, nil
}

// slidingFirst is the first request of a connection (no pos) for the sync
// user's 50 rooms.
func slidingFirst() endpoint {
	return endpoint{
		Label: fmt.Sprintf("sliding sync first (%d rooms)", syncRooms), Method: http.MethodPost, Path: slidingPath, SyncUser: true,
		Concurrency: 1, MaxRequests: initialSyncRequests, NoWarmup: true, Setup: ensureSliding, Run: runSlidingFirst,
		Describe: fmt.Sprintf("POST %s?timeout=0 without pos as the sync user of the sync workloads: Element X's room list request (conn_id %q, list all_rooms with ranges [[0,%d]], timeline_limit 1, its required_state with $LAZY and $ME members, extensions account_data, receipts and typing); the answer must hold all %d rooms, each with the last message; Cirrus only: %v",
			slidingPath, slidingConnID, syncRooms-1, syncRooms, noSlidingSync),
		Note: func(s *server) string { return slidingOf(s).first },
	}
}

func runSlidingFirst(ctx context.Context, s *server) (string, time.Duration, error) {
	t0 := time.Now()
	id, body, at, err := slidingRequest(ctx, s, "", 0)
	if err != nil {
		return "", 0, err
	}
	a, err := parseSliding(body)
	if err != nil {
		return "", 0, err
	}
	if got := a.Lists["all_rooms"].Count; got != len(s.sync.rooms) {
		return "", 0, fmt.Errorf("all_rooms count %d, want %d", got, len(s.sync.rooms))
	}
	for _, room := range s.sync.rooms {
		// The last message may be a wake-up's, which adds to sentBody.
		if !a.has(room, func(_, body string) bool { return strings.HasPrefix(body, sentBody) }) {
			return "", 0, fmt.Errorf("room %s is missing from the answer or its timeline holds no message (%d rooms in the answer)", room, len(a.Rooms))
		}
	}
	slidingOf(s).first = fmt.Sprintf("%d rooms, %d timeline events; %d bytes", len(a.Rooms), a.timelineEvents(), len(body))
	return id, at.Sub(t0), nil
}

// slidingIncremental sends one message into one of the sync user's rooms,
// in turn, and measures the request from the connection's pos.
func slidingIncremental() endpoint {
	return endpoint{
		Label: "sliding sync incremental", Method: http.MethodPost, Path: slidingPath + fmt.Sprintf("?pos={pos}&timeout=%d", incrementalTimeout.Milliseconds()), SyncUser: true,
		Concurrency: 1, MaxRequests: incrementalSyncRequests, Setup: ensureSliding, Run: runSlidingIncremental,
		Describe: fmt.Sprintf("the bench user sends a message into one of the sync user's rooms, then the room list request from the connection's pos with timeout=%d is timed; its answer must hold the message", incrementalTimeout.Milliseconds()),
	}
}

func runSlidingIncremental(ctx context.Context, s *server) (string, time.Duration, error) {
	pos, err := currentPos(ctx, s)
	if err != nil {
		return "", 0, err
	}
	return sendThenRead(ctx, s, "sliding sync", func(ctx context.Context) (string, time.Time, func(room, eventID string) bool, error) {
		id, body, at, err := slidingRequest(ctx, s, pos, incrementalTimeout)
		if err != nil {
			return "", at, nil, err
		}
		a, err := parseSliding(body)
		if err != nil {
			return "", at, nil, err
		}
		slidingOf(s).pos = a.Pos
		return id, at, func(room, eventID string) bool {
			return a.has(room, func(id, _ string) bool { return id == eventID })
		}, nil
	})
}

// slidingWakeUp has the sync user wait in a room list request with
// timeout 20000 while the bench user sends a message, as wakeUp(false).
func slidingWakeUp() endpoint {
	return endpoint{
		Label: "sliding sync wake-up", Method: http.MethodPost, Path: slidingPath + fmt.Sprintf("?pos={pos}&timeout=%d", wakeUpTimeout.Milliseconds()), SyncUser: true,
		Concurrency: 1, MaxRequests: wakeUpIterations, Setup: ensureSliding, Run: runSlidingWakeUp,
		Describe: fmt.Sprintf("the sync user waits in the room list request with timeout=%d; %d ms later the bench user sends a message into a room they share; timed from the send's answer to the answer that holds the message (0 when it answered first)",
			wakeUpTimeout.Milliseconds(), wakeUpDelay.Milliseconds()),
	}
}

func runSlidingWakeUp(ctx context.Context, s *server) (string, time.Duration, error) {
	f := &s.sync
	pos, err := currentPos(ctx, s)
	if err != nil {
		return "", 0, err
	}
	room := f.rooms[0]
	text := sentBody + " (sliding wake-up " + randomHex(4) + ")"
	poll := func(ctx context.Context, p string) (string, time.Time, string, bool, error) {
		id, raw, at, err := slidingRequest(ctx, s, p, wakeUpTimeout)
		if err != nil {
			return "", at, p, false, err
		}
		a, err := parseSliding(raw)
		if err != nil {
			return "", at, p, false, err
		}
		return id, at, a.Pos, a.has(room, func(_, b string) bool { return b == text }), nil
	}
	a, sent, err := awaitSent(ctx, pos, poll, wakeUpDelay, func(ctx context.Context) error {
		_, err := sendText(ctx, s, s, room, text)
		return err
	})
	slidingOf(s).pos = a.token
	if !sent.IsZero() {
		f.lastSent = sent
	}
	if err != nil {
		return "", 0, fmt.Errorf("sliding wake-up: %w", err)
	}
	return a.id, max(0, a.at.Sub(sent)), nil
}

// slidingIdle measures the room list request from the newest pos while
// nothing happens, as idleSync.
func slidingIdle(timeout time.Duration) endpoint {
	ep := endpoint{
		Label: fmt.Sprintf("sliding idle timeout=%d", timeout.Milliseconds()), Method: http.MethodPost, SyncUser: true,
		Path:        slidingPath + fmt.Sprintf("?pos={pos}&timeout=%d", timeout.Milliseconds()),
		Concurrency: 1, MaxRequests: idleSyncRequests, Setup: slidingQuiet,
		Run: func(ctx context.Context, s *server) (string, time.Duration, error) {
			return runSlidingIdle(ctx, s, timeout)
		},
		Describe: fmt.Sprintf("the room list request from the newest pos with timeout=%d while nothing happens, from %.0f s after the last message; the answer must hold no event",
			timeout.Milliseconds(), idleQuiet.Seconds()),
	}
	if timeout > 0 {
		ep.MaxRequests = idleWaitRequests
	}
	return ep
}

// slidingQuiet waits as quiet does, then takes a new pos.
func slidingQuiet(ctx context.Context, s *server) error {
	if err := ensureSliding(ctx, s); err != nil {
		return err
	}
	select {
	case <-time.After(time.Until(s.sync.lastSent.Add(idleQuiet))):
	case <-ctx.Done():
		return ctx.Err()
	}
	if _, err := currentPos(ctx, s); err != nil {
		return err
	}
	if _, _, err := runSlidingIdle(ctx, s, 0); err != nil {
		return fmt.Errorf("sliding sync for a new pos: %w", err)
	}
	return nil
}

func runSlidingIdle(ctx context.Context, s *server, timeout time.Duration) (string, time.Duration, error) {
	pos, err := currentPos(ctx, s)
	if err != nil {
		return "", 0, err
	}
	t0 := time.Now()
	id, body, at, err := slidingRequest(ctx, s, pos, timeout)
	if err != nil {
		return "", 0, err
	}
	a, err := parseSliding(body)
	if err != nil {
		return "", 0, err
	}
	slidingOf(s).pos = a.Pos
	if n := a.timelineEvents(); n > 0 {
		return "", 0, fmt.Errorf("not idle: the answer holds %d timeline events", n)
	}
	return id, at.Sub(t0), nil
}

// slidingPairs pairs each sliding sync workload with its /sync one.
func slidingPairs() [][2]endpoint {
	return [][2]endpoint{
		{slidingFirst(), initialSync()},
		{slidingIncremental(), incrementalSync()},
		{slidingWakeUp(), wakeUp(false)},
		{slidingIdle(0), idleSync(0)},
		{slidingIdle(idleTimeout), idleSync(idleTimeout)},
	}
}

// printSliding writes Cirrus's sliding sync beside its /sync: latency and
// DynamoDB figures per request, their ratios, and the read units of one
// poll of an idle waiting request.
func printSliding(w io.Writer, r *report) {
	if _, ok := findResult(r.Results, slidingFirst().name(), "cirrus"); !ok {
		return
	}
	fmt.Fprintf(w, "\nsliding sync (MSC4186, Element X's room list request) beside /sync, both on Cirrus: %v\n", noSlidingSync)
	fig := func(x *float64) string {
		if x == nil {
			return "n/a"
		}
		return fmt.Sprintf("%.2f", *x)
	}
	for _, p := range slidingPairs() {
		sl, okS := findResult(r.Results, p[0].name(), "cirrus")
		sy, okY := findResult(r.Results, p[1].name(), "cirrus")
		if m := unmeasured(sl, okS, "cirrus"); m != "" {
			fmt.Fprintf(w, "  %-28s %s\n", p[0].name()+":", m)
			continue
		}
		line := fmt.Sprintf("  %-28s p50 %.1f ms, p99 %.1f ms, %s calls, %s RCU, %s WCU", p[0].name()+":", sl.P50MS, sl.P99MS, fig(sl.Calls), fig(sl.RCU), fig(sl.WCU))
		if m := unmeasured(sy, okY, "cirrus"); m != "" {
			line += "; " + p[1].name() + ": " + m
		} else {
			line += fmt.Sprintf("; %s: p50 %.1f ms, %s calls, %s RCU, %s WCU", p[1].name(), sy.P50MS, fig(sy.Calls), fig(sy.RCU), fig(sy.WCU))
			if sy.P50MS > 0 {
				line += fmt.Sprintf("; p50 sliding/sync %.2fx", sl.P50MS/sy.P50MS)
			}
			if sl.RCU != nil && sy.RCU != nil && *sy.RCU > 0 {
				line += fmt.Sprintf(", RCU sliding/sync %.2fx", *sl.RCU / *sy.RCU)
			}
		}
		fmt.Fprintln(w, line)
	}
	wait, okW := findResult(r.Results, slidingIdle(idleTimeout).name(), "cirrus")
	once, okO := findResult(r.Results, slidingIdle(0).name(), "cirrus")
	if unmeasured(wait, okW, "cirrus") != "" || unmeasured(once, okO, "cirrus") != "" || wait.Calls == nil || once.Calls == nil {
		return
	}
	if extra := *wait.Calls - *once.Calls; extra > 0 {
		fmt.Fprintf(w, "  idle sliding sync, timeout %d ms: %.2f RCU per poll (%.2f polls beyond the first read)\n", idleTimeout.Milliseconds(), (*wait.RCU-*once.RCU)/extra, extra)
	}
}
