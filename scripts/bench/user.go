package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
)

// The bench user exists on every server, made through Synapse's
// shared-secret registration API, which both servers implement.
const (
	benchSecret   = "bench-registration-secret"
	benchUser     = "bench"
	benchPassword = "bench password"
)

// setupUser registers the bench user on s and keeps an access token for
// the authenticated endpoints.
func setupUser(ctx context.Context, s *server) error {
	userID, token, err := register(ctx, s, benchUser, benchPassword)
	if err != nil {
		return err
	}
	s.userID, s.token = userID, token
	return nil
}

// register registers a user on s through the shared-secret API and returns
// its user ID and an access token.
func register(ctx context.Context, s *server, user, password string) (userID, token string, err error) {
	endpoint := s.ClientURL + "/_synapse/admin/v1/register"
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	if err := requestJSON(ctx, s, http.MethodGet, endpoint, "", nil, &nonce); err != nil {
		return "", "", fmt.Errorf("registration nonce: %w", err)
	}
	var reg struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
	}
	body := map[string]any{
		"nonce": nonce.Nonce, "username": user, "password": password, "admin": false,
		"mac": accounts.RegistrationMAC(benchSecret, nonce.Nonce, user, password, false),
	}
	if err := requestJSON(ctx, s, http.MethodPost, endpoint, "", body, &reg); err != nil {
		return "", "", fmt.Errorf("register %s: %w", user, err)
	}
	if reg.AccessToken == "" || reg.UserID == "" {
		return "", "", fmt.Errorf("register %s: no user ID or access token in the answer", user)
	}
	return reg.UserID, reg.AccessToken, nil
}

// requestJSON sends body as JSON, with token as bearer token unless empty,
// and decodes a 200 answer into out unless out is nil.
func requestJSON(ctx context.Context, s *server, method, url, token string, body, out any) error {
	var buf bytes.Buffer
	if body != nil {
		if err := json.NewEncoder(&buf).Encode(body); err != nil {
			return err
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, url, &buf)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return statusError(method, url, res.StatusCode, readSome(res.Body))
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(res.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode the answer: %w", method, url, err)
	}
	return nil
}

// statusError describes an answer other than 200, with its Matrix error code
// and message when the body has them.
func statusError(method, url string, status int, body []byte) error {
	var e struct {
		Code    string `json:"errcode"`
		Message string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Code != "" {
		return fmt.Errorf("%s %s: status %d %s: %s", method, url, status, e.Code, e.Message)
	}
	return fmt.Errorf("%s %s: status %d", method, url, status)
}

// readSome reads the start of an error answer's body, for its message.
func readSome(r io.Reader) []byte {
	body, _ := io.ReadAll(io.LimitReader(r, 4<<10))
	return body
}
