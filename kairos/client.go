package kairos

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// Limits on what the client reads from an answer.
const (
	// maxSuccessBody caps a 200 body; the documented one is a few hundred bytes.
	maxSuccessBody = 1 << 20
	// maxErrorBody caps what is read of an error body to find its message.
	maxErrorBody = 64 << 10
	// maxPooledBuf is the largest read buffer returned to the pool.
	maxPooledBuf = 64 << 10
)

// Client calls the Kairos liveness-verification API. It is safe for concurrent use.
type Client struct {
	cfg  Config // defaults applied, validated
	url  *url.URL
	http *http.Client

	boundary string
	tail     string   // closing delimiter for boundary
	ctype    []string // Content-Type value; header value slices are shared, read-only, cap == len
	idName   string
	keyName  string
	idVal    []string
	keyVal   []string
	ua       []string
}

// New returns a Client for cfg after applying the documented defaults. It returns an
// error (never containing the app key) for a missing credential, a bad BaseURL, an
// invalid HeaderStyle or a negative Timeout.
func New(cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	u, _ := url.Parse(cfg.BaseURL) // validated above
	var hc http.Client
	if cfg.HTTPClient != nil {
		hc = *cfg.HTTPClient
	} else {
		hc.Transport = defaultTransport(cfg.MaxConns)
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	var rnd [24]byte
	_, _ = rand.Read(rnd[:]) // crypto/rand.Read never fails
	boundary := hex.EncodeToString(rnd[:])

	c := &Client{
		cfg:      cfg,
		url:      u,
		http:     &hc,
		boundary: boundary,
		tail:     closingDelimiter(boundary),
		ctype:    []string{"multipart/form-data; boundary=" + boundary},
		idName:   "app-id",
		keyName:  "app-key",
		idVal:    []string{cfg.AppID},
		keyVal:   []string{cfg.AppKey},
		ua:       []string{cfg.UserAgent},
	}
	if cfg.HeaderStyle == HeaderUnderscore {
		c.idName, c.keyName = "app_id", "app_key"
	}
	return c, nil
}

// defaultTransport is http.DefaultTransport keeping maxConns connections to the API
// open between calls, with a 256 KiB write buffer: a request with a selfie of up to
// ~250 KB (most are) leaves in one write, a larger one in 256 KiB pieces.
func defaultTransport(maxConns int) http.RoundTripper {
	t, ok := http.DefaultTransport.(*http.Transport)
	if !ok {
		return http.DefaultTransport
	}
	t = t.Clone()
	t.MaxIdleConns = max(256, maxConns)
	t.MaxIdleConnsPerHost = maxConns
	t.WriteBufferSize = 256 << 10
	// The socket's send buffer must hold the write too: it starts at 16 KiB
	// (tcp_wmem), which splits a 100 KB request into 7 system calls.
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetWriteBuffer(t.WriteBufferSize) // a hint: the kernel may cap it
		}
		return c, err
	}
	return t
}

// Verify sends one selfie with threshold and returns the API's verdict. The body is
// streamed from s.Body with an exact Content-Length; only an image already in memory
// (see [Selfie]) is copied, to leave in one write.
//
// It returns ErrInvalidThreshold (threshold NaN or outside [0, 1]) or ErrInvalidSelfie
// before any request. Otherwise the error is an *APIError for an answer (see the
// sentinels), or wraps ErrTransport or ErrSelfieRead. A 200 with zero faces is a Result
// with empty Faces and Live false, not an error. Verify honours ctx and Config.Timeout.
func (c *Client) Verify(ctx context.Context, s Selfie, threshold float64) (*Result, error) {
	if math.IsNaN(threshold) || threshold < 0 || threshold > 1 {
		return nil, fmt.Errorf("%w: got %v", ErrInvalidThreshold, threshold)
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()

	body := newMultipartBody(c.boundary, c.tail, s, threshold)
	defer body.detach() // runs last: the transport may not touch s.Body after Verify
	var reqBody io.ReadCloser = body
	if f := body.frame(); f != nil {
		// Known to be in memory, the transport sends headers and body in one write.
		reqBody = io.NopCloser(bytes.NewReader(f.b))
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteRequest: f.written})
	}
	h := make(http.Header, 4)
	h["Content-Type"] = c.ctype
	h["User-Agent"] = c.ua
	h[c.idName] = c.idVal
	h[c.keyName] = c.keyVal
	req := (&http.Request{
		Method:        http.MethodPost,
		URL:           c.url,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          reqBody,
		ContentLength: body.Len(),
		Host:          c.url.Host,
	}).WithContext(ctx)

	start := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		if rerr := body.readErr(); rerr != nil {
			return nil, fmt.Errorf("kairos: upload %q: %w", s.fileName(), rerr)
		}
		return nil, fmt.Errorf("%w: %w", ErrTransport, err)
	}
	defer resp.Body.Close()
	rid := resp.Header.Get("X-Request-ID")
	if rerr := body.readErr(); rerr != nil {
		// The answer is about a truncated upload, not about the image.
		return nil, fmt.Errorf("kairos: upload %q (answered %d, request id %q): %w", s.fileName(), resp.StatusCode, rid, rerr)
	}

	if resp.StatusCode != http.StatusOK {
		bp, _, _ := readBody(resp.Body, maxErrorBody)
		msg := errorMessage(*bp, c.cfg.AppKey)
		putBuf(bp)
		return nil, &APIError{
			StatusCode: resp.StatusCode,
			RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
			Message:    msg,
			RequestID:  rid,
			kind:       classify(resp.StatusCode),
		}
	}

	bp, tooBig, err := readBody(resp.Body, maxSuccessBody)
	defer putBuf(bp)
	if err != nil {
		if rerr := body.readErr(); rerr != nil {
			return nil, fmt.Errorf("kairos: upload %q: %w", s.fileName(), rerr)
		}
		return nil, fmt.Errorf("%w: reading the answer (request id %q): %w", ErrTransport, rid, err)
	}
	if tooBig {
		return nil, &APIError{StatusCode: resp.StatusCode, RequestID: rid, kind: ErrBadResponse,
			Message: "body larger than " + strconv.Itoa(maxSuccessBody) + " bytes"}
	}
	res, err := parseResponse(*bp, threshold)
	if err != nil {
		var ae *APIError
		if errors.As(err, &ae) {
			ae.RequestID = rid
		}
		return nil, err
	}
	res.RequestID = rid
	res.StatusCode = resp.StatusCode
	res.Latency = time.Since(start)
	return res, nil
}

// bufPool recycles answer buffers.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func putBuf(bp *[]byte) {
	if cap(*bp) <= maxPooledBuf {
		*bp = (*bp)[:0]
		bufPool.Put(bp)
	}
}

// readBody reads r into a pooled buffer, up to limit bytes. tooBig reports that r held
// more than limit bytes (the buffer then holds the first limit+1).
func readBody(r io.Reader, limit int) (bp *[]byte, tooBig bool, err error) {
	bp = bufPool.Get().(*[]byte)
	b := (*bp)[:0]
	defer func() { *bp = b }()
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, rerr := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if len(b) > limit {
			b = b[:limit+1]
			return bp, true, nil
		}
		if rerr == io.EOF {
			return bp, false, nil
		}
		if rerr != nil {
			return bp, false, rerr
		}
	}
}
