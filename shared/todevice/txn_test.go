package todevice_test

import (
	"fmt"
	"net/http"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestSendToDevice_ExactlyOnce: ten identical sends at once, through one
// server or two on one table, deliver the message once; a retry much later
// delivers nothing more.
func TestSendToDevice_ExactlyOnce(t *testing.T) {
	for _, servers := range []int{1, 2} {
		t.Run(fmt.Sprintf("Servers%d", servers), func(t *testing.T) {
			st := servertest.Start(t)
			stacks := []*servertest.Stack{st}
			if servers == 2 {
				stacks = append(stacks, st.Twin(t))
			}
			au := st.Register(t, "alice")
			bob := st.Client(t, st.Register(t, "bob"))
			base := sync(t, bob, "", 0)
			body := map[string]any{"messages": map[string]any{bob.UserID.String(): map[string]any{bob.DeviceID.String(): map[string]any{"n": 1}}}}
			path := "/_matrix/client/v3/sendToDevice/" + ping.Type + "/same1"
			put := func(n int) {
				t.Helper()
				var wg gosync.WaitGroup
				status := make(chan string, n)
				start := make(chan struct{})
				for i := range n {
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-start
						r := servertest.Call(t, "PUT", stacks[i%len(stacks)].URL+path, au.AccessToken, body)
						if r.Status != http.StatusOK || len(r.Body) != 0 {
							status <- fmt.Sprintf("%d %s", r.Status, r.Raw)
						}
					}()
				}
				close(start)
				wg.Wait()
				close(status)
				for s := range status {
					t.Errorf("send: %s", s)
				}
			}
			put(10)
			first := sync(t, bob, base.NextBatch, 0)
			got := numbers(t, first)
			t.Logf("10 identical sends delivered %d messages", len(got))
			if !equal(got, []int{1}) {
				t.Fatalf("delivered %v, want [1]", got)
			}
			// Later, once the message was acknowledged and deleted, through
			// each server.
			acked := sync(t, bob, first.NextBatch, 0)
			for _, via := range stacks {
				stacks = []*servertest.Stack{via}
				put(1)
			}
			if got := numbers(t, sync(t, bob, acked.NextBatch, 0)); len(got) != 0 {
				t.Fatalf("retries delivered %v, want nothing", got)
			}
			if got := numbers(t, sync(t, bob, base.NextBatch, 0)); len(got) != 0 {
				t.Fatalf("from the first token: %v, want nothing (the message was acknowledged)", got)
			}
		})
	}
}

// pendingTxn is a transaction record as a request that claimed it leaves it
// while it sends.
type pendingTxn struct {
	PK      string `dynamodbav:"pk"`
	SK      string `dynamodbav:"sk"`
	Expires int64  `dynamodbav:"expires_at"`
	Owner   string `dynamodbav:"owner,omitempty"`
	At      int64  `dynamodbav:"at,omitempty"`
}

// TestSendToDevice_PendingTransaction: a request whose transaction another
// one claimed waits until that one has sent, and sends nothing; one whose
// owner died (its claim older than the lease) takes it over and sends once.
func TestSendToDevice_PendingTransaction(t *testing.T) {
	st := servertest.Start(t)
	au := st.Register(t, "alice")
	bob := st.Client(t, st.Register(t, "bob"))
	base := sync(t, bob, "", 0)
	body := map[string]any{"messages": map[string]any{bob.UserID.String(): map[string]any{bob.DeviceID.String(): map[string]any{"n": 1}}}}
	record := func(txnID string, age time.Duration, owner string) pendingTxn {
		now := time.Now()
		return pendingTxn{PK: "todevice|" + au.ID + "|" + au.DeviceID, SK: "txn|" + ping.Type + "|" + txnID,
			Expires: now.Add(time.Hour).Unix(), Owner: owner, At: now.Add(-age).UnixMilli()}
	}
	path := "/_matrix/client/v3/sendToDevice/" + ping.Type + "/"

	// In progress elsewhere: the request waits for it.
	if err := st.Server.Store.Put(bg, record("busy", 0, "elsewhere")); err != nil {
		t.Fatal(err)
	}
	answer := make(chan int, 1)
	go func() { answer <- servertest.Call(t, "PUT", st.URL+path+"busy", au.AccessToken, body).Status }()
	time.Sleep(200 * time.Millisecond)
	select {
	case s := <-answer:
		t.Fatalf("answered %d while the transaction was in progress", s)
	default:
	}
	if err := st.Server.Store.Put(bg, record("busy", 0, "")); err != nil { // sent
		t.Fatal(err)
	}
	if s := <-answer; s != http.StatusOK {
		t.Fatalf("after the owner sent: %d", s)
	}
	if got := numbers(t, sync(t, bob, base.NextBatch, 0)); len(got) != 0 {
		t.Fatalf("the waiting request delivered %v, want nothing", got)
	}

	// Its owner died: taken over, sent once.
	if err := st.Server.Store.Put(bg, record("dead", time.Minute, "dead owner")); err != nil {
		t.Fatal(err)
	}
	if r := st.Do(t, "PUT", path+"dead", au.AccessToken, body); r.Status != http.StatusOK {
		t.Fatalf("take over: %d %s", r.Status, r.Raw)
	}
	if r := st.Do(t, "PUT", path+"dead", au.AccessToken, body); r.Status != http.StatusOK {
		t.Fatalf("retry: %d %s", r.Status, r.Raw)
	}
	if got := numbers(t, sync(t, bob, base.NextBatch, 0)); !equal(got, []int{1}) {
		t.Fatalf("delivered %v, want [1]", got)
	}
}

// TestSendToDevice_BadKeys: an event type or transaction ID that cannot be
// part of the transaction's key (NUL, invalid UTF-8, over 255 bytes) is
// refused before anything is read.
func TestSendToDevice_BadKeys(t *testing.T) {
	st := servertest.Start(t)
	au := st.Register(t, "alice")
	body := map[string]any{"messages": map[string]any{}}
	long := strings.Repeat("t", 256)
	for _, tc := range []struct{ name, evType, txnID string }{
		{"NULInType", "org.example%00ping", "t1"},
		{"NULInTxnID", ping.Type, "t%00x"},
		{"InvalidUTF8InType", "org.example.%FF", "t2"},
		{"InvalidUTF8InTxnID", ping.Type, "t%FE"},
		{"LongType", "org." + long, "t3"},
		{"LongTxnID", ping.Type, long},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := st.Do(t, "PUT", "/_matrix/client/v3/sendToDevice/"+tc.evType+"/"+tc.txnID, au.AccessToken, body)
			if r.Status != http.StatusBadRequest || r.Body["errcode"] != "M_INVALID_PARAM" {
				t.Fatalf("got %d %s, want 400 M_INVALID_PARAM", r.Status, r.Raw)
			}
			if calls := st.LastRequestTo(t, "/sendToDevice/").DynamoDB.Calls; calls != 1 {
				t.Fatalf("%d DynamoDB calls, want 1 (the access token)", calls)
			}
		})
	}
}
