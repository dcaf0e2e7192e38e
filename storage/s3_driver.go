package storage

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// S3Config configures a Bucket over an S3 bucket (NewS3).
type S3Config struct {
	// Bucket is the bucket's name: 3 to 63 lowercase letters, digits, '.' and '-'.
	// Required.
	Bucket string
	// Prefix roots the Bucket at a key prefix ("photos/2024"): keys are relative to it. A
	// "/" is added when missing. Default "": the whole bucket.
	Prefix string
	// Endpoint is the base URL of the S3 server, "http(s)://host[:port]", for
	// S3-compatible servers. Default "": AWS S3's endpoint for Region.
	Endpoint string
	// Region is the region requests are signed for. Default: the SDK's default chain
	// (AWS_REGION, the profile's region), else "us-east-1".
	Region string
	// PathStyle addresses the bucket as endpoint/bucket/key rather than
	// bucket.endpoint/key; most S3-compatible servers need it. Default false.
	PathStyle bool
	// AccessKey and SecretKey are explicit static credentials; set both or neither.
	// Default: the SDK's default chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY,
	// AWS_PROFILE with the shared config and credentials files, web identity, container
	// and instance roles). The secret never appears in an error, a log or URL().
	AccessKey string
	SecretKey string
	// CABundle is the path of a PEM file of CA certificates to trust for HTTPS, in
	// addition to the system's. Default "": the system's roots only. It cannot be
	// combined with HTTPClient (configure that client's TLS instead).
	CABundle string
	// HTTPClient sends the requests. Default: a client of the Bucket's own, on a clone of
	// http.DefaultTransport (proxies from the environment), whose idle connections Close
	// releases. A client given here is not closed.
	HTTPClient *http.Client
	// CreateBucket makes NewS3 create the bucket when it does not exist (one you already
	// own is fine). Default false: the bucket is not checked or created.
	CreateBucket bool
}

// defaultListPageSize is the number of keys asked for per ListObjectsV2 request (S3's
// maximum).
const defaultListPageSize = 1000

// unknownSizeBuffer is how much of a content of unknown size Put keeps in memory before
// spooling it to a temporary file.
const unknownSizeBuffer = 64 << 10

// NewS3 returns a Bucket over an S3 bucket, after checking cfg and applying its
// defaults. It makes no request unless cfg.CreateBucket is set.
//
// S3 errors are translated: NoSuchKey (or a 404 without a code, as HEAD gives) is
// ErrNotFound, NoSuchBucket ErrBucketNotFound, AccessDenied, InvalidAccessKeyId,
// SignatureDoesNotMatch, versitygw's XAdminUserNotFound or any 403 ErrAccessDenied, a
// failed IfMatch ErrChanged; the message names the bucket and keeps the server's code and
// message. The SDK's optional request and response checksums are off (WhenRequired), as
// many S3-compatible servers reject them.
//
// Put keeps objects whole even on servers that store a truncated body when a connection
// drops: a seekable content goes in one PutObject with a signed payload; a content of
// known size that cannot seek streams through a multipart upload (unsigned parts of up to
// 5 GiB), completed only once all of it has gone; a content of unknown size is spooled
// to a temporary file first. Memory stays flat in every case.
func NewS3(ctx context.Context, cfg S3Config) (*Bucket, error) {
	d, err := newS3Driver(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if cfg.CreateBucket {
		if err := d.createBucket(ctx); err != nil {
			d.close()
			return nil, err
		}
	}
	return newBucket(d, cfg.Prefix), nil
}

// s3Driver stores objects in one S3 bucket.
type s3Driver struct {
	client    *s3.Client
	bucket    string
	endpoint  string // canonical, "" for AWS
	region    string
	pathStyle bool
	secret    string       // explicit secret, scrubbed from error texts
	ownHTTP   *http.Client // the client NewS3 made, closed by close
	pageSize  int32
	fast      *s3Fast // GetObject and PutObject without the SDK's middleware; nil: use the SDK
}

var _ driver = (*s3Driver)(nil)

func newS3Driver(ctx context.Context, cfg S3Config) (*s3Driver, error) {
	if err := checkBucketName(cfg.Bucket); err != nil {
		return nil, err
	}
	endpoint, err := canonicalEndpoint(cfg.Endpoint)
	if err != nil {
		return nil, err
	}
	if (cfg.AccessKey == "") != (cfg.SecretKey == "") {
		return nil, errors.New("storage: s3: set both AccessKey and SecretKey, or neither (to use the SDK's default chain)")
	}
	if cfg.CABundle != "" && cfg.HTTPClient != nil {
		return nil, errors.New("storage: s3: CABundle cannot be combined with HTTPClient; configure the client's TLS instead")
	}
	d := &s3Driver{
		bucket:    cfg.Bucket,
		endpoint:  endpoint,
		pathStyle: cfg.PathStyle,
		secret:    cfg.SecretKey,
		pageSize:  defaultListPageSize,
	}
	httpClient := cfg.HTTPClient
	if httpClient == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		// A worker holds up to two connections per task (the selfie being read, the
		// result being written): idle ones are kept for that many (up to --concurrency
		// 512) rather than closed and dialled again. Only connections once needed are
		// kept, each with 4 KiB buffers, and not past 90 s idle.
		tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 2048, 1024
		pool, err := rootCAs(cfg.CABundle)
		if err != nil {
			return nil, err
		}
		if pool != nil {
			tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
		httpClient = &http.Client{Transport: tr}
		d.ownHTTP = httpClient
	}
	// The SDK's own HTTP client (it honours AWS_CA_BUNDLE) serves the credential
	// providers; S3 requests go through httpClient.
	opts := []func(*config.LoadOptions) error{
		config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
	}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	if cfg.AccessKey != "" {
		opts = append(opts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, "")))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		d.close()
		return nil, fmt.Errorf("storage: s3 bucket %q: load AWS configuration: %s", cfg.Bucket, d.scrub(err.Error()))
	}
	if awsCfg.Region == "" {
		awsCfg.Region = "us-east-1"
	}
	d.region = awsCfg.Region
	d.client = s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
		o.UsePathStyle = cfg.PathStyle
		o.HTTPClient = httpClient
	})
	d.fast = newS3Fast(ctx, d.bucket, d.client.Options(), httpClient)
	return d, nil
}

// checkBucketName applies S3's naming rules, so that a typo fails early and clearly.
func checkBucketName(name string) error {
	if name == "" {
		return errors.New("storage: s3: bucket name is empty")
	}
	if len(name) < 3 || len(name) > 63 {
		return fmt.Errorf("storage: s3: bucket name %q must be 3 to 63 characters long", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-') {
			return fmt.Errorf("storage: s3: bucket name %q may hold only lowercase letters, digits, '.' and '-' (found %q)", name, r)
		}
	}
	if !isAlnum(name[0]) || !isAlnum(name[len(name)-1]) {
		return fmt.Errorf("storage: s3: bucket name %q must start and end with a letter or digit", name)
	}
	return nil
}

func isAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// canonicalEndpoint checks an endpoint URL and returns it in one canonical form:
// lowercase scheme and host, no trailing "/".
func canonicalEndpoint(raw string) (string, error) {
	if raw == "" {
		return "", nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", fmt.Errorf("storage: s3: endpoint is not a URL: %v", err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("storage: s3: endpoint %q must start with http:// or https://", u.Redacted())
	case u.Host == "":
		return "", fmt.Errorf("storage: s3: endpoint %q has no host", u.Redacted())
	case u.User != nil:
		return "", errors.New("storage: s3: endpoint must not carry credentials")
	case u.RawQuery != "" || u.Fragment != "":
		return "", fmt.Errorf("storage: s3: endpoint %q must not have a query or fragment", u.Redacted())
	}
	u.Scheme = strings.ToLower(u.Scheme)
	u.Host = strings.ToLower(u.Host)
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u.String(), nil
}

// rootCAs returns the system's roots plus the certificates of AWS_CA_BUNDLE (as the
// SDK's default client would) and of bundle, or nil when neither is set.
func rootCAs(bundle string) (*x509.CertPool, error) {
	env := os.Getenv("AWS_CA_BUNDLE")
	if bundle == "" && env == "" {
		return nil, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	for _, f := range []struct{ what, path string }{{"AWS_CA_BUNDLE", env}, {"CA bundle", bundle}} {
		if f.path == "" {
			continue
		}
		certs, err := loadPEM(f.path)
		if err != nil {
			return nil, fmt.Errorf("storage: s3: %s: %w", f.what, err)
		}
		for _, c := range certs {
			pool.AddCert(c)
		}
	}
	return pool, nil
}

// pemCache keeps the certificates of the PEM files read, by path, size and modification
// time: a bundle of the system's size takes a noticeable time to parse, and every NewS3
// needs it.
var pemCache sync.Map // pemKey → []*x509.Certificate

type pemKey struct {
	path string
	size int64
	mod  time.Time
}

// loadPEM returns the certificates of a PEM file, failing when it holds none.
func loadPEM(path string) ([]*x509.Certificate, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read CA bundle: %w", err)
	}
	key := pemKey{path: path, size: fi.Size(), mod: fi.ModTime()}
	if certs, ok := pemCache.Load(key); ok {
		return certs.([]*x509.Certificate), nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CA bundle: %w", err)
	}
	var certs []*x509.Certificate
	for len(data) > 0 {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" || len(block.Headers) != 0 {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			continue // as x509.CertPool.AppendCertsFromPEM does
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("CA bundle %q holds no PEM certificate", path)
	}
	pemCache.Store(key, certs)
	return certs, nil
}

// scrub removes the explicit secret from a provider's message, should it ever echo it.
func (d *s3Driver) scrub(s string) string {
	if d.secret == "" {
		return s
	}
	return strings.ReplaceAll(s, d.secret, "[redacted]")
}

// translate turns an SDK error into one of ours: the sentinel it means (wrapped), the
// provider's code and message as text, and no SDK type in the chain.
func (d *s3Driver) translate(ctx context.Context, op, key string, err error) error {
	where := fmt.Sprintf("storage: %s %q in s3 bucket %q", op, key, d.bucket)
	if op == "create bucket" {
		where = fmt.Sprintf("storage: create s3 bucket %q", d.bucket)
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%s: %w", where, cerr)
	}
	var (
		code, msg string
		status    int
	)
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		code, msg = apiErr.ErrorCode(), apiErr.ErrorMessage()
	}
	var respErr interface{ HTTPStatusCode() int }
	if errors.As(err, &respErr) {
		status = respErr.HTTPStatusCode()
	}
	var detail string
	switch {
	case code != "" && msg != "":
		detail = code + ": " + msg
	case code != "":
		detail = code
	default:
		detail = err.Error()
	}
	if status != 0 && code != "" {
		detail = fmt.Sprintf("%s (HTTP %d)", detail, status)
	}
	detail = d.scrub(detail)

	var sentinel error
	switch {
	case code == "NoSuchBucket":
		sentinel = ErrBucketNotFound
	case code == "AccessDenied" || code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch" ||
		code == "Forbidden" || code == "AllAccessDisabled" || code == "InvalidToken" ||
		code == "ExpiredToken" || code == "XAdminUserNotFound" || status == http.StatusForbidden:
		// versitygw answers an unknown access key with 404 XAdminUserNotFound.
		sentinel = ErrAccessDenied
	case code == "NoSuchKey" || code == "NotFound" || (code == "" && status == http.StatusNotFound):
		sentinel = ErrNotFound
	case code == "PreconditionFailed" || status == http.StatusPreconditionFailed:
		sentinel = ErrChanged
	}
	if sentinel != nil {
		return fmt.Errorf("%s: %w: %s", where, sentinel, detail)
	}
	return fmt.Errorf("%s: %s", where, detail)
}

func (d *s3Driver) createBucket(ctx context.Context) error {
	if _, err := d.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(d.bucket)}); err == nil {
		return nil
	}
	in := &s3.CreateBucketInput{Bucket: aws.String(d.bucket)}
	if d.region != "us-east-1" {
		in.CreateBucketConfiguration = &types.CreateBucketConfiguration{
			LocationConstraint: types.BucketLocationConstraint(d.region),
		}
	}
	_, err := d.client.CreateBucket(ctx, in)
	var owned *types.BucketAlreadyOwnedByYou
	if err == nil || errors.As(err, &owned) {
		return nil
	}
	return d.translate(ctx, "create bucket", "", err)
}

func (d *s3Driver) get(ctx context.Context, key string, opts GetOptions) (*Reader, error) {
	return d.getObject(ctx, "get", key, opts)
}

// getObject is get, with op naming the operation in errors.
func (d *s3Driver) getObject(ctx context.Context, op, key string, opts GetOptions) (*Reader, error) {
	if d.fast != nil {
		resp, err := d.fast.get(ctx, key, opts)
		if err != nil {
			return nil, d.translate(ctx, op, key, err)
		}
		return &Reader{ReadCloser: resp.Body, Attributes: d.attrsOf(key, resp)}, nil
	}
	in := &s3.GetObjectInput{Bucket: aws.String(d.bucket), Key: aws.String(key)}
	if opts.IfMatch != "" {
		in.IfMatch = aws.String(`"` + opts.IfMatch + `"`)
	}
	out, err := d.client.GetObject(ctx, in)
	if err != nil {
		return nil, d.translate(ctx, op, key, err)
	}
	return &Reader{
		ReadCloser: out.Body,
		Attributes: d.attrs(key, out.ContentLength, out.ETag, out.ContentType, out.LastModified),
	}, nil
}

func (d *s3Driver) stat(ctx context.Context, key string) (Attributes, error) {
	out, err := d.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(d.bucket), Key: aws.String(key)})
	if err != nil {
		terr := d.translate(ctx, "stat", key, err)
		if !errors.Is(terr, ErrNotFound) {
			return Attributes{}, terr
		}
		// A HEAD response has no body, so its 404 does not say what is missing: the key,
		// the bucket, or (on versitygw) the access key. GET's error body does.
		r, err := d.getObject(ctx, "stat", key, GetOptions{})
		if err != nil {
			return Attributes{}, err
		}
		r.Close()
		return r.Attributes, nil
	}
	return d.attrs(key, out.ContentLength, out.ETag, out.ContentType, out.LastModified), nil
}

// attrs makes Attributes from a response's fields.
func (d *s3Driver) attrs(key string, size *int64, etag, contentType *string, mod *time.Time) Attributes {
	a := Attributes{
		Key:         key,
		Size:        aws.ToInt64(size),
		ETag:        strings.Trim(aws.ToString(etag), `"`),
		ContentType: aws.ToString(contentType),
		ModTime:     aws.ToTime(mod).UTC(),
	}
	if size == nil {
		a.Size = -1
	}
	if a.ContentType == "" {
		a.ContentType = guessContentType(key)
	}
	return a
}

// put picks the upload that keeps Put atomic even on servers that store a truncated body
// when a connection drops (versitygw 1.8 does):
//   - a seekable content goes in one PutObject whose payload is signed (SHA-256), so a
//     cut transfer cannot match the signature;
//   - a content of known size that cannot seek streams through a multipart upload, whose
//     object exists only once the upload is completed (it is aborted on any error);
//   - a content of unknown size is spooled (memory up to 64 KiB, then a temporary file),
//     then sent as a seekable content.
func (d *s3Driver) put(ctx context.Context, key string, r io.Reader, opts PutOptions) error {
	if rs, ok := r.(io.ReadSeeker); ok {
		if n, err := remaining(rs); err == nil {
			if opts.Size > 0 && n != opts.Size {
				return fmt.Errorf("storage: put %q in s3 bucket %q: content is %d bytes, not the %d given as its size",
					key, d.bucket, n, opts.Size)
			}
			return d.putObject(ctx, key, rs, n, opts.ContentType)
		}
	}
	if opts.Size > 0 {
		return d.putMultipart(ctx, key, r, opts.Size, opts.ContentType)
	}
	body, n, cleanup, err := spool(ctx, r)
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("storage: put %q in s3 bucket %q: %w", key, d.bucket, cerr)
		}
		return fmt.Errorf("storage: put %q in s3 bucket %q: %w", key, d.bucket, err)
	}
	defer cleanup()
	return d.putObject(ctx, key, body, n, opts.ContentType)
}

// remaining returns the bytes left in rs from its current position.
func remaining(rs io.ReadSeeker) (int64, error) {
	cur, err := rs.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, err
	}
	end, err := rs.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	if _, err := rs.Seek(cur, io.SeekStart); err != nil {
		return 0, err
	}
	return end - cur, nil
}

// putObject sends a seekable content of n bytes in one signed PutObject.
func (d *s3Driver) putObject(ctx context.Context, key string, body io.ReadSeeker, n int64, contentType string) error {
	if d.fast != nil {
		if err := d.fast.put(ctx, key, body, n, contentType); err != nil {
			return d.translate(ctx, "put", key, err)
		}
		return nil
	}
	_, err := d.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        aws.String(d.bucket),
		Key:           aws.String(key),
		Body:          body,
		ContentLength: aws.Int64(n),
		ContentType:   aws.String(contentType),
	})
	if err != nil {
		return d.translate(ctx, "put", key, err)
	}
	return nil
}

// maxPartSize is the largest part S3 accepts; maxObjectSize the largest object.
const (
	maxPartSize   = 5 << 30
	maxObjectSize = 5 << 40
)

// putMultipart streams exactly size bytes of r through a multipart upload, in parts of
// up to 5 GiB sent with an unsigned payload. The object appears only when the upload
// completes; any failure aborts it.
func (d *s3Driver) putMultipart(ctx context.Context, key string, r io.Reader, size int64, contentType string) error {
	if size > maxObjectSize {
		return fmt.Errorf("storage: put %q in s3 bucket %q: %d bytes is more than S3's 5 TiB limit", key, d.bucket, size)
	}
	created, err := d.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket:      aws.String(d.bucket),
		Key:         aws.String(key),
		ContentType: aws.String(contentType),
	})
	if err != nil {
		return d.translate(ctx, "put", key, err)
	}
	completed := false
	defer func() {
		if completed {
			return
		}
		// Abort even when ctx has ended, so that the server drops the parts.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		d.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{
			Bucket: aws.String(d.bucket), Key: aws.String(key), UploadId: created.UploadId,
		})
	}()
	src := &ctxReader{ctx: ctx, r: r}
	var parts []types.CompletedPart
	for num, left := int32(1), size; left > 0; num++ {
		body := &exactReader{r: src, left: min(left, maxPartSize)}
		n := body.left
		out, err := d.client.UploadPart(ctx, &s3.UploadPartInput{
			Bucket:        aws.String(d.bucket),
			Key:           aws.String(key),
			UploadId:      created.UploadId,
			PartNumber:    aws.Int32(num),
			Body:          body,
			ContentLength: aws.Int64(n),
		}, s3.WithAPIOptions(v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware))
		if body.short {
			return fmt.Errorf("storage: put %q in s3 bucket %q: content is %d bytes, shorter than the %d given as its size",
				key, d.bucket, size-left+n-body.left, size)
		}
		if err != nil {
			return d.translate(ctx, "put", key, err)
		}
		parts = append(parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(num)})
		left -= n
	}
	// The content must end where its size says.
	var one [1]byte
	if n, _ := io.ReadFull(src, one[:]); n > 0 {
		return fmt.Errorf("storage: put %q in s3 bucket %q: content is longer than the %d bytes given as its size",
			key, d.bucket, size)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storage: put %q in s3 bucket %q: %w", key, d.bucket, err)
	}
	_, err = d.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket:          aws.String(d.bucket),
		Key:             aws.String(key),
		UploadId:        created.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil {
		return d.translate(ctx, "put", key, err)
	}
	completed = true
	return nil
}

// exactReader gives exactly left bytes of r, and fails (rather than end) when r ends
// sooner, so that an HTTP request never sends a short body as if it were whole.
type exactReader struct {
	r     io.Reader
	left  int64
	short bool
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if err == io.EOF {
		if e.left > 0 {
			e.short = true
			return n, io.ErrUnexpectedEOF
		}
		err = nil
	}
	return n, err
}

// spool reads r to its end and returns a seekable copy of it with its length: in memory
// up to unknownSizeBuffer bytes, else in a temporary file that cleanup removes.
func spool(ctx context.Context, r io.Reader) (io.ReadSeeker, int64, func(), error) {
	buf := make([]byte, unknownSizeBuffer)
	n, err := io.ReadFull(&ctxReader{ctx: ctx, r: r}, buf)
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		return bytes.NewReader(buf[:n]), int64(n), func() {}, nil
	case err != nil:
		return nil, 0, nil, fmt.Errorf("read content: %w", err)
	}
	f, err := os.CreateTemp("", "livenessq-put-*")
	if err != nil {
		return nil, 0, nil, fmt.Errorf("spool content: %w", err)
	}
	cleanup := func() {
		f.Close()
		os.Remove(f.Name())
	}
	if _, err := f.Write(buf); err != nil {
		cleanup()
		return nil, 0, nil, fmt.Errorf("spool content: %w", err)
	}
	rest, err := io.Copy(f, &ctxReader{ctx: ctx, r: r})
	if err != nil {
		cleanup()
		return nil, 0, nil, fmt.Errorf("spool content: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		cleanup()
		return nil, 0, nil, fmt.Errorf("spool content: %w", err)
	}
	return f, int64(len(buf)) + rest, cleanup, nil
}

// list streams the keys under prefix a page at a time, fetching the next page while the
// caller consumes the current one, so that a caller doing work per key (an enqueue) does
// not wait for the listing between pages. At most two pages are held.
func (d *s3Driver) list(ctx context.Context, prefix string) iter.Seq2[Attributes, error] {
	return func(yield func(Attributes, error) bool) {
		pages := d.listPages(prefix, "")
		lctx, cancel := context.WithCancel(ctx)
		type result struct {
			page *s3.ListObjectsV2Output
			err  error
		}
		next := make(chan result, 1)
		inFlight := false
		fetch := func() {
			if !pages.HasMorePages() {
				return
			}
			inFlight = true
			go func() {
				p, err := pages.NextPage(lctx)
				next <- result{p, err}
			}()
		}
		defer func() {
			// Stop a prefetch the caller no longer wants, and wait for it: no request
			// outlives the loop.
			cancel()
			if inFlight {
				<-next
			}
		}()
		fetch()
		for inFlight {
			r := <-next
			inFlight = false
			if r.err != nil {
				yield(Attributes{}, d.translate(ctx, "list prefix", prefix, r.err))
				return
			}
			fetch()
			for _, o := range r.page.Contents {
				if !yield(listedAttributes(o), nil) {
					return
				}
			}
		}
	}
}

// listPages returns a paginator over the keys starting with prefix ("" for all), grouped
// at delimiter when it is not empty.
func (d *s3Driver) listPages(prefix, delimiter string) *s3.ListObjectsV2Paginator {
	in := &s3.ListObjectsV2Input{Bucket: aws.String(d.bucket), MaxKeys: aws.Int32(d.pageSize)}
	if prefix != "" {
		in.Prefix = aws.String(prefix)
	}
	if delimiter != "" {
		in.Delimiter = aws.String(delimiter)
	}
	return s3.NewListObjectsV2Paginator(d.client, in)
}

// listedAttributes returns the attributes a listing gives of an object.
func listedAttributes(o types.Object) Attributes {
	return Attributes{
		Key:     aws.ToString(o.Key),
		Size:    aws.ToInt64(o.Size),
		ETag:    strings.Trim(aws.ToString(o.ETag), `"`),
		ModTime: aws.ToTime(o.LastModified).UTC(),
	}
}

// listLevel lists one level under prefix with the '/' delimiter: the objects directly
// under it and its sub-prefixes, merged in key order page by page (each page of S3's
// answer covers a contiguous range of keys).
func (d *s3Driver) listLevel(ctx context.Context, prefix string) iter.Seq2[levelEntry, error] {
	return func(yield func(levelEntry, error) bool) {
		pages := d.listPages(prefix, "/")
		for pages.HasMorePages() {
			page, err := pages.NextPage(ctx)
			if err != nil {
				yield(levelEntry{}, d.translate(ctx, "list prefix", prefix, err))
				return
			}
			objs, subs := page.Contents, page.CommonPrefixes
			for len(objs) > 0 || len(subs) > 0 {
				var e levelEntry
				if len(subs) == 0 || (len(objs) > 0 && aws.ToString(objs[0].Key) < aws.ToString(subs[0].Prefix)) {
					e.Attributes = listedAttributes(objs[0])
					objs = objs[1:]
				} else {
					e.Prefix = aws.ToString(subs[0].Prefix)
					subs = subs[1:]
				}
				if !yield(e, nil) {
					return
				}
			}
		}
	}
}

func (d *s3Driver) delete(ctx context.Context, key string) error {
	_, err := d.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(d.bucket), Key: aws.String(key)})
	if err != nil {
		err = d.translate(ctx, "delete", key, err)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return err
	}
	return nil
}

func (d *s3Driver) location(prefix string) string {
	u := url.URL{Scheme: "s3", Host: d.bucket}
	if p := strings.TrimSuffix(prefix, "/"); p != "" {
		u.Path = "/" + p
	}
	var q []string
	if d.endpoint != "" {
		q = append(q, "endpoint="+queryEscape(d.endpoint))
	}
	q = append(q, "region="+queryEscape(d.region))
	if d.pathStyle {
		q = append(q, "path_style=true")
	}
	return u.String() + "?" + strings.Join(q, "&")
}

// queryEscape escapes a query value, leaving ':' and '/' readable.
func queryEscape(v string) string {
	return strings.NewReplacer("%3A", ":", "%2F", "/").Replace(url.QueryEscape(v))
}

func (d *s3Driver) name() string { return d.bucket }

func (d *s3Driver) close() error {
	if d.ownHTTP != nil {
		d.ownHTTP.CloseIdleConnections()
	}
	return nil
}
