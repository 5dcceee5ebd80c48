package mail

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sesv2"
	"github.com/aws/aws-sdk-go-v2/service/sesv2/types"

	"github.com/cirrus-matrix/cirrus/shared/gate"
)

// SendEmailAPI is the part of the SES v2 API that SES uses; *sesv2.Client
// has it.
type SendEmailAPI interface {
	SendEmail(ctx context.Context, params *sesv2.SendEmailInput, optFns ...func(*sesv2.Options)) (*sesv2.SendEmailOutput, error)
}

var _ SendEmailAPI = (*sesv2.Client)(nil)

// SES sends mail through Amazon SES v2 as simple content (SES builds the
// MIME message), from a verified identity.
type SES struct {
	// From is the sender, such as "Cirrus <noreply@example.org>"; its domain
	// or address must be a verified SES identity.
	From string
	// ConfigurationSet, if set, names the SES configuration set the mail is
	// sent with (event publishing, a dedicated IP pool, suppression options).
	ConfigurationSet string

	client SendEmailAPI
}

// NewSES returns an SES sender that sends from the address from through client.
func NewSES(client SendEmailAPI, from string) *SES {
	return &SES{client: client, From: from}
}

// Send sends m with one SendEmail call.
func (s *SES) Send(ctx context.Context, m Message) error {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("send email: %w", err)
	}
	if err := gate.Wait(ctx); err != nil {
		return fmt.Errorf("send email: %w", err)
	}
	from, err := parseAddress(s.From)
	if err != nil {
		return fmt.Errorf("send email: from: %w", err)
	}
	to, _ := parseAddress(m.To) // checked by Validate
	body := &types.Body{}
	if m.Text != "" {
		body.Text = utf8Content(m.Text)
	}
	if m.HTML != "" {
		body.Html = utf8Content(m.HTML)
	}
	in := &sesv2.SendEmailInput{
		FromEmailAddress: aws.String(formatAddress(from)),
		Destination:      &types.Destination{ToAddresses: []string{formatAddress(to)}},
		Content: &types.EmailContent{Simple: &types.Message{
			Subject: utf8Content(m.Subject),
			Body:    body,
		}},
	}
	for _, h := range m.Headers {
		in.Content.Simple.Headers = append(in.Content.Simple.Headers,
			types.MessageHeader{Name: aws.String(h.Name), Value: aws.String(h.Value)})
	}
	if s.ConfigurationSet != "" {
		in.ConfigurationSetName = aws.String(s.ConfigurationSet)
	}
	if _, err := s.client.SendEmail(ctx, in); err != nil {
		return fmt.Errorf("send email: %w", err)
	}
	return nil
}

func utf8Content(s string) *types.Content {
	return &types.Content{Data: aws.String(s), Charset: aws.String("UTF-8")}
}
