package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/store/embedded"
)

// The sync workloads: a sync user is in syncRooms private rooms with the
// bench user, each given syncMessages messages by the bench user, once per
// server before the first of them is measured. The bench user then sends
// (the other client) and the sync user syncs.
const (
	syncUserName = "benchsync"
	syncRooms    = 50
	syncMessages = 20
	// syncSetupConcurrency is how many rooms are set up at once.
	syncSetupConcurrency = 8

	// Requests per server of the sync workloads, at most (-n caps them too;
	// -warmup is capped at a quarter). An initial sync of 50 rooms takes
	// about half a second on either server.
	initialSyncRequests     = 20
	incrementalSyncRequests = 100
	wakeUpIterations        = 40
	twoInstanceIterations   = 30
	idleSyncRequests        = 100
	idleWaitRequests        = 4

	// incrementalTimeout is the timeout of the timed incremental sync.
	incrementalTimeout = 10 * time.Second

	// syncClientTimeout bounds a sync request, waiting ones included.
	syncClientTimeout = 3 * time.Minute

	// wakeUpTimeout is the timeout of the waiting syncs of the wake-up
	// workloads; wakeUpDelay is how long after sending its sync the bench
	// sends the message, time for the sync to be waiting in the server.
	wakeUpTimeout = 20 * time.Second
	wakeUpDelay   = 100 * time.Millisecond
	// idleTimeout is the timeout of the idle sync whose units are divided
	// by the polls it made.
	idleTimeout = 3 * time.Second
	// cirrusSyncWindow is how far before its token's time Cirrus reads a
	// user's stream (window in shared/sync/stream.go): an idle sync reads no
	// entry only once that long has passed since the last news.
	cirrusSyncWindow = 10 * time.Second
)

// idleQuiet is how long after the last message to the sync user the idle
// syncs are measured (a variable for tests).
var idleQuiet = cirrusSyncWindow + time.Second

// The project's goals for /sync.
const (
	wakeUpSlack       = 100 * time.Millisecond // wake-up p99 at most the poll interval plus this
	maxRCUPerIdlePoll = 0.5                    // read units of one poll of an idle waiting sync
)

// syncFixture is a server's sync user and its rooms, set up once; and where
// the sync workloads are in its stream.
type syncFixture struct {
	done   bool
	err    error // why the set-up failed; the sync workloads fail with it
	userID string
	token  string
	rooms  []string
	// since is the next_batch of the sync user's last sync.
	since string
	// next is the index of the room of the next incremental sync's message.
	next int
	// lastSent is when the last message to the sync user was sent.
	lastSent time.Time
	// sender, when set, is where the bench user's messages are sent: the
	// other instance of two sharing a DynamoDB, or with senderOwns another
	// server, whose own bench user sends them.
	sender     *server
	senderOwns bool
	// timeline is the shape of the initial sync's answer, for the report.
	timeline string
	// wakeUps counts the wake-ups run, early those where the waiting sync
	// answered before the send did.
	wakeUps, early int
}

// ensureSync sets up the sync user and its rooms on s once; a later call
// returns the first one's error.
func ensureSync(ctx context.Context, s *server) error {
	f := &s.sync
	if !f.done {
		f.done = true
		f.err = setupSync(ctx, s, syncRooms, syncMessages)
		if f.err != nil {
			f.err = fmt.Errorf("set up the sync user's rooms: %w", f.err)
		}
	}
	return f.err
}

// setupSync registers the sync user on s; has it create rooms private
// rooms, one after the other, each with the bench user invited; and has the
// bench user join them and send each messages messages, several rooms at
// once. It keeps the rooms' IDs.
func setupSync(ctx context.Context, s *server, rooms, messages int) error {
	if s.userID == "" {
		return errors.New("no bench user")
	}
	userID, token, err := register(ctx, s, syncUserName, benchPassword)
	if err != nil {
		return err
	}
	f := &s.sync
	f.userID, f.token = userID, token
	// One at a time, as a client does: Cirrus answers some of the
	// createRoom requests of one user sent at once with 500 ("room head
	// moved", a transaction conflict).
	ids := make([]string, rooms)
	for i := range ids {
		if ids[i], err = createSyncRoom(ctx, s); err != nil {
			return err
		}
	}
	errs := make([]error, rooms)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(syncSetupConcurrency, rooms) {
		wg.Go(func() {
			for i := range next {
				errs[i] = fillSyncRoom(ctx, s, ids[i], messages)
			}
		})
	}
	for i := range rooms {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := firstError(errs); err != nil {
		return err
	}
	f.rooms, f.lastSent = ids, time.Now()
	return nil
}

// firstError is the first of errs that is not nil, saying how many more
// there are.
func firstError(errs []error) error {
	var first error
	more := 0
	for _, err := range errs {
		switch {
		case err == nil:
		case first == nil:
			first = err
		default:
			more++
		}
	}
	if more > 0 {
		return fmt.Errorf("%w (and %d more errors)", first, more)
	}
	return first
}

// createSyncRoom has the sync user create a private room with the bench
// user invited.
func createSyncRoom(ctx context.Context, s *server) (string, error) {
	var created struct {
		RoomID string `json:"room_id"`
	}
	err := requestJSON(ctx, s, http.MethodPost, s.ClientURL+"/_matrix/client/v3/createRoom", s.sync.token,
		map[string]any{"preset": "private_chat", "invite": []string{s.userID}}, &created)
	if err != nil {
		return "", fmt.Errorf("create a room: %w", err)
	}
	if created.RoomID == "" {
		return "", errors.New("create a room: no room_id in the answer")
	}
	return created.RoomID, nil
}

// fillSyncRoom has the bench user join a room it is invited to and send it
// messages messages.
func fillSyncRoom(ctx context.Context, s *server, roomID string, messages int) error {
	err := requestJSON(ctx, s, http.MethodPost, s.ClientURL+"/_matrix/client/v3/join/"+url.PathEscape(roomID), s.token,
		map[string]any{}, nil)
	if err != nil {
		return fmt.Errorf("join as %s: %w", s.userID, err)
	}
	for range messages {
		if _, err := sendText(ctx, s, s, roomID, sentBody); err != nil {
			return err
		}
	}
	return nil
}

// sendText sends a plain message as the bench user of owner (its token and
// transaction IDs) through via, and returns its event ID.
func sendText(ctx context.Context, via, owner *server, roomID, body string) (string, error) {
	txn := "bench-" + strconv.FormatInt(owner.txns.Add(1), 10)
	u := via.ClientURL + "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/send/m.room.message/" + txn
	var sent struct {
		EventID string `json:"event_id"`
	}
	err := requestJSON(ctx, via, http.MethodPut, u, owner.token, map[string]string{"msgtype": "m.text", "body": body}, &sent)
	if err != nil {
		return "", err
	}
	if sent.EventID == "" {
		return "", fmt.Errorf("PUT %s: no event_id in the answer", u)
	}
	return sent.EventID, nil
}

// syncAnswer is the part of a /sync answer the bench reads.
type syncAnswer struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events []struct {
					EventID string `json:"event_id"`
					Type    string `json:"type"`
					Content struct {
						Body string `json:"body"`
					} `json:"content"`
				} `json:"events"`
			} `json:"timeline"`
		} `json:"join"`
	} `json:"rooms"`
}

func parseSync(body []byte) (syncAnswer, error) {
	var a syncAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return a, fmt.Errorf("decode the sync answer: %w", err)
	}
	if a.NextBatch == "" {
		return a, errors.New("the sync answer has no next_batch")
	}
	return a, nil
}

// has reports whether the answer's timeline of a room holds an event that
// match accepts.
func (a syncAnswer) has(roomID string, match func(eventID, body string) bool) bool {
	for _, e := range a.Rooms.Join[roomID].Timeline.Events {
		if e.Type == "m.room.message" && match(e.EventID, e.Content.Body) {
			return true
		}
	}
	return false
}

// timelineEvents counts the events of the answer's joined rooms' timelines.
func (a syncAnswer) timelineEvents() int {
	n := 0
	for _, r := range a.Rooms.Join {
		n += len(r.Timeline.Events)
	}
	return n
}

// syncRequest sends GET /sync as the sync user, from since unless it is
// empty, with the given timeout, and reads the whole answer; at is when it
// was read.
func syncRequest(ctx context.Context, s *server, since string, timeout time.Duration) (id string, body []byte, at time.Time, err error) {
	u := syncURL(s.ClientURL, since, timeout)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", nil, time.Time{}, err
	}
	req.Header.Set("Authorization", "Bearer "+s.sync.token)
	client := *s.client // the same connections, a longer timeout
	client.Timeout = syncClientTimeout
	res, err := client.Do(req)
	if err != nil {
		return "", nil, time.Time{}, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return "", nil, time.Time{}, statusError(http.MethodGet, u, res.StatusCode, readSome(res.Body))
	}
	body, err = io.ReadAll(res.Body)
	at = time.Now()
	if err != nil {
		return "", nil, at, fmt.Errorf("GET %s: read the answer: %w", u, err)
	}
	return res.Header.Get("X-Request-Id"), body, at, nil
}

// syncURL is the URL of GET /sync on a client listener.
func syncURL(clientURL, since string, timeout time.Duration) string {
	q := url.Values{}
	if since != "" {
		q.Set("since", since)
	}
	q.Set("timeout", strconv.FormatInt(timeout.Milliseconds(), 10))
	return clientURL + "/_matrix/client/v3/sync?" + q.Encode()
}

// currentSince is the sync user's newest token, from an unmeasured
// initial sync when there is none yet.
func currentSince(ctx context.Context, s *server) (string, error) {
	if s.sync.since != "" {
		return s.sync.since, nil
	}
	_, body, _, err := syncRequest(ctx, s, "", 0)
	if err != nil {
		return "", fmt.Errorf("initial sync for a token: %w", err)
	}
	a, err := parseSync(body)
	if err != nil {
		return "", err
	}
	s.sync.since = a.NextBatch
	return a.NextBatch, nil
}

// initialSync is GET /sync without a token as the sync user, with the
// server's default filter.
func initialSync() endpoint {
	return endpoint{
		Label: fmt.Sprintf("initial sync (%d rooms)", syncRooms), Path: "/_matrix/client/v3/sync", SyncUser: true,
		Concurrency: 1, MaxRequests: initialSyncRequests, NoWarmup: true, Setup: ensureSync, Run: runInitial, Modelled: true,
		Describe: fmt.Sprintf("GET /_matrix/client/v3/sync without since or filter (the server's default timeline limit), as a user in %d private rooms of two members with %d messages each", syncRooms, syncMessages),
		Note:     func(s *server) string { return s.sync.timeline },
	}
}

// runInitial is one initial sync, timed, and checked.
func runInitial(ctx context.Context, s *server) (string, time.Duration, error) {
	t0 := time.Now()
	id, body, at, err := syncRequest(ctx, s, "", 0)
	if err != nil {
		return "", 0, err
	}
	if err := checkInitialSync(s, body); err != nil {
		return "", 0, err
	}
	return id, at.Sub(t0), nil
}

// checkInitialSync checks that an initial sync holds the sync user's rooms,
// each with the newest of the messages sent into it, and notes the size of
// their timelines.
func checkInitialSync(s *server, body []byte) error {
	a, err := parseSync(body)
	if err != nil {
		return err
	}
	lengths := map[int]int{}
	var sizes []int
	for _, room := range s.sync.rooms {
		r, ok := a.Rooms.Join[room]
		if !ok {
			return fmt.Errorf("room %s is not among the %d joined rooms of the answer", room, len(a.Rooms.Join))
		}
		if !a.has(room, func(_, body string) bool { return body == sentBody }) {
			return fmt.Errorf("the timeline of room %s holds none of the messages sent", room)
		}
		if lengths[len(r.Timeline.Events)]++; lengths[len(r.Timeline.Events)] == 1 {
			sizes = append(sizes, len(r.Timeline.Events))
		}
	}
	slices.Sort(sizes)
	var shape []string
	for _, n := range sizes {
		shape = append(shape, fmt.Sprintf("%d with %d", lengths[n], n))
	}
	s.sync.timeline = fmt.Sprintf("%d joined rooms; timeline events per room: %s; %d bytes", len(a.Rooms.Join), strings.Join(shape, ", "), len(body))
	return nil
}

// incrementalSync sends one message into one of the sync user's rooms, in
// turn, and then measures GET /sync from the previous token with timeout 0.
func incrementalSync() endpoint {
	return endpoint{
		Label: "incremental sync", Path: fmt.Sprintf("/_matrix/client/v3/sync?since={token}&timeout=%d", incrementalTimeout.Milliseconds()), SyncUser: true,
		Concurrency: 1, MaxRequests: incrementalSyncRequests, Setup: ensureSync, Run: runIncremental, Modelled: true,
		Describe: fmt.Sprintf("the bench user sends a message into one of the sync user's rooms, then the sync user's GET /_matrix/client/v3/sync?since=<its previous next_batch>&timeout=%d is timed; its answer must hold the message (the timeout lets a server that makes a message visible to sync a moment after answering the send, as Dendrite does, answer when it is, instead of failing)", incrementalTimeout.Milliseconds()),
	}
}

func runIncremental(ctx context.Context, s *server) (string, time.Duration, error) {
	since, err := currentSince(ctx, s)
	if err != nil {
		return "", 0, err
	}
	return sendThenRead(ctx, s, "sync", func(ctx context.Context) (string, time.Time, func(room, eventID string) bool, error) {
		id, body, at, err := syncRequest(ctx, s, since, incrementalTimeout)
		if err != nil {
			return "", at, nil, err
		}
		a, err := parseSync(body)
		if err != nil {
			return "", at, nil, err
		}
		s.sync.since = a.NextBatch
		return id, at, func(room, eventID string) bool {
			return a.has(room, func(id, _ string) bool { return id == eventID })
		}, nil
	})
}

// sendThenRead is one incremental request, of /sync or sliding sync
// (what): the bench user sends a message into the next of the sync user's
// rooms, then read is timed, and its answer must hold the message.
func sendThenRead(ctx context.Context, s *server, what string, read func(context.Context) (string, time.Time, func(room, eventID string) bool, error)) (string, time.Duration, error) {
	f := &s.sync
	room := f.rooms[f.next%len(f.rooms)]
	f.next++
	eventID, err := sendText(ctx, s, s, room, sentBody)
	if err != nil {
		return "", 0, err
	}
	f.lastSent = time.Now()
	t0 := time.Now()
	id, at, holds, err := read(ctx)
	if err != nil {
		return "", 0, err
	}
	if !holds(room, eventID) {
		return "", 0, fmt.Errorf("the %s after the message %s did not hold it", what, eventID)
	}
	return id, at.Sub(t0), nil
}

// wakeUp has the sync user wait in GET /sync?since=…&timeout=20000 while
// the bench user sends a message into a room they share, and measures from
// the send's answer to the answer of the waiting sync that holds the
// message. With twoInstances the sync waits on one Cirrus instance and the
// message is sent to another, on the same DynamoDB: the sync finds it at a
// poll, and the message is sent at a random point of the poll interval.
func wakeUp(twoInstances bool) endpoint {
	ep := endpoint{
		Label: "sync wake-up", Path: fmt.Sprintf("/_matrix/client/v3/sync?since={token}&timeout=%d", wakeUpTimeout.Milliseconds()), SyncUser: true,
		Concurrency: 1, MaxRequests: wakeUpIterations, Setup: ensureSync, Note: wakeUpNote, Modelled: true,
		Run: func(ctx context.Context, s *server) (string, time.Duration, error) {
			return runWakeUp(ctx, s, 0)
		},
		Describe: fmt.Sprintf("the sync user waits in GET /_matrix/client/v3/sync?since=<its next_batch>&timeout=%d; %d ms later the bench user sends a message into a room they share; timed from the send's answer to the answer of the sync that holds the message (0 when the sync answered first); cirrus serve wakes the sync in the process that stored the message",
			wakeUpTimeout.Milliseconds(), wakeUpDelay.Milliseconds()),
	}
	if twoInstances {
		ep.Label, ep.TwoInstances, ep.MaxRequests, ep.Modelled = "sync wake-up, 2 instances", true, twoInstanceIterations, false
		ep.Run = func(ctx context.Context, s *server) (string, time.Duration, error) {
			return runWakeUp(ctx, s, s.pollInterval)
		}
		ep.Describe = fmt.Sprintf("the same, with the sync waiting on one cirrus serve and the message sent to another, both on one DynamoDB (served by the bench): the waiting sync finds it at its next poll; the message is sent %d ms plus a random part of the poll interval after the sync; Cirrus only (Dendrite runs as one process)", wakeUpDelay.Milliseconds())
	}
	return ep
}

// wakeUpNote says how often the waiting sync answered first.
func wakeUpNote(s *server) string {
	if s.sync.early == 0 {
		return ""
	}
	return fmt.Sprintf("the waiting sync answered before the send did in %d of %d wake-ups, warm-up included (counted as 0 ms)", s.sync.early, s.sync.wakeUps)
}

// runWakeUp is one wake-up: the waiting sync starts, the message is sent
// after wakeUpDelay and a random part of jitter, and answers without it
// (other news) are followed by another waiting sync.
func runWakeUp(ctx context.Context, s *server, jitter time.Duration) (string, time.Duration, error) {
	f := &s.sync
	since, err := currentSince(ctx, s)
	if err != nil {
		return "", 0, err
	}
	room := f.rooms[0]
	body := sentBody + " (wake-up " + randomHex(4) + ")"
	poll := func(ctx context.Context, token string) (string, time.Time, string, bool, error) {
		id, raw, at, err := syncRequest(ctx, s, token, wakeUpTimeout)
		if err != nil {
			return "", at, token, false, err
		}
		a, err := parseSync(raw)
		if err != nil {
			return "", at, token, false, err
		}
		return id, at, a.NextBatch, a.has(room, func(_, b string) bool { return b == body }), nil
	}
	delay := wakeUpDelay
	if jitter > 0 {
		delay += rand.N(jitter)
	}
	via, owner := s, s
	if f.sender != nil {
		via = f.sender
	}
	if f.senderOwns {
		owner = f.sender
	}
	a, sent, err := awaitSent(ctx, since, poll, delay, func(ctx context.Context) error {
		_, err := sendText(ctx, via, owner, room, body)
		return err
	})
	f.since = a.token
	if !sent.IsZero() {
		f.lastSent = sent
	}
	if err != nil {
		return "", 0, fmt.Errorf("wake-up: %w", err)
	}
	f.wakeUps++
	if a.at.Before(sent) {
		f.early++
	}
	return a.id, max(0, a.at.Sub(sent)), nil
}

// wakeAnswer is the waiting request's answer that held the message, or
// its error; token is where the waiting requests got to either way.
type wakeAnswer struct {
	id    string
	at    time.Time
	token string
	err   error
}

// awaitSent is one wake-up, for /sync and sliding sync alike: poll waits
// from token (answering the request ID, when its answer came, the next
// token, and whether the answer held the message) and waits again while
// answers come without the message; after delay, send sends it. It returns
// the answer that held it and when the send was answered (zero if the send
// failed).
func awaitSent(ctx context.Context, token string, poll func(ctx context.Context, token string) (string, time.Time, string, bool, error),
	delay time.Duration, send func(context.Context) error) (wakeAnswer, time.Time, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	got := make(chan wakeAnswer, 1)
	go func() {
		for {
			id, at, next, held, err := poll(ctx, token)
			if err != nil {
				got <- wakeAnswer{err: err, token: token}
				return
			}
			token = next
			if held {
				got <- wakeAnswer{id: id, at: at, token: token}
				return
			}
		}
	}()
	select {
	case <-time.After(delay):
	case <-ctx.Done():
	}
	if err := send(ctx); err != nil {
		cancel()
		return <-got, time.Time{}, err
	}
	sent := time.Now()
	select {
	case a := <-got:
		if a.err != nil {
			return a, sent, fmt.Errorf("waiting request: %w", a.err)
		}
		return a, sent, nil
	case <-time.After(wakeUpTimeout):
		cancel()
		return <-got, sent, fmt.Errorf("no answer held the message within %s", wakeUpTimeout)
	}
}

// idleSync measures a sync from the newest token with the given timeout
// while nothing happens, once cirrusSyncWindow has passed since the last
// message: with timeout 0 it reads the stream once; with idleTimeout it
// waits, polling, and answers empty when the timeout passes.
func idleSync(timeout time.Duration) endpoint {
	ep := endpoint{
		Label: fmt.Sprintf("idle sync timeout=%d", timeout.Milliseconds()), SyncUser: true,
		Path:        fmt.Sprintf("/_matrix/client/v3/sync?since={token}&timeout=%d", timeout.Milliseconds()),
		Concurrency: 1, MaxRequests: idleSyncRequests, Setup: quiet,
		Run: func(ctx context.Context, s *server) (string, time.Duration, error) {
			return runIdle(ctx, s, timeout)
		},
		Describe: fmt.Sprintf("GET /_matrix/client/v3/sync?since=<the newest next_batch>&timeout=%d as the sync user while nothing happens, from %.0f s after the last message; the answer must hold no event",
			timeout.Milliseconds(), idleQuiet.Seconds()),
	}
	if timeout > 0 {
		ep.MaxRequests = idleWaitRequests
	}
	return ep
}

// quiet waits until cirrusSyncWindow has passed since the last message to
// the sync user, and takes a new token with a sync, so that Cirrus's idle reads find
// no entry at all, as for a user with nothing new.
func quiet(ctx context.Context, s *server) error {
	if err := ensureSync(ctx, s); err != nil {
		return err
	}
	select {
	case <-time.After(time.Until(s.sync.lastSent.Add(idleQuiet))):
	case <-ctx.Done():
		return ctx.Err()
	}
	if _, _, err := runIdle(ctx, s, 0); err != nil {
		return fmt.Errorf("sync for a new token: %w", err)
	}
	return nil
}

// runIdle is one idle sync (see idleSync), timed.
func runIdle(ctx context.Context, s *server, timeout time.Duration) (string, time.Duration, error) {
	since, err := currentSince(ctx, s)
	if err != nil {
		return "", 0, err
	}
	t0 := time.Now()
	id, body, at, err := syncRequest(ctx, s, since, timeout)
	if err != nil {
		return "", 0, err
	}
	a, err := parseSync(body)
	if err != nil {
		return "", 0, err
	}
	s.sync.since = a.NextBatch
	if n := a.timelineEvents(); n > 0 {
		return "", 0, fmt.Errorf("not idle: the answer holds %d timeline events", n)
	}
	return id, at.Sub(t0), nil
}

// measureTwoInstances measures ep on two `cirrus serve` sharing one
// DynamoDB, which the bench serves itself (the embedded one, in this
// process): the sync user's syncs go to one, and the bench user's messages
// to the other, as on two Lambda instances. ep is reported failed when the
// pair cannot be started or set up.
func measureTwoInstances(ctx context.Context, bin string, pollInterval time.Duration, ep endpoint, n, c, warmup, rounds int, stderr io.Writer) []result {
	fail := func(err error) []result {
		return []result{{Endpoint: ep.name(), Server: "cirrus", Concurrency: ep.Concurrency, Failed: err.Error()}}
	}
	db, err := embedded.Start("127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	defer db.Close()
	start := func() (*server, error) {
		return startRetrying(func() (*server, error) {
			return startCirrus(ctx, bin, pollInterval, "DYNAMODB_ENDPOINT="+db.URL())
		})
	}
	sender, err := start()
	if err != nil {
		return fail(fmt.Errorf("start the sending instance: %w", err))
	}
	defer sender.stop()
	waiter, err := start()
	if err != nil {
		return fail(fmt.Errorf("start the syncing instance: %w", err))
	}
	defer waiter.stop()
	fmt.Fprintf(stderr, "bench: two cirrus instances on one DynamoDB (%s): syncs to pid %d on %s, messages to pid %d on %s\n",
		db.URL(), waiter.cmd.Process.Pid, waiter.ClientURL, sender.cmd.Process.Pid, sender.ClientURL)
	if err := setupUser(ctx, waiter); err != nil {
		return fail(err)
	}
	waiter.sync.sender = sender
	return measureEndpoint(ctx, []*server{waiter}, ep, n, c, warmup, rounds)
}

// syncSummary is what the run found of Cirrus's sync costs and wake-ups.
type syncSummary struct {
	PollIntervalMS float64 `json:"poll_interval_ms"`
	IdleTimeoutMS  float64 `json:"idle_timeout_ms"`
	// Of an idle sync with IdleTimeoutMS, per request, from the log; the
	// polls are its stream reads: its DynamoDB calls beyond those of an
	// idle sync with timeout 0, which reads the stream once.
	IdleRCU      *float64 `json:"idle_rcu_per_request,omitempty"`
	IdleCalls    *float64 `json:"idle_calls_per_request,omitempty"`
	PollsPerIdle *float64 `json:"polls_per_idle_sync,omitempty"`
	RCUPerPoll   *float64 `json:"rcu_per_poll,omitempty"`
	// OtherRCU is the idle sync's read units besides its polls (the access
	// token).
	OtherRCU *float64 `json:"other_rcu_per_idle_sync,omitempty"`
	// Missing says why the per-poll figures are missing.
	Missing string `json:"missing,omitempty"`
}

// summariseSync works out the cost of one poll from Cirrus's two idle
// syncs: (RCU(timeout) - RCU(0)) / (calls(timeout) - calls(0)).
func summariseSync(results []result, pollInterval time.Duration) *syncSummary {
	sum := &syncSummary{PollIntervalMS: ms(pollInterval), IdleTimeoutMS: ms(idleTimeout)}
	wait, okW := findResult(results, idleSync(idleTimeout).name(), "cirrus")
	once, okO := findResult(results, idleSync(0).name(), "cirrus")
	if sum.Missing = unmeasured(wait, okW, "cirrus"); sum.Missing != "" {
		return sum
	}
	sum.IdleRCU, sum.IdleCalls = wait.RCU, wait.Calls
	if sum.Missing = unmeasured(once, okO, "cirrus"); sum.Missing != "" {
		return sum
	}
	if wait.RCU == nil || once.RCU == nil {
		sum.Missing = "no request log line matched"
		return sum
	}
	extra := *wait.Calls - *once.Calls
	if extra <= 0 {
		sum.Missing = fmt.Sprintf("the idle sync with timeout %d made no more DynamoDB calls than with timeout 0", idleTimeout.Milliseconds())
		return sum
	}
	polls, perPoll := extra+1, (*wait.RCU-*once.RCU)/extra
	other := *wait.RCU - polls*perPoll
	sum.PollsPerIdle, sum.RCUPerPoll, sum.OtherRCU = &polls, &perPoll, &other
	return sum
}

// syncGoals checks Cirrus's sync against the project's goals: wake-up p99
// within the poll interval plus wakeUpSlack, in cirrus serve and across two
// instances, and the read units of one idle poll.
func syncGoals(results []result, sum *syncSummary) []goal {
	var out []goal
	limit := sum.PollIntervalMS + ms(wakeUpSlack)
	for _, ep := range []endpoint{wakeUp(false), wakeUp(true)} {
		g := goal{Name: ep.name() + ": p99 ms (cirrus)", Target: fmt.Sprintf("<= %g", limit)}
		r, ok := findResult(results, ep.name(), "cirrus")
		if g.Missing = unmeasured(r, ok, "cirrus"); g.Missing == "" {
			v := r.P99MS
			g.Value, g.Met = &v, v <= limit
		}
		out = append(out, g)
	}
	g := goal{Name: "idle sync: RCU per poll (cirrus)", Target: fmt.Sprintf("<= %g", maxRCUPerIdlePoll), Missing: sum.Missing}
	if g.Missing == "" {
		g.Value, g.Met = sum.RCUPerPoll, *sum.RCUPerPoll <= maxRCUPerIdlePoll+1e-9
	}
	return append(out, g)
}

// printSync writes what the sync workloads found of Cirrus's long-poll.
func printSync(w io.Writer, r *report) {
	s := r.Sync
	if s == nil {
		return
	}
	fmt.Fprintf(w, "\nsync: Cirrus runs with sync.poll_interval_ms = %.0f (CIRRUS_SYNC_POLL_INTERVAL_MS, -sync-poll); its latencies include every DynamoDB call, to the embedded DynamoDB on loopback\n", s.PollIntervalMS)
	line := func(endpoint, server string) string {
		x, ok := findResult(r.Results, endpoint, server)
		if m := unmeasured(x, ok, server); m != "" {
			return m
		}
		l := fmt.Sprintf("%s p50 %.1f ms, p99 %.1f ms", server, x.P50MS, x.P99MS)
		if x.Calls != nil {
			l += fmt.Sprintf(" (the woken sync: %.1f DynamoDB calls, %.2f RCU)", *x.Calls, *x.RCU)
		}
		return l
	}
	in, two := wakeUp(false).name(), wakeUp(true).name()
	fmt.Fprintf(w, "  wake-up in one process: cirrus serve wakes a waiting sync as soon as it stores the message: %s; %s\n", line(in, "cirrus"), line(in, "dendrite"))
	fmt.Fprintf(w, "  wake-up across instances (the poll path): a sync waiting on another instance reads its stream every %.0f ms, so it finds a message at most %.0f ms after it is stored, plus a read and its answer: %s\n",
		s.PollIntervalMS, s.PollIntervalMS, line(two, "cirrus"))
	fmt.Fprintf(w, "  idle sync, timeout %.0f ms, nothing new: ", s.IdleTimeoutMS)
	switch {
	case s.IdleRCU == nil:
		fmt.Fprintf(w, "no DynamoDB figures: %s\n", s.Missing)
	case s.RCUPerPoll == nil:
		fmt.Fprintf(w, "%.2f RCU in %.2f DynamoDB calls per request; per poll: %s\n", *s.IdleRCU, *s.IdleCalls, s.Missing)
	default:
		fmt.Fprintf(w, "%.2f RCU in %.2f DynamoDB calls per request: %.2f polls (stream reads; timeout / interval = %.0f, and the first read) of %.2f RCU each, and %.2f RCU besides (the access token)\n",
			*s.IdleRCU, *s.IdleCalls, *s.PollsPerIdle, s.IdleTimeoutMS/s.PollIntervalMS, *s.RCUPerPoll, *s.OtherRCU)
	}
}
