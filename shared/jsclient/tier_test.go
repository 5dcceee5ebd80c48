package jsclient_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/queue"
	"github.com/cirrus-matrix/cirrus/shared/server"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestSyncTierSwitchUnseenByClients: matrix-js-sdk's Element flows with
// every other sync request served by a sync tier process (a twin of the
// server on the same table, serving server.SyncHandler, woken through the
// news queue) and the rest by the client function's tree, as when the
// controller switches the routes back and forth at each poll: tokens,
// sliding sync connections, to-device messages, device lists and key
// counts carry across every switch, and the scenarios pass unchanged.
func TestSyncTierSwitchUnseenByClients(t *testing.T) {
	for _, tc := range []struct {
		script  string
		timeout time.Duration
	}{
		{"e2ee.mjs", 60 * time.Second},
		{"sliding_e2ee.mjs", 60 * time.Second},
	} {
		t.Run(tc.script, func(t *testing.T) {
			st := servertest.Start(t)
			tier := st.Twin(t)
			news := &queue.Memory{}
			const newsURL = "local://cirrus/sync-news"
			st.Server.SetNews(queue.New(news, newsURL))
			tier.Server.Config.Sync.NewsQueueURL = newsURL
			ctx, stop := context.WithCancel(context.Background())
			listening := make(chan struct{})
			go func() { tier.Server.ListenNews(ctx, news); close(listening) }()
			t.Cleanup(func() { stop(); <-listening })

			lambda, tierTree := st.Server.ClientHandler(), tier.Server.SyncHandler()
			var syncs, onTier atomic.Int64
			front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if slices.Contains(server.SyncPaths, r.URL.Path) && r.Method != http.MethodOptions {
					if syncs.Add(1)%2 == 0 {
						onTier.Add(1)
						tierTree.ServeHTTP(w, r)
						return
					}
				}
				lambda.ServeHTTP(w, r)
			}))
			t.Cleanup(front.Close)

			runScenarioOn(t, st, front.URL, tc.script, tc.timeout)
			if onTier.Load() < 4 {
				t.Fatalf("only %d of %d sync requests went to the tier", onTier.Load(), syncs.Load())
			}
			t.Logf("%d of %d sync requests served by the tier", onTier.Load(), syncs.Load())
		})
	}
}
