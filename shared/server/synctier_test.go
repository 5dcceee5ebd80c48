package server_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/cirrus-matrix/cirrus/shared/queue"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
	"github.com/cirrus-matrix/cirrus/shared/synctier"
	"github.com/cirrus-matrix/cirrus/shared/testenv"
)

// tierOf runs stack's twin as the sync tier runs it: SyncHandler on a
// listener of its own, polling its users' streams once an hour, so that
// only news through the queue answers a wait before a test's bound.
func tierOf(t *testing.T, stack *servertest.Stack) (*servertest.Stack, string) {
	t.Helper()
	tier := stack.Twin(t)
	tier.Server.Sync.PollInterval = time.Hour
	tier.Server.Sync.MaxTimeout = time.Hour
	hs := httptest.NewServer(tier.Server.SyncHandler())
	t.Cleanup(hs.Close)
	return tier, hs.URL
}

// poll sends a waiting /sync to base in the background; its answer, or
// its error, comes on the channel.
func poll(base, token, since string) <-chan servertest.Reply {
	out := make(chan servertest.Reply, 1)
	go func() {
		u := base + "/_matrix/client/v3/sync?timeout=3600000&since=" + url.QueryEscape(since)
		req, _ := http.NewRequest("GET", u, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			out <- servertest.Reply{Status: -1, Raw: []byte(err.Error())}
			return
		}
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		r := servertest.Reply{Status: res.StatusCode, Header: res.Header, Raw: raw}
		json.Unmarshal(raw, &r.Body)
		out <- r
	}()
	return out
}

// waitFor waits until the tier holds n waiting syncs.
func waitFor(t *testing.T, tier *servertest.Stack, n int) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		if now, _ := tier.Server.Sync.Waiting(); now == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the tier never held %d waiting syncs", n)
		}
	}
}

func answer(t *testing.T, ch <-chan servertest.Reply) servertest.Reply {
	t.Helper()
	select {
	case r := <-ch:
		if r.Status != http.StatusOK {
			t.Fatalf("sync: %d %s", r.Status, r.Raw)
		}
		return r
	case <-time.After(2 * time.Minute):
		t.Fatal("the waiting sync never answered")
	}
	return servertest.Reply{}
}

// A message sent through one process wakes the sync waiting in the tier's
// process through the news queue (fauxqs, the real SQS client), though the
// tier would not read the stream again for an hour.
func TestSyncTier_NewsQueueWakesWaitingSync(t *testing.T) {
	ctx := context.Background()
	writer := servertest.Start(t)
	tier, tierURL := tierOf(t, writer)

	api := sqs.NewFromConfig(testenv.AWSConfig(testenv.StartSQS(t)))
	var b [6]byte
	rand.Read(b[:])
	q, err := api.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("news-" + hex.EncodeToString(b[:]))})
	if err != nil {
		t.Fatal(err)
	}
	writer.Server.SetNews(queue.New(api, *q.QueueUrl))
	tier.Server.Config.Sync.NewsQueueURL = *q.QueueUrl
	listen, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { tier.Server.ListenNews(listen, api); close(done) }()
	t.Cleanup(func() { stop(); <-done })

	alice := writer.Register(t, "alice")
	r := writer.Do(t, "POST", "/_matrix/client/v3/createRoom", alice.AccessToken, map[string]any{})
	roomID, _ := r.Body["room_id"].(string)
	first := servertest.Call(t, "GET", tierURL+"/_matrix/client/r0/sync?timeout=0", alice.AccessToken, nil)
	if first.Status != http.StatusOK {
		t.Fatalf("initial sync through the tier: %d %s", first.Status, first.Raw)
	}
	rooms, _ := first.Body["rooms"].(map[string]any)
	if joined, _ := rooms["join"].(map[string]any); joined[roomID] == nil {
		t.Fatalf("initial sync through the tier lacks the room %s: %s", roomID, first.Raw)
	}
	since, _ := first.Body["next_batch"].(string)

	waiting := poll(tierURL, alice.AccessToken, since)
	waitFor(t, tier, 1)
	r = writer.Do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/t1",
		alice.AccessToken, map[string]any{"msgtype": "m.text", "body": "through the queue"})
	if r.Status != http.StatusOK {
		t.Fatalf("send: %d %s", r.Status, r.Raw)
	}
	got := answer(t, waiting)
	if !strings.Contains(string(got.Raw), "through the queue") {
		t.Fatalf("the woken sync lacks the message: %s", got.Raw)
	}
	waitFor(t, tier, 0)
}

// Stopping, the tier answers its waiting syncs at once, with a token that
// loses nothing, and the ones that come after.
func TestSyncTier_DrainAnswersWaitingSyncs(t *testing.T) {
	writer := servertest.Start(t)
	tier, tierURL := tierOf(t, writer)
	alice := writer.Register(t, "alice")
	first := servertest.Call(t, "GET", tierURL+"/_matrix/client/v3/sync?timeout=0", alice.AccessToken, nil)
	since, _ := first.Body["next_batch"].(string)

	waiting := poll(tierURL, alice.AccessToken, since)
	waitFor(t, tier, 1)
	tier.Server.Sync.Drain()
	got := answer(t, waiting)
	next, _ := got.Body["next_batch"].(string)
	if next == "" {
		t.Fatalf("the drained sync has no next_batch: %s", got.Raw)
	}
	later := answer(t, poll(tierURL, alice.AccessToken, next))
	if rooms, _ := later.Body["rooms"].(map[string]any); len(rooms) > 0 && strings.Contains(string(later.Raw), `"timeline"`) {
		t.Fatalf("a sync after the drain brought news there is none of: %s", later.Raw)
	}

	// The token of the drained answer loses nothing sent after it.
	r := writer.Do(t, "POST", "/_matrix/client/v3/createRoom", alice.AccessToken, map[string]any{"name": "after the drain"})
	roomID, _ := r.Body["room_id"].(string)
	after := servertest.Call(t, "GET", writer.URL+"/_matrix/client/v3/sync?timeout=0&since="+url.QueryEscape(next), alice.AccessToken, nil)
	if joined, _ := after.Body["rooms"].(map[string]any)["join"].(map[string]any); joined[roomID] == nil {
		t.Fatalf("the room made after the drain is missing from the sync since its token: %s", after.Raw)
	}
}

// The tier serves the sync routes, old and new paths, sliding sync and a
// browser's preflight, and nothing else.
func TestSyncTier_ServesOnlySync(t *testing.T) {
	writer := servertest.Start(t)
	tier, tierURL := tierOf(t, writer)
	alice := writer.Register(t, "alice")

	for _, path := range []string{"/_matrix/client/v3/sync?timeout=0", "/_matrix/client/r0/sync?timeout=0"} {
		if r := servertest.Call(t, "GET", tierURL+path, alice.AccessToken, nil); r.Status != http.StatusOK || r.Body["next_batch"] == nil {
			t.Errorf("GET %s: %d %s", path, r.Status, r.Raw)
		}
	}
	sliding := map[string]any{"lists": map[string]any{"all": map[string]any{"ranges": [][]int{{0, 10}}, "timeline_limit": 1}}}
	for _, path := range []string{"/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?timeout=0", "/_matrix/client/v4/sync?timeout=0"} {
		if r := servertest.Call(t, "POST", tierURL+path, alice.AccessToken, sliding); r.Status != http.StatusOK || r.Body["pos"] == nil {
			t.Errorf("POST %s: %d %s", path, r.Status, r.Raw)
		}
	}
	if r := servertest.Call(t, "GET", tierURL+"/_matrix/client/v3/sync?timeout=0", "not-a-token", nil); r.Status != http.StatusUnauthorized || r.Body["errcode"] != "M_UNKNOWN_TOKEN" {
		t.Errorf("sync with a bad token: %d %s", r.Status, r.Raw)
	}
	for _, path := range []string{"/_matrix/client/v3/account/whoami", "/_matrix/client/versions", "/_matrix/client/v3/syncs"} {
		r := servertest.Call(t, "GET", tierURL+path, alice.AccessToken, nil)
		if r.Status != http.StatusNotFound || r.Body["errcode"] != "M_UNRECOGNIZED" {
			t.Errorf("GET %s on the tier: %d %s, want 404 M_UNRECOGNIZED", path, r.Status, r.Raw)
		}
	}
	if r := servertest.Call(t, "GET", tierURL+"/_cirrus/health", "", nil); r.Status != http.StatusOK || r.Body["waiting"] != float64(0) {
		t.Errorf("health: %d %s", r.Status, r.Raw)
	}
	// Through API Gateway (from the VPC link's addresses) the health check
	// says nothing of how many wait.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/_cirrus/health", nil)
	req.RemoteAddr = "10.0.1.17:40312"
	tier.Server.SyncHandler().ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != "{}" {
		t.Errorf("health from another host: %d %s, want 200 {}", rec.Code, rec.Body)
	}

	req, _ = http.NewRequest("OPTIONS", tierURL+"/_matrix/client/v3/sync", nil)
	req.Header.Set("Origin", "https://app.example")
	req.Header.Set("Access-Control-Request-Method", "GET")
	req.Header.Set("Access-Control-Request-Headers", "authorization")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode >= 300 || res.Header.Get("Access-Control-Allow-Origin") == "" {
		t.Errorf("preflight of /sync: %d, headers %v", res.StatusCode, res.Header)
	}
}

// In a Lambda function of a stack with a tier, each sync that waited adds
// its hold to the tally the controller reads; an answer at once adds
// nothing, and other requests are not tallied.
func TestSyncTier_LambdaTalliesSyncWaits(t *testing.T) {
	ctx := context.Background()
	writer := servertest.Start(t)
	lambda := writer.Twin(t)
	lambda.Server.SyncDemand = true
	hs := httptest.NewServer(lambda.Server.ClientHandler())
	t.Cleanup(hs.Close)
	alice := writer.Register(t, "alice")

	first := servertest.Call(t, "GET", hs.URL+"/_matrix/client/v3/sync?timeout=0", alice.AccessToken, nil)
	since, _ := first.Body["next_batch"].(string)
	servertest.Call(t, "GET", hs.URL+"/_matrix/client/v3/account/whoami", alice.AccessToken, nil)
	after := time.Now().Add(2 * time.Minute)
	if got, err := synctier.Concurrency(ctx, lambda.Server.Store, after, 3*time.Minute); err != nil || got != 0 {
		t.Fatalf("tally after an answer at once and a whoami: %v, %v; want 0", got, err)
	}
	r := servertest.Call(t, "GET", hs.URL+"/_matrix/client/r0/sync?timeout=1500&since="+url.QueryEscape(since), alice.AccessToken, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("waiting sync: %d %s", r.Status, r.Raw)
	}
	after = time.Now().Add(2 * time.Minute)
	got, err := synctier.Concurrency(ctx, lambda.Server.Store, after, 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if held := got * float64((3 * time.Minute).Milliseconds()); held < 1500 {
		t.Fatalf("tally after a sync that waited 1.5 s: %.0f ms", held)
	}
}
