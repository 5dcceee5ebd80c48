package mail

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	texttemplate "text/template"
)

// The server's own templates: each mail is <name>.txt (its first line
// "Subject: ...", a blank line, then the text body) and <name>.html, each
// page a server serves from a link in a mail is <name>.html.
//
//go:embed templates
var embedded embed.FS

// Templates are the mails and pages the server renders, the embedded ones
// with any an operator put in email.template_dir in their place.
type Templates struct {
	text map[string]*texttemplate.Template
	html map[string]*htmltemplate.Template
}

// DefaultTemplates are the embedded templates alone.
func DefaultTemplates() *Templates {
	t, err := LoadTemplates("")
	if err != nil {
		panic(err) // the embedded templates are parsed by the package's tests
	}
	return t
}

// LoadTemplates reads the embedded templates, then those in dir (empty for
// none), file by file. A dir that is not there, holds a .txt or .html file
// that is not one of the expected names, holds none of them, or holds one
// that does not parse, is an error that names the file and the expected
// names: Synapse's "template folder not found" becomes a start-up error
// that says what to fix, not a server that sends no mail.
func LoadTemplates(dir string) (*Templates, error) {
	t := &Templates{text: map[string]*texttemplate.Template{}, html: map[string]*htmltemplate.Template{}}
	names, err := fs.Glob(embedded, "templates/*")
	if err != nil {
		return nil, err
	}
	for i, n := range names {
		names[i] = path.Base(n)
		src, err := embedded.ReadFile(n)
		if err != nil {
			return nil, err
		}
		if err := t.parse(names[i], string(src)); err != nil {
			return nil, fmt.Errorf("embedded template %s: %w", names[i], err)
		}
	}
	if dir == "" {
		return t, nil
	}
	expected := "expected names are " + strings.Join(names, ", ")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("email.template_dir %q cannot be read (%w): set it to a folder holding templates to replace; %s", dir, err, expected)
	}
	found := 0
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || (ext != ".txt" && ext != ".html") {
			continue
		}
		if !slices.Contains(names, e.Name()) {
			return nil, fmt.Errorf("email.template_dir: %s is not a template this server uses; %s", filepath.Join(dir, e.Name()), expected)
		}
		src, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("email.template_dir: %w", err)
		}
		if err := t.parse(e.Name(), string(src)); err != nil {
			return nil, fmt.Errorf("email.template_dir: %s: %w", filepath.Join(dir, e.Name()), err)
		}
		found++
	}
	if found == 0 {
		return nil, fmt.Errorf("email.template_dir %q holds no template this server uses; %s", dir, expected)
	}
	return t, nil
}

const subjectPrefix = "Subject: "

func (t *Templates) parse(name, src string) error {
	switch filepath.Ext(name) {
	case ".txt":
		if !strings.HasPrefix(src, subjectPrefix) {
			return fmt.Errorf("a mail's .txt template begins with a %q line, then a blank line, then the body", strings.TrimSpace(subjectPrefix))
		}
		tt, err := texttemplate.New(name).Option("missingkey=error").Parse(src)
		if err != nil {
			return err
		}
		t.text[name] = tt
	case ".html":
		ht, err := htmltemplate.New(name).Option("missingkey=error").Parse(src)
		if err != nil {
			return err
		}
		t.html[name] = ht
	default:
		return errors.New("not a .txt or .html template")
	}
	return nil
}

// Mail renders the mail name (<name>.txt and, if there is one,
// <name>.html) with data, for the recipient to.
func (t *Templates) Mail(name, to string, data any) (Message, error) {
	tt, ok := t.text[name+".txt"]
	if !ok {
		return Message{}, fmt.Errorf("no mail template %s.txt", name)
	}
	var buf bytes.Buffer
	if err := tt.Execute(&buf, data); err != nil {
		return Message{}, fmt.Errorf("mail %s: %w", name, err)
	}
	first, body, _ := strings.Cut(buf.String(), "\n")
	m := Message{To: to, Subject: strings.TrimSpace(strings.TrimPrefix(first, subjectPrefix)),
		Text: strings.TrimLeft(body, "\r\n")}
	if ht, ok := t.html[name+".html"]; ok {
		buf.Reset()
		if err := ht.Execute(&buf, data); err != nil {
			return Message{}, fmt.Errorf("mail %s: %w", name, err)
		}
		m.HTML = buf.String()
	}
	return m, m.Validate()
}

// Page writes the page name (<name>.html) rendered with data, with headers
// that keep it out of frames (clickjacking), stop it sending the token in
// its address to other sites (Referer), and keep it out of caches.
func (t *Templates) Page(w http.ResponseWriter, status int, name string, data any) error {
	ht, ok := t.html[name+".html"]
	if !ok {
		return fmt.Errorf("no page template %s.html", name)
	}
	var buf bytes.Buffer
	if err := ht.Execute(&buf, data); err != nil {
		return fmt.Errorf("page %s: %w", name, err)
	}
	SafePageHeaders(w.Header())
	w.WriteHeader(status)
	_, err := w.Write(buf.Bytes())
	return err
}

// SafePageHeaders sets the headers of an HTML page reached from a link in a
// mail: no framing, no scripts, no Referer, no caching.
func SafePageHeaders(h http.Header) {
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
}
