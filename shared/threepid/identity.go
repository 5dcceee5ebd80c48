package threepid

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/store"

	"github.com/cirrus-matrix/cirrus/shared/gate"
)

// identityTimeout bounds a call to an identity server, well within API
// Gateway's 30 seconds.
const identityTimeout = 15 * time.Second

// maxIdentityResponse bounds what is read of an identity server's answer.
const maxIdentityResponse = 64 << 10

// errNoSupport marks an identity server's error answer that is not a
// Matrix error: the spec reads it, on unbind, as no support for unbinds.
var errNoSupport = errors.New("identity server answered without a Matrix error")

// bindBody is the body of POST /account/3pid/bind.
type bindBody struct {
	ClientSecret  string `json:"client_secret"`
	IDServer      string `json:"id_server"`
	IDAccessToken string `json:"id_access_token"`
	SID           string `json:"sid"`
}

// handleBind serves POST /account/3pid/bind: the identity server, asked
// with the client's own access token there, publishes the binding of its
// session's address to the caller; this server remembers which identity
// server it was, to unbind there later.
func (s *Service) handleBind(w http.ResponseWriter, r *http.Request) error {
	var body bindBody
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return err
	}
	return s.bindRemote(w, r, body)
}

func (s *Service) bindRemote(w http.ResponseWriter, r *http.Request, body bindBody) error {
	if err := checkClientSecret(body.ClientSecret); err != nil {
		return err
	}
	if body.SID == "" || body.IDServer == "" || body.IDAccessToken == "" {
		return httpapi.MissingParam("sid, id_server and id_access_token are required")
	}
	if err := checkIDServer(body.IDServer); err != nil {
		return err
	}
	userID := s.Caller(r.Context())
	doc, _ := json.Marshal(map[string]string{"sid": body.SID, "client_secret": body.ClientSecret, "mxid": userID})
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost,
		"https://"+body.IDServer+"/_matrix/identity/v2/3pid/bind", bytes.NewReader(doc))
	if err != nil {
		return httpapi.InvalidParam("id_server %q is not a host name", body.IDServer)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+body.IDAccessToken)
	var out struct {
		Medium  string `json:"medium"`
		Address string `json:"address"`
	}
	if err := s.callIdentity(req, body.IDServer, &out); err != nil {
		return err
	}
	address, err := normalize(out.Medium, out.Address)
	if err != nil {
		return httpapi.Errorf(http.StatusBadGateway, "M_UNKNOWN",
			"the identity server %s bound an address this server does not understand", body.IDServer)
	}
	k := userIDBindKey(userID, out.Medium, address)
	if err := s.Store.Put(r.Context(), userItem{PK: k.PK, SK: k.SK, Medium: out.Medium, Address: address,
		IDServer: body.IDServer, AddedAt: s.now().UnixMilli()}); err != nil {
		return fmt.Errorf("threepid: remember identity server: %w", err)
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// unbindRemote asks the identity server named in body, or the one the
// address was bound through, to unbind it, with a request signed by this
// server. "no-support" when there is none or it does not support unbinds.
// With strict (/3pid/unbind), its Matrix errors and an unreachable server
// are the client's answer; otherwise (/3pid/delete, where the account
// already lost the address) they are "no-support".
func (s *Service) unbindRemote(r *http.Request, userID string, body threepidBody, strict bool) (string, error) {
	ctx := r.Context()
	k := userIDBindKey(userID, body.Medium, body.Address)
	idServer := body.IDServer
	if idServer == "" {
		var it userItem
		err := s.Store.Get(ctx, k, &it)
		if errors.Is(err, store.ErrNotFound) {
			return "no-support", nil
		}
		if err != nil {
			return "", fmt.Errorf("threepid: read identity server bind: %w", err)
		}
		idServer = it.IDServer
	}
	if err := checkIDServer(idServer); err != nil {
		return "", err
	}
	path := "/_matrix/identity/v2/3pid/unbind"
	req, err := s.Sign(http.MethodPost, idServer, path, map[string]any{
		"mxid": userID, "threepid": map[string]string{"medium": body.Medium, "address": body.Address},
	})
	if err != nil {
		return "", fmt.Errorf("threepid: sign unbind: %w", err)
	}
	req = req.WithContext(ctx)
	req.URL = &url.URL{Scheme: "https", Host: idServer, Path: path}
	req.Host = idServer
	err = s.callIdentity(req, idServer, nil)
	switch {
	case err == nil:
	case errors.Is(err, errNoSupport):
		// Not a Matrix error: the identity server does not support
		// unbinds (the spec's reading of 400, 404 and 501 without one).
		return "no-support", nil
	case !strict:
		return "no-support", nil
	default:
		return "", err
	}
	if err := s.Store.Delete(ctx, k); err != nil {
		return "", fmt.Errorf("threepid: forget identity server bind: %w", err)
	}
	return "success", nil
}

// callIdentity sends req to the identity server idServer and decodes a
// 2xx answer into out (when not nil). A Matrix error answer is passed on
// as it is, as the spec asks; an answer that is not one is 502 and wraps
// errNoSupport (an unbind reads it as "no-support"); an unreachable server
// is 502 M_UNKNOWN saying so.
func (s *Service) callIdentity(req *http.Request, idServer string, out any) error {
	if err := gate.Wait(req.Context()); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(req.Context(), identityTimeout)
	defer cancel()
	resp, err := s.identityClient().Do(req.WithContext(ctx))
	if err != nil {
		httpapi.Logger(req.Context()).WarnContext(req.Context(), "identity server unreachable", "id_server", idServer, "err", err)
		return httpapi.Errorf(http.StatusBadGateway, "M_UNKNOWN", "the identity server %s could not be reached", idServer)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxIdentityResponse))
	if err != nil {
		return httpapi.Errorf(http.StatusBadGateway, "M_UNKNOWN", "the identity server %s did not answer in full", idServer)
	}
	if resp.StatusCode/100 != 2 {
		var merr struct {
			Code    string `json:"errcode"`
			Message string `json:"error"`
		}
		if json.Unmarshal(data, &merr) == nil && merr.Code != "" {
			status := resp.StatusCode
			if status < 400 || status > 599 || status == http.StatusInternalServerError {
				status = http.StatusBadGateway
			}
			return &httpapi.Error{Status: status, Code: merr.Code,
				Message: fmt.Sprintf("the identity server %s refused: %s", idServer, merr.Message)}
		}
		return fmt.Errorf("%w: %w", errNoSupport, httpapi.Errorf(http.StatusBadGateway, "M_UNKNOWN",
			"the identity server %s answered %d", idServer, resp.StatusCode))
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return httpapi.Errorf(http.StatusBadGateway, "M_UNKNOWN", "the identity server %s answered with something that is not JSON", idServer)
	}
	return nil
}

// checkIDServer accepts a host name with an optional port, as the spec's
// id_server is: no scheme, path or user.
func checkIDServer(idServer string) error {
	u, err := url.Parse("https://" + idServer)
	if err != nil || u.Host != idServer || u.User != nil || u.Path != "" || u.RawQuery != "" || u.Hostname() == "" {
		return httpapi.InvalidParam("id_server must be a host name with an optional port, such as id.example.org")
	}
	return nil
}

func (s *Service) identityClient() *http.Client {
	if s.IdentityClient != nil {
		return s.IdentityClient
	}
	return defaultIdentityClient
}

// defaultIdentityClient refuses to connect to loopback, private, link-local
// and unspecified addresses: id_server comes from a client, and must not
// reach what only this server can reach.
var defaultIdentityClient = &http.Client{
	Timeout: identityTimeout,
	Transport: &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{Timeout: 10 * time.Second, Control: func(network, address string, _ syscall.RawConn) error {
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return err
			}
			ip := net.ParseIP(host)
			if ip == nil || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
				ip.IsUnspecified() || ip.IsMulticast() {
				return fmt.Errorf("identity server address %s is not public", host)
			}
			return nil
		}}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
	},
	// An identity server that redirects is not followed elsewhere.
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}
