package media_test

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/config"
	"github.com/cirrus-matrix/cirrus/shared/media"
	"github.com/cirrus-matrix/cirrus/shared/objects"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// images are tiny real files of each format clients send.
func images(t *testing.T) map[string][]byte {
	t.Helper()
	img := image.NewPaletted(image.Rect(0, 0, 4, 3), color.Palette{color.Black, color.White, color.RGBA{200, 30, 30, 255}})
	for x := range 4 {
		img.SetColorIndex(x, x%3, uint8(x%3))
	}
	out := map[string][]byte{}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	out["image/png"] = bytes.Clone(b.Bytes())
	b.Reset()
	if err := jpeg.Encode(&b, img, nil); err != nil {
		t.Fatal(err)
	}
	out["image/jpeg"] = bytes.Clone(b.Bytes())
	b.Reset()
	if err := gif.Encode(&b, img, nil); err != nil {
		t.Fatal(err)
	}
	out["image/gif"] = bytes.Clone(b.Bytes())
	return out
}

// answer is a raw HTTP answer.
type answer struct {
	Status int
	Header http.Header
	Body   []byte
}

// errcode is the Matrix errcode of a JSON error answer.
func (a answer) errcode() string {
	var e struct {
		Errcode string `json:"errcode"`
	}
	json.Unmarshal(a.Body, &e)
	return e.Errcode
}

// do sends a request without following redirects.
func do(t *testing.T, method, url, token, contentType string, body []byte) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body == nil {
		req.Body, req.ContentLength = nil, 0
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{res.StatusCode, res.Header, raw}
}

func mustMXC(t *testing.T, uri string) id.ContentURI {
	t.Helper()
	u, err := id.ParseContentURI(uri)
	if err != nil || u.Homeserver != servertest.ServerName {
		t.Fatalf("content_uri %q: %v", uri, err)
	}
	return u
}

// checkSafety fails unless a has the headers every media answer carries.
func checkSafety(t *testing.T, what string, a answer) {
	t.Helper()
	if csp := a.Header.Get("Content-Security-Policy"); !strings.HasPrefix(csp, "sandbox;") || !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("%s: Content-Security-Policy %q, want a sandbox with default-src 'none'", what, csp)
	}
	if a.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("%s: X-Content-Type-Options %q, want nosniff", what, a.Header.Get("X-Content-Type-Options"))
	}
}

// TestUploadDownload: PNG, JPEG and GIF files uploaded with mautrix-go come
// back byte for byte through the authenticated download (mautrix-go's
// Download) and, uploaded before the freeze, the legacy one without a
// token; each costs what docs/storage.md says.
func TestUploadDownload(t *testing.T) {
	st := servertest.Start(t, "CIRRUS_MEDIA_FREEZE=2999-01-01")
	alice := st.Member(t, "alice")
	ctx := context.Background()
	for ctype, data := range images(t) {
		t.Run(ctype, func(t *testing.T) {
			name := "picture." + strings.TrimPrefix(ctype, "image/")
			up, err := alice.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: data, ContentType: ctype, FileName: name})
			if err != nil {
				t.Fatal(err)
			}
			st.CheckCost(t, "upload", "POST /_matrix/media/v3/upload", servertest.Want(4, 2, 7))
			mxc := mustMXC(t, up.ContentURI.String())
			res, err := alice.Download(ctx, mxc)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if !bytes.Equal(got, data) || res.Header.Get("Content-Type") != ctype {
				t.Fatalf("v1 download: %d bytes of %s, want the %d uploaded of %s", len(got), res.Header.Get("Content-Type"), len(data), ctype)
			}
			if cd := res.Header.Get("Content-Disposition"); cd != `inline; filename="`+name+`"` {
				t.Errorf("v1 download: Content-Disposition %q, want inline with the filename", cd)
			}
			st.CheckCost(t, "download", "GET /_matrix/client/v1/media/download/", servertest.Want(2, 2, 0))
			legacy := do(t, "GET", st.URL+"/_matrix/media/v3/download/"+mxc.Homeserver+"/"+mxc.FileID, "", "", nil)
			if legacy.Status != 200 || !bytes.Equal(legacy.Body, data) {
				t.Fatalf("legacy download: %d, %d bytes; want 200 and the %d uploaded", legacy.Status, len(legacy.Body), len(data))
			}
			checkSafety(t, "legacy download", legacy)
			st.CheckCost(t, "legacy download", "GET /_matrix/media/v3/download/", servertest.Want(1, 1, 0))
			named := do(t, "GET", st.URL+"/_matrix/client/v1/media/download/"+mxc.Homeserver+"/"+mxc.FileID+"/other.bin", alice.User.AccessToken, "", nil)
			if named.Status != 200 || named.Header.Get("Content-Disposition") != `inline; filename="other.bin"` {
				t.Errorf("download with a file name: %d, Content-Disposition %q", named.Status, named.Header.Get("Content-Disposition"))
			}
		})
	}
}

// TestFreeze: without a token, media uploaded from media_freeze on is not
// found, media uploaded before it is; with one, both are.
func TestFreeze(t *testing.T) {
	st := servertest.Start(t, "CIRRUS_MEDIA_FREEZE=2030-01-01")
	alice := st.Member(t, "alice")
	clock := time.Date(2029, 12, 31, 23, 59, 0, 0, time.UTC)
	st.Server.Media.Now = func() time.Time { return clock }
	before := upload(t, st, alice.User.AccessToken, "text/plain", "", []byte("before"))
	clock = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	after := upload(t, st, alice.User.AccessToken, "text/plain", "", []byte("after"))
	for _, tc := range []struct {
		mxc, token string
		status     int
		body       string
	}{
		{before, "", 200, "before"},
		{after, "", 404, ""},
		{before, alice.User.AccessToken, 200, "before"},
		{after, alice.User.AccessToken, 200, "after"},
	} {
		u := mustMXC(t, tc.mxc)
		path := "/_matrix/client/v1/media/download/"
		if tc.token == "" {
			path = "/_matrix/media/v3/download/"
		}
		a := do(t, "GET", st.URL+path+u.Homeserver+"/"+u.FileID, tc.token, "", nil)
		if a.Status != tc.status || (tc.status == 200 && string(a.Body) != tc.body) || (tc.status == 404 && a.errcode() != "M_NOT_FOUND") {
			t.Errorf("%s%s: %d %q, want %d %q", path, u.FileID, a.Status, a.Body, tc.status, tc.body)
		}
	}
	// With no media_freeze, nothing is served without a token.
	plain := servertest.Start(t)
	bob := plain.Register(t, "bob")
	u := mustMXC(t, upload(t, plain, bob.AccessToken, "text/plain", "", []byte("x")))
	if a := do(t, "GET", plain.URL+"/_matrix/media/v3/download/"+u.Homeserver+"/"+u.FileID, "", "", nil); a.Status != 404 {
		t.Errorf("legacy download without media_freeze: %d, want 404", a.Status)
	}
}

// upload posts body with the raw API and returns its content URI.
func upload(t *testing.T, st *servertest.Stack, token, contentType, filename string, body []byte) string {
	t.Helper()
	url := st.URL + "/_matrix/media/v3/upload"
	if filename != "" {
		url += "?filename=" + strings.ReplaceAll(filename, " ", "%20")
	}
	a := do(t, "POST", url, token, contentType, body)
	var doc struct {
		ContentURI string `json:"content_uri"`
	}
	if a.Status != 200 || json.Unmarshal(a.Body, &doc) != nil || doc.ContentURI == "" {
		t.Fatalf("upload: %d %s", a.Status, a.Body)
	}
	return doc.ContentURI
}

// TestAuth: the authenticated endpoints answer 401 M_MISSING_TOKEN without
// a token; the config endpoints advertise max_upload_size.
func TestAuth(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	u := mustMXC(t, upload(t, st, alice.User.AccessToken, "image/png", "", images(t)["image/png"]))
	for _, path := range []string{
		"/_matrix/client/v1/media/download/" + u.Homeserver + "/" + u.FileID,
		"/_matrix/client/v1/media/download/" + u.Homeserver + "/" + u.FileID + "/a.png",
		"/_matrix/client/v1/media/thumbnail/" + u.Homeserver + "/" + u.FileID + "?width=32&height=32",
		"/_matrix/client/v1/media/config",
		"/_matrix/media/v3/config",
	} {
		if a := do(t, "GET", st.URL+path, "", "", nil); a.Status != 401 || a.errcode() != "M_MISSING_TOKEN" {
			t.Errorf("GET %s without a token: %d %s, want 401 M_MISSING_TOKEN", path, a.Status, a.Body)
		}
	}
	if a := do(t, "POST", st.URL+"/_matrix/media/v3/upload", "", "text/plain", []byte("x")); a.Status != 401 {
		t.Errorf("upload without a token: %d, want 401", a.Status)
	}
	cfg, err := alice.GetMediaConfig(context.Background())
	if err != nil || cfg.UploadSize != config.MaxLambdaUpload {
		t.Errorf("media config: %+v, %v; want m.upload.size %d", cfg, err, config.MaxLambdaUpload)
	}
	if a := do(t, "GET", st.URL+"/_matrix/media/v3/config", alice.User.AccessToken, "", nil); a.Status != 200 || !strings.Contains(string(a.Body), `"m.upload.size":4669440`) {
		t.Errorf("legacy media config: %d %s", a.Status, a.Body)
	}
}

// TestUpload_Limit: an upload of exactly m.upload.size is taken, one byte
// more is 413 M_TOO_LARGE, whether its length is announced or not.
func TestUpload_Limit(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	data := bytes.Repeat([]byte{0xA5}, config.MaxLambdaUpload+1)
	got := mustMXC(t, upload(t, st, alice.User.AccessToken, "application/octet-stream", "", data[:config.MaxLambdaUpload]))
	res, err := alice.Download(context.Background(), got)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if n != config.MaxLambdaUpload {
		t.Fatalf("download of the largest upload: %d bytes, want %d", n, config.MaxLambdaUpload)
	}
	if a := do(t, "POST", st.URL+"/_matrix/media/v3/upload", alice.User.AccessToken, "application/octet-stream", data); a.Status != 413 || a.errcode() != "M_TOO_LARGE" {
		t.Errorf("upload of max+1 bytes: %d %s, want 413 M_TOO_LARGE", a.Status, a.Body)
	}
	// Chunked: no Content-Length to refuse it by.
	req, _ := http.NewRequest("POST", st.URL+"/_matrix/media/v3/upload", io.MultiReader(bytes.NewReader(data)))
	req.Header.Set("Authorization", "Bearer "+alice.User.AccessToken)
	req.ContentLength = -1
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 413 {
		t.Errorf("chunked upload of max+1 bytes: %d, want 413", r.StatusCode)
	}
}

// TestUpload_Dedupe: the same bytes uploaded twice are two media IDs and
// one object in the bucket.
func TestUpload_Dedupe(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	bob := st.Register(t, "bob")
	png := images(t)["image/png"]
	a := upload(t, st, alice.User.AccessToken, "image/png", "a.png", png)
	b := upload(t, st, bob.AccessToken, "image/png", "b.png", png)
	c := upload(t, st, bob.AccessToken, "image/gif", "", images(t)["image/gif"])
	if a == b {
		t.Fatalf("two uploads got one content URI %s", a)
	}
	keys, err := st.Server.Media.Objects.(*objects.Bucket).List(context.Background(), "content/")
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 {
		t.Fatalf("bucket holds %v, want 2 objects for 3 uploads of 2 files", keys)
	}
	for _, uri := range []string{a, b, c} {
		u := mustMXC(t, uri)
		if r := do(t, "GET", st.URL+"/_matrix/client/v1/media/download/"+u.Homeserver+"/"+u.FileID, alice.User.AccessToken, "", nil); r.Status != 200 {
			t.Errorf("download of %s: %d", uri, r.Status)
		}
	}
	if r := do(t, "GET", st.URL+"/_matrix/client/v1/media/download/"+mustMXC(t, b).Homeserver+"/"+mustMXC(t, b).FileID, alice.User.AccessToken, "", nil); r.Header.Get("Content-Disposition") != `inline; filename="b.png"` {
		t.Errorf("the second upload's name: %q, want b.png (metadata per media ID)", r.Header.Get("Content-Disposition"))
	}
}

// TestAsync: a created media ID (MSC2246) takes one upload, by its creator
// only; a download waiting on it gets the content once it comes, and one
// that stops waiting first is 504 M_NOT_YET_UPLOADED.
func TestAsync(t *testing.T) {
	st := servertest.Start(t, "CIRRUS_MAX_PENDING_MEDIA_UPLOADS=2")
	alice := st.Member(t, "alice")
	bob := st.Register(t, "bob")
	ctx := context.Background()
	created, err := alice.CreateMXC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !created.UnusedExpiresAt.Time.After(time.Now()) {
		t.Errorf("unused_expires_at %v is not in the future", created.UnusedExpiresAt.Time)
	}
	st.CheckCost(t, "create", "POST /_matrix/media/v1/create", servertest.Want(3, 1.5, 2))
	mxc := created.ContentURI
	path := "/" + mxc.Homeserver + "/" + mxc.FileID
	if a := do(t, "GET", st.URL+"/_matrix/client/v1/media/download"+path+"?timeout_ms=0", alice.User.AccessToken, "", nil); a.Status != 504 || a.errcode() != "M_NOT_YET_UPLOADED" {
		t.Errorf("download before the upload: %d %s, want 504 M_NOT_YET_UPLOADED", a.Status, a.Body)
	}

	done := waitingGet(t, st, mxc.FileID, st.URL+"/_matrix/client/v1/media/download"+path+"?timeout_ms=20000", bob.AccessToken)
	if a := do(t, "PUT", st.URL+"/_matrix/media/v3/upload"+path, bob.AccessToken, "text/plain", []byte("not bob's")); a.Status != 403 || a.errcode() != "M_FORBIDDEN" {
		t.Errorf("upload by another user: %d %s, want 403 M_FORBIDDEN", a.Status, a.Body)
	}
	select {
	case a := <-done:
		t.Fatalf("the waiting download answered %d before the upload", a.Status)
	default:
	}
	if _, err := alice.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: []byte("late content"), ContentType: "text/plain", MXC: mxc, FileName: "late.txt"}); err != nil {
		t.Fatal(err)
	}
	st.CheckCost(t, "upload to a created ID", "PUT /_matrix/media/v3/upload/", servertest.Want(5, 3, 7))
	a := <-done
	if a.Status != 200 || string(a.Body) != "late content" || a.Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("waiting download: %d %q (%s), want the uploaded text", a.Status, a.Body, a.Header.Get("Content-Type"))
	}
	if a := do(t, "PUT", st.URL+"/_matrix/media/v3/upload"+path, alice.User.AccessToken, "text/plain", []byte("again")); a.Status != 409 || a.errcode() != "M_CANNOT_OVERWRITE_MEDIA" {
		t.Errorf("second upload: %d %s, want 409 M_CANNOT_OVERWRITE_MEDIA", a.Status, a.Body)
	}
	if a := do(t, "PUT", st.URL+"/_matrix/media/v3/upload/"+mxc.Homeserver+"/NOSUCHMEDIA", alice.User.AccessToken, "text/plain", []byte("x")); a.Status != 404 {
		t.Errorf("upload to an ID never created: %d, want 404", a.Status)
	}
	// max_pending_media_uploads: 2; the first one is uploaded.
	for i := range 2 {
		if _, err := alice.CreateMXC(ctx); err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
	}
	if a := do(t, "POST", st.URL+"/_matrix/media/v1/create", alice.User.AccessToken, "", nil); a.Status != 429 || a.errcode() != "M_LIMIT_EXCEEDED" {
		t.Errorf("create past max_pending_media_uploads: %d %s, want 429 M_LIMIT_EXCEEDED", a.Status, a.Body)
	}
}

// TestHeaders: what a browser could run from the server's origin goes out
// as an attachment, pictures inline; every answer carries the sandbox; file
// names are put per RFC 6266.
func TestHeaders(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	for _, tc := range []struct {
		name, ctype, filename, disposition string
	}{
		{"html", "text/html", "page.html", `attachment; filename="page.html"`},
		{"svg", "image/svg+xml", "logo.svg", `attachment; filename="logo.svg"`},
		{"javascript", "application/javascript", "", "attachment"},
		{"png", "image/png", "cat.png", `inline; filename="cat.png"`},
		{"plain text with charset", "text/plain; charset=utf-8", `say "hi".txt`, `inline; filename="say \"hi\".txt"`},
		{"non-ASCII name", "application/pdf", "résumé 📄.pdf", `attachment; filename*=utf-8''r%C3%A9sum%C3%A9%20%F0%9F%93%84.pdf`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte("<html><script>alert(1)</script></html>" + tc.name)
			u := mustMXC(t, upload(t, st, alice.User.AccessToken, tc.ctype, tc.filename, body))
			a := do(t, "GET", st.URL+"/_matrix/client/v1/media/download/"+u.Homeserver+"/"+u.FileID, alice.User.AccessToken, "", nil)
			if a.Status != 200 || !bytes.Equal(a.Body, body) {
				t.Fatalf("download: %d %q", a.Status, a.Body)
			}
			if a.Header.Get("Content-Type") != tc.ctype || a.Header.Get("Content-Disposition") != tc.disposition {
				t.Errorf("Content-Type %q, Content-Disposition %q; want %q, %q", a.Header.Get("Content-Type"), a.Header.Get("Content-Disposition"), tc.ctype, tc.disposition)
			}
			checkSafety(t, "download", a)
		})
	}
	missing := do(t, "GET", st.URL+"/_matrix/client/v1/media/download/"+servertest.ServerName+"/NOSUCHMEDIA", alice.User.AccessToken, "", nil)
	if missing.Status != 404 || missing.errcode() != "M_NOT_FOUND" {
		t.Errorf("unknown media: %d %s", missing.Status, missing.Body)
	}
	checkSafety(t, "unknown media", missing)
	// Another server that cannot be reached: 502 M_UNKNOWN, as Synapse
	// answers a failed remote fetch (remote.go), with the safe headers.
	remote := do(t, "GET", st.URL+"/_matrix/client/v1/media/download/other.example/abc", alice.User.AccessToken, "", nil)
	if remote.Status != 502 || remote.errcode() != "M_UNKNOWN" || !strings.Contains(string(remote.Body), "other.example") {
		t.Errorf("another server's media: %d %s, want 502 M_UNKNOWN naming the server", remote.Status, remote.Body)
	}
	checkSafety(t, "another server's media", remote)
}

// TestDownload_Redirect: with allow_redirect=true a file over the threshold
// is a 307 to a presigned URL of the bucket, which serves it without the
// homeserver's token; without it, the server sends the file itself.
func TestDownload_Redirect(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	data := bytes.Repeat([]byte("0123456789abcdef"), (media.RedirectThreshold/16)+1)
	u := mustMXC(t, upload(t, st, alice.User.AccessToken, "video/mp4", "clip.mp4", data))
	path := st.URL + "/_matrix/client/v1/media/download/" + u.Homeserver + "/" + u.FileID
	a := do(t, "GET", path+"?allow_redirect=true", alice.User.AccessToken, "", nil)
	loc := a.Header.Get("Location")
	if a.Status != 307 || loc == "" || strings.HasPrefix(loc, st.URL) {
		t.Fatalf("download with allow_redirect: %d, Location %q; want 307 to the bucket", a.Status, loc)
	}
	checkSafety(t, "redirect", a)
	got := do(t, "GET", loc, "", "", nil)
	if got.Status != 200 || !bytes.Equal(got.Body, data) {
		t.Fatalf("presigned URL: %d, %d bytes; want 200 and %d", got.Status, len(got.Body), len(data))
	}
	if direct := do(t, "GET", path, alice.User.AccessToken, "", nil); direct.Status != 200 || !bytes.Equal(direct.Body, data) {
		t.Errorf("download without allow_redirect: %d, %d bytes", direct.Status, len(direct.Body))
	}
	small := mustMXC(t, upload(t, st, alice.User.AccessToken, "image/png", "", images(t)["image/png"]))
	if a := do(t, "GET", st.URL+"/_matrix/client/v1/media/download/"+small.Homeserver+"/"+small.FileID+"?allow_redirect=true", alice.User.AccessToken, "", nil); a.Status != 200 {
		t.Errorf("small file with allow_redirect: %d, want 200 (served at once)", a.Status)
	}
}

// TestUpload_R0: the legacy /_matrix/media/r0/ prefix, through which older
// clients (Hydrogen) upload, is served as v3: its config, and an upload of
// the largest size (max_upload_size, not max_request_size) that downloads
// back byte-identical through v1; one byte more is 413 M_TOO_LARGE.
func TestUpload_R0(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	cfg := do(t, "GET", st.URL+"/_matrix/media/r0/config", alice.User.AccessToken, "", nil)
	if cfg.Status != 200 || !strings.Contains(string(cfg.Body), `"m.upload.size":`+strconv.Itoa(config.MaxLambdaUpload)) {
		t.Fatalf("r0 config: %d %s", cfg.Status, cfg.Body)
	}
	data := bytes.Repeat([]byte{0x5A}, config.MaxLambdaUpload+1)
	a := do(t, "POST", st.URL+"/_matrix/media/r0/upload?filename=r0.bin", alice.User.AccessToken, "application/octet-stream", data[:config.MaxLambdaUpload])
	if a.Status != 200 {
		t.Fatalf("r0 upload: %d %s", a.Status, a.Body)
	}
	var up struct {
		ContentURI string `json:"content_uri"`
	}
	if err := json.Unmarshal(a.Body, &up); err != nil {
		t.Fatal(err)
	}
	res, err := alice.Download(context.Background(), mustMXC(t, up.ContentURI))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !bytes.Equal(got, data[:config.MaxLambdaUpload]) {
		t.Fatalf("download of the r0 upload: %d bytes, not the %d uploaded", len(got), config.MaxLambdaUpload)
	}
	if a := do(t, "POST", st.URL+"/_matrix/media/r0/upload", alice.User.AccessToken, "application/octet-stream", data); a.Status != 413 || a.errcode() != "M_TOO_LARGE" {
		t.Errorf("r0 upload of max+1 bytes: %d %s, want 413 M_TOO_LARGE", a.Status, a.Body)
	}
}

// waitingGet starts GET url as token in the background and returns once
// the server waits for mediaID's upload (Service.Waiting): the test then
// uploads, in order rather than after a delay. The answer comes on the
// channel.
func waitingGet(t *testing.T, st *servertest.Stack, mediaID, url, token string) <-chan answer {
	t.Helper()
	waiting := make(chan struct{})
	st.Server.Media.Waiting = func(_, id string) {
		if id == mediaID {
			close(waiting)
		}
	}
	st.Server.Media.PollInterval = 20 * time.Millisecond
	done := make(chan answer, 1)
	go func() { done <- do(t, "GET", url, token, "", nil) }()
	<-waiting
	return done
}
