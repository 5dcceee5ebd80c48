package urlpreview

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// dials records every address a Previewer's sockets tried to connect to.
type dials struct {
	mu    sync.Mutex
	addrs []string
}

func (d *dials) add(a string) { d.mu.Lock(); d.addrs = append(d.addrs, a); d.mu.Unlock() }
func (d *dials) list() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.addrs...)
}

func newWatched(cfg Config) (*Previewer, *dials) {
	p := New(cfg)
	d := &dials{}
	p.onDial = d.add
	return p, d
}

// loopbackOnly is the default blacklist with only 127.0.0.1 let through, so
// the test servers can be reached while the rest of 127.0.0.0/8, ::1 and
// every other forbidden range stay refused.
func loopbackOnly() Config {
	return Config{Whitelist: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}
}

func pngBytes(t *testing.T, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	img.Set(0, 0, color.RGBA{R: 255, A: 255})
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func serve(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func html200(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, body)
	}
}

func TestPreview_OpenGraph(t *testing.T) {
	var ua string
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		ua = r.Header.Get("User-Agent")
		html200(`<!doctype html><html><head>
<title>Ignored title</title>
<meta name="description" content="ignored description">
<meta property="og:title" content="  The   Title ">
<meta property="og:description" content="A &amp; B">
<meta property="og:site_name" content="Example Site">
<meta property="og:type" content="article">
<meta property="og:title" content="second title loses">
<meta property="og:video" content="https://example.org/v.mp4">
<script>var x = '<meta property="og:type" content="script">';</script>
</head><body>hi</body></html>`)(w, r)
	})
	p := New(loopbackOnly())
	og, img, err := p.Preview(context.Background(), srv.URL+"/page")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"og:title":       "The Title",
		"og:description": "A & B",
		"og:site_name":   "Example Site",
		"og:type":        "article",
	}
	if !reflect.DeepEqual(og, want) {
		t.Fatalf("og = %#v, want %#v", og, want)
	}
	if img != nil {
		t.Fatalf("image %+v for a page without og:image", img)
	}
	if ua != DefaultUserAgent {
		t.Fatalf("User-Agent %q, want %q", ua, DefaultUserAgent)
	}
}

func TestPreview_Fallbacks(t *testing.T) {
	srv := serve(t, html200(`<html><head><title>Plain
  page</title><meta name="Description" content="What it is"></head></html>`))
	og, _, err := New(loopbackOnly()).Preview(context.Background(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"og:title": "Plain page", "og:description": "What it is"}
	if !reflect.DeepEqual(og, want) {
		t.Fatalf("og = %#v, want %#v", og, want)
	}
}

func TestPreview_Charset(t *testing.T) {
	srv := serve(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=iso-8859-1")
		w.Write([]byte("<title>Caf\xe9</title>"))
	})
	og, _, err := New(loopbackOnly()).Preview(context.Background(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if og["og:title"] != "Café" {
		t.Fatalf("og:title %q, want Café", og["og:title"])
	}
}

func TestPreview_OGImage(t *testing.T) {
	pic := pngBytes(t, 3, 2)
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/a/page":
			html200(`<meta property="og:title" content="With image"><meta property="og:image" content="../img.png">`)(w, r)
		case "/img.png":
			w.Header().Set("Content-Type", "image/png")
			w.Write(pic)
		default:
			http.NotFound(w, r)
		}
	})
	og, img, err := New(loopbackOnly()).Preview(context.Background(), srv.URL+"/a/page")
	if err != nil {
		t.Fatal(err)
	}
	if img == nil {
		t.Fatalf("no image; og = %#v", og)
	}
	if !bytes.Equal(img.Bytes, pic) || img.ContentType != "image/png" || img.Width != 3 || img.Height != 2 {
		t.Fatalf("image = %s %dx%d, %d bytes; want image/png 3x2, %d bytes", img.ContentType, img.Width, img.Height, len(img.Bytes), len(pic))
	}
	if og["og:image"] != srv.URL+"/img.png" {
		t.Fatalf("og:image %q, want the absolute URL %q", og["og:image"], srv.URL+"/img.png")
	}
	img.Apply(og, "mxc://example.org/abc")
	want := map[string]any{
		"og:title": "With image", "og:image": "mxc://example.org/abc", "og:image:type": "image/png",
		"og:image:width": 3, "og:image:height": 2, "matrix:image:size": len(pic),
	}
	if !reflect.DeepEqual(og, want) {
		t.Fatalf("after Apply og = %#v, want %#v", og, want)
	}
}

func TestPreview_DirectImage(t *testing.T) {
	pic := pngBytes(t, 5, 4)
	srv := serve(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		w.Write(pic)
	})
	og, img, err := New(loopbackOnly()).Preview(context.Background(), srv.URL+"/x.png")
	if err != nil {
		t.Fatal(err)
	}
	if img == nil || img.Width != 5 || img.Height != 4 || !bytes.Equal(img.Bytes, pic) {
		t.Fatalf("image %+v, want the 5x4 PNG itself", img)
	}
	if !reflect.DeepEqual(og, map[string]any{"og:image": srv.URL + "/x.png"}) {
		t.Fatalf("og = %#v", og)
	}
}

func TestPreview_Minimal(t *testing.T) {
	t.Run("PlainText", func(t *testing.T) {
		srv := serve(t, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprint(w, `<meta property="og:title" content="not html">`)
		})
		og, img, err := New(loopbackOnly()).Preview(context.Background(), srv.URL)
		if err != nil || img != nil || len(og) != 0 || og == nil {
			t.Fatalf("og %#v, img %v, err %v; want an empty map", og, img, err)
		}
	})
	t.Run("SVGLabelledImage", func(t *testing.T) {
		// An image/* label is not trusted: only decodable images come back.
		srv := serve(t, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "image/svg+xml")
			fmt.Fprint(w, `<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>`)
		})
		og, img, err := New(loopbackOnly()).Preview(context.Background(), srv.URL)
		if err != nil || img != nil || len(og) != 0 {
			t.Fatalf("og %#v, img %v, err %v; want nothing", og, img, err)
		}
	})
	t.Run("NotFound", func(t *testing.T) {
		srv := serve(t, http.NotFound)
		_, _, err := New(loopbackOnly()).Preview(context.Background(), srv.URL)
		if !errors.Is(err, ErrStatus) {
			t.Fatalf("err %v, want ErrStatus", err)
		}
	})
}

func TestPreview_TooLarge(t *testing.T) {
	big := "<title>big</title>" + strings.Repeat("x", 4096)
	cfg := loopbackOnly()
	cfg.MaxBytes = 1024
	t.Run("ContentLength", func(t *testing.T) {
		srv := serve(t, html200(big))
		_, _, err := New(cfg).Preview(context.Background(), srv.URL)
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("err %v, want ErrTooLarge", err)
		}
	})
	t.Run("Chunked", func(t *testing.T) {
		// No Content-Length: the limit must hold while reading.
		srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			// Endless: without the read limit the preview would only end
			// at its timeout.
			chunk := []byte(strings.Repeat("y", 512))
			for r.Context().Err() == nil {
				if _, err := w.Write(chunk); err != nil {
					return
				}
				w.(http.Flusher).Flush()
			}
		})
		_, _, err := New(cfg).Preview(context.Background(), srv.URL)
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("err %v, want ErrTooLarge", err)
		}
	})
	t.Run("ExactlyMax", func(t *testing.T) {
		page := "<title>fits</title>"
		page += strings.Repeat(" ", int(cfg.MaxBytes)-len(page))
		srv := serve(t, html200(page))
		og, _, err := New(cfg).Preview(context.Background(), srv.URL)
		if err != nil || og["og:title"] != "fits" {
			t.Fatalf("og %#v, err %v; a body of exactly MaxBytes must be read", og, err)
		}
	})
	t.Run("OGImage", func(t *testing.T) {
		// An og:image over the limit is dropped; the page still previews.
		srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/img" {
				w.Header().Set("Content-Type", "image/png")
				w.Write(append(pngBytes(t, 1, 1), make([]byte, 2048)...))
				return
			}
			html200(`<title>t</title><meta property="og:image" content="/img">`)(w, r)
		})
		og, img, err := New(cfg).Preview(context.Background(), srv.URL)
		if err != nil || img != nil || !reflect.DeepEqual(og, map[string]any{"og:title": "t"}) {
			t.Fatalf("og %#v, img %v, err %v", og, img, err)
		}
	})
}

func TestPreview_Timeout(t *testing.T) {
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, "<title>never finished")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	cfg := loopbackOnly()
	cfg.Timeout = 200 * time.Millisecond
	_, _, err := New(cfg).Preview(context.Background(), srv.URL)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want the deadline", err)
	}
}

// TestPreview_Forbidden uses the default configuration, where loopback,
// link-local and the other private ranges are refused before any connection.
func TestPreview_Forbidden(t *testing.T) {
	srv := serve(t, html200(`<title>secret</title>`))
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	for _, u := range []string{
		srv.URL,
		"http://[::1]:" + port + "/",
		"http://169.254.169.254/latest/meta-data/",
		"http://[::ffff:127.0.0.1]:" + port + "/",
		"http://[fe80::1%25lo]:" + port + "/",
		"http://0.0.0.0:" + port + "/",
		"https://10.1.2.3/",
	} {
		t.Run(u, func(t *testing.T) {
			// An address literal is never looked up.
			cfg := Config{Resolver: func(_ context.Context, host string) ([]netip.Addr, error) {
				t.Errorf("resolver asked for %s", host)
				return nil, errors.New("unexpected lookup")
			}}
			p, d := newWatched(cfg)
			_, _, err := p.Preview(context.Background(), u)
			if !errors.Is(err, ErrForbiddenAddress) {
				t.Fatalf("err %v, want ErrForbiddenAddress", err)
			}
			if got := d.list(); len(got) != 0 {
				t.Fatalf("connections attempted to %v", got)
			}
		})
	}
}

func TestPreview_ForbiddenHostname(t *testing.T) {
	srv := serve(t, html200(`<title>secret</title>`))
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	answers := map[string][]netip.Addr{
		"loopback.test": {netip.MustParseAddr("127.0.0.1")},
		// One forbidden answer among public ones refuses the name.
		"mixed.test":  {netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("10.0.0.1")},
		"mapped.test": {netip.MustParseAddr("::ffff:192.168.1.1")},
	}
	var asked []string
	cfg := Config{Resolver: func(_ context.Context, host string) ([]netip.Addr, error) {
		asked = append(asked, host)
		return answers[host], nil
	}}
	for _, host := range []string{"loopback.test", "mixed.test", "mapped.test"} {
		t.Run(host, func(t *testing.T) {
			asked = nil
			p, d := newWatched(cfg)
			_, _, err := p.Preview(context.Background(), "http://"+host+":"+port+"/")
			if !errors.Is(err, ErrForbiddenAddress) {
				t.Fatalf("err %v, want ErrForbiddenAddress", err)
			}
			if !reflect.DeepEqual(asked, []string{host}) {
				t.Fatalf("resolver asked %v, want [%s]", asked, host)
			}
			if got := d.list(); len(got) != 0 {
				t.Fatalf("connections attempted to %v", got)
			}
		})
	}
	t.Run("WhitelistedName", func(t *testing.T) {
		// The same hook pointing at the whitelisted address works, so the
		// refusals above come from the address and not from the hook.
		cfg := loopbackOnly()
		cfg.Resolver = func(context.Context, string) ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		}
		og, _, err := New(cfg).Preview(context.Background(), "http://page.test:"+port+"/")
		if err != nil || og["og:title"] != "secret" {
			t.Fatalf("og %#v, err %v", og, err)
		}
	})
}

func TestPreview_Redirects(t *testing.T) {
	var hops int
	var mu sync.Mutex
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/metadata":
			http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
		case r.URL.Path == "/other-loopback":
			http.Redirect(w, r, "http://127.0.0.2"+strings.TrimPrefix(r.Host, "127.0.0.1")+"/", http.StatusFound)
		case r.URL.Path == "/internal-name":
			http.Redirect(w, r, "http://internal.test/", http.StatusMovedPermanently)
		case r.URL.Path == "/file":
			http.Redirect(w, r, "file:///etc/passwd", http.StatusFound)
		case strings.HasPrefix(r.URL.Path, "/chain/"):
			mu.Lock()
			hops++
			mu.Unlock()
			var n int
			fmt.Sscanf(r.URL.Path, "/chain/%d", &n)
			if n == 0 {
				html200(`<title>end</title>`)(w, r)
				return
			}
			http.Redirect(w, r, fmt.Sprintf("/chain/%d", n-1), http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	})
	cfg := loopbackOnly()
	cfg.Resolver = func(_ context.Context, host string) ([]netip.Addr, error) {
		if host == "internal.test" {
			return []netip.Addr{netip.MustParseAddr("10.0.0.7")}, nil
		}
		return nil, fmt.Errorf("no such host %s", host)
	}
	for _, path := range []string{"/metadata", "/other-loopback", "/internal-name"} {
		t.Run(path, func(t *testing.T) {
			p, d := newWatched(cfg)
			_, _, err := p.Preview(context.Background(), srv.URL+path)
			if !errors.Is(err, ErrForbiddenAddress) {
				t.Fatalf("err %v, want ErrForbiddenAddress", err)
			}
			for _, a := range d.list() {
				if a != srv.Listener.Addr().String() {
					t.Fatalf("connection attempted to %s; only the test server %s was allowed", a, srv.Listener.Addr())
				}
			}
		})
	}
	t.Run("/file", func(t *testing.T) {
		_, _, err := New(cfg).Preview(context.Background(), srv.URL+"/file")
		if !errors.Is(err, ErrBadURL) {
			t.Fatalf("err %v, want ErrBadURL", err)
		}
	})
	t.Run("FiveHops", func(t *testing.T) {
		hops = 0
		og, _, err := New(cfg).Preview(context.Background(), srv.URL+"/chain/5")
		if err != nil || og["og:title"] != "end" || hops != 6 {
			t.Fatalf("og %#v, err %v, %d requests; 5 redirects are allowed", og, err, hops)
		}
	})
	t.Run("SixHops", func(t *testing.T) {
		hops = 0
		_, _, err := New(cfg).Preview(context.Background(), srv.URL+"/chain/6")
		if !errors.Is(err, ErrTooManyRedirects) || hops != 6 {
			t.Fatalf("err %v after %d requests, want ErrTooManyRedirects after 6", err, hops)
		}
	})
}

func TestPreview_ForbiddenOGImage(t *testing.T) {
	srv := serve(t, html200(`<title>t</title><meta property="og:image" content="http://169.254.169.254/i.png">`))
	p, d := newWatched(loopbackOnly())
	og, img, err := p.Preview(context.Background(), srv.URL)
	if err != nil || img != nil || !reflect.DeepEqual(og, map[string]any{"og:title": "t"}) {
		t.Fatalf("og %#v, img %v, err %v; a forbidden og:image is dropped", og, img, err)
	}
	for _, a := range d.list() {
		if strings.HasPrefix(a, "169.254.") {
			t.Fatalf("connection attempted to %s", a)
		}
	}
}

func TestPreview_BadURLs(t *testing.T) {
	p, d := newWatched(Config{})
	for _, u := range []string{
		"ftp://example.org/file",
		"file:///etc/passwd",
		"gopher://127.0.0.1:70/",
		"javascript:alert(1)",
		"example.org/page",
		"http:///nohost",
		"http://%zz/",
	} {
		if _, _, err := p.Preview(context.Background(), u); !errors.Is(err, ErrBadURL) {
			t.Errorf("%s: err %v, want ErrBadURL", u, err)
		}
	}
	if got := d.list(); len(got) != 0 {
		t.Fatalf("connections attempted to %v", got)
	}
}

// TestControl_RechecksConnectedAddress covers what the resolver check cannot:
// whatever produced the address, the socket refuses a forbidden one.
func TestControl_RechecksConnectedAddress(t *testing.T) {
	p := New(loopbackOnly())
	for addr, ok := range map[string]bool{
		"127.0.0.1:80":         true,
		"93.184.216.34:443":    true,
		"127.0.0.2:80":         false,
		"[::1]:80":             false,
		"[::ffff:10.0.0.1]:80": false,
		"169.254.169.254:80":   false,
		"0.0.0.0:80":           false,
		"[fe80::1%lo]:80":      false,
		"not-an-address":       false,
	} {
		err := p.control("tcp4", addr, nil)
		if ok && err != nil {
			t.Errorf("%s refused: %v", addr, err)
		}
		if !ok && !errors.Is(err, ErrForbiddenAddress) {
			t.Errorf("%s: err %v, want ErrForbiddenAddress", addr, err)
		}
	}
}

func TestParsePrefixes(t *testing.T) {
	got, err := ParsePrefixes([]string{"10.1.2.3/8", "192.168.1.1", "::1"})
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.1/32"), netip.MustParsePrefix("::1/128")}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, %v; want %v", got, err, want)
	}
	if _, err := ParsePrefixes([]string{"nonsense"}); err == nil {
		t.Fatal("nonsense parsed")
	}
}
