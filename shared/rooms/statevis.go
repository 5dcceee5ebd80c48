package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/stateres"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// History visibility by the state at each event. The room's history
// visibility list (info.Visibility) and each local user's membership list
// (membership.History) follow the current state as events arrived: the
// value after the event at position p is the current state's once it was
// appended. For an event built on the forward extremities (every local
// event, every linear received one) that is the state at it. An event
// received on a fork has a state of its own, resolved from its
// prev_events, which may differ: a branch that did not see a leave or a
// change of history visibility. For such an event, and only where its
// state differs from what the lists give, the room records its history
// visibility before and after it (info.VisibilityAt) and each local user
// whose membership differs records theirs (membership.At), in the
// transaction of its slot. The viewer reads those in place of the lists.

// stateAt is one piece of state (a history visibility, a membership)
// before and after an event, "" for none.
type stateAt struct{ before, after string }

// stateAtOf parses "<position>:<before>:<after>" entries.
func stateAtOf(list []string) map[int64]stateAt {
	if len(list) == 0 {
		return nil
	}
	out := make(map[int64]stateAt, len(list))
	for _, e := range list {
		parts := strings.SplitN(e, ":", 3)
		if len(parts) != 3 {
			continue
		}
		n, err := strconv.ParseInt(parts[0], 10, 64)
		if err != nil {
			continue
		}
		out[n] = stateAt{before: parts[1], after: parts[2]}
	}
	return out
}

func stateAtEntry(seq int64, o stateAt) string {
	return strconv.FormatInt(seq, 10) + ":" + o.before + ":" + o.after
}

// recordStateAt records, for the event received on a fork at the batch's
// position, the history visibility and the local users' memberships in the
// states before and after it where they differ from what the lists give
// (the current state before the event, oldHashes and oldLocals, and once
// it is appended, newCur of newHashes). Only the buckets whose blocks
// differ are compared: the old blocks of those are read (most are read
// already), then the events of the tuples whose IDs differ. The room info
// and the membership items that change are written in the batch.
func (b *batch) recordStateAt(ctx context.Context, l *graphLoader, before, after, newCur stateres.StateMap, oldHashes, newHashes []string, oldLocals map[string]string) error {
	beforeH, _ := blocksOf(b.roomID, before)
	afterH := newHashes
	if len(after) != len(newCur) || !equalStates(after, newCur) {
		afterH, _ = blocksOf(b.roomID, after)
	}
	tuples := []stateres.Key{{Type: events.HistoryVisibility}}
	seen := map[string]bool{}
	addUser := func(u string) {
		if !seen[u] && b.s.isLocal(u) {
			seen[u] = true
			tuples = append(tuples, stateres.Key{Type: events.Member, StateKey: u})
		}
	}
	for _, m := range []stateres.StateMap{before, after} {
		for k := range m {
			if k.Type == events.Member {
				addUser(k.StateKey)
			}
		}
	}
	for _, users := range []map[string]string{oldLocals, b.locals.Users} {
		for u := range users {
			addUser(u)
		}
	}
	sort.Slice(tuples[1:], func(i, j int) bool { return tuples[1+i].StateKey < tuples[1+j].StateKey })
	var differ []stateres.Key
	var oldBlocks []string
	for _, t := range tuples {
		i := bucketOf(t.Type + "\x00" + t.StateKey)
		if beforeH[i] != oldHashes[i] || afterH[i] != newHashes[i] {
			differ = append(differ, t)
			oldBlocks = append(oldBlocks, oldHashes[i])
		}
	}
	if len(differ) == 0 {
		return nil
	}
	blocks, err := b.s.readBlocks(ctx, b.roomID, l.blocks, oldBlocks)
	if err != nil {
		return err
	}
	type pair struct {
		t    stateres.Key
		b, a string // event IDs before and after the event
	}
	var pairs []pair
	var ids []string
	for _, t := range differ {
		key := t.Type + "\x00" + t.StateKey
		old := blocks[oldHashes[bucketOf(key)]][key]
		if before[t] == old && after[t] == newCur[t] {
			continue
		}
		pairs = append(pairs, pair{t: t, b: before[t], a: after[t]})
		for _, id := range []string{before[t], after[t]} {
			if id != "" {
				ids = append(ids, id)
			}
		}
	}
	if len(pairs) == 0 {
		return nil
	}
	got, err := l.Events(ctx, ids)
	if err != nil {
		return err
	}
	valueOf := func(id string) (string, error) {
		if id == "" {
			return "", nil
		}
		ev, ok := got[id]
		if !ok {
			return "", fmt.Errorf("%w %s (state at a forked event)", ErrUnknownEvent, id)
		}
		if ev.Type() == events.Member {
			m, _ := ev.Membership()
			return m, nil
		}
		var c struct {
			V string `json:"history_visibility"`
		}
		_ = json.Unmarshal(ev.Content(), &c)
		return c.V, nil
	}
	for _, p := range pairs {
		var o stateAt
		if o.before, err = valueOf(p.b); err != nil {
			return err
		}
		if o.after, err = valueOf(p.a); err != nil {
			return err
		}
		if p.t.Type == events.HistoryVisibility {
			if err := b.readInfo(ctx); err != nil {
				return err
			}
			if o.before != at(b.info.Visibility, b.seq-1) || o.after != at(b.info.Visibility, b.seq) {
				b.info.VisibilityAt = append(b.info.VisibilityAt, stateAtEntry(b.seq, o))
			}
			continue
		}
		mem, err := b.memberItem(ctx, p.t.StateKey)
		if err != nil || mem == nil {
			return err
		}
		if o.before != at(mem.History, b.seq-1) || o.after != at(mem.History, b.seq) {
			mem.At = append(mem.At, stateAtEntry(b.seq, o))
		}
	}
	return nil
}

func equalStates(a, c stateres.StateMap) bool {
	for k, id := range a {
		if c[k] != id {
			return false
		}
	}
	return true
}

// readInfo reads the room info into the batch, unless it holds it.
func (b *batch) readInfo(ctx context.Context) error {
	if b.info != nil {
		return nil
	}
	b.info = &info{}
	if err := b.s.Store.Get(ctx, store.Key{PK: roomPK(b.roomID), SK: infoSK}, b.info); err != nil {
		b.info = nil
		return fmt.Errorf("read info of %s: %w", b.roomID, err)
	}
	return nil
}

// memberItem is the local user's membership item, from the batch or read
// into it; nil when the user has none (never in the room here).
func (b *batch) memberItem(ctx context.Context, userID string) (*membership, error) {
	if mem, ok := b.members[userID]; ok {
		return mem, nil
	}
	mem := &membership{}
	err := b.s.Store.Get(ctx, store.Key{PK: userPK(userID), SK: membershipPrefix + b.roomID}, mem)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, err
	}
	b.members[userID] = mem
	return mem, nil
}
