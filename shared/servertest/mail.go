package servertest

import (
	"encoding/json"
	"net/http"
	"net/mail"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sesv2"

	cmail "github.com/cirrus-matrix/cirrus/shared/mail"
	"github.com/cirrus-matrix/cirrus/shared/testenv"
)

// Mailbox reads the mail a stack sent through the SES stand-in
// (aws-ses-v2-local), from its GET /store.
type Mailbox struct {
	Endpoint string
}

// Mail is one sent mail as the stand-in stored it.
type Mail struct {
	To, From, Subject, Text, HTML string
}

// UseSES sends the stack's mail through the suppression list and the real
// SES v2 client to the stand-in, as a Lambda function sends it to SES. The
// package's TestMain must be testenv.Main, which stops the stand-in. Start
// the stack with an email block (CIRRUS_EMAIL_NOTIF_FROM=...).
func (s *Stack) UseSES(t testing.TB) *Mailbox {
	t.Helper()
	endpoint := testenv.StartSES(t)
	from := "Cirrus <noreply@example.org>"
	if s.cfg.Email != nil && s.cfg.Email.NotifFrom != "" {
		from = s.cfg.Email.NotifFrom
	}
	s.Server.SetMail(cmail.NewSES(sesv2.NewFromConfig(testenv.AWSConfig(endpoint)), from))
	return &Mailbox{Endpoint: endpoint}
}

// To lists the mail sent to the address to so far, oldest first. The
// stand-in is shared by a package's tests: use addresses no other test uses.
func (m *Mailbox) To(t testing.TB, to string) []Mail {
	t.Helper()
	resp, err := http.Get(m.Endpoint + "/store")
	if err != nil {
		t.Fatalf("read mail store: %v", err)
	}
	defer resp.Body.Close()
	var store struct {
		Emails []struct {
			From        string `json:"from"`
			Destination struct {
				To []string `json:"to"`
			} `json:"destination"`
			Subject string `json:"subject"`
			Body    struct {
				Text string `json:"text"`
				HTML string `json:"html"`
			} `json:"body"`
		} `json:"emails"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&store); err != nil {
		t.Fatalf("decode mail store: %v", err)
	}
	var out []Mail
	for _, e := range store.Emails {
		for _, a := range e.Destination.To {
			if bare(a) == bare(to) {
				out = append(out, Mail{To: a, From: e.From, Subject: e.Subject, Text: e.Body.Text, HTML: e.Body.HTML})
			}
		}
	}
	return out
}

// Wait returns the mail sent to the address to once there are at least n,
// for mail sent by work that runs after the request (a queue job). It
// fails the test when a minute passes first: a bound on a hang, not on
// speed.
func (m *Mailbox) Wait(t testing.TB, to string, n int) []Mail {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		got := m.To(t, to)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d mails to %s, want %d", len(got), to, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var linkRE = regexp.MustCompile(`https?://[^\s"'<>]+`)

// Links lists the URLs in a mail's text body.
func (m Mail) Links() []string {
	return linkRE.FindAllString(m.Text, -1)
}

// LinkTo returns the mail's first link that begins with prefix, failing
// the test when there is none.
func (m Mail) LinkTo(t testing.TB, prefix string) string {
	t.Helper()
	for _, l := range m.Links() {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	t.Fatalf("mail %q has no link to %s: %s", m.Subject, prefix, m.Text)
	return ""
}

func bare(a string) string {
	if p, err := mail.ParseAddress(a); err == nil {
		return strings.ToLower(p.Address)
	}
	return strings.ToLower(a)
}
