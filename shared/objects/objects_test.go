package objects_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/bigbody/fakes3"
	"github.com/cirrus-matrix/cirrus/shared/objects"
)

// open starts the embedded S3 API, with its objects in dir ("" for memory),
// and makes the bucket name in it.
func open(t *testing.T, dir, name string) *objects.Bucket {
	t.Helper()
	srv, err := fakes3.StartDir("127.0.0.1:0", dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	b, err := objects.Open(context.Background(), name, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	if err := b.CreateBucket(context.Background()); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBucket puts, reads, lists, presigns and deletes through the real SDK.
func TestBucket(t *testing.T) {
	ctx := context.Background()
	b := open(t, "", "test")
	if _, _, err := b.Get(ctx, "missing"); !errors.Is(err, objects.ErrNotFound) {
		t.Fatalf("get of a missing key: %v, want ErrNotFound", err)
	}
	if _, err := b.Head(ctx, "missing"); !errors.Is(err, objects.ErrNotFound) {
		t.Fatalf("head of a missing key: %v, want ErrNotFound", err)
	}
	body := []byte("hello, bucket")
	if err := b.PutObject(ctx, "a/1", body, objects.Meta{ContentType: "text/plain"}); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, "a/2", body, "application/json", ""); err != nil {
		t.Fatal(err)
	}
	m, err := b.Head(ctx, "a/1")
	if err != nil || m.Size != int64(len(body)) || m.ContentType != "text/plain" {
		t.Fatalf("head: %+v, %v; want %d bytes of text/plain", m, err, len(body))
	}
	rc, m, err := b.Get(ctx, "a/1")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if string(got) != string(body) || m.Size != int64(len(body)) {
		t.Fatalf("get: %q (%d), want %q", got, m.Size, body)
	}
	keys, err := b.List(ctx, "a/")
	if err != nil || !slices.Equal(keys, []string{"a/1", "a/2"}) {
		t.Fatalf("list: %v, %v; want [a/1 a/2]", keys, err)
	}
	u, err := b.PresignGet(ctx, "a/1", time.Minute, "", "")
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(got) != string(body) {
		t.Fatalf("presigned GET: %d %q", res.StatusCode, got)
	}
	if err := b.Delete(ctx, "a/1"); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, "a/1"); err != nil {
		t.Fatalf("delete of a missing key: %v, want none", err)
	}
	if _, err := b.Head(ctx, "a/1"); !errors.Is(err, objects.ErrNotFound) {
		t.Fatalf("head after delete: %v, want ErrNotFound", err)
	}
}

// TestBucket_OnDisk: objects the embedded S3 API keeps in a folder are
// there after a restart, and a deleted one is not.
func TestBucket_OnDisk(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "media")
	b := open(t, dir, "media")
	for _, k := range []string{"content/sha256/aa", "content/sha256/bb"} {
		if err := b.PutObject(ctx, k, []byte(k), objects.Meta{ContentType: "image/png"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Delete(ctx, "content/sha256/bb"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatal(err)
	}
	again := open(t, dir, "media")
	rc, m, err := again.Get(ctx, "content/sha256/aa")
	if err != nil {
		t.Fatalf("after a restart: %v", err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if string(got) != "content/sha256/aa" || m.ContentType != "image/png" {
		t.Fatalf("after a restart: %q, %q", got, m.ContentType)
	}
	if _, err := again.Head(ctx, "content/sha256/bb"); !errors.Is(err, objects.ErrNotFound) {
		t.Fatalf("deleted object after a restart: %v, want ErrNotFound", err)
	}
}
