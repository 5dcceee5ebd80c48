package sync

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	gosync "sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Simplified sliding sync (MSC4186) is built on /sync's machinery: the pos
// token carries a /sync position (so the stream, the waiters, the to-device
// inbox and the key counts work as for /sync, on any instance), and the
// connection's room list lives in one item per connection.
//
// The connection item holds, for every room of the user's list, its bump
// stamp (the time of its newest event), the user's membership, and whether
// the client holds the room as it is now. A first request builds it from
// the user's memberships and stream (buildConn); later requests
// update only the rooms the user's stream names, so an incremental request
// reads the rooms with news, not every room.

// connTTL is how long an unused connection is kept: as long as the stream
// entries its position reads.
const connTTL = streamTTL

// errUnknownPos is the MSC's answer to a pos the server no longer knows:
// the client starts the connection over.
func errUnknownPos(why string) error {
	return httpapi.Errorf(http.StatusBadRequest, "M_UNKNOWN_POS", "unknown pos: %s", why)
}

// connRoom is one room of a connection's list.
type connRoom struct {
	// Bump is the bump stamp: Unix ms of the room's newest event as the
	// stream saw it.
	Bump int64 `json:"b"`
	// M is the user's membership.
	M string `json:"m"`
	// Sent: the client holds the room as of the connection's position.
	Sent bool `json:"s,omitempty"`
	// L is the largest timeline_limit the room was sent whole with: a
	// larger one sends its timeline again (expanded_timeline).
	L int `json:"l,omitempty"`
	// Enc: 0 not read, 1 not encrypted, 2 encrypted. Type: room type, read
	// with TypeRead. Both are read only when a filter needs them.
	Enc      int8   `json:"e,omitempty"`
	Type     string `json:"t,omitempty"`
	TypeRead bool   `json:"tr,omitempty"`
	// Tags are the room's m.tag tags, read with TagsRead when a tags
	// filter needs them, and read again after the room's account data
	// (or other ephemeral news of it) changed.
	Tags     []string `json:"g,omitempty"`
	TagsRead bool     `json:"gr,omitempty"`
}

// connItem is a connection's state: pk slide|<user>, sk <device>|<conn_id>.
type connItem struct {
	PK    string `dynamodbav:"pk"`
	SK    string `dynamodbav:"sk"`
	Ver   int64  `dynamodbav:"ver"`
	Rooms []byte `dynamodbav:"rooms"` // gzip of the JSON of map[room ID]connRoom
	DMs   string `dynamodbav:"dms"`   // JSON of the m.direct room IDs
	// Fresh lists the rooms the last answer sent whole for the first time:
	// a retry of the pos before it (the answer was lost) sends them again.
	Fresh   string `dynamodbav:"fresh,omitempty"`
	Expires int64  `dynamodbav:"expires_at"`
}

type conn struct {
	ver   int64
	rooms map[string]*connRoom
	dms   map[string]bool
	dirty bool
	// fresh are the rooms this answer sends whole for the first time, and
	// last those of the answer before.
	fresh, last []string
	// expanded are the rooms this answer sends again for a larger
	// timeline_limit.
	expanded map[string]bool
	// kids are the children of the spaces the lists filter by, read once
	// per request.
	kids map[string]map[string]bool
	// news holds the rooms with new events since the position.
	news map[string]bool
}

func connKey(userID, deviceID, connID string) store.Key {
	return store.Key{PK: "slide|" + userID, SK: deviceID + "|" + connID}
}

// slidingPos is what a pos token holds.
type slidingPos struct {
	P position `json:"p"`
	V int64    `json:"v"`
}

func (p slidingPos) encode() string {
	doc, _ := json.Marshal(p) // strings and numbers always encode
	return "ss" + base64.RawURLEncoding.EncodeToString(doc)
}

func decodeSlidingPos(token, userID string) (slidingPos, error) {
	doc, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(token, "ss"))
	var p slidingPos
	if err != nil || !strings.HasPrefix(token, "ss") || json.Unmarshal(doc, &p) != nil || !p.P.valid() {
		return p, errUnknownPos("not a pos this server gave")
	}
	if p.P.User != userTag(userID) {
		return p, errUnknownPos("the pos belongs to another user")
	}
	return p, nil
}

func (s *Service) loadConn(ctx context.Context, k store.Key) (*conn, error) {
	var it connItem
	if err := s.Store.Get(ctx, k, &it); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("read sliding sync connection: %w", err)
	}
	c := &conn{ver: it.Ver, rooms: map[string]*connRoom{}, dms: map[string]bool{}, news: map[string]bool{}}
	var dms []string
	if unpack(it.Rooms, &c.rooms) != nil || (it.DMs != "" && json.Unmarshal([]byte(it.DMs), &dms) != nil) {
		return nil, nil
	}
	for _, d := range dms {
		c.dms[d] = true
	}
	if it.Fresh != "" && json.Unmarshal([]byte(it.Fresh), &c.last) != nil {
		return nil, nil
	}
	return c, nil
}

func (s *Service) saveConn(ctx context.Context, k store.Key, c *conn) error {
	rms, err := pack(c.rooms)
	if err != nil {
		return err
	}
	var dms []string
	for d := range c.dms {
		dms = append(dms, d)
	}
	slices.Sort(dms)
	dd, _ := json.Marshal(dms)
	it := connItem{PK: k.PK, SK: k.SK, Ver: c.ver, Rooms: rms, DMs: string(dd), Expires: s.now().Add(connTTL).Unix()}
	if len(c.fresh) > 0 {
		f, _ := json.Marshal(c.fresh)
		it.Fresh = string(f)
	}
	if err := s.Store.Put(ctx, it); err != nil {
		return fmt.Errorf("save sliding sync connection: %w", err)
	}
	return nil
}

// pack is the gzip of v's JSON: a connection's rooms are mostly room IDs
// and repeated keys, and the item is read on every request and written on
// every answer that changes it, at 1 RCU per 4 KB and 1 WCU per KB.
func pack(v any) ([]byte, error) {
	doc, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode sliding sync connection: %w", err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(doc); err != nil {
		return nil, fmt.Errorf("compress sliding sync connection: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compress sliding sync connection: %w", err)
	}
	return buf.Bytes(), nil
}

// unpack reads what pack wrote.
func unpack(b []byte, v any) error {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return err
	}
	doc, err := io.ReadAll(io.LimitReader(zr, 64<<20))
	if err != nil {
		return err
	}
	return json.Unmarshal(doc, v)
}

// SlidingSync answers a simplified sliding sync request.
func (s *Service) SlidingSync(ctx context.Context, sr SlidingRequest) (*SlidingResponse, error) {
	start := s.now()
	ctx = rooms.WithDevice(ctx, sr.DeviceID)
	req := Request{UserID: sr.UserID, DeviceID: sr.DeviceID, SetPresence: sr.SetPresence, Timeout: sr.Timeout}
	req.uploadsBase = s.uploads.generation(deviceKey(sr.UserID, sr.DeviceID))
	req.Filter.IncludeLeave = true
	// required_state is the state at the timeline's end, its own state
	// events included, as /sync's use_state_after gives it.
	req.StateAfter = true
	key := connKey(sr.UserID, sr.DeviceID, sr.ConnID)
	var pos slidingPos
	var c *conn
	if sr.Pos != "" {
		var err error
		if pos, err = decodeSlidingPos(sr.Pos, sr.UserID); err != nil {
			return nil, err
		}
		if c, err = s.loadConn(ctx, key); err != nil {
			return nil, err
		}
		if c != nil && c.ver == pos.V+1 {
			// The client retries the pos before the last answer, which it
			// did not take: the rooms that answer sent whole for the first
			// time are not on the client. Its other news comes again from
			// the stream, read from the older pos.
			c.retry()
		}
		if c == nil || c.ver != pos.V {
			return nil, errUnknownPos("the connection expired or moved on")
		}
		req.Since = sr.Pos
	}
	if err := s.presence(ctx, req, pos.P.Presence); err != nil {
		return nil, err
	}
	box, err := sinceInbox(sr, pos.P)
	if err != nil {
		return nil, err
	}
	var fresh []news
	if c == nil {
		var err error
		// Versions start at the time, so that a pos of an earlier
		// connection of the same conn_id is not taken for this one's.
		if c, err = s.buildConn(ctx, sr.UserID, start.UnixMicro()); err != nil {
			return nil, err
		}
		if s.ToDevice != nil && sr.Extensions.ToDevice {
			if _, err := s.readInbox(ctx, req, box, nil); err != nil {
				return nil, err
			}
		}
		pos.P = position{User: userTag(sr.UserID), Time: start.UnixMilli(), Sent: map[string][2]int64{}, Ephemeral: start.UnixMilli()}
	} else {
		if err := s.needFilterData(ctx, sr, c); err != nil {
			return nil, err
		}
		// A request with rooms to send at once reads the stream once.
		if !waitable(sr, c) {
			req.Timeout = 0
		}
		var err error
		if fresh, err = s.slidingWait(ctx, sr, req, c, pos.P, box, start); err != nil {
			return nil, err
		}
	}
	// The rooms' reads share their info and membership items
	// (rooms.WithReadsShared), read once the wait is over.
	return s.slidingAnswer(rooms.WithReadsShared(ctx), sr, req, key, c, pos, fresh, box, s.now())
}

// sinceInbox is what the request knows of the device's to-device inbox.
// The to_device extension's since (MSC3885) says which messages the client
// processed, apart from pos: a client that lost its pos (M_UNKNOWN_POS, a
// restart) starts a new connection with its last next_batch and gets only
// later messages. Without since, pos says it, as /sync's since does.
func sinceInbox(sr SlidingRequest, pos position) (*inbox, error) {
	box := openInbox(pos, sr.DeviceID)
	if !sr.Extensions.ToDevice || sr.Extensions.ToDeviceSince == "" {
		box.limit = sr.Extensions.ToDeviceLimit
		return box, nil
	}
	since, err := decodeSlidingPos(sr.Extensions.ToDeviceSince, sr.UserID)
	if err != nil {
		return nil, httpapi.InvalidParam("extensions.to_device.since is not a next_batch this server gave")
	}
	sb := openInbox(since.P, sr.DeviceID)
	// A since that is not what pos carries (the client did not process
	// pos's answer, or has no pos) reads the inbox at once: the stream
	// from pos may not show the entries of what since did not deliver.
	if sr.Pos == "" || sb.cursor != box.cursor || sb.read != box.read || !slices.Equal(sb.seen, box.seen) {
		sb.due = true
	}
	sb.limit = sr.Extensions.ToDeviceLimit
	return sb, nil
}

// toDeviceBatch is the to_device extension's next_batch: a pos holding only
// the user and the device's inbox state of next, which says how far
// delivery went.
func toDeviceBatch(next position) string {
	return slidingPos{P: position{User: next.User, Time: next.Time, Device: next.Device,
		ToDevice: next.ToDevice, DeviceRead: next.DeviceRead, DeviceSeen: next.DeviceSeen}}.encode()
}

// slidingWait waits for news the request answers, updating the list with
// the news it does not: a message in a room outside the ranges moves the
// room in the list, and the request waits on unless that brings the room
// into a range.
func (s *Service) slidingWait(ctx context.Context, sr SlidingRequest, req Request, c *conn, pos position, box *inbox, start time.Time) ([]news, error) {
	deadline := start.Add(min(req.Timeout, s.MaxTimeout))
	pos.Sent, pos.Typing = maps.Clone(pos.Sent), maps.Clone(pos.Typing)
	var fresh []news
	for {
		got, _, err := s.await(ctx, req, pos, box, start)
		if err != nil {
			return nil, err
		}
		fresh = append(fresh, got...)
		if err := s.applyNews(ctx, sr.UserID, c, got); err != nil {
			return nil, err
		}
		// A room whose tags changed may enter a filtered list's range.
		if err := s.needFilterData(ctx, sr, c); err != nil {
			return nil, err
		}
		if len(got) == 0 || len(box.events) > 0 || !s.now().Before(deadline) || answers(sr, c, got) {
			return fresh, nil
		}
		// Seen: the next wait does not take it for news again.
		handled(&pos, got, nil)
	}
}

// answers reports whether news concerns the request: anything but timeline
// or ephemeral news of rooms it does not select (which the e2ee extension
// needs for device_lists), or a room that the news brought into a range.
func answers(sr SlidingRequest, c *conn, got []news) bool {
	if sr.Extensions.E2EE || !waitable(sr, c) {
		return true
	}
	sel, _ := selectRooms(sr, c)
	for _, n := range got {
		if !strings.HasPrefix(n.RoomID, "!") || sel[n.RoomID] != nil {
			return true
		}
	}
	return false
}

// retry takes the connection back to the version before its last answer.
func (c *conn) retry() {
	for _, id := range c.last {
		if r := c.rooms[id]; r != nil {
			r.Sent = false
		}
	}
	c.ver--
	c.last = nil
	c.dirty = true
}

// waitable reports whether the request has nothing to send before news:
// every room it selects is up to date on the client.
func waitable(sr SlidingRequest, c *conn) bool {
	sel, _ := selectRooms(sr, c)
	for id, x := range sel {
		if r := c.rooms[id]; r != nil && (!r.Sent || x.config.TimelineLimit > r.L) {
			return false
		}
	}
	return true
}

// buildConn makes a connection's room list from the user's memberships and
// their news: the stream's week of entries, and the newest event of rooms
// quiet for longer (one read each), on a connection's first request only.
func (s *Service) buildConn(ctx context.Context, userID string, ver int64) (*conn, error) {
	c := &conn{ver: ver, rooms: map[string]*connRoom{}, dms: map[string]bool{}, dirty: true, news: map[string]bool{}}
	// The memberships, the stream and m.direct are read side by side. The
	// stream holds a week of news: one Query gives the bump stamps of the
	// rooms active in it; only quieter rooms read their newest event.
	var ms []rooms.Membership
	var all []news
	dms := &conn{rooms: map[string]*connRoom{}, dms: map[string]bool{}}
	first, fctx := errgroup.WithContext(ctx)
	first.Go(func() (err error) { ms, err = s.Rooms.Memberships(fctx, userID); return err })
	first.Go(func() (err error) {
		all, err = s.readStream(fctx, userID, s.now().Add(-streamTTL).UnixMilli(), false)
		return err
	})
	first.Go(func() error { return s.readDMs(fctx, userID, dms) })
	if err := first.Wait(); err != nil {
		return nil, err
	}
	c.dms = dms.dms
	recent := map[string]int64{}
	for _, n := range all {
		if n.Seq > 0 && !n.NoBump && strings.HasPrefix(n.RoomID, "!") {
			recent[n.RoomID] = max(recent[n.RoomID], n.TS)
		}
	}
	var mu gosync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(initialParallelism)
	for _, m := range ms {
		// Rooms the user left before the connection are not in its list
		// (the user knows they left); rooms they were kicked or banned
		// from are, as the MSC says, but not a ban from a room they never
		// joined.
		if m.Forgotten || (m.Membership == "ban" && !m.Joined) {
			continue
		}
		g.Go(func() error {
			if m.Membership == "leave" {
				kicked, err := s.kicked(gctx, userID, m.RoomID)
				if err != nil || !kicked {
					return err
				}
			}
			bump, ok := recent[m.RoomID]
			if !ok {
				bump = s.bumpOf(gctx, userID, m.RoomID)
			}
			mu.Lock()
			defer mu.Unlock()
			c.rooms[m.RoomID] = &connRoom{Bump: bump, M: m.Membership}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return c, nil
}

// kicked reports whether the user's leave of a room was someone else's
// doing (a kick, or a withdrawn invite): one GetItem of the user's member
// event, for left rooms only.
func (s *Service) kicked(ctx context.Context, userID, roomID string) (bool, error) {
	ev, err := s.Rooms.StateEvent(ctx, roomID, events.Member, userID)
	if errors.Is(err, rooms.ErrUnknownEvent) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read the leave of %s in %s: %w", userID, roomID, err)
	}
	return events.Sender(ev) != userID, nil
}

// bumpTypes are the event types that move a room in the list (the MSC's
// "proper" activity, as Synapse's SLIDING_SYNC_DEFAULT_BUMP_EVENT_TYPES):
// not reactions, receipts, edits of state or others' member changes.
var bumpTypes = map[string]bool{
	"m.room.create": true, "m.room.message": true, "m.room.encrypted": true, "m.sticker": true,
	"m.call.invite": true, "m.poll.start": true, "m.beacon_info": true,
}

// slidingBumps reports whether ev moves its room in userID's list: a bump
// type, or the user's own membership (for rooms the user is not joined to,
// the MSC's bump_stamp is when that membership happened).
func slidingBumps(ev events.PDU, userID string) bool {
	if bumpTypes[ev.Type()] {
		return true
	}
	return ev.Type() == events.Member && ev.StateKey() != nil && *ev.StateKey() == userID
}

// bumpScan is how many of a quiet room's newest events bumpOf looks at: a
// page of the room's timeline is read whole anyway (rooms reads 20 slots
// at least), so this costs the one Query that a single event would.
const bumpScan = 20

// bumpOf is the time of the newest event of a room the user may see that
// moves the room (slidingBumps), among its bumpScan newest; the oldest of
// those when none does (the true bump stamp is older still: the room is
// quiet). 0 when there is none (an invite to a room this server is not
// in).
func (s *Service) bumpOf(ctx context.Context, userID, roomID string) int64 {
	page, err := s.Rooms.Messages(ctx, userID, roomID, rooms.MessagesQuery{Backward: true, Limit: bumpScan, News: true})
	if err != nil || len(page.Chunk) == 0 {
		return 0
	}
	var oldest int64
	for _, raw := range page.Chunk {
		var ev struct {
			TS       int64   `json:"origin_server_ts"`
			Type     string  `json:"type"`
			StateKey *string `json:"state_key"`
		}
		_ = json.Unmarshal(raw, &ev)
		if bumpTypes[ev.Type] || (ev.Type == events.Member && ev.StateKey != nil && *ev.StateKey == userID) {
			return ev.TS
		}
		oldest = ev.TS
	}
	return oldest
}

// readDMs reads the rooms m.direct names.
func (s *Service) readDMs(ctx context.Context, userID string, c *conn) error {
	if s.AccountData == nil {
		return nil
	}
	evs, err := s.AccountData(ctx, userID, "", time.Time{})
	if err != nil {
		return err
	}
	dms := map[string]bool{}
	for _, raw := range evs {
		var ev struct {
			Type    string              `json:"type"`
			Content map[string][]string `json:"content"`
		}
		if json.Unmarshal(raw, &ev) != nil || ev.Type != "m.direct" {
			continue
		}
		for _, ids := range ev.Content {
			for _, id := range ids {
				dms[id] = true
			}
		}
	}
	// A room held by the client whose is_dm changed comes again whole: the
	// MSC has the change sent, and it is rare.
	for id, r := range c.rooms {
		if dms[id] != c.dms[id] && r.Sent {
			r.Sent = false
		}
	}
	if !maps.Equal(dms, c.dms) {
		c.dms, c.dirty = dms, true
	}
	return nil
}

// applyNews updates the connection's list from the stream's news: rooms
// with new events move up and are stale on the client, memberships are
// read again for them, and m.direct again when global account data
// changed.
func (s *Service) applyNews(ctx context.Context, userID string, c *conn, fresh []news) error {
	// bumped holds every room with new events, with the time of the
	// newest that moves it (0 for none: a reaction, others' member
	// changes).
	bumped := map[string]int64{}
	global := false
	for _, n := range fresh {
		switch {
		case n.RoomID == "" && n.Seq == 0:
			global = true
		case strings.HasPrefix(n.RoomID, "!") && n.Seq > 0:
			ts := n.TS
			if n.NoBump {
				ts = 0
			}
			bumped[n.RoomID] = max(bumped[n.RoomID], ts)
		case strings.HasPrefix(n.RoomID, "!"):
			// Room account data (or a receipt, typing) changed: the
			// tags are read again if a filter needs them.
			if r := c.rooms[n.RoomID]; r != nil && r.TagsRead {
				r.TagsRead, c.dirty = false, true
			}
		}
	}
	if global {
		if err := s.readDMs(ctx, userID, c); err != nil {
			return err
		}
	}
	if len(bumped) == 0 {
		return nil
	}
	ids := make([]string, 0, len(bumped))
	for id := range bumped {
		ids = append(ids, id)
	}
	ms, err := s.Rooms.MembershipsIn(ctx, userID, ids)
	if err != nil {
		return err
	}
	c.dirty = true
	for _, m := range ms {
		r := c.rooms[m.RoomID]
		if r == nil {
			if m.Membership == "leave" || m.Membership == "ban" {
				continue
			}
			r = &connRoom{}
			c.rooms[m.RoomID] = r
		}
		// A room the user left themselves stays only if it was sent on
		// the connection (the MSC): a kick or a ban always stays.
		if m.Membership == "leave" && r.M != "leave" && !r.Sent && r.L == 0 {
			kicked, err := s.kicked(ctx, userID, m.RoomID)
			if err != nil {
				return err
			}
			if !kicked {
				delete(c.rooms, m.RoomID)
				continue
			}
		}
		r.Bump = max(r.Bump, bumped[m.RoomID])
		r.M = m.Membership
		c.news[m.RoomID] = true
		if m.Forgotten {
			delete(c.rooms, m.RoomID)
		}
	}
	return nil
}

// selection is why a room is in a response: the lists it is in, and the
// combined config.
type selection struct {
	lists  []string
	config RoomConfig
	sub    bool
}

// order is the connection's rooms by recency, newest first.
func (c *conn) order() []string {
	ids := make([]string, 0, len(c.rooms))
	for id := range c.rooms {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b string) int {
		if d := cmp.Compare(c.rooms[b].Bump, c.rooms[a].Bump); d != 0 {
			return d
		}
		return cmp.Compare(a, b)
	})
	return ids
}

// listRooms is each list's filtered rooms, in order.
func listRooms(sr SlidingRequest, c *conn) map[string][]string {
	ordered := c.order()
	out := map[string][]string{}
	for name, l := range sr.Lists {
		kept := []string{}
		for _, id := range ordered {
			if l.Filters.keep(id, c) {
				kept = append(kept, id)
			}
		}
		out[name] = kept
	}
	return out
}

// selectRooms is the rooms that the lists' ranges and the subscriptions
// name, with the config each gets; and each list's rooms.
func selectRooms(sr SlidingRequest, c *conn) (map[string]*selection, map[string][]string) {
	lists := listRooms(sr, c)
	sel := map[string]*selection{}
	add := func(id string, conf RoomConfig) *selection {
		if s, ok := sel[id]; ok {
			s.config = s.config.combine(conf)
			return s
		}
		s := &selection{config: conf}
		sel[id] = s
		return s
	}
	for name, l := range sr.Lists {
		all := lists[name]
		ranges := l.Ranges
		if ranges == nil {
			ranges = [][2]int{{0, len(all) - 1}}
		}
		for _, rg := range ranges {
			for i := rg[0]; i <= rg[1] && i < len(all); i++ {
				s := add(all[i], l.RoomConfig)
				if !slices.Contains(s.lists, name) {
					s.lists = append(s.lists, name)
				}
			}
		}
	}
	for id, conf := range sr.Subscriptions {
		if r := c.rooms[id]; r != nil {
			add(id, conf).sub = true
		}
	}
	return sel, lists
}

// keep reports whether a room passes the list's filters. Encryption and
// room type are filled in by needFilterData before.
func (f ListFilters) keep(id string, c *conn) bool {
	r := c.rooms[id]
	if f.IsDM != nil && *f.IsDM != c.dms[id] {
		return false
	}
	if f.IsInvite != nil && *f.IsInvite != (r.M == "invite") {
		return false
	}
	if f.IsEncrypted != nil && *f.IsEncrypted != (r.Enc == 2) {
		return false
	}
	if f.HasRoomTypes && !slices.Contains(f.RoomTypes, r.Type) {
		return false
	}
	if f.Spaces != nil && !slices.ContainsFunc(f.Spaces, func(sp string) bool { return c.kids[sp][id] }) {
		return false
	}
	tagged := func(tags []string) bool {
		return slices.ContainsFunc(r.Tags, func(t string) bool { return slices.Contains(tags, t) })
	}
	if len(f.NotTags) > 0 && tagged(f.NotTags) {
		return false
	}
	if len(f.Tags) > 0 && !tagged(f.Tags) {
		return false
	}
	return !slices.Contains(f.NotRoomTypes, r.Type)
}

// needFilterData reads, once per room and connection, the encryption and
// room type of rooms the lists' filters need them of.
func (s *Service) needFilterData(ctx context.Context, sr SlidingRequest, c *conn) error {
	if err := s.spaceKids(ctx, sr, c); err != nil {
		return err
	}
	enc, typ, tags := false, false, false
	for _, l := range sr.Lists {
		enc = enc || l.Filters.IsEncrypted != nil
		typ = typ || l.Filters.HasRoomTypes || l.Filters.NotRoomTypes != nil
		tags = tags || len(l.Filters.Tags) > 0 || len(l.Filters.NotTags) > 0
	}
	if tags {
		if err := s.readTags(ctx, sr.UserID, c); err != nil {
			return err
		}
	}
	if !enc && !typ {
		return nil
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(initialParallelism)
	for id, r := range c.rooms {
		if r.M != "join" && r.M != "leave" && r.M != "ban" {
			continue
		}
		needEnc, needType := enc && r.Enc == 0, typ && !r.TypeRead
		if !needEnc && !needType {
			continue
		}
		c.dirty = true
		g.Go(func() error {
			if needEnc {
				r.Enc = 1
				if _, err := s.Rooms.StateEvent(gctx, id, events.Encryption, ""); err == nil {
					r.Enc = 2
				}
			}
			if needType {
				if info, err := s.Rooms.Info(gctx, id); err == nil {
					r.Type = info.RoomType
				}
				r.TypeRead = true
			}
			return nil
		})
	}
	return g.Wait()
}

// readTags reads the m.tag room account data of the rooms whose tags the
// connection does not hold: one Query of the room's account data each, once
// per room and connection, and again after the room's account data changed.
func (s *Service) readTags(ctx context.Context, userID string, c *conn) error {
	if s.AccountData == nil {
		return nil
	}
	var mu gosync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(initialParallelism)
	for id, r := range c.rooms {
		if r.TagsRead {
			continue
		}
		c.dirty = true
		g.Go(func() error {
			evs, err := s.AccountData(gctx, userID, id, time.Time{})
			if err != nil {
				return err
			}
			var tags []string
			for _, raw := range evs {
				var ev struct {
					Type    string `json:"type"`
					Content struct {
						Tags map[string]json.RawMessage `json:"tags"`
					} `json:"content"`
				}
				if json.Unmarshal(raw, &ev) == nil && ev.Type == "m.tag" {
					for t := range ev.Content.Tags {
						tags = append(tags, t)
					}
				}
			}
			slices.Sort(tags)
			mu.Lock()
			defer mu.Unlock()
			r.Tags, r.TagsRead = tags, true
			return nil
		})
	}
	return g.Wait()
}

// spaceKids reads the children of the spaces the lists filter by, that the
// user is joined to: one Query of each space's m.space.child state.
// Subspaces are not followed, as the MSC says.
func (s *Service) spaceKids(ctx context.Context, sr SlidingRequest, c *conn) error {
	if c.kids != nil {
		return nil
	}
	c.kids = map[string]map[string]bool{}
	for _, l := range sr.Lists {
		for _, sp := range l.Filters.Spaces {
			if _, done := c.kids[sp]; done {
				continue
			}
			kids := map[string]bool{}
			c.kids[sp] = kids
			if r := c.rooms[sp]; r == nil || r.M != "join" {
				continue
			}
			evs, err := s.Rooms.SpaceChildren(ctx, sp)
			if err != nil {
				return err
			}
			for _, ev := range evs {
				var content struct {
					Via []string `json:"via"`
				}
				if json.Unmarshal(ev.Content(), &content) == nil && len(content.Via) > 0 && ev.StateKey() != nil {
					kids[*ev.StateKey()] = true
				}
			}
		}
	}
	return nil
}

// wholeRooms reads the rooms new to the client (unknown) whole into resp
// and next, side by side, each with its own config; it returns the user's
// memberships of them.
func (s *Service) wholeRooms(ctx context.Context, sr SlidingRequest, req Request, sel map[string]*selection, unknown []string, resp *Response, next *position) ([]rooms.Membership, error) {
	ms, err := s.Rooms.MembershipsIn(ctx, sr.UserID, unknown)
	if err != nil {
		return nil, err
	}
	var mu gosync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(initialParallelism)
	for _, m := range ms {
		rreq := req
		rreq.Filter.TimelineLimit = max(sel[m.RoomID].config.TimelineLimit, 1)
		rreq.Filter.State = lazyFilter(sel, []string{m.RoomID})
		g.Go(func() error { return s.initialRoom(gctx, rreq, resp, next, &mu, m) })
	}
	return ms, g.Wait()
}

// slidingAnswer builds the response once news (if any) is in.
func (s *Service) slidingAnswer(ctx context.Context, sr SlidingRequest, req Request, key store.Key, c *conn, pos slidingPos, fresh []news, box *inbox, now time.Time) (*SlidingResponse, error) {

	if err := s.needFilterData(ctx, sr, c); err != nil {
		return nil, err
	}
	sel, lists := selectRooms(sr, c)
	maxLimit := 1
	var known, unknown []string
	c.expanded = map[string]bool{}
	for id, x := range sel {
		r := c.rooms[id]
		switch {
		case r.Sent && x.config.TimelineLimit > r.L:
			// The client holds fewer of the latest events than it now
			// asks for: they come again, as the MSC's expanded timeline.
			c.expanded[id] = true
			unknown = append(unknown, id)
		case r.Sent:
			known = append(known, id)
			maxLimit = max(maxLimit, x.config.TimelineLimit)
		default:
			unknown = append(unknown, id)
		}
	}
	// News of rooms the client holds goes through /sync's incremental
	// answer; news of other rooms is only their place in the list.
	// The e2ee extension needs the member changes of every room with news
	// (device_lists), so it reads them all: still only rooms with news.
	held := map[string]bool{}
	for _, id := range known {
		held[id] = true
	}
	var kept []news
	for _, n := range fresh {
		if sr.Extensions.E2EE || !strings.HasPrefix(n.RoomID, "!") || held[n.RoomID] {
			kept = append(kept, n)
		}
	}
	ireq := req
	ireq.Filter.Rooms = append([]string{}, known...)
	if sr.Extensions.E2EE {
		ireq.Filter.Rooms = nil
	}
	ireq.Filter.TimelineLimit = maxLimit
	ireq.Filter.State = lazyFilter(sel, known)
	// Rooms new to the client come whole, each with its own config: they
	// are read beside the news of the others, into a response of their
	// own merged after.
	whole := emptyResponse()
	wholeNext := position{Time: pos.P.Time, Sent: map[string][2]int64{}}
	if sr.Pos != "" {
		wholeNext.Time = now.UnixMilli() // as incremental's next
	}
	var ms []rooms.Membership
	var wg gosync.WaitGroup
	var wholeErr error
	wg.Go(func() { ms, wholeErr = s.wholeRooms(ctx, sr, req, sel, unknown, whole, &wholeNext) })
	var resp *Response
	var next position
	err := func() error {
		if sr.Pos == "" {
			resp = emptyResponse()
			next = pos.P
			if sr.Extensions.AccountData {
				return s.globalData(ctx, sr.UserID, time.Time{}, resp)
			}
			return nil
		}
		var err error
		if resp, next, err = s.incremental(ctx, ireq, pos.P, kept, now); err != nil {
			return err
		}
		handled(&next, fresh, kept)
		if err := s.lazyMembers(ctx, sel, resp); err != nil {
			return err
		}
		if sr.Extensions.E2EE {
			return s.settleDevices(ctx, req, resp)
		}
		return nil
	}()
	wg.Wait()
	if err == nil {
		err = wholeErr
	}
	if err != nil {
		return nil, err
	}
	whole.mergeInto(resp)
	maps.Copy(next.Sent, wholeNext.Sent)
	for room, ms := range wholeNext.Typing {
		next.typingStops(room, time.UnixMilli(ms))
	}
	// An invite or knock shown whole is delivered up to its event: the
	// stream entry that brought it is old news to the next request.
	for _, m := range ms {
		if m.Membership == "invite" || m.Membership == "knock" {
			next.sent(m.RoomID, m.Seq)
		}
	}
	if sr.Extensions.E2EE {
		if err := s.keyCounts(ctx, req, pos.P, req.uploadsBase, resp, &next); err != nil {
			return nil, err
		}
	}
	if err := s.dropIgnoredInvites(ctx, sr.UserID, resp); err != nil {
		return nil, err
	}
	next.Presence = req.SetPresence
	if s.ToDevice != nil {
		if sr.Extensions.ToDevice {
			box.save(&next, sr.DeviceID)
		} else {
			// The messages stay in the inbox for when the client asks.
			cursor := pos.P.ToDevice
			box.save(&next, sr.DeviceID)
			next.ToDevice = cursor
			box.events = nil
		}
	}
	out := s.render(sr, c, sel, lists, resp, pos.P, box)
	// Rooms outside the lists' ranges that had news are stale on the
	// client: they come whole when they are selected again.
	for id := range c.news {
		if r := c.rooms[id]; r != nil && sel[id] == nil && r.Sent {
			r.Sent = false
			c.dirty = true
		}
	}
	for id := range sel {
		if _, ok := out.Rooms[id]; ok || slices.Contains(unknown, id) {
			r := c.rooms[id]
			if !r.Sent || c.expanded[id] {
				c.fresh = append(c.fresh, id)
			}
			if slices.Contains(unknown, id) {
				r.L = max(r.L, sel[id].config.TimelineLimit)
			}
			r.Sent = true
			c.dirty = true
		}
	}
	if c.dirty {
		if sr.Pos != "" {
			c.ver = pos.V + 1
		}
		if err := s.saveConn(ctx, key, c); err != nil {
			return nil, err
		}
	}
	out.Pos = slidingPos{P: next, V: c.ver}.encode()
	if sr.Extensions.ToDevice {
		out.Extensions.ToDevice.NextBatch = toDeviceBatch(next)
	}
	return out, nil
}

// handled records in next the news that did not go through the incremental
// answer: rooms outside the ranges (their place in the list is all they
// change) and rooms sent whole. The next request does not take it for news
// again, nor wake on it.
func handled(next *position, fresh, kept []news) {
	if next.Sent == nil {
		next.Sent = map[string][2]int64{}
	}
	answered := map[news]bool{}
	for _, n := range kept {
		answered[n] = true
	}
	for _, n := range fresh {
		if !strings.HasPrefix(n.RoomID, "!") || answered[n] {
			continue
		}
		if n.Seq == 0 {
			next.Ephemeral = max(next.Ephemeral, n.TS)
			// Typing that timed out in a room the client no longer
			// selects: nothing to say, nothing to wake for.
			delete(next.Typing, n.RoomID)
			continue
		}
		old := next.Sent[n.RoomID]
		next.Sent[n.RoomID] = [2]int64{max(old[0], n.Seq), max(old[1], n.TS)}
	}
}

// lazyMembers adds to the rooms of an incremental answer whose config has
// lazy members the member events of their timeline's senders and targets
// that the answer's state lacks: an incremental state holds only what
// changed, and the client may not hold a new sender's member event. One
// BatchGetItem per such room; a member event the client holds already
// comes again, harmlessly.
func (s *Service) lazyMembers(ctx context.Context, sel map[string]*selection, resp *Response) error {
	for id, j := range resp.Rooms.Join {
		x := sel[id]
		if x == nil || !x.config.State.Lazy || len(j.Timeline.Events) == 0 {
			continue
		}
		have := map[string]bool{}
		list := &j.State
		if j.StateAfter != nil {
			list = j.StateAfter
		}
		for _, raw := range list.Events {
			var ev struct {
				Type     string `json:"type"`
				StateKey string `json:"state_key"`
			}
			if json.Unmarshal(raw, &ev) == nil && ev.Type == events.Member {
				have[ev.StateKey] = true
			}
		}
		var want []events.StateKeyTuple
		for _, raw := range j.Timeline.Events {
			var ev struct {
				Sender   string  `json:"sender"`
				Type     string  `json:"type"`
				StateKey *string `json:"state_key"`
			}
			if json.Unmarshal(raw, &ev) != nil {
				continue
			}
			users := []string{ev.Sender}
			if ev.Type == events.Member && ev.StateKey != nil {
				users = append(users, *ev.StateKey)
			}
			for _, u := range users {
				if u != "" && !have[u] {
					have[u] = true
					want = append(want, events.StateKeyTuple{Type: events.Member, StateKey: u})
				}
			}
		}
		if len(want) == 0 {
			continue
		}
		found, err := s.Rooms.StateEvents(ctx, id, want)
		if err != nil {
			return err
		}
		var pdus []events.PDU
		for _, t := range want {
			if ev, ok := found[t]; ok {
				pdus = append(pdus, ev)
			}
		}
		rendered, err := s.Rooms.Render(ctx, pdus)
		if err != nil {
			return err
		}
		list.Events = append(list.Events, rendered...)
	}
	return nil
}

// lazyFilter is the state filter for rooms: lazy members when a config
// asks for them and none asks for every member.
func lazyFilter(sel map[string]*selection, ids []string) *events.RoomEventFilter {
	lazy, all := false, false
	for _, id := range ids {
		st := sel[id].config.State
		lazy = lazy || st.Lazy
		all = all || st.allMembers()
	}
	if lazy && !all {
		return &events.RoomEventFilter{LazyLoadMembers: true}
	}
	return nil
}
