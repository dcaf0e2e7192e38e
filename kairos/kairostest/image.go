package kairostest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math/rand/v2"
	"strconv"
	"sync"
)

// imageKey identifies a cached base encoding.
type imageKey struct {
	png  bool
	w, h int
}

// baseImages caches one encoding per format and size; seeds only add metadata to it,
// which keeps generation fast (microseconds after the first call for a size).
var baseImages sync.Map // imageKey → []byte

// JPEG returns a valid w x h JPEG, deterministic for (w, h, seed); different seeds give
// different bytes (the seed is in a comment segment), hence different emulator scores.
// The pixels are a smooth colour gradient. It panics if w or h is not positive.
func JPEG(w, h int, seed int64) []byte {
	return JPEGSized(w, h, seed, 0)
}

// JPEGSized is JPEG padded with comment segments of pseudo-random bytes to about
// approxBytes (never less than the unpadded JPEG; at most 4 bytes short of approxBytes
// otherwise). Decoders, the emulator included, skip the padding.
func JPEGSized(w, h int, seed int64, approxBytes int) []byte {
	base := baseImage(imageKey{w: w, h: h})
	tag := []byte("kairostest seed=" + strconv.FormatInt(seed, 10))
	size := len(base) + 4 + len(tag)
	pad := max(0, approxBytes-size)
	out := make([]byte, 0, size+pad+4)
	out = append(out, base[:2]...) // SOI
	out = appendCOM(out, tag)
	chunk := padBlock()
	for pad > 4 { // a segment carries 4 bytes of framing
		n := min(pad-4, maxCOM)
		out = appendCOM(out, chunk[:n])
		pad -= n + 4
	}
	return append(out, base[2:]...)
}

// maxCOM is the largest JPEG comment payload.
const maxCOM = 65533

// padBlock is the pseudo-random payload of padding segments (the seed's comment already
// makes each image unique).
var padBlock = sync.OnceValue(func() []byte {
	rnd := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, maxCOM)
	for i := 0; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rnd.Uint64())
	}
	return b
})

// appendCOM appends a JPEG comment segment (FF FE, big-endian length, payload).
func appendCOM(b, payload []byte) []byte {
	b = append(b, 0xff, 0xfe)
	b = binary.BigEndian.AppendUint16(b, uint16(len(payload)+2))
	return append(b, payload...)
}

// PNG returns a valid w x h PNG, deterministic for (w, h, seed); different seeds give
// different bytes (the seed is in a tEXt chunk). It panics if w or h is not positive.
func PNG(w, h int, seed int64) []byte {
	base := baseImage(imageKey{png: true, w: w, h: h})
	const ihdrEnd = 8 + 4 + 4 + 13 + 4 // signature, IHDR length, type, data, CRC
	text := []byte("Comment\x00kairostest seed=" + strconv.FormatInt(seed, 10))
	out := make([]byte, 0, len(base)+12+len(text))
	out = append(out, base[:ihdrEnd]...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(text)))
	start := len(out)
	out = append(out, "tEXt"...)
	out = append(out, text...)
	out = binary.BigEndian.AppendUint32(out, crc32.ChecksumIEEE(out[start:]))
	return append(out, base[ihdrEnd:]...)
}

// baseImage returns the cached encoding for k, encoding it on first use.
func baseImage(k imageKey) []byte {
	if k.w <= 0 || k.h <= 0 {
		panic(fmt.Sprintf("kairostest: image size %dx%d must be positive", k.w, k.h))
	}
	if b, ok := baseImages.Load(k); ok {
		return b.([]byte)
	}
	img := gradient(k.w, k.h)
	var buf bytes.Buffer
	var err error
	if k.png {
		enc := png.Encoder{CompressionLevel: png.BestSpeed}
		err = enc.Encode(&buf, toNRGBA(img))
	} else {
		err = jpeg.Encode(&buf, img, &jpeg.Options{Quality: 80})
	}
	if err != nil {
		panic("kairostest: encoding a test image: " + err.Error())
	}
	b, _ := baseImages.LoadOrStore(k, buf.Bytes())
	return b.([]byte)
}

// gradient draws a smooth colour gradient with a darker ellipse, a face-like blob.
func gradient(w, h int) *image.YCbCr {
	img := image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio420)
	cx, cy := w/2, h*2/5
	rx, ry := max(1, w/5), max(1, h/4)
	for y := range h {
		row := img.Y[y*img.YStride:]
		for x := range w {
			v := 60 + (150*x)/w + (40*y)/h
			dx, dy := (x-cx)*100/rx, (y-cy)*100/ry
			if dx*dx+dy*dy < 10000 {
				v -= 40
			}
			row[x] = uint8(v)
		}
	}
	for y := range (h + 1) / 2 {
		for x := range (w + 1) / 2 {
			img.Cb[y*img.CStride+x] = uint8(110 + (30*x)/w)
			img.Cr[y*img.CStride+x] = uint8(140 + (20*y)/h)
		}
	}
	return img
}

// toNRGBA converts img without a per-pixel allocation (the PNG encoder is slow on YCbCr).
func toNRGBA(img *image.YCbCr) *image.NRGBA {
	b := img.Bounds()
	out := image.NewNRGBA(b)
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			yi, ci := img.YOffset(x, y), img.COffset(x, y)
			r, g, bl := color.YCbCrToRGB(img.Y[yi], img.Cb[ci], img.Cr[ci])
			o := out.PixOffset(x, y)
			out.Pix[o], out.Pix[o+1], out.Pix[o+2], out.Pix[o+3] = r, g, bl, 0xff
		}
	}
	return out
}
