package httpapi_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
)

// TestRouter_R0 drives a router with v3 and v1 routes through r0 paths: a
// v3 route answers its r0 path as it answers its own, with the path values
// and escaping the client sent; a v1 route and an unknown path are 404 and a
// wrong method is 405 with Allow, all M_UNRECOGNIZED.
func TestRouter_R0(t *testing.T) {
	rt := httpapi.NewRouter()
	show := func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteJSON(w, http.StatusOK, map[string]string{
			"pattern":      r.Pattern,
			"state_key":    r.PathValue("stateKey"),
			"escaped_path": r.URL.EscapedPath(),
			"request_uri":  r.RequestURI,
		})
	}
	rt.HandleFunc("GET /_matrix/client/v3/login", show)
	rt.HandleFunc("PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey...}", show)
	rt.HandleFunc("GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}", show)
	var logs bytes.Buffer
	srv := httptest.NewServer(httpapi.Logging(slog.New(slog.NewJSONHandler(&logs, nil)), rt))
	t.Cleanup(srv.Close)

	for _, tc := range []struct {
		name, method, path string
		status             int
		want               map[string]any // for 200: fields of the answer; otherwise the errcode
		allow              string
	}{
		{"r0 login", "GET", "/_matrix/client/r0/login", 200, map[string]any{
			"pattern": "GET /_matrix/client/v3/login", "request_uri": "/_matrix/client/r0/login"}, ""},
		{"v3 login", "GET", "/_matrix/client/v3/login", 200, map[string]any{
			"pattern": "GET /_matrix/client/v3/login"}, ""},
		{"r0 escaped state key", "PUT", "/_matrix/client/r0/rooms/!a:b/state/m.x/a%2Fb", 200, map[string]any{
			"state_key":    "a/b",
			"escaped_path": "/_matrix/client/v3/rooms/!a:b/state/m.x/a%2Fb",
			"request_uri":  "/_matrix/client/r0/rooms/!a:b/state/m.x/a%2Fb"}, ""},
		{"r0 of a v1 route", "GET", "/_matrix/client/r0/rooms/!a:b/relations/$e", 404, nil, ""},
		{"r0 unknown", "GET", "/_matrix/client/r0/nowhere", 404, nil, ""},
		{"r0 alone", "GET", "/_matrix/client/r0", 404, nil, ""},
		{"r0 wrong method", "POST", "/_matrix/client/r0/login", 405, nil, "GET, HEAD"},
		{"v3 wrong method", "POST", "/_matrix/client/v3/login", 405, nil, "GET, HEAD"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var m map[string]any
			if err := json.NewDecoder(res.Body).Decode(&m); err != nil {
				t.Fatalf("body is not JSON: %v", err)
			}
			if res.StatusCode != tc.status {
				t.Fatalf("%s %s: status %d, want %d (%v)", tc.method, tc.path, res.StatusCode, tc.status, m)
			}
			if tc.status != 200 {
				if m["errcode"] != "M_UNRECOGNIZED" || !strings.Contains(m["error"].(string), tc.path[:len("/_matrix/client/r0")]) {
					t.Fatalf("%s %s: body %v, want M_UNRECOGNIZED naming the path sent", tc.method, tc.path, m)
				}
				if got := res.Header.Get("Allow"); got != tc.allow {
					t.Fatalf("%s %s: Allow %q, want %q", tc.method, tc.path, got, tc.allow)
				}
				return
			}
			for k, v := range tc.want {
				if m[k] != v {
					t.Errorf("%s %s: %s = %v, want %v", tc.method, tc.path, k, m[k], v)
				}
			}
		})
	}

	// The log line has the path as sent and the route that served it.
	var last struct{ Method, Route, Path string }
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var line struct{ Method, Route, Path string }
		json.Unmarshal([]byte(l), &line)
		if line.Method == "GET" && line.Path == "/_matrix/client/r0/login" {
			last = line
		}
	}
	if last.Route != "GET /_matrix/client/v3/login" {
		t.Fatalf("log line of GET r0/login: %+v, want route GET /_matrix/client/v3/login", last)
	}
}
