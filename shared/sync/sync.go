package sync

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	gosync "sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Service builds sync responses.
type Service struct {
	Store *store.Store
	Rooms *rooms.Service
	// AccountData lists a user's account data of roomID ("" for global)
	// written since the time given (the zero time: all of it); nil leaves
	// account data out.
	AccountData func(ctx context.Context, userID, roomID string, since time.Time) ([]json.RawMessage, error)
	// ShareReceipts begins reading the user's read receipts of the rooms
	// for the request's shared reads (store.WithShared), which the unread
	// counts of each then take; nil: each room's counts read their own.
	ShareReceipts func(ctx context.Context, userID string, roomIDs []string)
	// RoomsAccountData lists all of a user's per-room account data, by
	// room: an initial sync reads it once (one Query per MB) instead of
	// once per room; nil reads each room's through AccountData.
	RoomsAccountData func(ctx context.Context, userID string) (map[string][]json.RawMessage, error)
	// Ephemeral lists a room's ephemeral events for the user (typing, and
	// receipts since the time given; all of them at the zero time), and when
	// the first user typing stops by timeout (zero: nobody types); nil
	// gives none.
	Ephemeral func(ctx context.Context, userID, roomID string, since time.Time) (evs []json.RawMessage, typingEnds time.Time, err error)
	// Presence lists the m.presence events of users; SetPresence applies a
	// sync's set_presence. nil: presence is off.
	Presence    func(ctx context.Context, users []string) ([]json.RawMessage, error)
	SetPresence func(ctx context.Context, userID, presence string) error
	// Unread counts the notifying events a user has not read in a room,
	// with threads apart by thread root when threads is set; nil leaves
	// unread_notifications out.
	Unread func(ctx context.Context, userID, roomID string, threads bool) (Unread, map[string]Unread, error)
	// KeyCounts reads a device's one-time key counts by algorithm and its
	// unused fallback key types; nil gives none.
	KeyCounts func(ctx context.Context, userID, deviceID string) (map[string]int, []string, error)
	// ToDevice reads a device's to-device inbox: it deletes the messages
	// that cursor (from the since token; "" for none) says were delivered,
	// and returns the next ones with the cursor that says these were
	// (todevice.Service.Deliver). nil leaves to_device out.
	ToDevice func(ctx context.Context, userID, deviceID, cursor string) ([]json.RawMessage, string, error)
	// ToDeviceAtMost is ToDevice returning at most limit messages
	// (todevice.Service.DeliverAtMost), for sliding sync's to_device
	// limit; nil: ToDevice.
	ToDeviceAtMost func(ctx context.Context, userID, deviceID, cursor string, limit int) ([]json.RawMessage, string, error)
	// Ignored lists the users whose invites userID does not want to see
	// (m.ignored_user_list); nil ignores no one.
	Ignored func(ctx context.Context, userID string) (map[string]bool, error)
	// RemoteRooms lists the rooms here a user of another server is joined
	// to (e2ekeys.Service.RemoteRooms), for device_lists; nil: none.
	RemoteRooms func(ctx context.Context, userID string) ([]string, error)
	// Notify, when set, tells other processes of news written here, by
	// the keys of the syncs it wakes (user IDs, device keys): the sync
	// tier's processes wake them at once instead of at their next poll. It
	// runs once the entries are stored; news it fails to carry is found
	// at the next poll.
	Notify func(ctx context.Context, keys []string)
	// PollInterval is how often a waiting sync reads its stream.
	PollInterval time.Duration
	// MaxTimeout caps the timeout a client asks for.
	MaxTimeout time.Duration
	// Now is the clock; nil is time.Now.
	Now func() time.Time

	waiters waiters
	uploads uploads
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Request is one GET /sync.
type Request struct {
	UserID, DeviceID string
	Since            string
	// SetPresence is the set_presence parameter: online when absent.
	SetPresence string
	Timeout     time.Duration
	FullState   bool
	Filter      Filter
	// StateAfter is use_state_after (spec v1.16, MSC4222): rooms carry the
	// state up to the end of their timeline in state_after, not state.
	// UnstableStateAfter is the same asked under MSC4222's unstable name,
	// answered under its unstable name too, as Synapse does.
	StateAfter, UnstableStateAfter bool
	// uploadsBase is the device's uploads.generation before the stream
	// was read: an upload after it has the key counts read again
	// (keyCounts).
	uploadsBase uint64
}

// Filter is what of the client's filter this server applies.
type Filter struct {
	// TimelineLimit is room.timeline.limit: events per room timeline.
	TimelineLimit int
	// IncludeLeave is room.include_leave: rooms left since, in initial syncs too.
	IncludeLeave bool
	// Rooms and NotRooms are room.rooms and room.not_rooms (nil: all).
	Rooms, NotRooms []string
	// Timeline and State are room.timeline and room.state; State's
	// lazy_load_members sends only the members the timeline needs.
	Timeline, State *events.RoomEventFilter
	// EventFields keeps only these fields of each event.
	EventFields []string
	// Format is event_format: client (the default) or federation.
	Format events.Format
}

// wants reports whether the filter lets the room through.
func (f Filter) wants(roomID string) bool {
	if f.Rooms != nil && !slices.Contains(f.Rooms, roomID) {
		return false
	}
	return !slices.Contains(f.NotRooms, roomID)
}

func (f Filter) lazy() bool { return f.State != nil && f.State.LazyLoadMembers }

// Response is the body of a sync answer.
type Response struct {
	NextBatch   string      `json:"next_batch"`
	Rooms       RoomUpdates `json:"rooms"`
	AccountData *EventList  `json:"account_data,omitempty"`
	Presence    *EventList  `json:"presence,omitempty"`
	ToDevice    *EventList  `json:"to_device,omitempty"`
	// DeviceLists comes in incremental syncs only: an initial one makes
	// the client fetch every device list it needs.
	DeviceLists *DeviceLists `json:"device_lists,omitempty"`
	// The key counts come in every response: the spec has a client take
	// counts that are missing for zero, and upload more keys.
	OneTimeKeysCount       map[string]int `json:"device_one_time_keys_count"`
	UnusedFallbackKeyTypes []string       `json:"device_unused_fallback_key_types"`

	devices *deviceNews
	// ignored is the user's ignore list when read ahead (readIgnored).
	ignored     map[string]bool
	ignoredRead bool
}

// RoomUpdates groups rooms by the user's membership.
type RoomUpdates struct {
	Join   map[string]*JoinedRoom  `json:"join"`
	Invite map[string]*InvitedRoom `json:"invite"`
	Leave  map[string]*LeftRoom    `json:"leave"`
	Knock  map[string]*KnockedRoom `json:"knock"`
}

// EventList is the spec's {"events": [...]}.
type EventList struct {
	Events []json.RawMessage `json:"events"`
}

// Timeline is a room's newest events.
type Timeline struct {
	Events    []json.RawMessage `json:"events"`
	Limited   bool              `json:"limited"`
	PrevBatch string            `json:"prev_batch,omitempty"`
}

// JoinedRoom is a room the user is in.
type JoinedRoom struct {
	Summary *Summary `json:"summary,omitempty"`
	Unread  *Unread  `json:"unread_notifications,omitempty"`
	// UnreadThreads counts by thread root, for clients that ask.
	UnreadThreads map[string]Unread `json:"unread_thread_notifications,omitempty"`
	Timeline      Timeline          `json:"timeline"`
	// State is omitted (nil events) when the request asked for StateAfter.
	State       EventList `json:"state,omitzero"`
	AccountData EventList `json:"account_data"`
	Ephemeral   EventList `json:"ephemeral"`
	stateAfter
}

// stateAfter is the state up to the end of a room's timeline, under the
// name the request asked for it by; the spec has it even when empty.
type stateAfter struct {
	StateAfter         *EventList `json:"state_after,omitempty"`
	UnstableStateAfter *EventList `json:"org.matrix.msc4222.state_after,omitempty"`
}

// Unread is a room's counts of notifying events not yet read.
type Unread struct {
	Notifications int `json:"notification_count"`
	Highlights    int `json:"highlight_count"`
}

// Summary is what a client needs to name a room without reading every
// member event, sent when the room comes whole or its members change.
type Summary struct {
	Heroes  []string `json:"m.heroes"`
	Joined  int      `json:"m.joined_member_count"`
	Invited int      `json:"m.invited_member_count"`
}

// summarize counts the members in a room's state and picks up to five
// heroes: joined or invited users other than userID, by user ID.
func summarize(state []events.PDU, userID string) *Summary {
	sum := &Summary{Heroes: []string{}}
	var others []string
	for _, ev := range state {
		if ev.Type() != events.Member {
			continue
		}
		m, _ := ev.Membership()
		switch m {
		case "join":
			sum.Joined++
		case "invite":
			sum.Invited++
		default:
			continue
		}
		if u := *ev.StateKey(); u != userID {
			others = append(others, u)
		}
	}
	slices.Sort(others)
	sum.Heroes = append(sum.Heroes, others[:min(len(others), 5)]...)
	return sum
}

// LeftRoom is a room the user left or was removed from since.
type LeftRoom struct {
	Timeline    Timeline  `json:"timeline"`
	State       EventList `json:"state,omitzero"`
	AccountData EventList `json:"account_data"`
	stateAfter
}

// InvitedRoom is a room the user is invited to.
type InvitedRoom struct {
	InviteState strippedList `json:"invite_state"`
}

// KnockedRoom is a room the user knocked on.
type KnockedRoom struct {
	KnockState strippedList `json:"knock_state"`
}

type strippedList struct {
	Events []events.StrippedStateEvent `json:"events"`
}

func emptyResponse() *Response {
	return &Response{Rooms: RoomUpdates{
		Join: map[string]*JoinedRoom{}, Invite: map[string]*InvitedRoom{},
		Leave: map[string]*LeftRoom{}, Knock: map[string]*KnockedRoom{},
	}}
}

// Sync answers req: everything for an initial sync, else what changed since
// its token, waiting up to its timeout for something to change.
func (s *Service) Sync(ctx context.Context, req Request) (*Response, error) {
	start := s.now()
	for {
		resp, again, err := s.syncFrom(ctx, req, start)
		if err != nil || !again {
			return resp, err
		}
		// The news named only messages whose slots were not there yet,
		// and nothing was delivered: the wait goes on from the answer's
		// token, which names them (position.Pending), to the same end.
		req.Since = resp.NextBatch
	}
}

// syncFrom is Sync from its start; again reports an answer that delivers
// nothing, for news whose events were on their way, which the sync does
// not give the client while it may wait on.
func (s *Service) syncFrom(ctx context.Context, req Request, start time.Time) (resp *Response, again bool, err error) {
	if req.Filter.Format != "" {
		ctx = rooms.WithFormat(ctx, req.Filter.Format)
	}
	// The events this device sent come back with their transaction IDs.
	ctx = rooms.WithDevice(ctx, req.DeviceID)
	if req.Filter.TimelineLimit <= 0 {
		req.Filter.TimelineLimit = 10
	}
	var pos position
	if req.Since != "" {
		var err error
		if pos, err = sincePosition(req.Since, req.UserID); err != nil {
			return nil, false, err
		}
	}
	// set_presence writes what nothing below reads (the user's own
	// presence is not in their sync): it goes beside the rest.
	req.uploadsBase = s.uploads.generation(deviceKey(req.UserID, req.DeviceID))
	side, sctx := errgroup.WithContext(ctx)
	side.Go(func() error { return s.presence(sctx, req, pos.Presence) })
	var next position
	box := openInbox(pos, req.DeviceID)
	if req.Since == "" {
		// The inbox and the key counts need nothing of the rooms.
		if s.ToDevice != nil {
			side.Go(func() error { _, err := s.readInbox(sctx, req, box, nil); return err })
		}
		keys := s.keysAhead(side, sctx, req, pos, false)
		resp, next, err = s.initial(rooms.WithReadsShared(sctx), req, start)
		if werr := side.Wait(); werr != nil {
			err = werr // the first: what the rest failed of, when canceled
		}
		if err == nil {
			err = keys.finish(ctx, s, req, pos, resp, &next)
		}
	} else {
		var fresh []news
		var readAt time.Time
		var recheck recheck
		var keys *keysAhead
		if fresh, readAt, err = s.await(sctx, req, pos, box, start); err == nil {
			// Counts the token lacks, or news of them: read beside the rooms.
			counts := slices.ContainsFunc(fresh, func(n news) bool { return n.RoomID == keyCountPrefix+req.DeviceID })
			if c := pos.Keys; counts || c == nil || c.Device != deviceTag(req.DeviceID) {
				keys = s.keysAhead(side, sctx, req, pos, counts)
			}
			// The key counts are checked again beside the rooms' reads.
			recheck.begin(sctx, s, req, pos, readAt, fresh)
			// The rooms' reads share their info and membership items
			// (rooms.WithReadsShared), read once the wait is over.
			resp, next, err = s.incremental(rooms.WithReadsShared(sctx), req, pos, fresh, s.now())
			again = err == nil && next.nothingYet(fresh) && !req.FullState &&
				s.now().Before(start.Add(min(req.Timeout, s.MaxTimeout)))
		}
		if err == nil {
			err = s.settleDevices(sctx, req, resp)
		}
		if rerr := recheck.wait(resp); err == nil {
			err = rerr
		}
		if werr := side.Wait(); werr != nil {
			err = werr // the first: what the rest failed of, when canceled
		}
		if err == nil {
			err = keys.finish(ctx, s, req, pos, resp, &next)
		}
	}
	if err == nil {
		err = s.dropIgnoredInvites(ctx, req.UserID, resp)
	}
	if err != nil {
		return nil, false, err
	}
	next.Presence = req.SetPresence
	if s.ToDevice != nil {
		box.save(&next, req.DeviceID)
		if len(box.events) > 0 {
			resp.ToDevice = &EventList{Events: box.events}
			again = false
		}
	}
	resp.NextBatch = next.encode()
	return resp, again, nil
}

// dropIgnoredInvites leaves out invites from users the user ignores, as
// the spec's ignoring users module says. Cost: one GetItem of the ignore
// list, in syncs that hold an invite.
func (s *Service) dropIgnoredInvites(ctx context.Context, userID string, resp *Response) error {
	if s.Ignored == nil || len(resp.Rooms.Invite) == 0 {
		return nil
	}
	if !resp.ignoredRead {
		if err := s.readIgnored(ctx, userID, resp); err != nil {
			return err
		}
	}
	ignored := resp.ignored
	if len(ignored) == 0 {
		return nil
	}
	for roomID, inv := range resp.Rooms.Invite {
		for _, ev := range inv.InviteState.Events {
			if ev.Type == events.Member && ev.StateKey == userID && ignored[ev.Sender] {
				delete(resp.Rooms.Invite, roomID)
			}
		}
	}
	return nil
}

// readIgnored reads the user's ignore list into resp, for
// dropIgnoredInvites: an initial sync reads it beside the rooms when the
// user has an invite.
func (s *Service) readIgnored(ctx context.Context, userID string, resp *Response) error {
	if s.Ignored == nil {
		return nil
	}
	ignored, err := s.Ignored(ctx, userID)
	if err != nil {
		return err
	}
	resp.ignored, resp.ignoredRead = ignored, true
	return nil
}

// presence applies set_presence when it differs from what the token says
// was applied last: syncing marks a user online once, not at every poll.
// "offline" leaves the presence as it is, as the spec has it.
func (s *Service) presence(ctx context.Context, req Request, applied string) error {
	if s.SetPresence == nil || req.SetPresence == "offline" || req.SetPresence == applied {
		return nil
	}
	return s.SetPresence(ctx, req.UserID, req.SetPresence)
}

// await waits until the user's stream holds news the token has not seen,
// or to-device messages wait in box, or the timeout passes: one small read
// per poll interval, and an earlier wake-up when this process writes the
// news. It returns the news and when the stream was last read.
func (s *Service) await(ctx context.Context, req Request, pos position, box *inbox, start time.Time) ([]news, time.Time, error) {
	deadline := start.Add(min(req.Timeout, s.MaxTimeout))
	if req.FullState {
		deadline = start
	}
	woken, done := s.waiters.wait(req.UserID, deviceKey(req.UserID, req.DeviceID))
	defer done()
	for first := true; ; first = false {
		readAt := s.now()
		all, err := s.readStream(ctx, req.UserID, pos.Time-window.Milliseconds(), false)
		if err != nil {
			return nil, time.Time{}, err
		}
		fresh := freshOnly(pos, all, req.DeviceID)
		messages, err := s.check(ctx, req, box, all)
		if err != nil {
			return nil, time.Time{}, err
		}
		// Typing the client saw that has timed out is news nobody wrote.
		due, stops := pos.typingDue(s.now())
		for _, room := range due {
			fresh = append(fresh, news{RoomID: room})
		}
		news := len(fresh) > 0 && !(first && pos.pending(fresh))
		if messages || news || !s.now().Before(deadline) || s.waiters.stopping() {
			return fresh, readAt, nil
		}
		wait := min(s.PollInterval, deadline.Sub(s.now()))
		if !stops.IsZero() {
			wait = min(wait, stops.Sub(s.now()))
		}
		select {
		case <-woken:
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, time.Time{}, ctx.Err()
		}
	}
}

// freshOnly keeps the news pos has not delivered to deviceID: to-device
// entries are the inbox's business, and key counts of other devices none of
// its.
func freshOnly(pos position, all []news, deviceID string) []news {
	var out []news
	for _, n := range all {
		switch {
		case !pos.fresh(n), strings.HasPrefix(n.RoomID, toDevicePrefix):
		case strings.HasPrefix(n.RoomID, keyCountPrefix) && n.RoomID != keyCountPrefix+deviceID:
		default:
			out = append(out, n)
		}
	}
	return out
}

// initial is a sync without a token: every room the user is in.
func (s *Service) initial(ctx context.Context, req Request, start time.Time) (*Response, position, error) {
	resp := emptyResponse()
	// Ephemeral data is read whole below: entries before now are old news.
	next := position{User: userTag(req.UserID), Time: start.UnixMilli(), Sent: map[string][2]int64{}, Ephemeral: start.UnixMilli()}
	// Everything is read side by side: an initial sync of many rooms waits
	// on DynamoDB round trips, not on this process. The global account
	// data needs not even the memberships.
	var mu gosync.Mutex
	var data *roomsData
	if s.RoomsAccountData != nil {
		// The rooms' account data is read once, for every room's extras.
		data = &roomsData{done: make(chan struct{})}
		ctx = context.WithValue(ctx, roomsDataKey{}, data)
	}
	g, gctx := errgroup.WithContext(ctx)
	global := &Response{}
	g.Go(func() error { return s.globalData(gctx, req.UserID, time.Time{}, global) })
	if data != nil {
		g.Go(func() error {
			defer close(data.done)
			data.rooms, data.err = s.RoomsAccountData(gctx, req.UserID)
			return data.err
		})
	}
	ms, err := s.Rooms.Memberships(gctx, req.UserID)
	if err != nil {
		_ = g.Wait()
		return nil, position{}, err
	}
	var joined []string
	invited := false
	for _, m := range ms {
		switch {
		case !req.Filter.wants(m.RoomID):
		case m.Membership == "join":
			joined = append(joined, m.RoomID)
		case m.Membership == "invite":
			invited = true
		}
	}
	// Each joined room's reads begin with its summary, and its counts
	// with the user's receipts: all are read at once, in a call per 100
	// items.
	s.Rooms.ShareInfos(gctx, joined)
	if s.ShareReceipts != nil {
		s.ShareReceipts(gctx, req.UserID, joined)
	}
	present := &Response{}
	g.Go(func() error { return s.initialPresence(gctx, req.UserID, joined, present) })
	if invited {
		g.Go(func() error { return s.readIgnored(gctx, req.UserID, resp) })
	}
	slots := make(chan struct{}, initialParallelism)
	for _, m := range ms {
		slots <- struct{}{}
		g.Go(func() error {
			defer func() { <-slots }()
			return s.initialRoom(gctx, req, resp, &next, &mu, m)
		})
	}
	if err := g.Wait(); err != nil {
		return nil, position{}, err
	}
	resp.AccountData, resp.Presence = global.AccountData, present.Presence
	return resp, next, nil
}

// initialRoom adds one room of an initial sync to resp and next, under mu:
// the rooms of an initial sync are read side by side, and the parts of a
// joined room too.
func (s *Service) initialRoom(ctx context.Context, req Request, resp *Response, next *position, mu *gosync.Mutex, m rooms.Membership) error {
	part := emptyResponse()
	sent := position{Time: next.Time, Sent: map[string][2]int64{}}
	var side roomSide
	g, gctx := errgroup.WithContext(ctx)
	head := newHeadPromise()
	if m.Membership == "join" && req.Filter.wants(m.RoomID) {
		s.goSide(g, gctx, req, m.RoomID, time.Time{}, true, head.wait, &side)
	}
	err := s.room(withHeadHook(gctx, head.set), req, part, &sent, m, -1, -1, true)
	head.set(0) // unknown if the timeline was not read: nobody waits on
	if werr := g.Wait(); werr != nil {
		err = werr
	}
	if err != nil {
		return err
	}
	if j, ok := part.Rooms.Join[m.RoomID]; ok {
		side.extras.apply(m.RoomID, j, &sent)
		side.counts.apply(j)
	}
	mu.Lock()
	defer mu.Unlock()
	part.mergeInto(resp)
	maps.Copy(next.Sent, sent.Sent)
	for room, ms := range sent.Typing {
		next.typingStops(room, time.UnixMilli(ms))
	}
	return nil
}

// incremental answers with the rooms that fresh names.
func (s *Service) incremental(ctx context.Context, req Request, pos position, fresh []news, now time.Time) (*Response, position, error) {
	resp := emptyResponse()
	// Read up to the time the stream was last read: later entries come next.
	next := position{User: pos.User, Time: now.UnixMilli(), Sent: map[string][2]int64{}, Ephemeral: pos.Ephemeral}
	for room, sent := range pos.Sent {
		if sent[1] >= next.Time-window.Milliseconds() {
			next.Sent[room] = sent
		}
	}
	// Rooms whose typing has timed out are read below, as ephemeral news.
	for room, ms := range pos.Typing {
		if ms > now.UnixMilli() {
			next.typingStops(room, time.UnixMilli(ms))
		}
	}
	from := map[string]int64{}
	newest := map[string]int64{}
	ephemeral := map[string]bool{}
	// Ephemeral events and account data are read from just after the newest
	// ephemeral entry the token delivered: data is written before its entry,
	// so what was written by then came then.
	since := time.UnixMilli(pos.Ephemeral + 1)
	if pos.Ephemeral == 0 {
		since = time.UnixMilli(pos.Time).Add(-window)
	}
	var present []string
	resp.devices = newDeviceNews()
	for _, n := range fresh {
		if resp.devices.entry(n, req.DeviceID) {
			next.Ephemeral = max(next.Ephemeral, n.TS)
			continue
		}
		if strings.HasPrefix(n.RoomID, "@") {
			// Presence news: the room field holds whose presence changed.
			present = append(present, n.RoomID)
			next.Ephemeral = max(next.Ephemeral, n.TS)
			continue
		}
		if n.Seq == 0 {
			ephemeral[n.RoomID] = true
			next.Ephemeral = max(next.Ephemeral, n.TS)
			continue
		}
		f, ok := from[n.RoomID]
		if sent, was := pos.Sent[n.RoomID]; was {
			f, ok = sent[0], true
		}
		if !ok || n.Seq-1 < f {
			f = n.Seq - 1
		}
		from[n.RoomID] = f
		newest[n.RoomID] = max(newest[n.RoomID], n.TS)
		next.Sent[n.RoomID] = [2]int64{max(next.Sent[n.RoomID][0], n.Seq), newest[n.RoomID]}
	}
	// What the news names is read beside the memberships, as if the user
	// were still joined to its rooms: they mostly are, and a room they
	// are not is read again below (roomAhead).
	var wg gosync.WaitGroup
	defer wg.Wait() // every read over (and metered) before the answer goes
	global := &Response{}
	var globalErr error
	if ephemeral[""] {
		wg.Go(func() { globalErr = s.globalData(ctx, req.UserID, since, global) })
	}
	if len(from) == 0 && len(ephemeral) == 0 && !req.FullState {
		wg.Wait()
		if globalErr != nil {
			return nil, position{}, globalErr
		}
		resp.AccountData = global.AccountData
		return resp, next, s.presenceOf(ctx, resp, present)
	}
	// An error below leaves what was read ahead unused: it stops.
	actx, cancel := context.WithCancel(ctx)
	defer cancel() // before wg.Wait, deferred first
	ahead := s.readAhead(actx, &wg, req, from, ephemeral, next, since)
	ms, err := s.memberships(ctx, req, from, ephemeral)
	if err != nil {
		return nil, position{}, err
	}
	for _, m := range ms {
		if err := s.incrementalRoom(ctx, req, resp, &next, m, from, ephemeral, since, ahead[m.RoomID]); err != nil {
			return nil, position{}, err
		}
	}
	wg.Wait()
	if globalErr != nil {
		return nil, position{}, globalErr
	}
	resp.AccountData = global.AccountData
	return resp, next, s.presenceOf(ctx, resp, present)
}

// roomAhead is what an incremental sync reads of a room its news names
// beside the user's memberships, as if the user were still joined: its
// timeline and state since the token (when the room has timeline news),
// its extras (when it has ephemeral news) and its unread counts. Each is
// ready once done is closed.
type roomAhead struct {
	done chan struct{}

	timeline bool
	// page is the timeline's page read, when it was (a join since the
	// token shows the room whole, from the same page).
	page    *rooms.Page
	j       *JoinedRoom
	head    int64
	members []memberEvent
	err     error

	side    roomSide
	sideErr error
}

// readAhead starts reading, in wg, the rooms that the news names and an
// answer shows joined: those of timeline news the filter wants, and those
// of ephemeral news.
func (s *Service) readAhead(ctx context.Context, wg *gosync.WaitGroup, req Request, from map[string]int64, ephemeral map[string]bool, next position, since time.Time) map[string]*roomAhead {
	out := map[string]*roomAhead{}
	// As many rooms at once as an initial sync reads: a token from long
	// ago may name hundreds.
	slots := make(chan struct{}, initialParallelism)
	add := func(roomID string) {
		if _, ok := out[roomID]; ok || !strings.HasPrefix(roomID, "!") {
			return
		}
		f, changed := from[roomID]
		changed = changed && req.Filter.wants(roomID)
		if !changed && !ephemeral[roomID] {
			return
		}
		a := &roomAhead{done: make(chan struct{}), timeline: changed}
		out[roomID] = a
		// The stream names the newest event, mostly one the user has
		// not read: the counts take it so.
		upto := next.Sent[roomID][0]
		var newest func(context.Context) int64
		if changed {
			newest = func(context.Context) int64 { return upto }
		}
		wg.Go(func() {
			defer close(a.done)
			slots <- struct{}{}
			defer func() { <-slots }()
			var g errgroup.Group
			if changed {
				g.Go(func() error {
					a.page = &rooms.Page{}
					a.j, a.head, a.members, a.err = s.joined(context.WithValue(ctx, pageKey{}, a.page), req, roomID, f, upto, req.FullState)
					return nil
				})
			}
			g.Go(func() error {
				var side errgroup.Group
				s.goSide(&side, ctx, req, roomID, since, ephemeral[roomID], newest, &a.side)
				a.sideErr = side.Wait()
				return nil
			})
			_ = g.Wait()
		})
	}
	for roomID := range from {
		add(roomID)
	}
	for roomID := range ephemeral {
		add(roomID)
	}
	return out
}

// incrementalRoom adds a room the news names (or, in a full_state sync,
// any room of the user's) to an incremental answer, with what was read of
// it ahead when that holds for the user's membership.
func (s *Service) incrementalRoom(ctx context.Context, req Request, resp *Response, next *position, m rooms.Membership, from map[string]int64, ephemeral map[string]bool, since time.Time, a *roomAhead) error {
	if a != nil {
		<-a.done
	}
	f, changed := from[m.RoomID]
	switch {
	// Read ahead as it would be now: the user is joined, and was when the
	// token was made (a join since shows the room whole).
	case changed && a != nil && a.timeline && m.Membership == "join" && (req.FullState || m.Seq <= f):
		if a.err != nil {
			return a.err
		}
		s.addJoined(req, resp, next, m, a.j, a.head, a.members, f)
	case changed && a != nil && a.page != nil && a.page.Start != "" && m.Membership == "join" && req.Filter.wants(m.RoomID):
		// Joined since the token: the room shows whole, its timeline
		// from the page read ahead.
		j, head, members, err := s.joinedPage(ctx, req, m.RoomID, f, next.Sent[m.RoomID][0], true, *a.page, nil)
		if err != nil {
			return err
		}
		s.addJoined(req, resp, next, m, j, head, members, f)
	case changed || (req.FullState && (m.Membership == "join" || req.Filter.IncludeLeave)):
		upto := int64(-1)
		if changed {
			upto = next.Sent[m.RoomID][0]
		} else {
			f = -1
		}
		if err := s.room(ctx, req, resp, next, m, f, upto, req.FullState); err != nil {
			return err
		}
	case ephemeral[m.RoomID] && m.Membership == "join":
		j := emptyJoined()
		req.moveStateAfter(j)
		resp.Rooms.Join[m.RoomID] = j
	}
	j, joined := resp.Rooms.Join[m.RoomID]
	if !joined {
		return nil
	}
	// Timeline news alone brings no ephemeral data: that has entries of
	// its own.
	if a != nil {
		if a.sideErr != nil {
			return a.sideErr
		}
		a.side.extras.apply(m.RoomID, j, next)
		a.side.counts.apply(j)
		return nil
	}
	if ephemeral[m.RoomID] {
		if err := s.extras(ctx, req.UserID, m.RoomID, since, j, next); err != nil {
			return err
		}
	}
	return s.counts(ctx, req, m.RoomID, j)
}

// unreadCounts is a room's unread counts read beside its timeline.
type unreadCounts struct {
	main      *Unread
	perThread map[string]Unread
}

func (c unreadCounts) apply(j *JoinedRoom) {
	if c.main != nil {
		j.Unread = c.main
	}
	if c.perThread != nil {
		j.UnreadThreads = c.perThread
	}
}

// presenceOf adds to an incremental response the presence of the users
// whose presence changed, and of those who joined a room with the user
// since (or were in a room the user joined): a client shows them without
// waiting for their next change.
func (s *Service) presenceOf(ctx context.Context, resp *Response, present []string) error {
	if s.Presence == nil {
		return nil
	}
	for u := range resp.devices.joined {
		present = append(present, u)
	}
	if len(present) == 0 {
		return nil
	}
	evs, err := s.Presence(ctx, uniq(present))
	if err != nil || len(evs) == 0 {
		return err
	}
	resp.Presence = &EventList{Events: evs}
	return nil
}

// counts adds a joined room's unread counts, after its news: a new event
// or a receipt changes them.
func (s *Service) counts(ctx context.Context, req Request, roomID string, j *JoinedRoom) error {
	if s.Unread == nil {
		return nil
	}
	threads := req.Filter.Timeline != nil && req.Filter.Timeline.UnreadThreadNotifications
	main, perThread, err := s.Unread(ctx, req.UserID, roomID, threads)
	if err != nil {
		return err
	}
	j.Unread = &main
	if threads {
		j.UnreadThreads = perThread
	}
	return nil
}

// extras adds a joined room's ephemeral events and account data written
// since the time given, and records in next when its typing times out.
func (s *Service) extras(ctx context.Context, userID, roomID string, since time.Time, j *JoinedRoom, next *position) error {
	if s.Ephemeral != nil {
		evs, stops, err := s.Ephemeral(ctx, userID, roomID, since)
		if err != nil {
			return err
		}
		j.Ephemeral.Events = append(j.Ephemeral.Events, evs...)
		next.typingStops(roomID, stops)
	}
	if s.AccountData != nil {
		evs, err := s.AccountData(ctx, userID, roomID, since)
		if err != nil {
			return err
		}
		j.AccountData.Events = append(j.AccountData.Events, evs...)
	}
	return nil
}

// globalData adds the user's global account data written since the time
// given.
func (s *Service) globalData(ctx context.Context, userID string, since time.Time, resp *Response) error {
	if s.AccountData == nil {
		return nil
	}
	evs, err := s.AccountData(ctx, userID, "", since)
	if err != nil {
		return err
	}
	if len(evs) > 0 {
		resp.AccountData = &EventList{Events: evs}
	}
	return nil
}

func emptyJoined() *JoinedRoom {
	none := func() EventList { return EventList{Events: []json.RawMessage{}} }
	return &JoinedRoom{Timeline: Timeline{Events: []json.RawMessage{}}, State: none(), AccountData: none(), Ephemeral: none()}
}

// room adds one room to resp as the user's membership puts it, with its
// events after position from (-1: from its start, for an initial sync).
// upto, when not -1, is the newest position the stream named: the timeline
// is read back from there, so only the new events' slots are read.
func (s *Service) room(ctx context.Context, req Request, resp *Response, next *position, m rooms.Membership, from, upto int64, full bool) error {
	if !req.Filter.wants(m.RoomID) {
		return nil
	}
	switch m.Membership {
	case "join":
		// A join since the token shows the room whole, as to a new member.
		full = full || from < 0 || m.Seq > from
		j, head, members, err := s.joined(ctx, req, m.RoomID, from, upto, full)
		if err != nil {
			return err
		}
		s.addJoined(req, resp, next, m, j, head, members, from)
	case "invite":
		st, err := s.stripped(ctx, m.RoomID, req.UserID)
		if err != nil {
			return err
		}
		resp.Rooms.Invite[m.RoomID] = &InvitedRoom{InviteState: st}
	case "knock":
		st, err := s.stripped(ctx, m.RoomID, req.UserID)
		if err != nil {
			return err
		}
		resp.Rooms.Knock[m.RoomID] = &KnockedRoom{KnockState: st}
	case "leave", "ban":
		// Bans come without include_leave, as Synapse sends them: the
		// user did not choose to go.
		if m.Forgotten || (from < 0 && !req.Filter.IncludeLeave && m.Membership != "ban") {
			return nil
		}
		// The room as it was when the user left, as Synapse shows it:
		// the timeline ends with the leave, and the state is read there,
		// not at the room's live end, which holds what came after.
		if upto < 0 || upto > m.Seq {
			upto = m.Seq
		}
		if done, err := s.outsideLeave(ctx, req.UserID, m.RoomID, resp); done || err != nil {
			return err
		}
		j, _, members, err := s.joined(ctx, req, m.RoomID, from, upto, full)
		if err != nil {
			return err
		}
		if resp.devices != nil {
			resp.devices.members(req.UserID, members)
			if err := s.leftRoom(ctx, m.RoomID, resp.devices); err != nil {
				return err
			}
		}
		resp.Rooms.Leave[m.RoomID] = &LeftRoom{Timeline: j.Timeline, State: j.State, AccountData: j.AccountData, stateAfter: j.stateAfter}
	}
	return nil
}

// addJoined adds a joined room to resp, its timeline read after position
// from and up to head.
func (s *Service) addJoined(req Request, resp *Response, next *position, m rooms.Membership, j *JoinedRoom, head int64, members []memberEvent, from int64) {
	if resp.devices != nil {
		resp.devices.members(req.UserID, members)
	}
	resp.Rooms.Join[m.RoomID] = j
	if named := next.Sent[m.RoomID][0]; from >= 0 && head < named {
		// The news named a message whose slot was not there yet
		// (rooms.Page.Newest): delivered up to the event before it, the
		// entry is news again.
		next.Sent[m.RoomID] = [2]int64{head, next.Sent[m.RoomID][1]}
		if next.Pending == nil {
			next.Pending = map[string]int64{}
		}
		next.Pending[m.RoomID] = named
		next.shownPending = next.shownPending || head > from
		return
	}
	// Rooms quiet for longer than the window have no entries the next
	// sync could read again: the token need not name them.
	if from >= 0 || newestTS(j.Timeline.Events) >= next.Time-window.Milliseconds() {
		next.sent(m.RoomID, head)
	}
}

// sent records that the room was delivered up to head.
func (p *position) sent(roomID string, head int64) {
	old := p.Sent[roomID]
	p.Sent[roomID] = [2]int64{max(old[0], head), max(old[1], p.Time)}
}

// joined reads a room's timeline after from and the state that goes with
// it: all of it up to the timeline's start when full, else the state that
// changed in a gap the limited timeline skipped. It also returns the member
// events behind it, for device_lists (roomMembers).
func (s *Service) joined(ctx context.Context, req Request, roomID string, from, upto int64, full bool) (*JoinedRoom, int64, []memberEvent, error) {
	q := rooms.MessagesQuery{Backward: true, Limit: req.Filter.TimelineLimit, Filter: req.Filter.Timeline, News: true}
	if upto >= 0 {
		q.From = rooms.Token(upto)
	}
	if from >= 0 {
		q.To = rooms.Token(from)
	}
	// At the live end the state after the head is the current state, one
	// Query that needs nothing of the timeline: it is read beside it. An
	// event landing meanwhile is in it a sync early, harmlessly.
	var current func() ([]events.PDU, error)
	if upto < 0 {
		ahead := s.currentAhead(ctx, roomID)
		current = ahead
		// Waited for even when unused, so that its read is over (and
		// metered) before the answer goes.
		defer func() { _, _ = ahead() }()
	}
	page, err := s.Rooms.Messages(ctx, req.UserID, roomID, q)
	if err != nil {
		return nil, 0, nil, err
	}
	if keep, ok := ctx.Value(pageKey{}).(*rooms.Page); ok {
		*keep = page
	}
	return s.joinedPage(ctx, req, roomID, from, upto, full, page, current)
}

type pageKey struct{}

// joinedPage is joined with the timeline's page read: the page a room was
// read ahead with serves again when the room shows whole after all.
func (s *Service) joinedPage(ctx context.Context, req Request, roomID string, from, upto int64, full bool, page rooms.Page, current func() ([]events.PDU, error)) (*JoinedRoom, int64, []memberEvent, error) {
	head, err := rooms.ParseToken(page.Start)
	if err != nil {
		return nil, 0, nil, err
	}
	head = min(head, page.Newest)
	reportHead(ctx, head)
	chunk := slices.Clone(page.Chunk)
	slices.Reverse(chunk)
	j := emptyJoined()
	if chunk != nil {
		j.Timeline.Events = chunk
	}
	begin := head
	if page.Oldest > 0 {
		begin = page.Oldest - 1
	}
	begin = max(begin, from)
	if page.End != "" {
		end, err := rooms.ParseToken(page.End)
		j.Timeline.Limited = err == nil && end > max(from, 0)
	}
	// Events the room took in a gap after from are missing from it.
	j.Timeline.Limited = j.Timeline.Limited || page.Gap
	j.Timeline.PrevBatch = rooms.Token(begin)
	// The timeline holds every event after from: the state is known,
	// unless resolving forks changed it at one of them other than by the
	// timeline's own state events (the spec's state "not in the timeline").
	whole := !j.Timeline.Limited && int64(len(chunk)) == head-max(from, 0) && !page.Resolved
	var state, all []events.PDU
	if req.useStateAfter() {
		// The state at the end of the timeline: the timeline's own state
		// events are in it, since the client takes no state from the
		// timeline then. The current state read ahead may be from just
		// before the newest of them landed: then it is read again.
		if current != nil && changesState(chunk) {
			if ahead, err := current(); err == nil && !holdsState(ahead, chunk) {
				current = func() ([]events.PDU, error) { return s.Rooms.CurrentState(rooms.Fresh(ctx), roomID) }
			}
		}
		if full || !whole || changesState(chunk) {
			if state, all, err = s.stateAround(ctx, roomID, from, head, current, full, nil); err != nil {
				return nil, 0, nil, err
			}
		}
	} else if full || !whole {
		if state, all, err = s.stateAround(ctx, roomID, from, head, current, full, chunk); err != nil {
			return nil, 0, nil, err
		}
	}
	// Before the filters, which may drop member events or their fields.
	members := roomMembers(full, all, state, chunk)
	state = req.Filter.stateOf(state, req.UserID, j.Timeline.Events)
	rendered, err := s.Rooms.Render(ctx, state)
	if err != nil {
		return nil, 0, nil, err
	}
	j.State.Events = append(j.State.Events, rendered...)
	if err := req.Filter.fields(j); err != nil {
		return nil, 0, nil, err
	}
	req.moveStateAfter(j)
	if full || changesMembers(chunk) {
		if all == nil {
			if all, err = s.Rooms.Members(ctx, roomID); err != nil {
				return nil, 0, nil, err
			}
		}
		j.Summary = summarize(all, req.UserID)
	}
	return j, head, members, nil
}

func (r Request) useStateAfter() bool { return r.StateAfter || r.UnstableStateAfter }

// moveStateAfter moves the room's state to state_after when the request
// asked for it, leaving state out.
func (r Request) moveStateAfter(j *JoinedRoom) {
	if !r.useStateAfter() {
		return
	}
	after := &EventList{Events: j.State.Events}
	j.State = EventList{}
	if r.StateAfter {
		j.StateAfter = after
	} else {
		j.UnstableStateAfter = after
	}
}

// changesState reports whether a timeline holds a state event.
func changesState(timeline []json.RawMessage) bool {
	for _, raw := range timeline {
		var ev struct {
			StateKey *string `json:"state_key"`
		}
		_ = json.Unmarshal(raw, &ev)
		if ev.StateKey != nil {
			return true
		}
	}
	return false
}

// holdsState reports whether state holds every state event of a timeline.
// One that it lacks was replaced since, or is newer than the state.
func holdsState(state []events.PDU, timeline []json.RawMessage) bool {
	ids := make(map[string]bool, len(state))
	for _, ev := range state {
		ids[ev.EventID()] = true
	}
	for _, raw := range timeline {
		var ev struct {
			ID       string  `json:"event_id"`
			StateKey *string `json:"state_key"`
		}
		_ = json.Unmarshal(raw, &ev)
		if ev.StateKey != nil && !ids[ev.ID] {
			return false
		}
	}
	return true
}

// stateOf keeps the state the filter asks for; lazy-loading clients get the
// member events of the timeline's senders and their own, not every member.
func (f Filter) stateOf(state []events.PDU, userID string, timeline []json.RawMessage) []events.PDU {
	senders := map[string]bool{userID: true}
	for _, raw := range timeline {
		var ev struct {
			Sender string `json:"sender"`
		}
		_ = json.Unmarshal(raw, &ev)
		senders[ev.Sender] = true
	}
	var out []events.PDU
	for _, ev := range state {
		if f.State != nil && !f.State.Match(ev) {
			continue
		}
		if f.lazy() && ev.Type() == events.Member && !senders[*ev.StateKey()] {
			continue
		}
		out = append(out, ev)
	}
	return out
}

// fields applies event_fields to the room's events.
func (f Filter) fields(j *JoinedRoom) error {
	if len(f.EventFields) == 0 {
		return nil
	}
	for _, list := range [][]json.RawMessage{j.Timeline.Events, j.State.Events} {
		for i, raw := range list {
			kept, err := events.FilterFields(raw, f.EventFields)
			if err != nil {
				return err
			}
			list[i] = kept
		}
	}
	return nil
}

// stateAround is the state a client needs with a timeline that ends at
// position head: all of it when full, else what changed after from; less the
// state events the timeline carries itself. Taking it from the end rather
// than the timeline's start covers state events that history visibility
// hid from the timeline, and those in a gap a limited timeline skipped.
// current, when not nil, gives the room's current state: the timeline is
// at the live end.
func (s *Service) stateAround(ctx context.Context, roomID string, from, head int64, current func() ([]events.PDU, error), full bool, timeline []json.RawMessage) (changed, after []events.PDU, err error) {
	if head <= 0 {
		return nil, nil, nil
	}
	if current != nil {
		after, err = current()
	} else {
		after, err = s.Rooms.StateAfter(ctx, roomID, head)
	}
	if err != nil {
		return nil, nil, err
	}
	skip := map[string]bool{}
	for _, raw := range timeline {
		var ev struct {
			ID string `json:"event_id"`
		}
		_ = json.Unmarshal(raw, &ev)
		skip[ev.ID] = true
	}
	if !full && from > 0 {
		before, err := s.Rooms.StateAfter(ctx, roomID, from)
		if err != nil {
			return nil, nil, err
		}
		for _, ev := range before {
			skip[ev.EventID()] = true
		}
	}
	for _, ev := range after {
		if !skip[ev.EventID()] {
			changed = append(changed, ev)
		}
	}
	return changed, after, nil
}

// strippedType reports whether state of type t is shown to an invitee or
// knocker.
func strippedType(t string) bool {
	switch t {
	case events.Create, events.JoinRules, events.Name, events.Avatar, events.CanonicalAlias, events.Encryption, events.Topic:
		return true
	}
	return false
}

// stripped is the room's stripped state for an invite or knock, with the
// user's own member event.
func (s *Service) stripped(ctx context.Context, roomID, userID string) (strippedList, error) {
	out := strippedList{Events: []events.StrippedStateEvent{}}
	// A room this server is not in, or left: the state the inviting
	// server sent with the invite, or the knocked-on server answered.
	kept, err := s.Rooms.InviteState(ctx, roomID, userID)
	if err != nil || kept != nil {
		out.Events = append(out.Events, kept...)
		return out, err
	}
	state, err := s.Rooms.CurrentState(ctx, roomID)
	if err != nil {
		return out, err
	}
	for _, ev := range state {
		key := *ev.StateKey()
		if (key == "" && strippedType(ev.Type())) || (ev.Type() == events.Member && key == userID) {
			st, err := events.StrippedState(ev)
			if err != nil {
				return out, err
			}
			out.Events = append(out.Events, st)
		}
	}
	return out, nil
}

// newestTS is the origin_server_ts of the last event of a timeline.
func newestTS(evs []json.RawMessage) int64 {
	if len(evs) == 0 {
		return 0
	}
	var ev struct {
		TS int64 `json:"origin_server_ts"`
	}
	_ = json.Unmarshal(evs[len(evs)-1], &ev)
	return ev.TS
}

func uniq(list []string) []string {
	slices.Sort(list)
	return slices.Compact(list)
}

// changesMembers reports whether a timeline changes who is in the room, and
// with it the summary.
func changesMembers(timeline []json.RawMessage) bool {
	for _, raw := range timeline {
		var ev struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(raw, &ev)
		if ev.Type == events.Member {
			return true
		}
	}
	return false
}

// initialPresence gives an initial sync the presence of the users, local
// and of other servers, who share a joined room with the user. Their members come from the rooms' current state, which
// the sync reads whole for each joined room and shares
// (rooms.WithReadsShared): no read of their own, where reading the rooms'
// local and remote member lists cost two calls a room.
func (s *Service) initialPresence(ctx context.Context, userID string, joined []string, resp *Response) error {
	if s.Presence == nil {
		return nil
	}
	states := make([][]events.PDU, len(joined))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(initialParallelism)
	for i, roomID := range joined {
		g.Go(func() (err error) {
			states[i], err = s.Rooms.CurrentState(gctx, roomID)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	users := s.joinedUsers(states, userID)
	if len(users) == 0 {
		return nil
	}
	evs, err := s.Presence(ctx, users)
	if err != nil || len(evs) == 0 {
		return err
	}
	resp.Presence = &EventList{Events: evs}
	return nil
}

// joinedUsers lists the users joined in the rooms' states, each once,
// except userID: the local ones, then those of other servers, each in the
// rooms' order.
func (s *Service) joinedUsers(states [][]events.PDU, userID string) []string {
	seen := map[string]bool{userID: true}
	var local, remote []string
	for _, state := range states {
		for _, ev := range state {
			if ev.Type() != events.Member {
				continue
			}
			u := *ev.StateKey()
			if m, _ := ev.Membership(); m != "join" || seen[u] {
				continue
			}
			seen[u] = true
			if s.isLocal(u) {
				local = append(local, u)
			} else {
				remote = append(remote, u)
			}
		}
	}
	return append(local, remote...)
}

// initialParallelism is how many rooms a sync reads at once: all of a
// user's rooms, mostly, for each costs a few round trips that are better
// in flight together.
const initialParallelism = 64

// mergeInto adds the rooms of r to into.
func (r *Response) mergeInto(into *Response) {
	maps.Copy(into.Rooms.Join, r.Rooms.Join)
	maps.Copy(into.Rooms.Invite, r.Rooms.Invite)
	maps.Copy(into.Rooms.Leave, r.Rooms.Leave)
	maps.Copy(into.Rooms.Knock, r.Rooms.Knock)
}

// memberships reads the user's memberships of the rooms with news; a
// full_state sync needs every room.
func (s *Service) memberships(ctx context.Context, req Request, from map[string]int64, ephemeral map[string]bool) ([]rooms.Membership, error) {
	if req.FullState {
		return s.Rooms.Memberships(ctx, req.UserID)
	}
	var ids []string
	for r := range from {
		ids = append(ids, r)
	}
	for r := range ephemeral {
		if _, ok := from[r]; !ok && strings.HasPrefix(r, "!") {
			ids = append(ids, r)
		}
	}
	return s.Rooms.MembershipsIn(ctx, req.UserID, ids)
}
