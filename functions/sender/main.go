// Command sender is the Lambda function subscribed to the federation queue:
// it runs each message's work (sending PDUs and EDUs to other servers) and
// reports failed messages individually, so that only they are retried. It
// is also subscribed to the topic of SES's mail events, and puts the
// addresses of permanent bounces and complaints on the suppression list.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"

	"github.com/cirrus-matrix/cirrus/shared/mail"
	"github.com/cirrus-matrix/cirrus/shared/server"
)

func main() {
	srv, err := server.OpenLambda(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	suppressions := &mail.Suppressions{Store: srv.Store, Logger: srv.Logger}
	lambda.Start(handler(srv.Jobs.HandleSQSEvent, suppressions.HandleSNSEvent))
}

// handler routes an invocation by its first record's source: SNS
// notifications (SES's mail events) to sns; everything else to sqs, which
// answers with the SQS partial batch response. "Everything else" includes
// the schedule's media retention event, an SQS-shaped batch without an
// event source (infra MediaRetentionEvent).
func handler(
	sqs func(context.Context, events.SQSEvent) (events.SQSEventResponse, error),
	sns func(context.Context, events.SNSEvent) error,
) func(context.Context, json.RawMessage) (any, error) {
	return func(ctx context.Context, payload json.RawMessage) (any, error) {
		var peek struct {
			Records []struct {
				EventSource string `json:"eventSource"` // SNS spells it EventSource; decoding ignores case
			} `json:"Records"`
		}
		if err := json.Unmarshal(payload, &peek); err != nil {
			return nil, fmt.Errorf("sender: decode event: %w", err)
		}
		if len(peek.Records) > 0 && peek.Records[0].EventSource == "aws:sns" {
			var ev events.SNSEvent
			if err := json.Unmarshal(payload, &ev); err != nil {
				return nil, fmt.Errorf("sender: decode SNS event: %w", err)
			}
			return nil, sns(ctx, ev)
		}
		var ev events.SQSEvent
		if err := json.Unmarshal(payload, &ev); err != nil {
			return nil, fmt.Errorf("sender: decode SQS event: %w", err)
		}
		return sqs(ctx, ev)
	}
}
