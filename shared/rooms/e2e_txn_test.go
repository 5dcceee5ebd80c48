package rooms_test

import (
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// The transaction ID of a send or a redaction is decided by a conditional
// write in the table: identical requests, at once or later, through one
// server or several on one table, store one event and all answer its ID.

// putAll sends n identical PUTs to path at once, spread over stacks, and
// returns the event IDs answered, sorted.
func putAll(t *testing.T, stacks []*servertest.Stack, token, path string, body any, n int) []string {
	t.Helper()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		ids  []string
		errs []string
	)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r := servertest.Call(t, "PUT", stacks[i%len(stacks)].URL+path, token, body)
			mu.Lock()
			defer mu.Unlock()
			id, _ := r.Body["event_id"].(string)
			if r.Status != http.StatusOK || id == "" {
				errs = append(errs, fmt.Sprintf("%d %s", r.Status, r.Raw))
				return
			}
			ids = append(ids, id)
		}()
	}
	close(start)
	wg.Wait()
	for _, e := range errs {
		t.Errorf("PUT %s: %s", path, e)
	}
	if len(errs) > 0 {
		for _, line := range strings.Split(stacks[0].Logs(), "\n") {
			if strings.Contains(line, `"level":"ERROR"`) {
				t.Log(line)
			}
		}
	}
	sort.Strings(ids)
	return ids
}

// usageOf sums what the requests to paths ending in suffix cost.
func usageOf(t *testing.T, st *servertest.Stack, suffix string) (n int, calls int64, rcu, wcu float64) {
	t.Helper()
	for _, r := range st.Requests(t) {
		if strings.HasSuffix(r.Path, suffix) {
			n++
			calls += r.DynamoDB.Calls
			rcu += r.DynamoDB.ReadUnits
			wcu += r.DynamoDB.WriteUnits
		}
	}
	return n, calls, rcu, wcu
}

// distinct lists the distinct values of ids.
func distinct(ids []string) []string {
	var out []string
	for i, id := range ids {
		if i == 0 || id != ids[i-1] {
			out = append(out, id)
		}
	}
	return out
}

// countTypes counts the events of each type in the room's whole timeline.
func countTypes(t *testing.T, st *servertest.Stack, u servertest.User, room string) map[string]int {
	t.Helper()
	n := map[string]int{}
	for _, ev := range page(t, st, u, room, "b", 100) {
		n[ev["type"].(string)]++
	}
	return n
}

func TestTxn_ExactlyOnce(t *testing.T) {
	for _, tc := range []struct {
		name    string
		servers int
	}{{"OneServer", 1}, {"TwoServers", 2}} {
		t.Run(tc.name, func(t *testing.T) {
			st := servertest.Start(t)
			stacks := []*servertest.Stack{st}
			if tc.servers == 2 {
				stacks = append(stacks, st.Twin(t))
			}
			alice := st.Register(t, "alice")
			room := createRoom(t, st, alice, map[string]any{})
			before := countTypes(t, st, alice, room)

			sendPath := roomPath(room) + "/send/m.room.message/same1"
			ids := putAll(t, stacks, alice.AccessToken, sendPath, map[string]any{"msgtype": "m.text", "body": "once"}, 10)
			got := countTypes(t, st, alice, room)
			t.Logf("10 identical sends: %d answers, %d distinct event IDs, %d messages stored", len(ids), len(distinct(ids)), got["m.room.message"])
			if len(ids) != 10 || len(distinct(ids)) != 1 {
				t.Fatalf("event IDs answered: %v, want one ID 10 times", ids)
			}
			if got["m.room.message"] != 1 {
				t.Fatalf("%d messages stored, want 1", got["m.room.message"])
			}
			msg := ids[0]
			n, calls, rcu, wcu := usageOf(t, st, "/send/m.room.message/same1")
			t.Logf("the 10 sends cost %d requests, %d calls, %.1f RCU, %.1f WCU", n, calls, rcu, wcu)

			redactPath := roomPath(room) + "/redact/" + url.PathEscape(msg) + "/red1"
			reds := putAll(t, stacks, alice.AccessToken, redactPath, map[string]any{"reason": "twice?"}, 10)
			got = countTypes(t, st, alice, room)
			t.Logf("10 identical redactions: %d answers, %d distinct event IDs, %d redactions stored", len(reds), len(distinct(reds)), got["m.room.redaction"])
			if len(reds) != 10 || len(distinct(reds)) != 1 {
				t.Fatalf("redaction IDs answered: %v, want one ID 10 times", reds)
			}
			if got["m.room.redaction"] != 1 {
				t.Fatalf("%d redactions stored, want 1", got["m.room.redaction"])
			}
			n, calls, rcu, wcu = usageOf(t, st, "/red1")
			t.Logf("the 10 redactions cost %d requests, %d calls, %.1f RCU, %.1f WCU", n, calls, rcu, wcu)

			// Much later, after other events, through each server: the
			// same IDs, and nothing more stored.
			for i := range 5 {
				if _, err := send(t, stacks[i%len(stacks)], alice, room, fmt.Sprint("other", i), "other"); err != nil {
					t.Fatal(err)
				}
			}
			for _, via := range stacks {
				if again := putAll(t, []*servertest.Stack{via}, alice.AccessToken, sendPath, map[string]any{"msgtype": "m.text", "body": "once"}, 1); len(again) != 1 || again[0] != msg {
					t.Fatalf("send retried later answered %v, want %s", again, msg)
				}
				if again := putAll(t, []*servertest.Stack{via}, alice.AccessToken, redactPath, map[string]any{}, 1); len(again) != 1 || again[0] != reds[0] {
					t.Fatalf("redaction retried later answered %v, want %s", again, reds[0])
				}
			}
			got = countTypes(t, st, alice, room)
			want := map[string]int{"m.room.message": before["m.room.message"] + 6, "m.room.redaction": 1}
			if got["m.room.message"] != want["m.room.message"] || got["m.room.redaction"] != 1 {
				t.Fatalf("events after the retries: %v, want %v more messages and one redaction", got, want)
			}
		})
	}
}
