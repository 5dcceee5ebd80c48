package accounts

import (
	"context"
	"crypto/rand"
	"errors"
	"net/http"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Registration tokens limit open registration to people given a token, with
// Synapse's admin API to manage them:
// https://element-hq.github.io/synapse/latest/usage/administration/admin_api/registration_tokens.html

type regTokenItem struct {
	PK          string `dynamodbav:"pk"`
	SK          string `dynamodbav:"sk"`
	Token       string `dynamodbav:"token"`
	UsesAllowed *int64 `dynamodbav:"uses_allowed"` // nil: unlimited
	Completed   int64  `dynamodbav:"completed"`
	ExpiryTime  *int64 `dynamodbav:"expiry_time"` // Unix ms; nil: never
	GSI1PK      string `dynamodbav:"gsi1pk"`
	GSI1SK      string `dynamodbav:"gsi1sk"`
}

const regTokensIndexPK = "registration_tokens"

func regTokenKey(token string) store.Key { return store.Key{PK: "regtoken|" + token, SK: "regtoken"} }

func (t regTokenItem) json() map[string]any {
	return map[string]any{"token": t.Token, "uses_allowed": t.UsesAllowed, "pending": 0,
		"completed": t.Completed, "expiry_time": t.ExpiryTime}
}

// valid: not expired, uses left.
func (t regTokenItem) valid(now time.Time) bool {
	return (t.ExpiryTime == nil || now.UnixMilli() < *t.ExpiryTime) && (t.UsesAllowed == nil || t.Completed < *t.UsesAllowed)
}

// validToken reads a token and says whether it can register someone now.
func (s *Service) validToken(ctx context.Context, token string) (bool, error) {
	if !validTokenString(token) {
		return false, nil
	}
	var t regTokenItem
	err := s.Store.Get(ctx, regTokenKey(token), &t)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return t.valid(s.now()), nil
}

// useToken counts a completed registration against a token.
func (s *Service) useToken(ctx context.Context, token string) error {
	_, err := s.Store.Increment(ctx, regTokenKey(token), "completed", time.Time{})
	return err
}

// validTokenString is the spec's opaque identifier grammar, at most 64 long.
func validTokenString(t string) bool {
	if t == "" || len(t) > 64 {
		return false
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '~' || r == '-') {
			return false
		}
	}
	return true
}

// handleTokenValidity serves GET
// /_matrix/client/v1/register/m.login.registration_token/validity.
func (h *Registration) handleTokenValidity(w http.ResponseWriter, r *http.Request) error {
	if !h.Open {
		return httpapi.Forbidden("registration is disabled on this server, so no token is valid")
	}
	if err := h.Accounts.Limiter.Allow(r.Context(), h.Accounts.Limits.RegisterAddress, clientAddress(r)); err != nil {
		return err
	}
	token := r.URL.Query().Get("token")
	if token == "" {
		return httpapi.MissingParam("token is required")
	}
	ok, err := h.Accounts.validToken(r.Context(), token)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]bool{"valid": ok})
	return nil
}

// handleAdminListTokens serves GET /_synapse/admin/v1/registration_tokens
// (?valid=true|false filters).
func (s *Service) handleAdminListTokens(w http.ResponseWriter, r *http.Request) error {
	var all []regTokenItem
	cursor := ""
	for {
		var page []regTokenItem
		next, err := s.Store.QueryPage(r.Context(), store.Query{PK: regTokensIndexPK, Index: "gsi1", Cursor: cursor}, &page)
		if err != nil {
			return err
		}
		all = append(all, page...)
		if cursor = next; cursor == "" {
			break
		}
	}
	list := make([]map[string]any, 0, len(all))
	for _, t := range all {
		if v := r.URL.Query().Get("valid"); v != "" && (v == "true") != t.valid(s.now()) {
			continue
		}
		list = append(list, t.json())
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"registration_tokens": list})
	return nil
}

func (s *Service) regToken(r *http.Request) (regTokenItem, error) {
	var t regTokenItem
	token := r.PathValue("token")
	if !validTokenString(token) {
		return t, httpapi.NotFound("no such registration token")
	}
	err := s.Store.Get(r.Context(), regTokenKey(token), &t)
	if errors.Is(err, store.ErrNotFound) {
		return t, httpapi.NotFound("no such registration token")
	}
	return t, err
}

// handleAdminGetToken serves GET
// /_synapse/admin/v1/registration_tokens/{token}.
func (s *Service) handleAdminGetToken(w http.ResponseWriter, r *http.Request) error {
	t, err := s.regToken(r)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, t.json())
	return nil
}

type tokenLimits struct {
	UsesAllowed *int64 `json:"uses_allowed"`
	ExpiryTime  *int64 `json:"expiry_time"`
}

func (l tokenLimits) check(now time.Time) error {
	if l.UsesAllowed != nil && *l.UsesAllowed < 0 {
		return httpapi.InvalidParam("uses_allowed must be a non-negative integer or null")
	}
	if l.ExpiryTime != nil && *l.ExpiryTime < now.UnixMilli() {
		return httpapi.InvalidParam("expiry_time must not be in the past")
	}
	return nil
}

// handleAdminNewToken serves POST
// /_synapse/admin/v1/registration_tokens/new.
func (s *Service) handleAdminNewToken(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Token  string `json:"token"`
		Length *int   `json:"length"`
		tokenLimits
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	if err := req.check(s.now()); err != nil {
		return err
	}
	if req.Token == "" {
		n := 16
		if req.Length != nil {
			n = *req.Length
		}
		if n < 1 || n > 64 {
			return httpapi.InvalidParam("length must be from 1 to 64")
		}
		req.Token = randomTokenString(n)
	} else if !validTokenString(req.Token) {
		return httpapi.InvalidParam("token must be at most 64 characters of A-Z, a-z, 0-9, '.', '_', '~' and '-'")
	}
	k := regTokenKey(req.Token)
	t := regTokenItem{PK: k.PK, SK: k.SK, Token: req.Token, UsesAllowed: req.UsesAllowed, ExpiryTime: req.ExpiryTime,
		GSI1PK: regTokensIndexPK, GSI1SK: req.Token}
	if err := s.Store.Create(r.Context(), t); err != nil {
		if errors.Is(err, store.ErrExists) {
			return httpapi.InvalidParam("token %s is already in use", req.Token)
		}
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, t.json())
	return nil
}

// handleAdminUpdateToken serves PUT
// /_synapse/admin/v1/registration_tokens/{token}.
func (s *Service) handleAdminUpdateToken(w http.ResponseWriter, r *http.Request) error {
	var req map[string]*int64
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	t, err := s.regToken(r)
	if err != nil {
		return err
	}
	lim := tokenLimits{UsesAllowed: t.UsesAllowed, ExpiryTime: t.ExpiryTime}
	if v, ok := req["uses_allowed"]; ok {
		lim.UsesAllowed = v
	}
	if v, ok := req["expiry_time"]; ok {
		lim.ExpiryTime = v
	}
	if err := lim.check(s.now()); err != nil {
		return err
	}
	t.UsesAllowed, t.ExpiryTime = lim.UsesAllowed, lim.ExpiryTime
	if err := s.Store.Put(r.Context(), t); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, t.json())
	return nil
}

// handleAdminDeleteToken serves DELETE
// /_synapse/admin/v1/registration_tokens/{token}.
func (s *Service) handleAdminDeleteToken(w http.ResponseWriter, r *http.Request) error {
	t, err := s.regToken(r)
	if err != nil {
		return err
	}
	if err := s.Store.Delete(r.Context(), regTokenKey(t.Token)); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{})
	return nil
}

func randomTokenString(n int) string {
	const chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-"
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = chars[int(b[i])%len(chars)]
	}
	return string(b)
}
