package thumbnail_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/color/palette"
	"image/draw"
	"image/gif"
	"image/jpeg"
	"image/png"
	"math/rand/v2"
	"os"
	"runtime"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/thumbnail"
	_ "golang.org/x/image/webp"
)

// gradient is w x h with red growing left to right and green top to bottom,
// so that where a thumbnail was cut from shows in its pixels.
func gradient(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x * 255 / (w - 1)), uint8(y * 255 / (h - 1)), 128, 255})
		}
	}
	return img
}

func encodePNG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func encodeJPEG(t testing.TB, img image.Image, quality int) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: quality}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func encodeGIF(t testing.TB, img image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := gif.Encode(&buf, img, nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decode decodes a thumbnail and checks that its bytes are of outType.
func decode(t *testing.T, out []byte, outType string) image.Image {
	t.Helper()
	img, format, err := image.Decode(bytes.NewReader(out))
	if err != nil {
		t.Fatalf("decode thumbnail: %v", err)
	}
	if "image/"+format != outType {
		t.Fatalf("thumbnail bytes are %s, type says %s", format, outType)
	}
	return img
}

func near(a, b uint32, tol int) bool {
	d := int(a>>8) - int(b>>8)
	return d <= tol && d >= -tol
}

func TestMake_DefaultSizes(t *testing.T) {
	src := gradient(1000, 700)
	sources := []struct {
		name, declared, wantType string
		data                     []byte
		checkColour              bool
	}{
		{"png", "image/png", "image/png", encodePNG(t, src), true},
		{"jpeg", "image/jpeg", "image/jpeg", encodeJPEG(t, src, 95), true},
		{"gif", "image/gif", "image/png", encodeGIF(t, src), false},
		// Hand-made solid-colour lossless WebPs (testdata/README.md).
		{"webp", "image/webp", "image/jpeg", readFile(t, "testdata/opaque-1000x700.webp"), false},
		{"webp-alpha", "image/webp", "image/png", readFile(t, "testdata/alpha-1000x700.webp"), false},
		// The bytes decide, not the declared type.
		{"png-untyped", "application/octet-stream", "image/png", encodePNG(t, src), true},
	}
	want := map[thumbnail.Size][2]int{
		{32, 32, "crop"}:    {32, 32},
		{96, 96, "crop"}:    {96, 96},
		{320, 240, "scale"}: {320, 224},
		{640, 480, "scale"}: {640, 448},
		{800, 600, "scale"}: {800, 560},
	}
	for _, src := range sources {
		for _, size := range thumbnail.DefaultSizes {
			t.Run(src.name+"/"+size.String(), func(t *testing.T) {
				out, outType, err := thumbnail.Make(src.data, src.declared, size, false)
				if err != nil {
					t.Fatal(err)
				}
				if outType != src.wantType {
					t.Fatalf("type %s, want %s", outType, src.wantType)
				}
				img := decode(t, out, outType)
				b := img.Bounds()
				w, h := b.Dx(), b.Dy()
				if [2]int{w, h} != want[size] {
					t.Fatalf("got %dx%d, want %dx%d", w, h, want[size][0], want[size][1])
				}
				if size.Method == "scale" {
					if w > size.Width || h > size.Height {
						t.Fatalf("%dx%d does not fit in %v", w, h, size)
					}
					if exp := w * 700 / 1000; h < exp-1 || h > exp+1 {
						t.Fatalf("%dx%d does not keep the 1000:700 aspect", w, h)
					}
				}
				if src.name == "webp-alpha" {
					if _, _, _, a := img.At(w/2, h/2).RGBA(); !near(a, 128<<8, 2) {
						t.Fatalf("alpha %d lost", a>>8)
					}
				}
				if !src.checkColour {
					return
				}
				// A crop keeps the centred 700x700 square, source x 150..849;
				// a scale keeps the whole width.
				left := uint32(0)
				if size.Method == "crop" {
					left = 150 * 255 / 999
				}
				tol := 14
				if r, _, _, _ := img.At(b.Min.X, b.Min.Y+h/2).RGBA(); !near(r, left<<8, tol) {
					t.Errorf("left edge red %d, want about %d", r>>8, left)
				}
				if r, g, _, _ := img.At(b.Min.X+w/2, b.Min.Y+h/2).RGBA(); !near(r, 127<<8, tol) || !near(g, 127<<8, tol) {
					t.Errorf("centre %d,%d, want about 127,127", r>>8, g>>8)
				}
			})
		}
	}
}

// animatedGIF makes a 3-frame GIF of w x h: solid red, green, then blue,
// the last one drawn over part of the screen only.
func animatedGIF(t *testing.T, w, h int, delays []int) []byte {
	t.Helper()
	g := &gif.GIF{Config: image.Config{Width: w, Height: h, ColorModel: color.Palette(palette.Plan9)}}
	cols := []color.Color{color.RGBA{255, 0, 0, 255}, color.RGBA{0, 255, 0, 255}, color.RGBA{0, 0, 255, 255}}
	for i, c := range cols {
		r := image.Rect(0, 0, w, h)
		if i == 2 {
			r = image.Rect(w/4, 0, w, h) // the left quarter stays green
		}
		fr := image.NewPaletted(r, palette.Plan9)
		draw.Draw(fr, r, image.NewUniform(c), image.Point{}, draw.Src)
		g.Image = append(g.Image, fr)
		g.Delay = append(g.Delay, delays[i])
		g.Disposal = append(g.Disposal, gif.DisposalNone)
	}
	var buf bytes.Buffer
	if err := gif.EncodeAll(&buf, g); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestMake_AnimatedGIF(t *testing.T) {
	delays := []int{10, 25, 40}
	src := animatedGIF(t, 400, 300, delays)
	for _, tc := range []struct {
		size thumbnail.Size
		w, h int
	}{
		{thumbnail.Size{Width: 96, Height: 96, Method: "crop"}, 96, 96},
		{thumbnail.Size{Width: 320, Height: 240, Method: "scale"}, 320, 240},
	} {
		t.Run(tc.size.String(), func(t *testing.T) {
			out, outType, err := thumbnail.Make(src, "image/gif", tc.size, true)
			if err != nil {
				t.Fatal(err)
			}
			if outType != "image/gif" {
				t.Fatalf("type %s, want image/gif", outType)
			}
			g, err := gif.DecodeAll(bytes.NewReader(out))
			if err != nil {
				t.Fatal(err)
			}
			if len(g.Image) != 3 {
				t.Fatalf("%d frames, want 3", len(g.Image))
			}
			if g.Config.Width != tc.w || g.Config.Height != tc.h {
				t.Fatalf("screen %dx%d, want %dx%d", g.Config.Width, g.Config.Height, tc.w, tc.h)
			}
			for i, fr := range g.Image {
				if fr.Rect != image.Rect(0, 0, tc.w, tc.h) {
					t.Errorf("frame %d is %v", i, fr.Rect)
				}
				if g.Delay[i] != delays[i] {
					t.Errorf("frame %d delay %d, want %d", i, g.Delay[i], delays[i])
				}
			}
			// Frame 3 covered the right three quarters of the source only:
			// composited, its left edge is still frame 2's green.
			wantCentre := []color.RGBA{{255, 0, 0, 255}, {0, 255, 0, 255}, {0, 0, 255, 255}}
			for i, fr := range g.Image {
				r, gg, b, _ := fr.At(tc.w/2, tc.h/2).RGBA()
				want := wantCentre[i]
				if !near(r, uint32(want.R)<<8, 8) || !near(gg, uint32(want.G)<<8, 8) || !near(b, uint32(want.B)<<8, 8) {
					t.Errorf("frame %d centre %d,%d,%d, want %v", i, r>>8, gg>>8, b>>8, want)
				}
			}
			if tc.size.Method == "scale" {
				if _, gg, b, _ := g.Image[2].At(2, tc.h/2).RGBA(); !near(gg, 255<<8, 8) || !near(b, 0, 8) {
					t.Errorf("frame 3 left edge is not frame 2's green: g=%d b=%d", gg>>8, b>>8)
				}
			}
		})
	}

	t.Run("animated=false", func(t *testing.T) {
		out, outType, err := thumbnail.Make(src, "image/gif", thumbnail.Size{Width: 96, Height: 96, Method: "crop"}, false)
		if err != nil {
			t.Fatal(err)
		}
		if outType != "image/png" {
			t.Fatalf("type %s, want image/png", outType)
		}
		img := decode(t, out, outType)
		if img.Bounds().Dx() != 96 || img.Bounds().Dy() != 96 {
			t.Fatalf("got %v", img.Bounds())
		}
		if r, g, _, _ := img.At(48, 48).RGBA(); !near(r, 255<<8, 8) || !near(g, 0, 8) {
			t.Fatalf("not the first (red) frame: r=%d g=%d", r>>8, g>>8)
		}
	})

	t.Run("within the box", func(t *testing.T) {
		out, outType, err := thumbnail.Make(src, "image/gif", thumbnail.Size{Width: 800, Height: 600, Method: "scale"}, true)
		if err != nil {
			t.Fatal(err)
		}
		if outType != "image/gif" || !bytes.Equal(out, src) {
			t.Fatalf("got %s of %d bytes, want the animated source back", outType, len(out))
		}
	})

	t.Run("too costly to animate", func(t *testing.T) {
		// 3 x 3000x2000 is 18 M pixels to resize: over the bound, so the
		// first frame only.
		big := animatedGIF(t, 3000, 2000, delays)
		out, outType, err := thumbnail.Make(big, "image/gif", thumbnail.Size{Width: 320, Height: 240, Method: "scale"}, true)
		if err != nil {
			t.Fatal(err)
		}
		if outType != "image/png" {
			t.Fatalf("type %s, want image/png", outType)
		}
		img := decode(t, out, outType)
		if b := img.Bounds(); b.Dx() != 320 || b.Dy() != 213 {
			t.Fatalf("got %v, want 320x213", b)
		}
		if r, _, _, _ := img.At(160, 100).RGBA(); !near(r, 255<<8, 8) {
			t.Fatalf("not the first (red) frame: r=%d", r>>8)
		}
	})

	t.Run("animated request on a still GIF", func(t *testing.T) {
		still := encodeGIF(t, gradient(400, 300))
		out, outType, err := thumbnail.Make(still, "image/gif", thumbnail.Size{Width: 96, Height: 96, Method: "crop"}, true)
		if err != nil {
			t.Fatal(err)
		}
		if outType != "image/png" {
			t.Fatalf("type %s, want image/png for a single-frame GIF", outType)
		}
		decode(t, out, outType)
	})
}

func TestMake_Unsupported(t *testing.T) {
	svg := []byte(`<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>alert(1)</script></svg>`)
	html := []byte("<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>")
	pngBytes := encodePNG(t, gradient(50, 50))
	for _, tc := range []struct {
		name, declared string
		data           []byte
	}{
		{"svg", "image/svg+xml", svg},
		{"svg declared png", "image/png", svg},
		{"html", "text/html", html},
		{"html declared jpeg", "image/jpeg", html},
		{"png declared svg", "image/svg+xml", pngBytes},
		{"png declared html", "text/html; charset=utf-8", pngBytes},
		{"empty", "image/png", nil},
		{"bmp", "image/bmp", []byte("BM\x3a\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := thumbnail.Make(tc.data, tc.declared, thumbnail.DefaultSizes[2], false)
			if !errors.Is(err, thumbnail.ErrUnsupported) {
				t.Fatalf("err %v, want ErrUnsupported", err)
			}
		})
	}
	// With type parameters and in upper case, PNG is PNG.
	if _, _, err := thumbnail.Make(pngBytes, "Image/PNG; foo=bar", thumbnail.DefaultSizes[0], false); err != nil {
		t.Fatalf("image/png with parameters: %v", err)
	}
}

// hugePNG is a PNG signature and an IHDR chunk declaring w x h RGBA, with a
// valid CRC and no image data.
func hugePNG(w, h uint32) []byte {
	b := []byte("\x89PNG\r\n\x1a\n")
	ihdr := []byte("IHDR")
	ihdr = binary.BigEndian.AppendUint32(ihdr, w)
	ihdr = binary.BigEndian.AppendUint32(ihdr, h)
	ihdr = append(ihdr, 8, 6, 0, 0, 0) // 8-bit RGBA, no interlace
	b = binary.BigEndian.AppendUint32(b, uint32(len(ihdr)-4))
	b = append(b, ihdr...)
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(ihdr))
}

func TestMake_TooLarge(t *testing.T) {
	gifHeader := []byte("GIF89a\xff\xff\xff\xff\x00\x00\x00;") // 65535x65535, no colour table
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"png 100000x100000", hugePNG(100000, 100000)},
		{"png 8000x8000", hugePNG(8000, 8000)},
		{"gif 65535x65535", gifHeader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, _, err := thumbnail.Make(tc.data, "", thumbnail.DefaultSizes[4], true)
			runtime.ReadMemStats(&after)
			if !errors.Is(err, thumbnail.ErrTooLarge) {
				t.Fatalf("err %v, want ErrTooLarge", err)
			}
			// Decoding would take gigabytes; the header check takes a few KB.
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
				t.Fatalf("allocated %d bytes refusing it", alloc)
			}
		})
	}
	// Just under the bound is not refused for its size (it fails later, for
	// want of image data).
	_, _, err := thumbnail.Make(hugePNG(7000, 7000), "image/png", thumbnail.DefaultSizes[0], false)
	if errors.Is(err, thumbnail.ErrTooLarge) || !errors.Is(err, thumbnail.ErrInvalid) {
		t.Fatalf("7000x7000 without data: err %v, want ErrInvalid", err)
	}
}

func TestMake_NoUpscale(t *testing.T) {
	small := gradient(20, 20)
	pngBytes := encodePNG(t, small)
	jpegBytes := encodeJPEG(t, small, 90)
	gifBytes := encodeGIF(t, small)
	for _, size := range thumbnail.DefaultSizes {
		t.Run(size.String(), func(t *testing.T) {
			// Already the right type: returned as is.
			for _, src := range []struct {
				data     []byte
				declared string
			}{{pngBytes, "image/png"}, {jpegBytes, "image/jpeg"}} {
				out, outType, err := thumbnail.Make(src.data, src.declared, size, false)
				if err != nil {
					t.Fatal(err)
				}
				if outType != src.declared || !bytes.Equal(out, src.data) {
					t.Fatalf("%s: got %s of %d bytes, want the source back", src.declared, outType, len(out))
				}
			}
			// A GIF's thumbnails are PNGs: re-encoded at its size.
			out, outType, err := thumbnail.Make(gifBytes, "image/gif", size, false)
			if err != nil {
				t.Fatal(err)
			}
			if img := decode(t, out, outType); outType != "image/png" || img.Bounds().Dx() != 20 || img.Bounds().Dy() != 20 {
				t.Fatalf("gif: got %s %v, want image/png 20x20", outType, img.Bounds())
			}
		})
	}

	// Smaller than a crop box on one side only: the box's aspect, cut from
	// the source at its own scale.
	wide := encodePNG(t, gradient(1000, 20))
	out, outType, err := thumbnail.Make(wide, "image/png", thumbnail.Size{Width: 96, Height: 96, Method: "crop"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if b := decode(t, out, outType).Bounds(); b.Dx() != 20 || b.Dy() != 20 {
		t.Fatalf("1000x20 cropped to 96x96: got %v, want 20x20", b)
	}
	// And a scale never grows the short side.
	out, outType, err = thumbnail.Make(wide, "image/png", thumbnail.Size{Width: 320, Height: 240, Method: "scale"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if b := decode(t, out, outType).Bounds(); b.Dx() != 320 || b.Dy() != 6 {
		t.Fatalf("1000x20 scaled to 320x240: got %v, want 320x6", b)
	}
}

func TestMake_Invalid(t *testing.T) {
	pngBytes := encodePNG(t, gradient(500, 500))
	_, _, err := thumbnail.Make(pngBytes[:len(pngBytes)/2], "image/png", thumbnail.DefaultSizes[2], false)
	if !errors.Is(err, thumbnail.ErrInvalid) {
		t.Fatalf("truncated png: err %v, want ErrInvalid", err)
	}
	if _, _, err := thumbnail.Make(pngBytes, "image/png", thumbnail.Size{Width: 0, Height: 10, Method: "scale"}, false); err == nil {
		t.Fatal("zero width accepted")
	}
	if _, _, err := thumbnail.Make(pngBytes, "image/png", thumbnail.Size{Width: 10, Height: 10, Method: "stretch"}, false); err == nil {
		t.Fatal("unknown method accepted")
	}
}

func TestPick(t *testing.T) {
	d := thumbnail.DefaultSizes
	for _, tc := range []struct {
		w, h   int
		method string
		want   thumbnail.Size
	}{
		{32, 32, "crop", d[0]},
		{1, 1, "crop", d[0]},
		{33, 20, "crop", d[1]},
		{96, 96, "crop", d[1]},
		{200, 200, "crop", d[1]}, // none large enough: the largest crop
		{32, 32, "scale", d[2]},
		{320, 240, "scale", d[2]},
		{321, 240, "scale", d[3]},
		{640, 480, "scale", d[3]},
		{700, 100, "scale", d[4]},
		{4000, 4000, "scale", d[4]},
		{96, 96, "other", d[1]}, // unknown method: any size, smallest that fits
	} {
		if got := thumbnail.Pick(d, tc.w, tc.h, tc.method); got != tc.want {
			t.Errorf("Pick(%dx%d %s) = %v, want %v", tc.w, tc.h, tc.method, got, tc.want)
		}
	}
	if got := thumbnail.Pick(nil, 32, 32, "crop"); got != (thumbnail.Size{}) {
		t.Errorf("Pick of no sizes = %v", got)
	}
}

// photoJPEG is a JPEG of about 1 MB: a gradient with noise, which JPEG
// compresses about as badly as a photo.
func photoJPEG(b *testing.B) []byte {
	img := gradient(1800, 1350)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range img.Pix {
		if i%4 != 3 {
			img.Pix[i] = uint8(int(img.Pix[i]) + rng.IntN(48) - 24)
		}
	}
	return encodeJPEG(b, img, 85)
}

func BenchmarkMake_JPEG1MB_Scale320x240(b *testing.B) {
	src := photoJPEG(b)
	b.Logf("source JPEG: %d bytes", len(src))
	size := thumbnail.Size{Width: 320, Height: 240, Method: "scale"}
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		if _, _, err := thumbnail.Make(src, "image/jpeg", size, false); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMake_JPEG1MB_Crop96x96(b *testing.B) {
	src := photoJPEG(b)
	size := thumbnail.Size{Width: 96, Height: 96, Method: "crop"}
	for b.Loop() {
		if _, _, err := thumbnail.Make(src, "image/jpeg", size, false); err != nil {
			b.Fatal(err)
		}
	}
}

// withOrientation inserts an EXIF APP1 segment with the given orientation
// after a JPEG's SOI marker.
func withOrientation(jpg []byte, orientation uint16) []byte {
	tiff := []byte("II*\x00\x08\x00\x00\x00")             // little-endian TIFF, IFD at 8
	tiff = binary.LittleEndian.AppendUint16(tiff, 1)      // one entry
	tiff = binary.LittleEndian.AppendUint16(tiff, 0x0112) // Orientation
	tiff = binary.LittleEndian.AppendUint16(tiff, 3)      // SHORT
	tiff = binary.LittleEndian.AppendUint32(tiff, 1)      // count
	tiff = binary.LittleEndian.AppendUint16(tiff, orientation)
	tiff = append(tiff, 0, 0, 0, 0, 0, 0) // value padding, no next IFD
	payload := append([]byte("Exif\x00\x00"), tiff...)
	seg := []byte{0xff, 0xe1}
	seg = binary.BigEndian.AppendUint16(seg, uint16(len(payload)+2))
	seg = append(seg, payload...)
	out := append([]byte{}, jpg[:2]...)
	out = append(out, seg...)
	return append(out, jpg[2:]...)
}

func TestMake_JPEGOrientation(t *testing.T) {
	// Stored 1000x500, shown rotated a quarter turn (orientation 6):
	// 500x1000, so its 320x240 scale is 120x240, not 320x160.
	src := withOrientation(encodeJPEG(t, gradient(1000, 500), 90), 6)
	out, outType, err := thumbnail.Make(src, "image/jpeg", thumbnail.Size{Width: 320, Height: 240, Method: "scale"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if b := decode(t, out, outType).Bounds(); b.Dx() != 120 || b.Dy() != 240 {
		t.Fatalf("got %v, want 120x240", b)
	}
}
