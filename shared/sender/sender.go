// Package sender sends this server's PDUs and EDUs to other servers.
//
// Every local event appended to a room goes into a durable outbox for each
// server with a joined member in the room (one partition per destination in
// the table, entries numbered by a counter), and a job naming the
// destination goes onto the federation queue. The job's worker takes the
// destination's lease, forms transactions of at most 50 PDUs and 100 EDUs
// from the head of the outbox, fixes each transaction's ID before it is sent
// so that retries reuse it, and sends them one after another through
// PUT /_matrix/federation/v1/send/{txnId}.
//
// A destination that fails is backed off in the table, as Synapse does:
// 10 minutes, doubled on each failure up to a week, with jitter. Jobs that
// find it backing off do nothing but make sure one delayed wake-up message
// is queued for its time. When it answers again, the outbox is caught up:
// the newest 50 PDUs of each room are sent, in order (every one after a
// short outage), and the destination fetches any older gap with
// /get_missing_events, as it does for any event whose prev_events it lacks.
//
// In Lambda the queue is SQS and the sender function runs the jobs;
// `cirrus serve` runs the same jobs from its in-process queue.
package sender

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/fclient"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Kind is the queue message kind of a send job.
const Kind = "federation.send"

// Limits of one transaction, from the spec's PUT /send.
const (
	MaxPDUs = 50
	MaxEDUs = 100
)

// Backoff defaults: Synapse's destination_min_retry_interval,
// destination_retry_multiplier and destination_max_retry_interval.
const (
	DefaultMinRetry   = 10 * time.Minute
	DefaultMultiplier = 2
	DefaultMaxRetry   = 7 * 24 * time.Hour
)

// Jitter bounds: each backoff is its interval times a factor drawn between
// them, as Synapse draws it, so that servers that failed together do not
// retry together.
const (
	jitterMin = 0.8
	jitterMax = 1.4
)

// lease is how long a worker holds a destination: beyond one /send (60 s)
// and within the queue's visibility timeout, so that the job of a worker
// that died finds the lease free when it comes back.
const lease = 2 * time.Minute

// Queue is where jobs go: *queue.Queue.
type Queue interface {
	Send(ctx context.Context, kind string, body []byte) error
	SendAfter(ctx context.Context, kind string, body []byte, delay time.Duration) error
}

// Sender sends PDUs and EDUs to other servers. Set the fields, then hook
// Appended into rooms.Service.Appended and register Handle as the queue's
// Kind.
type Sender struct {
	Store      *store.Store
	ServerName string
	// Members reads a room's current member events (rooms.Service.Members).
	Members func(ctx context.Context, roomID string) ([]events.PDU, error)
	// ServerACL reads what the room's server ACL allows
	// (federation.Service.ACLFilter): a denied server is sent none of the
	// room's events. Nil allows every server.
	ServerACL func(ctx context.Context, roomID string) (func(serverName string) bool, error)
	// Client sends the transactions (fedclient.Client.Federation).
	Client fclient.FederationClient
	// Queue returns the federation queue; nil, or a nil result, sends
	// nothing (a deployment without federation queue).
	Queue func() Queue
	// Logger gets a line per failed transaction; nil means slog.Default().
	Logger *slog.Logger

	// MinRetry, Multiplier and MaxRetry shape the backoff; zero means the
	// defaults.
	MinRetry   time.Duration
	Multiplier float64
	MaxRetry   time.Duration
	// Now is the clock of leases and backoff; time.Now when nil.
	Now func() time.Time
	// Jitter returns a number in [0, 1); rand.Float64 when nil.
	Jitter func() float64

	joined joinedCache
}

// joinedCache keeps, per room, the servers with a joined member under the
// state snapshot they were read at (rooms.Appended.StateSeq), so that the
// messages of a room whose state did not change read no member events.
// A state event moves the snapshot, here or on any instance, and the next
// append carries the new position: the servers are read again.
type joinedCache struct {
	mu    sync.Mutex
	rooms map[string]joinedServers
}

type joinedServers struct {
	stateSeq int64
	servers  []string
}

// maxCachedRooms bounds the cache; past it, it starts again empty.
const maxCachedRooms = 4096

func (c *joinedCache) get(roomID string, stateSeq int64) ([]string, bool) {
	if stateSeq == 0 {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	j, ok := c.rooms[roomID]
	return j.servers, ok && j.stateSeq == stateSeq
}

func (c *joinedCache) put(roomID string, stateSeq int64, servers []string) {
	if stateSeq == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rooms == nil || len(c.rooms) >= maxCachedRooms {
		c.rooms = map[string]joinedServers{}
	}
	c.rooms[roomID] = joinedServers{stateSeq: stateSeq, servers: servers}
}

// job is a queue message: send what the destination's outbox holds.
type job struct {
	Destination string `json:"destination"`
	// WakeAt is set on a wake-up message: the RetryAt (Unix ms) it was
	// queued for.
	WakeAt int64 `json:"wake_at,omitempty"`
}

// Appended enqueues this server's events among evs for every other server
// with a joined member in their rooms: the rooms.Service.Appended hook.
// Events from other servers are theirs to send, never re-sent.
//
// It reads a room's member events (one query of the room's member state)
// when the room's state moved since it last did (joinedCache); the messages
// of a room whose state stands still read nothing.
func (s *Sender) Appended(ctx context.Context, evs []rooms.Appended) error {
	q := s.queue()
	if q == nil {
		return nil
	}
	var order []string
	byRoom := map[string][]rooms.Appended{}
	for _, a := range evs {
		if serverOf(events.Sender(a.Event)) != s.ServerName {
			continue
		}
		if _, ok := byRoom[a.RoomID]; !ok {
			order = append(order, a.RoomID)
		}
		byRoom[a.RoomID] = append(byRoom[a.RoomID], a)
	}
	var errs []error
	for _, roomID := range order {
		if err := s.enqueueRoom(ctx, q, roomID, byRoom[roomID]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *Sender) enqueueRoom(ctx context.Context, q Queue, roomID string, evs []rooms.Appended) error {
	dests, err := s.destinations(ctx, roomID, evs)
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range dests {
		entries := make([]entry, 0, len(evs))
		for _, a := range evs {
			entries = append(entries, entry{Room: roomID, RoomSeq: a.Seq, PDU: string(a.Event.JSON())})
		}
		if err := s.enqueue(ctx, q, d, entries); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// destinations lists the servers, other than this one, with a joined member
// in the room after evs, the servers in a room joined with partial state
// (rooms.Appended.Servers), and the servers of remote users evs make leave
// (a kick or ban reaches the server it concerns), sorted: those the room's
// server ACL allows.
func (s *Sender) destinations(ctx context.Context, roomID string, evs []rooms.Appended) ([]string, error) {
	joined, err := s.joinedServers(ctx, roomID, evs)
	if err != nil {
		return nil, err
	}
	set := map[string]bool{}
	for _, srv := range joined {
		set[srv] = true
	}
	var allows func(string) bool
	for _, a := range evs {
		// A room joined with partial state: the servers in it that its
		// member state does not show yet.
		for _, srv := range a.Servers {
			if !set[srv] {
				if allows == nil {
					if allows, err = s.aclFilter(ctx, roomID); err != nil {
						return nil, err
					}
				}
				if allows(srv) {
					set[srv] = true
				}
			}
		}
		// Invites go by PUT /invite, not here.
		if ms, _ := a.Event.Membership(); a.Event.Type() == events.Member && (ms == "leave" || ms == "ban") && a.Event.StateKey() != nil {
			srv := serverOf(*a.Event.StateKey())
			if srv == s.ServerName {
				continue
			}
			if allows == nil {
				if allows, err = s.aclFilter(ctx, roomID); err != nil {
					return nil, err
				}
			}
			if allows(srv) {
				set[srv] = true
			}
		}
	}
	delete(set, s.ServerName)
	delete(set, "")
	out := make([]string, 0, len(set))
	for d := range set {
		out = append(out, d)
	}
	slices.Sort(out)
	return out, nil
}

// joinedServers lists the servers with a joined member in the room's
// current state that its server ACL allows: from the cache when every
// event of evs carries the state snapshot the cache holds (an ACL change
// moves the snapshot), else from the room's member events (membersAfter)
// and, when other servers have members, its ACL (one Query, one GetItem).
func (s *Sender) joinedServers(ctx context.Context, roomID string, evs []rooms.Appended) ([]string, error) {
	seq := evs[0].StateSeq
	for _, a := range evs[1:] {
		if a.StateSeq != seq {
			seq = 0
		}
	}
	if servers, ok := s.joined.get(roomID, seq); ok {
		return servers, nil
	}
	members, err := membersAfter(ctx, s.Members, roomID, evs)
	if err != nil {
		return nil, fmt.Errorf("destinations of %s: %w", roomID, err)
	}
	set := map[string]bool{}
	remote := false
	for _, m := range members {
		if ms, _ := m.Membership(); ms == "join" && m.StateKey() != nil {
			srv := serverOf(*m.StateKey())
			set[srv] = true
			remote = remote || srv != s.ServerName
		}
	}
	if remote {
		// A room of this server's users alone reads no ACL.
		allows, err := s.aclFilter(ctx, roomID)
		if err != nil {
			return nil, err
		}
		for srv := range set {
			if srv != s.ServerName && !allows(srv) {
				delete(set, srv)
			}
		}
	}
	servers := make([]string, 0, len(set))
	for srv := range set {
		servers = append(servers, srv)
	}
	// A room joined with partial state gains members under the same
	// snapshot once its state is loaded: nothing is kept of it meanwhile.
	if !slices.ContainsFunc(evs, func(a rooms.Appended) bool { return a.Servers != nil }) {
		s.joined.put(roomID, seq, servers)
	}
	return servers, nil
}

// membersAfter reads the room's member events after evs: those the join
// that took the room in carries (rooms.Appended.Members), else the room's
// member state (one Query).
func membersAfter(ctx context.Context, read func(context.Context, string) ([]events.PDU, error), roomID string, evs []rooms.Appended) ([]events.PDU, error) {
	if last := evs[len(evs)-1]; last.Members != nil {
		return last.Members, nil
	}
	return read(ctx, roomID)
}

// aclFilter is what the room's server ACL allows.
func (s *Sender) aclFilter(ctx context.Context, roomID string) (func(string) bool, error) {
	if s.ServerACL == nil {
		return func(string) bool { return true }, nil
	}
	allows, err := s.ServerACL(ctx, roomID)
	if err != nil {
		return nil, fmt.Errorf("server ACL of %s: %w", roomID, err)
	}
	return allows, nil
}

// SendEDU enqueues an EDU of eduType for each destination: typing, receipts,
// device list updates and to-device messages as they come to federation.
func (s *Sender) SendEDU(ctx context.Context, destinations []string, eduType string, content json.RawMessage) error {
	q := s.queue()
	if q == nil {
		return nil
	}
	doc, err := json.Marshal(map[string]any{"edu_type": eduType, "content": content})
	if err != nil {
		return fmt.Errorf("send %s EDU: %w", eduType, err)
	}
	var errs []error
	for _, d := range destinations {
		if d == s.ServerName || d == "" {
			continue
		}
		if err := s.enqueue(ctx, q, d, []entry{{EDU: string(doc)}}); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// enqueue numbers entries with the destination's counter, writes them to
// its outbox and queues a job for it. The outbox is written first: a job
// that runs finds them there.
func (s *Sender) enqueue(ctx context.Context, q Queue, destination string, entries []entry) error {
	pk := partition(destination)
	expires := s.now().Add(entryTTL).Unix()
	items := make([]any, 0, len(entries))
	for _, e := range entries {
		e.Expires = expires
		seq, err := s.Store.Increment(ctx, store.Key{PK: pk, SK: counterSK}, counterAttr, time.Time{})
		if err != nil {
			return fmt.Errorf("enqueue for %s: %w", destination, err)
		}
		e.PK, e.SK = pk, entrySK(seq)
		items = append(items, e)
	}
	if err := s.Store.PutMany(ctx, items); err != nil {
		return fmt.Errorf("enqueue for %s: %w", destination, err)
	}
	return s.queueJob(ctx, q, job{Destination: destination}, 0)
}

func (s *Sender) queueJob(ctx context.Context, q Queue, j job, delay time.Duration) error {
	body, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("queue job for %s: %w", j.Destination, err)
	}
	if delay > 0 {
		return q.SendAfter(ctx, Kind, body, delay)
	}
	return q.Send(ctx, Kind, body)
}

func (s *Sender) queue() Queue {
	if s.Queue == nil {
		return nil
	}
	return s.Queue()
}

func (s *Sender) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Sender) jitter() float64 {
	if s.Jitter != nil {
		return s.Jitter()
	}
	return rand.Float64()
}

func (s *Sender) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// serverOf is the server name of a user ID (after the first colon).
func serverOf(userID string) string {
	_, server, ok := strings.Cut(userID, ":")
	if !ok {
		return ""
	}
	return server
}
