package serverkeys

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/protocol"
)

type originKey struct{}

// Origin returns the server name a request was verified to come from, or
// "" outside RequireServer.
func Origin(ctx context.Context) string {
	s, _ := ctx.Value(originKey{}).(string)
	return s
}

// RequireServer lets through only requests signed by another server, as
// the spec's request authentication has it: the Authorization: X-Matrix
// header's signature over the method, the request URI exactly as sent
// (raw path and query), the origin, the destination and the JSON body must
// verify with the origin's key, valid now. Anything else is 401
// M_UNAUTHORIZED. The handler finds the origin with Origin and the body
// unread.
// https://spec.matrix.org/v1.19/server-server-api/#request-authentication
func (k *Keys) RequireServer(next http.Handler) http.Handler {
	return httpapi.Handle(func(w http.ResponseWriter, r *http.Request) error {
		origin, body, err := k.authenticate(r)
		if err != nil {
			return err
		}
		r = r.WithContext(context.WithValue(r.Context(), originKey{}, origin))
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r)
		return nil
	})
}

func unauthorized(format string, args ...any) *httpapi.Error {
	return httpapi.Errorf(http.StatusUnauthorized, "M_UNAUTHORIZED", format, args...)
}

// signedRequest is the JSON object a request's signature covers.
type signedRequest struct {
	Method      string                       `json:"method"`
	URI         string                       `json:"uri"`
	Origin      string                       `json:"origin"`
	Destination string                       `json:"destination"`
	Content     json.RawMessage              `json:"content,omitempty"`
	Signatures  map[string]map[string]string `json:"signatures"`
}

// authenticate verifies r's X-Matrix signature and returns the origin and
// the body it read.
func (k *Keys) authenticate(r *http.Request) (string, []byte, error) {
	var params map[string]string
	for _, h := range r.Header.Values("Authorization") {
		p, ok, err := parseXMatrix(h)
		if err != nil {
			return "", nil, unauthorized("malformed Authorization: X-Matrix header: %v", err)
		}
		if ok {
			params = p
			break
		}
	}
	if params == nil {
		return "", nil, unauthorized("missing Authorization: X-Matrix header: requests between servers must be signed")
	}
	origin, keyID, sig, dest := params["origin"], params["key"], params["sig"], params["destination"]
	if origin == "" || keyID == "" || sig == "" {
		return "", nil, unauthorized("the X-Matrix header needs origin, key and sig")
	}
	if !protocol.ValidServerName(origin) {
		return "", nil, unauthorized("origin %q is not a server name", origin)
	}
	if dest == "" {
		// Servers before spec v1.3 leave it out of the header, but
		// signed it all the same.
		dest = k.serverName
	} else if dest != k.serverName {
		return "", nil, unauthorized("destination %q is not this server (%s)", dest, k.serverName)
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return "", nil, httpapi.TooLarge("request body is over the %d byte limit", tooBig.Limit)
		}
		return "", nil, httpapi.BadJSON("could not read the request body: %v", err)
	}
	signed := signedRequest{
		Method: r.Method, URI: r.RequestURI, Origin: origin, Destination: dest,
		Signatures: map[string]map[string]string{origin: {keyID: sig}},
	}
	if signed.URI == "" {
		// A request made in this process, not read from the wire.
		signed.URI = r.URL.RequestURI()
	}
	if len(bytes.TrimSpace(body)) > 0 {
		if !json.Valid(body) {
			return "", nil, httpapi.NotJSON("request body is not valid JSON")
		}
		signed.Content = body
	}
	message, err := json.Marshal(signed)
	if err != nil {
		return "", nil, fmt.Errorf("x-matrix: %w", err)
	}
	err = k.VerifyJSON(r.Context(), origin, k.now(), message)
	if errors.Is(err, ErrSignature) {
		return "", nil, unauthorized("the request's signature by %s (key %s) does not verify: %s", origin, keyID, strings.TrimPrefix(err.Error(), ErrSignature.Error()+": "))
	}
	if err != nil {
		return "", nil, err
	}
	return origin, body, nil
}

// parseXMatrix reads an Authorization header of the X-Matrix scheme into
// its parameters, names in lower case, as RFC 9110 section 11.4 has them:
// values are tokens or quoted strings with backslash escapes, and, for
// older servers, unquoted values may hold colons. ok is false for another
// scheme.
func parseXMatrix(h string) (params map[string]string, ok bool, err error) {
	scheme, rest, _ := strings.Cut(strings.TrimLeft(h, " \t"), " ")
	if !strings.EqualFold(scheme, "X-Matrix") {
		return nil, false, nil
	}
	params = map[string]string{}
	s := rest
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			return params, true, nil
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return nil, true, fmt.Errorf("parameter %q has no value", s)
		}
		name := strings.ToLower(strings.TrimSpace(s[:eq]))
		s = strings.TrimLeft(s[eq+1:], " \t")
		var value string
		if strings.HasPrefix(s, `"`) {
			var b strings.Builder
			i, closed := 1, false
			for i < len(s) {
				c := s[i]
				if c == '\\' && i+1 < len(s) {
					b.WriteByte(s[i+1])
					i += 2
					continue
				}
				i++
				if c == '"' {
					closed = true
					break
				}
				b.WriteByte(c)
			}
			if !closed {
				return nil, true, fmt.Errorf("the value of %s has no closing quote", name)
			}
			value, s = b.String(), s[i:]
		} else {
			end := strings.IndexByte(s, ',')
			if end < 0 {
				end = len(s)
			}
			value, s = strings.TrimRight(s[:end], " \t"), s[end:]
		}
		if _, dup := params[name]; dup {
			return nil, true, fmt.Errorf("parameter %s is given twice", name)
		}
		params[name] = value
		s = strings.TrimLeft(s, " \t")
		if s != "" && s[0] != ',' {
			return nil, true, fmt.Errorf("expected a comma after %s", name)
		}
		if s != "" {
			s = s[1:]
		}
		// API Gateway joins repeated headers with commas: a second
		// X-Matrix header (another key's signature) starts here.
		if next, _, _ := strings.Cut(strings.TrimLeft(s, " \t"), " "); strings.EqualFold(next, "X-Matrix") {
			return params, true, nil
		}
	}
}
