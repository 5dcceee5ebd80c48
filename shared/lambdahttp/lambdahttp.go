// Package lambdahttp runs a net/http handler as a Lambda function behind an
// API Gateway HTTP API (payload format 2.0).
//
// It is our own small adapter rather than aws-lambda-go-api-proxy because
// that one splits header values on commas, which breaks the Matrix
// "Authorization: X-Matrix origin=...,key=...,sig=..." header, and because
// X-Matrix signatures cover the request URI exactly as sent: the raw path and
// raw query string reach handlers untouched, never decoded and encoded again.
//
// The handler sees what net/http's server would give it for the same request:
// r.URL.Path decoded for routing, r.URL.EscapedPath() and r.RequestURI as
// sent, the Host header moved to r.Host, a sniffed Content-Type when the
// handler sets none, and no response body for HEAD, 204 and 304.
package lambdahttp

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
)

// Start serves h as the function's handler with lambda.Start; it does not
// return.
func Start(h http.Handler) { lambda.Start(Handler(h)) }

// Handler adapts h to the Lambda handler signature of an HTTP API with
// payload format 2.0. The returned error is always nil: an event that is not
// a valid request (a malformed percent-encoding, a body that is not base64
// though flagged so) gets a 400 with a Matrix error body, as net/http's
// server answers 400 to a request it cannot parse.
func Handler(h http.Handler) func(context.Context, events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
	return func(ctx context.Context, ev events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
		r, err := Request(ctx, ev)
		if err != nil {
			return events.APIGatewayV2HTTPResponse{
				StatusCode: http.StatusBadRequest,
				Headers:    map[string]string{"Content-Type": "application/json"},
				Body:       `{"errcode":"M_UNRECOGNIZED","error":"malformed request"}`,
			}, nil
		}
		w := &responseWriter{header: http.Header{}}
		h.ServeHTTP(w, r)
		return w.response(r.Method), nil
	}
}

// Request builds the http.Request of an API Gateway event, with ctx as its
// context:
//
//   - r.URL.Path is the decoded path, for routing; r.URL.RawPath,
//     r.URL.EscapedPath() and r.RequestURI keep the event's rawPath exactly,
//     and r.URL.RawQuery its rawQueryString;
//   - headers are copied whole: API Gateway has already joined repeated
//     headers with commas, and a value is never split on them;
//   - the event's cookies become one Cookie header;
//   - r.Host is the requestContext's domainName, or the Host header without
//     one; r.RemoteAddr is the requestContext's sourceIp (an address without
//     a port);
//   - the X-Request-Id header is API Gateway's requestId unless the client
//     sent one.
func Request(ctx context.Context, ev events.APIGatewayV2HTTPRequest) (*http.Request, error) {
	rawPath := ev.RawPath
	if rawPath == "" {
		rawPath = ev.RequestContext.HTTP.Path
	}
	if !strings.HasPrefix(rawPath, "/") {
		rawPath = "/" + rawPath
	}
	path, err := url.PathUnescape(rawPath)
	if err != nil {
		return nil, fmt.Errorf("path %q: %w", rawPath, err)
	}
	body := []byte(ev.Body)
	if ev.IsBase64Encoded {
		if body, err = base64.StdEncoding.DecodeString(ev.Body); err != nil {
			return nil, fmt.Errorf("body: %w", err)
		}
	}
	method := ev.RequestContext.HTTP.Method
	if method == "" {
		method = http.MethodGet
	}
	r, err := http.NewRequestWithContext(ctx, method, "/", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("method %q: %w", method, err)
	}
	r.URL = &url.URL{Path: path, RawPath: rawPath, RawQuery: ev.RawQueryString}
	r.RequestURI = rawPath
	if ev.RawQueryString != "" {
		r.RequestURI += "?" + ev.RawQueryString
	}
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.1", 1, 1
	if major, minor, ok := http.ParseHTTPVersion(ev.RequestContext.HTTP.Protocol); ok {
		r.Proto, r.ProtoMajor, r.ProtoMinor = ev.RequestContext.HTTP.Protocol, major, minor
	}
	r.ContentLength = int64(len(body))
	r.RemoteAddr = ev.RequestContext.HTTP.SourceIP
	for k, v := range ev.Headers {
		r.Header[http.CanonicalHeaderKey(k)] = []string{v}
	}
	if len(ev.Cookies) > 0 {
		r.Header.Set("Cookie", strings.Join(ev.Cookies, "; "))
	}
	r.Host = ev.RequestContext.DomainName
	if r.Host == "" {
		r.Host = r.Header.Get("Host")
	}
	// net/http's server moves Host out of the header map; so do we.
	r.Header.Del("Host")
	if r.Header.Get("X-Request-Id") == "" && ev.RequestContext.RequestID != "" {
		r.Header.Set("X-Request-Id", ev.RequestContext.RequestID)
	}
	return r, nil
}

// responseWriter buffers the response: Lambda returns it whole.
type responseWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
	// sniff says the Content-Type is to be sniffed from the body.
	sniff bool
}

func (w *responseWriter) Header() http.Header { return w.header }

func (w *responseWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	return w.body.Write(b)
}

func (w *responseWriter) WriteHeader(status int) {
	if w.status != 0 {
		return
	}
	w.status = status
	// As net/http does: a body without a declared type gets a sniffed one.
	// The header must be absent, not merely empty, for this to apply.
	if _, declared := w.header["Content-Type"]; !declared && bodyAllowed(status) {
		w.sniff = true
	}
}

func (w *responseWriter) response(method string) events.APIGatewayV2HTTPResponse {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	body := w.body.Bytes()
	if method == http.MethodHead || !bodyAllowed(w.status) {
		body = nil
	}
	if w.sniff && len(body) > 0 {
		w.header.Set("Content-Type", http.DetectContentType(body))
	}
	res := events.APIGatewayV2HTTPResponse{StatusCode: w.status, Headers: map[string]string{}}
	for k, vs := range w.header {
		if len(vs) == 0 {
			continue
		}
		if http.CanonicalHeaderKey(k) == "Set-Cookie" {
			res.Cookies = append(res.Cookies, vs...)
			continue
		}
		res.Headers[k] = strings.Join(vs, ", ")
	}
	switch {
	case len(body) == 0:
	case asText(w.header, body):
		res.Body = string(body)
	default:
		res.Body = base64.StdEncoding.EncodeToString(body)
		res.IsBase64Encoded = true
	}
	if payloadSize(res) > MaxPayload {
		// Lambda would refuse it and API Gateway answer a bare 500: say
		// what happened instead. shared/bigbody keeps answers from
		// getting here.
		return events.APIGatewayV2HTTPResponse{
			StatusCode: http.StatusInternalServerError,
			Headers:    map[string]string{"Content-Type": "application/json"},
			Body:       `{"errcode":"M_UNKNOWN","error":"the response is larger than the 6 MB a Lambda function may return"}`,
		}
	}
	return res
}

// MaxPayload is the most a Lambda function's response may carry, the whole
// JSON document the runtime sends (headers, and the body as a JSON string or
// in base64); a request's event has the same limit.
const MaxPayload = 6 << 20

// PayloadSize is an upper bound of the size of the response the runtime
// would send for a handler's answer of this header and body, within a few
// hundred bytes: the body counts as the escaped JSON string or the base64
// the adapter turns it into.
func PayloadSize(h http.Header, body []byte) int {
	n := envelopeSize
	for k, vs := range h {
		n += jsonLen(k) + 4
		for _, v := range vs {
			n += jsonLen(v) + 2
		}
	}
	if _, declared := h["Content-Type"]; !declared {
		n += 64 // sniffed
	}
	if asText(h, body) {
		return n + jsonLen(body)
	}
	return n + base64.StdEncoding.EncodedLen(len(body))
}

// envelopeSize bounds the rest of the response document: its field names,
// status code and flags.
const envelopeSize = 256

func payloadSize(res events.APIGatewayV2HTTPResponse) int {
	n := envelopeSize
	for k, v := range res.Headers {
		n += jsonLen(k) + jsonLen(v) + 2
	}
	for _, c := range res.Cookies {
		n += jsonLen(c) + 1
	}
	if res.IsBase64Encoded {
		return n + len(res.Body)
	}
	return n + jsonLen(res.Body)
}

// jsonLen is the length of s as a JSON string, quotes included, encoded
// as encoding/json does with HTML escaping (the runtime's escapes less).
func jsonLen[T string | []byte](s T) int {
	n := 2
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f':
				n += 2
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				n += 6
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune([]byte(string(s[i:min(i+utf8.UTFMax, len(s))])))
		switch {
		case r == utf8.RuneError && size == 1:
			n += 6 // \ufffd
		case r == '\u2028' || r == '\u2029':
			n += 6
		default:
			n += size
		}
		i += size
	}
	return n
}

// asText reports whether the adapter sends body as a plain JSON string:
// a textual Content-Type (declared or sniffed), no Content-Encoding, and
// valid UTF-8. The runtime sends the response as JSON, whose strings would
// turn bytes that are not UTF-8 into U+FFFD: those go in base64, as does a
// compressed body.
func asText(h http.Header, body []byte) bool {
	ct := h.Get("Content-Type")
	if _, declared := h["Content-Type"]; !declared {
		ct = http.DetectContentType(body)
	}
	if ce := h.Get("Content-Encoding"); ce != "" && ce != "identity" {
		return false
	}
	return textual(ct) && utf8.Valid(body)
}

// bodyAllowed reports whether a response of this status may have a body.
func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// textual reports whether a response body of this Content-Type goes to API
// Gateway as a plain string, if it is UTF-8: text/*, JSON (application/json
// and any +json), JavaScript and XML. Any other body (media, unknown types)
// is base64-encoded, so that no byte is lost.
func textual(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return strings.HasPrefix(mt, "text/") ||
		mt == "application/json" || strings.HasSuffix(mt, "+json") ||
		mt == "application/javascript" ||
		mt == "application/xml" || strings.HasSuffix(mt, "+xml")
}
