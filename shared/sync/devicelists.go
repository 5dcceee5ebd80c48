package sync

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	gosync "sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
)

// Stream entries of end-to-end encryption. Their room field names what
// changed: "+<user ID>" the device list or cross-signing keys of that user,
// "^<device ID>" the one-time or fallback keys of one of the stream owner's
// devices (uploaded by it, or claimed by another user), so that the device's
// next sync reads its counts again.
const (
	deviceListPrefix = "+"
	keyCountPrefix   = "^"
)

// DeviceLists is the spec's device_lists of a sync: users whose devices or
// cross-signing keys the client must fetch again, and users it no longer
// shares a room with.
type DeviceLists struct {
	Changed []string `json:"changed"`
	Left    []string `json:"left"`
}

// deviceNews gathers what an incremental sync learns for device_lists.
type deviceNews struct {
	changed map[string]bool
	// maybeLeft are users seen leaving a room, or in a room the user left:
	// left once they share no room with the user any more.
	maybeLeft map[string]bool
	// counts says that this device's one-time or fallback keys changed.
	counts bool
	// joined are users seen joining a room, or in a room the user joined:
	// the sync brings their presence too, as an initial sync would.
	joined map[string]bool
}

func newDeviceNews() *deviceNews {
	return &deviceNews{changed: map[string]bool{}, maybeLeft: map[string]bool{}, joined: map[string]bool{}}
}

// entry notes a stream entry of end-to-end encryption for deviceID's sync,
// and reports whether it was one.
func (d *deviceNews) entry(n news, deviceID string) bool {
	switch {
	case strings.HasPrefix(n.RoomID, deviceListPrefix):
		d.changed[n.RoomID[len(deviceListPrefix):]] = true
	case strings.HasPrefix(n.RoomID, keyCountPrefix):
		d.counts = d.counts || n.RoomID[len(keyCountPrefix):] == deviceID
	default:
		return false
	}
	return true
}

// members notes the member events a room's news holds: whoever joined has
// devices to fetch, whoever left may be gone from the user's view.
func (d *deviceNews) members(userID string, evs []memberEvent) {
	for _, ev := range evs {
		if ev.user == userID {
			continue
		}
		switch ev.membership {
		case "join":
			d.changed[ev.user] = true
			d.joined[ev.user] = true
		case "leave", "ban":
			d.maybeLeft[ev.user] = true
		}
	}
}

// memberEvent is who a member event is about and their membership.
type memberEvent struct{ user, membership string }

func memberEventsOf(state []events.PDU) []memberEvent {
	var out []memberEvent
	for _, ev := range state {
		if ev.Type() != events.Member || ev.StateKey() == nil {
			continue
		}
		m, _ := ev.Membership()
		out = append(out, memberEvent{*ev.StateKey(), m})
	}
	return out
}

func memberEventsIn(timeline []json.RawMessage) []memberEvent {
	var out []memberEvent
	for _, raw := range timeline {
		var ev struct {
			Type     string  `json:"type"`
			StateKey *string `json:"state_key"`
			Content  struct {
				Membership string `json:"membership"`
			} `json:"content"`
		}
		if json.Unmarshal(raw, &ev) == nil && ev.Type == events.Member && ev.StateKey != nil {
			out = append(out, memberEvent{*ev.StateKey, ev.Content.Membership})
		}
	}
	return out
}

// deviceLists settles the news into the response's device_lists: a user
// who left a room but still shares another with the user is not left.
// Cost: nothing without leaves; else one Query of the user's rooms and one
// BatchGetItem per user who may have left.
func (s *Service) deviceLists(ctx context.Context, userID string, d *deviceNews) (*DeviceLists, error) {
	out := &DeviceLists{Changed: []string{}, Left: []string{}}
	if len(d.maybeLeft) > 0 {
		joined, err := s.Rooms.JoinedRooms(ctx, userID)
		if err != nil {
			return nil, err
		}
		for u := range d.maybeLeft {
			shared, err := s.sharesRoom(ctx, u, joined)
			if err != nil {
				return nil, err
			}
			if !shared {
				out.Left = append(out.Left, u)
				delete(d.changed, u)
			}
		}
	}
	for u := range d.changed {
		out.Changed = append(out.Changed, u)
	}
	if len(out.Changed) == 0 && len(out.Left) == 0 {
		return nil, nil
	}
	slices.Sort(out.Changed)
	slices.Sort(out.Left)
	return out, nil
}

// sharesRoom reports whether user is joined to any of rooms. Users of
// other servers have no membership items here: their rooms come from
// RemoteRooms.
func (s *Service) sharesRoom(ctx context.Context, user string, rooms []string) (bool, error) {
	if len(rooms) == 0 {
		return false, nil
	}
	if !s.isLocal(user) {
		theirs, err := s.roomsOf(ctx, user)
		if err != nil {
			return false, err
		}
		return slices.ContainsFunc(theirs, func(r string) bool { return slices.Contains(rooms, r) }), nil
	}
	ms, err := s.Rooms.MembershipsIn(ctx, user, rooms)
	if err != nil {
		return false, err
	}
	for _, m := range ms {
		if m.Membership == "join" {
			return true, nil
		}
	}
	return false, nil
}

// DeviceListChanged tells the local users who share a room with userID,
// and userID's own devices, that its devices or cross-signing keys
// changed: their syncs wake and list userID in device_lists.changed. It is
// the e2ekeys service's Changed hook, and its RemoteChanged hook for users
// of other servers (whose rooms come from RemoteRooms).
//
// Cost: one Query of the user's rooms, one GetItem of each joined room's
// local members, and one stream entry per user told (BatchWriteItem).
func (s *Service) DeviceListChanged(ctx context.Context, userID string) error {
	joined, err := s.roomsOf(ctx, userID)
	if err != nil {
		return fmt.Errorf("device list of %s: %w", userID, err)
	}
	return s.deviceListChangedIn(ctx, userID, joined)
}

// RemoteDeviceListChanged is DeviceListChanged for a user of another
// server whose rooms here the caller read already (the e2ekeys service's
// RemoteChanged hook, after an inbound device list update).
func (s *Service) RemoteDeviceListChanged(ctx context.Context, userID string, rooms []string) error {
	return s.deviceListChangedIn(ctx, userID, rooms)
}

func (s *Service) deviceListChangedIn(ctx context.Context, userID string, joined []string) error {
	others, err := s.Rooms.LocalJoinedIn(ctx, joined, userID)
	if err != nil {
		return fmt.Errorf("device list of %s: %w", userID, err)
	}
	told := others
	if s.isLocal(userID) {
		told = append(told, userID)
	}
	now := s.now()
	var items []any
	var keys []string
	for _, u := range told {
		items = append(items, s.entry(now, u, deviceListPrefix+userID, 0))
		keys = append(keys, u)
	}
	return s.write(ctx, items, keys)
}

// roomsOf lists the rooms a user is joined to: a local user's from their
// memberships, another server's user's from RemoteRooms.
func (s *Service) roomsOf(ctx context.Context, userID string) ([]string, error) {
	if s.isLocal(userID) {
		return s.Rooms.JoinedRooms(ctx, userID)
	}
	if s.RemoteRooms == nil {
		return nil, nil
	}
	return s.RemoteRooms(ctx, userID)
}

func (s *Service) isLocal(userID string) bool {
	_, server, _ := strings.Cut(userID, ":")
	return server == s.Rooms.Signer.ServerName
}

// KeyCountsChanged tells devices (by user) that their one-time or fallback
// keys changed, uploaded by the device or claimed by another, so that their
// next syncs read the counts again: one stream entry each, in one write. It
// is the e2ekeys service's CountsChanged hook.
func (s *Service) KeyCountsChanged(ctx context.Context, devices map[string][]string) error {
	now := s.now()
	var items []any
	var keys []string
	for u, ids := range devices {
		for _, d := range ids {
			items = append(items, s.entry(now, u, keyCountPrefix+d, 0))
			keys = append(keys, deviceKey(u, d))
		}
	}
	return s.write(ctx, items, keys)
}

// settleDevices completes an incremental response with device_lists.
func (s *Service) settleDevices(ctx context.Context, req Request, resp *Response) error {
	if resp.devices == nil {
		return nil
	}
	lists, err := s.deviceLists(ctx, req.UserID, resp.devices)
	if err != nil {
		return err
	}
	resp.DeviceLists = lists
	return nil
}

// Uploading notes that a device's upload of one-time or fallback keys
// began, and returns the function that notes its end: a sync of the device
// in this process does not read or repeat its counts meanwhile (keyCounts).
// It is the e2ekeys service's Uploading hook.
func (s *Service) Uploading(userID, deviceID string) (done func()) {
	return s.uploads.begin(deviceKey(userID, deviceID))
}

// uploads counts the key uploads under way in this process, by device.
// A sync answering while its device uploads would carry counts from before
// the upload, and reach the client after the upload's own answer: the
// client would take the older counts and upload again. Across instances the
// stream entry an upload writes, and the recheck of syncs with news,
// narrow that race; within one they close it.
type uploads struct {
	mu     gosync.Mutex
	active map[string]int
	ended  chan struct{} // closed and replaced whenever an upload ends
	// gens counts the uploads begun and ended, by device: a sync that
	// took its counts before a generation reads them again after it.
	gens map[string]uint64
}

func (u *uploads) begin(key string) func() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.active == nil {
		u.active, u.ended, u.gens = map[string]int{}, make(chan struct{}), map[string]uint64{}
	}
	u.active[key]++
	u.gens[key]++
	return func() {
		u.mu.Lock()
		defer u.mu.Unlock()
		if u.active[key]--; u.active[key] == 0 {
			delete(u.active, key)
		}
		u.gens[key]++
		close(u.ended)
		u.ended = make(chan struct{})
	}
}

// generation is how many uploads of key have begun or ended in this
// process: counts taken at one generation are stale at another.
func (u *uploads) generation(key string) uint64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.gens[key]
}

// wait returns once no upload of key is under way, and reports whether it
// waited for one; uploadWait bounds it.
func (u *uploads) wait(ctx context.Context, key string) bool {
	waited := false
	limit := time.After(uploadWait)
	for {
		u.mu.Lock()
		busy, ended := u.active[key] > 0, u.ended
		u.mu.Unlock()
		if !busy {
			return waited
		}
		waited = true
		select {
		case <-ended:
		case <-limit:
			return true
		case <-ctx.Done():
			return true
		}
	}
}

// uploadWait bounds how long a sync waits for its device's upload: an
// upload is a few writes.
const uploadWait = 5 * time.Second

// keyCounts are a device's one-time key counts by algorithm and its unused
// fallback key types, as a token carries them.
type keyCounts struct {
	// Device ties the counts to the device whose sync read them.
	Device   string         `json:"d"`
	OneTime  map[string]int `json:"o"`
	Fallback []string       `json:"f"`
}

// keyCounts adds the device's one-time key counts and unused fallback key
// types to resp, and carries them in next. Every response has them, yet
// they are read (one Query of the device's keys) only for an initial sync,
// a token without them, a stream entry that says they changed, or an
// upload in this process since base (uploads.generation, taken before the
// stream was read): else the token's counts are still true, and an idle
// poll reads nothing more.
func (s *Service) keyCounts(ctx context.Context, req Request, pos position, base uint64, resp *Response, next *position) error {
	c := pos.Keys
	key := deviceKey(req.UserID, req.DeviceID)
	changed := resp.devices != nil && resp.devices.counts
	changed = s.uploads.wait(ctx, key) || changed
	// An upload that began and ended since base, between the stream's
	// read and this, has answered (or is about to) with its new counts:
	// the token's would reach the client after them.
	changed = changed || s.uploads.generation(key) != base
	if s.KeyCounts != nil && (req.Since == "" || changed || c == nil || c.Device != deviceTag(req.DeviceID)) {
		otk, fallback, err := s.KeyCounts(ctx, req.UserID, req.DeviceID)
		if err != nil {
			return err
		}
		c = &keyCounts{Device: deviceTag(req.DeviceID), OneTime: otk, Fallback: fallback}
	}
	if c == nil {
		c = &keyCounts{Device: deviceTag(req.DeviceID)}
	}
	if c.OneTime == nil {
		c.OneTime = map[string]int{}
	}
	if c.Fallback == nil {
		c.Fallback = []string{}
	}
	resp.OneTimeKeysCount, resp.UnusedFallbackKeyTypes = c.OneTime, c.Fallback
	next.Keys = c
	return nil
}

// keysAhead is the device's key counts read beside the rooms of a sync
// that will need them (keyCounts): an initial sync, a token without them,
// news of them.
type keysAhead struct {
	resp *Response
	next position
	// uploads is the device's uploads.generation when the read began;
	// news says the stream's news named the counts.
	uploads uint64
	news    bool
}

// keysAhead starts reading the counts in g.
func (s *Service) keysAhead(g *errgroup.Group, ctx context.Context, req Request, pos position, news bool) *keysAhead {
	k := &keysAhead{resp: &Response{}, uploads: s.uploads.generation(deviceKey(req.UserID, req.DeviceID)), news: news}
	if news {
		k.resp.devices = &deviceNews{counts: true}
	}
	g.Go(func() error { return s.keyCounts(ctx, req, pos, k.uploads, k.resp, &k.next) })
	return k
}

// finish gives resp and next the counts read ahead (none: keyCounts, with
// the request's uploadsBase).
// They are read again if an upload of the device began or ended in this
// process meanwhile (keyCounts waits for it), or the recheck found news of
// them: a client uploads its keys as it syncs, and would take older counts
// arriving after the upload's answer for the truth, and upload again.
func (k *keysAhead) finish(ctx context.Context, s *Service, req Request, pos position, resp *Response, next *position) error {
	rechecked := resp.devices != nil && resp.devices.counts
	if k == nil {
		return s.keyCounts(ctx, req, pos, req.uploadsBase, resp, next)
	}
	if s.uploads.generation(deviceKey(req.UserID, req.DeviceID)) != k.uploads || (rechecked && !k.news) {
		return s.keyCounts(ctx, req, pos, k.uploads, resp, next)
	}
	resp.OneTimeKeysCount, resp.UnusedFallbackKeyTypes, next.Keys = k.resp.OneTimeKeysCount, k.resp.UnusedFallbackKeyTypes, k.next.Keys
	return nil
}

// recheck makes a response read the device's key counts again when they
// changed while it was built: a sync with news takes a while, and a client
// that meanwhile uploaded keys, and heard the new counts from the upload,
// would take the older counts that the response carries last, and upload
// again. An upload writes its entry after its keys, and answers after
// that: one strongly consistent read of the stream since the last read
// sees it. It is made beside the rooms' reads, not after them: a round
// trip less. An upload to another instance that lands during the rooms'
// reads is seen by the next sync only; one to this instance has the counts
// read again (keyCounts' base). Cost: that Query, about 1 RCU, for syncs
// with news only; a long-poll that times out answers right after its last
// read.
type recheck struct {
	once    gosync.Once
	done    chan struct{}
	changed bool
	err     error
}

// begin starts the read, once, when the sync has news other than of the
// device's key counts (news of them has them read anyway).
func (r *recheck) begin(ctx context.Context, s *Service, req Request, pos position, readAt time.Time, fresh []news) {
	r.once.Do(func() {
		if s.KeyCounts == nil || len(fresh) == 0 || slices.ContainsFunc(fresh, func(n news) bool { return n.RoomID == keyCountPrefix+req.DeviceID }) {
			return
		}
		r.done = make(chan struct{})
		go func() {
			defer close(r.done)
			since := readAt.Add(-deviceSkew).UnixMilli()
			all, err := s.readStream(ctx, req.UserID, since, true)
			if err != nil {
				r.err = err
				return
			}
			r.changed = slices.ContainsFunc(all, func(n news) bool { return n.RoomID == keyCountPrefix+req.DeviceID && pos.fresh(n) })
		}()
	})
}

// wait waits for the read begun, and marks resp's counts as changed when
// it says so.
func (r *recheck) wait(resp *Response) error {
	if r.done == nil {
		return nil
	}
	<-r.done
	if r.err == nil && r.changed && resp != nil && resp.devices != nil {
		resp.devices.counts = true
	}
	return r.err
}

// KeyChanges answers GET /keys/changes: the users whose device lists
// changed between two sync tokens, and those the user stopped sharing a
// room with, worked out as an incremental sync from from to to would.
func (s *Service) KeyChanges(ctx context.Context, userID, deviceID, from, to string) (*DeviceLists, error) {
	start, err := parsePosition(from, userID)
	if err != nil {
		return nil, err
	}
	end, err := parsePosition(to, userID)
	if err != nil {
		return nil, err
	}
	all, err := s.readStream(ctx, userID, start.Time-window.Milliseconds(), true)
	if err != nil {
		return nil, err
	}
	var fresh []news
	for _, n := range freshOnly(start, all, deviceID) {
		if n.TS <= end.Time {
			fresh = append(fresh, n)
		}
	}
	// A timeline of one event makes the room's state delta carry every
	// membership change since from.
	req := Request{UserID: userID, DeviceID: deviceID, Filter: Filter{TimelineLimit: 1}}
	resp, _, err := s.incremental(ctx, req, start, fresh, time.UnixMilli(end.Time))
	if err == nil {
		err = s.settleDevices(ctx, req, resp)
	}
	if err != nil {
		return nil, err
	}
	if resp.DeviceLists == nil {
		return &DeviceLists{Changed: []string{}, Left: []string{}}, nil
	}
	return resp.DeviceLists, nil
}

// keyChanges serves GET /keys/changes.
func (s *Service) keyChanges(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	from, to := q.Get("from"), q.Get("to")
	if from == "" || to == "" {
		httpapi.WriteError(w, r, httpapi.Errorf(http.StatusBadRequest, "M_MISSING_PARAM", "from and to are required: two next_batch tokens of /sync"))
		return
	}
	me := accounts.Caller(r.Context())
	lists, err := s.KeyChanges(r.Context(), me.UserID, me.DeviceID, from, to)
	if err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, lists)
}

// roomMembers are the member events behind a room of the response, for
// device_lists: all joined members when the user newly joined, else the
// membership changes its news holds.
func roomMembers(full bool, all []events.PDU, changed []events.PDU, timeline []json.RawMessage) []memberEvent {
	if full {
		var joined []memberEvent
		for _, m := range memberEventsOf(all) {
			if m.membership == "join" {
				joined = append(joined, m)
			}
		}
		return joined
	}
	return append(memberEventsOf(changed), memberEventsIn(timeline)...)
}

// leftRoom notes the members of a room the user left: they may be gone
// from the user's view. Cost: one Query of the room's member events.
func (s *Service) leftRoom(ctx context.Context, roomID string, d *deviceNews) error {
	members, err := s.Rooms.Members(ctx, roomID)
	if err != nil {
		return err
	}
	for _, m := range memberEventsOf(members) {
		if m.membership == "join" {
			d.maybeLeft[m.user] = true
		}
	}
	return nil
}
