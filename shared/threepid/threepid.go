// Package threepid holds the third-party IDs (3PIDs) of accounts: the email
// addresses a user proved they own, and the validation sessions that prove
// it. The server sends the validation mail itself (no identity server): the
// mail links to a page of this server, whose confirm button validates the
// session (a GET never does, so that a mail scanner that follows the link
// validates nothing). Identity servers are optional: /account/3pid/bind and
// /unbind talk to one only when a client names it.
//
// Items (docs/storage.md, "Third-party IDs"):
//   - a validation session: pk "3pid.session|<sid>", sk "session", with the
//     TTL of its newest token;
//   - a binding: pk "3pid|<medium>|<address>", sk "3pid": the one account
//     the address belongs to, created only if absent;
//   - the account's list: pk "3pids|<user>", sk "3pid|<medium>|<address>"
//     for a binding, "idbind|<medium>|<address>" for the identity server an
//     address was bound through.
package threepid

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/mail"
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/config"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	cmail "github.com/cirrus-matrix/cirrus/shared/mail"
	"github.com/cirrus-matrix/cirrus/shared/ratelimit"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// MediumEmail is the one medium this server validates.
const MediumEmail = "email"

// Service holds sessions and bindings.
type Service struct {
	Store  *store.Store
	Config *config.Config
	// Templates render the validation mail and pages.
	Templates *cmail.Templates
	// Mail returns the sender at send time: the server's is set after
	// server.Open (Lambda, `cirrus serve`, tests). nil or a nil sender
	// means mail cannot be sent.
	Mail func() cmail.Sender
	// Limiter counts validation requests (rc_3pid_validation).
	Limiter *ratelimit.Limiter
	// UIA runs user-interactive auth with the caller's password
	// (accounts.Service.PasswordUIA); it reports whether to go on, and has
	// answered when not.
	UIA func(w http.ResponseWriter, r *http.Request, auth json.RawMessage) bool
	// Caller gives the user ID of an authenticated request.
	Caller func(ctx context.Context) string
	// Sign builds a request signed with this server's key (X-Matrix) for
	// destination: fedclient.Client.NewRequest. Its URL is rewritten to
	// https://<id_server>.
	Sign func(method, destination, path string, body any) (*http.Request, error)
	// IdentityClient sends requests to identity servers; nil, a client
	// that refuses loopback and private addresses (identityClient).
	IdentityClient *http.Client
	// Removed is told of each address an account loses (delete,
	// deactivation), after the binding is gone: the server removes the
	// email pushers that mailed it, as Synapse does. nil does nothing.
	Removed func(ctx context.Context, userID, medium, address string) error
	// Now is the clock; nil, time.Now.
	Now func() time.Time
}

func (s *Service) removed(ctx context.Context, userID, medium, address string) error {
	if s.Removed == nil {
		return nil
	}
	return s.Removed(ctx, userID, medium, address)
}

// ThreePID is one address bound to an account.
type ThreePID struct {
	Medium  string `json:"medium"`
	Address string `json:"address"`
	// ValidatedAt and AddedAt are in milliseconds since the epoch.
	ValidatedAt int64 `json:"validated_at"`
	AddedAt     int64 `json:"added_at"`
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// bindingItem says which account an address belongs to.
type bindingItem struct {
	PK          string `dynamodbav:"pk"`
	SK          string `dynamodbav:"sk"`
	UserID      string `dynamodbav:"user_id"`
	ValidatedAt int64  `dynamodbav:"validated_at"`
	AddedAt     int64  `dynamodbav:"added_at"`
}

// userItem is one entry of an account's list: a binding (sk "3pid|...")
// or an identity server bind (sk "idbind|...").
type userItem struct {
	PK          string `dynamodbav:"pk"`
	SK          string `dynamodbav:"sk"`
	Medium      string `dynamodbav:"medium"`
	Address     string `dynamodbav:"address"`
	ValidatedAt int64  `dynamodbav:"validated_at,omitempty"`
	AddedAt     int64  `dynamodbav:"added_at,omitempty"`
	IDServer    string `dynamodbav:"id_server,omitempty"`
}

const (
	bindingSK     = "3pid"
	userBindPfx   = "3pid|"
	userIDBindPfx = "idbind|"
)

func bindingKey(medium, address string) store.Key {
	return store.Key{PK: "3pid|" + medium + "|" + address, SK: bindingSK}
}
func userPK(userID string) string { return "3pids|" + userID }
func userBindKey(userID, medium, address string) store.Key {
	return store.Key{PK: userPK(userID), SK: userBindPfx + medium + "|" + address}
}
func userIDBindKey(userID, medium, address string) store.Key {
	return store.Key{PK: userPK(userID), SK: userIDBindPfx + medium + "|" + address}
}

// NormalizeEmail trims and lower-cases an email address and checks it is a
// bare address (no display name); a bad one is 400 M_INVALID_PARAM.
func NormalizeEmail(address string) (string, error) {
	a := strings.ToLower(strings.TrimSpace(address))
	if a == "" {
		return "", httpapi.InvalidParam("email address is empty")
	}
	p, err := mail.ParseAddress(a)
	if err != nil || p.Address != a || p.Name != "" || !strings.Contains(a, "@") || len(a) > 320 {
		return "", httpapi.InvalidParam("%q is not an email address such as alice@example.org", address)
	}
	return a, nil
}

// normalize checks the medium and normalises the address.
func normalize(medium, address string) (string, error) {
	switch medium {
	case MediumEmail:
		return NormalizeEmail(address)
	case "msisdn":
		return "", httpapi.Errorf(http.StatusBadRequest, "M_THREEPID_MEDIUM_NOT_SUPPORTED",
			"phone numbers (msisdn) are not supported by this server: it sends no SMS")
	case "":
		return "", httpapi.MissingParam("medium is required")
	default:
		return "", httpapi.InvalidParam("unknown medium %q: only email is supported", medium)
	}
}

// errInUse is the answer when an address belongs to another account.
func errInUse() *httpapi.Error {
	return httpapi.Errorf(http.StatusBadRequest, "M_THREEPID_IN_USE",
		"this email address is already associated with an account on this server")
}

// UserOf returns the user the address is bound to, "" if none.
//
// Cost: one GetItem (1 RCU).
func (s *Service) UserOf(ctx context.Context, medium, address string) (string, error) {
	address, err := normalize(medium, address)
	if err != nil {
		return "", err
	}
	var b bindingItem
	err = s.Store.Get(ctx, bindingKey(medium, address), &b)
	if errors.Is(err, store.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("threepid: owner of address: %w", err)
	}
	return b.UserID, nil
}

// Owns reports whether the email address is bound to userID (email
// pushers may only mail their owner's addresses).
func (s *Service) Owns(ctx context.Context, userID, address string) (bool, error) {
	owner, err := s.UserOf(ctx, MediumEmail, address)
	return err == nil && owner != "" && owner == userID, err
}

// Bind binds the address to userID: 400 M_THREEPID_IN_USE when another
// account has it; binding it again to the same user changes nothing.
//
// Cost: one TransactWriteItems of two small items (4 WCU); when the
// address is taken, one GetItem more.
func (s *Service) Bind(ctx context.Context, userID, medium, address string) error {
	address, err := normalize(medium, address)
	if err != nil {
		return err
	}
	now := s.now().UnixMilli()
	return s.bind(ctx, userID, medium, address, now)
}

func (s *Service) bind(ctx context.Context, userID, medium, address string, validatedAt int64) error {
	now := s.now().UnixMilli()
	k := bindingKey(medium, address)
	uk := userBindKey(userID, medium, address)
	err := s.Store.Transact(ctx,
		store.CreateOp(bindingItem{PK: k.PK, SK: k.SK, UserID: userID, ValidatedAt: validatedAt, AddedAt: now}),
		store.PutOp(userItem{PK: uk.PK, SK: uk.SK, Medium: medium, Address: address, ValidatedAt: validatedAt, AddedAt: now}))
	if !errors.Is(err, store.ErrConflict) {
		if err != nil {
			return fmt.Errorf("threepid: bind: %w", err)
		}
		return nil
	}
	owner, err := s.UserOf(ctx, medium, address)
	if err != nil {
		return err
	}
	if owner == userID {
		return nil
	}
	if owner == "" {
		// Deleted between the two calls, or the transaction met another:
		// the caller may try again.
		return httpapi.Errorf(http.StatusConflict, "M_UNKNOWN", "the address changed hands meanwhile: try again")
	}
	return errInUse()
}

// Addresses lists the addresses bound to userID.
//
// Cost: one Query of the account's list (0.5 RCU per 4 KB, strongly
// consistent).
func (s *Service) Addresses(ctx context.Context, userID string) ([]ThreePID, error) {
	items, err := s.userItems(ctx, userID, userBindPfx)
	if err != nil {
		return nil, err
	}
	out := make([]ThreePID, 0, len(items))
	for _, it := range items {
		out = append(out, ThreePID{Medium: it.Medium, Address: it.Address, ValidatedAt: it.ValidatedAt, AddedAt: it.AddedAt})
	}
	return out, nil
}

func (s *Service) userItems(ctx context.Context, userID, prefix string) ([]userItem, error) {
	var all []userItem
	q := store.Query{PK: userPK(userID), Prefix: prefix}
	for {
		var page []userItem
		next, err := s.Store.QueryPage(ctx, q, &page)
		if err != nil {
			return nil, fmt.Errorf("threepid: list addresses: %w", err)
		}
		all = append(all, page...)
		if next == "" {
			return all, nil
		}
		q.Cursor = next
	}
}

// unbindLocal removes the binding of the address from userID, if it has
// it.
func (s *Service) unbindLocal(ctx context.Context, userID, medium, address string) error {
	owner, err := s.UserOf(ctx, medium, address)
	if err != nil {
		return err
	}
	keys := []store.Key{userBindKey(userID, medium, address)}
	if owner == userID {
		keys = append(keys, bindingKey(medium, address))
	}
	if err := s.Store.DeleteEach(ctx, keys); err != nil {
		return fmt.Errorf("threepid: unbind: %w", err)
	}
	return s.removed(ctx, userID, medium, address)
}

// RemoveAll removes every address of userID and what it remembers of
// identity server binds (account deactivation). The identity servers are
// not told.
//
// Cost: one Query of the account's list, then two DeleteItems per bound
// address and one per identity server bind.
func (s *Service) RemoveAll(ctx context.Context, userID string) error {
	items, err := s.userItems(ctx, userID, "")
	if err != nil {
		return err
	}
	var keys []store.Key
	for _, it := range items {
		keys = append(keys, store.Key{PK: it.PK, SK: it.SK})
		if strings.HasPrefix(it.SK, userBindPfx) {
			var b bindingItem
			k := bindingKey(it.Medium, it.Address)
			err := s.Store.Get(ctx, k, &b)
			if err == nil && b.UserID == userID {
				keys = append(keys, k)
			} else if err != nil && !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("threepid: remove all: %w", err)
			}
		}
	}
	if err := s.Store.DeleteEach(ctx, keys); err != nil {
		return fmt.Errorf("threepid: remove all: %w", err)
	}
	for _, it := range items {
		if strings.HasPrefix(it.SK, userBindPfx) {
			if err := s.removed(ctx, userID, it.Medium, it.Address); err != nil {
				return err
			}
		}
	}
	return nil
}
