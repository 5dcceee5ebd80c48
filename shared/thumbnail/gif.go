package thumbnail

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/gif"
)

// countGIFFrames counts the image descriptors of a GIF by walking its block
// structure, without decompressing anything, so that Make can bound the
// work of an animated thumbnail before gif.DecodeAll allocates every frame.
func countGIFFrames(b []byte) (int, error) {
	const header = 13 // signature, version, logical screen descriptor
	if len(b) < header {
		return 0, fmt.Errorf("count frames: truncated header: %w", ErrInvalid)
	}
	p := header
	if flags := b[10]; flags&0x80 != 0 {
		p += 3 << ((flags & 7) + 1) // global colour table
	}
	n := 0
	for p < len(b) {
		switch b[p] {
		case 0x21: // extension: label, then data sub-blocks
			p = skipSubBlocks(b, p+2)
		case 0x2C: // image descriptor
			if p+10 > len(b) {
				return n, fmt.Errorf("count frames: truncated image descriptor: %w", ErrInvalid)
			}
			flags := b[p+9]
			p += 10
			if flags&0x80 != 0 {
				p += 3 << ((flags & 7) + 1) // local colour table
			}
			p = skipSubBlocks(b, p+1) // after the LZW minimum code size
			n++
		case 0x3B: // trailer
			return n, nil
		default:
			return n, fmt.Errorf("count frames: unknown block 0x%02x at %d: %w", b[p], p, ErrInvalid)
		}
	}
	// No trailer: gif.DecodeAll accepts that, so count what is there.
	return n, nil
}

func skipSubBlocks(b []byte, p int) int {
	for p < len(b) {
		size := int(b[p])
		p++
		if size == 0 {
			return p
		}
		p += size
	}
	return p
}

// makeAnimated resizes every frame of an animated GIF. Frames of a GIF may
// cover part of the screen and rely on the previous ones (disposal), so each
// is composited on a canvas of the full screen first; the thumbnail's frames
// are then whole pictures, each disposed to the background, which any
// decoder shows the same way.
func makeAnimated(src []byte, cfg image.Config, s Size) ([]byte, string, error) {
	w, h, _, _ := dims(cfg.Width, cfg.Height, s)
	if w == cfg.Width && h == cfg.Height {
		// Already within the box: the source is its own thumbnail.
		return src, "image/gif", nil
	}
	g, err := gif.DecodeAll(bytes.NewReader(src))
	if err != nil {
		return nil, "", fmt.Errorf("thumbnail: decode animated gif: %w: %w", ErrInvalid, err)
	}
	out := &gif.GIF{
		LoopCount: g.LoopCount,
		Config:    image.Config{Width: w, Height: h},
	}
	canvas := image.NewNRGBA(image.Rect(0, 0, cfg.Width, cfg.Height))
	var saved *image.NRGBA
	// Frames sharing the global colour table share its backing array.
	quantizers := map[*color.Color]*quantizer{}
	for i, frame := range g.Image {
		disposal := byte(gif.DisposalNone)
		if i < len(g.Disposal) {
			disposal = g.Disposal[i]
		}
		if disposal == gif.DisposalPrevious {
			saved = image.NewNRGBA(canvas.Rect)
			copy(saved.Pix, canvas.Pix)
		}
		draw.Draw(canvas, frame.Rect, frame, frame.Rect.Min, draw.Over)

		resized, _ := fit(canvas, s)
		if len(frame.Palette) == 0 {
			return nil, "", fmt.Errorf("thumbnail: animated gif frame %d has no palette: %w", i, ErrInvalid)
		}
		q := quantizers[&frame.Palette[0]]
		if q == nil {
			q = newQuantizer(frame.Palette)
			quantizers[&frame.Palette[0]] = q
		}
		out.Image = append(out.Image, q.paletted(resized))
		delay := 0
		if i < len(g.Delay) {
			delay = g.Delay[i]
		}
		out.Delay = append(out.Delay, delay)
		out.Disposal = append(out.Disposal, gif.DisposalBackground)

		switch disposal {
		case gif.DisposalBackground:
			draw.Draw(canvas, frame.Rect, image.Transparent, image.Point{}, draw.Src)
		case gif.DisposalPrevious:
			copy(canvas.Pix, saved.Pix)
		}
	}
	var buf bytes.Buffer
	if err := gif.EncodeAll(&buf, out); err != nil {
		return nil, "", fmt.Errorf("thumbnail: encode animated gif %v: %w", s, err)
	}
	return buf.Bytes(), "image/gif", nil
}

// quantizer maps colours to a frame's palette. color.Palette.Index is a
// linear search, 256 distances a pixel; memoizing it on 5 bits a channel
// bounds the searches to 32768 a palette, however many pixels and frames
// use it.
type quantizer struct {
	palette     color.Palette
	transparent int // index of a fully transparent entry, or -1
	memo        [1 << 15]int16
}

func newQuantizer(p color.Palette) *quantizer {
	q := &quantizer{palette: p, transparent: -1}
	for i, c := range p {
		if _, _, _, a := c.RGBA(); a == 0 {
			q.transparent = i
			break
		}
	}
	for i := range q.memo {
		q.memo[i] = -1
	}
	return q
}

func (q *quantizer) paletted(img image.Image) *image.Paletted {
	b := img.Bounds()
	dst := image.NewPaletted(image.Rect(0, 0, b.Dx(), b.Dy()), q.palette)
	src, ok := img.(*image.NRGBA)
	if !ok {
		src = image.NewNRGBA(dst.Rect)
		draw.Draw(src, dst.Rect, img, b.Min, draw.Src)
		b = dst.Rect
	}
	for y := 0; y < b.Dy(); y++ {
		row := src.Pix[(y+b.Min.Y-src.Rect.Min.Y)*src.Stride:]
		for x := 0; x < b.Dx(); x++ {
			px := row[(x+b.Min.X-src.Rect.Min.X)*4:]
			r, g, bl, a := px[0], px[1], px[2], px[3]
			if a < 128 && q.transparent >= 0 {
				dst.Pix[y*dst.Stride+x] = uint8(q.transparent)
				continue
			}
			key := int(r>>3)<<10 | int(g>>3)<<5 | int(bl>>3)
			idx := q.memo[key]
			if idx < 0 {
				// The centre of the 5-bit cell stands for the cell.
				c := color.RGBA{r&^7 | 4, g&^7 | 4, bl&^7 | 4, 0xff}
				idx = int16(q.opaqueIndex(c))
				q.memo[key] = idx
			}
			dst.Pix[y*dst.Stride+x] = uint8(idx)
		}
	}
	return dst
}

// opaqueIndex is color.Palette.Index that skips the transparent entry, so
// that an opaque pixel never turns into a hole.
func (q *quantizer) opaqueIndex(c color.RGBA) int {
	best, bestDist := 0, uint32(1<<32-1)
	for i, pc := range q.palette {
		if i == q.transparent {
			continue
		}
		pr, pg, pb, _ := pc.RGBA()
		dr := int32(c.R) - int32(pr>>8)
		dg := int32(c.G) - int32(pg>>8)
		db := int32(c.B) - int32(pb>>8)
		d := uint32(dr*dr + dg*dg + db*db)
		if d < bestDist {
			best, bestDist = i, d
		}
	}
	return best
}
