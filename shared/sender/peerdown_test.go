package sender_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	lambdaevents "github.com/aws/aws-lambda-go/events"

	"github.com/cirrus-matrix/cirrus/shared/sender"
)

// delivered lists the bodies of the transactions the remote took (not the
// failed tries), in order, and the IDs of those transactions.
func delivered(txns []txn) (bodies, ids []string) {
	for _, x := range txns {
		if strings.HasSuffix(x.ID, ")") {
			continue // "(failed)", "(cut)"
		}
		bodies = append(bodies, x.Bodies...)
		ids = append(ids, x.ID)
	}
	return bodies, ids
}

// wakeUp runs the wake-up jobs among delayed once the clock has reached
// them, as SQS hands a delayed message over.
func (f *fixture) wakeUp(t *testing.T, delayed []job) []job {
	t.Helper()
	for _, j := range delayed {
		f.clock.Add(j.Delay)
		f.q.SendAfter(context.Background(), sender.Kind, []byte(j.Body), 0)
	}
	return f.run(t)
}

// TestSender_PeerDown: the remote is down for two minutes of the sender's
// clock while 20 events are sent, one every 6 s; it is back before its
// backoff ends. At the wake-up every event reaches it, in order, none
// twice, and each transaction under its own ID.
func TestSender_PeerDown(t *testing.T) {
	f := newFixture(t)
	f.rm.failNext(1 << 20) // down: every /send fails
	want := bodies(20, "e")
	var delayed []job
	for _, b := range want {
		f.send(t, b)
		delayed = append(delayed, f.run(t)...)
		f.clock.Add(6 * time.Second)
	}
	if len(delayed) != 1 {
		t.Fatalf("%d wake-ups queued while down, want 1: %v", len(delayed), delayed)
	}
	f.rm.failNext(0) // back
	if more := f.wakeUp(t, delayed); len(more) != 0 {
		t.Fatalf("delayed jobs %v after the remote came back", more)
	}
	txns := f.rm.received(t)
	got, ids := delivered(txns)
	if !slices.Equal(got, want) {
		t.Errorf("remote took %q,\nwant %q, each once, in order", got, want)
	}
	if len(txns) == len(ids) {
		t.Errorf("remote got %+v: no failed try while it was down", txns)
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Errorf("transaction %s taken twice: %v", id, ids)
		}
		seen[id] = true
	}
}

// TestSender_CatchUp: after a longer outage, of the 70 events of a room
// waiting, the failed transaction goes again and then the newest 50, in
// order; the remote fetches the gap (/get_missing_events).
func TestSender_CatchUp(t *testing.T) {
	f := newFixture(t)
	f.rm.failNext(1)
	all := bodies(70, "w")
	f.send(t, all[0])
	delayed := f.run(t)
	f.send(t, all[1:]...)
	f.run(t)
	f.wakeUp(t, delayed)
	got, _ := delivered(f.rm.received(t))
	if want := append([]string{all[0]}, all[20:]...); !slices.Equal(got, want) {
		t.Errorf("remote took %q,\nwant %q", got, want)
	}
}

// TestSender_Redelivery: SQS delivers a batch of send jobs again (its
// visibility timeout ran out while the first delivery worked): the second
// delivery finds the outbox empty, and the remote takes each event once.
// A delivery cut during the send goes again under the same transaction ID
// (TestSender_InvocationEnds), which the receiving /send answers once
// (federation.TestSend_Idempotent).
func TestSender_Redelivery(t *testing.T) {
	f := newFixture(t)
	want := bodies(5, "r")
	f.send(t, want...)
	queued := f.q.take()
	var batch lambdaevents.SQSEvent
	for i, j := range queued {
		batch.Records = append(batch.Records, sqsRecord(fmt.Sprint("m", i), j.Body))
	}
	for try := range 2 {
		res, err := f.st.Server.Jobs.HandleSQSEvent(context.Background(), batch)
		if err != nil || len(res.BatchItemFailures) != 0 {
			t.Fatalf("delivery %d: %+v, %v", try+1, res.BatchItemFailures, err)
		}
	}
	f.run(t)
	got, ids := delivered(f.rm.received(t))
	if !slices.Equal(got, want) {
		t.Errorf("remote took %q in %v, want %q once", got, ids, want)
	}
}

// TestSender_ServerACL: once the room's server ACL denies the remote, the
// room's events (the ACL event among them) no longer go to it; once the
// ACL lets it in again, they do.
func TestSender_ServerACL(t *testing.T) {
	f := newFixture(t)
	acl := func(deny []string) {
		t.Helper()
		r := f.st.Do(t, "PUT", "/_matrix/client/v3/rooms/"+f.roomID+"/state/m.room.server_acl/", f.alice.AccessToken,
			map[string]any{"allow": []string{"*"}, "deny": deny, "allow_ip_literals": true})
		if r.Status != 200 {
			t.Fatalf("set the ACL: %d %s", r.Status, r.Raw)
		}
	}
	f.send(t, "before")
	acl([]string{"EXAMPLE.com"})
	f.send(t, "denied")
	acl([]string{"other.example"})
	f.send(t, "again")
	f.run(t)
	var got []string
	for _, x := range f.rm.received(t) {
		got = append(got, x.Bodies...)
	}
	// The ACL event that lets the remote in again has no body.
	if want := []string{"before", "", "again"}; !slices.Equal(got, want) {
		t.Errorf("remote got %q, want %q", got, want)
	}
}
