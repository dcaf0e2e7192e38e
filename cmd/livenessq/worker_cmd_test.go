package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/livenessq/livenessq/internal/testenv"
	"github.com/livenessq/livenessq/kairos/kairostest"
	"github.com/livenessq/livenessq/results"
	"github.com/livenessq/livenessq/storage"
)

const (
	testAppID  = "cmd-test-app"
	testAppKey = "k3y-that-must-never-be-printed-5b1e"
)

// startEmulator runs `livenessq emulator` on a free port and returns it with its API URL.
func startEmulator(t *testing.T, bin string, args ...string) (*proc, string) {
	t.Helper()
	p := startCmd(t, bin, []string{"KAIROS_EMULATOR_APP_KEY=" + testAppKey},
		append([]string{"emulator", "--addr", "127.0.0.1:0", "--app-id", testAppID}, args...)...)
	m := p.waitMatch(t, regexp.MustCompile(`^listening on (http://\S+)$`), 20*time.Second)
	return p, m[1] + "/v0.2/liveness-verification"
}

// workerHTTPAddr waits for the worker's log line saying where it serves HTTP.
func workerHTTPAddr(t *testing.T, p *proc) string {
	t.Helper()
	m := p.waitMatch(t, regexp.MustCompile(`"http_addr":"([^"]+)"`), 20*time.Second)
	return "http://" + m[1]
}

// Three processes, as in production: the emulator, a worker and an enqueue of an S3
// prefix, on the real Redis and S3 server. Every selfie gets its result, the metrics
// show the work, SIGTERM stops the worker cleanly, and no output holds a secret.
func TestWorkerEnqueueEmulatorProcessAnS3Prefix(t *testing.T) {
	rdb, redisURL := cmdRedis(t)
	bucket, s3URL, s3Env := cmdS3(t)
	bin := buildBinary(t)
	ctx := context.Background()

	// 30 selfies under selfies/, one object outside the prefix, one invalid.
	const n = 30
	put := func(key string, data []byte) {
		require.NoError(t, bucket.Put(ctx, key, bytes.NewReader(data), &storage.PutOptions{Size: int64(len(data))}))
	}
	for i := range n - 1 {
		name := fmt.Sprintf("selfies/live-%02d.jpg", i)
		if i%3 == 0 {
			name = fmt.Sprintf("selfies/spoof-%02d.jpg", i)
		}
		put(name, kairostest.JPEG(400, 500, int64(i)))
	}
	put("selfies/invalid-tiny.jpg", kairostest.JPEG(100, 100, 1))
	put("elsewhere/live-x.jpg", kairostest.JPEG(400, 500, 99))

	emu, apiURL := startEmulator(t, bin, "--sample-rules", "--error-rate", "0.2", "--seed", "7")

	env := append([]string{"LIVENESSQ_REDIS_URL=" + redisURL, "LIVENESSQ_STORAGE_URL=" + s3URL,
		"KAIROS_APP_ID=" + testAppID, "KAIROS_APP_KEY=" + testAppKey, "LIVENESSQ_LOG_FORMAT=json"}, s3Env...)
	wrk := startCmd(t, bin, env, "worker", "--api-url", apiURL, "--http-addr", "127.0.0.1:0",
		"--poll-interval", "20ms", "--concurrency", "8", "--retry-base", "10ms", "--retry-cap", "50ms")
	base := workerHTTPAddr(t, wrk)

	r := runCmd(t, bin, env, "enqueue", "--prefix", "selfies/", "--json", "--threshold", "0.5")
	require.Equal(t, 0, r.code, "stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	var rep enqueueReport
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep), r.stdout)
	require.Equal(t, int64(n), rep.Enqueued)
	require.True(t, rep.Finished)

	store, err := results.New(results.Config{Redis: rdb, Bucket: bucket.Sub(DefaultResultsPrefix)})
	require.NoError(t, err)
	var sum *results.BatchSummary
	eventually(t, 60*time.Second, func() bool {
		sum, err = store.Batch(ctx, rep.BatchID)
		require.NoError(t, err)
		return sum.Complete
	}, "batch %s complete", rep.BatchID)
	require.Equal(t, int64(n), sum.Done)
	require.Equal(t, int64(n-1-10), sum.Counts[results.StatusLive], "%v", sum.Counts)
	require.Equal(t, int64(10), sum.Counts[results.StatusNotLive], "%v", sum.Counts)
	require.Equal(t, int64(1), sum.Counts[results.StatusInvalidImage], "%v", sum.Counts)
	rec, err := store.Get(ctx, "selfies/live-01.jpg")
	require.NoError(t, err)
	require.Equal(t, 0.5, rec.Threshold)
	_, err = store.Get(ctx, "elsewhere/live-x.jpg")
	require.ErrorIs(t, err, results.ErrNotFound, "outside the prefix")

	// Re-running the same batch adds nothing.
	r = runCmd(t, bin, env, "enqueue", "--prefix", "selfies/", "--batch", rep.BatchID)
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, `already there\s+30`, r.stdout)

	code, metrics := httpGet(t, base+"/metrics")
	require.Equal(t, 200, code)
	for _, series := range []string{
		"livenessq_api_calls_total{code=\"200\"}", "livenessq_api_calls_total{code=\"503\"}",
		"livenessq_api_latency_seconds_bucket", "livenessq_budget_wait_seconds_bucket",
		"livenessq_fetch_seconds_bucket", "livenessq_result_write_seconds_bucket", "livenessq_task_duration_seconds_bucket{status=\"live\"",
		"livenessq_results_total{status=\"live\"}", "livenessq_results_total{status=\"invalid_image\"}",
		"livenessq_retries_total{", "livenessq_archived_total 0",
		"livenessq_budget_in_flight_leases", "livenessq_budget_cooldown_until_seconds", "livenessq_budget_pace_rate",
		"asynq_tasks_enqueued_total{queue=\"liveness\",state=\"completed\"}", "asynq_queue_size{queue=\"liveness\"}",
		"go_goroutines", "process_resident_memory_bytes",
	} {
		require.Contains(t, metrics, series)
	}
	code, body := httpGet(t, base+"/readyz")
	require.Equal(t, 200, code, body)
	code, _ = httpGet(t, base+"/healthz")
	require.Equal(t, 200, code)

	wrk.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, wrk.wait(t, 30*time.Second), wrk.stderr())
	require.Equal(t, 0, emu.stop(), emu.stderr())

	// Secrets never appear: not in any output, nor in the results.
	s3Secret := testenv.S3Server(t).SecretKey
	for name, out := range map[string]string{"worker": wrk.output(), "emulator": emu.output(), "enqueue": r.output(), "metrics": metrics} {
		require.NotContains(t, out, testAppKey, name)
		require.NotContains(t, out, s3Secret, name)
	}
	var export bytes.Buffer
	_, err = store.Export(ctx, rep.BatchID, results.FormatJSONL, &export)
	require.NoError(t, err)
	require.NotContains(t, export.String(), testAppKey)
}

// /readyz answers 503 with a reason once Redis stops, and 200 again when it is back.
func TestWorkerReadyzFollowsRedis(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	server := testenv.Binary(t, testenv.EnvRedisServer)
	addr := freeAddr(t)
	_, port, _ := strings.Cut(addr, ":")
	startRedis := func() *exec.Cmd {
		cmd := exec.Command(server, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
		require.NoError(t, cmd.Start())
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	redisProc := startRedis()

	dir := t.TempDir()
	env := []string{"KAIROS_APP_ID=" + testAppID, "KAIROS_APP_KEY=" + testAppKey, "LIVENESSQ_LOG_FORMAT=json"}
	var wrk *proc
	eventually(t, 20*time.Second, func() bool { // redis-server takes a moment to listen
		wrk = startCmd(t, bin, env, "worker", "--redis", "redis://"+addr, "--storage", dir,
			"--api-url", "http://127.0.0.1:1/never-called", "--http-addr", "127.0.0.1:0")
		for !wrk.exited() && !strings.Contains(wrk.stderr(), "http_addr") {
			time.Sleep(20 * time.Millisecond)
		}
		return !wrk.exited()
	}, "worker started against a fresh redis-server")
	base := workerHTTPAddr(t, wrk)
	code, body := httpGet(t, base+"/readyz")
	require.Equal(t, 200, code, body)
	require.JSONEq(t, `{"ready":true,"checks":{"redis":"ok","storage":"ok","results":"ok"}}`, body)

	require.NoError(t, redisProc.Process.Kill())
	_ = redisProc.Wait()
	eventually(t, 20*time.Second, func() bool {
		code, body = httpGet(t, base+"/readyz")
		return code == 503
	}, "/readyz turns 503 once Redis is gone")
	var ready struct {
		Ready  bool              `json:"ready"`
		Reason string            `json:"reason"`
		Checks map[string]string `json:"checks"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &ready), body)
	require.False(t, ready.Ready)
	require.True(t, strings.HasPrefix(ready.Reason, "redis: "), body)
	require.Equal(t, "ok", ready.Checks["storage"])
	code, _ = httpGet(t, base+"/healthz")
	require.Equal(t, 200, code, "the process is still alive")

	startRedis()
	eventually(t, 20*time.Second, func() bool {
		code, _ = httpGet(t, base+"/readyz")
		return code == 200
	}, "/readyz is 200 again once Redis is back")
	require.Equal(t, 0, wrk.stop(), wrk.stderr())
}

// flagErrorCase is a command line that must exit 2 with an error naming what is wrong.
type flagErrorCase struct {
	desc string
	env  []string
	args []string
	want []string // substrings of stderr
}

func checkFlagErrors(t *testing.T, cases []flagErrorCase) {
	t.Helper()
	bin := buildBinary(t)
	for _, tc := range cases {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			r := runCmd(t, bin, tc.env, tc.args...)
			require.Equal(t, 2, r.code, "stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
			for _, w := range tc.want {
				require.Contains(t, r.stderr, w)
			}
			require.NotContains(t, r.output(), testAppKey)
		})
	}
}

func TestWorkerFlagErrors(t *testing.T) {
	t.Parallel()
	creds := []string{"KAIROS_APP_ID=" + testAppID, "KAIROS_APP_KEY=" + testAppKey}
	dir := t.TempDir()
	conn := []string{"--redis", "redis://127.0.0.1:1", "--storage", dir}
	checkFlagErrors(t, []flagErrorCase{
		{desc: "concurrency from the environment", env: append([]string{"LIVENESSQ_CONCURRENCY=abc"}, creds...),
			args: append([]string{"worker"}, conn...), want: []string{"$LIVENESSQ_CONCURRENCY", "--concurrency"}},
		{desc: "concurrency zero", env: creds, args: append([]string{"worker", "--concurrency", "0"}, conn...), want: []string{"--concurrency", "at least 1"}},
		{desc: "threshold 2", env: creds, args: append([]string{"worker", "--threshold", "2"}, conn...), want: []string{"--threshold", "(0, 1]"}},
		{desc: "threshold NaN", env: creds, args: append([]string{"worker", "--threshold", "NaN"}, conn...), want: []string{"--threshold", "(0, 1]"}},
		{desc: "threshold from the environment", env: append([]string{"LIVENESSQ_THRESHOLD=-1"}, creds...), args: append([]string{"worker"}, conn...), want: []string{"--threshold", "(0, 1]"}},
		{desc: "no credentials", args: append([]string{"worker"}, conn...), want: []string{"KAIROS_APP_ID", "KAIROS_APP_KEY"}},
		{desc: "only the app id", env: []string{"KAIROS_APP_ID=x"}, args: append([]string{"worker"}, conn...), want: []string{"KAIROS_APP_KEY"}},
		{desc: "redis scheme", env: creds, args: []string{"worker", "--redis", "ftp://x", "--storage", dir}, want: []string{"--redis", "ftp"}},
		{desc: "redis missing", env: creds, args: []string{"worker", "--storage", dir}, want: []string{"--redis", "LIVENESSQ_REDIS_URL"}},
		{desc: "size cap", env: creds, args: append([]string{"worker", "--size-cap", "lots"}, conn...), want: []string{"-size-cap"}},
		{desc: "burst over rate", env: creds, args: append([]string{"worker", "--rate", "2", "--burst", "5"}, conn...), want: []string{"--burst"}},
		{desc: "headroom zero", env: creds, args: append([]string{"worker", "--rate", "2", "--rate-headroom", "0s"}, conn...), want: []string{"--rate-headroom"}},
		{desc: "headroom over window", env: creds, args: append([]string{"worker", "--rate-headroom", "2s"}, conn...), want: []string{"--rate-headroom", "--rate-window"}},
		{desc: "quota reset", env: creds, args: append([]string{"worker", "--quota-reset-at", "noon"}, conn...), want: []string{"--quota-reset-at"}},
		{desc: "header style", env: creds, args: append([]string{"worker", "--header-style", "camel"}, conn...), want: []string{"--header-style"}},
		{desc: "log level", env: creds, args: append([]string{"worker", "--log-level", "loud"}, conn...), want: []string{"--log-level"}},
		{desc: "unknown flag", env: creds, args: []string{"worker", "--colour"}, want: []string{"colour"}},
	})
}

func TestByteSizeFlag(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc, in string
		want     int64
	}{
		{"plain", "1048576", 1 << 20},
		{"MiB", "15MiB", 15 << 20},
		{"MB", "2MB", 2e6},
		{"KiB lower case", "512kib", 512 << 10},
		{"fraction", "1.5MiB", 3 << 19},
	} {
		var b byteSize
		require.NoError(t, b.Set(tc.in), tc.desc)
		require.Equal(t, tc.want, int64(b), tc.desc)
	}
	for _, bad := range []string{"", "lots", "-1", "1XB"} {
		var b byteSize
		require.Error(t, b.Set(bad), bad)
	}
}
