package lambdahttp_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/cirrus-matrix/cirrus/shared/lambdahttp"
)

// xMatrix is a federation Authorization header: commas separate its
// parameters and may appear inside the quoted signature too.
const xMatrix = `X-Matrix origin="remote.example",destination="example.org",key="ed25519:a_1",sig="ABC,DEF/+g=="`

// baseEvent is a GET of /_matrix/client/versions as API Gateway sends it.
func baseEvent() events.APIGatewayV2HTTPRequest {
	return events.APIGatewayV2HTTPRequest{
		Version:        "2.0",
		RouteKey:       "ANY /_matrix/client/{proxy+}",
		RawPath:        "/_matrix/client/versions",
		RawQueryString: "",
		Headers: map[string]string{
			"accept":     "application/json",
			"host":       "matrix.example.org",
			"user-agent": "curl/8.5.0",
		},
		RequestContext: events.APIGatewayV2HTTPRequestContext{
			DomainName: "matrix.example.org",
			RequestID:  "Jx1aQhKgIAMEb0A=",
			Stage:      "$default",
			HTTP: events.APIGatewayV2HTTPRequestContextHTTPDescription{
				Method:    "GET",
				Path:      "/_matrix/client/versions",
				Protocol:  "HTTP/1.1",
				SourceIP:  "203.0.113.9",
				UserAgent: "curl/8.5.0",
			},
		},
	}
}

// observe runs ev through the adapter and returns what the handler saw, as
// strings: "header:<Name>" holds a header's values joined with "|" (so a
// value split on its commas would show), "pathValue:<name>" a wildcard
// matched by a Go 1.22 ServeMux pattern.
func observe(t *testing.T, ev events.APIGatewayV2HTTPRequest) map[string]string {
	t.Helper()
	var seen map[string]string
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_matrix/client/v3/profile/{userID}/{field}", func(w http.ResponseWriter, r *http.Request) {
		seen["pathValue:userID"] = r.PathValue("userID")
		seen["pathValue:field"] = r.PathValue("field")
	})
	mux.HandleFunc("PUT /_matrix/federation/v1/send/{txnID}", func(w http.ResponseWriter, r *http.Request) {
		seen["pathValue:txnID"] = r.PathValue("txnID")
	})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("read body: %v", err)
		}
		seen = map[string]string{
			"method":        r.Method,
			"proto":         r.Proto,
			"path":          r.URL.Path,
			"rawPath":       r.URL.RawPath,
			"escapedPath":   r.URL.EscapedPath(),
			"requestURI":    r.RequestURI,
			"urlRequestURI": r.URL.RequestURI(),
			"rawQuery":      r.URL.RawQuery,
			"host":          r.Host,
			"remoteAddr":    r.RemoteAddr,
			"body":          string(body),
			"contentLength": strconv.FormatInt(r.ContentLength, 10),
		}
		for k, vs := range r.Header {
			seen["header:"+k] = strings.Join(vs, "|")
		}
		mux.ServeHTTP(w, r)
	})
	res, err := lambdahttp.Handler(h)(context.Background(), ev)
	if err != nil {
		t.Fatalf("Handler returned error %v", err)
	}
	if seen == nil {
		t.Fatalf("handler not called; response %+v", res)
	}
	return seen
}

func TestHandler_Request(t *testing.T) {
	tests := []struct {
		name string
		edit func(ev *events.APIGatewayV2HTTPRequest)
		want map[string]string
	}{
		{
			name: "RawPathWithEscapedSlashAndAtKept",
			edit: func(ev *events.APIGatewayV2HTTPRequest) {
				ev.RawPath = "/_matrix/client/v3/profile/%40alice%2Fbob%3Aexample.org/displayname"
			},
			want: map[string]string{
				"path":             "/_matrix/client/v3/profile/@alice/bob:example.org/displayname",
				"rawPath":          "/_matrix/client/v3/profile/%40alice%2Fbob%3Aexample.org/displayname",
				"escapedPath":      "/_matrix/client/v3/profile/%40alice%2Fbob%3Aexample.org/displayname",
				"requestURI":       "/_matrix/client/v3/profile/%40alice%2Fbob%3Aexample.org/displayname",
				"urlRequestURI":    "/_matrix/client/v3/profile/%40alice%2Fbob%3Aexample.org/displayname",
				"pathValue:userID": "@alice/bob:example.org",
				"pathValue:field":  "displayname",
			},
		},
		{
			name: "FederationTransactionIDWithSlash",
			edit: func(ev *events.APIGatewayV2HTTPRequest) {
				ev.RequestContext.HTTP.Method = "PUT"
				ev.RawPath = "/_matrix/federation/v1/send/t%2F1%40x"
			},
			want: map[string]string{
				"method":          "PUT",
				"path":            "/_matrix/federation/v1/send/t/1@x",
				"requestURI":      "/_matrix/federation/v1/send/t%2F1%40x",
				"pathValue:txnID": "t/1@x",
			},
		},
		{
			name: "SigilsLeftUnescapedByTheClient",
			edit: func(ev *events.APIGatewayV2HTTPRequest) {
				ev.RawPath = "/_matrix/client/v3/rooms/!abc:example.org/event/$ev_1'x~y"
			},
			want: map[string]string{
				"path":        "/_matrix/client/v3/rooms/!abc:example.org/event/$ev_1'x~y",
				"escapedPath": "/_matrix/client/v3/rooms/!abc:example.org/event/$ev_1'x~y",
				"requestURI":  "/_matrix/client/v3/rooms/!abc:example.org/event/$ev_1'x~y",
			},
		},
		{
			name: "LowercaseEscapesKept",
			edit: func(ev *events.APIGatewayV2HTTPRequest) {
				ev.RawPath = "/_matrix/client/v3/directory/room/%23room%3aexample.org"
			},
			want: map[string]string{
				"path":       "/_matrix/client/v3/directory/room/#room:example.org",
				"requestURI": "/_matrix/client/v3/directory/room/%23room%3aexample.org",
			},
		},
		{
			name: "QueryKeptAsSent",
			edit: func(ev *events.APIGatewayV2HTTPRequest) {
				ev.RawPath = "/_matrix/client/v3/rooms/%21r%3Aexample.org/messages"
				ev.RawQueryString = "filter=%7B%22lazy_load_members%22%3Atrue%7D&from=s1%2F2&dir=b&x=a+b&x=c%20d"
			},
			want: map[string]string{
				"rawQuery":      "filter=%7B%22lazy_load_members%22%3Atrue%7D&from=s1%2F2&dir=b&x=a+b&x=c%20d",
				"requestURI":    "/_matrix/client/v3/rooms/%21r%3Aexample.org/messages?filter=%7B%22lazy_load_members%22%3Atrue%7D&from=s1%2F2&dir=b&x=a+b&x=c%20d",
				"urlRequestURI": "/_matrix/client/v3/rooms/%21r%3Aexample.org/messages?filter=%7B%22lazy_load_members%22%3Atrue%7D&from=s1%2F2&dir=b&x=a+b&x=c%20d",
			},
		},
		{
			name: "NoQueryNoQuestionMark",
			want: map[string]string{"requestURI": "/_matrix/client/versions", "rawQuery": ""},
		},
		{
			name: "PathFromRequestContextWithoutRawPath",
			edit: func(ev *events.APIGatewayV2HTTPRequest) {
				ev.RawPath = ""
				ev.RequestContext.HTTP.Path = "/.well-known/matrix/client"
			},
			want: map[string]string{"path": "/.well-known/matrix/client", "requestURI": "/.well-known/matrix/client"},
		},
		{
			name: "Base64BodyDecoded",
			edit: func(ev *events.APIGatewayV2HTTPRequest) {
				ev.RequestContext.HTTP.Method = "POST"
				ev.Body = base64.StdEncoding.EncodeToString([]byte("{\"type\":\"m.login.password\",\"é\":\"\x00\"}"))
				ev.IsBase64Encoded = true
			},
			want: map[string]string{"method": "POST", "body": "{\"type\":\"m.login.password\",\"é\":\"\x00\"}", "contentLength": "36"},
		},
		{
			name: "PlainBody",
			edit: func(ev *events.APIGatewayV2HTTPRequest) {
				ev.RequestContext.HTTP.Method = "POST"
				ev.Body = `{"type":"m.login.dummy"}`
			},
			want: map[string]string{"body": `{"type":"m.login.dummy"}`, "contentLength": "24"},
		},
		{
			name: "NoBody",
			want: map[string]string{"body": "", "contentLength": "0"},
		},
		{
			name: "XMatrixAuthorizationKeptWhole",
			edit: func(ev *events.APIGatewayV2HTTPRequest) { ev.Headers["authorization"] = xMatrix },
			want: map[string]string{"header:Authorization": xMatrix},
		},
		{
			name: "JoinedHeaderNotSplit",
			edit: func(ev *events.APIGatewayV2HTTPRequest) { ev.Headers["accept"] = "application/json, text/plain;q=0.5" },
			want: map[string]string{"header:Accept": "application/json, text/plain;q=0.5"},
		},
		{
			name: "CookiesJoinedIntoOneHeader",
			edit: func(ev *events.APIGatewayV2HTTPRequest) { ev.Cookies = []string{"session=a,b", "theme=dark"} },
			want: map[string]string{"header:Cookie": "session=a,b; theme=dark"},
		},
		{
			name: "HostFromDomainName",
			edit: func(ev *events.APIGatewayV2HTTPRequest) {
				ev.Headers["host"] = "a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com"
			},
			want: map[string]string{"host": "matrix.example.org"},
		},
		{
			name: "HostHeaderWithoutDomainName",
			edit: func(ev *events.APIGatewayV2HTTPRequest) {
				ev.RequestContext.DomainName = ""
				ev.Headers["host"] = "localhost:8008"
			},
			want: map[string]string{"host": "localhost:8008"},
		},
		{
			name: "HostHeaderMovedToHost",
			want: map[string]string{"header:Host": ""},
		},
		{
			name: "RemoteAddrFromSourceIP",
			edit: func(ev *events.APIGatewayV2HTTPRequest) { ev.RequestContext.HTTP.SourceIP = "2001:db8::1" },
			want: map[string]string{"remoteAddr": "2001:db8::1"},
		},
		{
			name: "RequestIDFromAPIGateway",
			want: map[string]string{"header:X-Request-Id": "Jx1aQhKgIAMEb0A="},
		},
		{
			name: "ClientRequestIDKept",
			edit: func(ev *events.APIGatewayV2HTTPRequest) { ev.Headers["x-request-id"] = "client-1" },
			want: map[string]string{"header:X-Request-Id": "client-1"},
		},
		{
			name: "ProtocolFromRequestContext",
			edit: func(ev *events.APIGatewayV2HTTPRequest) { ev.RequestContext.HTTP.Protocol = "HTTP/2.0" },
			want: map[string]string{"proto": "HTTP/2.0"},
		},
		{
			name: "MethodKept",
			edit: func(ev *events.APIGatewayV2HTTPRequest) { ev.RequestContext.HTTP.Method = "DELETE" },
			want: map[string]string{"method": "DELETE"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev := baseEvent()
			if tc.edit != nil {
				tc.edit(&ev)
			}
			got := observe(t, ev)
			for k, want := range tc.want {
				if got[k] != want {
					t.Errorf("%s: got %q, want %q (rawPath %q, rawQueryString %q)", k, got[k], want, ev.RawPath, ev.RawQueryString)
				}
			}
		})
	}
}

type ctxKey struct{}

func TestHandler_RequestContext(t *testing.T) {
	ctx := context.WithValue(context.Background(), ctxKey{}, "lambda")
	var got any
	h := lambdahttp.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Context().Value(ctxKey{})
	}))
	if _, err := h(ctx, baseEvent()); err != nil {
		t.Fatal(err)
	}
	if got != "lambda" {
		t.Fatalf("request context value: got %v, want the invocation's", got)
	}
}

func TestHandler_Response(t *testing.T) {
	png := []byte{0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 0x0d, 0xff}
	type want struct {
		status  int
		body    []byte
		base64  bool
		headers map[string]string
		cookies []string
	}
	tests := []struct {
		name    string
		method  string
		handler http.HandlerFunc
		want    want
	}{
		{
			name:    "NothingWrittenIs200",
			handler: func(w http.ResponseWriter, r *http.Request) {},
			want:    want{status: 200},
		},
		{
			name: "StatusAndJSONBody",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusForbidden)
				io.WriteString(w, `{"errcode":"M_FORBIDDEN",`)
				io.WriteString(w, `"error":"no"}`)
			},
			want: want{status: 403, body: []byte(`{"errcode":"M_FORBIDDEN","error":"no"}`), headers: map[string]string{"Content-Type": "application/json"}},
		},
		{
			name: "FirstWriteHeaderWins",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain")
				w.WriteHeader(http.StatusCreated)
				w.WriteHeader(http.StatusInternalServerError)
				io.WriteString(w, "made")
			},
			want: want{status: 201, body: []byte("made")},
		},
		{
			name:    "TextWithCharsetIsText",
			handler: typed("text/plain; charset=utf-8", []byte("héllo")),
			want:    want{status: 200, body: []byte("héllo")},
		},
		{
			name:    "JavaScriptIsText",
			handler: typed("application/javascript", []byte("let a = 1")),
			want:    want{status: 200, body: []byte("let a = 1")},
		},
		{
			name:    "PlusJSONIsText",
			handler: typed("application/problem+json", []byte(`{}`)),
			want:    want{status: 200, body: []byte(`{}`)},
		},
		{
			name:    "XMLIsText",
			handler: typed("application/xml", []byte("<a/>")),
			want:    want{status: 200, body: []byte("<a/>")},
		},
		{
			name:    "PlusXMLIsText",
			handler: typed("image/svg+xml", []byte("<svg/>")),
			want:    want{status: 200, body: []byte("<svg/>")},
		},
		{
			name:    "PNGIsBase64",
			handler: typed("image/png", png),
			want:    want{status: 200, body: png, base64: true},
		},
		{
			name:    "OctetStreamIsBase64",
			handler: typed("application/octet-stream", []byte("text-looking bytes")),
			want:    want{status: 200, body: []byte("text-looking bytes"), base64: true},
		},
		{
			name:    "MalformedContentTypeIsBase64",
			handler: typed("text/plain; =broken", []byte("x")),
			want:    want{status: 200, body: []byte("x"), base64: true},
		},
		{
			name:    "UndeclaredTypeSniffedLikeNetHTTP",
			handler: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<!DOCTYPE html><p>hi</p>") },
			want:    want{status: 200, body: []byte("<!DOCTYPE html><p>hi</p>"), headers: map[string]string{"Content-Type": "text/html; charset=utf-8"}},
		},
		{
			name:    "UndeclaredBinarySniffedAndBase64",
			handler: func(w http.ResponseWriter, r *http.Request) { w.Write(png) },
			want:    want{status: 200, body: png, base64: true, headers: map[string]string{"Content-Type": "image/png"}},
		},
		{
			name: "MultiValuedHeadersJoined",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Add("Vary", "Origin")
				w.Header().Add("Vary", "Accept-Encoding")
				w.Header().Set("Allow", "GET, HEAD")
				w.WriteHeader(http.StatusMethodNotAllowed)
			},
			want: want{status: 405, headers: map[string]string{"Vary": "Origin, Accept-Encoding", "Allow": "GET, HEAD"}},
		},
		{
			name: "SetCookieIntoCookies",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.SetCookie(w, &http.Cookie{Name: "a", Value: "1", Path: "/", HttpOnly: true})
				http.SetCookie(w, &http.Cookie{Name: "b", Value: "2", Expires: time.Unix(1, 0)})
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, "{}")
			},
			want: want{status: 200, body: []byte("{}"), cookies: []string{"a=1; Path=/; HttpOnly", "b=2; Expires=Thu, 01 Jan 1970 00:00:01 GMT"}},
		},
		{
			name:    "HEADHasNoBody",
			method:  "HEAD",
			handler: typed("application/json", []byte(`{"versions":[]}`)),
			want:    want{status: 200, headers: map[string]string{"Content-Type": "application/json"}},
		},
		{
			name: "NoContentHasNoBody",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusNoContent)
				io.WriteString(w, "ignored")
			},
			want: want{status: 204, headers: map[string]string{"Content-Type": ""}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev := baseEvent()
			if tc.method != "" {
				ev.RequestContext.HTTP.Method = tc.method
			}
			res, err := lambdahttp.Handler(tc.handler)(context.Background(), ev)
			if err != nil {
				t.Fatalf("Handler returned error %v", err)
			}
			if res.StatusCode != tc.want.status {
				t.Errorf("status: got %d, want %d", res.StatusCode, tc.want.status)
			}
			if res.IsBase64Encoded != tc.want.base64 {
				t.Errorf("isBase64Encoded: got %v, want %v", res.IsBase64Encoded, tc.want.base64)
			}
			body := []byte(res.Body)
			if res.IsBase64Encoded {
				if body, err = base64.StdEncoding.DecodeString(res.Body); err != nil {
					t.Fatalf("body %q: %v", res.Body, err)
				}
			}
			if !bytes.Equal(body, tc.want.body) {
				t.Errorf("body: got %q, want %q", body, tc.want.body)
			}
			for k, v := range tc.want.headers {
				if res.Headers[k] != v {
					t.Errorf("header %s: got %q, want %q (all %v)", k, res.Headers[k], v, res.Headers)
				}
			}
			if _, ok := res.Headers["Set-Cookie"]; ok {
				t.Errorf("Set-Cookie in headers %v, want it in cookies", res.Headers)
			}
			if !slices.Equal(res.Cookies, tc.want.cookies) {
				t.Errorf("cookies: got %q, want %q", res.Cookies, tc.want.cookies)
			}
			if _, ok := res.Headers["Content-Length"]; ok {
				t.Errorf("Content-Length set: %v", res.Headers)
			}
		})
	}
}

func typed(contentType string, body []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.Write(body)
	}
}

func TestHandler_MalformedEvent(t *testing.T) {
	tests := []struct {
		name string
		edit func(ev *events.APIGatewayV2HTTPRequest)
	}{
		{"BadPercentEncoding", func(ev *events.APIGatewayV2HTTPRequest) { ev.RawPath = "/_matrix/client/v3/rooms/%zz" }},
		{"BadBase64Body", func(ev *events.APIGatewayV2HTTPRequest) { ev.Body, ev.IsBase64Encoded = "not base64!", true }},
		{"BadMethod", func(ev *events.APIGatewayV2HTTPRequest) { ev.RequestContext.HTTP.Method = "GE T" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev := baseEvent()
			tc.edit(&ev)
			called := false
			res, err := lambdahttp.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true }))(context.Background(), ev)
			if err != nil {
				t.Fatalf("Handler returned error %v; want a 400 response", err)
			}
			if called || res.StatusCode != http.StatusBadRequest || !strings.Contains(res.Body, `"errcode":"M_UNRECOGNIZED"`) {
				t.Fatalf("got called=%v %+v, want a 400 M_UNRECOGNIZED without calling the handler", called, res)
			}
		})
	}
}

// TestHandler_SampleEvents decodes every API Gateway sample in events/ into
// the handler's event type, refusing unknown fields, and checks that the
// handler sees the request URI exactly as the sample's rawPath and
// rawQueryString. (functions/replay_test.go replays them through the real
// functions under the Lambda runtime interface emulator.)
func TestHandler_SampleEvents(t *testing.T) {
	var files []string
	for _, fn := range []string{"client", "federation"} {
		matches, err := filepath.Glob(filepath.Join("..", "..", "events", fn, "*.json"))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range matches {
			if !strings.HasSuffix(m, ".expect.json") {
				files = append(files, m)
			}
		}
	}
	if len(files) == 0 {
		t.Fatal("no samples in events/client or events/federation")
	}
	for _, f := range files {
		t.Run(filepath.Base(filepath.Dir(f))+"/"+filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var ev events.APIGatewayV2HTTPRequest
			dec := json.NewDecoder(bytes.NewReader(data))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&ev); err != nil {
				t.Fatalf("%s does not decode as an API Gateway v2 request: %v", f, err)
			}
			if ev.Version != "2.0" || ev.RawPath == "" || ev.RequestContext.HTTP.Method == "" || ev.RequestContext.RequestID == "" {
				t.Fatalf("%s: version %q, rawPath %q, method %q, requestId %q: want all set", f, ev.Version, ev.RawPath, ev.RequestContext.HTTP.Method, ev.RequestContext.RequestID)
			}
			if ev.RawPath != ev.RequestContext.HTTP.Path {
				// API Gateway gives both; they differ only when the path has escapes.
				if p, _ := url.PathUnescape(ev.RawPath); p != ev.RequestContext.HTTP.Path {
					t.Errorf("rawPath %q and requestContext.http.path %q disagree", ev.RawPath, ev.RequestContext.HTTP.Path)
				}
			}
			got := observe(t, ev)
			wantURI := ev.RawPath
			if ev.RawQueryString != "" {
				wantURI += "?" + ev.RawQueryString
			}
			if got["requestURI"] != wantURI || got["method"] != ev.RequestContext.HTTP.Method {
				t.Errorf("handler saw %s %s, want %s %s", got["method"], got["requestURI"], ev.RequestContext.HTTP.Method, wantURI)
			}
		})
	}
}
