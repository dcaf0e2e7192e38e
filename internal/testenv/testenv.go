// Package testenv finds the real services (Redis, an S3-compatible server) that the
// project's test script starts, and hands them to tests.
//
// scripts/test.sh starts redis-server and versitygw on free loopback ports, exports their
// addresses in LIVENESSQ_TEST_* variables and sets LIVENESSQ_TEST_REQUIRE_SERVICES=1.
// Under that script a missing service fails the test; under a bare `go test` it skips
// the test with a message saying how to run it.
package testenv

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/redis/go-redis/v9"
)

// Environment variables exported by scripts/test.sh.
const (
	EnvRequire     = "LIVENESSQ_TEST_REQUIRE_SERVICES"
	EnvRedisAddr   = "LIVENESSQ_TEST_REDIS_ADDR"
	EnvRedisServer = "LIVENESSQ_TEST_REDIS_SERVER" // path of the redis-server binary
	EnvS3Endpoint  = "LIVENESSQ_TEST_S3_ENDPOINT"
	EnvS3AccessKey = "LIVENESSQ_TEST_S3_ACCESS_KEY"
	EnvS3SecretKey = "LIVENESSQ_TEST_S3_SECRET_KEY"
	EnvS3Region    = "LIVENESSQ_TEST_S3_REGION"
	EnvVersityGW   = "LIVENESSQ_TEST_VERSITYGW" // path of the versitygw binary
)

// Redis DB indexes, one per package that uses Redis, so that `go test ./...`, which runs
// packages in parallel, never lets one package's FLUSHDB wipe another's state.
const (
	DBResults = 1
	DBEnqueue = 2
	DBWorker  = 3
	DBCommand = 4
	DBFaults  = 5
	DBServe   = 6
	DBBudget  = 7
)

// Required reports whether the test script set the services up, so that a missing one
// must fail the test rather than skip it.
func Required() bool { return os.Getenv(EnvRequire) != "" }

// missing fails or skips t for a service that is not there.
func missing(t testing.TB, what string) {
	t.Helper()
	if Required() {
		t.Fatalf("%s: %s is set but the service is missing or not answering", what, EnvRequire)
	}
	t.Skipf("%s not available: run `make test` (scripts/test.sh) to start the real services", what)
}

// RedisAddr returns the address (host:port) of the test Redis, or skips/fails t.
func RedisAddr(t testing.TB) string {
	t.Helper()
	addr := os.Getenv(EnvRedisAddr)
	if addr == "" {
		missing(t, "Redis ("+EnvRedisAddr+")")
	}
	return addr
}

// Redis returns a client on database db of the test Redis, flushed, and closed when the
// test ends. Tests that call it must not run in parallel with each other.
func Redis(t testing.TB, db int) *redis.Client {
	t.Helper()
	addr := RedisAddr(t)
	c := redis.NewClient(&redis.Options{Addr: addr, DB: db})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.FlushDB(ctx).Err(); err != nil {
		c.Close()
		missing(t, fmt.Sprintf("Redis at %s (%v)", addr, err))
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// S3 describes the test S3-compatible server.
type S3 struct {
	Endpoint  string // http://127.0.0.1:PORT
	AccessKey string
	SecretKey string
	Region    string
}

// Client returns an AWS SDK client of this server, for tests that go around the storage
// package, and a function that closes its idle connections (kept alive by the server,
// they would outlive the test).
func (s S3) Client() (*s3.Client, func()) {
	tr := &http.Transport{}
	c := s3.New(s3.Options{
		Region:       s.Region,
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
		HTTPClient:   &http.Client{Transport: tr},
	})
	return c, tr.CloseIdleConnections
}

// URL returns a storage URL for bucket on this server, with path-style addressing.
func (s S3) URL(bucket string) string {
	return fmt.Sprintf("s3://%s?endpoint=%s&region=%s&path_style=true", bucket, s.Endpoint, s.Region)
}

// S3Server returns the test S3 server, or skips/fails t.
func S3Server(t testing.TB) S3 {
	t.Helper()
	s := S3{
		Endpoint:  os.Getenv(EnvS3Endpoint),
		AccessKey: os.Getenv(EnvS3AccessKey),
		SecretKey: os.Getenv(EnvS3SecretKey),
		Region:    os.Getenv(EnvS3Region),
	}
	if s.Endpoint == "" || s.AccessKey == "" || s.SecretKey == "" {
		missing(t, "S3 server ("+EnvS3Endpoint+")")
	}
	if s.Region == "" {
		s.Region = "us-east-1"
	}
	return s
}

// BucketName returns a bucket name unique to this test: lowercase, 3..63 characters.
func BucketName(t testing.TB) string {
	t.Helper()
	name := strings.ToLower(t.Name())
	var b strings.Builder
	for _, r := range name {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	s := strings.Trim(b.String(), "-")
	if len(s) > 40 {
		s = s[:40]
	}
	return fmt.Sprintf("t-%s-%x", strings.Trim(s, "-"), time.Now().UnixNano()&0xffffffff)
}

// Binary returns the path of a server binary named by env (for tests that start and
// kill their own server processes), or skips/fails t.
func Binary(t testing.TB, env string) string {
	t.Helper()
	p := os.Getenv(env)
	if p == "" {
		missing(t, "server binary ("+env+")")
	}
	if _, err := os.Stat(p); err != nil {
		missing(t, fmt.Sprintf("server binary %s (%v)", p, err))
	}
	return p
}
