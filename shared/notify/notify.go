// Package notify tells users' pushers of the events that notify them: the
// client-server API's push module and the push gateway API
// (https://spec.matrix.org/v1.19/push-gateway-api/).
//
// Nothing of it runs in the request that sends an event. The append hook
// (Service.Appended) only puts one "push" job on the queue, naming the new
// events and their local recipients; the queue worker (Service.Handle)
// reads each recipient's pushers, evaluates their push rules on the event
// and POSTs a notification to the push gateway of each notifying http
// pusher. A gateway that fails (no answer, 5xx or 429) is tried again by a
// "push-retry" job with exponential backoff, for each pusher apart.
//
// Email pushers are not sent to here: Service.Notified is told of each
// (user, pusher) of kind "email" the event notifies, for the notification
// mail to pick up.
package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	gosync "sync"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/push"
	"github.com/cirrus-matrix/cirrus/shared/queue"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/unread"
)

// Job kinds of this package.
const (
	// Kind is the job the append hook queues: events and the local users
	// to evaluate them for (job).
	Kind = "push"
	// RetryKind is one notification to one pusher whose gateway failed,
	// sent again after a delay (retryJob).
	RetryKind = "push-retry"
)

// Backoff of a failing gateway, as Synapse's HttpPusher: 1 s doubling up
// to an hour, given up after a day of failures.
const (
	DefaultMinRetry    = time.Second
	DefaultMaxRetry    = time.Hour
	DefaultGiveUpAfter = 24 * time.Hour
)

// maxAttempts bounds the tries of one notification whatever the clock
// says: a day of the default backoff is about 35.
const maxAttempts = 64

// pushersFor is how long a user's pushers are reused in this process. The
// worker reads the pushers of every local recipient of every event, most
// of whom have none; in an active room the same users come back within
// seconds. A pusher set or removed in another process is seen at most this
// late: a phone registered a moment ago may miss its first pushes, and a
// removed one may get a few more (which its gateway rejects).
const pushersFor = 30 * time.Second

// Queue is where jobs go: *queue.Queue.
type Queue interface {
	Send(ctx context.Context, kind string, body []byte) error
	SendAfter(ctx context.Context, kind string, body []byte, delay time.Duration) error
}

var _ Queue = (*queue.Queue)(nil)

// Service queues and delivers push notifications.
type Service struct {
	Rooms  *rooms.Service
	Push   *push.Service
	Unread *unread.Service
	// Queue returns the queue jobs go to, read when a job is sent because
	// the queue is set after the server is built; nil (or a nil Queue)
	// sends nothing: no pushes.
	Queue func() Queue
	// Client posts to push gateways: NewClient's, whose dialer keeps to
	// the ip_range_blacklist and ip_range_whitelist; tests give an
	// httptest server's. Nil is http.DefaultClient, with no address filter.
	Client *http.Client
	// Notified is called for each (user, pusher of kind "email") that an
	// event notifies, once the user's push rules say it notifies them:
	// userID is the user, p their pusher (p.Kind == "email", p.PushKey the
	// address), roomID the room, event the event as stored (PDU JSON:
	// type, sender, content, room_id, event_id ...), o what the matching
	// rule asks (o.Notify is true; o.Highlight, o.Actions for tweaks). It
	// runs in the "push" job, after the job's reads and before its http
	// deliveries; an error fails the job, which the queue runs again (so it
	// must tolerate seeing an event twice). Nil does nothing.
	Notified func(ctx context.Context, userID string, p push.Stored, roomID string, event json.RawMessage, o push.Outcome) error
	// Ignored lists the users userID ignores (m.ignored_user_list), whose
	// events other than state notify them of nothing, as in Synapse; nil
	// ignores no one.
	Ignored func(ctx context.Context, userID string) (map[string]bool, error)
	// MinRetry, MaxRetry and GiveUpAfter shape the backoff of a failing
	// gateway; zero means the Default values.
	MinRetry, MaxRetry, GiveUpAfter time.Duration
	// Logger gets a line per notification given up or dropped; nil is
	// slog.Default().
	Logger *slog.Logger
	// Now is the clock; nil is time.Now.
	Now func() time.Time

	mu      gosync.Mutex
	pushers map[string]cachedPushers
}

type cachedPushers struct {
	list []push.Stored
	at   time.Time
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Service) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

func (s *Service) queue() Queue {
	if s.Queue == nil {
		return nil
	}
	return s.Queue()
}

// job is the body of a "push" message.
type job struct {
	Events []jobEvent `json:"events"`
}

// jobEvent is one appended event and the local users other than its
// sender whose rules decide whether it notifies them.
type jobEvent struct {
	RoomID  string   `json:"room_id"`
	EventID string   `json:"event_id"`
	Seq     int64    `json:"seq"`
	To      []string `json:"to"`
}

// maxJobBytes keeps a job well under queue.MaxMessageSize; a batch with
// more recipients goes in several jobs.
const maxJobBytes = 192 * 1024

// Appended queues a "push" job for the events of evs that have a local
// recipient other than their sender: the rooms.Service.Appended hook. It
// reads nothing from the table, so a send costs no more than before; one
// SQS message per batch (more only for a batch too large for one).
func (s *Service) Appended(ctx context.Context, evs []rooms.Appended) error {
	q := s.queue()
	if q == nil {
		return nil
	}
	var all []jobEvent
	for _, a := range evs {
		if a.Event == nil {
			continue
		}
		sender := events.Sender(a.Event)
		var to []string
		for _, u := range a.To {
			if u != sender && !slices.Contains(to, u) {
				to = append(to, u)
			}
		}
		if len(to) > 0 {
			all = append(all, jobEvent{RoomID: a.RoomID, EventID: a.Event.EventID(), Seq: a.Seq, To: to})
		}
	}
	var errs []error
	for _, j := range split(all, maxJobBytes) {
		body, err := json.Marshal(j)
		if err != nil {
			return fmt.Errorf("encode push job: %w", err)
		}
		if err := q.Send(ctx, Kind, body); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// split packs events into jobs of at most about limit bytes, cutting the
// recipients of an event into several jobs when they alone are too many.
func split(evs []jobEvent, limit int) []job {
	const overhead = 64 // the JSON around an event's IDs and recipients
	var out []job
	var cur job
	size := 0
	flush := func() {
		if len(cur.Events) > 0 {
			out = append(out, cur)
		}
		cur, size = job{}, 0
	}
	for _, e := range evs {
		base := overhead + len(e.RoomID) + len(e.EventID)
		if size+base > limit {
			flush()
		}
		part := jobEvent{RoomID: e.RoomID, EventID: e.EventID, Seq: e.Seq}
		size += base
		for _, u := range e.To {
			if size+len(u)+3 > limit && len(part.To) > 0 {
				cur.Events = append(cur.Events, part)
				flush()
				part.To, size = nil, base
			}
			part.To = append(part.To, u)
			size += len(u) + 3
		}
		cur.Events = append(cur.Events, part)
	}
	flush()
	return out
}

// Handle runs a "push" job: for each event and recipient, the recipient's
// pushers and push rules, then a notification to each notifying pusher's
// gateway, all gateways at once. Gateways that fail get a "push-retry" job
// each; only a failure to read the table, to queue a retry or of Notified
// fails the job.
func (s *Service) Handle(ctx context.Context, body []byte) error {
	var j job
	if err := json.Unmarshal(body, &j); err != nil {
		return fmt.Errorf("decode push job: %w", err)
	}
	w := &work{s: s, badges: map[string]int{}}
	var errs []error
	for _, e := range j.Events {
		if err := w.event(ctx, e); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, s.deliverAll(ctx, w.out))
	return errors.Join(errs...)
}

// work is what one job builds: the deliveries, and what it read once for
// many of them.
type work struct {
	s      *Service
	out    []delivery
	badges map[string]int
}

// event evaluates the recipients' rules on one event and adds the
// deliveries it asks for.
func (w *work) event(ctx context.Context, e jobEvent) error {
	s := w.s
	ev, err := s.Rooms.Event(ctx, e.RoomID, e.EventID)
	if errors.Is(err, rooms.ErrUnknownEvent) {
		return nil // gone (purged) or never timeline: nothing to notify of
	}
	if err != nil {
		return fmt.Errorf("push %s: %w", e.EventID, err)
	}
	raw := json.RawMessage(ev.PDU.JSON())
	sender := events.Sender(ev.PDU)
	var room *roomFacts
	for _, userID := range e.To {
		pushers, err := s.pushersOf(ctx, userID)
		if err != nil {
			return err
		}
		if len(pushers) == 0 {
			continue
		}
		if s.Ignored != nil && ev.PDU.StateKey() == nil {
			ignored, err := s.Ignored(ctx, userID)
			if err != nil {
				return err
			}
			if ignored[sender] {
				continue
			}
		}
		rules, err := s.Unread.Rules(ctx, userID)
		if err != nil {
			return err
		}
		ec, err := s.Unread.Context(ctx, userID, e.RoomID, raw)
		if err != nil {
			return err
		}
		o := rules.Evaluate(raw, ec)
		if !o.Notify {
			continue
		}
		for _, p := range pushers {
			switch p.Kind {
			case "email":
				if s.Notified != nil {
					if err := s.Notified(ctx, userID, p, e.RoomID, raw, o); err != nil {
						return fmt.Errorf("notified hook: %w", err)
					}
				}
			case "http":
				if room == nil {
					if room, err = s.factsOf(ctx, e.RoomID, sender); err != nil {
						return err
					}
				}
				badge, err := w.badge(ctx, userID)
				if err != nil {
					return err
				}
				d, err := newDelivery(userID, e.RoomID, p, ev.PDU, room, o, badge)
				if err != nil {
					s.logger().LogAttrs(ctx, slog.LevelWarn, "push: pusher unusable",
						slog.String("user_id", userID), slog.String("app_id", p.AppID), slog.Any("error", err))
					continue
				}
				w.out = append(w.out, d)
			}
		}
	}
	return nil
}

// badge is the user's unread count, read once per job: all of the job's
// events are stored when it runs, so one count covers them.
func (w *work) badge(ctx context.Context, userID string) (int, error) {
	if n, ok := w.badges[userID]; ok {
		return n, nil
	}
	n, err := w.s.Badge(ctx, userID)
	if err != nil {
		return 0, err
	}
	w.badges[userID] = n
	return n, nil
}

// pushersOf reads the user's pushers, kept pushersFor in this process.
func (s *Service) pushersOf(ctx context.Context, userID string) ([]push.Stored, error) {
	s.mu.Lock()
	c, ok := s.pushers[userID]
	s.mu.Unlock()
	if ok && s.now().Sub(c.at) < pushersFor {
		return c.list, nil
	}
	list, err := s.Push.Pushers(ctx, userID)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pushers == nil || len(s.pushers) > 10000 {
		s.pushers = map[string]cachedPushers{}
	}
	s.pushers[userID] = cachedPushers{list: list, at: s.now()}
	return list, nil
}

// forget drops the user's cached pushers, after this process changed them.
func (s *Service) forget(userID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pushers, userID)
}

// roomFacts are what a full notification says of the room and sender.
type roomFacts struct {
	name, alias, senderName string
}

// factsOf reads the room's name and alias (its summary: one read) and the
// sender's display name in it (their member event: one read).
func (s *Service) factsOf(ctx context.Context, roomID, sender string) (*roomFacts, error) {
	info, err := s.Rooms.Info(ctx, roomID)
	if err != nil {
		return nil, fmt.Errorf("push: room %s: %w", roomID, err)
	}
	f := &roomFacts{name: info.Name, alias: info.Alias}
	member, err := s.Rooms.StateEvent(ctx, roomID, events.Member, sender)
	if err != nil && !errors.Is(err, rooms.ErrUnknownEvent) {
		return nil, err
	}
	if member != nil {
		var m struct {
			DisplayName string `json:"displayname"`
		}
		_ = json.Unmarshal(member.Content(), &m)
		f.senderName = m.DisplayName
	}
	return f, nil
}

// Badge is the user's unread count as Synapse counts it by default
// (push.group_unread_count_by_room): the rooms they are invited to, and the
// joined rooms with at least one unread notification (unread.Count). It
// reads the user's memberships (one query) and counts each joined room:
// a read room costs its receipts and one empty page, an unread one its
// summary and state for the rules as well.
func (s *Service) Badge(ctx context.Context, userID string) (int, error) {
	ms, err := s.Rooms.Memberships(ctx, userID)
	if err != nil {
		return 0, err
	}
	var n int
	var joined []string
	for _, m := range ms {
		switch m.Membership {
		case "invite":
			n++
		case "join":
			joined = append(joined, m.RoomID)
		}
	}
	unreadIn := make([]bool, len(joined))
	errs := make([]error, len(joined))
	var wg gosync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, roomID := range joined {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			c, _, err := s.Unread.Count(ctx, userID, roomID, false)
			unreadIn[i], errs[i] = c.Notifications > 0, err
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, fmt.Errorf("badge of %s: %w", userID, err)
	}
	for _, u := range unreadIn {
		if u {
			n++
		}
	}
	return n, nil
}
