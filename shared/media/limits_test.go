package media_test

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/media"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestUploadRate: rc_media_upload counts each user's uploads, POST and PUT
// alike, across instances (a twin server shares the count); past the
// burst an upload is 429 M_LIMIT_EXCEEDED with retry_after_ms, and other
// users are not affected.
func TestUploadRate(t *testing.T) {
	st := servertest.Start(t, "CIRRUS_RC_MEDIA_UPLOAD_PER_SECOND=0.01", "CIRRUS_RC_MEDIA_UPLOAD_BURST_COUNT=2")
	alice := st.Member(t, "alice")
	bob := st.Register(t, "bob")
	// One fixed window for the whole test, whatever the wall clock does.
	pinned := time.Now().Truncate(time.Hour).Add(time.Minute)
	st.Server.Media.Limits.Limiter.Now = func() time.Time { return pinned }
	twin := st.Twin(t)
	twin.Server.Media.Limits.Limiter.Now = st.Server.Media.Limits.Limiter.Now

	upload(t, st, alice.User.AccessToken, "text/plain", "", []byte("one"))
	st.CheckCost(t, "upload with the rate counted", "POST /_matrix/media/v3/upload", servertest.Want(4, 2, 7))
	upload(t, twin, alice.User.AccessToken, "text/plain", "", []byte("two"))
	a := do(t, "POST", st.URL+"/_matrix/media/v3/upload", alice.User.AccessToken, "text/plain", []byte("three"))
	var e struct {
		RetryAfterMS int64 `json:"retry_after_ms"`
	}
	if a.Status != 429 || a.errcode() != "M_LIMIT_EXCEEDED" || json.Unmarshal(a.Body, &e) != nil || e.RetryAfterMS <= 0 {
		t.Fatalf("third upload in the window: %d %s, want 429 M_LIMIT_EXCEEDED with retry_after_ms", a.Status, a.Body)
	}
	created, err := alice.CreateMXC(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if a := do(t, "PUT", st.URL+"/_matrix/media/v3/upload/"+created.ContentURI.Homeserver+"/"+created.ContentURI.FileID, alice.User.AccessToken, "text/plain", []byte("x")); a.Status != 429 || a.errcode() != "M_LIMIT_EXCEEDED" {
		t.Errorf("PUT upload past the rate: %d %s, want 429 M_LIMIT_EXCEEDED", a.Status, a.Body)
	}
	upload(t, st, bob.AccessToken, "text/plain", "", []byte("bob's"))
	// The next window.
	pinned = pinned.Add(time.Hour)
	upload(t, st, alice.User.AccessToken, "text/plain", "", []byte("later"))
}

// TestUploadQuota: media_upload_limits bounds the bytes a user uploads in
// each period: an upload that would pass one is 400
// M_RESOURCE_LIMIT_EXCEEDED (Synapse's answer), one that fits is taken;
// deleted media no longer counts, and the period passes.
func TestUploadQuota(t *testing.T) {
	st := servertest.Start(t, `CIRRUS_MEDIA_UPLOAD_LIMITS=[{"time_period":"1h","max_size":"100"},{"time_period":"1d","max_size":"1K"}]`)
	root := admin(t, st)
	alice := st.Member(t, "alice")
	bob := st.Register(t, "bob")
	c := &clock{t: time.Now()}
	st.Server.Media.Now = c.now

	first := mustMXC(t, upload(t, st, alice.User.AccessToken, "application/octet-stream", "", bytes.Repeat([]byte{1}, 60)))
	upload(t, st, alice.User.AccessToken, "application/octet-stream", "", bytes.Repeat([]byte{2}, 40))
	st.CheckCost(t, "upload within media_upload_limits", "POST /_matrix/media/v3/upload", servertest.Want(5, 2.5, 7))
	over := func(who, token string, n int) {
		t.Helper()
		if a := do(t, "POST", st.URL+"/_matrix/media/v3/upload", token, "application/octet-stream", bytes.Repeat([]byte{3}, n)); a.Status != 400 || a.errcode() != "M_RESOURCE_LIMIT_EXCEEDED" {
			t.Fatalf("%s: upload of %d bytes over the limit: %d %s, want 400 M_RESOURCE_LIMIT_EXCEEDED", who, n, a.Status, a.Body)
		}
	}
	over("alice at 100 of 100 bytes an hour", alice.User.AccessToken, 1)
	upload(t, st, bob.AccessToken, "application/octet-stream", "", bytes.Repeat([]byte{4}, 100))

	if r := do(t, "DELETE", st.URL+"/_synapse/admin/v1/media/"+first.Homeserver+"/"+first.FileID, root, "", nil); r.Status != 200 {
		t.Fatalf("delete: %d %s", r.Status, r.Body)
	}
	upload(t, st, alice.User.AccessToken, "application/octet-stream", "", bytes.Repeat([]byte{5}, 60))

	// An hour on, the hourly budget is back, the daily one counts on.
	for range 9 {
		c.set(c.now().Add(61 * time.Minute))
		upload(t, st, alice.User.AccessToken, "application/octet-stream", "", bytes.Repeat([]byte{6}, 100))
	}
	over("alice at 1000 of 1K a day", alice.User.AccessToken, 100)
}

// TestRateLimit: Synapse's per_second and burst_count become burst_count
// per the time the bucket takes to refill.
func TestRateLimit(t *testing.T) {
	for _, tc := range []struct {
		perSecond, burst float64
		wantBurst        int64
		wantWindow       time.Duration
	}{
		{10, 50, 50, 5 * time.Second},
		{0.1, 2, 2, 20 * time.Second},
		{100, 10, 10, time.Second},
		{0, 10, 0, 0},
	} {
		l := media.RateLimit("x", tc.perSecond, tc.burst)
		if l.Burst != tc.wantBurst || l.Window != tc.wantWindow {
			t.Errorf("RateLimit(%v, %v) = %d per %v, want %d per %v", tc.perSecond, tc.burst, l.Burst, l.Window, tc.wantBurst, tc.wantWindow)
		}
	}
}
