package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// childEnv makes the test binary run `cirrus serve` instead of the tests:
// the crash test starts it as a child process and kills it.
const childEnv = "CIRRUS_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "serve" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := run(ctx, []string{"serve"}, os.Stderr)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "cirrus:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// child is `cirrus serve` in a process of its own.
type child struct {
	cmd    *exec.Cmd
	url    string
	logs   *syncBuffer
	exited chan struct{}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var bannerURL = regexp.MustCompile(`client API\s+(http://\S+)`)

// startChild runs `cirrus serve` on dataDir in a new process and waits
// until its banner says where the client API listens.
func startChild(t *testing.T, dataDir string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		childEnv+"=serve",
		"CIRRUS_SERVER_NAME=localhost:8008",
		"CIRRUS_DATA_DIR="+dataDir,
		"CIRRUS_CLIENT_LISTEN=127.0.0.1:0",
		"CIRRUS_FEDERATION_LISTEN=127.0.0.1:0",
		"CIRRUS_RATE_LIMITS_LOGIN_PER_ADDRESS=0",
		"CIRRUS_RATE_LIMITS_LOGIN_PER_ACCOUNT=0",
		"CIRRUS_RATE_LIMITS_REGISTER_PER_ADDRESS=0",
	)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, logs: &syncBuffer{}, exited: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			fmt.Fprintln(c.logs, sc.Text())
			if m := bannerURL.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
		cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-c.exited
	})
	select {
	case c.url = <-found:
	case <-c.exited:
		t.Fatalf("cirrus serve stopped before listening:\n%s", c.logs)
	case <-time.After(2 * time.Minute):
		t.Fatalf("cirrus serve did not listen within 2 minutes:\n%s", c.logs)
	}
	return c
}

// kill ends the process with SIGKILL: no handler runs, nothing is saved.
func (c *child) kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-c.exited
}

// api calls the client API; it fails on any answer but 200.
func api(ctx context.Context, hc *http.Client, method, url, token string, body, out any) error {
	var rd io.Reader
	if body != nil {
		doc, _ := json.Marshal(body)
		rd = bytes.NewReader(doc)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %d %s", method, req.URL.Path, res.StatusCode, raw)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(raw, out)
}

// ack is a message the server answered 200 for.
type ack struct {
	sender, n      int
	eventID        string
	sent, answered time.Time
}

type timelineEvent struct {
	EventID string `json:"event_id"`
	Type    string `json:"type"`
	Sender  string `json:"sender"`
	Content struct {
		Body string `json:"body"`
	} `json:"content"`
}

type syncResponse struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events  []timelineEvent `json:"events"`
				Limited bool            `json:"limited"`
			} `json:"timeline"`
		} `json:"join"`
	} `json:"rooms"`
}

// TestServe_SIGKILLLosesNothingAcknowledged kills a real `cirrus serve`
// process with SIGKILL while 8 senders send messages into one room,
// starts it again on the same data folder, and checks that every message
// it answered 200 for is in the room, in the order the answers came, and
// that a sync token handed out before the kill still brings the messages
// sent after the restart.
func TestServe_SIGKILLLosesNothingAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts a server process")
	}
	const senders = 8
	const acksBeforeKill = 240
	ctx := context.Background()
	dir := t.TempDir()
	hc := &http.Client{Timeout: time.Minute}
	srv := startChild(t, dir)

	secret, err := os.ReadFile(filepath.Join(dir, "registration_shared_secret"))
	if err != nil {
		t.Fatal(err)
	}
	login := func(name string) string {
		if _, err := sharedSecretRegister(ctx, srv.url, strings.TrimSpace(string(secret)), name, "pw-"+name, false); err != nil {
			t.Fatal(err)
		}
		var res struct {
			AccessToken string `json:"access_token"`
		}
		err := api(ctx, hc, "POST", srv.url+"/_matrix/client/v3/login", "", map[string]any{
			"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": name}, "password": "pw-" + name,
		}, &res)
		if err != nil {
			t.Fatal(err)
		}
		return res.AccessToken
	}
	watcher := login("watcher")
	tokens := make([]string, senders)
	for i := range tokens {
		tokens[i] = login(fmt.Sprint("sender", i))
	}
	var room struct {
		RoomID string `json:"room_id"`
	}
	if err := api(ctx, hc, "POST", srv.url+"/_matrix/client/v3/createRoom", watcher, map[string]any{"preset": "public_chat"}, &room); err != nil {
		t.Fatal(err)
	}
	roomPath := "/_matrix/client/v3/rooms/" + url.PathEscape(room.RoomID)
	for _, tok := range tokens {
		if err := api(ctx, hc, "POST", srv.url+roomPath+"/join", tok, map[string]any{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	filter := url.QueryEscape(`{"room":{"timeline":{"limit":400}}}`)
	syncOnce := func(base, since string) (syncResponse, error) {
		var res syncResponse
		u := base + "/_matrix/client/v3/sync?timeout=0&filter=" + filter
		if since != "" {
			u += "&since=" + url.QueryEscape(since)
		}
		err := api(ctx, hc, "GET", u, watcher, nil, &res)
		return res, err
	}
	first, err := syncOnce(srv.url, "")
	if err != nil {
		t.Fatal(err)
	}

	// The senders send until the server dies; the watcher syncs meanwhile
	// and keeps its last token and everything it was shown.
	var mu sync.Mutex
	var acks []ack
	enough := make(chan struct{})
	var wg sync.WaitGroup
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				sent := time.Now()
				var res struct {
					EventID string `json:"event_id"`
				}
				err := api(ctx, hc, "PUT", fmt.Sprintf("%s%s/send/m.room.message/s%d-%d", srv.url, roomPath, s, n), tokens[s],
					map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("s%d %d", s, n)}, &res)
				if err != nil {
					return // the server was killed
				}
				mu.Lock()
				acks = append(acks, ack{sender: s, n: n, eventID: res.EventID, sent: sent, answered: time.Now()})
				if len(acks) == acksBeforeKill {
					close(enough)
				}
				mu.Unlock()
			}
		}()
	}
	seen := map[string]bool{}
	lastToken := first.NextBatch
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			res, err := syncOnce(srv.url, lastToken)
			if err != nil {
				return
			}
			for _, ev := range res.Rooms.Join[room.RoomID].Timeline.Events {
				seen[ev.EventID] = true
			}
			lastToken = res.NextBatch
		}
	}()
	loadStart := time.Now()
	select {
	case <-enough:
	case <-srv.exited:
		t.Fatalf("cirrus serve stopped under load:\n%s", srv.logs)
	}
	srv.kill(t)
	wg.Wait()
	<-watched
	t.Logf("killed after %d acknowledged messages in %v; the watcher saw %d", len(acks), time.Since(loadStart).Round(time.Millisecond), len(seen))

	restart := time.Now()
	srv = startChild(t, dir)
	t.Logf("restarted in %v", time.Since(restart).Round(time.Millisecond))
	// The room, from its first event to its last.
	var timeline []timelineEvent
	from := ""
	for range 1000 {
		var page struct {
			Chunk []timelineEvent `json:"chunk"`
			End   string          `json:"end"`
		}
		u := srv.url + roomPath + "/messages?dir=f&limit=100"
		if from != "" {
			u += "&from=" + url.QueryEscape(from)
		}
		if err := api(ctx, hc, "GET", u, watcher, nil, &page); err != nil {
			t.Fatal(err)
		}
		timeline = append(timeline, page.Chunk...)
		if page.End == "" || len(page.Chunk) == 0 {
			break
		}
		from = page.End
	}
	pos := map[string]int{}
	for i, ev := range timeline {
		if _, dup := pos[ev.EventID]; dup {
			t.Fatalf("event %s is twice in the timeline", ev.EventID)
		}
		pos[ev.EventID] = i
	}
	lost := 0
	for _, a := range acks {
		i, ok := pos[a.eventID]
		if !ok {
			lost++
			continue
		}
		if want := fmt.Sprintf("s%d %d", a.sender, a.n); timeline[i].Content.Body != want {
			t.Errorf("event %s holds %q, want %q", a.eventID, timeline[i].Content.Body, want)
		}
	}
	if lost > 0 {
		t.Fatalf("lost %d of %d acknowledged messages", lost, len(acks))
	}
	for id := range seen {
		if _, ok := pos[id]; !ok {
			t.Errorf("event %s, shown to a sync before the kill, is gone", id)
		}
	}
	// An answer received before a message was sent puts it earlier.
	for _, a := range acks {
		for _, b := range acks {
			i, ok1 := pos[a.eventID]
			j, ok2 := pos[b.eventID]
			if ok1 && ok2 && a.answered.Before(b.sent) && i >= j {
				t.Fatalf("s%d %d was answered before s%d %d was sent, but comes after it", a.sender, a.n, b.sender, b.n)
			}
		}
	}

	// News after the restart reaches the syncs of tokens from before.
	var after []string
	for n := range 3 {
		var res struct {
			EventID string `json:"event_id"`
		}
		if err := api(ctx, hc, "PUT", fmt.Sprintf("%s%s/send/m.room.message/after-%d", srv.url, roomPath, n), tokens[0],
			map[string]any{"msgtype": "m.text", "body": fmt.Sprint("after ", n)}, &res); err != nil {
			t.Fatal(err)
		}
		after = append(after, res.EventID)
	}
	for name, token := range map[string]string{"the last token before the kill": lastToken, "the first token": first.NextBatch} {
		res, err := syncOnce(srv.url, token)
		if err != nil {
			t.Fatalf("sync with %s: %v", name, err)
		}
		got := map[string]bool{}
		for _, ev := range res.Rooms.Join[room.RoomID].Timeline.Events {
			got[ev.EventID] = true
		}
		for _, id := range after {
			if !got[id] {
				t.Fatalf("a sync with %s misses %s, sent after the restart (timeline of %d events)", name, id, len(got))
			}
		}
	}
	t.Logf("after the restart: all %d acknowledged messages in order, in a timeline of %d events", len(acks), len(timeline))
}
