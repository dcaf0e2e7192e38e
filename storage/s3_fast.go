package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	smithyauth "github.com/aws/smithy-go/auth"
	"github.com/aws/smithy-go/encoding/httpbinding"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// s3Fast makes the two requests on a worker's hot path, GetObject and a single-request
// PutObject, as plain HTTP requests signed with the SDK's SigV4 signer, without the SDK's
// per-request middleware stack. That stack is rebuilt for every call (about 390
// allocations and, on the bench machine, half the client CPU of a 100 KB GET); the
// requests sent are the same: the endpoint comes from the SDK's own endpoint resolution
// for the bucket, done once, and the signature from its signer.
//
// It is only used when that resolution gives a plain SigV4 endpoint (no FIPS, dual-stack,
// accelerate or S3 Express options); otherwise every call goes through the SDK.
type s3Fast struct {
	base    url.URL // the bucket's endpoint: https://bucket.s3.region.amazonaws.com, http://host:port/bucket
	rawBase string  // base's escaped path, without a trailing '/'
	service string  // signing name, "s3"
	region  string  // signing region
	creds   aws.CredentialsProvider
	http    *http.Client
	signer  *v4.Signer
}

// Fast-path request limits and retries (the SDK's standard retryer makes 3 attempts).
const (
	fastMaxAttempts  = 3
	fastRetryBase    = 25 * time.Millisecond
	fastMaxErrorBody = 64 << 10
	// fastPutInMemory is the largest PutObject body read into memory first (results are
	// a few KB); larger ones are streamed, read twice: once to sign, once to send.
	fastPutInMemory = 64 << 10
	// emptySHA256 is the SHA-256 of an empty payload, in hex.
	emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
)

// newS3Fast returns the fast path for bucket with the client's options, or nil when the
// bucket's endpoint needs more than SigV4 on a fixed URL.
func newS3Fast(ctx context.Context, bucket string, o s3.Options, hc *http.Client) *s3Fast {
	switch {
	case o.Credentials == nil, hc == nil, o.UseAccelerate,
		o.EndpointOptions.UseFIPSEndpoint == aws.FIPSEndpointStateEnabled,
		o.EndpointOptions.UseDualStackEndpoint == aws.DualStackEndpointStateEnabled:
		return nil
	}
	params := s3.EndpointParameters{
		Bucket:         aws.String(bucket),
		Region:         aws.String(o.Region),
		Endpoint:       o.BaseEndpoint,
		ForcePathStyle: aws.Bool(o.UsePathStyle),
		UseFIPS:        aws.Bool(false),
		UseDualStack:   aws.Bool(false),
		Accelerate:     aws.Bool(false),
	}
	ep, err := s3.NewDefaultEndpointResolverV2().ResolveEndpoint(ctx, params)
	if err != nil || len(ep.Headers) > 0 || ep.URI.RawQuery != "" || ep.URI.Host == "" {
		return nil
	}
	opts, _ := smithyauth.GetAuthOptions(&ep.Properties)
	// The endpoint rules name the scheme "sigv4" (smithy's ID is aws.auth#sigv4).
	if len(opts) == 0 || (opts[0].SchemeID != "sigv4" && opts[0].SchemeID != smithyauth.SchemeIDSigV4) {
		return nil
	}
	name, _ := smithyhttp.GetSigV4SigningName(&opts[0].SignerProperties)
	region, _ := smithyhttp.GetSigV4SigningRegion(&opts[0].SignerProperties)
	if dd, ok := smithyhttp.GetDisableDoubleEncoding(&opts[0].SignerProperties); ok && !dd {
		return nil // S3 never double-encodes; anything else is not plain S3
	}
	if name == "" {
		name = "s3"
	}
	if region == "" {
		region = o.Region
	}
	f := &s3Fast{
		base:    ep.URI,
		rawBase: strings.TrimSuffix(ep.URI.EscapedPath(), "/"),
		service: name,
		region:  region,
		creds:   o.Credentials,
		http:    hc,
		signer:  v4.NewSigner(func(so *v4.SignerOptions) { so.DisableURIPathEscaping = true }),
	}
	f.base.Path = strings.TrimSuffix(f.base.Path, "/")
	f.base.RawPath = ""
	return f
}

// url returns the URL of key: S3 escapes every byte but the unreserved ones and '/'.
func (f *s3Fast) url(key string) *url.URL {
	u := f.base
	u.Path = f.base.Path + "/" + key
	u.RawPath = f.rawBase + "/" + httpbinding.EscapePath(key, false)
	return &u
}

// fastAPIError is an S3 error answer: it offers what s3Driver.translate reads of an SDK
// error (the code, the message and the HTTP status).
type fastAPIError struct {
	status        int
	code, message string
}

func (e *fastAPIError) Error() string {
	return fmt.Sprintf("api error %s: %s (HTTP %d)", e.code, e.message, e.status)
}
func (e *fastAPIError) ErrorCode() string    { return e.code }
func (e *fastAPIError) ErrorMessage() string { return e.message }
func (e *fastAPIError) HTTPStatusCode() int  { return e.status }
func (e *fastAPIError) ErrorFault() smithy.ErrorFault {
	if e.status >= 500 {
		return smithy.FaultServer
	}
	return smithy.FaultClient
}

var _ smithy.APIError = (*fastAPIError)(nil)

// attemptBody is one attempt's request body. The transport may still read a body after
// Do returns (it closes it, maybe from another goroutine, when done): the next attempt
// waits for that close before it rewinds the shared content.
type attemptBody struct {
	r      io.Reader
	closed chan struct{}
	once   sync.Once
}

func newAttemptBody(r io.Reader) *attemptBody { return &attemptBody{r: r, closed: make(chan struct{})} }

func (b *attemptBody) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *attemptBody) Close() error {
	b.once.Do(func() { close(b.closed) })
	return nil
}

// apiError reads an S3 error answer (an XML <Error> with Code and Message; a HEAD or 304
// has none) and closes its body.
func apiError(resp *http.Response) error {
	defer resp.Body.Close()
	e := &fastAPIError{status: resp.StatusCode}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, fastMaxErrorBody))
	var body struct {
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	}
	if len(bytes.TrimSpace(b)) > 0 && xml.Unmarshal(b, &body) == nil {
		e.code, e.message = body.Code, body.Message
	}
	if e.code == "" && resp.StatusCode == http.StatusNotModified {
		e.code = "PreconditionFailed"
	}
	return e
}

// retryable reports whether a failed attempt may be made again: a transport error, or
// an answer S3 asks to retry (500, 502, 503 SlowDown, 504).
func retryable(resp *http.Response, err error) bool {
	if err != nil {
		return true
	}
	switch resp.StatusCode {
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// do signs and sends a request for key, made by newBody (nil: no body) for each attempt,
// retrying transport errors and 5xx answers. A non-2xx final answer is returned as an
// error (its body read and closed).
func (f *s3Fast) do(ctx context.Context, method, key string, header http.Header, payloadHash string, size int64, newBody func() (io.Reader, error)) (*http.Response, error) {
	var lastErr error
	var prev *attemptBody
	for attempt := range fastMaxAttempts {
		if prev != nil {
			select {
			case <-prev.closed:
			case <-time.After(10 * time.Second):
				return nil, fmt.Errorf("%w (the transport kept the request body; not retried)", lastErr)
			}
		}
		if attempt > 0 {
			d := time.Duration(rand.Int64N(int64(fastRetryBase) << attempt))
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
		}
		req := &http.Request{
			Method:     method,
			URL:        f.url(key),
			Proto:      "HTTP/1.1",
			ProtoMajor: 1,
			ProtoMinor: 1,
			Header:     make(http.Header, len(header)+6),
			Host:       f.base.Host,
		}
		req = req.WithContext(ctx)
		for k, v := range header {
			req.Header[k] = v
		}
		// No transparent gzip: sizes and bytes are the object's own.
		req.Header.Set("Accept-Encoding", "identity")
		req.Header.Set("X-Amz-Content-Sha256", payloadHash)
		if newBody != nil {
			req.ContentLength = size
			req.Body = http.NoBody
			if size > 0 {
				body, err := newBody()
				if err != nil {
					return nil, err
				}
				if br, ok := body.(*bytes.Reader); ok {
					prev, req.Body = nil, io.NopCloser(br) // the transport knows it is in memory
				} else {
					prev = newAttemptBody(body)
					req.Body = prev
				}
			}
		}
		creds, err := f.creds.Retrieve(ctx)
		if err != nil {
			return nil, fmt.Errorf("retrieve credentials: %w", err)
		}
		if err := f.signer.SignHTTP(ctx, creds, req, payloadHash, f.service, f.region, time.Now().UTC()); err != nil {
			return nil, fmt.Errorf("sign request: %w", err)
		}
		resp, err := f.http.Do(req)
		if err == nil && resp.StatusCode >= 200 && resp.StatusCode < 300 {
			return resp, nil
		}
		if ctx.Err() != nil {
			if resp != nil {
				resp.Body.Close()
			}
			return nil, ctx.Err()
		}
		if !retryable(resp, err) || attempt == fastMaxAttempts-1 {
			if err != nil {
				return nil, err
			}
			return nil, apiError(resp)
		}
		if resp != nil {
			lastErr = apiError(resp)
		} else {
			lastErr = err
		}
	}
	return nil, lastErr
}

// get is GetObject.
func (f *s3Fast) get(ctx context.Context, key string, opts GetOptions) (*http.Response, error) {
	var h http.Header
	if opts.IfMatch != "" {
		h = http.Header{"If-Match": {`"` + opts.IfMatch + `"`}}
	}
	return f.do(ctx, http.MethodGet, key, h, emptySHA256, 0, nil)
}

// put is a single-request PutObject of the n bytes of body from its current position,
// its payload signed (SHA-256) so that a cut transfer cannot be stored.
func (f *s3Fast) put(ctx context.Context, key string, body io.ReadSeeker, n int64, contentType string) error {
	var sum string
	var newBody func() (io.Reader, error)
	if n <= fastPutInMemory {
		// Read once, hashed and sent from memory: each attempt gets a reader of its own,
		// and the transport sends headers and body in one write.
		b := make([]byte, n)
		if _, err := io.ReadFull(&ctxReader{ctx: ctx, r: body}, b); err != nil {
			return fmt.Errorf("read content: %w", err)
		}
		s := sha256.Sum256(b)
		sum = hex.EncodeToString(s[:])
		newBody = func() (io.Reader, error) { return bytes.NewReader(b), nil }
	} else {
		start, err := body.Seek(0, io.SeekCurrent)
		if err != nil {
			return err
		}
		h := sha256.New()
		if _, err := io.Copy(h, io.LimitReader(&ctxReader{ctx: ctx, r: body}, n)); err != nil {
			return fmt.Errorf("read content: %w", err)
		}
		sum = hex.EncodeToString(h.Sum(nil))
		newBody = func() (io.Reader, error) {
			if _, err := body.Seek(start, io.SeekStart); err != nil {
				return nil, err
			}
			return &exactReader{r: body, left: n}, nil
		}
	}
	resp, err := f.do(ctx, http.MethodPut, key, http.Header{"Content-Type": {contentType}}, sum, n, newBody)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, fastMaxErrorBody))
	return resp.Body.Close()
}

// attrsOf makes Attributes from a GetObject answer's headers.
func (d *s3Driver) attrsOf(key string, resp *http.Response) Attributes {
	var size *int64
	if resp.ContentLength >= 0 {
		size = &resp.ContentLength
	} else if v := resp.Header.Get("Content-Length"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			size = &n
		}
	}
	etag, ctype := resp.Header.Get("ETag"), resp.Header.Get("Content-Type")
	var mod *time.Time
	if t, err := http.ParseTime(resp.Header.Get("Last-Modified")); err == nil {
		mod = &t
	}
	return d.attrs(key, size, &etag, &ctype, mod)
}
