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

// TestLogging_MasksSecretPaths: a registration token in the path of the
// admin API never reaches the request log, whether a route matched (any
// method), none did (404), or the method is not allowed (405); the query
// string, where the validity check carries its token, is never logged; other
// paths are logged as they are.
func TestLogging_MasksSecretPaths(t *testing.T) {
	const secret = "s3cr3t-T0KEN"
	rt := httpapi.NewRouter()
	ok := func(w http.ResponseWriter, r *http.Request) { httpapi.WriteJSON(w, http.StatusOK, map[string]any{}) }
	for _, p := range []string{
		"GET /_synapse/admin/v1/registration_tokens/{token}",
		"PUT /_synapse/admin/v1/registration_tokens/{token}",
		"DELETE /_synapse/admin/v1/registration_tokens/{token}",
		"POST /_synapse/admin/v1/registration_tokens/new",
		"GET /_matrix/client/v1/register/m.login.registration_token/validity",
		"GET /_matrix/client/v3/devices/{deviceId}",
		"GET /files/{token...}",
	} {
		rt.HandleFunc(p, ok)
	}
	for _, tc := range []struct {
		name, method, target, wantPath string
		wantStatus                     int
	}{
		{"get", "GET", "/_synapse/admin/v1/registration_tokens/" + secret, "/_synapse/admin/v1/registration_tokens/" + httpapi.Masked, 200},
		{"put", "PUT", "/_synapse/admin/v1/registration_tokens/" + secret, "/_synapse/admin/v1/registration_tokens/" + httpapi.Masked, 200},
		{"delete", "DELETE", "/_synapse/admin/v1/registration_tokens/" + secret, "/_synapse/admin/v1/registration_tokens/" + httpapi.Masked, 200},
		{"escaped", "GET", "/_synapse/admin/v1/registration_tokens/s3cr3t%2DT0KEN", "/_synapse/admin/v1/registration_tokens/" + httpapi.Masked, 200},
		{"not allowed", "PATCH", "/_synapse/admin/v1/registration_tokens/" + secret, "/_synapse/admin/v1/registration_tokens/" + httpapi.Masked, 405},
		{"no route", "GET", "/_synapse/admin/v1/registration_tokens/" + secret + "/more", "/_synapse/admin/v1/registration_tokens/" + httpapi.Masked + "/more", 404},
		{"escaped prefix, no route", "GET", "/_synapse/admin/v1/registration%5Ftokens/" + secret + "/x", "/_synapse/admin/v1/registration%5Ftokens/" + httpapi.Masked + "/x", 404},
		{"rest wildcard", "GET", "/files/a/" + secret, "/files/" + httpapi.Masked, 200},
		{"validity query", "GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=" + secret, "/_matrix/client/v1/register/m.login.registration_token/validity", 200},
		{"other wildcard", "GET", "/_matrix/client/v3/devices/ABCDEF", "/_matrix/client/v3/devices/ABCDEF", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			h := httpapi.Logging(slog.New(slog.NewJSONHandler(&logs, nil)), rt)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.target, nil))
			if rec.Code != tc.wantStatus {
				t.Fatalf("%s %s: status %d, want %d", tc.method, tc.target, rec.Code, tc.wantStatus)
			}
			if strings.Contains(logs.String(), secret) || strings.Contains(logs.String(), "s3cr3t") {
				t.Fatalf("%s %s: the token is in the log: %s", tc.method, tc.target, logs.String())
			}
			line := readLine(t, logs.Bytes())
			if line.Path != tc.wantPath {
				t.Fatalf("%s %s: logged path %q, want %q", tc.method, tc.target, line.Path, tc.wantPath)
			}
		})
	}
}

type logLine struct {
	Path  string `json:"path"`
	Route string `json:"route"`
}

// readLine decodes the request's log line, the last one.
func readLine(t *testing.T, logs []byte) logLine {
	t.Helper()
	var line logLine
	lines := bytes.Split(bytes.TrimSpace(logs), []byte("\n"))
	if err := json.Unmarshal(lines[len(lines)-1], &line); err != nil {
		t.Fatalf("log line %s: %v", lines[len(lines)-1], err)
	}
	return line
}
