package storage_test

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/livenessq/livenessq/internal/testenv"
	"github.com/livenessq/livenessq/storage"
)

func TestS3WrongCredentials(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := testenv.S3Server(t)
	good := newS3Bucket(t)
	require.NoError(t, good.Put(ctx, "k.jpg", strings.NewReader("x"), nil))
	t.Logf("against versitygw at %s, bucket %s", srv.Endpoint, good.Name())

	for _, tc := range []struct {
		desc           string
		access, secret string
	}{
		{desc: "wrong secret (SignatureDoesNotMatch)", access: srv.AccessKey, secret: "wrong-secret-7f3a9c1e5b"},
		{desc: "unknown access key (InvalidAccessKeyId)", access: "no-such-access-key", secret: "other-wrong-secret-2d8e4f6a"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			cfg := s3Config(srv, good.Name())
			cfg.CreateBucket = false
			cfg.AccessKey, cfg.SecretKey = tc.access, tc.secret
			b, err := storage.NewS3(ctx, cfg)
			require.NoError(t, err, "NewS3 makes no request without CreateBucket")
			defer b.Close()

			check := func(op string, err error) {
				t.Helper()
				require.ErrorIs(t, err, storage.ErrAccessDenied, op)
				require.NotErrorIs(t, err, storage.ErrNotFound, op)
				msg := err.Error()
				require.Contains(t, msg, good.Name(), "%s: the error names the bucket", op)
				require.NotContains(t, msg, tc.secret, "%s: the error shows the secret", op)
				require.NotContains(t, msg, srv.SecretKey, "%s: the error shows the real secret", op)
				t.Logf("%s: %v", op, err)
			}
			_, err = b.Get(ctx, "k.jpg", nil)
			check("Get", err)
			_, err = b.Stat(ctx, "k.jpg")
			check("Stat", err)
			check("Put", b.Put(ctx, "new.jpg", strings.NewReader("y"), nil))
			check("Delete", b.Delete(ctx, "k.jpg"))
			for _, err := range b.List(ctx, "") {
				check("List", err)
			}

			cfg.CreateBucket = true
			_, err = storage.NewS3(ctx, cfg)
			check("NewS3 with CreateBucket", err)
		})
	}
	// Nothing changed.
	_, err := good.Stat(ctx, "k.jpg")
	require.NoError(t, err)
}

func TestS3MissingBucket(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := testenv.S3Server(t)
	cfg := s3Config(srv, testenv.BucketName(t))
	cfg.CreateBucket = false
	b, err := storage.NewS3(ctx, cfg)
	require.NoError(t, err)
	defer b.Close()
	_, err = b.Get(ctx, "k.jpg", nil)
	require.ErrorIs(t, err, storage.ErrBucketNotFound)
	require.NotErrorIs(t, err, storage.ErrNotFound, "a missing bucket is not a missing object")
	require.Contains(t, err.Error(), cfg.Bucket)
	require.ErrorIs(t, b.Put(ctx, "k.jpg", strings.NewReader("x"), nil), storage.ErrBucketNotFound)
	require.ErrorIs(t, b.Delete(ctx, "k.jpg"), storage.ErrBucketNotFound)
}

// TestS3FastPath checks the URLs of the fast path (GetObject and PutObject without the
// SDK's middleware): the endpoint the SDK resolves for the bucket, and S3's escaping of
// the key (every byte but A-Z a-z 0-9 - . _ ~ and '/').
func TestS3FastPath(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		desc string
		cfg  storage.S3Config
		key  string
		want string
	}{
		{desc: "path style, custom endpoint", key: "a b/c+d%e.jpg",
			cfg:  storage.S3Config{Bucket: "bkt", Endpoint: "http://127.0.0.1:9000", Region: "us-east-1", PathStyle: true, AccessKey: "a", SecretKey: "s"},
			want: "http://127.0.0.1:9000/bkt/a%20b/c%2Bd%25e.jpg"},
		{desc: "AWS, virtual host", key: "ünï/x.jpg",
			cfg:  storage.S3Config{Bucket: "my-bucket", Region: "eu-west-1", AccessKey: "a", SecretKey: "s"},
			want: "https://my-bucket.s3.eu-west-1.amazonaws.com/%C3%BCn%C3%AF/x.jpg"},
		{desc: "prefix", key: "k.jpg",
			cfg:  storage.S3Config{Bucket: "bkt", Prefix: "p/q", Endpoint: "http://h:1", Region: "r", PathStyle: true, AccessKey: "a", SecretKey: "s"},
			want: "http://h:1/bkt/p/q/k.jpg"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			b, err := storage.NewS3(ctx, tc.cfg)
			require.NoError(t, err)
			defer b.Close()
			r, err := b.Sub("").Get(ctx, tc.key, nil) // no server: only the URL matters
			if err == nil {
				r.Close()
			}
			require.Equal(t, tc.want, storage.FastPathURL(b, fullKey(tc.cfg.Prefix, tc.key)))
		})
	}
}

// fullKey joins a Bucket's prefix and a key as the driver sees them.
func fullKey(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return strings.TrimSuffix(prefix, "/") + "/" + key
}

// countingTransport counts the ListObjectsV2 requests that go through it.
type countingTransport struct {
	base  http.RoundTripper
	lists atomic.Int32
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodGet && r.URL.Query().Get("list-type") == "2" {
		c.lists.Add(1)
	}
	return c.base.RoundTrip(r)
}

func TestS3ListPages(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := testenv.S3Server(t)
	tr := &countingTransport{base: http.DefaultTransport.(*http.Transport).Clone()}
	t.Cleanup(tr.base.(*http.Transport).CloseIdleConnections)
	cfg := s3Config(srv, testenv.BucketName(t))
	cfg.HTTPClient = &http.Client{Transport: tr}
	b, err := storage.NewS3(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { b.Close(); removeBucket(t, srv, cfg.Bucket) })
	storage.SetListPageSize(b, 10)

	for i := range 35 {
		require.NoError(t, b.Put(ctx, fmt.Sprintf("p/%02d", i), strings.NewReader("x"), nil))
	}
	tr.lists.Store(0)
	n := 0
	for a, err := range b.List(ctx, "p/") {
		require.NoError(t, err)
		require.Equal(t, fmt.Sprintf("p/%02d", n), a.Key)
		n++
	}
	require.Equal(t, 35, n)
	require.Equal(t, int32(4), tr.lists.Load(), "35 keys at 10 a page take 4 requests")

	// Stopping after the first page fetches no more than the page prefetched meanwhile
	// (whose request is cancelled).
	tr.lists.Store(0)
	for range b.List(ctx, "p/") {
		break
	}
	require.LessOrEqual(t, tr.lists.Load(), int32(2))
}

// tlsProxy serves HTTPS in front of the test S3 server, keeping the Host header so that
// signatures still match; it returns its URL and the PEM file of its certificate.
func tlsProxy(t *testing.T, srv testenv.S3) (string, string) {
	t.Helper()
	target, err := url.Parse(srv.Endpoint)
	require.NoError(t, err)
	upstream := http.DefaultTransport.(*http.Transport).Clone()
	proxy := httptest.NewUnstartedServer(&httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = r.In.Host
		},
		Transport: upstream,
	})
	proxy.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusted client's handshake errors
	proxy.StartTLS()
	t.Cleanup(func() {
		proxy.Close()
		upstream.CloseIdleConnections()
	})
	pemPath := filepath.Join(t.TempDir(), "ca.pem")
	block := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: proxy.Certificate().Raw})
	require.NoError(t, os.WriteFile(pemPath, block, 0o600))
	return proxy.URL, pemPath
}

func TestS3CABundle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := testenv.S3Server(t)
	endpoint, caFile := tlsProxy(t, srv)
	t.Logf("HTTPS proxy %s in front of versitygw at %s", endpoint, srv.Endpoint)

	cfg := s3Config(srv, testenv.BucketName(t))
	cfg.Endpoint = endpoint
	cfg.CABundle = caFile
	b, err := storage.NewS3(ctx, cfg)
	require.NoError(t, err, "HTTPS with the CA bundle")
	t.Cleanup(func() { b.Close(); removeBucket(t, srv, cfg.Bucket) })
	require.NoError(t, b.Put(ctx, "tls.txt", strings.NewReader("over https"), nil))
	r, err := b.Get(ctx, "tls.txt", nil)
	require.NoError(t, err)
	data, err := io.ReadAll(r)
	r.Close()
	require.NoError(t, err)
	require.Equal(t, "over https", string(data))
	require.Contains(t, b.URL(), "endpoint=https://127.0.0.1:")
	require.NotContains(t, b.URL(), "ca_bundle", "the URL names the location, not how to trust it")

	// Without the bundle the server's certificate is not trusted.
	cfg.CABundle = ""
	cfg.CreateBucket = false
	untrusted, err := storage.NewS3(ctx, cfg)
	require.NoError(t, err)
	defer untrusted.Close()
	_, err = untrusted.Stat(ctx, "tls.txt")
	require.Error(t, err)
	require.NotErrorIs(t, err, storage.ErrNotFound)
	require.Contains(t, err.Error(), "certificate")
	var tlsErr *tls.CertificateVerificationError
	require.False(t, errors.As(err, &tlsErr), "no transport error type leaks through")

	// OpenURL's ca_bundle parameter opens the same storage (no request is made: the
	// default chain has no credentials in this test).
	u := fmt.Sprintf("s3://%s?endpoint=%s&region=%s&path_style=true&ca_bundle=%s",
		cfg.Bucket, endpoint, srv.Region, url.QueryEscape(caFile))
	viaURL, err := storage.OpenURL(ctx, u)
	require.NoError(t, err)
	defer viaURL.Close()
	require.Equal(t, b.URL(), viaURL.URL())
}

func TestNewS3Config(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("hello"), 0o600))
	base := storage.S3Config{Bucket: "photos", Region: "us-east-1", AccessKey: "ak", SecretKey: "sk-secret-value"}
	for _, tc := range []struct {
		desc    string
		edit    func(*storage.S3Config)
		wantErr string // "" for success
		wantURL string
	}{
		{desc: "minimal", edit: func(*storage.S3Config) {}, wantURL: "s3://photos?region=us-east-1"},
		{desc: "all location fields", edit: func(c *storage.S3Config) {
			c.Prefix, c.Endpoint, c.PathStyle, c.Region = "2024/", "HTTP://Minio.Local:9000/", true, "eu-west-1"
		}, wantURL: "s3://photos/2024?endpoint=http://minio.local:9000&region=eu-west-1&path_style=true"},
		{desc: "empty bucket", edit: func(c *storage.S3Config) { c.Bucket = "" }, wantErr: "bucket name is empty"},
		{desc: "upper-case bucket", edit: func(c *storage.S3Config) { c.Bucket = "Photos" }, wantErr: "lowercase"},
		{desc: "bucket too short", edit: func(c *storage.S3Config) { c.Bucket = "ab" }, wantErr: "3 to 63"},
		{desc: "bucket ends with a dash", edit: func(c *storage.S3Config) { c.Bucket = "abc-" }, wantErr: "start and end"},
		{desc: "endpoint without scheme", edit: func(c *storage.S3Config) { c.Endpoint = "127.0.0.1:9000" }, wantErr: "endpoint"},
		{desc: "endpoint ftp", edit: func(c *storage.S3Config) { c.Endpoint = "ftp://host" }, wantErr: "http:// or https://"},
		{desc: "endpoint with credentials", edit: func(c *storage.S3Config) { c.Endpoint = "http://u:p@host" }, wantErr: "credentials"},
		{desc: "access key without secret", edit: func(c *storage.S3Config) { c.SecretKey = "" }, wantErr: "both AccessKey and SecretKey"},
		{desc: "secret without access key", edit: func(c *storage.S3Config) { c.AccessKey = "" }, wantErr: "both AccessKey and SecretKey"},
		{desc: "CA bundle missing", edit: func(c *storage.S3Config) { c.CABundle = filepath.Join(dir, "nope.pem") }, wantErr: "read CA bundle"},
		{desc: "CA bundle not PEM", edit: func(c *storage.S3Config) { c.CABundle = notPEM }, wantErr: "no PEM certificate"},
		{desc: "CA bundle with HTTPClient", edit: func(c *storage.S3Config) { c.CABundle, c.HTTPClient = notPEM, http.DefaultClient }, wantErr: "cannot be combined"},
	} {
		cfg := base
		tc.edit(&cfg)
		b, err := storage.NewS3(context.Background(), cfg)
		if tc.wantErr != "" {
			require.ErrorContains(t, err, tc.wantErr, tc.desc)
			require.NotContains(t, err.Error(), "sk-secret-value", tc.desc)
			continue
		}
		require.NoError(t, err, tc.desc)
		require.Equal(t, tc.wantURL, b.URL(), tc.desc)
		require.NotContains(t, b.URL(), "sk-secret-value", tc.desc)
		require.Equal(t, "photos", b.Name(), tc.desc)
		require.NoError(t, b.Close(), tc.desc)
	}
}

// isolateAWS points the SDK's default chain at empty shared files, so that a test
// depends only on the variables it sets. Tests that call it must not run in parallel.
func isolateAWS(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, v := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
		"AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ROLE_ARN",
		"AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI"} {
		t.Setenv(v, "")
		os.Unsetenv(v)
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	return dir
}

// TestS3DefaultChainEnv opens an s3 URL with credentials and region from the environment.
// It does not run in parallel: it sets environment variables.
func TestS3DefaultChainEnv(t *testing.T) {
	ctx := context.Background()
	srv := testenv.S3Server(t)
	isolateAWS(t)
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	t.Setenv("AWS_REGION", srv.Region)
	name := testenv.BucketName(t)
	b, err := storage.OpenURL(ctx, fmt.Sprintf("s3://%s/photos?endpoint=%s&path_style=true&create_bucket=true", name, srv.Endpoint))
	require.NoError(t, err)
	t.Cleanup(func() { b.Close(); removeBucket(t, srv, name) })
	want := fmt.Sprintf("s3://%s/photos?endpoint=%s&region=%s&path_style=true", name, srv.Endpoint, srv.Region)
	require.Equal(t, want, b.URL(), "the region comes from AWS_REGION")
	require.NoError(t, b.Put(ctx, "a b.jpg", strings.NewReader("env"), nil))

	// The URL reopens the same storage.
	again, err := storage.OpenURL(ctx, b.URL())
	require.NoError(t, err)
	defer again.Close()
	require.Equal(t, b.URL(), again.URL())
	r, err := again.Get(ctx, "a b.jpg", nil)
	require.NoError(t, err)
	data, _ := io.ReadAll(r)
	r.Close()
	require.Equal(t, "env", string(data))

	// The prefix is part of the key in the whole bucket.
	whole, err := storage.OpenURL(ctx, fmt.Sprintf("s3://%s?endpoint=%s&path_style=true", name, srv.Endpoint))
	require.NoError(t, err)
	defer whole.Close()
	a, err := whole.Stat(ctx, "photos/a b.jpg")
	require.NoError(t, err)
	require.Equal(t, "photos/a b.jpg", a.Key)
}

// TestS3DefaultChainProfile uses credentials and region from a named profile in the
// shared files. It does not run in parallel: it sets environment variables.
func TestS3DefaultChainProfile(t *testing.T) {
	ctx := context.Background()
	srv := testenv.S3Server(t)
	dir := isolateAWS(t)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "credentials"), fmt.Appendf(nil,
		"[livenessq-test]\naws_access_key_id = %s\naws_secret_access_key = %s\n", srv.AccessKey, srv.SecretKey), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config"), fmt.Appendf(nil,
		"[profile livenessq-test]\nregion = %s\n", srv.Region), 0o600))
	t.Setenv("AWS_PROFILE", "livenessq-test")
	name := testenv.BucketName(t)
	b, err := storage.OpenURL(ctx, fmt.Sprintf("s3://%s?endpoint=%s&path_style=true&create_bucket=true", name, srv.Endpoint))
	require.NoError(t, err)
	t.Cleanup(func() { b.Close(); removeBucket(t, srv, name) })
	require.Contains(t, b.URL(), "region="+srv.Region)
	require.NoError(t, b.Put(ctx, "k", strings.NewReader("profile"), nil))
	_, err = b.Stat(ctx, "k")
	require.NoError(t, err)

	// A profile that does not exist is a clear error.
	t.Setenv("AWS_PROFILE", "no-such-profile")
	_, err = storage.OpenURL(ctx, fmt.Sprintf("s3://%s?endpoint=%s&path_style=true", name, srv.Endpoint))
	require.ErrorContains(t, err, "no-such-profile")
}
