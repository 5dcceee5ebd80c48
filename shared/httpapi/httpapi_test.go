package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

type body struct {
	Name  string `json:"name"`
	Count int    `json:"count"`
}

// echo decodes a body and answers with it, the way endpoints use DecodeJSON.
func echo(w http.ResponseWriter, r *http.Request) {
	var b body
	if err := httpapi.DecodeJSON(r, &b); err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, b)
}

func newServer(t *testing.T, logs *bytes.Buffer) *httptest.Server {
	rt := httpapi.NewRouter()
	rt.HandleFunc("POST /echo", echo)
	rt.HandleFunc("GET /boom", func(w http.ResponseWriter, r *http.Request) { panic("boom") })
	rt.HandleFunc("GET /fail", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteError(w, r, errors.New("dynamodb: secret internals"))
	})
	rt.HandleFunc("GET /longkey", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteError(w, r, fmt.Errorf("put (secret internals): %w", store.ErrKeyTooLong))
	})
	rt.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteError(w, r, httpapi.LimitExceeded(1500*time.Millisecond))
	})
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	srv := httptest.NewServer(httpapi.Logging(logger, httpapi.CORS(httpapi.LimitBody(64, rt))))
	t.Cleanup(srv.Close)
	return srv
}

func send(t *testing.T, method, url, payload string) (*http.Response, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(payload))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(res.Body).Decode(&m); err != nil && res.StatusCode != http.StatusNoContent {
		t.Fatalf("%s %s: body is not JSON: %v", method, url, err)
	}
	return res, m
}

func TestErrors(t *testing.T) {
	var logs bytes.Buffer
	srv := newServer(t, &logs)
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		errcode                  string
	}{
		{"valid", "POST", "/echo", `{"name":"a","count":2,"extra":true}`, 200, ""},
		{"not json", "POST", "/echo", `{"name":`, 400, "M_NOT_JSON"},
		{"empty body", "POST", "/echo", ``, 400, "M_NOT_JSON"},
		{"array, not object", "POST", "/echo", `[1,2]`, 400, "M_BAD_JSON"},
		{"invalid utf-8", "POST", "/echo", "{\"name\":\"\xff\"}", 400, "M_NOT_JSON"},
		{"wrong type", "POST", "/echo", `{"count":"two"}`, 400, "M_BAD_JSON"},
		{"too large", "POST", "/echo", `{"name":"` + strings.Repeat("x", 100) + `"}`, 413, "M_TOO_LARGE"},
		{"unknown path", "GET", "/nowhere", ``, 404, "M_UNRECOGNIZED"},
		{"wrong method", "GET", "/echo", ``, 405, "M_UNRECOGNIZED"},
		{"panic", "GET", "/boom", ``, 500, "M_UNKNOWN"},
		{"internal error", "GET", "/fail", ``, 500, "M_UNKNOWN"},
		{"rate limited", "GET", "/slow", ``, 429, "M_LIMIT_EXCEEDED"},
		{"key over DynamoDB's limit", "GET", "/longkey", ``, 400, "M_INVALID_PARAM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, m := send(t, tc.method, srv.URL+tc.path, tc.body)
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (%v)", res.StatusCode, tc.status, m)
			}
			if tc.errcode == "" {
				if m["name"] != "a" || m["count"] != float64(2) {
					t.Fatalf("echo = %v", m)
				}
				return
			}
			if m["errcode"] != tc.errcode || m["error"] == "" {
				t.Fatalf("body %v, want errcode %s and a message", m, tc.errcode)
			}
			if res.Header.Get("Content-Type") != "application/json" || res.Header.Get("Access-Control-Allow-Origin") != "*" {
				t.Fatalf("headers %v", res.Header)
			}
			if strings.Contains(m["error"].(string), "secret internals") {
				t.Fatal("an internal error reached the client")
			}
			if tc.status == 429 && (res.Header.Get("Retry-After") != "2" || m["retry_after_ms"] != float64(1500)) {
				t.Fatalf("rate limit hints: Retry-After %q, body %v", res.Header.Get("Retry-After"), m)
			}
		})
	}
}

func TestLogging(t *testing.T) {
	var logs bytes.Buffer
	srv := newServer(t, &logs)
	req, _ := http.NewRequest("POST", srv.URL+"/echo?access_token=syt_secret", strings.NewReader(`{"name":"a"}`))
	req.Header.Set(httpapi.RequestIDHeader, "apigw-req-1")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.Header.Get(httpapi.RequestIDHeader) != "apigw-req-1" {
		t.Fatalf("request ID header %q", res.Header.Get(httpapi.RequestIDHeader))
	}
	if strings.Contains(logs.String(), "syt_secret") {
		t.Fatal("the access token was logged")
	}
	var line struct {
		RequestID string      `json:"request_id"`
		Route     string      `json:"route"`
		Status    int         `json:"status"`
		Duration  *float64    `json:"duration_ms"`
		DynamoDB  store.Usage `json:"dynamodb"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(logs.Bytes()), &line); err != nil {
		t.Fatalf("log line %q: %v", logs.String(), err)
	}
	if line.RequestID != "apigw-req-1" || line.Route != "POST /echo" || line.Status != 200 || line.Duration == nil {
		t.Fatalf("log line %+v", line)
	}
}

func TestCORSPreflight(t *testing.T) {
	var logs bytes.Buffer
	srv := newServer(t, &logs)
	// OPTIONS must not run the endpoint: /boom would panic.
	res, _ := send(t, "OPTIONS", srv.URL+"/boom", "")
	if res.StatusCode != http.StatusNoContent || res.Header.Get("Access-Control-Allow-Methods") != "GET, POST, PUT, DELETE, OPTIONS" {
		t.Fatalf("preflight: %d %v", res.StatusCode, res.Header)
	}
	if strings.Contains(logs.String(), "panicked") {
		t.Fatal("OPTIONS ran the endpoint")
	}
}

// A client that hangs up mid-request (a stopped sync loop) cuts the work
// short; that is no server fault, so it is neither a 500 nor an error log.
func TestClientGone(t *testing.T) {
	var logs bytes.Buffer
	done := make(chan struct{})
	rt := httpapi.NewRouter()
	rt.HandleFunc("GET /wait", func(w http.ResponseWriter, r *http.Request) {
		defer close(done)
		<-r.Context().Done()
		httpapi.WriteError(w, r, fmt.Errorf("get item: %w", r.Context().Err()))
	})
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	srv := httptest.NewServer(httpapi.Logging(logger, rt))
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/wait", nil)
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("the canceled request got an answer")
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler never saw the client go")
	}
	srv.Close() // waits for the handler and its log line
	if strings.Contains(logs.String(), "request failed") || strings.Contains(logs.String(), `"status":500`) {
		t.Fatalf("a client hang-up was logged as a server error:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), `"status":499`) {
		t.Fatalf("no 499 in the request log:\n%s", logs.String())
	}
}
