package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/cirrus-matrix/cirrus/shared/store"
	"github.com/cirrus-matrix/cirrus/shared/synctier"
	"github.com/cirrus-matrix/cirrus/shared/testenv"
)

// The sync tier's process, as the stack runs it: configured from the
// environment, beside `cirrus serve` on the same table, woken through an
// SQS queue (fauxqs). It serves sync, reports its status to the table while
// it runs, answers its waiting syncs when it is told to stop, and takes its
// status back.
func TestSyncTier_Process(t *testing.T) {
	ctx := context.Background()
	endpoint := testenv.StartSQS(t)
	queues := sqs.NewFromConfig(testenv.AWSConfig(endpoint))
	var b [6]byte
	rand.Read(b[:])
	q, err := queues.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("news-" + hex.EncodeToString(b[:]))})
	if err != nil {
		t.Fatal(err)
	}
	// Both processes reach the queue through the SDK's default config, as
	// in AWS; here it points at the stand-in.
	t.Setenv("AWS_ENDPOINT_URL_SQS", endpoint)
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_ACCESS_KEY_ID", "cirrus-test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "cirrus-test")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("CIRRUS_SYNC_NEWS_QUEUE_URL", *q.QueueUrl)

	dir := t.TempDir()
	at, _ := startServe(t, dir)
	t.Setenv("CIRRUS_DYNAMODB_ENDPOINT", at.DynamoDBURL)
	t.Setenv("CIRRUS_SERVER_NAME", "localhost:8008")
	t.Setenv("CIRRUS_SIGNING_KEY_PATH", filepath.Join(dir, "signing.key"))
	tierCtx, stop := context.WithCancel(ctx)
	ready := make(chan string, 1)
	stopped := make(chan error, 1)
	go func() { stopped <- syncTier(tierCtx, nil, io.Discard, ready) }()
	var tierURL string
	select {
	case tierURL = <-ready:
	case err := <-stopped:
		t.Fatalf("sync-tier stopped before listening: %v", err)
	}
	t.Cleanup(func() {
		stop()
		select {
		case <-stopped:
		default:
		}
	})

	st, err := store.Open(ctx, store.Options{Table: "cirrus", Endpoint: at.DynamoDBURL})
	if err != nil {
		t.Fatal(err)
	}
	statuses, err := synctier.ReadStatuses(ctx, st, time.Now())
	if err != nil || len(statuses) != 1 {
		t.Fatalf("statuses while the tier runs: %v, %v", statuses, err)
	}

	secret, err := os.ReadFile(filepath.Join(dir, "registration_shared_secret"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sharedSecretRegister(ctx, at.ClientURL, strings.TrimSpace(string(secret)), "alice", "pw-alice", false); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 2 * time.Minute}
	var login struct {
		AccessToken string `json:"access_token"`
	}
	if err := api(ctx, hc, "POST", at.ClientURL+"/_matrix/client/v3/login", "", map[string]any{
		"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": "alice"}, "password": "pw-alice",
	}, &login); err != nil {
		t.Fatal(err)
	}
	token := login.AccessToken
	var room struct {
		RoomID string `json:"room_id"`
	}
	if err := api(ctx, hc, "POST", at.ClientURL+"/_matrix/client/v3/createRoom", token, map[string]any{}, &room); err != nil {
		t.Fatal(err)
	}
	var first struct {
		NextBatch string `json:"next_batch"`
	}
	if err := api(ctx, hc, "GET", tierURL+"/_matrix/client/v3/sync?timeout=0", token, nil, &first); err != nil {
		t.Fatal(err)
	}
	if err := api(ctx, hc, "GET", tierURL+"/_matrix/client/v3/account/whoami", token, nil, nil); err == nil || !strings.Contains(err.Error(), "M_UNRECOGNIZED") {
		t.Errorf("whoami on the tier: %v, want 404 M_UNRECOGNIZED", err)
	}

	// A message sent through serve reaches the sync waiting in the tier.
	type syncAnswer struct {
		raw []byte
		err error
	}
	wait := func(since string) <-chan syncAnswer {
		out := make(chan syncAnswer, 1)
		go func() {
			var raw json.RawMessage
			err := api(ctx, hc, "GET", tierURL+"/_matrix/client/v3/sync?timeout=25000&since="+url.QueryEscape(since), token, nil, &raw)
			out <- syncAnswer{raw, err}
		}()
		return out
	}
	waiting := wait(first.NextBatch)
	if err := api(ctx, hc, "PUT", at.ClientURL+"/_matrix/client/v3/rooms/"+url.PathEscape(room.RoomID)+"/send/m.room.message/t1",
		token, map[string]any{"msgtype": "m.text", "body": "from serve"}, nil); err != nil {
		t.Fatal(err)
	}
	got := <-waiting
	if got.err != nil || !strings.Contains(string(got.raw), "from serve") {
		t.Fatalf("the tier's sync after a message sent through serve: %v %s", got.err, got.raw)
	}
	var next struct {
		NextBatch string `json:"next_batch"`
	}
	json.Unmarshal(got.raw, &next)

	// Told to stop, the tier answers the waiting sync rather than holding it
	// past its shutdown bound (which would make syncTier fail), and takes
	// its status back.
	waiting = wait(next.NextBatch)
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		var health struct {
			Waiting int `json:"waiting"`
		}
		if err := api(ctx, hc, "GET", tierURL+"/_cirrus/health", "", nil, &health); err != nil {
			t.Fatal(err)
		}
		if health.Waiting == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the tier never held the second sync")
		}
	}
	stop()
	if got := <-waiting; got.err != nil {
		t.Fatalf("the waiting sync when the tier stopped: %v", got.err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("sync-tier stopped with %v", err)
	}
	statuses, err = synctier.ReadStatuses(ctx, st, time.Now())
	if err != nil || len(statuses) != 0 {
		t.Fatalf("statuses after the tier stopped: %v, %v", statuses, err)
	}
}
