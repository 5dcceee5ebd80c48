package media_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/ratelimit"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// previewPage is a web site on loopback counting the requests of each path:
// an HTML page with Open Graph tags whose og:image is a PNG beside it, a
// redirect to the cloud metadata address and a missing page.
type previewPage struct {
	URL     string
	PNG     []byte
	page    atomic.Int64
	image   atomic.Int64
	handler http.Handler
}

const (
	ogTitle = "Fish & chips — ünïcode <title>"
	ogDesc  = "A page served on loopback for the preview test."
)

func newPreviewPage(t *testing.T) *previewPage {
	t.Helper()
	p := &previewPage{PNG: images(t)["image/png"]}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		p.page.Add(1)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, `<!doctype html><html><head><title>not the og:title</title>
<meta property="og:title" content="Fish &amp; chips — ünïcode &lt;title&gt;">
<meta property="og:description" content="`+ogDesc+`">
<meta property="og:image" content="/img.png">
</head><body><p>hello</p></body></html>`)
	})
	mux.HandleFunc("GET /img.png", func(w http.ResponseWriter, r *http.Request) {
		p.image.Add(1)
		w.Header().Set("Content-Type", "image/png")
		w.Write(p.PNG)
	})
	mux.HandleFunc("GET /metadata", func(w http.ResponseWriter, r *http.Request) {
		p.page.Add(1)
		http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
	})
	p.handler = mux
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	p.URL = hs.URL
	return p
}

// previewURL asks path (either preview_url endpoint) for a preview of
// target.
func previewURL(t *testing.T, st *servertest.Stack, path, token, target string) answer {
	t.Helper()
	return do(t, "GET", st.URL+path+"?url="+url.QueryEscape(target), token, "", nil)
}

const (
	previewV1     = "/_matrix/client/v1/media/preview_url"
	previewLegacy = "/_matrix/media/v3/preview_url"
)

// TestPreview_Disabled: with url_preview_enabled off (the default) both
// paths are unknown to the server, 404 M_UNRECOGNIZED, as Synapse answers
// when it has not registered them.
func TestPreview_Disabled(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Register(t, "alice")
	page := newPreviewPage(t)
	for _, path := range []string{previewV1, previewLegacy} {
		a := previewURL(t, st, path, alice.AccessToken, page.URL+"/")
		if a.Status != http.StatusNotFound || a.errcode() != "M_UNRECOGNIZED" {
			t.Errorf("%s with previews off: %d %s, want 404 M_UNRECOGNIZED", path, a.Status, a.Body)
		}
	}
	if n := page.page.Load(); n != 0 {
		t.Errorf("the page was requested %d times with previews off", n)
	}
}

// TestPreview: a loopback page (whitelisted over the default blacklist)
// previewed through mautrix-go gives its Open Graph title and description
// exactly, and its og:image as an mxc URI that downloads byte for byte; the
// same URL again, through the legacy path, is read from the table (one item)
// without a request to the page; bad input is 400 and a failed fetch 502.
func TestPreview(t *testing.T) {
	st := servertest.Start(t, "CIRRUS_URL_PREVIEW_ENABLED=true", "CIRRUS_URL_PREVIEW_IP_RANGE_WHITELIST=127.0.0.1/32")
	alice := st.Member(t, "alice")
	ctx := context.Background()
	page := newPreviewPage(t)

	og, err := alice.GetURLPreview(ctx, page.URL+"/")
	if err != nil {
		t.Fatal(err)
	}
	st.CheckCost(t, "preview (fetched)", "GET "+previewV1, servertest.Want(6, 3, 8))
	if og.Title != ogTitle || og.Description != ogDesc {
		t.Errorf("og:title %q, og:description %q; want %q and %q", og.Title, og.Description, ogTitle, ogDesc)
	}
	if og.ImageType != "image/png" || int(og.ImageSize) != len(page.PNG) || og.ImageWidth != 4 || og.ImageHeight != 3 {
		t.Errorf("og:image:type %q, size %d, %dx%d; want image/png, %d, 4x3", og.ImageType, og.ImageSize, og.ImageWidth, og.ImageHeight, len(page.PNG))
	}
	mxc := mustMXC(t, string(og.ImageURL))
	img := do(t, "GET", st.URL+"/_matrix/client/v1/media/download/"+mxc.Homeserver+"/"+mxc.FileID, alice.User.AccessToken, "", nil)
	if img.Status != http.StatusOK || !bytes.Equal(img.Body, page.PNG) || img.Header.Get("Content-Type") != "image/png" {
		t.Fatalf("og:image download: %d, %d bytes of %s; want 200 and the page's %d bytes of image/png", img.Status, len(img.Body), img.Header.Get("Content-Type"), len(page.PNG))
	}

	again := previewURL(t, st, previewLegacy, alice.User.AccessToken, page.URL+"/")
	st.CheckCost(t, "preview (cached)", "GET "+previewLegacy, servertest.Want(2, 2, 0))
	var cached map[string]any
	if err := json.Unmarshal(again.Body, &cached); again.Status != http.StatusOK || err != nil {
		t.Fatalf("second preview: %d %s", again.Status, again.Body)
	}
	if cached["og:title"] != ogTitle || cached["og:image"] != string(og.ImageURL) {
		t.Errorf("second preview %s, want the first's title and og:image %s", again.Body, og.ImageURL)
	}
	if p, i := page.page.Load(), page.image.Load(); p != 1 || i != 1 {
		t.Errorf("the page was requested %d times and its image %d; want once each, the second preview from the cache", p, i)
	}

	if a := previewURL(t, st, previewV1, "", page.URL+"/"); a.Status != http.StatusUnauthorized || a.errcode() != "M_MISSING_TOKEN" {
		t.Errorf("without a token: %d %s, want 401 M_MISSING_TOKEN", a.Status, a.Body)
	}
	for _, tc := range []struct {
		name, query     string
		status          int
		errcode, reason string
	}{
		{"NoURL", "", http.StatusBadRequest, "M_MISSING_PARAM", "url is required"},
		{"NotHTTP", "?url=" + url.QueryEscape("file:///etc/passwd"), http.StatusBadRequest, "M_INVALID_PARAM", "only http(s)"},
		{"BadTS", "?url=" + url.QueryEscape(page.URL+"/") + "&ts=yesterday", http.StatusBadRequest, "M_INVALID_PARAM", "ts is milliseconds"},
		{"TS", "?url=" + url.QueryEscape(page.URL+"/") + "&ts=1700000000000", http.StatusOK, "", "ts accepted"},
		{"NotFound", "?url=" + url.QueryEscape(page.URL+"/missing"), http.StatusBadGateway, "M_UNKNOWN", "the page's 404"},
		{"RedirectToMetadata", "?url=" + url.QueryEscape(page.URL+"/metadata"), http.StatusForbidden, "M_FORBIDDEN", "a redirect to a blocked address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := do(t, "GET", st.URL+previewV1+tc.query, alice.User.AccessToken, "", nil)
			if a.Status != tc.status || a.errcode() != tc.errcode {
				t.Errorf("%s (%s): %d %s, want %d %s", tc.query, tc.reason, a.Status, a.Body, tc.status, tc.errcode)
			}
		})
	}
}

// TestPreview_Forbidden: with the default blacklist, URLs on loopback
// (IPv4 and IPv6) and the cloud metadata address are refused with 403
// M_FORBIDDEN, and the pages listening there never see a request; a name
// that resolves to loopback is refused as a name that does not resolve.
func TestPreview_Forbidden(t *testing.T) {
	st := servertest.Start(t, "CIRRUS_URL_PREVIEW_ENABLED=true")
	alice := st.Register(t, "alice")
	page := newPreviewPage(t)
	_, port, _ := net.SplitHostPort(page.URL[len("http://"):])
	urls := []string{page.URL + "/", "http://169.254.169.254/latest/meta-data/"}
	if l, err := net.Listen("tcp", "[::1]:0"); err == nil {
		hs := &httptest.Server{Listener: l, Config: &http.Server{Handler: page.handler}}
		hs.Start()
		t.Cleanup(hs.Close)
		urls = append(urls, hs.URL+"/")
	} else {
		t.Logf("no IPv6 loopback (%v): [::1] is asked without a listener", err)
		urls = append(urls, "http://[::1]:"+port+"/")
	}
	for _, u := range urls {
		for _, path := range []string{previewV1, previewLegacy} {
			a := previewURL(t, st, path, alice.AccessToken, u)
			if a.Status != http.StatusForbidden || a.errcode() != "M_FORBIDDEN" {
				t.Errorf("%s %s: %d %s, want 403 M_FORBIDDEN", path, u, a.Status, a.Body)
			}
		}
	}
	named := previewURL(t, st, previewV1, alice.AccessToken, "http://localhost:"+port+"/")
	if named.Status != http.StatusBadGateway || named.errcode() != "M_UNKNOWN" {
		t.Errorf("localhost: %d %s, want 502 M_UNKNOWN", named.Status, named.Body)
	}
	if n := page.page.Load(); n != 0 {
		t.Errorf("the forbidden page was requested %d times", n)
	}
}

// TestPreview_RateLimit: past a user's limit of fetches a preview is 429
// M_LIMIT_EXCEEDED, while a preview in the cache is still served.
func TestPreview_RateLimit(t *testing.T) {
	st := servertest.Start(t, "CIRRUS_URL_PREVIEW_ENABLED=true", "CIRRUS_URL_PREVIEW_IP_RANGE_WHITELIST=127.0.0.1/32")
	st.Server.Previews.Limit = ratelimit.Limit{Name: "preview_url.user", Burst: 1, Window: 24 * time.Hour}
	alice := st.Register(t, "alice")
	page := newPreviewPage(t)
	if a := previewURL(t, st, previewV1, alice.AccessToken, page.URL+"/"); a.Status != http.StatusOK {
		t.Fatalf("first preview: %d %s", a.Status, a.Body)
	}
	if a := previewURL(t, st, previewV1, alice.AccessToken, page.URL+"/?other"); a.Status != http.StatusTooManyRequests || a.errcode() != "M_LIMIT_EXCEEDED" {
		t.Errorf("a second URL past the limit: %d %s, want 429 M_LIMIT_EXCEEDED", a.Status, a.Body)
	}
	if a := previewURL(t, st, previewV1, alice.AccessToken, page.URL+"/"); a.Status != http.StatusOK {
		t.Errorf("the cached URL past the limit: %d %s, want 200", a.Status, a.Body)
	}
	if n := page.page.Load(); n != 1 {
		t.Errorf("the page was requested %d times, want once", n)
	}
}
