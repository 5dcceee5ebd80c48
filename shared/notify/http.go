package notify

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	gosync "sync"
	"syscall"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/fedclient"
	"github.com/cirrus-matrix/cirrus/shared/push"
)

// DefaultTimeout bounds one request to a push gateway, from dial to the
// end of its answer: a slow gateway holds up only its own deliveries.
const DefaultTimeout = 30 * time.Second

// maxAnswer bounds what is read of a gateway's answer.
const maxAnswer = 64 << 10

// parallel bounds the gateways one job talks to at once.
const parallel = 16

// ClientOptions shape NewClient's client.
type ClientOptions struct {
	// IPRangeBlacklist are the ranges not to connect to; nil means
	// fedclient.DefaultIPRangeBlacklist, as Synapse applies its
	// ip_range_blacklist to push gateways. 0.0.0.0 and :: are always
	// refused.
	IPRangeBlacklist []string
	// IPRangeWhitelist are exceptions to the blacklist.
	IPRangeWhitelist []string
	// Timeout bounds each request; DefaultTimeout when 0.
	Timeout time.Duration
	// TLS is the trust of gateway connections; nil is the system's roots.
	TLS *tls.Config
}

// NewClient returns the client of push gateways: its dialer checks every
// address it connects to against the IP ranges (so no DNS answer reaches a
// refused one), it uses no proxy (which would make the connection in its
// place), follows no redirect and gives up after the timeout.
func NewClient(o ClientOptions) (*http.Client, error) {
	black := o.IPRangeBlacklist
	if black == nil {
		black = fedclient.DefaultIPRangeBlacklist
	}
	deny, err := fedclient.ParseRanges(append(append([]string{}, black...), "0.0.0.0/32", "::/128"))
	if err != nil {
		return nil, fmt.Errorf("ip_range_blacklist: %w", err)
	}
	allow, err := fedclient.ParseRanges(o.IPRangeWhitelist)
	if err != nil {
		return nil, fmt.Errorf("ip_range_whitelist: %w", err)
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	d := &net.Dialer{Timeout: 10 * time.Second, Control: func(network, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("dial %s: %w", address, err)
		}
		ip := ap.Addr().Unmap()
		if !inRanges(allow, ip) && inRanges(deny, ip) {
			return fmt.Errorf("dial %s: %w", address, fedclient.ErrAddressRefused)
		}
		return nil
	}}
	tr := &http.Transport{DialContext: d.DialContext, ForceAttemptHTTP2: true,
		TLSHandshakeTimeout: 10 * time.Second, MaxIdleConnsPerHost: 4, IdleConnTimeout: 90 * time.Second}
	if o.TLS != nil {
		tr.TLSClientConfig = o.TLS.Clone()
	}
	return &http.Client{Transport: tr, Timeout: o.Timeout, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}, nil
}

func inRanges(ranges []netip.Prefix, ip netip.Addr) bool {
	for _, p := range ranges {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// request is the body of POST /_matrix/push/v1/notify.
type request struct {
	Notification notification `json:"notification"`
}

// notification is the push gateway API's Notification. With the pusher's
// data.format "event_id_only" only the event and room IDs, prio, counts
// and devices are set.
type notification struct {
	EventID           string          `json:"event_id"`
	RoomID            string          `json:"room_id"`
	Type              string          `json:"type,omitempty"`
	Sender            string          `json:"sender,omitempty"`
	SenderDisplayName string          `json:"sender_display_name,omitempty"`
	RoomName          string          `json:"room_name,omitempty"`
	RoomAlias         string          `json:"room_alias,omitempty"`
	Membership        string          `json:"membership,omitempty"`
	UserIsTarget      *bool           `json:"user_is_target,omitempty"`
	Prio              string          `json:"prio"`
	Content           json.RawMessage `json:"content,omitempty"`
	Counts            counts          `json:"counts"`
	Devices           []device        `json:"devices"`
}

// counts leaves out zero counts, as the spec asks. Missed calls are not
// counted.
type counts struct {
	Unread int `json:"unread,omitempty"`
}

type device struct {
	AppID     string                     `json:"app_id"`
	PushKey   string                     `json:"pushkey"`
	PushKeyTS int64                      `json:"pushkey_ts"`
	Data      json.RawMessage            `json:"data"`
	Tweaks    map[string]json.RawMessage `json:"tweaks,omitempty"`
}

// delivery is one notification for one pusher.
type delivery struct {
	UserID  string `json:"user_id"`
	AppID   string `json:"app_id"`
	PushKey string `json:"pushkey"`
	URL     string `json:"url"`
	EventID string `json:"event_id"`
	// Body is the request, as POSTed.
	Body json.RawMessage `json:"body"`
}

// newDelivery builds the notification of ev, in roomID, for the user's
// pusher p. prio is "high" when the event is encrypted (its rules could
// not see what it says) or the rule sets a highlight or a sound (mentions,
// one-to-one rooms, calls, invites by the default rules), "low"
// otherwise, as Synapse decides it.
func newDelivery(userID, roomID string, p push.Stored, ev events.PDU, room *roomFacts, o push.Outcome, badge int) (delivery, error) {
	var data map[string]json.RawMessage
	if err := json.Unmarshal(p.Data, &data); err != nil || data == nil {
		return delivery{}, errors.New("pusher data is not an object")
	}
	var gateway, format string
	if err := json.Unmarshal(data["url"], &gateway); err != nil || gateway == "" {
		return delivery{}, errors.New("pusher data has no url")
	}
	if f, ok := data["format"]; ok {
		_ = json.Unmarshal(f, &format)
	}
	delete(data, "url")
	rest, err := json.Marshal(data)
	if err != nil {
		return delivery{}, fmt.Errorf("pusher data: %w", err)
	}
	tweaks := tweaksOf(o.Actions)
	prio := "low"
	if ev.Type() == "m.room.encrypted" || truthy(tweaks["highlight"]) || truthy(tweaks["sound"]) {
		prio = "high"
	}
	dev := device{AppID: p.AppID, PushKey: p.PushKey, PushKeyTS: p.CreatedTS / 1000, Data: rest, Tweaks: tweaks}
	n := notification{EventID: ev.EventID(), RoomID: roomID, Prio: prio, Counts: counts{Unread: badge}}
	if format == "event_id_only" {
		// As Synapse: the gateway only learns that something is new.
		dev.Tweaks = nil
	} else {
		n.Type, n.Sender = ev.Type(), events.Sender(ev)
		n.SenderDisplayName = room.senderName
		n.RoomName, n.RoomAlias = room.name, room.alias
		if n.RoomName == "" {
			n.RoomName = room.alias
		}
		if c := ev.Content(); len(c) > 0 && string(bytes.TrimSpace(c)) != "{}" {
			n.Content = json.RawMessage(c)
		}
		if ev.Type() == events.Member && ev.StateKey() != nil {
			n.Membership, _ = ev.Membership()
			target := *ev.StateKey() == userID
			n.UserIsTarget = &target
		}
	}
	n.Devices = []device{dev}
	body, err := json.Marshal(request{Notification: n})
	if err != nil {
		return delivery{}, fmt.Errorf("encode notification: %w", err)
	}
	return delivery{UserID: userID, AppID: p.AppID, PushKey: p.PushKey, URL: gateway, EventID: ev.EventID(), Body: body}, nil
}

// tweaksOf reads the set_tweak actions; a tweak without a value is true,
// as the spec defines it for highlight. Nil when there is none.
func tweaksOf(actions []json.RawMessage) map[string]json.RawMessage {
	var out map[string]json.RawMessage
	for _, a := range actions {
		var t struct {
			SetTweak string          `json:"set_tweak"`
			Value    json.RawMessage `json:"value"`
		}
		if json.Unmarshal(a, &t) != nil || t.SetTweak == "" {
			continue
		}
		if out == nil {
			out = map[string]json.RawMessage{}
		}
		if len(t.Value) == 0 {
			t.Value = json.RawMessage("true")
		}
		out[t.SetTweak] = t.Value
	}
	return out
}

// truthy reports whether a tweak's value is set to something: not absent,
// null, false, "" or 0.
func truthy(v json.RawMessage) bool {
	switch string(bytes.TrimSpace(v)) {
	case "", "null", "false", `""`, "0":
		return false
	}
	return true
}

// refusedError is a gateway's answer that no retry will change: a 4xx
// other than 429, a redirect, or an address the ranges refuse.
type refusedError struct{ msg string }

func (e *refusedError) Error() string { return e.msg }

// post sends one notification and returns the pushkeys the gateway
// rejected.
func (s *Service) post(ctx context.Context, d delivery) ([]string, error) {
	host := d.URL
	if u, err := url.Parse(d.URL); err == nil {
		host = u.Host
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.URL, bytes.NewReader(d.Body))
	if err != nil {
		return nil, &refusedError{fmt.Sprintf("push gateway %s: %v", host, err)}
	}
	req.Header.Set("Content-Type", "application/json")
	client := s.Client
	if client == nil {
		client = http.DefaultClient
	}
	res, err := client.Do(req)
	if err != nil {
		if errors.Is(err, fedclient.ErrAddressRefused) {
			return nil, &refusedError{fmt.Sprintf("push gateway %s: %v", host, err)}
		}
		return nil, fmt.Errorf("push gateway %s: %w", host, err)
	}
	defer res.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(res.Body, maxAnswer))
	switch {
	case res.StatusCode == http.StatusTooManyRequests || res.StatusCode >= 500:
		return nil, fmt.Errorf("push gateway %s answered %d", host, res.StatusCode)
	case res.StatusCode/100 != 2:
		return nil, &refusedError{fmt.Sprintf("push gateway %s answered %d", host, res.StatusCode)}
	case err != nil:
		return nil, fmt.Errorf("push gateway %s: read answer: %w", host, err)
	}
	var a struct {
		Rejected []string `json:"rejected"`
	}
	_ = json.Unmarshal(answer, &a) // a 2xx is delivered, whatever its body
	return a.Rejected, nil
}

// deliverAll sends the deliveries, up to parallel at once, each with its
// own fate: one failing or slow gateway holds up no other.
func (s *Service) deliverAll(ctx context.Context, ds []delivery) error {
	var (
		wg   gosync.WaitGroup
		mu   gosync.Mutex
		errs []error
	)
	sem := make(chan struct{}, parallel)
	for _, d := range ds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := s.deliver(ctx, d, 0, 0); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// deliver sends d, the attempt-th retry of it (0: the first try) failing
// since failingSince (Unix ms; 0 on the first try). A gateway that could
// not take it gets a retry job; one that refused it drops it; the pushkeys
// one rejected lose their pusher.
func (s *Service) deliver(ctx context.Context, d delivery, attempt int, failingSince int64) error {
	rejected, err := s.post(ctx, d)
	var refused *refusedError
	switch {
	case err == nil:
		return s.reject(ctx, d, rejected)
	case errors.As(err, &refused):
		s.logger().LogAttrs(ctx, slog.LevelWarn, "push: notification dropped",
			slog.String("user_id", d.UserID), slog.String("app_id", d.AppID),
			slog.String("event_id", d.EventID), slog.Any("error", err))
		return nil
	}
	return s.retry(ctx, d, attempt+1, failingSince, err)
}

// reject removes the pusher d went to when the gateway rejected its
// pushkey. Other pushkeys are not this delivery's to remove (Synapse
// ignores them too).
func (s *Service) reject(ctx context.Context, d delivery, rejected []string) error {
	for _, pk := range rejected {
		if pk != d.PushKey {
			continue
		}
		if err := s.Push.RemovePusher(ctx, d.UserID, d.AppID, d.PushKey); err != nil {
			return fmt.Errorf("remove rejected pusher: %w", err)
		}
		s.forget(d.UserID)
		s.logger().LogAttrs(ctx, slog.LevelInfo, "push: gateway rejected the pushkey; pusher removed",
			slog.String("user_id", d.UserID), slog.String("app_id", d.AppID))
	}
	return nil
}

// retryJob is the body of a "push-retry" message.
type retryJob struct {
	delivery
	// Attempt counts the retries, 1 for the first.
	Attempt int `json:"attempt"`
	// FailingSince is when the first try failed, in Unix ms.
	FailingSince int64 `json:"failing_since"`
	// Due is when to try, in Unix ms: a delay longer than the queue's
	// longest (queue.MaxDelay) arrives early and waits again.
	Due int64 `json:"due"`
}

// Backoff is the delay before the attempt-th retry: MinRetry doubled for
// each earlier retry, up to MaxRetry.
func (s *Service) Backoff(attempt int) time.Duration {
	lo, hi := s.MinRetry, s.MaxRetry
	if lo <= 0 {
		lo = DefaultMinRetry
	}
	if hi <= 0 {
		hi = DefaultMaxRetry
	}
	d := lo
	for i := 1; i < attempt && d < hi; i++ {
		d *= 2
	}
	return min(d, hi)
}

// retry queues the attempt-th retry of d after the gateway failed with
// cause, unless it has failed for GiveUpAfter (or maxAttempts tries):
// then it is given up, as Synapse does after a day, and logged.
func (s *Service) retry(ctx context.Context, d delivery, attempt int, failingSince int64, cause error) error {
	now := s.now()
	if failingSince == 0 {
		failingSince = now.UnixMilli()
	}
	giveUp := s.GiveUpAfter
	if giveUp <= 0 {
		giveUp = DefaultGiveUpAfter
	}
	log := s.logger().With(slog.String("user_id", d.UserID), slog.String("app_id", d.AppID),
		slog.String("event_id", d.EventID), slog.Int("attempt", attempt), slog.Any("error", cause))
	q := s.queue()
	if attempt > maxAttempts || now.Sub(time.UnixMilli(failingSince)) >= giveUp || q == nil {
		log.LogAttrs(ctx, slog.LevelWarn, "push: gateway failing; notification given up")
		return nil
	}
	delay := s.Backoff(attempt)
	body, err := json.Marshal(retryJob{delivery: d, Attempt: attempt, FailingSince: failingSince, Due: now.Add(delay).UnixMilli()})
	if err != nil {
		return fmt.Errorf("encode push retry: %w", err)
	}
	log.LogAttrs(ctx, slog.LevelInfo, "push: gateway failed; retrying", slog.Duration("retry_in", delay))
	return q.SendAfter(ctx, RetryKind, body, delay)
}

// HandleRetry runs a "push-retry" job: it sends the notification again,
// to the pusher's current URL, unless the pusher is gone.
func (s *Service) HandleRetry(ctx context.Context, body []byte) error {
	var r retryJob
	if err := json.Unmarshal(body, &r); err != nil {
		return fmt.Errorf("decode push retry: %w", err)
	}
	if wait := time.UnixMilli(r.Due).Sub(s.now()); wait > time.Second {
		if q := s.queue(); q != nil {
			return q.SendAfter(ctx, RetryKind, body, wait)
		}
	}
	pushers, err := s.pushersOf(ctx, r.UserID)
	if err != nil {
		return err
	}
	for _, p := range pushers {
		if p.AppID != r.AppID || p.PushKey != r.PushKey || p.Kind != "http" {
			continue
		}
		var data struct {
			URL string `json:"url"`
		}
		if json.Unmarshal(p.Data, &data) == nil && data.URL != "" {
			r.URL = data.URL
		}
		return s.deliver(ctx, r.delivery, r.Attempt, r.FailingSince)
	}
	return nil // the pusher was removed: nothing to retry for
}
