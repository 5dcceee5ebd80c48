package threepid

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// The pages of the link in a validation mail (templates validate_*.html).
const (
	pageConfirm = "validate_confirm"
	pageResult  = "validate_result"
)

// Why a link does not validate. The page says one of these and nothing
// more: an unknown session, a wrong token and a fake session
// (request_token_inhibit_3pid_errors) read the same.
const (
	failBadLink = "This link is not valid or has expired. Ask for a new mail and follow the link in it."
	failUsed    = "This link was already used: the address is already confirmed."
)

// purposeText tells the reader what confirming does, so that someone who
// did not ask for it (a password reset of their account) stops.
var purposeText = map[string]string{
	PurposeAdd:      "Confirming adds this address to a Matrix account.",
	PurposeRegister: "Confirming lets a new Matrix account be registered with this address.",
	PurposePassword: "Confirming lets the person who asked reset the password of the account with this address. If you did not ask for a password reset, do not confirm: close this page.",
}

// handleSubmitPage shows the confirm button of a valid link. It validates
// nothing: mail scanners fetch links, and a session a scanner validated
// would let whoever asked for it use the address (reset the password of
// its account).
func (s *Service) handleSubmitPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	sid, token := q.Get("sid"), q.Get("token")
	it, ok := s.openLink(w, r, sid, token, http.StatusOK)
	if !ok {
		return
	}
	s.page(w, r, http.StatusOK, pageConfirm, map[string]string{
		"App": s.Config.Email.App(), "Address": it.Address, "Purpose": purposeText[it.Purpose],
		"Action": s.submitURL(), "SID": sid, "Token": token,
	})
}

// submitURL is the page's address under public_baseurl, as the mail's
// link has it (a base URL with a path keeps it).
func (s *Service) submitURL() string {
	return strings.TrimSuffix(s.Config.PublicBaseURL, "/") + SubmitPath
}

// handleSubmit validates the session: the token, compared in constant
// time, works once and until it expires.
//
// Cost: one GetItem and, when it validates, one conditional PutItem.
func (s *Service) handleSubmit(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		s.resultPage(w, r, http.StatusBadRequest, false, failBadLink, "")
		return
	}
	sid, token := r.PostForm.Get("sid"), r.PostForm.Get("token")
	it, ok := s.openLink(w, r, sid, token, http.StatusBadRequest)
	if !ok {
		return
	}
	prev := it.State
	it.State, it.ValidatedAt = stateValidated, s.now().UnixMilli()
	err := s.Store.PutIf(r.Context(), it, "state", prev)
	if errors.Is(err, store.ErrConflict) {
		// Another submit of this session came first.
		s.resultPage(w, r, http.StatusBadRequest, false, failUsed, "")
		return
	}
	if err != nil {
		s.failPage(w, r, fmt.Errorf("threepid: validate session: %w", err))
		return
	}
	s.resultPage(w, r, http.StatusOK, true, "Your email address "+it.Address+" is confirmed. You can close this page and go back to your Matrix client.", it.NextLink)
}

// openLink loads the session a link names and, when the link is bad or
// its session already validated, answers the failure page (a used link
// with usedStatus: a page to look at for the GET, an error for the POST);
// it reports whether the session may go on to be validated.
func (s *Service) openLink(w http.ResponseWriter, r *http.Request, sid, token string, usedStatus int) (sessionItem, bool) {
	it, ok, err := s.checkLink(r.Context(), sid, token)
	switch {
	case err != nil:
		s.failPage(w, r, err)
	case !ok:
		s.resultPage(w, r, http.StatusBadRequest, false, failBadLink, "")
	case it.State == stateValidated:
		s.resultPage(w, r, usedStatus, false, failUsed, "")
	default:
		return it, true
	}
	return it, false
}

// checkLink loads the session of sid and reports whether token is one of
// its live tokens.
func (s *Service) checkLink(ctx context.Context, sid, token string) (sessionItem, bool, error) {
	var it sessionItem
	if sid == "" || token == "" || len(sid) > 255 || len(token) > 255 {
		return it, false, nil
	}
	err := s.Store.Get(ctx, sessionKey(sid), &it)
	if errors.Is(err, store.ErrNotFound) {
		return it, false, nil
	}
	if err != nil {
		return it, false, fmt.Errorf("threepid: read session: %w", err)
	}
	h, now := hashToken(token), s.now().Unix()
	match := false
	for _, t := range it.Tokens {
		if subtle.ConstantTimeCompare(t.Hash, h) == 1 && t.Expires > now {
			match = true
		}
	}
	return it, match, nil
}

// resultPage shows the outcome; a successful one with a next_link offers a
// link to it. (Not a redirect: the confirm page's CSP form-action 'self'
// makes browsers refuse a form submission that redirects elsewhere.)
func (s *Service) resultPage(w http.ResponseWriter, r *http.Request, status int, ok bool, message, next string) {
	title := "Email address confirmed"
	if !ok {
		title = "Email address not confirmed"
	}
	s.page(w, r, status, pageResult, map[string]any{
		"App": s.Config.Email.App(), "Title": title, "Message": message, "OK": ok, "NextLink": next,
	})
}

// failPage answers a server fault with a page, not JSON: a person reads it.
func (s *Service) failPage(w http.ResponseWriter, r *http.Request, err error) {
	httpapi.Logger(r.Context()).ErrorContext(r.Context(), "validation page failed", "err", err)
	s.page(w, r, http.StatusInternalServerError, pageResult, map[string]any{
		"App": s.Config.Email.App(), "Title": "Something went wrong", "OK": false, "NextLink": "",
		"Message": "The server could not check this link. Try again in a moment.",
	})
}

func (s *Service) page(w http.ResponseWriter, r *http.Request, status int, name string, data any) {
	if err := s.Templates.Page(w, status, name, data); err != nil {
		httpapi.WriteError(w, r, err)
	}
}
