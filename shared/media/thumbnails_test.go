package media_test

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/media"
	"github.com/cirrus-matrix/cirrus/shared/objects"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// countingThumbnailer is the real thumbnailer, counting what it makes, so
// that a test sees a cached thumbnail was not made again.
type countingThumbnailer struct {
	media.ImageThumbnailer
	made atomic.Int32
}

func (c *countingThumbnailer) Thumbnail(ctx context.Context, m media.Media, content []byte, req media.ThumbnailRequest) ([]byte, string, error) {
	c.made.Add(1)
	return c.ImageThumbnailer.Thumbnail(ctx, m, content, req)
}

func counting(st *servertest.Stack) *countingThumbnailer {
	c := &countingThumbnailer{}
	st.Server.Media.Thumbnailer = c
	return c
}

// picture is a w x h image with a gradient, so that crops and scales
// differ, in each format clients send.
func picture(t *testing.T, ctype string, w, h int) []byte {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.NRGBA{uint8(x * 255 / w), uint8(y * 255 / h), 90, 255})
		}
	}
	var b bytes.Buffer
	var err error
	switch ctype {
	case "image/png":
		err = png.Encode(&b, img)
	case "image/jpeg":
		err = jpeg.Encode(&b, img, nil)
	case "image/gif":
		err = gif.Encode(&b, img, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// animatedGIF has frames frames of w x h, each a different colour.
func animatedGIF(t *testing.T, w, h, frames int) []byte {
	t.Helper()
	pal := color.Palette{color.Black, color.White, color.RGBA{200, 30, 30, 255}, color.RGBA{30, 200, 30, 255}}
	g := &gif.GIF{}
	for i := range frames {
		img := image.NewPaletted(image.Rect(0, 0, w, h), pal)
		for p := range img.Pix {
			img.Pix[p] = uint8(i % len(pal))
		}
		g.Image = append(g.Image, img)
		g.Delay = append(g.Delay, 10)
	}
	var b bytes.Buffer
	if err := gif.EncodeAll(&b, g); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// checkThumbCost is CheckCost of the n-th request to route, once it is
// logged: the log line is written after the answer, which the client may
// have read before.
func checkThumbCost(t *testing.T, st *servertest.Stack, what, route string, n int, want servertest.Cost) {
	t.Helper()
	for range 500 {
		count := 0
		for _, r := range st.Requests(t) {
			if strings.Contains(r.Route, route) {
				count++
			}
		}
		if count >= n {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	st.CheckCost(t, what, route, want)
}

func thumbPath(u id.ContentURI, query string) string {
	return "/_matrix/client/v1/media/thumbnail/" + u.Homeserver + "/" + u.FileID + "?" + query
}

// decodeSize decodes a thumbnail and returns its format and dimensions.
func decodeSize(t *testing.T, what string, body []byte) (string, int, int) {
	t.Helper()
	cfg, format, err := image.DecodeConfig(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("%s: the thumbnail does not decode: %v", what, err)
	}
	return format, cfg.Width, cfg.Height
}

// TestThumbnail: PNG, JPEG and GIF uploads of 1000x500 give thumbnails of
// the spec's sizes (mautrix-go's DownloadThumbnail): 32x32 crop is 32x32,
// 320x240 scale keeps the aspect (320x160), and 100x100 scale is served
// at the 320x240 box thumbnail.Pick chooses. A second request is served
// from the cache: the thumbnailer is not called, the bucket gains nothing,
// and it costs one DynamoDB call less.
func TestThumbnail(t *testing.T) {
	st := servertest.Start(t)
	made := counting(st)
	alice := st.Member(t, "alice")
	ctx := context.Background()
	bucket := st.Server.Media.Objects.(*objects.Bucket)
	requests := 0 // to the thumbnail route, as the log counts them
	for _, tc := range []struct {
		ctype, thumbType string
	}{
		{"image/png", "image/png"},
		{"image/jpeg", "image/jpeg"},
		{"image/gif", "image/png"},
	} {
		t.Run(tc.ctype, func(t *testing.T) {
			up, err := alice.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: picture(t, tc.ctype, 1000, 500), ContentType: tc.ctype})
			if err != nil {
				t.Fatal(err)
			}
			mxc := up.ContentURI
			for _, want := range []struct {
				w, h         int
				method       string
				gotW, gotH   int
				makesAnother bool
			}{
				{32, 32, "crop", 32, 32, true},
				{320, 240, "scale", 320, 160, true},
				{100, 100, "scale", 320, 160, false}, // the 320x240 box, cached
			} {
				before := made.made.Load()
				res, err := alice.DownloadThumbnail(ctx, mxc, want.h, want.w, mautrix.DownloadThumbnailExtra{Method: want.method})
				if err != nil {
					t.Fatalf("%dx%d %s: %v", want.w, want.h, want.method, err)
				}
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				what := tc.ctype + " " + want.method
				format, w, h := decodeSize(t, what, body)
				if w != want.gotW || h != want.gotH || "image/"+format != tc.thumbType || res.Header.Get("Content-Type") != tc.thumbType {
					t.Errorf("%s %dx%d: %s %dx%d (Content-Type %s), want %s %dx%d", what, want.w, want.h, format, w, h, res.Header.Get("Content-Type"), tc.thumbType, want.gotW, want.gotH)
				}
				if cd := res.Header.Get("Content-Disposition"); cd != `inline; filename="thumbnail`+map[string]string{"image/png": ".png", "image/jpeg": ".jpg"}[tc.thumbType]+`"` {
					t.Errorf("%s: Content-Disposition %q, want inline with a thumbnail file name", what, cd)
				}
				if got := made.made.Load() - before; (got == 1) != want.makesAnother {
					t.Errorf("%s %dx%d: %d thumbnails made, want a new one: %v", what, want.w, want.h, got, want.makesAnother)
				}
				requests++
				if want.makesAnother {
					checkThumbCost(t, st, "thumbnail, made", "GET /_matrix/client/v1/media/thumbnail/", requests, servertest.Want(4, 3, 1))
				} else {
					checkThumbCost(t, st, "thumbnail, cached", "GET /_matrix/client/v1/media/thumbnail/", requests, servertest.Want(3, 3, 0))
				}
			}

			// The same request again: the same bytes, from the cache.
			keys, err := bucket.List(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			requests += 2
			before := made.made.Load()
			first := do(t, "GET", st.URL+thumbPath(mxc, "width=32&height=32&method=crop"), alice.User.AccessToken, "", nil)
			again := do(t, "GET", st.URL+thumbPath(mxc, "width=32&height=32&method=crop"), alice.User.AccessToken, "", nil)
			if first.Status != 200 || !bytes.Equal(first.Body, again.Body) {
				t.Fatalf("a cached thumbnail twice: %d, %d bytes then %d", first.Status, len(first.Body), len(again.Body))
			}
			checkSafety(t, "thumbnail", again)
			if n := made.made.Load() - before; n != 0 {
				t.Errorf("cached thumbnails made again %d times", n)
			}
			after, err := bucket.List(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			if len(after) != len(keys) {
				t.Errorf("the bucket went from %d to %d objects serving cached thumbnails", len(keys), len(after))
			}
		})
	}
}

// TestThumbnail_SmallImage: an image within the box is its own thumbnail
// (the spec: return the original rather than thumbnail it), stored once.
func TestThumbnail_SmallImage(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	data := picture(t, "image/png", 20, 10)
	u := mustMXC(t, upload(t, st, alice.User.AccessToken, "image/png", "", data))
	a := do(t, "GET", st.URL+thumbPath(u, "width=320&height=240"), alice.User.AccessToken, "", nil)
	if a.Status != 200 || !bytes.Equal(a.Body, data) {
		t.Fatalf("thumbnail of a 20x10 PNG at 320x240: %d, %d bytes; want the %d of the original", a.Status, len(a.Body), len(data))
	}
	keys, err := st.Server.Media.Objects.(*objects.Bucket).List(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 {
		t.Errorf("bucket holds %v, want one object: the original is its thumbnail", keys)
	}
}

// TestThumbnail_Animated: an animated GIF asked with animated=true keeps
// its frames; without, it is the first frame as a PNG.
func TestThumbnail_Animated(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	u := mustMXC(t, upload(t, st, alice.User.AccessToken, "image/gif", "", animatedGIF(t, 200, 100, 3)))
	a := do(t, "GET", st.URL+thumbPath(u, "width=32&height=32&method=crop&animated=true"), alice.User.AccessToken, "", nil)
	if a.Status != 200 || a.Header.Get("Content-Type") != "image/gif" {
		t.Fatalf("animated thumbnail: %d %s", a.Status, a.Header.Get("Content-Type"))
	}
	g, err := gif.DecodeAll(bytes.NewReader(a.Body))
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Image) != 3 || g.Config.Width != 32 || g.Config.Height != 32 {
		t.Errorf("animated thumbnail: %d frames of %dx%d, want 3 of 32x32", len(g.Image), g.Config.Width, g.Config.Height)
	}
	still := do(t, "GET", st.URL+thumbPath(u, "width=32&height=32&method=crop"), alice.User.AccessToken, "", nil)
	if format, w, h := decodeSize(t, "still", still.Body); still.Status != 200 || format != "png" || w != 32 || h != 32 {
		t.Errorf("still thumbnail of an animated GIF: %d %s %dx%d, want a 32x32 PNG", still.Status, format, w, h)
	}
}

// TestThumbnail_Refused: what cannot be thumbnailed (SVG, HTML, text, a
// file that claims to be a PNG) is the spec's and Synapse's 400 M_UNKNOWN,
// never the original; the refusal is recorded, so a second request does not
// read and decode the file again. Bad dimensions are 400 M_INVALID_PARAM.
func TestThumbnail_Refused(t *testing.T) {
	st := servertest.Start(t)
	made := counting(st)
	alice := st.Member(t, "alice")
	token := alice.User.AccessToken
	requests := 0
	svg := []byte(`<svg xmlns="http://www.w3.org/2000/svg" width="500" height="500"><script>alert(1)</script></svg>`)
	for _, tc := range []struct {
		name, ctype string
		body        []byte
		decodes     bool // reaches the thumbnailer rather than being refused by its type
	}{
		{"svg", "image/svg+xml", svg, true},
		{"html", "text/html", []byte("<html><script>alert(1)</script></html>"), false},
		{"png that is not", "image/png", []byte("\x89PNG\r\n\x1a\nnot really"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := mustMXC(t, upload(t, st, token, tc.ctype, "", tc.body))
			before := made.made.Load()
			for i := range 2 {
				a := do(t, "GET", st.URL+thumbPath(u, "width=96&height=96&method=crop"), token, "", nil)
				if a.Status != 400 || a.errcode() != "M_UNKNOWN" || bytes.Contains(a.Body, tc.body) {
					t.Errorf("thumbnail of %s, request %d: %d %s, want 400 M_UNKNOWN", tc.name, i+1, a.Status, a.Body)
				}
				checkSafety(t, "refusal", a)
				requests++
			}
			want, cost := int32(0), servertest.Want(2, 2, 0) // refused by its type: no thumbnail item read
			if tc.decodes {
				want, cost = 1, servertest.Want(3, 3, 0) // the recorded refusal
			}
			checkThumbCost(t, st, "refused again", "GET /_matrix/client/v1/media/thumbnail/", requests, cost)
			if got := made.made.Load() - before; got != want {
				t.Errorf("%s: the thumbnailer ran %d times for two requests, want %d", tc.name, got, want)
			}
		})
	}
	u := mustMXC(t, upload(t, st, token, "image/png", "", picture(t, "image/png", 64, 64)))
	for _, q := range []string{"", "width=32", "width=0&height=32", "width=-1&height=32", "width=a&height=32", "width=32&height=99999999999999999999", "width=32&height=32&method=stretch", "width=32&height=32&animated=maybe"} {
		if a := do(t, "GET", st.URL+thumbPath(u, q), token, "", nil); a.Status != 400 || a.errcode() != "M_INVALID_PARAM" {
			t.Errorf("thumbnail ?%s: %d %s, want 400 M_INVALID_PARAM", q, a.Status, a.Body)
		}
	}
	if a := do(t, "GET", st.URL+thumbPath(u, "width=32&height=32"), "", "", nil); a.Status != 401 || a.errcode() != "M_MISSING_TOKEN" {
		t.Errorf("thumbnail without a token: %d %s, want 401 M_MISSING_TOKEN", a.Status, a.Body)
	}
	if a := do(t, "GET", st.URL+"/_matrix/client/v1/media/thumbnail/"+servertest.ServerName+"/NOSUCHMEDIA?width=32&height=32", token, "", nil); a.Status != 404 || a.errcode() != "M_NOT_FOUND" {
		t.Errorf("thumbnail of unknown media: %d %s, want 404 M_NOT_FOUND", a.Status, a.Body)
	}
}

// TestThumbnail_Legacy: the unauthenticated thumbnail serves media uploaded
// before media_freeze and not after, as the legacy download does.
func TestThumbnail_Legacy(t *testing.T) {
	st := servertest.Start(t, "CIRRUS_MEDIA_FREEZE=2030-01-01")
	alice := st.Member(t, "alice")
	clock := time.Date(2029, 12, 31, 23, 59, 0, 0, time.UTC)
	st.Server.Media.Now = func() time.Time { return clock }
	before := mustMXC(t, upload(t, st, alice.User.AccessToken, "image/jpeg", "", picture(t, "image/jpeg", 100, 100)))
	clock = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	after := mustMXC(t, upload(t, st, alice.User.AccessToken, "image/jpeg", "", picture(t, "image/jpeg", 100, 100)))
	legacy := func(u id.ContentURI) answer {
		return do(t, "GET", st.URL+"/_matrix/media/v3/thumbnail/"+u.Homeserver+"/"+u.FileID+"?width=32&height=32&method=crop", "", "", nil)
	}
	a := legacy(before)
	if format, w, h := decodeSize(t, "legacy", a.Body); a.Status != 200 || format != "jpeg" || w != 32 || h != 32 {
		t.Errorf("legacy thumbnail from before the freeze: %d %s %dx%d, want a 32x32 JPEG", a.Status, format, w, h)
	}
	checkSafety(t, "legacy thumbnail", a)
	legacy(before)
	checkThumbCost(t, st, "legacy thumbnail, cached", "GET /_matrix/media/v3/thumbnail/", 2, servertest.Want(2, 2, 0))
	if a := legacy(after); a.Status != 404 || a.errcode() != "M_NOT_FOUND" {
		t.Errorf("legacy thumbnail from after the freeze: %d %s, want 404 M_NOT_FOUND", a.Status, a.Body)
	}
	if a := do(t, "GET", st.URL+thumbPath(after, "width=32&height=32"), alice.User.AccessToken, "", nil); a.Status != 200 {
		t.Errorf("authenticated thumbnail from after the freeze: %d, want 200", a.Status)
	}
}

// TestThumbnail_Async: a thumbnail of a created media ID waits up to
// timeout_ms for its content (504 M_NOT_YET_UPLOADED when it does not come)
// and is made once it has come.
func TestThumbnail_Async(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	ctx := context.Background()
	created, err := alice.CreateMXC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mxc := created.ContentURI
	if a := do(t, "GET", st.URL+thumbPath(mxc, "width=32&height=32&timeout_ms=0"), alice.User.AccessToken, "", nil); a.Status != 504 || a.errcode() != "M_NOT_YET_UPLOADED" {
		t.Errorf("thumbnail before the upload: %d %s, want 504 M_NOT_YET_UPLOADED", a.Status, a.Body)
	}
	done := waitingGet(t, st, mxc.FileID, st.URL+thumbPath(mxc, "width=32&height=32&method=crop&timeout_ms=20000"), alice.User.AccessToken)
	if _, err := alice.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: picture(t, "image/png", 64, 48), ContentType: "image/png", MXC: mxc}); err != nil {
		t.Fatal(err)
	}
	a := <-done
	if format, w, h := decodeSize(t, "waiting thumbnail", a.Body); a.Status != 200 || format != "png" || w != 32 || h != 32 {
		t.Errorf("waiting thumbnail: %d %s %dx%d, want a 32x32 PNG", a.Status, format, w, h)
	}
}
