package media_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/cirrus-matrix/cirrus/shared/media"
	"github.com/cirrus-matrix/cirrus/shared/objects"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// cachedRemote stands in for the fetching of other servers' media: it
// answers the media IDs it holds as if cached here.
type cachedRemote map[string]media.Media

func (r cachedRemote) Media(_ context.Context, serverName, mediaID string, _ time.Duration) (media.Media, error) {
	if m, ok := r[serverName+"/"+mediaID]; ok {
		return m, nil
	}
	return media.Media{}, media.ErrNotFound
}

// TestRetention: with media_retention's lifetimes (local 30d, remote 7d,
// as Synapse's keys through the environment), local media is deleted once
// nobody has downloaded it for the lifetime, counted from its upload when
// never downloaded: of four uploads at days 0, 10, 10 (the same bytes as
// the second) and 20, with the first and third downloaded at day 25, a run
// at day 52 deletes the second and fourth (downloads then 404
// M_NOT_FOUND); the fourth's object goes, the second's stays (the third
// refers to it); the others still download, and one quarantined at day 10
// is kept as Synapse keeps it. Other servers' cached media
// expires by its last download. A second run, through the queue kind the
// schedule sends, deletes nothing.
func TestRetention(t *testing.T) {
	st := servertest.Start(t, "CIRRUS_MEDIA_RETENTION_LOCAL_MEDIA_LIFETIME=30d", "CIRRUS_MEDIA_RETENTION_REMOTE_MEDIA_LIFETIME=7d")
	svc := st.Server.Media
	if svc.Retention != (media.Retention{Local: 30 * 24 * time.Hour, Remote: 7 * 24 * time.Hour}) {
		t.Fatalf("Retention %+v: media_retention did not reach the service", svc.Retention)
	}
	alice := st.Member(t, "alice")
	token := alice.User.AccessToken
	ctx := context.Background()
	day0 := time.Date(2030, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := day0
	svc.Now = func() time.Time { return clock }
	at := func(days int) { clock = day0.Add(time.Duration(days) * 24 * time.Hour) }
	download := func(uri string) answer {
		t.Helper()
		return do(t, "GET", st.URL+"/_matrix/client/v1/media/download/"+strings.TrimPrefix(uri, "mxc://"), token, "", nil)
	}

	old := upload(t, st, token, "text/plain", "", []byte("old but read"))
	// The upload's own cost is the upload path's (media_test.go), two
	// PutItems more: the access item and its entry.
	u := st.LastRequestTo(t, "POST /_matrix/media/v3/upload").DynamoDB
	t.Logf("upload with retention: %d calls, %.1f RCU, %.1f WCU", u.Calls, u.ReadUnits, u.WriteUnits)
	at(10)
	shared := upload(t, st, token, "text/plain", "", []byte("shared bytes"))
	twin := upload(t, st, token, "text/plain", "", []byte("shared bytes"))
	held := upload(t, st, token, "text/plain", "", []byte("quarantined"))
	at(20)
	unread := upload(t, st, token, "text/plain", "", []byte("never read"))
	at(25)
	for _, uri := range []string{old, twin} {
		if a := download(uri); a.Status != 200 {
			t.Fatalf("download %s: %d %s", uri, a.Status, a.Body)
		}
	}
	st.CheckCost(t, "download recording an access", "GET /_matrix/client/v1/media/download/", servertest.Want(6, 3, 3))
	download(old)
	st.CheckCost(t, "download, access recorded today", "GET /_matrix/client/v1/media/download/", servertest.Want(3, 3, 0))

	// Other servers' media: read at day 0, and one of them again at day 50.
	remote := cachedRemote{}
	for _, id := range []string{"STALE", "FRESH"} {
		remote["other.example/"+id] = media.Media{ServerName: "other.example", MediaID: id, Size: 1, ContentType: "text/plain",
			Object: "remote/other.example/" + id, Created: day0, Uploaded: day0}
		if err := svc.Objects.PutObject(ctx, "remote/other.example/"+id, []byte("x"), objects.Meta{ContentType: "text/plain"}); err != nil {
			t.Fatal(err)
		}
	}
	svc.Remote = remote
	at(0)
	for _, id := range []string{"STALE", "FRESH"} {
		if a := download("mxc://other.example/" + id); a.Status != 200 {
			t.Fatalf("remote download %s: %d %s", id, a.Status, a.Body)
		}
	}
	at(50)
	download("mxc://other.example/FRESH")

	// Quarantined media is never deleted by retention, as in Synapse.
	if err := svc.Quarantine(ctx, servertest.ServerName, mustMXC(t, held).FileID, "@admin:"+servertest.ServerName); err != nil {
		t.Fatal(err)
	}

	at(52)
	mctx, meter := store.WithMeter(ctx)
	run, err := svc.ApplyRetention(mctx)
	if err != nil {
		t.Fatal(err)
	}
	// DeleteMedia's share is admin.go's; logged for docs/storage.md.
	u = meter.Usage()
	t.Logf("run deleting 2 local, 1 remote: %d calls, %.1f RCU, %.1f WCU", u.Calls, u.ReadUnits, u.WriteUnits)
	sort.Strings(run.Deleted)
	want := []string{shared, unread, "mxc://other.example/STALE"}
	sort.Strings(want)
	if !slices.Equal(run.Deleted, want) || run.More || run.Kept != 1 {
		t.Fatalf("run deleted %v (more: %v, kept %d), want %v and the quarantined one kept", run.Deleted, run.More, run.Kept, want)
	}
	if err := svc.Quarantine(ctx, servertest.ServerName, mustMXC(t, held).FileID, ""); err != nil {
		t.Fatal(err)
	}
	if a := download(held); a.Status != 200 || string(a.Body) != "quarantined" {
		t.Errorf("download of the quarantined media once released: %d %q, want it kept", a.Status, a.Body)
	}
	for _, uri := range []string{shared, unread} {
		if a := download(uri); a.Status != 404 || a.errcode() != "M_NOT_FOUND" {
			t.Errorf("download of expired %s: %d %s, want 404 M_NOT_FOUND", uri, a.Status, a.Body)
		}
	}
	for uri, body := range map[string]string{old: "old but read", twin: "shared bytes"} {
		if a := download(uri); a.Status != 200 || string(a.Body) != body {
			t.Errorf("download of kept %s: %d %q, want 200 %q", uri, a.Status, a.Body, body)
		}
	}
	object := func(content string) error {
		sum := sha256.Sum256([]byte(content))
		_, err := svc.Objects.Head(ctx, media.ObjectKey(hex.EncodeToString(sum[:])))
		return err
	}
	if err := object("never read"); !errors.Is(err, objects.ErrNotFound) {
		t.Errorf("the object of the deleted, unshared media: %v, want it gone", err)
	}
	for _, content := range []string{"shared bytes", "old but read"} {
		if err := object(content); err != nil {
			t.Errorf("the object of %q, still referred to: %v", content, err)
		}
	}

	// Again, as the schedule runs it: the queue kind, in the sender's
	// dispatcher. Nothing is left to delete, and nothing kept is.
	res, err := st.Server.Jobs.HandleSQSEvent(ctx, events.SQSEvent{Records: []events.SQSMessage{{
		MessageId: "media-retention", Body: "{}",
		MessageAttributes: map[string]events.SQSMessageAttribute{"kind": {DataType: "String", StringValue: ptr(media.RetentionKind)}},
	}}})
	if err != nil || len(res.BatchItemFailures) != 0 {
		t.Fatalf("the scheduled run: %v, failures %v", err, res.BatchItemFailures)
	}
	mctx, meter = store.WithMeter(ctx)
	again, err := svc.ApplyRetention(mctx)
	servertest.CheckUsage(t, "run with nothing to do", meter.Usage(), servertest.Want(2, 2, 0))
	if err != nil || len(again.Deleted) != 0 || again.Moved != 0 || again.More {
		t.Errorf("a run after: %+v, %v; want nothing done", again, err)
	}
	for uri, body := range map[string]string{old: "old but read", twin: "shared bytes"} {
		if a := download(uri); a.Status != 200 || string(a.Body) != body {
			t.Errorf("after the second run, %s: %d %q, want 200 %q", uri, a.Status, a.Body, body)
		}
	}
}

func ptr[T any](v T) *T { return &v }
