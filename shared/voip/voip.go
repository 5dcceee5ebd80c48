// Package voip serves GET /voip/turnServer: the TURN servers that clients
// relay VoIP calls through, with credentials for the caller, made as
// Synapse makes them so that a TURN server set up for Synapse (coturn's
// use-auth-secret) works unchanged.
package voip

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"net/http"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/config"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
)

// Service answers with the configured TURN servers.
type Service struct {
	TURN config.TURN
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Register adds GET /voip/turnServer to rt behind requireAuth.
func (s *Service) Register(rt *httpapi.Router, requireAuth func(http.HandlerFunc) http.HandlerFunc) {
	rt.HandleFunc("GET /_matrix/client/v3/voip/turnServer", requireAuth(s.handleTurnServer))
}

// Credentials is the answer of /voip/turnServer.
type Credentials struct {
	Username string   `json:"username"`
	Password string   `json:"password"`
	URIs     []string `json:"uris"`
	// TTL is how long, in seconds, the credentials are good for.
	TTL int64 `json:"ttl"`
}

// handleTurnServer serves GET /_matrix/client/v3/voip/turnServer. Without
// TURN servers, or without a way to give credentials for them, the answer
// is {}, as Synapse's: clients then call without a relay.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3voipturnserver
func (s *Service) handleTurnServer(w http.ResponseWriter, r *http.Request) {
	c, ok := s.Credentials(accounts.Caller(r.Context()).UserID)
	if !ok {
		httpapi.WriteJSON(w, http.StatusOK, struct{}{})
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, c)
}

// Credentials makes userID's credentials for the TURN servers, and reports
// whether there are any. With a shared secret the username is
// "<expiry, Unix seconds>:<user ID>" and the password the base64 HMAC-SHA1
// of it under the secret: TURN REST API credentials, which the TURN server
// checks with the same secret and refuses after the expiry.
func (s *Service) Credentials(userID string) (Credentials, bool) {
	t := s.TURN
	if len(t.TurnURIs) == 0 {
		return Credentials{}, false
	}
	lifetime := t.TurnLifetime()
	c := Credentials{URIs: t.TurnURIs, TTL: int64(lifetime / time.Second)}
	switch {
	case t.TurnSharedSecret != "":
		c.Username = fmt.Sprintf("%d:%s", s.now().Add(lifetime).Unix(), userID)
		mac := hmac.New(sha1.New, []byte(t.TurnSharedSecret))
		mac.Write([]byte(c.Username))
		c.Password = base64.StdEncoding.EncodeToString(mac.Sum(nil))
	case t.TurnUsername != "" && t.TurnPassword != "":
		c.Username, c.Password = t.TurnUsername, t.TurnPassword
	default:
		return Credentials{}, false
	}
	return c, true
}
