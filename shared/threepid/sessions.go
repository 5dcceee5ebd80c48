package threepid

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	cmail "github.com/cirrus-matrix/cirrus/shared/mail"
	"github.com/cirrus-matrix/cirrus/shared/ratelimit"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Purposes of a validation session: each has its requestToken endpoint
// and its mail.
const (
	PurposeAdd      = "add_threepid"
	PurposePassword = "password_reset"
	PurposeRegister = "registration"
)

// SubmitPath is the page the validation mail links to (GET shows a
// confirm button, POST validates).
const SubmitPath = "/_synapse/client/email/submit_token"

// maxTokens bounds the live tokens of one session: each mail a greater
// send_attempt sends adds one, and the links of earlier mails keep working
// until they expire.
const maxTokens = 5

// Session states.
const (
	statePending   = "pending"
	stateValidated = "validated"
)

// sessionItem is one validation session. The token itself is never
// stored, only its hash; the client secret is not stored either: the
// session ID is derived from it (sessionID).
type sessionItem struct {
	PK          string      `dynamodbav:"pk"`
	SK          string      `dynamodbav:"sk"`
	Medium      string      `dynamodbav:"medium"`
	Address     string      `dynamodbav:"address"`
	Purpose     string      `dynamodbav:"purpose"`
	SendAttempt int64       `dynamodbav:"send_attempt"`
	Tokens      []tokenHash `dynamodbav:"tokens"`
	State       string      `dynamodbav:"state"`
	ValidatedAt int64       `dynamodbav:"validated_at,omitempty"`
	NextLink    string      `dynamodbav:"next_link,omitempty"`
	Expires     int64       `dynamodbav:"expires_at"`
}

type tokenHash struct {
	Hash    []byte `dynamodbav:"hash"`
	Expires int64  `dynamodbav:"expires_at"`
}

func sessionKey(sid string) store.Key { return store.Key{PK: "3pid.session|" + sid, SK: "session"} }

// clientSecretRE is the spec's client_secret.
var clientSecretRE = regexp.MustCompile(`^[0-9a-zA-Z.=_-]{1,255}$`)

func checkClientSecret(secret string) error {
	if secret == "" {
		return httpapi.MissingParam("client_secret is required")
	}
	if !clientSecretRE.MatchString(secret) {
		return httpapi.InvalidParam("client_secret must be 1 to 255 characters of [0-9a-zA-Z.=_-]")
	}
	return nil
}

// sessionID derives the session ID from what identifies a session: the
// same client secret, address and purpose give the same sid (send_attempt
// is scoped to them), and a sid reveals nothing of the secret. A fake
// session (request_token_inhibit_3pid_errors) gets its sid the same way,
// so that it cannot be told from a real one.
func sessionID(clientSecret, purpose, medium, address string) string {
	h := sha256.Sum256([]byte(clientSecret + "\x00" + purpose + "\x00" + medium + "\x00" + address))
	return base64.RawURLEncoding.EncodeToString(h[:24])
}

func hashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

func newToken() string {
	var b [24]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// requestTokenBody is the spec's request_email_validation.
type requestTokenBody struct {
	ClientSecret  string `json:"client_secret"`
	Email         string `json:"email"`
	SendAttempt   *int64 `json:"send_attempt"`
	NextLink      string `json:"next_link"`
	IDServer      string `json:"id_server"`       // ignored: this server sends the mail
	IDAccessToken string `json:"id_access_token"` // ignored
}

// handleRequestToken serves the email requestToken endpoint of purpose.
func (s *Service) handleRequestToken(purpose string) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		if s.Config.Email == nil {
			return httpapi.Errorf(http.StatusBadRequest, "M_THREEPID_MEDIUM_NOT_SUPPORTED",
				"this server cannot validate email addresses: mail is not configured (no email block)")
		}
		var body requestTokenBody
		if err := httpapi.DecodeJSON(r, &body); err != nil {
			return err
		}
		if err := checkClientSecret(body.ClientSecret); err != nil {
			return err
		}
		if body.Email == "" {
			return httpapi.MissingParam("email is required")
		}
		address, err := NormalizeEmail(body.Email)
		if err != nil {
			return err
		}
		if body.SendAttempt == nil {
			return httpapi.MissingParam("send_attempt is required")
		}
		if err := checkNextLink(body.NextLink); err != nil {
			return err
		}
		if err := s.allow(r, address); err != nil {
			return err
		}
		sid := sessionID(body.ClientSecret, purpose, MediumEmail, address)
		if err := s.checkPurpose(r.Context(), purpose, address); err != nil {
			var me *httpapi.Error
			if s.Config.RequestTokenInhibit3PIDErrors && errors.As(err, &me) {
				// Answer as if the mail went out, so that the answer does
				// not tell whether the address has an account. No session
				// is stored: submitting this sid fails as a wrong token.
				// The wait stands in for the mail's (Synapse waits too).
				if err := sleepRandomly(r.Context()); err != nil {
					return err
				}
				httpapi.WriteJSON(w, http.StatusOK, map[string]string{"sid": sid})
				return nil
			}
			return err
		}
		if err := s.startSession(r.Context(), sid, purpose, address, *body.SendAttempt, body.NextLink); err != nil {
			return err
		}
		httpapi.WriteJSON(w, http.StatusOK, map[string]string{"sid": sid})
		return nil
	}
}

// sleepRandomly waits 100 ms to 1 s, about what sending a mail takes.
func sleepRandomly(ctx context.Context) error {
	var b [1]byte
	rand.Read(b[:])
	t := time.NewTimer(100*time.Millisecond + time.Duration(b[0])*900*time.Millisecond/255)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// checkNextLink accepts an absolute http or https URL: anything else
// (javascript:, data:) would run in the page that redirects to it.
func checkNextLink(link string) error {
	if link == "" {
		return nil
	}
	u, err := url.Parse(link)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return httpapi.InvalidParam("next_link must be an absolute http or https URL")
	}
	return nil
}

// checkPurpose refuses an address that is taken (adding it, registering
// with it) or that has no account (a password reset).
func (s *Service) checkPurpose(ctx context.Context, purpose, address string) error {
	owner, err := s.UserOf(ctx, MediumEmail, address)
	if err != nil {
		return err
	}
	switch {
	case purpose == PurposePassword && owner == "":
		return httpapi.Errorf(http.StatusBadRequest, "M_THREEPID_NOT_FOUND",
			"this email address is not associated with any account on this server")
	case purpose != PurposePassword && owner != "":
		return errInUse()
	}
	return nil
}

// validationLimit is rc_3pid_validation as a fixed-window limit: a burst of
// burst_count, the window the rate refills it in.
func (s *Service) validationLimit(name string) ratelimit.Limit {
	rl := s.Config.RC3PIDValidation
	if rl.PerSecond <= 0 || rl.BurstCount <= 0 {
		return ratelimit.Limit{Name: name}
	}
	window := time.Duration(math.Ceil(rl.BurstCount / rl.PerSecond * float64(time.Second)))
	return ratelimit.Limit{Name: name, Burst: int64(rl.BurstCount), Window: max(window, time.Second)}
}

// allow counts the request against rc_3pid_validation, for the address and
// for the client's IP address.
//
// Cost: two UpdateItems (2 WCU).
func (s *Service) allow(r *http.Request, address string) error {
	if err := s.Limiter.Allow(r.Context(), s.validationLimit("3pid.address"), address); err != nil {
		return err
	}
	return s.Limiter.Allow(r.Context(), s.validationLimit("3pid.ip"), clientIP(r))
}

func clientIP(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return strings.Trim(r.RemoteAddr, "[]")
}

// startSession stores the session sid, or a new token for it when
// sendAttempt is greater than the last one, and sends the mail; a
// send_attempt not greater than the last one sends nothing.
//
// Cost: one GetItem; when a mail goes out, one PutItem (conditional).
func (s *Service) startSession(ctx context.Context, sid, purpose, address string, sendAttempt int64, nextLink string) error {
	k := sessionKey(sid)
	var old sessionItem
	err := s.Store.Get(ctx, k, &old)
	found := err == nil
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("threepid: read session: %w", err)
	}
	if found && sendAttempt <= old.SendAttempt {
		return nil
	}
	now := s.now()
	token := newToken()
	expires := now.Add(s.Config.Email.ValidationLifetime()).Unix()
	item := sessionItem{PK: k.PK, SK: k.SK, Medium: MediumEmail, Address: address, Purpose: purpose,
		SendAttempt: sendAttempt, State: statePending, NextLink: nextLink, Expires: expires}
	if found && old.State == statePending {
		// Earlier mails' links keep working until they expire.
		for _, t := range old.Tokens {
			if t.Expires > now.Unix() {
				item.Tokens = append(item.Tokens, t)
			}
		}
		if len(item.Tokens) >= maxTokens {
			item.Tokens = item.Tokens[len(item.Tokens)-maxTokens+1:]
		}
	}
	item.Tokens = append(item.Tokens, tokenHash{Hash: hashToken(token), Expires: expires})
	if found {
		err = s.Store.PutIf(ctx, item, "send_attempt", old.SendAttempt)
	} else {
		err = s.Store.Create(ctx, item)
	}
	if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrExists) {
		// A request with the same send_attempt came first and sends
		// the mail.
		return nil
	}
	if err != nil {
		return fmt.Errorf("threepid: store session: %w", err)
	}
	return s.sendMail(ctx, purpose, address, sid, token)
}

// sendMail sends the validation mail with the link to the page.
func (s *Service) sendMail(ctx context.Context, purpose, address, sid, token string) error {
	if s.Mail == nil || s.Mail() == nil {
		return httpapi.Errorf(http.StatusInternalServerError, "M_UNKNOWN", "this server has no mail sender configured")
	}
	// The client secret is not in the link: the page needs only the sid
	// and the token, which prove the mail was read.
	q := url.Values{"sid": {sid}, "token": {token}}
	link := s.submitURL() + "?" + q.Encode()
	data := map[string]any{
		"App":        s.Config.Email.App(),
		"ServerName": s.Config.ServerName,
		"Address":    address,
		"Link":       link,
		"Lifetime":   spell(s.Config.Email.ValidationLifetime()),
	}
	msg, err := s.Templates.Mail(purpose, address, data)
	if err != nil {
		return fmt.Errorf("threepid: render %s mail: %w", purpose, err)
	}
	err = s.Mail().Send(ctx, msg)
	if errors.Is(err, cmail.ErrSuppressed) {
		return httpapi.Errorf(http.StatusForbidden, "M_THREEPID_DENIED",
			"mail to %s bounced or was reported as spam, so this server sends it no more: use another address", address)
	}
	if err != nil {
		httpapi.Logger(ctx).ErrorContext(ctx, "validation mail not sent", "purpose", purpose, "err", err)
		return httpapi.Errorf(http.StatusInternalServerError, "M_UNKNOWN",
			"the validation mail could not be sent: try again later with a greater send_attempt")
	}
	return nil
}

// Validated returns the address a validated session proved. A session
// that is unknown, expired, not validated yet, or whose client secret is
// not the one given is 400 M_THREEPID_AUTH_FAILED.
//
// Cost: one GetItem (1 RCU).
func (s *Service) Validated(ctx context.Context, sid, clientSecret string) (medium, address string, err error) {
	it, err := s.session(ctx, sid, clientSecret)
	if err != nil {
		return "", "", err
	}
	if it.State != stateValidated {
		return "", "", errAuthFailed("the email address has not been validated yet: follow the link in the mail and confirm")
	}
	return it.Medium, it.Address, nil
}

// Consume deletes the session sid, once it did what it proved the address
// for (a password reset): a validated session is otherwise good until it
// expires. One DeleteItem.
func (s *Service) Consume(ctx context.Context, sid string) error {
	if err := s.Store.Delete(ctx, sessionKey(sid)); err != nil {
		return fmt.Errorf("threepid: consume session: %w", err)
	}
	return nil
}

func errAuthFailed(msg string) *httpapi.Error {
	return httpapi.Errorf(http.StatusBadRequest, "M_THREEPID_AUTH_FAILED", "%s", msg)
}

// session loads a live session and checks the client secret against its
// sid.
func (s *Service) session(ctx context.Context, sid, clientSecret string) (sessionItem, error) {
	var it sessionItem
	if sid == "" || clientSecret == "" {
		return it, httpapi.MissingParam("sid and client_secret are required")
	}
	if err := checkClientSecret(clientSecret); err != nil {
		return it, err
	}
	if len(sid) > 255 {
		return it, errAuthFailed("no validation session with this sid and client_secret (or it expired)")
	}
	err := s.Store.Get(ctx, sessionKey(sid), &it)
	if errors.Is(err, store.ErrNotFound) {
		return it, errAuthFailed("no validation session with this sid and client_secret (or it expired)")
	}
	if err != nil {
		return it, fmt.Errorf("threepid: read session: %w", err)
	}
	want := sessionID(clientSecret, it.Purpose, it.Medium, it.Address)
	if subtle.ConstantTimeCompare([]byte(want), []byte(sid)) != 1 {
		return it, errAuthFailed("no validation session with this sid and client_secret (or it expired)")
	}
	return it, nil
}

// spell writes a lifetime as a reader says it: "1 hour", "90 minutes",
// "2 days", rather than Go's "1h0m0s".
func spell(d time.Duration) string {
	unit := func(n int64, name string) string {
		if n == 1 {
			return "1 " + name
		}
		return strconv.FormatInt(n, 10) + " " + name + "s"
	}
	switch {
	case d >= 24*time.Hour && d%(24*time.Hour) == 0:
		return unit(int64(d/(24*time.Hour)), "day")
	case d >= time.Hour && d%time.Hour == 0:
		return unit(int64(d/time.Hour), "hour")
	case d >= time.Minute:
		return unit(int64(d/time.Minute), "minute")
	}
	return unit(max(int64(d/time.Second), 1), "second")
}
