package server_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/mail"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestSetMail_Suppression: the sender SetMail installs (a folder, as
// `cirrus serve` gives it) sends nothing to an address on the suppression
// list in the server's table, and everything else.
func TestSetMail_Suppression(t *testing.T) {
	s := servertest.Start(t)
	dir := t.TempDir()
	folder := mail.NewFolder(dir)
	folder.Logger = slog.New(slog.DiscardHandler)
	s.Server.SetMail(folder)
	ctx := context.Background()
	list := &mail.Suppressions{Store: s.Server.Store}
	if err := list.Add(ctx, mail.Suppression{Address: "Gone@Example.org", Reason: mail.ReasonBounce, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	msg := func(to string) mail.Message {
		return mail.Message{To: to, Subject: "Verify your address", Text: "https://matrix.example.org/_synapse/client/email/submit_token?sid=1&token=t"}
	}
	if err := s.Server.Mail.Send(ctx, msg("gone@example.org")); !errors.Is(err, mail.ErrSuppressed) {
		t.Fatalf("send to a suppressed address: got %v, want ErrSuppressed", err)
	}
	if err := s.Server.Mail.Send(ctx, msg("here@example.org")); err != nil {
		t.Fatal(err)
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 1 {
		t.Fatalf("folder holds %d mails (err %v), want the one not suppressed", len(entries), err)
	}
}
