package worker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func testJPEG(t testing.TB, w, h int) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = uint8(i * 7)
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 50}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func testPNG(t testing.TB, w, h int) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, w, h))
	img.Set(1, 1, color.Gray{Y: 200})
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// pngHeaderOnly is a PNG signature and a valid IHDR claiming w×h, and nothing else.
func pngHeaderOnly(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 0 // 8-bit grayscale
	binary.Write(&b, binary.BigEndian, uint32(len(ihdr)))
	chunk := append([]byte("IHDR"), ihdr...)
	b.Write(chunk)
	binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(chunk))
	return b.Bytes()
}

func TestPrecheck(t *testing.T) {
	t.Parallel()
	jpg := testJPEG(t, 640, 480*2)
	big := testJPEG(t, 1200, 1000)
	pngOK := testPNG(t, 300, 5000)
	corruptPNG := append([]byte(nil), pngOK...)
	corruptPNG[20] ^= 0xFF // inside IHDR: the CRC no longer matches

	tests := []struct {
		desc       string
		data       []byte
		cfg        PrecheckConfig
		wantReason string // substring; empty: passes
		wantLowRes bool
		wantFormat string
	}{
		{desc: "jpeg within bounds, low resolution", data: jpg, wantLowRes: true, wantFormat: "jpeg"},
		{desc: "jpeg 1200x1000", data: big, wantFormat: "jpeg"},
		{desc: "jpeg streamed (above WholeMax)", data: big, cfg: PrecheckConfig{WholeMax: 100}, wantFormat: "jpeg"},
		{desc: "png at both edges", data: pngOK, wantFormat: "png", wantLowRes: true},
		{desc: "empty", data: nil, wantReason: "empty"},
		{desc: "text named jpg", data: []byte("hello, this is not an image at all"), wantReason: "unrecognised format"},
		{desc: "gif", data: []byte("GIF89a\x01\x00\x01\x00\x00\x00\x00;"), wantReason: "unsupported format gif"},
		{desc: "heic", data: []byte("\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"), wantReason: "unsupported format heic"},
		{desc: "299 wide", data: testJPEG(t, 299, 800), wantReason: "299x800"},
		{desc: "5001 high", data: pngHeaderOnly(800, 5001), cfg: PrecheckConfig{WholeMax: 10}, wantReason: "800x5001"},
		{desc: "30000x30000 header only", data: pngHeaderOnly(30000, 30000), wantReason: "30000x30000"},
		{desc: "truncated jpeg (whole)", data: jpg[:len(jpg)/2], wantReason: "truncated JPEG"},
		{desc: "truncated jpeg header", data: jpg[:40], wantReason: "undecodable jpeg header"},
		{desc: "corrupt png header", data: corruptPNG, wantReason: "undecodable png header"},
		{desc: "over the size cap", data: big, cfg: PrecheckConfig{MaxBytes: 1000}, wantReason: "over the size cap"},
		{desc: "header over the header limit", data: big, cfg: PrecheckConfig{WholeMax: 10, HeaderMax: 64}, wantReason: "header longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			c, err := Precheck(bytes.NewReader(tt.data), int64(len(tt.data)), tt.cfg)
			if tt.wantReason != "" {
				if !errors.Is(err, ErrInvalidImage) || !strings.Contains(err.Error(), tt.wantReason) {
					t.Fatalf("Precheck error = %v, want invalid image with %q", err, tt.wantReason)
				}
				return
			}
			if err != nil {
				t.Fatalf("Precheck: %v", err)
			}
			defer c.Release()
			if c.Format != tt.wantFormat || c.LowResolution != tt.wantLowRes || c.Bytes != int64(len(tt.data)) {
				t.Errorf("info = %+v, want format %s low_resolution %v", c.ImageInfo, tt.wantFormat, tt.wantLowRes)
			}
			got, err := io.ReadAll(c.Body)
			if err != nil {
				t.Fatalf("read body: %v", err)
			}
			if !bytes.Equal(got, tt.data) {
				t.Fatalf("body replays %d bytes, want the %d bytes of the image", len(got), len(tt.data))
			}
		})
	}
}

func TestPrecheckStreamedTruncationFailsAtEnd(t *testing.T) {
	t.Parallel()
	jpg := testJPEG(t, 1000, 1000)
	cut := jpg[:len(jpg)-100]
	c, err := Precheck(bytes.NewReader(cut), int64(len(cut)), PrecheckConfig{WholeMax: 1})
	if err != nil {
		t.Fatalf("Precheck of a streamed image checks the header only: %v", err)
	}
	_, err = io.ReadAll(iotest.OneByteReader(c.Body))
	if !errors.Is(err, ErrInvalidImage) {
		t.Fatalf("reading a truncated streamed JPEG: err = %v, want ErrInvalidImage at the end", err)
	}
}

func TestPrecheckReadErrorIsNotInvalid(t *testing.T) {
	t.Parallel()
	boom := errors.New("connection reset")
	for _, whole := range []int64{1 << 20, 1} {
		_, err := Precheck(iotest.ErrReader(boom), 5000, PrecheckConfig{WholeMax: whole})
		if !errors.Is(err, boom) || errors.Is(err, ErrInvalidImage) {
			t.Errorf("WholeMax %d: err = %v, want the read error, not an invalid image", whole, err)
		}
	}
}

func FuzzPrecheck(f *testing.F) {
	f.Add(testJPEG(f, 300, 300))
	f.Add(testPNG(f, 320, 300))
	f.Add(pngHeaderOnly(30000, 30000))
	f.Add([]byte("GIF89a"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, whole := range []int64{1 << 20, 1} {
			c, err := Precheck(bytes.NewReader(data), int64(len(data)), PrecheckConfig{WholeMax: whole})
			if err != nil {
				if !errors.Is(err, ErrInvalidImage) {
					t.Fatalf("non-classified error %v", err)
				}
				continue
			}
			if c.Width < 300 || c.Height < 300 || c.Width > 5000 || c.Height > 5000 {
				t.Fatalf("passed with %dx%d", c.Width, c.Height)
			}
			got, _ := io.ReadAll(c.Body)
			if !bytes.Equal(got, data) {
				t.Fatalf("body does not replay the input")
			}
			c.Release()
		}
	})
}

// noisyJPEG returns a w×h JPEG of grey noise: its entropy-coded data is large (about
// 0.5 byte per pixel at quality 75) and its header small, like a real photograph.
func noisyJPEG(tb testing.TB, w, h int) []byte {
	tb.Helper()
	img := image.NewGray(image.Rect(0, 0, w, h))
	x := uint32(2463534242)
	for i := range img.Pix {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		img.Pix[i] = uint8(x)
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 75}); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

// BenchmarkPrecheck measures the pre-check of a selfie and the reading of its body, as
// the handler does before the API call: "whole" reads a 100 KB-class image into a pooled
// buffer and checks its end; "streamed" decodes the header of a ~2 MB image and passes
// the rest through the end check while it is read. Allocations must stay flat (pooled
// buffer, no copy of a streamed image).
func BenchmarkPrecheck(b *testing.B) {
	for _, bc := range []struct {
		desc string
		img  []byte
		cfg  PrecheckConfig
	}{
		{desc: "whole", img: noisyJPEG(b, 500, 400)},
		{desc: "streamed", img: noisyJPEG(b, 2000, 2000)},
	} {
		b.Run(bc.desc, func(b *testing.B) {
			r := bytes.NewReader(bc.img)
			b.SetBytes(int64(len(bc.img)))
			b.ReportAllocs()
			for b.Loop() {
				r.Reset(bc.img)
				c, err := Precheck(r, int64(len(bc.img)), bc.cfg)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, c.Body); err != nil {
					b.Fatal(err)
				}
				c.Release()
			}
		})
	}
}
