package servertest

import (
	"context"
	"sync"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/queue"
)

// RunQueue gives the stack `cirrus serve`'s in-process queue, drained by
// the dispatcher's Poll until the test ends, as serve runs it: the sender
// delivers local events to other servers and the inbox worker takes the
// PDUs of received transactions, with no test hand in between. Call it
// before the stack serves federation requests.
func (s *Stack) RunQueue(t testing.TB) {
	t.Helper()
	s.HoldQueue(t)()
}

// HoldQueue gives the stack its in-process queue as RunQueue does, but
// drains it only once the returned function is called: work queued before
// then waits, so that a test acts before any job runs (a read receipt
// before the mail job it cancels) without depending on how fast the
// machine is.
func (s *Stack) HoldQueue(t testing.TB) (release func()) {
	t.Helper()
	mem := &queue.Memory{}
	s.Server.Queue = queue.New(mem, "local://cirrus/federation")
	ctx, cancel := context.WithCancel(context.Background())
	polled := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() {
		cancel()
		once.Do(func() { close(polled) }) // never released: nothing polls
		<-polled
	})
	return func() {
		once.Do(func() {
			go func() { s.Server.Jobs.Poll(ctx, mem, s.Server.Queue.URL()); close(polled) }()
		})
	}
}
