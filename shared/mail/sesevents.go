package mail

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// sesEvent is the part of an SES event record that suppression reads: the
// JSON that SES's event publishing puts in an SNS message
// (https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-contents.html).
// Feedback notifications set on an identity rather than a configuration
// set name the type notificationType; they are read the same way.
type sesEvent struct {
	EventType        string `json:"eventType"`
	NotificationType string `json:"notificationType"`
	Bounce           *struct {
		BounceType        string `json:"bounceType"` // Permanent, Transient or Undetermined
		BounceSubType     string `json:"bounceSubType"`
		BouncedRecipients []struct {
			EmailAddress string `json:"emailAddress"`
		} `json:"bouncedRecipients"`
		Timestamp string `json:"timestamp"`
	} `json:"bounce"`
	Complaint *struct {
		ComplainedRecipients []struct {
			EmailAddress string `json:"emailAddress"`
		} `json:"complainedRecipients"`
		ComplaintFeedbackType string `json:"complaintFeedbackType"`
		Timestamp             string `json:"timestamp"`
	} `json:"complaint"`
}

// errMalformed marks an SES event that cannot be read: sending it again
// would not help.
var errMalformed = errors.New("malformed SES event")

// suppressions returns the addresses e puts on the list: the recipients of
// a permanent bounce, or of a complaint. Transient and undetermined
// bounces (a full mailbox, a server down) and every other event type
// suppress nothing.
func (e sesEvent) suppressions(now time.Time) ([]Suppression, error) {
	typ := e.EventType
	if typ == "" {
		typ = e.NotificationType
	}
	var out []Suppression
	switch typ {
	case "Bounce":
		if e.Bounce == nil {
			return nil, fmt.Errorf("%w: Bounce without a bounce object", errMalformed)
		}
		if e.Bounce.BounceType != "Permanent" {
			return nil, nil
		}
		at := parseTime(e.Bounce.Timestamp, now)
		for _, r := range e.Bounce.BouncedRecipients {
			out = append(out, Suppression{Address: r.EmailAddress, Reason: ReasonBounce, Detail: e.Bounce.BounceSubType, At: at})
		}
	case "Complaint":
		if e.Complaint == nil {
			return nil, fmt.Errorf("%w: Complaint without a complaint object", errMalformed)
		}
		at := parseTime(e.Complaint.Timestamp, now)
		for _, r := range e.Complaint.ComplainedRecipients {
			out = append(out, Suppression{Address: r.EmailAddress, Reason: ReasonComplaint, Detail: e.Complaint.ComplaintFeedbackType, At: at})
		}
	case "":
		return nil, fmt.Errorf("%w: no eventType", errMalformed)
	default:
		return nil, nil
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %s without recipients", errMalformed, typ)
	}
	return out, nil
}

// parseTime reads an SES timestamp (ISO 8601, UTC); an unreadable one is
// taken as now, the time the event arrived, which is close.
func parseTime(s string, now time.Time) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return now
	}
	return t
}

// HandleSNSEvent reads SES bounce and complaint events as SNS delivers
// them to a Lambda function subscribed to the configuration set's topic,
// and puts the addresses they name on the list. A record that cannot be
// read (not JSON, no event type, an address that does not parse) is
// logged and skipped: SNS would deliver it again unchanged. The error
// returned is a failed table write only, after every record was tried, so
// that Lambda's retries of the invocation redo the writes; they are
// idempotent. Each invocation logs one line with its DynamoDB usage, as a
// queue job does: one PutItem per address suppressed.
func (l *Suppressions) HandleSNSEvent(ctx context.Context, ev events.SNSEvent) (err error) {
	logger := l.logger()
	ctx, meter := store.WithMeter(ctx)
	added := 0
	defer func() {
		u := meter.Usage()
		logger.LogAttrs(ctx, slog.LevelInfo, "ses events",
			slog.Int("records", len(ev.Records)), slog.Int("suppressed", added), slog.Bool("ok", err == nil),
			slog.Group("dynamodb",
				slog.Int64("calls", u.Calls), slog.Float64("rcu", u.ReadUnits), slog.Float64("wcu", u.WriteUnits)))
	}()
	var errs []error
	for _, rec := range ev.Records {
		msgID := rec.SNS.MessageID
		var e sesEvent
		if err := json.Unmarshal([]byte(rec.SNS.Message), &e); err != nil {
			logSkipped(ctx, logger, msgID, fmt.Errorf("%w: %v", errMalformed, err))
			continue
		}
		sups, err := e.suppressions(time.Now())
		if err != nil {
			logSkipped(ctx, logger, msgID, err)
			continue
		}
		for _, s := range sups {
			err := l.Add(ctx, s)
			if errors.Is(err, ErrBadAddress) {
				logSkipped(ctx, logger, msgID, err)
				continue
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("ses event %s: %w", msgID, err))
				continue
			}
			added++
			logger.LogAttrs(ctx, slog.LevelInfo, "mail address suppressed",
				slog.String("to", s.Address), slog.String("reason", s.Reason), slog.String("detail", s.Detail),
				slog.String("sns_message_id", msgID))
		}
	}
	return errors.Join(errs...)
}

// logSkipped logs a record that is dropped; the message itself is not
// logged: it quotes the headers of the mail that bounced.
func logSkipped(ctx context.Context, logger *slog.Logger, msgID string, err error) {
	logger.LogAttrs(ctx, slog.LevelWarn, "ses event skipped",
		slog.String("sns_message_id", msgID), slog.String("error", err.Error()))
}
