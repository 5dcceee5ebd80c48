package unread

import (
	gosync "sync"
)

// receiptKey names a user's receipt in a room, as Count takes it: with
// threads apart, or not.
type receiptKey struct {
	userID, roomID string
	threads        bool
}

// counted is what Count last found for a receiptKey in this process: the
// receipt position it counted from, the newest position it read (upTo),
// and the outcome of each event after the receipt, newest first, at most
// MaxCounted. An event does not change once in the timeline, so the next
// count reads the events after upTo only, beside the receipts, and takes
// the older outcomes from here: a sync with one new message evaluates
// one event, not the hundred unread before it.
//
// It is a shortcut, never what decides a count: the receipts are read
// every time, and the outcomes are taken only where they were evaluated
// on the same basis as now (the rules, the room's member count, the
// user's display name, the power levels) and no redaction came since;
// else Count reads every event after the receipt again. A room with gaps
// in its timeline, where a backfilled event may take a position below
// upTo, keeps upTo at the receipt.
type counted struct {
	from, upTo int64
	basis      basis
	evs        []outcome
}

// outcome is what the rules made of one event.
type outcome struct {
	pos               int64
	thread            string // "main", or the thread root's event ID
	notify, highlight bool
}

// basis is what an event's outcome depends on besides the event.
type basis struct {
	rules       uint64 // the rules' fingerprint (rulesOf)
	members     int
	displayName string
	levels      string // the power levels' event ID
}

// after is the outcomes of events after position from.
func (c counted) after(from int64) []outcome {
	for i, o := range c.evs {
		if o.pos <= from {
			return c.evs[:i]
		}
	}
	return c.evs
}

// memo holds counted by receiptKey. It forgets all once it holds
// maxMemoKeys keys or maxMemoOutcomes outcomes (about 20 MB).
type memo struct {
	mu       gosync.Mutex
	byKey    map[receiptKey]counted
	outcomes int
}

const (
	maxMemoKeys     = 100000
	maxMemoOutcomes = 500000
)

func (m *memo) get(k receiptKey) (counted, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.byKey[k]
	return c, ok
}

func (m *memo) put(k receiptKey, c counted) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old, had := m.byKey[k]
	if !had && len(m.byKey) >= maxMemoKeys || m.outcomes-len(old.evs)+len(c.evs) > maxMemoOutcomes {
		m.byKey, m.outcomes, old = nil, 0, counted{}
	}
	if m.byKey == nil {
		m.byKey = map[receiptKey]counted{}
	}
	m.outcomes += len(c.evs) - len(old.evs)
	m.byKey[k] = c
}
