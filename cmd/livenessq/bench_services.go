package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/livenessq/livenessq/storage"
)

// benchServices are the real Redis and S3-compatible server the bench runs against:
// started by the bench (redis-server and versitygw, as scripts/services.sh does) or given
// by flags.
type benchServices struct {
	redisAddr string // host:port
	redisPass string
	s3        benchS3
	procs     []*benchProc
}

// benchS3 is an S3-compatible server and the credentials the bench uses on it.
type benchS3 struct {
	endpoint, region, access, secret, bucket string
}

// storageURL returns the s3:// URL of the bench bucket, path-style.
func (s benchS3) storageURL() string {
	q := url.Values{"endpoint": {s.endpoint}, "region": {s.region}, "path_style": {"true"}}
	return "s3://" + s.bucket + "?" + q.Encode()
}

// env returns the variables that give a child process the S3 credentials.
func (s benchS3) env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + s.access, "AWS_SECRET_ACCESS_KEY=" + s.secret, "AWS_REGION=" + s.region}
}

// open opens the bench bucket, creating it when missing.
func (s benchS3) open(ctx context.Context) (*storage.Bucket, error) {
	return storage.NewS3(ctx, storage.S3Config{
		Bucket: s.bucket, Endpoint: s.endpoint, Region: s.region, PathStyle: true,
		AccessKey: s.access, SecretKey: s.secret, CreateBucket: true,
	})
}

// redisURL returns the URL of database db.
func (s *benchServices) redisURL(db int) string {
	u := url.URL{Scheme: "redis", Host: s.redisAddr, Path: "/" + strconv.Itoa(db)}
	if s.redisPass != "" {
		u.User = url.UserPassword("", s.redisPass)
	}
	return u.String()
}

// redis returns a client on database db.
func (s *benchServices) redis(db int) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: s.redisAddr, Password: s.redisPass, DB: db, PoolSize: 64})
}

// stop stops the services the bench started.
func (s *benchServices) stop() {
	for _, p := range s.procs {
		_ = p.stop(5 * time.Second)
	}
	s.procs = nil
}

// benchServiceFlags say which services to use or start.
type benchServiceFlags struct {
	redisURL    string
	redisServer string
	s3Endpoint  string
	s3Region    string
	s3Access    string
	s3Secret    string
	s3Bucket    string
	versitygw   string
	dataDir     string
}

func (f *benchServiceFlags) register(fs *flagSet) {
	home, _ := os.UserHomeDir()
	fs.StringVar(&f.redisURL, "redis", "", "use this Redis (redis://host:port; its databases 1..8 are FLUSHED) rather than starting redis-server")
	fs.bindEnv("redis", "LIVENESSQ_BENCH_REDIS_URL")
	fs.StringVar(&f.redisServer, "redis-server", "redis-server", "the redis-server binary to start when --redis is not given")
	fs.StringVar(&f.s3Endpoint, "s3-endpoint", "", "use this S3-compatible server (credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) rather than starting versitygw")
	fs.bindEnv("s3-endpoint", "LIVENESSQ_BENCH_S3_ENDPOINT")
	fs.StringVar(&f.s3Region, "s3-region", "us-east-1", "region of --s3-endpoint")
	fs.StringVar(&f.s3Bucket, "s3-bucket", "livenessq-bench", "bucket holding the bench's objects (created when missing)")
	fs.StringVar(&f.versitygw, "versitygw", filepath.Join(home, ".cache", "livenessq", "versitygw-v1.8.0", "versitygw"), "the versitygw binary to start when --s3-endpoint is not given")
	fs.StringVar(&f.dataDir, "data-dir", "", "versitygw's data directory, kept between runs so that the uploaded objects are reused; default: a temporary directory, removed at the end")
}

// start starts (or connects to) the services; logDir receives their logs.
func (f *benchServiceFlags) start(ctx context.Context, env *environ, logDir, tmpDir string) (*benchServices, error) {
	s := &benchServices{}
	ok := false
	defer func() {
		if !ok {
			s.stop()
		}
	}()
	if f.redisURL != "" {
		opt, err := redis.ParseURL(f.redisURL)
		if err != nil {
			return nil, usagef("--redis: %v", err)
		}
		s.redisAddr, s.redisPass = opt.Addr, opt.Password
	} else {
		bin, err := exec.LookPath(f.redisServer)
		if err != nil {
			return nil, usagef("--redis-server: %v (install redis-server or give --redis)", err)
		}
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		dir := filepath.Join(tmpDir, "redis")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		p, err := startProc("redis-server", logDir, bin, []string{"--bind", "127.0.0.1", "--port", strconv.Itoa(port),
			"--dir", dir, "--save", "", "--appendonly", "no", "--databases", "16", "--daemonize", "no"}, nil)
		if err != nil {
			return nil, err
		}
		s.procs = append(s.procs, p)
		s.redisAddr = "127.0.0.1:" + strconv.Itoa(port)
		if err := waitPort(p, s.redisAddr, 20*time.Second); err != nil {
			return nil, err
		}
	}
	rdb := s.redis(0)
	defer rdb.Close()
	if err := pingUntil(ctx, rdb, 10*time.Second); err != nil {
		return nil, fmt.Errorf("Redis at %s: %w", s.redisAddr, err)
	}

	s.s3 = benchS3{endpoint: f.s3Endpoint, region: f.s3Region, bucket: f.s3Bucket}
	if f.s3Endpoint != "" {
		s.s3.access, s.s3.secret = env.getenv("AWS_ACCESS_KEY_ID"), env.getenv("AWS_SECRET_ACCESS_KEY")
		if s.s3.access == "" || s.s3.secret == "" {
			return nil, usagef("--s3-endpoint needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
		}
	} else {
		if _, err := os.Stat(f.versitygw); err != nil {
			return nil, usagef("--versitygw: %v (run `make test` once to build it, or give --s3-endpoint)", err)
		}
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		dir := f.dataDir
		if dir == "" {
			dir = filepath.Join(tmpDir, "s3")
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		var sec [12]byte
		_, _ = rand.Read(sec[:])
		s.s3.access, s.s3.secret, s.s3.region = "livenessq-bench", "bench-"+hex.EncodeToString(sec[:]), "us-east-1"
		addr := "127.0.0.1:" + strconv.Itoa(port)
		// --keep-alive: without it versitygw answers every request with "Connection:
		// close", and each S3 call pays a new TCP connection, which real S3 does not make
		// clients do. --quiet: no log line per request. --io-buffer-size 64 KiB rather than
		// its 1 MiB default per GET and PUT: the objects here are 100 KB and below, and
		// versitygw shares the two CPUs with everything measured (meet: 25.4–25.8 s →
		// 24.1–25.1 s, alternating runs).
		p, err := startProc("versitygw", logDir, f.versitygw, []string{"--port", addr,
			"--access", s.s3.access, "--secret", s.s3.secret, "--keep-alive", "--quiet", "posix", "--io-buffer-size", "65536", dir},
			[]string{"ROOT_ACCESS_KEY=" + s.s3.access, "ROOT_SECRET_KEY=" + s.s3.secret})
		if err != nil {
			return nil, err
		}
		s.procs = append(s.procs, p)
		s.s3.endpoint = "http://" + addr
		if err := waitPort(p, addr, 30*time.Second); err != nil {
			return nil, err
		}
	}
	ok = true
	return s, nil
}

// pingUntil pings rdb until it answers or timeout passes.
func pingUntil(ctx context.Context, rdb *redis.Client, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := rdb.Ping(ctx).Err()
		if err == nil || time.Now().After(deadline) || errors.Is(err, context.Canceled) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
