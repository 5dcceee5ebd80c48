package threepid

import (
	"encoding/json"
	"net/http"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
)

// handleList serves GET /account/3pid.
func (s *Service) handleList(w http.ResponseWriter, r *http.Request) error {
	list, err := s.Addresses(r.Context(), s.Caller(r.Context()))
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"threepids": list})
	return nil
}

// addBody is the body of POST /account/3pid/add.
type addBody struct {
	SID          string          `json:"sid"`
	ClientSecret string          `json:"client_secret"`
	Auth         json.RawMessage `json:"auth"`
}

// handleAdd serves POST /account/3pid/add: the caller's password (UIA),
// then a session validated with the same client secret binds its address.
func (s *Service) handleAdd(w http.ResponseWriter, r *http.Request) error {
	var body addBody
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return err
	}
	if body.SID == "" || body.ClientSecret == "" {
		return httpapi.MissingParam("sid and client_secret are required")
	}
	if err := checkClientSecret(body.ClientSecret); err != nil {
		return err
	}
	if !s.UIA(w, r, body.Auth) {
		return nil
	}
	return s.addValidated(w, r, body.SID, body.ClientSecret)
}

// addValidated binds the address of the validated session to the caller.
func (s *Service) addValidated(w http.ResponseWriter, r *http.Request, sid, clientSecret string) error {
	it, err := s.session(r.Context(), sid, clientSecret)
	if err != nil {
		return err
	}
	if it.State != stateValidated {
		return errAuthFailed("the email address has not been validated yet: follow the link in the mail and confirm")
	}
	if err := s.bind(r.Context(), s.Caller(r.Context()), it.Medium, it.Address, it.ValidatedAt); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// legacyBody is the body of the deprecated POST /account/3pid.
type legacyBody struct {
	Creds *struct {
		ClientSecret  string `json:"client_secret"`
		SID           string `json:"sid"`
		IDServer      string `json:"id_server"`
		IDAccessToken string `json:"id_access_token"`
	} `json:"three_pid_creds"`
	Bind bool `json:"bind"` // removed from the spec: ignored
}

// handleLegacyAdd serves the deprecated POST /account/3pid. Credentials
// of a session this server validated add its address, as Synapse does
// (older clients add addresses this way); otherwise, with an identity
// server named, it is /3pid/bind, as the spec now describes it. Anything
// else is 403 M_THREEPID_AUTH_FAILED, the spec's answer.
func (s *Service) handleLegacyAdd(w http.ResponseWriter, r *http.Request) error {
	var body legacyBody
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return err
	}
	c := body.Creds
	if c == nil {
		return httpapi.MissingParam("three_pid_creds is required")
	}
	if err := checkClientSecret(c.ClientSecret); err != nil {
		return err
	}
	if c.SID == "" {
		return httpapi.MissingParam("three_pid_creds.sid is required")
	}
	it, err := s.session(r.Context(), c.SID, c.ClientSecret)
	if err == nil && it.State == stateValidated {
		return s.addValidated(w, r, c.SID, c.ClientSecret)
	}
	if err != nil && !isAuthFailed(err) {
		return err
	}
	if c.IDServer != "" {
		return s.bindRemote(w, r, bindBody{ClientSecret: c.ClientSecret, SID: c.SID, IDServer: c.IDServer, IDAccessToken: c.IDAccessToken})
	}
	return httpapi.Errorf(http.StatusForbidden, "M_THREEPID_AUTH_FAILED",
		"no validated session with this sid and client_secret on this server, and no id_server to ask")
}

func isAuthFailed(err error) bool {
	me, ok := err.(*httpapi.Error)
	return ok && me.Code == "M_THREEPID_AUTH_FAILED"
}

// threepidBody is the body of /3pid/delete and /3pid/unbind.
type threepidBody struct {
	Medium   string `json:"medium"`
	Address  string `json:"address"`
	IDServer string `json:"id_server"`
}

func decodeThreepid(r *http.Request) (threepidBody, error) {
	var body threepidBody
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return body, err
	}
	if body.Address == "" {
		return body, httpapi.MissingParam("address is required")
	}
	a, err := normalize(body.Medium, body.Address)
	body.Address = a
	return body, err
}

// handleDelete serves POST /account/3pid/delete: the address leaves the
// account, and the identity server it was bound through (or the one
// named) is asked to unbind it.
func (s *Service) handleDelete(w http.ResponseWriter, r *http.Request) error {
	body, err := decodeThreepid(r)
	if err != nil {
		return err
	}
	userID := s.Caller(r.Context())
	if err := s.unbindLocal(r.Context(), userID, body.Medium, body.Address); err != nil {
		return err
	}
	result, err := s.unbindRemote(r, userID, body, false)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"id_server_unbind_result": result})
	return nil
}

// handleUnbind serves POST /account/3pid/unbind: the identity server
// forgets the address, the account keeps it.
func (s *Service) handleUnbind(w http.ResponseWriter, r *http.Request) error {
	body, err := decodeThreepid(r)
	if err != nil {
		return err
	}
	result, err := s.unbindRemote(r, s.Caller(r.Context()), body, true)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"id_server_unbind_result": result})
	return nil
}
