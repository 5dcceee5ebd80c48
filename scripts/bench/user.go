package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
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
	endpoint := s.ClientURL + "/_synapse/admin/v1/register"
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	if err := postJSON(ctx, s, http.MethodGet, endpoint, nil, &nonce); err != nil {
		return fmt.Errorf("registration nonce: %w", err)
	}
	var reg struct {
		AccessToken string `json:"access_token"`
	}
	body := map[string]any{
		"nonce": nonce.Nonce, "username": benchUser, "password": benchPassword, "admin": false,
		"mac": accounts.RegistrationMAC(benchSecret, nonce.Nonce, benchUser, benchPassword, false),
	}
	if err := postJSON(ctx, s, http.MethodPost, endpoint, body, &reg); err != nil {
		return fmt.Errorf("register the bench user: %w", err)
	}
	if reg.AccessToken == "" {
		return fmt.Errorf("register the bench user: no access token")
	}
	s.token = reg.AccessToken
	return nil
}

func postJSON(ctx context.Context, s *server, method, url string, body, out any) error {
	var buf bytes.Buffer
	if body != nil {
		json.NewEncoder(&buf).Encode(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, &buf)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		var e map[string]any
		json.NewDecoder(res.Body).Decode(&e)
		return fmt.Errorf("%s %s: %d %v", method, url, res.StatusCode, e)
	}
	return json.NewDecoder(res.Body).Decode(out)
}
