// Package lambdahttp runs a net/http handler as a Lambda function behind an
// API Gateway HTTP API (payload format 2.0).
//
// It is our own small adapter rather than aws-lambda-go-api-proxy because
// that one splits header values on commas, which breaks the Matrix
// "Authorization: X-Matrix origin=...,key=...,sig=..." header, and because
// X-Matrix signatures cover the request URI exactly as sent: the raw path and
// raw query string must reach handlers untouched, never decoded and encoded
// again.
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

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
)

// Start serves h as the function's handler; it does not return.
func Start(h http.Handler) { lambda.Start(Handler(h)) }

// Handler adapts h to the Lambda handler signature of an HTTP API.
func Handler(h http.Handler) func(context.Context, events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
	return func(ctx context.Context, ev events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
		r, err := Request(ctx, ev)
		if err != nil {
			// A payload API Gateway would never send: answer, don't crash.
			return events.APIGatewayV2HTTPResponse{
				StatusCode: http.StatusBadRequest,
				Headers:    map[string]string{"Content-Type": "application/json"},
				Body:       `{"errcode":"M_UNRECOGNIZED","error":"malformed request"}`,
			}, nil
		}
		w := newResponseWriter()
		h.ServeHTTP(w, r)
		return w.response(), nil
	}
}

// Request builds the http.Request of an API Gateway event. r.URL.Path is the
// decoded path for routing; r.URL.RawPath, r.URL.EscapedPath() and
// r.RequestURI keep the path as the client sent it.
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
	u := &url.URL{Path: path, RawPath: rawPath, RawQuery: ev.RawQueryString}
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
		return nil, err
	}
	r.URL = u
	r.RequestURI = u.RequestURI()
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.1", 1, 1
	r.ContentLength = int64(len(body))
	r.RemoteAddr = ev.RequestContext.HTTP.SourceIP
	// API Gateway already joined repeated headers with commas; keep each value whole.
	for k, v := range ev.Headers {
		r.Header.Set(k, v)
	}
	if len(ev.Cookies) > 0 {
		r.Header.Set("Cookie", strings.Join(ev.Cookies, "; "))
	}
	r.Host = ev.RequestContext.DomainName
	if host := r.Header.Get("Host"); host != "" {
		r.Host = host
	}
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
}

func newResponseWriter() *responseWriter { return &responseWriter{header: http.Header{}} }

func (w *responseWriter) Header() http.Header { return w.header }

func (w *responseWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.body.Write(b)
}

func (w *responseWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *responseWriter) response() events.APIGatewayV2HTTPResponse {
	res := events.APIGatewayV2HTTPResponse{StatusCode: w.status, Headers: map[string]string{}}
	if res.StatusCode == 0 {
		res.StatusCode = http.StatusOK
	}
	for k, vs := range w.header {
		if http.CanonicalHeaderKey(k) == "Set-Cookie" {
			res.Cookies = append(res.Cookies, vs...)
			continue
		}
		res.Headers[k] = strings.Join(vs, ", ")
	}
	if textual(w.header.Get("Content-Type")) {
		res.Body = w.body.String()
	} else if w.body.Len() > 0 {
		res.Body = base64.StdEncoding.EncodeToString(w.body.Bytes())
		res.IsBase64Encoded = true
	}
	return res
}

// textual reports whether a body of this type can go out as a plain string;
// anything else (media, unknown) is base64-encoded so no byte is lost.
func textual(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return strings.HasPrefix(mt, "text/") || mt == "application/json" || mt == "application/javascript" ||
		strings.HasSuffix(mt, "+json") || strings.HasSuffix(mt, "xml")
}
