// Package sync serves GET /sync: each local user's stream of what changed
// in their rooms, long-polled cheaply.
//
// Every event appended to a room writes one small entry into the stream of
// each local user it concerns (fan-out on write). A waiting /sync then
// costs one small read per poll interval, however many rooms the user is
// in, and an incremental sync reads only the rooms its entries name.
package sync

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	gosync "sync"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// window is how far back a sync reads the stream before its token's time:
// an entry is written a few milliseconds after its timestamp is taken, and
// clocks of Lambda hosts differ by less, so entries that land late are
// still read. Entries inside the window are told apart by room position.
const window = 10 * time.Second

// streamTTL is how long entries are kept: a token older than this gives a
// full sync of the rooms, as an expired token would.
const streamTTL = 7 * 24 * time.Hour

// entry says that the event at Seq of a room is news for the user.
type entry struct {
	PK      string `dynamodbav:"pk"` // sync|<user ID>
	SK      string `dynamodbav:"sk"` // <Unix ms, 13 digits>|<room ID>|<position, 12 digits>
	Expires int64  `dynamodbav:"expires_at"`
	// NoBump marks an event that does not move its room in sliding sync's
	// list (slidingBumps): decided once at fan-out, where the event is at
	// hand, so that the list never reads events to order rooms.
	NoBump bool `dynamodbav:"nb,omitempty"`
}

func streamPK(userID string) string { return "sync|" + userID }

func entrySK(ts time.Time, roomID string, seq int64) string {
	return fmt.Sprintf("%013d|%s|%012d", ts.UnixMilli(), roomID, seq)
}

// news is a parsed entry.
type news struct {
	TS     int64
	RoomID string
	Seq    int64
	// NoBump: the entry's event does not move the room in sliding sync's
	// list. Entries written before the mark existed have it false.
	NoBump bool
}

func parseEntry(sk string) (news, error) {
	first, last := strings.Index(sk, "|"), strings.LastIndex(sk, "|")
	if first < 0 || last <= first {
		return news{}, fmt.Errorf("bad stream entry %q", sk)
	}
	ts, err1 := strconv.ParseInt(sk[:first], 10, 64)
	seq, err2 := strconv.ParseInt(sk[last+1:], 10, 64)
	if err1 != nil || err2 != nil {
		return news{}, fmt.Errorf("bad stream entry %q", sk)
	}
	return news{TS: ts, RoomID: sk[first+1 : last], Seq: seq}, nil
}

// Touch tells users of ephemeral news in a room (typing, receipts): an
// entry at position 0, which the room's timeline never has.
func (s *Service) Touch(ctx context.Context, roomID string, users []string) error {
	return s.Fanout(ctx, []rooms.Appended{{RoomID: roomID, Seq: 0, To: users}})
}

// Fanout writes a stream entry for each user each appended event concerns,
// and wakes their waiting syncs in this process. It is the rooms service's
// Appended hook. An event Landed has its entries already (Land): its
// users are only woken.
func (s *Service) Fanout(ctx context.Context, evs []rooms.Appended) error {
	var items []any
	var users, landed []string
	for _, ev := range evs {
		if ev.Landed {
			landed = append(landed, ev.To...)
			continue
		}
		items = append(items, s.entries(ev)...)
		users = append(users, ev.To...)
	}
	if err := s.write(ctx, items, users); err != nil {
		return err
	}
	s.wake(ctx, landed)
	return nil
}

// Landing is the stream entries of a message, to be written beside its
// slot (the rooms service's Landing hook), without waking anyone: the
// slot may not be there yet. Fanout wakes them once it is. A sync that
// reads such an entry before its slot delivers the room up to the event
// before it (rooms.Page.Newest) and reads the entry again.
func (s *Service) Landing(a rooms.Appended) []any { return s.entries(a) }

// entries are the stream entries of one appended event, one for each
// user it concerns.
func (s *Service) entries(a rooms.Appended) []any {
	now := s.now()
	items := make([]any, 0, len(a.To))
	for _, u := range a.To {
		e := s.entry(now, u, a.RoomID, a.Seq)
		e.NoBump = a.Event != nil && !slidingBumps(a.Event, u)
		items = append(items, e)
	}
	return items
}

func (s *Service) entry(now time.Time, userID, room string, seq int64) entry {
	return entry{PK: streamPK(userID), SK: entrySK(now, room, seq), Expires: now.Add(streamTTL).Unix()}
}

// write stores stream entries, then wakes the syncs waiting on keys.
func (s *Service) write(ctx context.Context, items []any, keys []string) error {
	if len(items) == 0 {
		return nil
	}
	if err := s.Store.PutMany(ctx, items); err != nil {
		return fmt.Errorf("sync fan-out: %w", err)
	}
	s.wake(ctx, keys)
	return nil
}

// wake wakes the syncs waiting on keys, in this process and, through
// Notify, in others.
func (s *Service) wake(ctx context.Context, keys []string) {
	if len(keys) == 0 {
		return
	}
	s.waiters.wake(keys)
	if s.Notify != nil {
		s.Notify(ctx, keys)
	}
}

// Wake wakes the syncs waiting in this process on keys (user IDs, or
// device keys), as news written here does: the sync tier calls it with the
// keys other processes' Notify sent. A wake-up without news costs one read.
func (s *Service) Wake(keys []string) { s.waiters.wake(keys) }

// Drain answers every waiting sync at once, with what it has, and makes
// later ones answer without waiting: a process that is stopping gives its
// clients back to poll elsewhere instead of holding them to the end.
func (s *Service) Drain() { s.waiters.drain() }

// Waiting reports how many syncs wait in this process now, and the most
// that waited at once since the last call.
func (s *Service) Waiting() (now, peak int) { return s.waiters.count() }

// toDevicePrefix marks the room field of to-device news: "~<device ID>" for
// one device, "~*" for every device of the user. Room IDs begin with '!',
// presence news with '@', global account data is "".
const toDevicePrefix = "~"

// TouchDevices tells devices, by user, that to-device messages wait for
// them ("*": every device of the user). It is the todevice service's Notify
// hook, called once the messages are stored: a sync that sees the entry
// then finds them. Other devices of the user skip an entry that names one
// device, and are not woken by it in this process.
func (s *Service) TouchDevices(ctx context.Context, devices map[string][]string) error {
	now := s.now()
	var items []any
	var keys []string
	for u, ids := range devices {
		for _, d := range ids {
			items = append(items, s.entry(now, u, toDevicePrefix+d, 0))
			if d == "*" {
				keys = append(keys, u)
			} else {
				keys = append(keys, deviceKey(u, d))
			}
		}
	}
	return s.write(ctx, items, keys)
}

// deviceKey is the waiters' key of one device of a user; user IDs hold no
// NUL.
func deviceKey(userID, deviceID string) string { return userID + "\x00" + deviceID }

// readStream reads the user's entries from time from on. A waiting sync
// reads eventually consistent (half the cost); one that builds a response
// reads its own writes.
func (s *Service) readStream(ctx context.Context, userID string, from int64, consistent bool) ([]news, error) {
	var out []news
	cursor := ""
	for {
		var page []entry
		q := store.Query{PK: streamPK(userID), From: fmt.Sprintf("%013d", max(from, 0)), Cursor: cursor, Eventual: !consistent}
		next, err := s.Store.QueryPage(ctx, q, &page)
		if err != nil {
			return nil, fmt.Errorf("read sync stream of %s: %w", userID, err)
		}
		for _, e := range page {
			n, err := parseEntry(e.SK)
			if err != nil {
				return nil, err
			}
			n.NoBump = e.NoBump
			out = append(out, n)
		}
		if next == "" {
			return out, nil
		}
		cursor = next
	}
}

// position is what a since token holds: the time its stream was read up to,
// and, for rooms whose entries are still inside the window, the position
// delivered, so that they are not delivered twice.
type position struct {
	User string              `json:"u"`
	Time int64               `json:"t"`
	Sent map[string][2]int64 `json:"r,omitempty"` // room → {position delivered, newest entry's ms}
	// Pending names, by room, the position of news the response could not
	// deliver: a message whose stream entry came before its slot
	// (rooms.Service.Landing). Its entry is news again, but the next sync
	// waits a poll (or a wake-up) before it answers for such news alone,
	// so that an entry whose slot never comes (its process died) costs a
	// sync a poll, not a client's every request, until the window passes.
	Pending map[string]int64 `json:"pn,omitempty"`
	// shownPending reports that an answer showed events of a room it
	// names in Pending, those before the one on its way.
	shownPending bool
	// Ephemeral is the time of the newest ephemeral entry delivered.
	Ephemeral int64 `json:"e,omitempty"`
	// Presence is the set_presence last applied, so that polling does not
	// write it again.
	Presence string `json:"p,omitempty"`
	// Device ties the to-device fields below to the device whose sync
	// wrote them (a tag, as User); another device's token has none.
	Device string `json:"dv,omitempty"`
	// ToDevice is the todevice cursor of the messages this token's response
	// delivered: the sync that brings the token back deletes them. "" when
	// none were delivered.
	ToDevice string `json:"d,omitempty"`
	// DeviceRead is when (Unix ms) the device's inbox was last read: the
	// to-device entries older than that, less deviceSkew, were handled.
	// DeviceSeen holds the times of the entries handled then that are
	// younger.
	DeviceRead int64   `json:"dr,omitempty"`
	DeviceSeen []int64 `json:"ds,omitempty"`
	// Typing holds, for each room whose response showed users typing, when
	// (Unix ms) the first of them stops by timeout: nothing is written then,
	// so the sync with this token wakes by itself to say so.
	Typing map[string]int64 `json:"ty,omitempty"`
	// Keys are the device's key counts the token's response carried: true
	// until a stream entry says they changed.
	Keys *keyCounts `json:"k,omitempty"`
}

// typingStops records when the first user typing in a room shown to the
// client stops, or forgets the room when nobody types.
func (p *position) typingStops(roomID string, at time.Time) {
	if at.IsZero() {
		delete(p.Typing, roomID)
		return
	}
	if p.Typing == nil {
		p.Typing = map[string]int64{}
	}
	p.Typing[roomID] = at.UnixMilli()
}

// typingDue splits the rooms whose typing the client saw into those where
// someone has stopped by now, and the time the next one will.
func (p position) typingDue(now time.Time) (due []string, next time.Time) {
	for room, ms := range p.Typing {
		if ms <= now.UnixMilli() {
			due = append(due, room)
		} else if next.IsZero() || ms < next.UnixMilli() {
			next = time.UnixMilli(ms)
		}
	}
	return due, next
}

// userTag ties a token to its user without showing the user ID.
func userTag(userID string) string {
	h := sha256.Sum256([]byte(userID))
	return hex.EncodeToString(h[:6])
}

func (p position) encode() string {
	doc, _ := json.Marshal(p) // a struct of strings and numbers always encodes
	return "s" + base64.RawURLEncoding.EncodeToString(doc)
}

// parsePosition reads a sync token of userID. Tokens are not signed: a
// client may hand back anything, so what it holds is checked as far as the
// sync relies on it (valid); anything else is 400 M_INVALID_PARAM.
func parsePosition(token, userID string) (position, error) {
	p, err := decodePosition(token)
	if err != nil {
		return position{}, err
	}
	if p.User != userTag(userID) {
		return position{}, httpapi.InvalidParam("sync token belongs to another user")
	}
	return p, nil
}

// sincePosition reads the since token of a sync by userID. Another user's
// token is taken, as Synapse takes it, for the point in time it stands at
// and nothing more: the rooms it delivered, its ephemeral and presence
// marks, its to-device cursor and key counts are that user's, so they are
// dropped, and the sync answers from the stream of userID since that time
// (a fuller answer than a token of its own would get, never a token or
// data of the other user's).
func sincePosition(token, userID string) (position, error) {
	p, err := decodePosition(token)
	if err != nil {
		return position{}, err
	}
	if p.User != userTag(userID) {
		return position{User: userTag(userID), Time: p.Time}, nil
	}
	return p, nil
}

// decodePosition reads a sync token of any user.
func decodePosition(token string) (position, error) {
	bad := httpapi.InvalidParam("sync token %q is not one this server gave you", shorten(token))
	doc, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(token, "s"))
	if err != nil || !strings.HasPrefix(token, "s") {
		return position{}, bad
	}
	var p position
	if err := json.Unmarshal(doc, &p); err != nil || !p.valid() {
		return position{}, bad
	}
	return p, nil
}

// maxMillis bounds the times a token holds: Unix ms of the end of the year
// 9999. Later ones would overflow the arithmetic done on them.
const maxMillis = 253402300799999

// valid reports whether p holds only what this server writes into tokens:
// a time, times within [0, maxMillis], room IDs where rooms go (they become
// parts of keys read), positions that are not negative, and a presence the
// spec knows.
func (p position) valid() bool {
	ok := func(ms int64) bool { return ms >= 0 && ms <= maxMillis }
	if p.Time <= 0 || !ok(p.Time) || !ok(p.Ephemeral) || !ok(p.DeviceRead) {
		return false
	}
	for room, sent := range p.Sent {
		if !rooms.ValidRoomID(room) || sent[0] < 0 || !ok(sent[1]) {
			return false
		}
	}
	for room, ms := range p.Typing {
		if !rooms.ValidRoomID(room) || !ok(ms) {
			return false
		}
	}
	for room, seq := range p.Pending {
		if !rooms.ValidRoomID(room) || seq < 0 {
			return false
		}
	}
	for _, ms := range p.DeviceSeen {
		if !ok(ms) {
			return false
		}
	}
	switch p.Presence {
	case "", "online", "offline", "unavailable":
		return true
	}
	return false
}

// shorten keeps error messages that quote a client's token short.
func shorten(token string) string {
	if len(token) <= 64 {
		return token
	}
	return strings.ToValidUTF8(token[:64], "") + "..."
}

// RoomPosition reads a sync token of userID (a next_batch) as the position
// in roomID it stands just after: what the sync that gave it delivered of
// the room. It is the rooms service's SyncPosition, so that /members?at=,
// /messages and /relations take sync tokens as the spec has them. A token
// remembers the rooms it delivered lately; any other room was delivered up
// to the token's time (rooms.Service.PositionAt). A token that is not one
// of the user's is 400 M_INVALID_PARAM.
func (s *Service) RoomPosition(ctx context.Context, userID, roomID, token string) (int64, error) {
	p, err := parsePosition(token, userID)
	if err != nil {
		return 0, err
	}
	if sent, ok := p.Sent[roomID]; ok {
		return sent[0], nil
	}
	return s.Rooms.PositionAt(ctx, roomID, time.UnixMilli(p.Time))
}

// nothingYet reports whether next, the position after an answer to fresh,
// delivered nothing: all of fresh was news of messages whose slots were not
// there yet, and no event before them was shown.
func (p position) nothingYet(fresh []news) bool {
	return !p.shownPending && p.pending(fresh)
}

// pending reports whether all of fresh is news the token's response found
// not there yet (Pending).
func (p position) pending(fresh []news) bool {
	for _, n := range fresh {
		if n.Seq == 0 || n.Seq > p.Pending[n.RoomID] {
			return false
		}
	}
	return len(fresh) > 0
}

// fresh is news the token has not delivered.
func (p position) fresh(n news) bool {
	if n.Seq == 0 {
		return n.TS > p.Ephemeral
	}
	sent, ok := p.Sent[n.RoomID]
	return !ok || n.Seq > sent[0]
}

// waiters wakes syncs waiting in this process as soon as this process
// writes news for their user; syncs elsewhere find it at their next poll.
type waiters struct {
	mu    gosync.Mutex
	chans map[string][]chan struct{}
	// n is how many waits are open, peak the most since count was last
	// called; draining makes every wait end at once.
	n, peak  int
	draining bool
}

// wait returns a channel that news on any of keys (a user ID, or a
// deviceKey) wakes, and the function that stops waiting.
func (w *waiters) wait(keys ...string) (<-chan struct{}, func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.chans == nil {
		w.chans = map[string][]chan struct{}{}
	}
	ch := make(chan struct{}, 1)
	if w.draining {
		ch <- struct{}{}
	}
	for _, k := range keys {
		w.chans[k] = append(w.chans[k], ch)
	}
	w.n++
	w.peak = max(w.peak, w.n)
	return ch, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.n--
		for _, k := range keys {
			list := w.chans[k]
			for i, c := range list {
				if c == ch {
					w.chans[k] = append(list[:i], list[i+1:]...)
					break
				}
			}
			if len(w.chans[k]) == 0 {
				delete(w.chans, k)
			}
		}
	}
}

// count returns the open waits and the peak since the last count, and
// starts the next peak from now.
func (w *waiters) count() (now, peak int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now, peak = w.n, w.peak
	w.peak = w.n
	return now, peak
}

// drain wakes every wait and makes the later ones wake at once.
func (w *waiters) drain() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.draining = true
	for _, list := range w.chans {
		for _, ch := range list {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

// stopping reports whether drain was called.
func (w *waiters) stopping() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.draining
}

func (w *waiters) wake(keys []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, k := range keys {
		for _, ch := range w.chans[k] {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}
