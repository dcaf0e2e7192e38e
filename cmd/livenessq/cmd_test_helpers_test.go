package main

// Helpers for tests that run the livenessq binary as real processes. The binary is this
// test executable itself: run with LIVENESSQ_TEST_AS_BINARY=1 it is livenessq (TestMain
// calls main), so no separate build is needed and the race detector, when on, watches
// the child processes too. Set LIVENESSQ_TEST_BUILD=1 to test a binary built with
// `go build` instead (once per test run, into a temporary directory).
//
//	bin := buildBinary(t)
//	r := runCmd(t, bin, []string{"LIVENESSQ_REDIS_URL=" + redisURL}, "status", "--json")
//	require.Equal(t, 0, r.code, r.stderr)
//
//	p := startCmd(t, bin, env, "worker", "--http-addr", "127.0.0.1:0")
//	p.waitOutput(t, "serving /metrics", 20*time.Second)
//	require.Equal(t, 0, p.stop(), p.stderr()) // SIGTERM, then the exit code

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/livenessq/livenessq/internal/testenv"
	"github.com/livenessq/livenessq/storage"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildPath string
	buildErr  error
)

// envAsBinary makes the test executable behave as livenessq (see TestMain).
const envAsBinary = "LIVENESSQ_TEST_AS_BINARY"

func TestMain(m *testing.M) {
	if os.Getenv(envAsBinary) == "1" {
		main() // exits
	}
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// buildBinary returns the path of the livenessq binary for runCmd and startCmd: this
// test executable (which children run as livenessq), or with LIVENESSQ_TEST_BUILD=1 a
// binary built from this package on first use (once per test run).
func buildBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if os.Getenv("LIVENESSQ_TEST_BUILD") != "1" {
			buildPath, buildErr = os.Executable()
			return
		}
		buildDir, buildErr = os.MkdirTemp("", "livenessq-bin-")
		if buildErr != nil {
			return
		}
		buildPath = filepath.Join(buildDir, "livenessq")
		goBin, err := exec.LookPath("go")
		if err != nil {
			buildErr = fmt.Errorf("find the go command: %w", err)
			return
		}
		cmd := exec.Command(goBin, "build", "-o", buildPath, ".")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build livenessq: %v", buildErr)
	}
	return buildPath
}

// cmdResult is what a finished process printed and its exit code.
type cmdResult struct {
	stdout, stderr string
	code           int
}

// output returns stdout and stderr together, for assertions on "anywhere in the output".
func (r cmdResult) output() string { return r.stdout + r.stderr }

// cmdSpec describes a process to run: the binary, extra environment ("K=V"), working
// directory (default: the test's package directory), stdin, arguments.
type cmdSpec struct {
	bin   string
	env   []string
	dir   string
	stdin io.Reader
	args  []string
}

// childEnv is the environment of a child: this process's, without the variables
// livenessq or the SDKs read (so a developer's shell cannot change a test), plus extra.
func childEnv(extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "LIVENESSQ_TEST_"):
		case strings.HasPrefix(name, "LIVENESSQ_"), strings.HasPrefix(name, "KAIROS_"), strings.HasPrefix(name, "AWS_"):
			continue
		}
		env = append(env, kv)
	}
	return append(append(env, envAsBinary+"=1"), extra...)
}

// cmdTimeout bounds every runCmd: a hung process fails its test rather than the run.
const cmdTimeout = 90 * time.Second

// runCmd runs the binary with args and extra environment ("K=V"), and returns its
// output and exit code once it ends.
func runCmd(t testing.TB, bin string, env []string, args ...string) cmdResult {
	t.Helper()
	return runSpec(t, cmdSpec{bin: bin, env: env, args: args})
}

// runSpec runs the process spec describes to its end.
func runSpec(t testing.TB, spec cmdSpec) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, spec.bin, spec.args...)
	cmd.Env = childEnv(spec.env)
	cmd.Dir = spec.dir
	cmd.Stdin = spec.stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("livenessq %s: still running after %v\nstdout:\n%s\nstderr:\n%s", strings.Join(spec.args, " "), cmdTimeout, &stdout, &stderr)
	}
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("livenessq %s: %v", strings.Join(spec.args, " "), err)
		}
		code = ee.ExitCode()
	}
	return cmdResult{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// proc is a livenessq process running in the background. The test's cleanup kills it if
// it is still running.
type proc struct {
	name   string
	cmd    *exec.Cmd
	outBuf *testenv.Buffer
	errBuf *testenv.Buffer
	done   chan struct{}
	code   int
}

// startCmd starts the binary with args and extra environment in the background.
func startCmd(t testing.TB, bin string, env []string, args ...string) *proc {
	t.Helper()
	return startSpec(t, cmdSpec{bin: bin, env: env, args: args})
}

// startSpec starts the process spec describes in the background.
func startSpec(t testing.TB, spec cmdSpec) *proc {
	t.Helper()
	p := &proc{name: strings.Join(spec.args, " "), outBuf: &testenv.Buffer{}, errBuf: &testenv.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(spec.bin, spec.args...)
	p.cmd.Env = childEnv(spec.env)
	p.cmd.Dir = spec.dir
	p.cmd.Stdin = spec.stdin
	p.cmd.Stdout, p.cmd.Stderr = p.outBuf, p.errBuf
	require.NoError(t, p.cmd.Start(), "start livenessq %s", p.name)
	go func() {
		err := p.cmd.Wait()
		p.code = 0
		if ee, ok := err.(*exec.ExitError); ok {
			p.code = ee.ExitCode()
		} else if err != nil {
			p.code = -1
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("livenessq %s (exit %d)\nstdout:\n%s\nstderr:\n%s", p.name, p.code, p.outBuf, p.errBuf)
		}
	})
	return p
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the process.
func (p *proc) signal(t testing.TB, sig os.Signal) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(sig), "signal livenessq %s", p.name)
}

// kill kills the process and waits for it to end.
func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// wait waits for the process to end and returns its exit code; it fails t when the
// process is still running after timeout.
func (p *proc) wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(timeout):
		t.Fatalf("livenessq %s still running after %v\nstdout:\n%s\nstderr:\n%s", p.name, timeout, p.outBuf, p.errBuf)
		return -1
	}
}

// stdout returns what the process printed on stdout so far.
func (p *proc) stdout() string { return p.outBuf.String() }

// stderr returns what the process printed on stderr so far.
func (p *proc) stderr() string { return p.errBuf.String() }

// output returns everything the process printed so far, stdout then stderr.
func (p *proc) output() string { return p.stdout() + p.stderr() }

// stopTimeout is how long stop waits after SIGTERM before it kills the process.
const stopTimeout = 30 * time.Second

// stop sends SIGTERM, waits for the process to end (killing it after stopTimeout) and
// returns its exit code: -1 when it had to be killed.
func (p *proc) stop() int {
	if p.exited() {
		return p.code
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.code
	case <-time.After(stopTimeout):
		p.kill()
		return -1
	}
}

// waitOutput waits until the process's stdout or stderr holds a line containing substr
// and returns that line; it fails t after timeout or when the process exits first.
func (p *proc) waitOutput(t testing.TB, substr string, timeout time.Duration) string {
	t.Helper()
	return p.waitMatch(t, regexp.MustCompile(regexp.QuoteMeta(substr)), timeout)[0]
}

// waitMatch waits until a line of stdout or stderr matches re and returns the line's
// submatches (the whole line first); it fails t after timeout or when the process exits
// first.
func (p *proc) waitMatch(t testing.TB, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, line := range strings.Split(p.output(), "\n") {
			if m := re.FindStringSubmatch(line); m != nil {
				m[0] = line
				return m
			}
		}
		if p.exited() {
			t.Fatalf("livenessq %s exited (code %d) before printing %q\nstdout:\n%s\nstderr:\n%s", p.name, p.code, re, p.outBuf, p.errBuf)
		}
		if time.Now().After(deadline) {
			t.Fatalf("livenessq %s did not print %q within %v\nstdout:\n%s\nstderr:\n%s", p.name, re, timeout, p.outBuf, p.errBuf)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cmdRedis returns a flushed client on the command tests' Redis DB (testenv.DBCommand)
// and the URL to give the binary. Tests that call it must not run in parallel.
func cmdRedis(t testing.TB) (*redis.Client, string) {
	t.Helper()
	rdb := testenv.Redis(t, testenv.DBCommand)
	return rdb, fmt.Sprintf("redis://%s/%d", testenv.RedisAddr(t), testenv.DBCommand)
}

// cmdS3 creates a bucket of its own on the test S3 server and returns it (closed when the
// test ends), its storage URL and the environment that lets a child reach it.
func cmdS3(t testing.TB) (*storage.Bucket, string, []string) {
	t.Helper()
	s3 := testenv.S3Server(t)
	name := testenv.BucketName(t)
	b, err := storage.NewS3(context.Background(), storage.S3Config{Bucket: name, Endpoint: s3.Endpoint, Region: s3.Region,
		PathStyle: true, AccessKey: s3.AccessKey, SecretKey: s3.SecretKey, CreateBucket: true})
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	env := []string{"AWS_ACCESS_KEY_ID=" + s3.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3.SecretKey, "AWS_REGION=" + s3.Region}
	return b, s3.URL(name), env
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// httpGet fetches url and returns the status code and body; a transport error fails t.
func httpGet(t testing.TB, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	require.NoError(t, err, "GET %s", url)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// eventually polls cond every 50 ms until it returns true, failing t with msg after
// timeout.
func eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: "+msg, append([]any{timeout}, args...)...)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
