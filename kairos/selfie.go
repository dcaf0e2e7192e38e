package kairos

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http/httptrace"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Selfie is one image to verify. Verify streams Body; it never reads more than Size bytes
// plus one (to detect a body longer than announced) and never holds the image in memory,
// unless Body already holds it: a *bytes.Reader with exactly Size bytes left, for a
// request of at most 256 KiB, is copied into one pooled buffer with its multipart
// framing, so that the request leaves in one system call rather than one per 32 KiB.
type Selfie struct {
	// Name is the object's name; only its base name (after the last '/') is sent, as the
	// file name of the multipart part, with control characters replaced by '_'.
	// Default "selfie".
	Name string
	// ContentType is the image's real media type (image/jpeg, image/png). Default
	// application/octet-stream.
	ContentType string
	// Size is the exact number of bytes Body yields. Required (>= 0): it fixes the
	// request's Content-Length.
	Size int64
	// Body yields the image. Verify does not close it.
	Body io.Reader
}

// fileName returns the base name sent as the part's filename.
func (s Selfie) fileName() string {
	name := s.Name
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	if name == "" || name == "." || name == ".." {
		return "selfie"
	}
	if !validHeaderValue(name) {
		name = strings.Map(func(r rune) rune {
			if r < ' ' || r == 0x7f {
				return '_'
			}
			return r
		}, name)
	}
	return name
}

func (s Selfie) contentType() string {
	if s.ContentType == "" {
		return "application/octet-stream"
	}
	return s.ContentType
}

// validate reports why s cannot be sent, wrapping ErrInvalidSelfie.
func (s Selfie) validate() error {
	switch {
	case s.Body == nil:
		return fmt.Errorf("%w: Body is nil", ErrInvalidSelfie)
	case s.Size < 0:
		return fmt.Errorf("%w: Size %d is negative", ErrInvalidSelfie, s.Size)
	case !validHeaderValue(s.ContentType) || strings.ContainsAny(s.ContentType, "\t"):
		return fmt.Errorf("%w: content type has control characters", ErrInvalidSelfie)
	}
	return nil
}

// quoteEscaper escapes a multipart parameter value the way mime/multipart does: \ and "
// with a backslash, CR and LF percent-encoded.
var quoteEscaper = strings.NewReplacer("\\", "\\\\", `"`, "\\\"", "\r", "%0D", "\n", "%0A")

// multipartBody streams a multipart/form-data body with two parts, "threshold" then
// "selfie", around the selfie's reader: head, then exactly size image bytes, then tail.
// Its length is known before the first byte is read (Len). It records the first selfie
// read error so that Verify can tell it from a transport failure.
//
// The transport may still read a request body after Do returns (it closes it
// asynchronously). Verify calls detach before returning; from then on Read never touches
// the caller's reader again, so the caller may close or reuse it at once.
type multipartBody struct {
	head   []byte
	left   int64   // image bytes still to read
	probed bool    // the extra-byte check after the image was done
	probe  [1]byte // its buffer (a field, so that it does not escape per call)
	tail   string
	size   int64 // total length

	mu       sync.Mutex // guards img, err, detached
	img      io.Reader
	err      error // first selfie read error, wraps ErrSelfieRead
	detached bool
}

// errDetached is returned by Read after Verify has returned.
var errDetached = errors.New("kairos: request finished")

// newMultipartBody frames s with the given boundary and threshold; tail must be
// closingDelimiter(boundary). The framing matches what mime/multipart.Writer produces for
// the same two fields.
func newMultipartBody(boundary, tail string, s Selfie, threshold float64) *multipartBody {
	name := quoteEscaper.Replace(s.fileName())
	ct := s.contentType()
	h := make([]byte, 0, 2*len(boundary)+len(name)+len(ct)+150)
	h = append(h, "--"...)
	h = append(h, boundary...)
	h = append(h, "\r\nContent-Disposition: form-data; name=\"threshold\"\r\n\r\n"...)
	h = strconv.AppendFloat(h, threshold, 'f', -1, 64)
	h = append(h, "\r\n--"...)
	h = append(h, boundary...)
	h = append(h, "\r\nContent-Disposition: form-data; name=\"selfie\"; filename=\""...)
	h = append(h, name...)
	h = append(h, "\"\r\nContent-Type: "...)
	h = append(h, ct...)
	h = append(h, "\r\n\r\n"...)
	return &multipartBody{
		head: h,
		img:  s.Body,
		left: s.Size,
		tail: tail,
		size: int64(len(h)) + s.Size + int64(len(tail)),
	}
}

// Len is the exact number of bytes Read yields in all.
func (b *multipartBody) Len() int64 { return b.size }

// Read implements io.Reader.
func (b *multipartBody) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(b.head) > 0 {
		n := copy(p, b.head)
		b.head = b.head[n:]
		return n, nil
	}
	if b.left > 0 || !b.probed {
		n, err := b.readImage(p)
		if n > 0 || err != nil || b.left > 0 {
			return n, err
		}
		// The image is complete and ends at Size: on to the tail.
	}
	if len(b.tail) > 0 {
		n := copy(p, b.tail)
		b.tail = b.tail[n:]
		return n, nil
	}
	return 0, io.EOF
}

// readImage reads the next image bytes, then checks that the image ends at Size.
func (b *multipartBody) readImage(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.detached {
		return 0, errDetached
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.left > 0 {
		if int64(len(p)) > b.left {
			p = p[:b.left]
		}
		n, err := b.img.Read(p)
		b.left -= int64(n)
		switch {
		case err == io.EOF && b.left > 0:
			b.err = fmt.Errorf("%w: %d bytes short of Selfie.Size: %w", ErrSelfieRead, b.left, io.ErrUnexpectedEOF)
			return n, b.err
		case err != nil && err != io.EOF:
			b.err = fmt.Errorf("%w: %w", ErrSelfieRead, err)
			return n, b.err
		}
		return n, nil
	}
	b.probed = true
	n, err := io.ReadFull(b.img, b.probe[:])
	switch {
	case n > 0:
		b.err = fmt.Errorf("%w: longer than Selfie.Size", ErrSelfieRead)
	case err != nil && err != io.EOF && err != io.ErrUnexpectedEOF:
		b.err = fmt.Errorf("%w: %w", ErrSelfieRead, err)
	}
	return 0, b.err
}

// Close implements io.Closer for the transport; the selfie's reader is the caller's.
func (b *multipartBody) Close() error { return nil }

// detach stops all further reads of the selfie's reader. It waits for a read in progress.
func (b *multipartBody) detach() {
	b.mu.Lock()
	b.detached = true
	b.mu.Unlock()
}

// readErr returns the first selfie read error, or nil.
func (b *multipartBody) readErr() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// maxFrame is the largest request framed in memory: the transport's write buffer.
const maxFrame = 256 << 10

var framePool = sync.Pool{New: func() any { return new(frame) }}

// frame is a whole request body in one buffer, back to framePool once written.
type frame struct {
	b    []byte
	done atomic.Bool
}

// written is the request's httptrace.WroteRequest hook: the transport is done with the
// body, so its buffer can serve another request. A request that is never written leaves
// its buffer to the garbage collector.
func (f *frame) written(httptrace.WroteRequestInfo) {
	if f.done.CompareAndSwap(false, true) {
		framePool.Put(f)
	}
}

// frame copies the body into a pooled buffer when the selfie is a *bytes.Reader holding
// exactly its announced size and the whole fits maxFrame; nil otherwise, or when the
// body has been read from already.
func (b *multipartBody) frame() *frame {
	r, ok := b.img.(*bytes.Reader)
	if !ok || int64(r.Len()) != b.left || b.size > maxFrame || b.probed {
		return nil
	}
	f := framePool.Get().(*frame)
	f.done.Store(false)
	f.b = append(slices.Grow(f.b[:0], int(b.size)), b.head...)
	n := len(f.b)
	f.b = f.b[:n+int(b.left)]
	_, _ = io.ReadFull(r, f.b[n:]) // cannot fail: r holds b.left bytes
	f.b = append(f.b, b.tail...)
	b.head, b.left, b.probed, b.tail = nil, 0, true, ""
	return f
}

// closingDelimiter returns the framing after the image: the end of the selfie part and
// the final boundary.
func closingDelimiter(boundary string) string {
	return "\r\n--" + boundary + "--\r\n"
}
