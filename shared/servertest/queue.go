package servertest

import (
	"context"
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
	mem := &queue.Memory{}
	s.Server.Queue = queue.New(mem, "local://cirrus/federation")
	ctx, cancel := context.WithCancel(context.Background())
	polled := make(chan struct{})
	go func() { s.Server.Jobs.Poll(ctx, mem, s.Server.Queue.URL()); close(polled) }()
	t.Cleanup(func() { cancel(); <-polled })
}
