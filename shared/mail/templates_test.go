package mail_test

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/mail"
)

func TestLoadTemplates_Embedded(t *testing.T) {
	if _, err := mail.LoadTemplates(""); err != nil {
		t.Fatalf("embedded templates: %v", err)
	}
	rec := httptest.NewRecorder()
	if err := mail.DefaultTemplates().Page(rec, 200, "message", map[string]string{"Title": "Done", "Message": "<b>x</b>"}); err != nil {
		t.Fatal(err)
	}
	body := rec.Body.String()
	if !strings.Contains(body, "&lt;b&gt;x&lt;/b&gt;") || rec.Header().Get("X-Frame-Options") != "DENY" ||
		!strings.Contains(rec.Header().Get("Content-Security-Policy"), "frame-ancestors 'none'") || rec.Header().Get("Referrer-Policy") != "no-referrer" {
		t.Errorf("page: headers %v, body %s", rec.Header(), body)
	}
}

func TestLoadTemplates_Dir(t *testing.T) {
	write := func(dir, name, src string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name, file, src, want string
	}{
		{"missing folder", "", "", "cannot be read"},
		{"unknown name", "welcome.html", "<p>hi</p>", "welcome.html is not a template this server uses; expected names are "},
		{"does not parse", "message.html", "{{.Title", "message.html: "},
		{"empty folder", "notes.md", "x", "holds no template this server uses"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "t")
			if tc.file != "" {
				if err := os.Mkdir(dir, 0o700); err != nil {
					t.Fatal(err)
				}
				write(dir, tc.file, tc.src)
			}
			_, err := mail.LoadTemplates(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "message.html") {
				t.Fatalf("got %v, want an error with %q naming the expected templates", err, tc.want)
			}
		})
	}
	t.Run("override", func(t *testing.T) {
		dir := t.TempDir()
		write(dir, "message.html", "<p>ours: {{.Title}}</p>")
		tmpl, err := mail.LoadTemplates(dir)
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		if err := tmpl.Page(rec, 200, "message", map[string]string{"Title": "T"}); err != nil || rec.Body.String() != "<p>ours: T</p>" {
			t.Fatalf("override: %v %q", err, rec.Body.String())
		}
	})
}
