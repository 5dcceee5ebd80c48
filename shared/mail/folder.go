package mail

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultFolderFrom is the sender Folder writes when From is empty.
const DefaultFolderFrom = "Cirrus <cirrus@localhost>"

// Folder "sends" mail by writing each message to a directory as an RFC 5322
// .eml file, which any mail client opens, for `cirrus serve`, where there is
// no SES. File names start with the UTC time the mail was written, so that
// they sort by time and the newest is last. Each mail is logged as one line
// with its recipient, subject and file, never its body, which carries reset
// links and tokens; the files are readable by their owner only.
type Folder struct {
	// Dir is the directory, created if missing.
	Dir string
	// From is the sender; empty means DefaultFolderFrom.
	From string
	// Logger gets the line for each mail; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock for file names and the Date header; nil means time.Now.
	Now func() time.Time
}

// NewFolder returns a Folder that writes into dir.
func NewFolder(dir string) *Folder {
	return &Folder{Dir: dir}
}

// Send writes m to a new file in the folder. The file appears whole or not at
// all: it is written under a temporary name and then renamed.
func (f *Folder) Send(ctx context.Context, m Message) error {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("write mail: %w", err)
	}
	fromText := f.From
	if fromText == "" {
		fromText = DefaultFolderFrom
	}
	from, err := parseAddress(fromText)
	if err != nil {
		return fmt.Errorf("write mail: from: %w", err)
	}
	to, _ := parseAddress(m.To) // checked by Validate
	now := time.Now()
	if f.Now != nil {
		now = f.Now()
	}
	data, err := renderEML(now, from.Address, formatAddress(from), formatAddress(to), m)
	if err != nil {
		return fmt.Errorf("write mail: %w", err)
	}

	if err := os.MkdirAll(f.Dir, 0o700); err != nil {
		return fmt.Errorf("write mail: %w", err)
	}
	name := now.UTC().Format("20060102T150405.000000000Z") + "-" + randomHex(4) + ".eml"
	path := filepath.Join(f.Dir, name)
	if err := writeFileAtomic(path, data); err != nil {
		return fmt.Errorf("write mail: %w", err)
	}

	log := f.Logger
	if log == nil {
		log = slog.Default()
	}
	log.LogAttrs(ctx, slog.LevelInfo, "mail written",
		slog.String("to", m.To), slog.String("subject", m.Subject), slog.String("path", path))
	return nil
}

// renderEML builds the message: headers, then a text/plain or text/html body,
// or both as multipart/alternative, quoted-printable, with CRLF line ends.
func renderEML(now time.Time, fromAddr, from, to string, m Message) ([]byte, error) {
	var buf bytes.Buffer
	domain := "localhost"
	if i := strings.LastIndexByte(fromAddr, '@'); i >= 0 {
		domain = fromAddr[i+1:]
	}
	header := func(k, v string) { fmt.Fprintf(&buf, "%s: %s\r\n", k, v) }
	header("Date", now.Format(time.RFC1123Z))
	header("From", from)
	header("To", to)
	// Long encoded subjects are folded between encoded words, to keep
	// lines under RFC 5322's 78 characters.
	header("Subject", strings.ReplaceAll(mime.QEncoding.Encode("utf-8", m.Subject), "?= =?", "?=\r\n =?"))
	header("Message-ID", "<"+randomHex(16)+"@"+domain+">")
	header("MIME-Version", "1.0")
	for _, h := range m.Headers {
		header(h.Name, h.Value)
	}

	type part struct{ contentType, body string }
	var parts []part
	if m.Text != "" {
		parts = append(parts, part{"text/plain; charset=utf-8", m.Text})
	}
	if m.HTML != "" {
		parts = append(parts, part{"text/html; charset=utf-8", m.HTML})
	}
	if len(parts) == 1 {
		header("Content-Type", parts[0].contentType)
		header("Content-Transfer-Encoding", "quoted-printable")
		buf.WriteString("\r\n")
		if err := writeQP(&buf, parts[0].body); err != nil {
			return nil, err
		}
		if !bytes.HasSuffix(buf.Bytes(), []byte("\r\n")) {
			buf.WriteString("\r\n")
		}
		return buf.Bytes(), nil
	}

	mw := multipart.NewWriter(&buf)
	header("Content-Type", mime.FormatMediaType("multipart/alternative", map[string]string{"boundary": mw.Boundary()}))
	buf.WriteString("\r\n")
	for _, p := range parts {
		w, err := mw.CreatePart(textproto.MIMEHeader{
			"Content-Type":              {p.contentType},
			"Content-Transfer-Encoding": {"quoted-printable"},
		})
		if err != nil {
			return nil, fmt.Errorf("mime part: %w", err)
		}
		if err := writeQP(w, p.body); err != nil {
			return nil, err
		}
	}
	if err := mw.Close(); err != nil {
		return nil, fmt.Errorf("mime part: %w", err)
	}
	return buf.Bytes(), nil
}

// writeQP writes s quoted-printable, with line ends as CRLF.
func writeQP(w io.Writer, s string) error {
	qp := quotedprintable.NewWriter(w)
	if _, err := qp.Write([]byte(s)); err != nil {
		return fmt.Errorf("encode body: %w", err)
	}
	if err := qp.Close(); err != nil {
		return fmt.Errorf("encode body: %w", err)
	}
	return nil
}

// writeFileAtomic writes data to a temporary file beside path, readable by
// its owner only, and renames it to path.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*.eml")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
