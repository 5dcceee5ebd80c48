package mail_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/http"
	netmail "net/mail"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sesv2"

	"github.com/cirrus-matrix/cirrus/shared/mail"
	"github.com/cirrus-matrix/cirrus/shared/testenv"
)

// TestMain keeps the SES stand-in running across the package's tests.
func TestMain(m *testing.M) { testenv.Main(m) }

func resetMail(to string) mail.Message {
	return mail.Message{
		To:      to,
		Subject: "Réinitialisation du mot de passe ✓",
		Text:    "Follow this link to reset your password:\nhttps://matrix.example.org/_matrix/client/v3/reset?token=tok-123\n",
		HTML:    `<p>Follow <a href="https://matrix.example.org/_matrix/client/v3/reset?token=tok-123">this link</a> to reset your password.</p>`,
	}
}

func TestMessage_Validate(t *testing.T) {
	good := resetMail("alice@example.org")
	cases := []struct {
		name string
		edit func(m *mail.Message)
		want error
	}{
		{"Good", func(m *mail.Message) {}, nil},
		{"NamedRecipient", func(m *mail.Message) { m.To = "Alice Liddell <alice@example.org>" }, nil},
		{"TextOnly", func(m *mail.Message) { m.HTML = "" }, nil},
		{"HTMLOnly", func(m *mail.Message) { m.Text = "" }, nil},
		{"NoRecipient", func(m *mail.Message) { m.To = " " }, mail.ErrNoRecipient},
		{"NotAnAddress", func(m *mail.Message) { m.To = "alice" }, mail.ErrBadAddress},
		{"TwoRecipients", func(m *mail.Message) { m.To = "a@example.org, b@example.org" }, mail.ErrBadAddress},
		{"HeaderInjection", func(m *mail.Message) { m.To = "a@example.org\r\nBcc: b@example.org" }, mail.ErrBadAddress},
		{"NoSubject", func(m *mail.Message) { m.Subject = "" }, mail.ErrNoSubject},
		{"BlankSubject", func(m *mail.Message) { m.Subject = "  " }, mail.ErrNoSubject},
		{"SubjectLineBreak", func(m *mail.Message) { m.Subject = "hi\r\nBcc: b@example.org" }, mail.ErrBadSubject},
		{"NoBody", func(m *mail.Message) { m.Text, m.HTML = "", "" }, mail.ErrNoBody},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := good
			tc.edit(&m)
			err := m.Validate()
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Validate(%+v): got %v, want %v", m, err, tc.want)
			}
		})
	}
}

// apiFunc is a SendEmailAPI made of a function.
type apiFunc func(*sesv2.SendEmailInput) (*sesv2.SendEmailOutput, error)

func (f apiFunc) SendEmail(_ context.Context, in *sesv2.SendEmailInput, _ ...func(*sesv2.Options)) (*sesv2.SendEmailOutput, error) {
	return f(in)
}

func TestSES_RefusesBeforeSending(t *testing.T) {
	calls := 0
	api := apiFunc(func(*sesv2.SendEmailInput) (*sesv2.SendEmailOutput, error) {
		calls++
		return &sesv2.SendEmailOutput{}, nil
	})
	ctx := context.Background()
	if err := mail.NewSES(api, "noreply@example.org").Send(ctx, mail.Message{Subject: "s", Text: "t"}); !errors.Is(err, mail.ErrNoRecipient) {
		t.Errorf("no recipient: got %v, want ErrNoRecipient", err)
	}
	if err := mail.NewSES(api, "not an address").Send(ctx, resetMail("alice@example.org")); !errors.Is(err, mail.ErrBadAddress) {
		t.Errorf("bad From: got %v, want ErrBadAddress", err)
	}
	if calls != 0 {
		t.Errorf("SendEmail called %d times, want 0", calls)
	}
	boom := errors.New("throttled")
	failing := apiFunc(func(*sesv2.SendEmailInput) (*sesv2.SendEmailOutput, error) { return nil, boom })
	if err := mail.NewSES(failing, "noreply@example.org").Send(ctx, resetMail("alice@example.org")); !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "send email: ") {
		t.Errorf("SES error: got %v, want it wrapped as send email: ...", err)
	}
}

// storedEmail is one mail as aws-ses-v2-local's GET /store lists it.
type storedEmail struct {
	MessageID   string `json:"messageId"`
	From        string `json:"from"`
	Destination struct {
		To []string `json:"to"`
	} `json:"destination"`
	Subject string `json:"subject"`
	Body    struct {
		Text string `json:"text"`
		HTML string `json:"html"`
	} `json:"body"`
}

// storedTo returns the mail the stand-in at endpoint holds for the address to.
func storedTo(t *testing.T, endpoint, to string) []storedEmail {
	t.Helper()
	resp, err := http.Get(endpoint + "/store")
	if err != nil {
		t.Fatalf("read store: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("read store: %s", resp.Status)
	}
	var store struct {
		Emails []storedEmail `json:"emails"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&store); err != nil {
		t.Fatalf("decode store: %v", err)
	}
	var out []storedEmail
	for _, e := range store.Emails {
		if slices.ContainsFunc(e.Destination.To, func(a string) bool { return sameAddress(a, to) }) {
			out = append(out, e)
		}
	}
	return out
}

func TestSES_SendThroughStandin(t *testing.T) {
	endpoint := testenv.StartSES(t)
	client := sesv2.NewFromConfig(testenv.AWSConfig(endpoint))
	ses := mail.NewSES(client, "Cirrus <noreply@example.org>")
	ses.ConfigurationSet = "cirrus-test"
	ctx := context.Background()

	to := fmt.Sprintf("alice-%d@example.org", time.Now().UnixNano())
	m := resetMail(to)
	if err := ses.Send(ctx, m); err != nil {
		t.Fatal(err)
	}
	textOnlyTo := "Bob <bob-" + to + ">"
	if err := ses.Send(ctx, mail.Message{To: textOnlyTo, Subject: "Verify your address", Text: "code 424242"}); err != nil {
		t.Fatal(err)
	}

	got := storedTo(t, endpoint, to)
	if len(got) != 1 {
		t.Fatalf("store holds %d mails to %s, want 1", len(got), to)
	}
	e := got[0]
	if !sameAddress(e.From, "Cirrus <noreply@example.org>") || e.Subject != m.Subject || e.Body.Text != m.Text || e.Body.HTML != m.HTML {
		t.Errorf("stored mail:\n got %+v\nwant from Cirrus <noreply@example.org>, subject %q, text %q, html %q", e, m.Subject, m.Text, m.HTML)
	}
	if e.MessageID == "" {
		t.Error("stored mail has no message ID")
	}

	got = storedTo(t, endpoint, textOnlyTo)
	if len(got) != 1 || got[0].Body.Text != "code 424242" || got[0].Body.HTML != "" {
		t.Errorf("text-only mail: got %+v, want one with text only", got)
	}
}

func TestFolder_WritesReadableEML(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mail", "outbox") // created by Send
	var logs bytes.Buffer
	clock := time.Date(2026, 3, 4, 5, 6, 7, 890, time.UTC)
	f := mail.NewFolder(dir)
	f.From = "Cirrus <noreply@example.org>"
	f.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	f.Now = func() time.Time { clock = clock.Add(time.Millisecond); return clock }
	ctx := context.Background()

	m := resetMail("Alice Liddell <alice@example.org>")
	if err := f.Send(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := f.Send(ctx, mail.Message{To: "bob@example.org", Subject: "Verify", Text: "code 424242"}); err != nil {
		t.Fatal(err)
	}

	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 2 || !strings.HasPrefix(names[0], "20260304T050607.001000890Z") || !slices.IsSorted(names) || !strings.HasSuffix(names[1], ".eml") {
		t.Fatalf("got files %v, want two time-sorted .eml files, the first starting 20260304T050607.001000890Z", names)
	}
	info, err := os.Stat(filepath.Join(dir, names[0]))
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("file mode %v, want 0600: mail carries reset tokens", perm)
	}

	first := readEML(t, filepath.Join(dir, names[0]))
	if !sameAddress(first.to, m.To) || !sameAddress(first.from, f.From) || first.subject != m.Subject {
		t.Errorf("headers: got to %q from %q subject %q", first.to, first.from, first.subject)
	}
	if first.text != m.Text || first.html != m.HTML {
		t.Errorf("bodies:\n got text %q html %q\nwant text %q html %q", first.text, first.html, m.Text, m.HTML)
	}
	second := readEML(t, filepath.Join(dir, names[1]))
	if second.to != "bob@example.org" || second.text != "code 424242" || second.html != "" {
		t.Errorf("text-only mail: got %+v", second)
	}

	text := logs.String()
	if strings.Count(text, "\n") != 2 || !strings.Contains(text, `"to":"Alice Liddell <alice@example.org>"`) || !strings.Contains(text, names[0]) || !strings.Contains(text, `"subject":"Verify"`) {
		t.Errorf("want one log line per mail with to, subject and path, got:\n%s", text)
	}
	if strings.Contains(text, "tok-123") || strings.Contains(text, "424242") {
		t.Errorf("log contains a mail body:\n%s", text)
	}
}

func TestFolder_DefaultFromAndInvalid(t *testing.T) {
	dir := t.TempDir()
	f := mail.NewFolder(dir)
	f.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := f.Send(context.Background(), mail.Message{To: "x", Subject: "s", Text: "t"}); !errors.Is(err, mail.ErrBadAddress) {
		t.Fatalf("bad recipient: got %v, want ErrBadAddress", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("refused mail left files: %v", entries)
	}
	if err := f.Send(context.Background(), mail.Message{To: "x@example.org", Subject: "s", HTML: "<p>h</p>"}); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("got %d files, want 1", len(entries))
	}
	e := readEML(t, filepath.Join(dir, entries[0].Name()))
	if !sameAddress(e.from, mail.DefaultFolderFrom) || e.html != "<p>h</p>" || e.text != "" {
		t.Errorf("got %+v, want from %q and the HTML body only", e, mail.DefaultFolderFrom)
	}
}

// sameAddress reports whether a and b parse to the same name and address,
// since "Bob <b@x>" and `"Bob" <b@x>` are the same to a mail client.
func sameAddress(a, b string) bool {
	pa, errA := netmail.ParseAddress(a)
	pb, errB := netmail.ParseAddress(b)
	return errA == nil && errB == nil && *pa == *pb
}

type eml struct{ to, from, subject, text, html string }

// readEML parses a file the way a mail client would.
func readEML(t *testing.T, path string) eml {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	raw, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(bytes.ReplaceAll(raw, []byte("\r\n"), nil), []byte("\n")) {
		t.Errorf("%s has bare LF line ends, want CRLF", path)
	}
	msg, err := netmail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	var dec mime.WordDecoder
	subject, err := dec.DecodeHeader(msg.Header.Get("Subject"))
	if err != nil {
		t.Fatalf("decode subject: %v", err)
	}
	if _, err := msg.Header.Date(); err != nil {
		t.Errorf("Date header: %v", err)
	}
	if msg.Header.Get("Message-Id") == "" || msg.Header.Get("Mime-Version") != "1.0" {
		t.Errorf("headers lack Message-ID or MIME-Version: %v", msg.Header)
	}
	out := eml{to: msg.Header.Get("To"), from: msg.Header.Get("From"), subject: subject}
	mediaType, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		t.Fatalf("content type: %v", err)
	}
	setPart := func(contentType, encoding string, body io.Reader) {
		if encoding != "quoted-printable" {
			t.Errorf("transfer encoding %q, want quoted-printable", encoding)
		}
		b, err := io.ReadAll(quotedprintable.NewReader(body))
		if err != nil {
			t.Fatalf("decode body: %v", err)
		}
		// Line ends in text are CRLF on the wire and LF in the message.
		s := strings.ReplaceAll(string(b), "\r\n", "\n")
		switch {
		case strings.HasPrefix(contentType, "text/plain"):
			out.text = s
		case strings.HasPrefix(contentType, "text/html"):
			out.html = s
		default:
			t.Errorf("unexpected part %s", contentType)
		}
	}
	if mediaType != "multipart/alternative" {
		body, _ := io.ReadAll(msg.Body)
		setPart(mediaType, msg.Header.Get("Content-Transfer-Encoding"), bytes.NewReader(bytes.TrimSuffix(body, []byte("\r\n"))))
		return out
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("next part: %v", err)
		}
		setPart(p.Header.Get("Content-Type"), p.Header.Get("Content-Transfer-Encoding"), p)
	}
	return out
}
