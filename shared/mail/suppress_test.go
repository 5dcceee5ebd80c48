package mail_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sesv2"

	"github.com/cirrus-matrix/cirrus/shared/mail"
	"github.com/cirrus-matrix/cirrus/shared/store"
	"github.com/cirrus-matrix/cirrus/shared/store/embedded"
	"github.com/cirrus-matrix/cirrus/shared/testenv"
)

// newStore starts an embedded DynamoDB with the table made.
func newStore(t *testing.T) *store.Store {
	t.Helper()
	db, err := embedded.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ctx := context.Background()
	st, err := store.Open(ctx, store.Options{Table: "t", Endpoint: db.URL()})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CreateTable(ctx); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestSuppressions_AddLookupRemove(t *testing.T) {
	ctx := context.Background()
	list := &mail.Suppressions{Store: newStore(t)}
	at := time.Date(2026, 12, 1, 10, 0, 0, 123e6, time.UTC)
	if err := list.Add(ctx, mail.Suppression{Address: "Bounced <Bounced.User@Example.ORG>", Reason: mail.ReasonBounce, Detail: "NoEmail", At: at}); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"bounced.user@example.org", "BOUNCED.USER@EXAMPLE.ORG", "Someone <bounced.user@example.org>"} {
		got, found, err := list.Lookup(ctx, addr)
		want := mail.Suppression{Address: "bounced.user@example.org", Reason: mail.ReasonBounce, Detail: "NoEmail", At: at}
		if err != nil || !found || got != want {
			t.Errorf("Lookup(%q) = %+v, %v, %v; want %+v, true", addr, got, found, err, want)
		}
	}
	if _, found, err := list.Lookup(ctx, "other@example.org"); err != nil || found {
		t.Errorf("Lookup of an address never added: found %v, err %v", found, err)
	}
	if _, _, err := list.Lookup(ctx, "not an address"); !errors.Is(err, mail.ErrBadAddress) {
		t.Errorf("Lookup of a bad address: got %v, want ErrBadAddress", err)
	}
	if err := list.Remove(ctx, "Bounced.User@example.org"); err != nil {
		t.Fatal(err)
	}
	if _, found, err := list.Lookup(ctx, "bounced.user@example.org"); err != nil || found {
		t.Errorf("after Remove: found %v, err %v", found, err)
	}
	if err := list.Remove(ctx, "never@example.org"); err != nil {
		t.Errorf("Remove of an address not on the list: %v", err)
	}
}

// TestSuppressing_SES sends through the SES stand-in behind the list: a
// suppressed address gets nothing and the caller can tell why; others get
// their mail.
func TestSuppressing_SES(t *testing.T) {
	endpoint := testenv.StartSES(t)
	ses := mail.NewSES(sesv2.NewFromConfig(testenv.AWSConfig(endpoint)), "Cirrus <noreply@example.org>")
	ctx := context.Background()
	list := &mail.Suppressions{Store: newStore(t)}
	var logs bytes.Buffer
	sender := &mail.Suppressing{Next: ses, List: list, Logger: slog.New(slog.NewJSONHandler(&logs, nil))}

	n := time.Now().UnixNano()
	gone := fmt.Sprintf("gone-%d@example.org", n)
	spam := fmt.Sprintf("spam-%d@example.org", n)
	fine := fmt.Sprintf("fine-%d@example.org", n)
	if err := list.Add(ctx, mail.Suppression{Address: gone, Reason: mail.ReasonBounce, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := list.Add(ctx, mail.Suppression{Address: strings.ToUpper(spam), Reason: mail.ReasonComplaint, At: time.Now()}); err != nil {
		t.Fatal(err)
	}

	for _, to := range []string{"Gone <" + strings.ToUpper(gone) + ">", spam} {
		err := sender.Send(ctx, resetMail(to))
		if !errors.Is(err, mail.ErrSuppressed) {
			t.Errorf("Send to %s: got %v, want ErrSuppressed", to, err)
		}
	}
	if err := sender.Send(ctx, resetMail(fine)); err != nil {
		t.Fatalf("Send to an address not on the list: %v", err)
	}
	if got := storedTo(t, endpoint, gone); len(got) != 0 {
		t.Errorf("suppressed %s got %d mails", gone, len(got))
	}
	if got := storedTo(t, endpoint, spam); len(got) != 0 {
		t.Errorf("suppressed %s got %d mails", spam, len(got))
	}
	if got := storedTo(t, endpoint, fine); len(got) != 1 {
		t.Errorf("%s got %d mails, want 1", fine, len(got))
	}

	text := logs.String()
	if strings.Count(text, "\n") != 2 || !strings.Contains(text, `"to":"`+gone+`"`) || !strings.Contains(text, `"reason":"complaint"`) {
		t.Errorf("want one log line per suppressed mail, with address and reason, got:\n%s", text)
	}
	if strings.Contains(text, "tok-123") {
		t.Errorf("log contains a mail body:\n%s", text)
	}

	// An invalid message is refused before the list is read, as the
	// sender behind would refuse it.
	if err := sender.Send(ctx, mail.Message{To: fine, Subject: "s"}); !errors.Is(err, mail.ErrNoBody) {
		t.Errorf("invalid message: got %v, want ErrNoBody", err)
	}
}

// TestSuppressing_Folder is what `cirrus serve` runs: no file is written
// for a suppressed address.
func TestSuppressing_Folder(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	list := &mail.Suppressions{Store: newStore(t)}
	folder := mail.NewFolder(dir)
	folder.Logger = slog.New(slog.DiscardHandler)
	sender := &mail.Suppressing{Next: folder, List: list, Logger: slog.New(slog.DiscardHandler)}
	if err := list.Add(ctx, mail.Suppression{Address: "gone@example.org", Reason: mail.ReasonBounce, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := sender.Send(ctx, resetMail("gone@example.org")); !errors.Is(err, mail.ErrSuppressed) {
		t.Fatalf("got %v, want ErrSuppressed", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("suppressed mail written: %v", entries)
	}
	if err := sender.Send(ctx, resetMail("here@example.org")); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("got %d files, want 1", len(entries))
	}
}
