package worker

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"io"
	"sync"
)

// ErrInvalidImage marks an image that fails the pre-check: it is never sent to the API.
var ErrInvalidImage = errors.New("invalid image")

// InvalidImageError says why an image failed the pre-check. It matches ErrInvalidImage.
type InvalidImageError struct{ Reason string }

func (e *InvalidImageError) Error() string        { return "invalid image: " + e.Reason }
func (e *InvalidImageError) Is(target error) bool { return target == ErrInvalidImage }

func invalid(format string, args ...any) error {
	return &InvalidImageError{Reason: fmt.Sprintf(format, args...)}
}

// PrecheckConfig bounds what an image may be before a paid call is made.
type PrecheckConfig struct {
	MinSide int // smallest allowed width and height; default 300
	MaxSide int // largest allowed width and height; default 5000
	// LowResolutionSide flags (but allows) an image whose shorter side is below it; default 900.
	LowResolutionSide int
	MaxBytes          int64 // the size cap; default 15 MiB
	// HeaderMax is the most bytes read to find the image's dimensions; default 512 KiB
	// (JPEG headers with large EXIF blocks sit well inside it).
	HeaderMax int
	// WholeMax: images up to this size are read whole into a pooled buffer and their end
	// is checked too (a truncated file is caught before the call); larger ones are
	// streamed, and a bad end aborts the upload. Default 1 MiB.
	WholeMax int64
}

func (c *PrecheckConfig) applyDefaults() {
	if c.MinSide == 0 {
		c.MinSide = 300
	}
	if c.MaxSide == 0 {
		c.MaxSide = 5000
	}
	if c.LowResolutionSide == 0 {
		c.LowResolutionSide = 900
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = 15 << 20
	}
	if c.HeaderMax == 0 {
		c.HeaderMax = 512 << 10
	}
	if c.WholeMax == 0 {
		c.WholeMax = 1 << 20
	}
}

func (c *PrecheckConfig) validate() error {
	switch {
	case c.MinSide < 1 || c.MaxSide < c.MinSide:
		return fmt.Errorf("precheck: sides must satisfy 1 <= min (%d) <= max (%d)", c.MinSide, c.MaxSide)
	case c.MaxBytes < 1:
		return fmt.Errorf("precheck: size cap must be positive, got %d", c.MaxBytes)
	case c.HeaderMax < 64:
		return fmt.Errorf("precheck: header limit must be at least 64 bytes, got %d", c.HeaderMax)
	}
	return nil
}

// ImageInfo is what the pre-check learned from an image's header.
type ImageInfo struct {
	Format        string // "jpeg" or "png"
	ContentType   string // "image/jpeg" or "image/png"
	Width, Height int
	Bytes         int64
	LowResolution bool // the shorter side is below PrecheckConfig.LowResolutionSide
}

// Checked is an image that passed the pre-check: Body replays it whole, from its first
// byte. Release returns its buffer to the pool; call it once the body is no longer read.
type Checked struct {
	ImageInfo
	Body    io.Reader
	release func()
}

// Release frees the buffer behind Body. Safe to call more than once.
func (c *Checked) Release() {
	if c.release != nil {
		c.release()
		c.release = nil
	}
}

var wholePool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// sniff names the format from the first bytes.
func sniff(b []byte) string {
	switch {
	case bytes.HasPrefix(b, []byte{0xFF, 0xD8, 0xFF}):
		return "jpeg"
	case bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")):
		return "png"
	case bytes.HasPrefix(b, []byte("GIF87a")), bytes.HasPrefix(b, []byte("GIF89a")):
		return "gif"
	case len(b) >= 12 && bytes.Equal(b[:4], []byte("RIFF")) && bytes.Equal(b[8:12], []byte("WEBP")):
		return "webp"
	case len(b) >= 12 && bytes.Equal(b[4:8], []byte("ftyp")):
		return "heic/avif/mp4"
	case bytes.HasPrefix(b, []byte("BM")):
		return "bmp"
	case bytes.HasPrefix(b, []byte("II*\x00")), bytes.HasPrefix(b, []byte("MM\x00*")):
		return "tiff"
	case bytes.HasPrefix(b, []byte("%PDF")):
		return "pdf"
	}
	return ""
}

// Precheck reads an image's header from r (size bytes long, as storage reported it) and
// decides, before any paid call, whether the API may see it: JPEG or PNG, a decodable
// header, both sides within [MinSide, MaxSide], at most MaxBytes, and (for images read
// whole) an intact end. A failure matches ErrInvalidImage and says why; any other error
// is a read error of r.
func Precheck(r io.Reader, size int64, cfg PrecheckConfig) (*Checked, error) {
	cfg.applyDefaults()
	switch {
	case size == 0:
		return nil, invalid("empty file (0 bytes)")
	case size > cfg.MaxBytes:
		return nil, invalid("%d bytes is over the size cap of %d bytes", size, cfg.MaxBytes)
	}

	whole := size > 0 && size <= cfg.WholeMax
	var buf *bytes.Buffer
	release := func() {}
	if whole {
		buf = wholePool.Get().(*bytes.Buffer)
		buf.Reset()
		release = func() {
			if buf.Cap() <= int(cfg.WholeMax)+bytes.MinRead {
				wholePool.Put(buf)
			}
		}
		buf.Grow(int(size) + bytes.MinRead)
		// One byte past the size tells us the object grew under us.
		if _, err := buf.ReadFrom(io.LimitReader(r, size+1)); err != nil {
			release()
			return nil, err
		}
		if int64(buf.Len()) != size {
			release()
			if int64(buf.Len()) < size {
				return nil, fmt.Errorf("read %d of %d bytes: %w", buf.Len(), size, io.ErrUnexpectedEOF)
			}
			return nil, fmt.Errorf("object is longer than the %d bytes storage reported", size)
		}
		info, err := checkHeader(bytes.NewReader(buf.Bytes()), cfg)
		if err == nil {
			err = checkEnd(info.Format, buf.Bytes())
		}
		if err != nil {
			release()
			return nil, err
		}
		info.Bytes = size
		return &Checked{ImageInfo: info, Body: bytes.NewReader(buf.Bytes()), release: release}, nil
	}

	// Streamed: remember the header bytes the decoder consumed, then replay them before
	// the rest of the stream.
	rec := &recordingReader{r: r, max: cfg.HeaderMax}
	info, err := checkHeader(rec, cfg)
	if err != nil {
		if rec.err != nil { // a read error of the source, not a bad image
			return nil, rec.err
		}
		return nil, err
	}
	info.Bytes = size
	body := io.MultiReader(bytes.NewReader(rec.buf), r)
	return &Checked{ImageInfo: info, Body: &endCheckReader{r: body, format: info.Format}}, nil
}

// checkHeader decodes the format and dimensions from the header alone.
func checkHeader(r io.Reader, cfg PrecheckConfig) (ImageInfo, error) {
	var magic [12]byte
	n, err := io.ReadFull(r, magic[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		if errors.Is(err, errHeaderTooLong) {
			return ImageInfo{}, invalid("header longer than %d bytes", cfg.HeaderMax)
		}
		if errors.Is(err, io.EOF) {
			return ImageInfo{}, invalid("empty file")
		}
		return ImageInfo{}, err
	}
	format := sniff(magic[:n])
	var decode func(io.Reader) (image.Config, error)
	var ctype string
	switch format {
	case "jpeg":
		decode, ctype = jpeg.DecodeConfig, "image/jpeg"
	case "png":
		decode, ctype = png.DecodeConfig, "image/png"
	case "":
		return ImageInfo{}, invalid("not an image: unrecognised format (only JPEG and PNG are accepted)")
	default:
		return ImageInfo{}, invalid("unsupported format %s (only JPEG and PNG are accepted)", format)
	}
	ic, err := decode(io.MultiReader(bytes.NewReader(magic[:n]), r))
	if err != nil {
		if errors.Is(err, errHeaderTooLong) {
			return ImageInfo{}, invalid("%s header longer than %d bytes", format, cfg.HeaderMax)
		}
		var rerr *sourceError
		if errors.As(err, &rerr) {
			return ImageInfo{}, rerr.err
		}
		return ImageInfo{}, invalid("undecodable %s header: %v", format, err)
	}
	info := ImageInfo{Format: format, ContentType: ctype, Width: ic.Width, Height: ic.Height}
	if ic.Width < cfg.MinSide || ic.Height < cfg.MinSide || ic.Width > cfg.MaxSide || ic.Height > cfg.MaxSide {
		return ImageInfo{}, invalid("%dx%d px: both sides must be within %d..%d px", ic.Width, ic.Height, cfg.MinSide, cfg.MaxSide)
	}
	info.LowResolution = min(ic.Width, ic.Height) < cfg.LowResolutionSide
	return info, nil
}

// checkEnd verifies that a whole image ends as its format requires: a truncated upload
// is caught before it is paid for. A few trailing bytes after the end marker are allowed.
func checkEnd(format string, b []byte) error {
	tail := b[max(0, len(b)-64):]
	switch format {
	case "jpeg":
		if !bytes.Contains(tail, []byte{0xFF, 0xD9}) {
			return invalid("truncated JPEG: no end-of-image marker")
		}
	case "png":
		if !bytes.Contains(tail, []byte("IEND\xAE\x42\x60\x82")) {
			return invalid("truncated PNG: no IEND chunk")
		}
	}
	return nil
}

var errHeaderTooLong = errors.New("header too long")

// sourceError carries a read error of the underlying object through the image decoder.
type sourceError struct{ err error }

func (e *sourceError) Error() string { return e.err.Error() }

// recordingReader keeps what it reads, up to max bytes.
type recordingReader struct {
	r   io.Reader
	buf []byte
	max int
	err error // a read error of r (not EOF)
}

func (rr *recordingReader) Read(p []byte) (int, error) {
	if len(rr.buf) >= rr.max {
		return 0, errHeaderTooLong
	}
	if len(p) > rr.max-len(rr.buf) {
		p = p[:rr.max-len(rr.buf)]
	}
	n, err := rr.r.Read(p)
	rr.buf = append(rr.buf, p[:n]...)
	if err != nil && err != io.EOF {
		rr.err = err
		return n, &sourceError{err}
	}
	return n, err
}

// endCheckReader passes a streamed image through and fails at its end when the format's
// end marker is missing, which aborts the upload before the API can process it.
type endCheckReader struct {
	r      io.Reader
	format string
	tail   [64]byte
	n      int // bytes in tail (≤ 64)
}

func (e *endCheckReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if n > 0 {
		if n >= len(e.tail) {
			e.n = copy(e.tail[:], p[n-len(e.tail):n])
		} else {
			keep := min(e.n, len(e.tail)-n)
			copy(e.tail[:], e.tail[e.n-keep:e.n])
			e.n = keep + copy(e.tail[keep:], p[:n])
		}
	}
	if err == io.EOF {
		if cerr := checkEnd(e.format, e.tail[:e.n]); cerr != nil {
			return n, cerr
		}
	}
	return n, err
}
