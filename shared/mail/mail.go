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
	ErrBadHeader   = errors.New("header field name or value SES does not accept")
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
	// Headers are header fields to add, such as List-Unsubscribe; nil for
	// none.
	Headers []Header
}

// Header is one header field of a Message. SES takes a name of printable
// ASCII without a colon (at most 126 characters) and a value of printable
// ASCII (at most 995), and keeps for itself the fields it writes.
type Header struct {
	Name, Value string
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
	for _, h := range m.Headers {
		if !printable(h.Name, false) || len(h.Name) > 126 || !printable(h.Value, true) || len(h.Value) > 995 {
			return fmt.Errorf("%w: %q", ErrBadHeader, h.Name)
		}
		switch strings.ToLower(h.Name) {
		case "from", "to", "cc", "bcc", "subject", "date", "message-id", "mime-version", "content-type", "content-transfer-encoding":
			return fmt.Errorf("%w: %s is set by the sender", ErrBadHeader, h.Name)
		}
	}
	return nil
}

// printable reports whether s is non-empty printable ASCII, with spaces
// only in a value, never a colon in a name: no line break can inject
// another header field.
func printable(s string, value bool) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c < 0x20 || c > 0x7e || (c == ' ' && !value) || (c == ':' && !value) {
			return false
		}
	}
	return true
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
