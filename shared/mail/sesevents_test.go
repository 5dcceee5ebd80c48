package mail_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/cirrus-matrix/cirrus/shared/mail"
)

// snsRecord wraps an SES event as SNS delivers it to a Lambda function.
func snsRecord(id, message string) events.SNSEventRecord {
	return events.SNSEventRecord{
		EventVersion:         "1.0",
		EventSource:          "aws:sns",
		EventSubscriptionArn: "arn:aws:sns:eu-west-1:123456789012:cirrus-mail-events:0b3c2f7e-1d5a-4c1e-9a0b-1e2f3a4b5c6d",
		SNS: events.SNSEntity{
			Type:      "Notification",
			MessageID: id,
			TopicArn:  "arn:aws:sns:eu-west-1:123456789012:cirrus-mail-events",
			Message:   message,
			Timestamp: time.Date(2026, 12, 5, 6, 0, 0, 0, time.UTC),
		},
	}
}

// The records follow the examples of
// https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-examples.html
const (
	permanentBounce = `{"eventType":"Bounce","bounce":{"bounceType":"Permanent","bounceSubType":"General",
		"bouncedRecipients":[{"emailAddress":"Gone.User@Example.org","action":"failed","status":"5.1.1","diagnosticCode":"smtp; 550 5.1.1 user unknown"},
		{"emailAddress":"also-gone@example.org"}],
		"timestamp":"2026-12-05T05:59:58.669Z","feedbackId":"0100018c-example","reportingMTA":"dsn; mta.example.org"},
		"mail":{"timestamp":"2026-12-05T05:59:57.012Z","source":"Cirrus <noreply@example.org>","messageId":"EXAMPLE-1","destination":["Gone.User@Example.org","also-gone@example.org"],
		"headers":[{"name":"Subject","value":"Verify your address"}]}}`
	transientBounce = `{"eventType":"Bounce","bounce":{"bounceType":"Transient","bounceSubType":"MailboxFull",
		"bouncedRecipients":[{"emailAddress":"full@example.org"}],"timestamp":"2026-12-05T05:59:58Z"},"mail":{}}`
	undeterminedBounce = `{"eventType":"Bounce","bounce":{"bounceType":"Undetermined","bounceSubType":"Undetermined",
		"bouncedRecipients":[{"emailAddress":"unsure@example.org"}],"timestamp":"2026-12-05T05:59:58Z"},"mail":{}}`
	complaint = `{"eventType":"Complaint","complaint":{"complainedRecipients":[{"emailAddress":"annoyed@example.org"}],
		"timestamp":"2026-12-05T06:01:00.000Z","feedbackId":"0100018c-example-2","complaintFeedbackType":"abuse"},"mail":{}}`
	// Feedback notifications set on the identity name the type
	// notificationType.
	identityComplaint = `{"notificationType":"Complaint","complaint":{"complainedRecipients":[{"emailAddress":"legacy@example.org"}],
		"timestamp":"2026-12-05T06:02:00.000Z"},"mail":{}}`
	delivery = `{"eventType":"Delivery","delivery":{"recipients":["ok@example.org"],"timestamp":"2026-12-05T06:00:00Z"},"mail":{}}`
)

func TestHandleSNSEvent(t *testing.T) {
	ctx := context.Background()
	var logs bytes.Buffer
	list := &mail.Suppressions{Store: newStore(t), Logger: slog.New(slog.NewJSONHandler(&logs, nil))}
	ev := events.SNSEvent{Records: []events.SNSEventRecord{
		snsRecord("m-not-json", `{"eventType":"Bounce",`),
		snsRecord("m-no-type", `{"mail":{}}`),
		snsRecord("m-bounce-no-object", `{"eventType":"Bounce","mail":{}}`),
		snsRecord("m-bad-address", `{"eventType":"Complaint","complaint":{"complainedRecipients":[{"emailAddress":"not an address"},{"emailAddress":"after-bad@example.org"}]}}`),
		snsRecord("m-permanent", permanentBounce),
		snsRecord("m-transient", transientBounce),
		snsRecord("m-undetermined", undeterminedBounce),
		snsRecord("m-complaint", complaint),
		snsRecord("m-identity", identityComplaint),
		snsRecord("m-delivery", delivery),
	}}
	if err := list.HandleSNSEvent(ctx, ev); err != nil {
		t.Fatalf("HandleSNSEvent: %v; malformed records are skipped, not failed", err)
	}

	want := map[string]mail.Suppression{
		"gone.user@example.org": {Address: "gone.user@example.org", Reason: mail.ReasonBounce, Detail: "General",
			At: time.Date(2026, 12, 5, 5, 59, 58, 669e6, time.UTC)},
		"also-gone@example.org": {Address: "also-gone@example.org", Reason: mail.ReasonBounce, Detail: "General",
			At: time.Date(2026, 12, 5, 5, 59, 58, 669e6, time.UTC)},
		"annoyed@example.org": {Address: "annoyed@example.org", Reason: mail.ReasonComplaint, Detail: "abuse",
			At: time.Date(2026, 12, 5, 6, 1, 0, 0, time.UTC)},
		"legacy@example.org": {Address: "legacy@example.org", Reason: mail.ReasonComplaint,
			At: time.Date(2026, 12, 5, 6, 2, 0, 0, time.UTC)},
	}
	for addr, w := range want {
		got, found, err := list.Lookup(ctx, addr)
		if err != nil || !found || got != w {
			t.Errorf("%s: got %+v, found %v, err %v; want %+v", addr, got, found, err, w)
		}
	}
	// The record with a bad address still suppresses its good one: SES
	// would send the event again unchanged.
	if _, found, err := list.Lookup(ctx, "after-bad@example.org"); err != nil || !found {
		t.Errorf("after-bad@example.org: found %v, err %v; want suppressed", found, err)
	}
	for _, addr := range []string{"full@example.org", "unsure@example.org", "ok@example.org"} {
		if s, found, err := list.Lookup(ctx, addr); err != nil || found {
			t.Errorf("%s: suppressed as %+v (err %v), want not suppressed", addr, s, err)
		}
	}

	text := logs.String()
	for _, id := range []string{"m-not-json", "m-no-type", "m-bounce-no-object", "m-bad-address"} {
		if !strings.Contains(text, `"msg":"ses event skipped","sns_message_id":"`+id+`"`) {
			t.Errorf("no skipped line for %s in:\n%s", id, text)
		}
	}
	if n := strings.Count(text, `"msg":"mail address suppressed"`); n != 5 {
		t.Errorf("%d suppressed lines, want 5:\n%s", n, text)
	}
	if !strings.Contains(text, `"msg":"ses events","records":10,"suppressed":5,"ok":true,"dynamodb":{"calls":5,`) {
		t.Errorf("no summary line with five writes:\n%s", text)
	}
	if testing.Verbose() {
		t.Log(text)
	}
	if strings.Contains(text, "Verify your address") {
		t.Errorf("log quotes the bounced mail's headers:\n%s", text)
	}
}

// TestHandleSNSEvent_StoreFailure: a failed write fails the invocation,
// so that Lambda invokes it again.
func TestHandleSNSEvent_StoreFailure(t *testing.T) {
	st := newStore(t)
	list := &mail.Suppressions{Store: st, Logger: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ev := events.SNSEvent{Records: []events.SNSEventRecord{snsRecord("m-1", permanentBounce)}}
	if err := list.HandleSNSEvent(ctx, ev); err == nil || !strings.Contains(err.Error(), "m-1") {
		t.Fatalf("got %v, want an error naming the message", err)
	}
}

// TestSESEventSamples_Decode keeps the constants above valid JSON, so that
// the malformed cases are the only malformed ones.
func TestSESEventSamples_Decode(t *testing.T) {
	for _, s := range []string{permanentBounce, transientBounce, undeterminedBounce, complaint, identityComplaint, delivery} {
		if !json.Valid([]byte(s)) {
			t.Errorf("not JSON: %s", s)
		}
	}
}
