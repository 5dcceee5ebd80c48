// Package thumbnail makes Matrix media thumbnails in pure Go (no cgo, so it
// runs in the Lambda binaries): PNG, JPEG, GIF (animated too) and WebP in,
// PNG, JPEG or GIF out.
//
// The rules are the client-server API's ("Thumbnails" under "Content
// repository"): "scale" keeps the aspect ratio and fits within the box,
// "crop" fills the box exactly, and a thumbnail is never upscaled. When the
// source already fits the box, it is returned at its own size.
//
// The package is pure: it takes bytes and returns bytes, and knows nothing of
// storage or HTTP. The media service picks a size with Pick, makes it with
// Make, and maps ErrUnsupported, ErrTooLarge and ErrInvalid to its answers.
package thumbnail

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/gif"
	"image/jpeg"
	"image/png"
	"mime"
	"strings"

	"github.com/disintegration/imaging"
	_ "golang.org/x/image/webp" // registers WebP with image.DecodeConfig and image.Decode
)

// Methods of a Size, as the thumbnail endpoints name them.
const (
	MethodScale = "scale"
	MethodCrop  = "crop"
)

// MaxPixels bounds the pixels of a source image. Make checks the dimensions
// a header declares before decoding, so a small file declaring a huge image
// (a decompression bomb) costs nothing. 50 megapixels is about 200 MB
// decoded as RGBA, which a 1 GB Lambda survives.
const MaxPixels = 50_000_000

// maxAnimatedWork bounds frames × source pixels of an animated thumbnail;
// beyond it an animated GIF gets a still thumbnail of its first frame.
// Each frame is composited, resized and quantized, so this is what the
// work grows with: 16 M is, say, 100 frames of 400x400.
const maxAnimatedWork = 16_000_000

// jpegQuality is the quality of JPEG thumbnails: small files with no
// visible blocking at thumbnail sizes.
const jpegQuality = 80

// Errors returned by Make, wrapped with context; test them with errors.Is.
var (
	// ErrUnsupported: the content is not a PNG, JPEG, GIF or WebP image
	// (SVG and HTML included), or its declared type is not an image type.
	ErrUnsupported = errors.New("unsupported media type for thumbnails")
	// ErrTooLarge: the image declares more than MaxPixels pixels.
	ErrTooLarge = errors.New("image too large to thumbnail")
	// ErrInvalid: the content looks like a supported image but does not
	// decode.
	ErrInvalid = errors.New("invalid image")
)

// Size is a thumbnail size: a box of Width x Height and a Method, "scale" or
// "crop".
type Size struct {
	Width, Height int
	Method        string
}

func (s Size) String() string { return fmt.Sprintf("%dx%d %s", s.Width, s.Height, s.Method) }

// DefaultSizes are the sizes the spec recommends and Synapse generates by
// default (its DEFAULT_THUMBNAIL_SIZES, the thumbnail_sizes option).
var DefaultSizes = []Size{
	{32, 32, MethodCrop},
	{96, 96, MethodCrop},
	{320, 240, MethodScale},
	{640, 480, MethodScale},
	{800, 600, MethodScale},
}

// Pick returns the size to serve for a request of w x h with method: among
// the sizes of that method (all sizes if none has it), the smallest whose box
// is at least w x h, else the largest, as the spec says a server must not
// return a thumbnail smaller than asked when it can. It returns the zero Size
// when sizes is empty.
func Pick(sizes []Size, w, h int, method string) Size {
	cands := make([]Size, 0, len(sizes))
	for _, s := range sizes {
		if s.Method == method {
			cands = append(cands, s)
		}
	}
	if len(cands) == 0 {
		cands = sizes
	}
	var best, largest Size
	found := false
	for _, s := range cands {
		area := s.Width * s.Height
		if s.Width >= w && s.Height >= h && (!found || area < best.Width*best.Height) {
			best, found = s, true
		}
		if area > largest.Width*largest.Height {
			largest = s
		}
	}
	if found {
		return best
	}
	return largest
}

// Make returns a thumbnail of src at s and its content type.
//
// The format comes from the bytes, not from contentType; contentType must
// still be an image type Make supports (or empty, or
// application/octet-stream), as Synapse only thumbnails what was uploaded as
// such an image. A JPEG gives a JPEG; a PNG or a GIF gives a PNG; a WebP
// gives a JPEG, or a PNG if it has transparency. JPEG EXIF orientation is
// applied. When animated is true and src is an animated GIF whose frames are
// cheap enough to resize (maxAnimatedWork), the thumbnail is an animated GIF
// with every frame and delay; otherwise it is the first frame.
//
// A source that already fits in the box is not resized: it is returned as is
// when its type is the thumbnail's type, and re-encoded otherwise.
func Make(src []byte, contentType string, s Size, animated bool) (out []byte, outType string, err error) {
	if s.Width <= 0 || s.Height <= 0 || (s.Method != MethodScale && s.Method != MethodCrop) {
		return nil, "", fmt.Errorf("thumbnail: bad size %v", s)
	}
	if err := checkDeclared(contentType); err != nil {
		return nil, "", err
	}
	format := sniff(src)
	if format == "" {
		return nil, "", fmt.Errorf("thumbnail: content of %d bytes declared %q: %w", len(src), contentType, ErrUnsupported)
	}
	cfg, cfgFormat, err := image.DecodeConfig(bytes.NewReader(src))
	if err != nil {
		return nil, "", fmt.Errorf("thumbnail: read %s header: %w: %w", format, ErrInvalid, err)
	}
	if cfgFormat != format {
		return nil, "", fmt.Errorf("thumbnail: %s content decoded as %s: %w", format, cfgFormat, ErrInvalid)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, "", fmt.Errorf("thumbnail: %s of %dx%d: %w", format, cfg.Width, cfg.Height, ErrInvalid)
	}
	if int64(cfg.Width)*int64(cfg.Height) > MaxPixels {
		return nil, "", fmt.Errorf("thumbnail: %s of %dx%d, over %d pixels: %w", format, cfg.Width, cfg.Height, MaxPixels, ErrTooLarge)
	}

	if format == "gif" && animated {
		frames, err := countGIFFrames(src)
		if err != nil {
			return nil, "", fmt.Errorf("thumbnail: gif: %w", err)
		}
		if frames > 1 && int64(frames)*int64(cfg.Width)*int64(cfg.Height) <= maxAnimatedWork {
			return makeAnimated(src, cfg, s)
		}
	}

	// imaging.Decode is image.Decode plus the JPEG EXIF orientation; for a
	// GIF it gives the first frame.
	img, err := imaging.Decode(bytes.NewReader(src), imaging.AutoOrientation(true))
	if err != nil {
		return nil, "", fmt.Errorf("thumbnail: decode %s: %w: %w", format, ErrInvalid, err)
	}
	outType = "image/png"
	if format == "jpeg" || (format == "webp" && isOpaque(img)) {
		outType = "image/jpeg"
	}
	thumb, resized := fit(img, s)
	if !resized && outType == "image/"+format {
		return src, outType, nil
	}
	out, err = encode(thumb, outType)
	if err != nil {
		return nil, "", fmt.Errorf("thumbnail: %s %v: %w", format, s, err)
	}
	return out, outType, nil
}

// supportedTypes are the declared types Make accepts, Synapse's
// THUMBNAIL_SUPPORTED_MEDIA_FORMAT_MAP.
var supportedTypes = map[string]bool{
	"image/png": true, "image/jpeg": true, "image/jpg": true, "image/gif": true, "image/webp": true,
	// Untyped uploads: the bytes decide.
	"": true, "application/octet-stream": true,
}

func checkDeclared(contentType string) error {
	mt := strings.ToLower(strings.TrimSpace(contentType))
	if mt != "" {
		parsed, _, err := mime.ParseMediaType(mt)
		if err != nil {
			return fmt.Errorf("thumbnail: declared type %q: %w", contentType, ErrUnsupported)
		}
		mt = parsed
	}
	if !supportedTypes[mt] {
		return fmt.Errorf("thumbnail: declared type %q: %w", contentType, ErrUnsupported)
	}
	return nil
}

// sniff names the format by its magic bytes: "png", "jpeg", "gif", "webp",
// or "" for anything else. image.DecodeConfig would sniff too, but only
// among the formats some package registered, which a caller could widen.
func sniff(b []byte) string {
	switch {
	case bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")):
		return "png"
	case bytes.HasPrefix(b, []byte("\xff\xd8\xff")):
		return "jpeg"
	case bytes.HasPrefix(b, []byte("GIF87a")), bytes.HasPrefix(b, []byte("GIF89a")):
		return "gif"
	case len(b) >= 16 && string(b[:4]) == "RIFF" && string(b[8:12]) == "WEBP":
		return "webp"
	}
	return ""
}

func isOpaque(img image.Image) bool {
	if o, ok := img.(interface{ Opaque() bool }); ok {
		return o.Opaque()
	}
	return false
}

// resample is the resizing filter: Catmull-Rom is about as sharp as Lanczos
// at thumbnail sizes for half its cost (BenchmarkMake_*: a 1 MB JPEG to
// 320x240 went from about 300 ms to 120 ms on 2 vCPUs).
var resample = imaging.CatmullRom

// fit scales or crops img to s without upscaling. It reports false, and
// returns img, when img already fits in the box.
func fit(img image.Image, s Size) (image.Image, bool) {
	b := img.Bounds()
	sw, sh := b.Dx(), b.Dy()
	w, h, cw, ch := dims(sw, sh, s)
	if cw == sw && ch == sh && w == sw && h == sh {
		return img, false
	}
	if cw != sw || ch != sh {
		if w == cw && h == ch {
			return imaging.CropCenter(img, cw, ch), true
		}
		return imaging.Fill(img, w, h, imaging.Center, resample), true
	}
	return imaging.Resize(img, w, h, resample), true
}

// dims computes the thumbnail of a sw x sh source at s: the centred region
// cw x ch of the source to keep, and the w x h it is resized to.
//
// scale: the whole source, resized to fit within the box, aspect kept.
// crop: when the source covers the box, the box exactly (the source scaled
// to cover it, then centre-cropped). When the source is smaller than the box
// on one side only, scaling would upscale, so the largest centred region of
// the box's aspect is kept at its own size. A source within the box is kept
// as is in both methods.
func dims(sw, sh int, s Size) (w, h, cw, ch int) {
	if sw <= s.Width && sh <= s.Height {
		return sw, sh, sw, sh
	}
	if s.Method == MethodCrop {
		if sw >= s.Width && sh >= s.Height {
			// Covering the box: the side that limits is the one whose
			// scale factor is larger.
			if sw*s.Height > sh*s.Width {
				cw = max(1, (sh*s.Width+s.Height/2)/s.Height)
				ch = sh
			} else {
				cw = sw
				ch = max(1, (sw*s.Height+s.Width/2)/s.Width)
			}
			return s.Width, s.Height, cw, ch
		}
		if sw*s.Height > sh*s.Width {
			cw, ch = max(1, sh*s.Width/s.Height), sh
		} else {
			cw, ch = sw, max(1, sw*s.Height/s.Width)
		}
		return cw, ch, cw, ch
	}
	if s.Width*sh <= s.Height*sw {
		return s.Width, max(1, (s.Width*sh+sw/2)/sw), sw, sh
	}
	return max(1, (s.Height*sw+sh/2)/sh), s.Height, sw, sh
}

func encode(img image.Image, outType string) ([]byte, error) {
	var buf bytes.Buffer
	var err error
	switch outType {
	case "image/jpeg":
		err = jpeg.Encode(&buf, img, &jpeg.Options{Quality: jpegQuality})
	case "image/png":
		err = (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&buf, img)
	case "image/gif":
		err = gif.Encode(&buf, img, nil)
	default:
		err = fmt.Errorf("no encoder for %s", outType)
	}
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", outType, err)
	}
	return buf.Bytes(), nil
}
