// Package mail sends the homeserver's own mail: address verification and
// password reset. In AWS it goes through SES v2 (SES); `cirrus serve` writes
// it to a folder instead (Folder), so that a developer can open the link in
// a reset mail without any mail account, the step that most often fails when
// setting up a classic homeserver.
//
// Mail bodies carry reset links and tokens: nothing in this package logs a
// body, and callers should not either.
package mail

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"strings"
)

// Errors callers can test for with errors.Is.
var (
	ErrNoRecipient = errors.New("message has no recipient")
	ErrNoSubject   = errors.New("message has no subject")
	ErrNoBody      = errors.New("message has neither a text nor an HTML body")
	ErrBadAddress  = errors.New("not a mail address")
	ErrBadSubject  = errors.New("subject contains a line break")
)

// Message is one mail to one recipient.
type Message struct {
	// To is the recipient, such as "alice@example.org" or
	// "Alice <alice@example.org>".
	To string
	// Subject is one line of text.
	Subject string
	// Text and HTML are the two forms of the body; at least one is set, and
	// a mail client shows the HTML one if it can.
	Text, HTML string
}

// Sender sends mail.
type Sender interface {
	// Send sends m, or returns an error that says why not. An invalid
	// message (see Message.Validate) is refused before anything is sent.
	Send(ctx context.Context, m Message) error
}

var (
	_ Sender = (*SES)(nil)
	_ Sender = (*Folder)(nil)
)

// Validate reports why m cannot be sent: an empty or unparsable recipient,
// an empty subject or one with a line break (which would inject headers),
// or no body.
func (m Message) Validate() error {
	if strings.TrimSpace(m.To) == "" {
		return ErrNoRecipient
	}
	if _, err := parseAddress(m.To); err != nil {
		return fmt.Errorf("recipient: %w", err)
	}
	if strings.TrimSpace(m.Subject) == "" {
		return ErrNoSubject
	}
	if strings.ContainsAny(m.Subject, "\r\n") {
		return ErrBadSubject
	}
	if m.Text == "" && m.HTML == "" {
		return ErrNoBody
	}
	return nil
}

// parseAddress parses one RFC 5322 address, such as "a@example.org" or
// "A <a@example.org>".
func parseAddress(s string) (*mail.Address, error) {
	a, err := mail.ParseAddress(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrBadAddress, s, err)
	}
	return a, nil
}

// formatAddress writes a as a header value: the bare address when it has no
// name (Address.String would add angle brackets), else the name encoded per
// RFC 2047 if it is not ASCII.
func formatAddress(a *mail.Address) string {
	if a.Name == "" {
		return a.Address
	}
	return a.String()
}
