package accounts

import (
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/ratelimit"
)

// Limits are the rate limits on password checks and registration, kept in
// the table (shared/ratelimit) so that every instance counts alike.
//
// Every password check, a login or a stage of user-interactive auth
// (changing the password, deleting devices, deactivating, uploading
// cross-signing keys), goes through one function and counts under the same
// limits: LoginAddress counts every check from an address; LoginFailures
// counts the wrong passwords given for one account from one address, and
// LoginAccount those from any address. The failure counters are read before
// the password is checked and written only when it was wrong, so the owner's
// right password from their own address is refused only when their address
// has failed too often, or when many addresses together pass the looser
// account ceiling: one stranger alone cannot lock them out.
type Limits struct {
	// LoginAddress counts every password check from one address.
	LoginAddress ratelimit.Limit
	// LoginFailures counts the failed password checks of one account from
	// one address.
	LoginFailures ratelimit.Limit
	// LoginAccount counts the failed password checks of one account from
	// any address: a ceiling looser than LoginFailures, against guessing
	// spread over many addresses.
	LoginAccount ratelimit.Limit
	// RegisterAddress counts the attempts to register, and the checks of a
	// registration token's validity, from one address.
	RegisterAddress ratelimit.Limit
	// SharedSecretAddress counts the requests to the shared-secret
	// registration API (nonces and registrations) from one address, and
	// SharedSecretFailures its refused registrations (an unknown nonce, a
	// wrong MAC), which guessing the secret would make.
	SharedSecretAddress, SharedSecretFailures ratelimit.Limit
}

// Multiples of the configured limits for the limits the configuration does
// not name.
const (
	// accountCeiling times the failures allowed per account and address
	// is the ceiling of failures per account.
	accountCeiling = 10
	// sharedSecretVolume times the registrations allowed per address is
	// the number of shared-secret requests allowed per address: operators
	// create users in bulk with it (two requests each), and it writes a
	// nonce per request.
	sharedSecretVolume = 10
)

// PerMinute makes Limits of attempts per minute: loginAddress password
// checks per address, loginAccount failed checks per account and address
// (ten times as many per account from any address), registerAddress
// registrations and refused shared-secret registrations per address (ten
// times as many shared-secret requests). 0 turns a limit off.
func PerMinute(loginAddress, loginAccount, registerAddress int64) Limits {
	minute := func(name string, n int64) ratelimit.Limit {
		return ratelimit.Limit{Name: name, Burst: n, Window: time.Minute}
	}
	return Limits{
		LoginAddress:         minute("login.address", loginAddress),
		LoginFailures:        minute("login.failed", loginAccount),
		LoginAccount:         minute("login.failed.account", accountCeiling*loginAccount),
		RegisterAddress:      minute("register.address", registerAddress),
		SharedSecretAddress:  minute("register.shared_secret", sharedSecretVolume*registerAddress),
		SharedSecretFailures: minute("register.shared_secret.failed", registerAddress),
	}
}

// verifyPassword is the one password check, of logins and of
// user-interactive auth alike: it counts the attempt against the caller's
// address, refuses it (429) when the account has failed too often from
// this address or from all, then checks the password, counting a failure
// against the account. userID is the account named, as accountOf makes it.
//
// Cost: one UpdateItem (the address), one BatchGetItem of the two failure
// counters, the account's GetItem; two UpdateItems more on a failure.
func (s *Service) verifyPassword(r *http.Request, userID string, local bool, password string) (accountItem, error) {
	ctx := r.Context()
	addr := clientAddress(r)
	if err := s.Limiter.Allow(ctx, s.Limits.LoginAddress, addr); err != nil {
		return accountItem{}, err
	}
	// The address comes last and holds no "|": the pair cannot be another.
	failures := []ratelimit.Counter{
		{Limit: s.Limits.LoginFailures, Key: userID + "|" + addr},
		{Limit: s.Limits.LoginAccount, Key: userID},
	}
	if err := s.Limiter.Check(ctx, failures...); err != nil {
		return accountItem{}, err
	}
	acct, err := s.checkPassword(ctx, userID, local, password)
	if errors.Is(err, errBadLogin) {
		if err := s.Limiter.Add(ctx, failures...); err != nil {
			return accountItem{}, err
		}
	}
	return acct, err
}

// allowSharedSecret counts a request to the shared-secret registration API
// and refuses it when its address asked too often or failed too often.
func (s *Service) allowSharedSecret(r *http.Request) error {
	addr := clientAddress(r)
	if err := s.Limiter.Allow(r.Context(), s.Limits.SharedSecretAddress, addr); err != nil {
		return err
	}
	return s.Limiter.Check(r.Context(), ratelimit.Counter{Limit: s.Limits.SharedSecretFailures, Key: addr})
}

// sharedSecretFailed counts a refused shared-secret registration.
func (s *Service) sharedSecretFailed(r *http.Request) error {
	return s.Limiter.Add(r.Context(), ratelimit.Counter{Limit: s.Limits.SharedSecretFailures, Key: clientAddress(r)})
}

// maxIDLength is the spec's limit on user IDs and the other identifiers
// that become parts of table keys here (device IDs, sessions, nonces): far
// under DynamoDB's 2,048 bytes of partition key and 1,024 of sort key.
const maxIDLength = 255

// accountOf is the user ID a login identifier names, in the form the
// account is stored and counted under: a localpart or a full user ID, the
// localpart in any case (carol, @carol:example.org and @Carol:example.org
// are one account, as Synapse has it). local says it is one of this
// server's. An identifier that makes a user ID over 255 bytes is refused
// with 400 M_INVALID_PARAM before anything is read.
func (s *Service) accountOf(user string) (userID string, local bool, err error) {
	id := user
	if !strings.HasPrefix(user, "@") {
		id = "@" + user + ":" + s.ServerName
	}
	if len(id) > maxIDLength {
		return "", false, httpapi.InvalidParam("the user ID is longer than %d bytes", maxIDLength)
	}
	localpart, server, ok := strings.Cut(id[1:], ":")
	if !ok || localpart == "" || !strings.EqualFold(server, s.ServerName) {
		return strings.ToLower(id), false, nil
	}
	return "@" + strings.ToLower(localpart) + ":" + s.ServerName, true, nil
}

// checkID refuses an identifier from the client that would become part of
// a table key, when it is longer than the spec allows.
func checkID(name, id string) error {
	if len(id) > maxIDLength {
		return httpapi.InvalidParam("%s is longer than %d bytes", name, maxIDLength)
	}
	return nil
}

// clientAddress is the caller's IP: API Gateway's source IP in Lambda, the
// peer locally.
func clientAddress(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return strings.Trim(r.RemoteAddr, "[]")
}
