package browser_test

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/cirrus-matrix/cirrus/shared/testenv"
)

// quadrants are the colours of the test image's four quarters, left to
// right, top to bottom: far apart, so that no scaling or resampling turns
// one into another, and placed so that a mirrored or rotated image fails.
var quadrants = [4]color.RGBA{
	{220, 30, 30, 255},  // red
	{30, 170, 60, 255},  // green
	{30, 60, 220, 255},  // blue
	{240, 210, 20, 255}, // yellow
}

// The test image is larger than Hydrogen's 400x300 box, so Hydrogen shows
// it scaled and asks for a thumbnail of that size.
const (
	imageW, imageH = 640, 480
	shownW, shownH = 400, 300
)

// TestHydrogenShowsImage: alice sends a PNG (four coloured quarters) to a
// room with mautrix-go, then logs in to Hydrogen in Chromium
// (hydrogen_media.mjs) and opens the room. Hydrogen advertises nothing but
// reads /versions: Cirrus lists v1.11, so Hydrogen asks for the image on
// the authenticated /_matrix/client/v1/media/thumbnail path, and its
// service worker adds the access token to the <img>'s request. The <img>
// must load with the image's aspect ratio at Hydrogen's 400x300, and the
// pixels Chromium paints in its place must be the four colours in their
// places. The screenshots go to t.TempDir, or to CIRRUS_SHOT_DIR when set,
// to be kept.
func TestHydrogenShowsImage(t *testing.T) {
	const (
		roomName  = "Darkroom"
		imageName = "quadrants.png"
	)
	st, homeserver := startWithBaseURL(t)
	alice := st.Member(t, "alice")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	room, err := alice.Client.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: roomName, Preset: "private_chat"})
	if err != nil {
		t.Fatalf("alice creates the room: %v", err)
	}
	png := quadrantsPNG(t)
	up, err := alice.Client.UploadBytesWithName(ctx, png, "image/png", imageName)
	if err != nil {
		t.Fatalf("alice uploads the image: %v", err)
	}
	_, err = alice.Client.SendMessageEvent(ctx, room.RoomID, event.EventMessage, &event.MessageEventContent{
		MsgType: event.MsgImage,
		Body:    imageName,
		URL:     up.ContentURI.CUString(),
		Info:    &event.FileInfo{MimeType: "image/png", Width: imageW, Height: imageH, Size: len(png)},
	})
	if err != nil {
		t.Fatalf("alice sends the image: %v", err)
	}

	shots := shotDir(t)
	script, err := filepath.Abs("hydrogen_media.mjs")
	if err != nil {
		t.Fatal(err)
	}
	out, err := testenv.RunBrowserContext(ctx, t, scriptTimeout, script,
		"HOMESERVER="+homeserver,
		"USERNAME=alice",
		"PASSWORD="+password,
		"ROOM_NAME="+roomName,
		"IMAGE_NAME="+imageName,
		"SHOT_DIR="+shots,
	)
	if err != nil || !strings.HasSuffix(out, "\nOK") {
		t.Fatalf("Hydrogen did not show the image (err %v); its output:\n%s", err, out)
	}
	t.Logf("Hydrogen's output:\n%s", out)
	for _, l := range strings.Split(out, "\n") {
		if p, ok := strings.CutPrefix(l, "SHOT "); ok {
			t.Logf("screenshot: %s", p)
		}
	}

	shown := checkImage(t, out, up.ContentURI.FileID)
	checkPixels(t, filepath.Join(shots, "image.png"), shown)
	checkServed(t, st)
}

// quadrantsPNG is the test image: imageW by imageH in four quarters of the
// quadrants colours.
func quadrantsPNG(t *testing.T) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, imageW, imageH))
	for y := range imageH {
		for x := range imageW {
			img.SetRGBA(x, y, quadrants[quadrant(x, y, imageW, imageH)])
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// quadrant is the index in quadrants of the quarter (x, y) is in.
func quadrant(x, y, w, h int) int {
	q := 0
	if x >= w/2 {
		q++
	}
	if y >= h/2 {
		q += 2
	}
	return q
}

// shotDir is where the script writes its screenshots.
func shotDir(t *testing.T) string {
	t.Helper()
	keep := os.Getenv("CIRRUS_SHOT_DIR")
	if keep == "" {
		return t.TempDir()
	}
	dir, err := os.MkdirTemp(keep, t.Name()+"-")
	if err != nil {
		t.Fatalf("CIRRUS_SHOT_DIR: %v", err)
	}
	return dir
}

// shownImage is the script's IMAGE line: the <img> once loaded.
type shownImage struct {
	Src           string  `json:"src"`
	NaturalWidth  int     `json:"naturalWidth"`
	NaturalHeight int     `json:"naturalHeight"`
	Width         float64 `json:"width"`
	Height        float64 `json:"height"`
}

// checkImage checks the <img> Hydrogen showed: loaded from the
// authenticated thumbnail path for the media, with the image's aspect
// ratio and no larger than it, in Hydrogen's 400x300 box, and that the
// request for it succeeded.
func checkImage(t *testing.T, out, mediaID string) shownImage {
	t.Helper()
	_, line, ok := strings.Cut(out, "\nIMAGE ")
	line, _, _ = strings.Cut(line, "\n")
	var img shownImage
	if !ok || json.Unmarshal([]byte(line), &img) != nil {
		t.Fatalf("no IMAGE line in the script's output")
	}
	u, err := url.Parse(img.Src)
	if err != nil {
		t.Fatalf("the <img>'s src %q: %v", img.Src, err)
	}
	want := "/_matrix/client/v1/media/thumbnail/example.org/" + mediaID
	if u.Path != want {
		t.Errorf("the <img>'s src is %s, want the authenticated thumbnail %s", u.Path, want)
	}
	if img.NaturalWidth <= 0 || img.NaturalHeight <= 0 {
		t.Fatalf("the <img> did not load: %+v", img)
	}
	if img.NaturalWidth*imageH != img.NaturalHeight*imageW || img.NaturalWidth > imageW {
		t.Errorf("the <img> is %dx%d, want the %dx%d image's aspect ratio and no larger", img.NaturalWidth, img.NaturalHeight, imageW, imageH)
	}
	if img.Width != shownW || img.Height != shownH {
		t.Errorf("Hydrogen shows the image at %vx%v, want %dx%d", img.Width, img.Height, shownW, shownH)
	}
	served := false
	for _, l := range requestLine.FindAllStringSubmatch(out, -1) {
		if l[1] == "GET" && l[2] == want && l[3] == "200" {
			served = true
		}
		if strings.HasPrefix(l[2], "/_matrix/media/") && l[1] == "GET" {
			t.Errorf("Hydrogen used the legacy unauthenticated %s", l[2])
		}
	}
	if !served {
		t.Errorf("no GET %s answered 200 in the requests Chromium made", want)
	}
	return img
}

// checkPixels checks the screenshot of the <img>: its size is the shown
// size and the middle of each quarter has that quarter's colour, within
// what scaling and colour management move it.
func checkPixels(t *testing.T, path string, shown shownImage) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("the image's screenshot: %v", err)
	}
	defer f.Close()
	shot, err := png.Decode(f)
	if err != nil {
		t.Fatalf("decode the image's screenshot: %v", err)
	}
	b := shot.Bounds()
	// A box at a fractional position is shot a pixel larger.
	if d := float64(b.Dx()) - shown.Width; d < 0 || d > 1 {
		t.Errorf("the screenshot is %dx%d, want the shown %vx%v", b.Dx(), b.Dy(), shown.Width, shown.Height)
	} else if d := float64(b.Dy()) - shown.Height; d < 0 || d > 1 {
		t.Errorf("the screenshot is %dx%d, want the shown %vx%v", b.Dx(), b.Dy(), shown.Width, shown.Height)
	}
	const tolerance = 24
	for _, p := range []image.Point{{1, 1}, {3, 1}, {1, 3}, {3, 3}} {
		x, y := b.Min.X+p.X*int(shown.Width)/4, b.Min.Y+p.Y*int(shown.Height)/4
		want := quadrants[quadrant(x-b.Min.X, y-b.Min.Y, int(shown.Width), int(shown.Height))]
		r, g, bl, _ := shot.At(x, y).RGBA()
		got := [3]int{int(r >> 8), int(g >> 8), int(bl >> 8)}
		for i, w := range [3]uint8{want.R, want.G, want.B} {
			if d := got[i] - int(w); d > tolerance || d < -tolerance {
				t.Errorf("the screenshot's pixel at (%d, %d) is %v, want about %v", x, y, got, want)
				break
			}
		}
	}
}
