package lambdahttp_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/aws/aws-lambda-go/events"

	"github.com/cirrus-matrix/cirrus/shared/lambdahttp"
)

// seen is what the handler observed of the request.
type seen struct {
	Method, Path, EscapedPath, RequestURI, RawQuery, Host, RemoteAddr string
	Auth, Cookie, RequestID, Body                                     string
	ContentLength                                                     int64
	Segment                                                           string
}

func capture(into *seen) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/_matrix/federation/v1/send/{txn}", func(w http.ResponseWriter, r *http.Request) {
		into.Segment = r.PathValue("txn")
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		*into = seen{Method: r.Method, Path: r.URL.Path, EscapedPath: r.URL.EscapedPath(), RequestURI: r.RequestURI,
			RawQuery: r.URL.RawQuery, Host: r.Host, RemoteAddr: r.RemoteAddr, Auth: r.Header.Get("Authorization"),
			Cookie: r.Header.Get("Cookie"), RequestID: r.Header.Get("X-Request-Id"), Body: string(b), ContentLength: r.ContentLength}
		mux.ServeHTTP(w, r)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Add("Set-Cookie", "a=1")
		w.Header().Add("Set-Cookie", "b=2")
		w.Header().Add("Vary", "Origin")
		w.Header().Add("Vary", "Accept")
		w.WriteHeader(http.StatusAccepted)
		w.Write([]byte(`{"ok":true}`))
	})
}

func TestRequest_KeepsTheURIAsSent(t *testing.T) {
	var got seen
	h := lambdahttp.Handler(capture(&got))
	xmatrix := `X-Matrix origin="a.example",destination="b.example",key="ed25519:1",sig="abc,def"`
	ev := events.APIGatewayV2HTTPRequest{
		Version:         "2.0",
		RawPath:         "/_matrix/federation/v1/send/t%2F1%40x",
		RawQueryString:  "a=%2F&b=c+d",
		Headers:         map[string]string{"authorization": xmatrix, "content-type": "application/json"},
		Cookies:         []string{"s=1", "t=2"},
		Body:            base64.StdEncoding.EncodeToString([]byte(`{"pdus":[]}`)),
		IsBase64Encoded: true,
		RequestContext: events.APIGatewayV2HTTPRequestContext{
			RequestID:  "req-123",
			DomainName: "matrix.example.org",
			HTTP:       events.APIGatewayV2HTTPRequestContextHTTPDescription{Method: "PUT", SourceIP: "203.0.113.9"},
		},
	}
	res, err := h(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	want := seen{Method: "PUT", Path: "/_matrix/federation/v1/send/t/1@x", EscapedPath: "/_matrix/federation/v1/send/t%2F1%40x",
		RequestURI: "/_matrix/federation/v1/send/t%2F1%40x?a=%2F&b=c+d", RawQuery: "a=%2F&b=c+d", Host: "matrix.example.org",
		RemoteAddr: "203.0.113.9", Auth: xmatrix, Cookie: "s=1; t=2", RequestID: "req-123", Body: `{"pdus":[]}`,
		ContentLength: 11, Segment: "t/1@x"}
	if got != want {
		t.Fatalf("handler saw\n %+v\nwant\n %+v", got, want)
	}
	if res.StatusCode != 202 || res.Body != `{"ok":true}` || res.IsBase64Encoded {
		t.Fatalf("response %+v", res)
	}
	if len(res.Cookies) != 2 || res.Headers["Vary"] != "Origin, Accept" || res.Headers["Set-Cookie"] != "" {
		t.Fatalf("response headers %v cookies %v", res.Headers, res.Cookies)
	}
}

func TestResponse_BinaryIsBase64(t *testing.T) {
	png := []byte{0x89, 'P', 'N', 'G', 0, 1, 2, 0xff}
	h := lambdahttp.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		w.Write(png)
	}))
	res, err := h(context.Background(), events.APIGatewayV2HTTPRequest{RawPath: "/x"})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := base64.StdEncoding.DecodeString(res.Body)
	if !res.IsBase64Encoded || string(body) != string(png) || res.StatusCode != 200 {
		t.Fatalf("response %+v", res)
	}
}

func TestRequest_BadPayloadIsAnswered(t *testing.T) {
	h := lambdahttp.Handler(http.NotFoundHandler())
	res, err := h(context.Background(), events.APIGatewayV2HTTPRequest{RawPath: "/bad%zz"})
	if err != nil || res.StatusCode != 400 {
		t.Fatalf("bad path: %+v, %v", res, err)
	}
}

// TestRequest_SampleEvents decodes every API Gateway request in events/ the
// way the Lambda runtime does, so that a malformed sample fails here.
func TestRequest_SampleEvents(t *testing.T) {
	files, _ := filepath.Glob("../../events/*/*.json")
	n := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var ev events.APIGatewayV2HTTPRequest
		if json.Unmarshal(data, &ev) != nil || ev.Version != "2.0" {
			continue // SQS batches, schedules and expectations
		}
		n++
		if _, err := lambdahttp.Request(context.Background(), ev); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	t.Logf("%d API Gateway samples", n)
}
