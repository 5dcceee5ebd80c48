package lambdahttp_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/lambdahttp"
)

// FuzzHandler runs API Gateway events built from fuzzed parts through the
// adapter, into a handler that answers with a fuzzed response, as a Lambda
// invocation does: the event and the response each cross JSON, as the
// Lambda runtime sends them. The adapter never panics or fails; a request
// it cannot build is 400; the handler sees the path, query, method, headers
// and body as sent; the client gets the bytes the handler wrote. The same
// event also goes through the real router (a Matrix path pattern), which
// must not panic either.
func FuzzHandler(f *testing.F) {
	f.Add("GET", "/_matrix/client/versions", "", "Authorization", xMatrix, []byte(nil), false, 200, "application/json", []byte(`{"versions":["v1.1"]}`))
	f.Add("PUT", "/_matrix/federation/v1/send/t%2F1%40x", "a=b&c=%20", "Content-Type", "application/json", []byte(`{"pdus":[]}`), false, 200, "", []byte("\x89PNG\r\n"))
	f.Add("POST", "/_matrix/media/v3/upload", "filename=a%zz", "X-Request-Id", "", []byte("\x00\xff\xfe"), true, 201, "text/plain; charset=utf-8", []byte("caf\xe9"))
	f.Add("HEAD", "/%zz", "", "Host", "evil.example", []byte(nil), false, 204, "text/html", []byte("<p>"))
	f.Add("GET ", "relative/../../x", "?", "", "", []byte("not base64!"), true, 304, "image/png", []byte{})
	f.Add("DELETE", "/_matrix/client/v3/profile/%40a%3Ab/displayname", "", "Cookie", "a=b", []byte(nil), false, 500, "application/problem+json", []byte(`{"x":"\u2028"}`))
	f.Fuzz(func(t *testing.T, method, rawPath, rawQuery, hk, hv string, body []byte, b64 bool, status int, ctype string, out []byte) {
		if status < 200 || status > 599 {
			status = 200 + (status%400+400)%400
		}
		ev := events.APIGatewayV2HTTPRequest{
			Version: "2.0", RawPath: rawPath, RawQueryString: rawQuery,
			Headers: map[string]string{"accept": "application/json"},
			RequestContext: events.APIGatewayV2HTTPRequestContext{
				DomainName: "matrix.example.org", RequestID: "req-1",
				HTTP: events.APIGatewayV2HTTPRequestContextHTTPDescription{Method: method, Path: rawPath, Protocol: "HTTP/1.1", SourceIP: "203.0.113.9"},
			},
		}
		if hk != "" {
			ev.Headers[hk] = hv
		}
		if b64 {
			ev.Body, ev.IsBase64Encoded = base64.StdEncoding.EncodeToString(body), true
			if len(body)%2 == 1 {
				ev.Body = string(body) // what API Gateway would not send: not base64
			}
		} else {
			ev.Body = string(body)
		}
		// The runtime hands the event over as JSON.
		ev = roundTrip(t, ev)

		var seen *http.Request
		var seenBody []byte
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			seen = r
			seenBody, _ = io.ReadAll(r.Body)
			if ctype != "" {
				w.Header().Set("Content-Type", ctype)
			}
			w.WriteHeader(status)
			w.Write(out)
		})
		res, err := lambdahttp.Handler(h)(context.Background(), ev)
		if err != nil {
			t.Fatalf("Handler: %v", err)
		}
		res = roundTrip(t, res)
		if seen == nil {
			if res.StatusCode != 400 || !json.Valid([]byte(res.Body)) {
				t.Fatalf("event %+v refused with %d %q, want 400 and a JSON body", ev, res.StatusCode, res.Body)
			}
			return
		}

		raw := ev.RawPath
		if raw == "" {
			raw = ev.RequestContext.HTTP.Path
		}
		if !strings.HasPrefix(raw, "/") {
			raw = "/" + raw
		}
		if path, _ := url.PathUnescape(raw); seen.URL.Path != path {
			t.Fatalf("raw path %q: handler saw path %q, want %q", raw, seen.URL.Path, path)
		}
		wantURI := raw
		if ev.RawQueryString != "" {
			wantURI += "?" + ev.RawQueryString
		}
		if seen.RequestURI != wantURI || seen.URL.RawQuery != ev.RawQueryString {
			t.Fatalf("handler saw request URI %q and query %q, want %q", seen.RequestURI, seen.URL.RawQuery, wantURI)
		}
		wantBody := []byte(ev.Body)
		if ev.IsBase64Encoded {
			wantBody, _ = base64.StdEncoding.DecodeString(ev.Body)
		}
		if !bytes.Equal(seenBody, wantBody) || seen.ContentLength != int64(len(wantBody)) {
			t.Fatalf("handler read body %q (length %d), want %q", seenBody, seen.ContentLength, wantBody)
		}
		if wantMethod := ev.RequestContext.HTTP.Method; wantMethod != "" && seen.Method != wantMethod {
			t.Fatalf("handler saw method %q, want %q", seen.Method, wantMethod)
		}

		if res.StatusCode != status {
			t.Fatalf("response status %d, want %d", res.StatusCode, status)
		}
		got := []byte(res.Body)
		if res.IsBase64Encoded {
			if got, err = base64.StdEncoding.DecodeString(res.Body); err != nil {
				t.Fatalf("response body flagged base64 is not: %q", res.Body)
			}
		}
		want := out
		if seen.Method == http.MethodHead || status == http.StatusNoContent || status == http.StatusNotModified {
			want = nil
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("client gets body %q (base64 %v, Content-Type %q), handler wrote %q", got, res.IsBase64Encoded, res.Headers["Content-Type"], want)
		}

		// The real router, over the same event: no panic, a Matrix error
		// or the endpoint's answer.
		rt := httpapi.NewRouter()
		rt.HandleFunc("GET /_matrix/client/v3/profile/{userId}/{field}", func(w http.ResponseWriter, r *http.Request) {
			httpapi.WriteJSON(w, http.StatusOK, map[string]string{"user": r.PathValue("userId"), "field": r.PathValue("field")})
		})
		rt.HandleFunc("PUT /_matrix/federation/v1/send/{txnId}", func(w http.ResponseWriter, r *http.Request) {
			var v map[string]any
			if err := httpapi.DecodeJSON(r, &v); err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
			httpapi.WriteJSON(w, http.StatusOK, map[string]string{"txn": r.PathValue("txnId")})
		})
		res, err = lambdahttp.Handler(httpapi.LimitBody(1<<20, rt))(context.Background(), ev)
		if err != nil || res.StatusCode < 200 || res.StatusCode > 599 {
			t.Fatalf("router: %d, %v", res.StatusCode, err)
		}
	})
}

// roundTrip sends v through JSON as the Lambda runtime does.
func roundTrip[T any](t *testing.T, v T) T {
	t.Helper()
	doc, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out T
	if err := json.Unmarshal(doc, &out); err != nil {
		t.Fatal(err)
	}
	return out
}
