package sender

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The items of a destination, all in its partition fedout|<server name>.
// docs/storage.md describes each with what it costs.
//
//	seq      the counter that numbers the outbox (n), bumped once per entry
//	q|<seq>  one outbox entry: a PDU or an EDU waiting to be sent
//	state    the lease, the transaction being sent and the backoff

func partition(destination string) string { return "fedout|" + destination }

const (
	counterSK   = "seq"
	counterAttr = "n"
	stateSK     = "state"
	entryPrefix = "q|"
)

// Sequences are zero-padded so that sort keys order like numbers.
func entrySK(seq int64) string { return fmt.Sprintf("%s%015d", entryPrefix, seq) }

func seqOf(sk string) int64 {
	n, _ := strconv.ParseInt(strings.TrimPrefix(sk, entryPrefix), 10, 64)
	return n
}

// entry is one PDU or EDU in a destination's outbox, in the order they were
// enqueued. A PDU is stored whole (its signed JSON), so that a batch is one
// query of the outbox and never a read of the rooms.
type entry struct {
	PK string `dynamodbav:"pk"`
	SK string `dynamodbav:"sk"`
	// Room and RoomSeq are a PDU's room and its position there: a batch
	// puts a room's PDUs in room order even when two appends enqueued them
	// the other way round.
	Room    string `dynamodbav:"room,omitempty"`
	RoomSeq int64  `dynamodbav:"rs,omitempty"`
	PDU     string `dynamodbav:"pdu,omitempty"`
	// EDU is {"edu_type": ..., "content": ...}.
	EDU string `dynamodbav:"edu,omitempty"`
	// Expires (Unix s) bounds what a server that never answers again
	// leaves behind: the table's TTL deletes the entry, at no write cost.
	Expires int64 `dynamodbav:"expires_at"`
}

// entryTTL is how long an entry waits for its destination: four times the
// longest default backoff.
const entryTTL = 28 * 24 * time.Hour

// state is what the sender of a destination keeps between invocations.
// Every write of it is conditional on the revision read, so a lease is held
// by one worker at a time.
type state struct {
	PK  string `dynamodbav:"pk"`
	SK  string `dynamodbav:"sk"`
	Rev int64  `dynamodbav:"rev"`
	// LeaseUntil (Unix ms) and Owner: the worker that is sending to the
	// destination, so that one transaction is in flight at a time and order
	// holds. A lease past its time is free (its worker died).
	LeaseUntil int64  `dynamodbav:"lease,omitempty"`
	Owner      string `dynamodbav:"owner,omitempty"`
	// Txn is the transaction formed and not yet delivered, and Seqs the
	// outbox entries it holds: a retry sends the same entries under the
	// same ID, so the destination can tell a retry from news.
	Txn  string  `dynamodbav:"txn,omitempty"`
	Seqs []int64 `dynamodbav:"seqs,omitempty"`
	// Failures counts the failed attempts in a row; Interval (ms) is the
	// backoff before jitter, RetryAt (Unix ms) the jittered time of the next
	// attempt. Zero when the destination is reachable.
	Failures int64 `dynamodbav:"failures,omitempty"`
	Interval int64 `dynamodbav:"interval,omitempty"`
	RetryAt  int64 `dynamodbav:"retry_at,omitempty"`
	// WakeAt is the RetryAt a wake-up message was queued for, so that the
	// jobs that find the destination in backoff queue no other.
	WakeAt int64 `dynamodbav:"wake_at,omitempty"`
}
