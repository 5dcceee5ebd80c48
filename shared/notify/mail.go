package notify

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/mail"
	"github.com/cirrus-matrix/cirrus/shared/push"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/store"
	"github.com/cirrus-matrix/cirrus/shared/unread"
)

// Notification mail, Synapse's email pushers without a process that waits:
// the first notification of a user's email pusher writes a pending item and
// queues one delayed job (MailKind); when it runs, the job mails what is
// still unread, so a read receipt in between cancels the mail, and a burst
// of messages makes one job and one mail.
//
// Storage (docs/storage.md, "Notification mail"), in the user's partition:
//   - (user|<user ID>, notifmail|pending): a mail is queued; written with a
//     conditional put (absent or expired), deleted when the job starts, with
//     a TTL that frees the user should the job be lost;
//   - (user|<user ID>, notifmail): the newest notification mailed so far,
//     which the next mail starts after.

// MailKind is the queue job kind of a notification mail.
const MailKind = "notif-mail"

const (
	// mailedMax bounds the notifications read for one mail.
	mailedMax = 100
	// perRoomShown bounds the messages a mail shows of one room.
	perRoomShown = 10
	// bodyChars bounds the text shown of one message.
	bodyChars = 300
	// pendingGrace is how long after its due time a pending item still
	// holds back a new job: the job's retries fit in it, and a job lost for
	// good frees the user after it.
	pendingGrace = time.Hour
	pendingSK    = "notifmail|pending"
	mailedSK     = "notifmail"
)

// Delayer queues a job that becomes visible after a delay (queue.Queue).
type Delayer interface {
	SendAfter(ctx context.Context, kind string, body []byte, delay time.Duration) error
}

// Mailer sends notification mail to users' email pushers.
type Mailer struct {
	Store     *store.Store
	Unread    *unread.Service
	Rooms     *rooms.Service
	Push      *push.Service
	Templates *mail.Templates
	// Mail and Queue are read when a mail is sent and a job queued: they
	// are set after the server is built (Lambda, `cirrus serve`); nil
	// means none.
	Mail  func() mail.Sender
	Queue func() Delayer
	// Delay is how long a notification stays unread before it is mailed
	// (email.notif_delay_before_mail).
	Delay time.Duration
	// AppName names the service in the mail (email.app_name).
	AppName string
	// ClientURL is the web client the mail links rooms to
	// (email.client_base_url, else web_client_location); empty, no links.
	ClientURL string
	// BaseURL is the server's public base URL, where the unsubscribe link
	// leads.
	BaseURL string
	// Key signs unsubscribe links (UnsubscribeKey).
	Key []byte
	// Logger gets one line per job; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

type pendingItem struct {
	PK      string `dynamodbav:"pk"`
	SK      string `dynamodbav:"sk"`
	DueMS   int64  `dynamodbav:"due_ms"`
	Expires int64  `dynamodbav:"expires_at"`
}

type mailedItem struct {
	PK string `dynamodbav:"pk"`
	SK string `dynamodbav:"sk"`
	// ThroughTS is the origin_server_ts of the newest notification mailed.
	ThroughTS int64 `dynamodbav:"through_ts"`
	// MailedTS is when the last mail was sent, in Unix ms.
	MailedTS int64 `dynamodbav:"mailed_ts"`
}

// mailJob is the body of a MailKind job.
type mailJob struct {
	UserID string `json:"user_id"`
	// DueMS is when the mail is due, Unix ms: a job that comes earlier
	// (delays over queue.MaxDelay) queues itself again.
	DueMS int64 `json:"due_ms"`
}

func userPK(userID string) string { return "user|" + userID }

func (m *Mailer) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

func (m *Mailer) logger() *slog.Logger {
	if m.Logger != nil {
		return m.Logger
	}
	return slog.Default()
}

// Notified is told of each notification of a user's email pusher: the push
// worker's hook (Service.Notified). It queues a mail unless one is already
// pending: one conditional write, and a queue message only for the first
// notification of a burst. The job reads what to mail when it runs, so
// the pusher, room and event are not kept.
func (m *Mailer) Notified(ctx context.Context, userID string, _ push.Stored, _ string, _ json.RawMessage, _ push.Outcome) error {
	due := m.now().Add(m.Delay)
	k := store.Key{PK: userPK(userID), SK: pendingSK}
	err := m.Store.Create(ctx, pendingItem{PK: k.PK, SK: k.SK, DueMS: due.UnixMilli(), Expires: due.Add(pendingGrace).Unix()})
	if errors.Is(err, store.ErrExists) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("notification mail: %w", err)
	}
	if err := m.schedule(ctx, mailJob{UserID: userID, DueMS: due.UnixMilli()}); err != nil {
		// Without its job the pending item would hold back every mail
		// until it expires: the next notification tries again instead.
		if derr := m.Store.Delete(ctx, k); derr != nil {
			return errors.Join(err, derr)
		}
		return err
	}
	return nil
}

// schedule queues job for its due time, or queue.MaxDelay from now if that
// is sooner (the job then queues itself again).
func (m *Mailer) schedule(ctx context.Context, job mailJob) error {
	var q Delayer
	if m.Queue != nil {
		q = m.Queue()
	}
	if q == nil {
		return errors.New("notification mail: no queue")
	}
	body, err := json.Marshal(job)
	if err != nil {
		return fmt.Errorf("notification mail: %w", err)
	}
	if err := q.SendAfter(ctx, MailKind, body, time.UnixMilli(job.DueMS).Sub(m.now())); err != nil {
		return fmt.Errorf("notification mail: %w", err)
	}
	return nil
}

// HandleMail runs a MailKind job: it mails the user's notifications that are
// still unread and newer than the last mail, to each of their email
// pushers, or nothing when none remain.
func (m *Mailer) HandleMail(ctx context.Context, body []byte) error {
	var job mailJob
	if err := json.Unmarshal(body, &job); err != nil || job.UserID == "" {
		return fmt.Errorf("notification mail: bad job %q", body)
	}
	if time.UnixMilli(job.DueMS).After(m.now()) {
		return m.schedule(ctx, job)
	}
	// The pending item goes first: a notification from now on queues a
	// new job, which starts after what this one mails.
	if err := m.Store.Delete(ctx, store.Key{PK: userPK(job.UserID), SK: pendingSK}); err != nil {
		return fmt.Errorf("notification mail: %w", err)
	}
	outcome, err := m.mail(ctx, job.UserID)
	if err != nil {
		return fmt.Errorf("notification mail of %s: %w", job.UserID, err)
	}
	m.logger().LogAttrs(ctx, slog.LevelInfo, "notification mail",
		slog.String("user_id", job.UserID), slog.String("outcome", outcome))
	return nil
}

// Outcomes of a job, in its log line.
const (
	outcomeSent       = "sent"
	outcomeNoneUnread = "nothing unread"
	outcomeNoPusher   = "no email pusher"
	outcomeSuppressed = "suppressed"
	outcomeNoSender   = "no mail sender"
)

func (m *Mailer) mail(ctx context.Context, userID string) (string, error) {
	mk := store.Key{PK: userPK(userID), SK: mailedSK}
	var last mailedItem
	if err := m.Store.Get(ctx, mk, &last); err != nil && !errors.Is(err, store.ErrNotFound) {
		return "", err
	}
	list, _, err := m.Unread.Notifications(ctx, userID, "", mailedMax, "")
	if err != nil {
		return "", err
	}
	list = slices.DeleteFunc(list, func(n unread.Notification) bool { return n.Read || n.TS <= last.ThroughTS })
	if len(list) == 0 {
		return outcomeNoneUnread, nil
	}
	pushers, err := m.Push.Pushers(ctx, userID)
	if err != nil {
		return "", err
	}
	pushers = slices.DeleteFunc(pushers, func(p push.Stored) bool { return p.Kind != push.EmailKind || p.AppID != push.EmailAppID })
	if len(pushers) == 0 {
		return outcomeNoPusher, nil
	}
	var sender mail.Sender
	if m.Mail != nil {
		sender = m.Mail()
	}
	if sender == nil {
		return outcomeNoSender, nil
	}
	content, err := m.summarise(ctx, userID, list)
	if err != nil {
		return "", err
	}
	outcome := outcomeSuppressed
	for _, p := range pushers {
		sent, err := m.send(ctx, sender, userID, p.PushKey, content)
		if err != nil {
			return "", err
		}
		if sent {
			outcome = outcomeSent
		}
	}
	through := slices.MaxFunc(list, func(a, b unread.Notification) int { return cmp.Compare(a.TS, b.TS) }).TS
	if err := m.Store.Put(ctx, mailedItem{PK: mk.PK, SK: mk.SK, ThroughTS: through, MailedTS: m.now().UnixMilli()}); err != nil {
		return "", err
	}
	return outcome, nil
}

// send mails content to address. An address on the suppression list
// (bounced for good or complained) gets nothing: the server's sender
// refuses it with mail.ErrSuppressed (server.SetMail).
func (m *Mailer) send(ctx context.Context, sender mail.Sender, userID, address string, content mailContent) (bool, error) {
	content.Unsubscribe = m.unsubscribeURL(userID, push.EmailAppID, address)
	msg, err := m.Templates.Mail("notif_mail", address, content)
	if err != nil {
		return false, err
	}
	msg.Headers = listUnsubscribe(content.Unsubscribe)
	if err := sender.Send(ctx, msg); err != nil {
		if errors.Is(err, mail.ErrSuppressed) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// mailContent is what the notif_mail templates are given.
type mailContent struct {
	// App is email.app_name.
	App string
	// Subject is the subject line after "[App] ".
	Subject string
	// User is the recipient's display name, else their user ID.
	User string
	// Count is how many notifications the mail holds.
	Count int
	Rooms []mailRoom
	// Unsubscribe is the link that removes the email pusher.
	Unsubscribe string
}

type mailRoom struct {
	Name string
	// Link opens the room in the web client; empty without one.
	Link     string
	Messages []mailMessage
	// More is how many notifications of the room the mail leaves out.
	More int
}

type mailMessage struct {
	Sender string
	// Said is true when Text is what the sender wrote, false when it
	// describes what they did ("sent an image").
	Said bool
	Text string
}

// clientEvent is what a mail shows of an event.
type clientEvent struct {
	Type    string          `json:"type"`
	Sender  string          `json:"sender"`
	Content json.RawMessage `json:"content"`
}

// summarise groups the notifications by room, newest room first, each
// room's messages oldest first, with room names and senders' display
// names: per room one GetItem and one BatchGetItem.
func (m *Mailer) summarise(ctx context.Context, userID string, list []unread.Notification) (mailContent, error) {
	byRoom := map[string][]unread.Notification{}
	var order []string
	for _, n := range list { // newest first
		if _, ok := byRoom[n.RoomID]; !ok {
			order = append(order, n.RoomID)
		}
		byRoom[n.RoomID] = append(byRoom[n.RoomID], n)
	}
	c := mailContent{App: m.AppName, User: userID, Count: len(list)}
	if m.Rooms.Profile != nil {
		if name, _ := m.Rooms.Profile(ctx, userID); name != "" {
			c.User = oneLine(name)
		}
	}
	var senders []string
	for _, roomID := range order {
		ns := byRoom[roomID]
		slices.Reverse(ns)
		shown := ns[max(0, len(ns)-perRoomShown):]
		evs := make([]clientEvent, len(shown))
		var tuples []events.StateKeyTuple
		for i, n := range shown {
			_ = json.Unmarshal(n.Event, &evs[i]) // events this server serves
			t := events.StateKeyTuple{Type: events.Member, StateKey: evs[i].Sender}
			if !slices.Contains(tuples, t) {
				tuples = append(tuples, t)
			}
		}
		names, err := m.memberNames(ctx, roomID, tuples)
		if err != nil {
			return mailContent{}, err
		}
		room := mailRoom{More: len(ns) - len(shown)}
		for _, ev := range evs {
			name := cmp.Or(names[ev.Sender], ev.Sender)
			if !slices.Contains(senders, name) {
				senders = append(senders, name)
			}
			said, text := describe(ev)
			room.Messages = append(room.Messages, mailMessage{Sender: name, Said: said, Text: text})
		}
		if room.Name, err = m.roomName(ctx, roomID); err != nil {
			return mailContent{}, err
		}
		if m.ClientURL != "" {
			room.Link = strings.TrimRight(m.ClientURL, "/") + "/#/room/" + roomID
		}
		c.Rooms = append(c.Rooms, room)
	}
	c.Subject = subject(c, senders)
	return c, nil
}

// memberNames reads the display names of the senders: one BatchGetItem.
func (m *Mailer) memberNames(ctx context.Context, roomID string, tuples []events.StateKeyTuple) (map[string]string, error) {
	state, err := m.Rooms.StateEvents(ctx, roomID, tuples)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for t, ev := range state {
		var c struct {
			DisplayName string `json:"displayname"`
		}
		if json.Unmarshal(ev.Content(), &c) == nil && c.DisplayName != "" {
			out[t.StateKey] = oneLine(c.DisplayName)
		}
	}
	return out, nil
}

// roomName is the room's name, else its alias, else its room ID.
func (m *Mailer) roomName(ctx context.Context, roomID string) (string, error) {
	info, err := m.Rooms.Info(ctx, roomID)
	if errors.Is(err, rooms.ErrUnknownRoom) {
		return roomID, nil
	}
	if err != nil {
		return "", err
	}
	return oneLine(cmp.Or(info.Name, info.Alias, roomID)), nil
}

// describe tells what an event says: the text of a message, else what its
// sender did. Encrypted events are only said to be encrypted: nothing of
// their ciphertext goes into a mail.
func describe(ev clientEvent) (said bool, text string) {
	var c struct {
		MsgType    string `json:"msgtype"`
		Body       string `json:"body"`
		Membership string `json:"membership"`
	}
	_ = json.Unmarshal(ev.Content, &c)
	switch ev.Type {
	case "m.room.encrypted":
		return false, "sent an encrypted message"
	case "m.sticker":
		return false, "sent a sticker"
	case events.Member:
		if c.Membership == "invite" {
			return false, "invited you to the room"
		}
		return false, "changed their membership"
	case "m.room.message":
	default:
		return false, "sent an event"
	}
	switch c.MsgType {
	case "m.image":
		return false, "sent an image"
	case "m.file":
		return false, "sent a file"
	case "m.video":
		return false, "sent a video"
	case "m.audio":
		return false, "sent an audio file"
	case "m.location":
		return false, "shared a location"
	case "m.emote":
		return false, truncate(c.Body)
	}
	return true, truncate(c.Body)
}

func truncate(s string) string {
	if utf8.RuneCountInString(s) <= bodyChars {
		return s
	}
	r := []rune(s)
	return string(r[:bodyChars]) + "…"
}

// oneLine keeps a name on one line: names go into the subject.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// subject is Synapse's subject line, after "[App] ".
func subject(c mailContent, senders []string) string {
	from := ""
	if len(senders) == 1 {
		from = " from " + senders[0]
	}
	switch {
	case len(c.Rooms) > 1:
		return fmt.Sprintf("You have messages on %s in the %s room and others...", c.App, c.Rooms[0].Name)
	case c.Count == 1:
		return fmt.Sprintf("You have a message on %s%s in the %s room...", c.App, from, c.Rooms[0].Name)
	default:
		return fmt.Sprintf("You have messages on %s%s in the %s room...", c.App, from, c.Rooms[0].Name)
	}
}
