package discovery_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/config"
	"github.com/cirrus-matrix/cirrus/shared/discovery"
)

func TestHandlers_Root(t *testing.T) {
	for _, tc := range []struct {
		name      string
		webClient string
		want      []string // in the body
		wantNot   []string
	}{
		{
			name:      "DefaultWebClient",
			webClient: config.DefaultWebClient,
			want: []string{"<h1>Cirrus is running</h1>", "<strong>example.org</strong>", "running Cirrus " + discovery.Version,
				`<a href="https://app.element.io/">`, "<code>https://matrix.example.org</code>", "@alice:example.org"},
		},
		{
			name:    "NoWebClient",
			want:    []string{"<strong>example.org</strong>", "Use any Matrix client:", "<code>https://matrix.example.org</code>"},
			wantNot: []string{"app.element.io", "such as the web client"},
		},
		{
			name:      "MarkupInTheLink",
			webClient: `https://chat.example.org/?a=<b>&c="d"`,
			want:      []string{`href="https://chat.example.org/?a=%3cb%3e&amp;c=%22d%22"`, "?a=&lt;b&gt;&amp;c=&#34;d&#34;</a>"},
			wantNot:   []string{"<b>", `"d"`},
		},
		{
			// Config refuses it; the template must not trust config to.
			name:      "ScriptScheme",
			webClient: "javascript:alert(1)",
			want:      []string{`href="#ZgotmplZ"`},
			wantNot:   []string{`href="javascript:`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &discovery.Handlers{Config: &config.Config{
				ServerName: "example.org", PublicBaseURL: "https://matrix.example.org/", WebClientLocation: tc.webClient,
			}}
			rec := httptest.NewRecorder()
			h.Root(rec, httptest.NewRequest(http.MethodGet, "/", nil))
			body := rec.Body.String()
			if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "text/html; charset=utf-8" {
				t.Fatalf("GET / with web client %q: %d %q", tc.webClient, rec.Code, rec.Header().Get("Content-Type"))
			}
			if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
				t.Errorf("Content-Security-Policy %q, want default-src 'none' (no scripts)", csp)
			}
			for _, w := range append(tc.want, "<!DOCTYPE html>") {
				if !strings.Contains(body, w) {
					t.Errorf("web client %q: the page lacks %q:\n%s", tc.webClient, w, body)
				}
			}
			for _, w := range append(tc.wantNot, "<script") {
				if strings.Contains(body, w) {
					t.Errorf("web client %q: the page has %q:\n%s", tc.webClient, w, body)
				}
			}
		})
	}
}
