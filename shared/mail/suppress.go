package mail

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// ErrSuppressed is returned by Suppressing for an address on the
// suppression list: it bounced for good or its owner marked our mail as
// spam, and mailing it again would hurt the sending reputation SES judges
// the account by.
var ErrSuppressed = errors.New("address is on the suppression list")

// Reasons an address is suppressed.
const (
	ReasonBounce    = "bounce"    // a permanent bounce
	ReasonComplaint = "complaint" // the recipient marked the mail as spam
)

// Suppression says why and since when an address gets no mail.
type Suppression struct {
	// Address is the address, lower-cased.
	Address string
	// Reason is ReasonBounce or ReasonComplaint.
	Reason string
	// Detail is what SES said: the bounce's subtype (such as "General" or
	// "NoEmail") or the complaint's feedback type (such as "abuse"); may
	// be empty.
	Detail string
	// At is when the bounce or complaint happened.
	At time.Time
}

// Suppressions is the suppression list: one table item per address,
// written from SES's bounce and complaint events (HandleSNSEvent) and read
// before each mail (Suppressing). Items never expire: an operator removes
// an address that works again (Remove, or the item in the table, see
// docs/operations.md).
type Suppressions struct {
	Store *store.Store
	// Logger gets a line for each address added and each SES event
	// skipped; nil means slog.Default().
	Logger *slog.Logger
}

func (l *Suppressions) logger() *slog.Logger {
	if l.Logger == nil {
		return slog.Default()
	}
	return l.Logger
}

// suppressionItem is the table item of one suppressed address.
type suppressionItem struct {
	PK      string `dynamodbav:"pk"`
	SK      string `dynamodbav:"sk"`
	Address string `dynamodbav:"address"`
	Reason  string `dynamodbav:"reason"`
	Detail  string `dynamodbav:"detail,omitempty"`
	At      int64  `dynamodbav:"at"` // Unix milliseconds
}

// suppressionKey is the key of addr's item; addr is normalised already.
func suppressionKey(addr string) store.Key {
	return store.Key{PK: "mailsuppress|" + addr, SK: "mailsuppress"}
}

// normalise returns the bare address of a, lower-cased: "Alice
// <Alice@Example.org>" and "alice@example.org" are one entry. Local parts
// are case-sensitive in theory, never in the mailboxes that bounce.
func normalise(a string) (string, error) {
	addr, err := parseAddress(a)
	if err != nil {
		return "", err
	}
	return strings.ToLower(addr.Address), nil
}

// Add puts s.Address on the list, replacing what was there: the latest
// event says why.
func (l *Suppressions) Add(ctx context.Context, s Suppression) error {
	addr, err := normalise(s.Address)
	if err != nil {
		return fmt.Errorf("suppress: %w", err)
	}
	k := suppressionKey(addr)
	item := suppressionItem{PK: k.PK, SK: k.SK, Address: addr, Reason: s.Reason, Detail: s.Detail, At: s.At.UnixMilli()}
	if err := l.Store.Put(ctx, item); err != nil {
		return fmt.Errorf("suppress: %w", err)
	}
	return nil
}

// Lookup reports whether addr is suppressed, and why. An address that does
// not parse is an error wrapping ErrBadAddress.
func (l *Suppressions) Lookup(ctx context.Context, addr string) (Suppression, bool, error) {
	norm, err := normalise(addr)
	if err != nil {
		return Suppression{}, false, fmt.Errorf("suppression lookup: %w", err)
	}
	var it suppressionItem
	err = l.Store.Get(ctx, suppressionKey(norm), &it)
	if errors.Is(err, store.ErrNotFound) {
		return Suppression{}, false, nil
	}
	if err != nil {
		return Suppression{}, false, fmt.Errorf("suppression lookup: %w", err)
	}
	return Suppression{Address: it.Address, Reason: it.Reason, Detail: it.Detail, At: time.UnixMilli(it.At).UTC()}, true, nil
}

// Remove takes addr off the list; removing an address not on it is not an
// error.
func (l *Suppressions) Remove(ctx context.Context, addr string) error {
	norm, err := normalise(addr)
	if err != nil {
		return fmt.Errorf("unsuppress: %w", err)
	}
	if err := l.Store.Delete(ctx, suppressionKey(norm)); err != nil {
		return fmt.Errorf("unsuppress: %w", err)
	}
	return nil
}

// Suppressing is a Sender that sends nothing to an address on the list:
// Send returns an error wrapping ErrSuppressed and logs one line with the
// recipient and the reason, never the body. Every other mail goes to Next,
// after one read of the list.
type Suppressing struct {
	Next Sender
	List *Suppressions
	// Logger gets the line for each refused mail; nil means slog.Default().
	Logger *slog.Logger
}

var _ Sender = (*Suppressing)(nil)

// Send sends m through Next unless its recipient is suppressed. An invalid
// message is refused as Next would refuse it, before the list is read.
func (s *Suppressing) Send(ctx context.Context, m Message) error {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("send mail: %w", err)
	}
	sup, found, err := s.List.Lookup(ctx, m.To)
	if err != nil {
		return fmt.Errorf("send mail: %w", err)
	}
	if found {
		log := s.Logger
		if log == nil {
			log = slog.Default()
		}
		log.LogAttrs(ctx, slog.LevelWarn, "mail suppressed",
			slog.String("to", sup.Address), slog.String("reason", sup.Reason),
			slog.String("detail", sup.Detail), slog.Time("since", sup.At), slog.String("subject", m.Subject))
		return fmt.Errorf("send mail to %s: %w (%s since %s)", sup.Address, ErrSuppressed, sup.Reason, sup.At.Format(time.RFC3339))
	}
	return s.Next.Send(ctx, m)
}
