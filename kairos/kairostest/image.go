package kairostest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"image"
	"image/jpeg"
	"image/png"
	"math"
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
// The pixels are a grey gradient with a darker ellipse. It panics if w or h is not positive.
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
		err = enc.Encode(&buf, img)
	} else {
		err = jpeg.Encode(&buf, img, &jpeg.Options{Quality: 80})
	}
	if err != nil {
		panic("kairostest: encoding a test image: " + err.Error())
	}
	b, _ := baseImages.LoadOrStore(k, buf.Bytes())
	return b.([]byte)
}

// gradient draws a grey horizontal gradient with a darker ellipse, a face-like blob. It
// works in whole-row copies, which keeps it fast under the race detector.
func gradient(w, h int) *image.Gray {
	img := image.NewGray(image.Rect(0, 0, w, h))
	light, dark := make([]byte, w), make([]byte, w)
	for x := range w {
		light[x] = uint8(60 + 150*x/w)
		dark[x] = light[x] - 40
	}
	cx, cy := w/2, h*2/5
	rx, ry := max(1, w/5), max(1, h/4)
	for y := range h {
		row := img.Pix[y*img.Stride : y*img.Stride+w]
		copy(row, light)
		// The ellipse's half-width on this row: sqrt(1 - dy²) * rx.
		dy := float64(y-cy) / float64(ry)
		if dy*dy < 1 {
			half := int(math.Sqrt(1-dy*dy) * float64(rx))
			x0, x1 := max(0, cx-half), min(w, cx+half)
			copy(row[x0:x1], dark[x0:x1])
		}
	}
	return img
}
