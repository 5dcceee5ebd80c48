package rooms

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// viewer is what decides which events of a room a user may see: their
// membership over time and the room's history visibility over time.
type viewer struct {
	userID     string
	membership membership
	visibility []string
	info       info
	// visAt and memAt are the history visibility and the membership in
	// the state at events where the lists above do not give them (events
	// received on a fork), by position.
	visAt, memAt map[int64]stateAt
	// holds are the positions of slots that only hold a gap's first
	// position (slot.Hold): no event to show.
	holds []int64
	// news is set for a page of events new to the reader (/sync): the
	// events placed in gaps are history, left out.
	news   bool
	gapped []gap
}

// viewerOf reads the two items history visibility needs, side by side. A
// user who was never in the room may still read a world-readable one.
func (s *Service) viewerOf(ctx context.Context, userID, roomID string) (*viewer, error) {
	return s.viewerBeside(ctx, userID, roomID, nil)
}

// viewerBeside is viewerOf with beside, when not nil, run at the same time
// as its reads: a read that needs no viewer, such as the first page of
// slots, costs no round trip more than the viewer's. Its error counts only
// for a viewer who may read the room: a refusal is the same whatever beside
// read, and what it read is the caller's to discard.
func (s *Service) viewerBeside(ctx context.Context, userID, roomID string, beside func(context.Context) error) (*viewer, error) {
	v := &viewer{userID: userID}
	var m membership
	var infoErr, memberErr, besideErr error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		infoErr = store.GetShared(ctx, s.Store, store.Key{PK: roomPK(roomID), SK: infoSK}, &v.info)
	}()
	go func() {
		defer wg.Done()
		m, memberErr = s.membership(ctx, userID, roomID)
	}()
	if beside != nil {
		besideErr = beside(ctx)
	}
	wg.Wait()
	if infoErr != nil {
		if errors.Is(infoErr, store.ErrNotFound) {
			return nil, refuse(ErrForbidden, "you are not in room %s, or it does not exist on this server", roomID)
		}
		return nil, infoErr
	}
	v.visibility = v.info.Visibility
	v.visAt = stateAtOf(v.info.VisibilityAt)
	v.holds = v.info.Holds
	v.gapped = gapsOf(v.info.Gapped)
	if memberErr != nil {
		return nil, memberErr
	}
	// The spec: after /forget the user can no longer retrieve the room's
	// history; they read it as someone who was never in it.
	if m.Forgotten {
		m = membership{}
	}
	v.membership = m
	v.memAt = stateAtOf(m.At)
	if len(m.History) == 0 && !v.worldReadableNow() {
		return nil, refuse(ErrForbidden, "you are not in room %s, and its history is not world readable", roomID)
	}
	if besideErr != nil {
		return nil, besideErr
	}
	return v, nil
}

func (v *viewer) worldReadableNow() bool {
	return at(v.visibility, 1<<62) == "world_readable"
}

func (v *viewer) joined() bool { return v.membership.Membership == "join" }

// permissive ranks history visibilities, most open first.
var permissive = map[string]int{"world_readable": 4, "shared": 3, "invited": 2, "joined": 1}

// visibilityAt is the history visibility that governs the event at seq: the
// more open of the setting before it and after it, so that the event that
// changes the setting is seen by those either setting allows.
func (v *viewer) visibilityAt(seq int64) string {
	before, after := v.settingAt(seq-1), v.settingAt(seq)
	if o, ok := v.visAt[seq]; ok {
		before, after = orShared(o.before), orShared(o.after)
	}
	if permissive[before] > permissive[after] {
		return before
	}
	return after
}

func orShared(s string) string {
	if s == "" {
		return "shared" // the spec's default
	}
	return s
}

// settingAt is the history visibility set at seq: "shared" before any
// setting, except below a remote join (joinBase): history backfilled
// there takes the first setting this server knows, that of the state
// taken in at the join, not the default.
func (v *viewer) settingAt(seq int64) string {
	if s := at(v.visibility, seq); s != "" {
		return s
	}
	if seq < joinBase && len(v.visibility) > 0 {
		p, s, _ := strings.Cut(v.visibility[0], ":")
		if n, err := strconv.ParseInt(p, 10, 64); err == nil && n >= joinBase {
			return s
		}
	}
	return "shared"
}

// sees applies the spec's rules for the history visibility of an event, in
// the state at it. Only the user's own member events change their
// membership, so where it differs before and after seq the event is one of
// those, which the spec lets the user see if either membership allows:
// their own leave, say.
func (v *viewer) sees(seq int64) bool {
	if slices.Contains(v.holds, seq) || (v.news && inGap(v.gapped, seq)) {
		return false
	}
	vis := v.visibilityAt(seq)
	if vis == "world_readable" || (vis == "shared" && v.joinedAfter(seq)) {
		return true
	}
	before, after := at(v.membership.History, seq-1), at(v.membership.History, seq)
	if o, ok := v.memAt[seq]; ok {
		before, after = o.before, o.after
	}
	for _, m := range []string{before, after} {
		if m == "join" || (vis == "invited" && m == "invite") {
			return true
		}
	}
	return false
}

// joinedAfter reports whether the user joined at some point after seq.
func (v *viewer) joinedAfter(seq int64) bool {
	for i := len(v.membership.History) - 1; i >= 0; i-- {
		h := v.membership.History[i]
		if at([]string{h}, 1<<62) == "join" && at([]string{h}, seq) == "" {
			return true
		}
	}
	return false
}

// membershipAt is the user's membership just after the event at seq, "leave"
// when they had none.
func (v *viewer) membershipAt(seq int64) string {
	m := at(v.membership.History, seq)
	if o, ok := v.memAt[seq]; ok {
		m = o.after
	}
	if m != "" {
		return m
	}
	return "leave"
}

// limit is the last position the user may see: where they left, or the
// head for members and readers of world-readable rooms; past where they
// left, an event on a fork whose state says they were joined, or that the
// room was world readable.
func (v *viewer) limit() int64 {
	if v.joined() || v.worldReadableNow() || v.membership.Membership == "invite" || v.membership.Membership == "knock" {
		return 1 << 62
	}
	last := v.membership.Seq
	for seq, o := range v.memAt {
		if o.before == "join" || o.after == "join" || o.before == "invite" || o.after == "invite" {
			last = max(last, seq)
		}
	}
	for seq, o := range v.visAt {
		if o.before == "world_readable" || o.after == "world_readable" {
			last = max(last, seq)
		}
	}
	return last
}
